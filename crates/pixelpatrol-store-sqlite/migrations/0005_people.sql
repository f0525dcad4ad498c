-- People: dashboard accounts, their roles on sites, sessions, invitations,
-- sign-in throttling and the audit log.
-- Timestamps are INTEGER milliseconds since the Unix epoch (UTC).

CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,
    -- Lower-cased: one account per address, however it is typed.
    email         TEXT NOT NULL UNIQUE,
    -- argon2id, as a PHC string.
    password_hash TEXT NOT NULL,
    -- Operators see and manage every site.
    is_admin      BOOLEAN NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

-- A person's role on a site: owner | developer | moderator.
CREATE TABLE site_members (
    site_id    TEXT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (site_id, user_id)
);
CREATE INDEX site_members_user ON site_members (user_id);

-- Only the token's SHA-256 is kept: a copy of the database signs nobody in.
CREATE TABLE sessions (
    token_hash   TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- Sent back with every state-changing form.
    csrf_token   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    -- Idle expiry: moves on with every request.
    expires_at   INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expiry ON sessions (expires_at);

-- A one-time link, shown once: to a site with a role, or (no site) to the
-- operators.
CREATE TABLE invitations (
    token_hash  TEXT PRIMARY KEY NOT NULL,
    id          TEXT NOT NULL UNIQUE,
    site_id     TEXT REFERENCES sites (id) ON DELETE CASCADE,
    email       TEXT NOT NULL,
    role        TEXT,
    is_admin    BOOLEAN NOT NULL,
    invited_by  TEXT REFERENCES users (id) ON DELETE SET NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    accepted_at INTEGER
);
CREATE INDEX invitations_site ON invitations (site_id, created_at);

-- Failed sign-ins by account (`account:<email>`) and by address
-- (`address:<ip>`), for back-off.
CREATE TABLE sign_in_failures (
    throttle_key    TEXT PRIMARY KEY NOT NULL,
    failures        INTEGER NOT NULL,
    last_failure_at INTEGER NOT NULL,
    locked_until    INTEGER NOT NULL
);

-- Who changed what. The actor's email is kept as it was, so the entry stays
-- readable after the account goes.
CREATE TABLE audit_log (
    id          TEXT PRIMARY KEY NOT NULL,
    site_id     TEXT REFERENCES sites (id) ON DELETE CASCADE,
    actor_id    TEXT,
    actor_email TEXT,
    action      TEXT NOT NULL,
    target      TEXT,
    -- JSON object.
    detail      TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX audit_log_site ON audit_log (site_id, id);
