//! SQLite in WAL mode, the embedded default: one file, created and migrated
//! on start. Writes go through a pool of exactly one connection, so writers
//! queue in the process instead of failing with `SQLITE_BUSY`; reads use
//! their own pool and run beside the writer.
//!
//! This crate holds what only SQLite does: the connection set-up here, the
//! WAL checkpointer (`wal.rs`), the claim (`claim.rs`), what stands in for
//! PostgreSQL's locks (`locks.rs`) and the upkeep (`maintenance.rs`). The
//! rest is `pixelpatrol-store/src/shared`, compiled here against `Db`.

mod claim;
mod locks;
mod maintenance;
mod signals;
mod wal;

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

use anyhow::Context as _;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use pixelpatrol_store::batcher::MediaBatcher;

/// The database the shared statements are compiled for here.
type Db = sqlx::Sqlite;
/// The store the shared modules implement their roles for.
type BackendStore = SqliteStore;

#[derive(Debug, Clone)]
pub struct SqliteStore {
    write: SqlitePool,
    read: SqlitePool,
    media_batcher: MediaBatcher,
}

impl SqliteStore {
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(wal::SQLITE_BUSY_TIMEOUT)
            // Statement journals and sorts stay in memory instead of temporary
            // files; a larger page cache keeps the hot indexes resident.
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-65536")
            // After a burst, the emptied WAL file does not keep its size.
            .pragma("journal_size_limit", wal::WAL_SIZE_LIMIT);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            // The writer never checkpoints itself (see `wal::checkpoint_wal`).
            .connect_with(options.clone().pragma("wal_autocheckpoint", "0"))
            .await?;
        upkeep::migrator()
            .run(&write)
            .await
            .context("migrating the SQLite database")?;
        let read = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            // Readers share the file's pages through the OS cache; a large
            // private cache per reader would multiply memory.
            .connect_with(
                options
                    .clone()
                    .read_only(true)
                    .pragma("cache_size", "-8192"),
            )
            .await?;
        let media_batcher = MediaBatcher::start(
            {
                let pool = write.clone();
                Arc::new(move |items| {
                    let pool = pool.clone();
                    Box::pin(async move { Self::write_media_batch(&pool, &items).await })
                })
            },
            // One writer: one group at a time.
            1,
        );
        let checkpointer = SqlitePoolOptions::new()
            .max_connections(1)
            // Checkpoints read the WAL and write the file: no cache needed.
            .connect_with(options.pragma("cache_size", "-1024"))
            .await?;
        tokio::spawn(wal::checkpoint_wal(checkpointer, write.clone()));
        Ok(Self {
            write,
            read,
            media_batcher,
        })
    }
}
