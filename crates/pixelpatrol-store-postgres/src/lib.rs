//! PostgreSQL, possibly shared by several `pixelpatrol serve` processes,
//! which coordinate through it: row locks (`FOR UPDATE SKIP LOCKED`),
//! advisory locks and leases, never through each other.
//!
//! This crate holds what only PostgreSQL does: the connection set-up here,
//! the claim (`claim.rs`, with the planner notes), the locks (`locks.rs`)
//! and the upkeep (`maintenance.rs`). The rest is
//! `pixelpatrol-store/src/shared`, compiled here against `Db`.

mod claim;
mod locks;
mod maintenance;
mod signals;

#[path = "../../pixelpatrol-store/src/shared/audit.rs"]
mod audit;
#[path = "../../pixelpatrol-store/src/shared/claim_parts.rs"]
mod claim_parts;
#[path = "../../pixelpatrol-store/src/shared/delivery_log.rs"]
mod delivery_log;
#[path = "../../pixelpatrol-store/src/shared/endpoints.rs"]
mod endpoints;
#[path = "../../pixelpatrol-store/src/shared/health.rs"]
mod health;
#[path = "../../pixelpatrol-store/src/shared/invitations.rs"]
mod invitations;
#[path = "../../pixelpatrol-store/src/shared/media.rs"]
mod media;
#[path = "../../pixelpatrol-store/src/shared/moderation_jobs.rs"]
mod moderation_jobs;
#[path = "../../pixelpatrol-store/src/shared/outbox.rs"]
mod outbox;
#[path = "../../pixelpatrol-store/src/shared/people.rs"]
mod people;
#[path = "../../pixelpatrol-store/src/shared/retention.rs"]
mod retention;
#[path = "../../pixelpatrol-store/src/shared/rule_groups.rs"]
mod rule_groups;
#[path = "../../pixelpatrol-store/src/shared/sessions.rs"]
mod sessions;
#[path = "../../pixelpatrol-store/src/shared/settings.rs"]
mod settings;
#[path = "../../pixelpatrol-store/src/shared/sites.rs"]
mod sites;
#[path = "../../pixelpatrol-store/src/shared/upkeep.rs"]
mod upkeep;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use pixelpatrol_store::batcher::MediaBatcher;

/// The database the shared statements are compiled for here.
type Db = sqlx::Postgres;
/// The store the shared modules implement their roles for.
type BackendStore = PostgresStore;

/// Submission groups written at once: PostgreSQL commits several
/// transactions in parallel.
const MEDIA_WRITERS: usize = 3;

#[derive(Debug, Clone)]
pub struct PostgresStore {
    /// One pool; `write` and `read` name the same one so that the shared
    /// code reads as it does on SQLite.
    write: PgPool,
    read: PgPool,
    media_batcher: MediaBatcher,
    /// Where the work-signal listener connects (`signals.rs`).
    url: Arc<str>,
}

impl PostgresStore {
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        // The outbox tables grow from empty to millions of rows within
        // minutes. A plan cached for prepared statements while they were
        // small (a generic plan) would be kept for good, so every execution
        // is planned with the current statistics. JIT compilation would cost
        // more than these short queries themselves.
        let options = PgConnectOptions::from_str(url)?
            .options([("plan_cache_mode", "force_custom_plan"), ("jit", "off")]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        upkeep::migrator()
            .run(&pool)
            .await
            .context("migrating the PostgreSQL database")?;
        // Group commit helps here too: a transaction per submission cost the
        // database a commit (and its WAL flush) and four statements each.
        let media_batcher = MediaBatcher::start(
            {
                let pool = pool.clone();
                Arc::new(move |items| {
                    let pool = pool.clone();
                    Box::pin(async move { Self::write_media_batch(&pool, &items).await })
                })
            },
            MEDIA_WRITERS,
        );
        Ok(Self {
            write: pool.clone(),
            read: pool,
            media_batcher,
            url: url.into(),
        })
    }
}
