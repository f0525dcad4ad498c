//! PostgreSQL's upkeep: the planner's statistics, the queue's oldest
//! delivery, pool figures.

use async_trait::async_trait;
use pixelpatrol_core::model::Timestamp;

use super::PostgresStore;
use super::claim::ENDPOINT_HEAD;
use pixelpatrol_core::store::Maintenance;

#[async_trait]
impl Maintenance for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn queue_stats(&self) -> anyhow::Result<(i64, Option<Timestamp>)> {
        let pending = self.pending_deliveries().await?;
        // Built from the claim's own head lookup (`claim::ENDPOINT_HEAD`, which
        // says why it is written so), so that the planner hint has one home;
        // hence not a `query!` (whose text must be one literal).
        let oldest: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT MIN((SELECT p.created_at FROM deliveries p WHERE {ENDPOINT_HEAD})) \
             FROM endpoints e WHERE e.active"
        ))
        .fetch_one(&self.read)
        .await?;
        Ok((pending, oldest.map(Timestamp::from_millis)))
    }

    async fn migration_status(&self) -> anyhow::Result<(i64, i64)> {
        self.migration_figures().await
    }

    fn pool_stats(&self) -> (u32, u32) {
        (self.write.size(), self.write.num_idle() as u32)
    }

    /// ANALYZE of the queue tables once a tenth of their rows changed
    /// (autovacuum looks too seldom for tables that grow this fast).
    async fn maintain(&self) -> anyhow::Result<()> {
        let stale = sqlx::query_scalar!(
            r#"SELECT relname::text AS "table!" FROM pg_stat_user_tables
             WHERE relname IN ('deliveries', 'delivery_attempts', 'events')
             AND n_mod_since_analyze > GREATEST(1000, n_live_tup / 10)"#
        )
        .fetch_all(&self.write)
        .await?;
        for table in stale {
            // The names come from the fixed list above.
            sqlx::query(&format!("ANALYZE {table}"))
                .execute(&self.write)
                .await?;
        }
        Ok(())
    }

    /// One pass over the pending deliveries (the pending partial index), an
    /// index probe each into endpoints and events; the worker runs it
    /// seldom (`delivery::maintenance`).
    async fn sweep_orphaned_deliveries(&self) -> anyhow::Result<u64> {
        let mut tx = super::locks::begin_write(&self.write).await?;
        let orphaned = sqlx::query_scalar!(
            "DELETE FROM deliveries d WHERE d.status = 'pending' \
             AND (NOT EXISTS (SELECT 1 FROM endpoints e WHERE e.id = d.endpoint_id) \
                OR NOT EXISTS (SELECT 1 FROM events ev WHERE ev.id = d.event_id)) \
             RETURNING d.id"
        )
        .fetch_all(&mut *tx)
        .await?;
        if !orphaned.is_empty() {
            sqlx::query!(
                "DELETE FROM delivery_attempts WHERE delivery_id = ANY($1)",
                &orphaned
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(orphaned.len() as u64)
    }
}
