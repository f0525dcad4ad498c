-- Delivery core: sites, endpoints, media, events, deliveries and their attempts.
-- Timestamps are BIGINT milliseconds since the Unix epoch (UTC).

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
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
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
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
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
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    moderated_at  BIGINT
);
CREATE INDEX media_site ON media (site_id, created_at);

CREATE TABLE events (
    id          TEXT PRIMARY KEY NOT NULL,
    site_id     TEXT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    event_type  TEXT NOT NULL,
    media_id    TEXT NOT NULL,
    payload     TEXT NOT NULL, -- the exact body sent to every endpoint
    created_at  BIGINT NOT NULL
);

-- seq orders deliveries: within an endpoint's lane (one media item, or the
-- whole endpoint when strict_ordering is on) a delivery waits for every
-- pending delivery with a smaller seq.
CREATE TABLE deliveries (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    event_id         TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    endpoint_id      TEXT NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    site_id          TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    ordering_key     TEXT NOT NULL,
    status           TEXT NOT NULL, -- pending | succeeded | failed
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT,
    lease_until      BIGINT,
    lease_token      TEXT,
    last_status_code BIGINT,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
-- The claim looks for due deliveries endpoint by endpoint.
CREATE INDEX deliveries_due ON deliveries (endpoint_id, next_attempt_at, seq) WHERE status = 'pending';
CREATE INDEX deliveries_lane ON deliveries (endpoint_id, ordering_key, seq) WHERE status = 'pending';
CREATE INDEX deliveries_endpoint_pending ON deliveries (endpoint_id, seq) WHERE status = 'pending';
CREATE INDEX deliveries_log ON deliveries (endpoint_id, seq);
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_lease ON deliveries (lease_token) WHERE lease_token IS NOT NULL;

CREATE TABLE delivery_attempts (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id     TEXT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt         BIGINT NOT NULL,
    started_at      BIGINT NOT NULL,
    duration_ms     BIGINT NOT NULL,
    status_code     BIGINT,
    response_body   TEXT,
    error_class     TEXT,
    error_message   TEXT,
    next_attempt_at BIGINT
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id, attempt);

-- Queue tables change fast: refresh their statistics (and clean dead rows)
-- long before the default 10-20 % of the table has changed, so the planner
-- never works from the numbers of a nearly empty table.
ALTER TABLE deliveries SET (
    autovacuum_analyze_scale_factor = 0.01,
    autovacuum_analyze_threshold = 1000,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000
);
ALTER TABLE delivery_attempts SET (
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_scale_factor = 0.05
);
