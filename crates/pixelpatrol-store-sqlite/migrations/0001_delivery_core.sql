-- Delivery core: sites, endpoints, media, events, deliveries and their attempts.
-- Timestamps are INTEGER milliseconds since the Unix epoch (UTC).

CREATE TABLE settings (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

CREATE TABLE sites (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    url         TEXT,
    description TEXT,
    key_hash    TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE endpoints (
    id              TEXT PRIMARY KEY NOT NULL,
    site_id         TEXT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    url             TEXT NOT NULL,
    secret          TEXT NOT NULL,
    events          TEXT NOT NULL, -- comma-separated event names
    active          BOOLEAN NOT NULL,
    description     TEXT,
    strict_ordering BOOLEAN NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX endpoints_site ON endpoints (site_id, created_at);

CREATE TABLE media (
    id            TEXT PRIMARY KEY NOT NULL,
    site_id       TEXT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    app_media_id  TEXT,
    content_type  TEXT NOT NULL,
    content_url   TEXT,
    body          TEXT,
    metadata      TEXT NOT NULL, -- JSON object
    status        TEXT NOT NULL,
    review_note   TEXT,
    decided_by    TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    moderated_at  INTEGER
);
CREATE INDEX media_site ON media (site_id, created_at);

CREATE TABLE events (
    id          TEXT PRIMARY KEY NOT NULL,
    site_id     TEXT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    event_type  TEXT NOT NULL,
    media_id    TEXT NOT NULL,
    payload     TEXT NOT NULL, -- the exact body sent to every endpoint
    created_at  INTEGER NOT NULL
);

-- seq orders deliveries: within an endpoint's lane (one media item, or the
-- whole endpoint when strict_ordering is on) a delivery waits for every
-- pending delivery with a smaller seq.
CREATE TABLE deliveries (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    event_id         TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    endpoint_id      TEXT NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    site_id          TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    ordering_key     TEXT NOT NULL,
    status           TEXT NOT NULL, -- pending | succeeded | failed
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER,
    lease_until      INTEGER,
    lease_token      TEXT,
    last_status_code INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
-- The claim looks for due deliveries endpoint by endpoint.
CREATE INDEX deliveries_due ON deliveries (endpoint_id, next_attempt_at, seq) WHERE status = 'pending';
CREATE INDEX deliveries_lane ON deliveries (endpoint_id, ordering_key, seq) WHERE status = 'pending';
CREATE INDEX deliveries_endpoint_pending ON deliveries (endpoint_id, seq) WHERE status = 'pending';
CREATE INDEX deliveries_log ON deliveries (endpoint_id, seq);
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_lease ON deliveries (lease_token) WHERE lease_token IS NOT NULL;

CREATE TABLE delivery_attempts (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id     TEXT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt         INTEGER NOT NULL,
    started_at      INTEGER NOT NULL,
    duration_ms     INTEGER NOT NULL,
    status_code     INTEGER,
    response_body   TEXT,
    error_class     TEXT,
    error_message   TEXT,
    next_attempt_at INTEGER
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id, attempt);
