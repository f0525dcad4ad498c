//! SQLite's upkeep: the planner's statistics, migrations, pool figures.

use async_trait::async_trait;
use sqlx::migrate::Migrator;

use super::SqliteStore;
use crate::store::Maintenance;

/// The migrations this build applies on start.
pub(super) fn migrator() -> Migrator {
    sqlx::migrate!("./migrations/sqlite")
}

#[async_trait]
impl Maintenance for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn queue_stats(&self) -> anyhow::Result<(i64, Option<i64>)> {
        self.queue_figures("p.endpoint_id = e.id AND p.status = 'pending' ORDER BY p.seq LIMIT 1")
            .await
    }

    async fn migration_status(&self) -> anyhow::Result<(i64, i64)> {
        let known = migrator().migrations.len() as i64;
        let applied: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.read)
                .await?;
        Ok((applied, known))
    }

    fn pool_stats(&self) -> (u32, u32) {
        (
            self.write.size() + self.read.size(),
            (self.write.num_idle() + self.read.num_idle()) as u32,
        )
    }

    /// SQLite keeps its statistics itself when asked to.
    async fn maintain(&self) -> anyhow::Result<()> {
        sqlx::query("PRAGMA optimize").execute(&self.write).await?;
        Ok(())
    }
}
