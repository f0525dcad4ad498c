//! SQLite's upkeep: the planner's statistics, the queue's oldest delivery,
//! pool figures.

use async_trait::async_trait;
use pixelpatrol_core::model::Timestamp;

use super::SqliteStore;
use pixelpatrol_core::store::Maintenance;

#[async_trait]
impl Maintenance for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn queue_stats(&self) -> anyhow::Result<(i64, Option<Timestamp>)> {
        let pending = self.pending_deliveries().await?;
        // SQLite's MIN over the (endpoint, seq) pending index is one seek
        // per endpoint.
        let oldest = sqlx::query_scalar!(
            r#"SELECT MIN((SELECT p.created_at FROM deliveries p
                 WHERE p.endpoint_id = e.id AND p.status = 'pending' ORDER BY p.seq LIMIT 1))
               AS "oldest: i64" FROM endpoints e WHERE e.active"#
        )
        .fetch_one(&self.read)
        .await?;
        Ok((pending, oldest.map(Timestamp::from_millis)))
    }

    async fn migration_status(&self) -> anyhow::Result<(i64, i64)> {
        self.migration_figures().await
    }

    fn pool_stats(&self) -> (u32, u32) {
        (
            self.write.size() + self.read.size(),
            (self.write.num_idle() + self.read.num_idle()) as u32,
        )
    }

    /// SQLite keeps its statistics itself when asked to.
    async fn maintain(&self) -> anyhow::Result<()> {
        // A PRAGMA: SQLite cannot describe its result, so it is not checked
        // at compile time (nor are the WAL PRAGMAs in `wal.rs`).
        sqlx::query("PRAGMA optimize").execute(&self.write).await?;
        Ok(())
    }

    /// SQLite's foreign keys cascade and refuse a delivery of a missing
    /// endpoint or event: there is never an orphan to look for (and looking
    /// would hold the one writer's lock for a scan of the queue).
    async fn sweep_orphaned_deliveries(&self) -> anyhow::Result<u64> {
        Ok(0)
    }
}
