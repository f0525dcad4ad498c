-- Operations: endpoint health and auto-disable, attempts by endpoint and
-- time (health figures, retention), events by site (the events list).

ALTER TABLE endpoints ADD COLUMN disabled_reason TEXT;
ALTER TABLE endpoints ADD COLUMN disabled_at BIGINT;
-- Failed attempts since the last success, and when that run began.
ALTER TABLE endpoints ADD COLUMN consecutive_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE endpoints ADD COLUMN failing_since BIGINT;
ALTER TABLE endpoints ADD COLUMN last_success_at BIGINT;
ALTER TABLE endpoints ADD COLUMN last_failure_at BIGINT;
ALTER TABLE endpoints ADD COLUMN last_failure_class TEXT;
ALTER TABLE endpoints ADD COLUMN last_failure_status BIGINT;
ALTER TABLE endpoints ADD COLUMN last_failure_message TEXT;
-- The state operators were last alerted about: healthy | failing.
ALTER TABLE endpoints ADD COLUMN alert_state TEXT NOT NULL DEFAULT 'healthy';
-- The token of the attempt batch that last flipped alert_state.
ALTER TABLE endpoints ADD COLUMN alert_flip BIGINT;

-- Attempts made before this migration have no endpoint and stay out of the
-- health figures (which look back 24 hours): no backfill locks the table.
ALTER TABLE delivery_attempts ADD COLUMN endpoint_id TEXT;
-- Covers the health figures (count, successes, average, p95): read from the
-- index alone, never the table.
CREATE INDEX delivery_attempts_endpoint_time
    ON delivery_attempts (endpoint_id, started_at, duration_ms, error_class);
CREATE INDEX delivery_attempts_started ON delivery_attempts (started_at);

CREATE INDEX events_site ON events (site_id, id);
CREATE INDEX events_created ON events (created_at);
CREATE INDEX deliveries_dead ON deliveries (endpoint_id, created_at) WHERE status = 'failed';
