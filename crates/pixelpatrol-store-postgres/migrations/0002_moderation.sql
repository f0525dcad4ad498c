-- Automatic moderation: per-site thresholds and external analyzers, rule
-- groups, analysis results on media, and the durable analysis job queue.

ALTER TABLE sites ADD COLUMN confidence_threshold DOUBLE PRECISION NOT NULL DEFAULT 0.75;
ALTER TABLE sites ADD COLUMN external_analyzer_url TEXT;
ALTER TABLE sites ADD COLUMN external_analyzer_secret TEXT;

-- A group's rules are edited and evaluated as a whole, so they are kept as
-- one JSON array with the group.
CREATE TABLE rule_groups (
    id          TEXT PRIMARY KEY NOT NULL,
    site_id     TEXT NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    description TEXT,
    is_default  BOOLEAN NOT NULL,
    rules       TEXT NOT NULL, -- JSON array
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX rule_groups_site ON rule_groups (site_id, id);
CREATE UNIQUE INDEX rule_groups_one_default ON rule_groups (site_id) WHERE is_default;

ALTER TABLE media ADD COLUMN rule_group_id TEXT;
ALTER TABLE media ADD COLUMN ai_labels TEXT;      -- JSON array of labels
ALTER TABLE media ADD COLUMN applied_rules TEXT;  -- JSON array of rule outcomes
ALTER TABLE media ADD COLUMN processing_ms BIGINT;
CREATE INDEX media_site_status ON media (site_id, status, id);
CREATE INDEX media_site_id ON media (site_id, id);

-- One row per media item waiting for (or in) analysis. A worker leases a
-- job; the decision, the media row and `media.moderated` commit together
-- with the job's removal, which only the lease holder can do, so a crash
-- repeats the analysis but never the decision.
CREATE TABLE moderation_jobs (
    media_id     TEXT PRIMARY KEY NOT NULL REFERENCES media (id) ON DELETE CASCADE,
    attempts     BIGINT NOT NULL DEFAULT 0,
    due_at       BIGINT NOT NULL,
    lease_token  TEXT,
    leased_until BIGINT,
    created_at   BIGINT NOT NULL
);
CREATE INDEX moderation_jobs_due ON moderation_jobs (due_at);
