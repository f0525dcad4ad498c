//! PostgreSQL's upkeep: the planner's statistics, migrations, pool figures.

use async_trait::async_trait;
use sqlx::migrate::Migrator;

use super::PostgresStore;
use super::claim::ENDPOINT_HEAD;
use crate::store::Maintenance;

/// The migrations this build applies on start.
pub(super) fn migrator() -> Migrator {
    sqlx::migrate!("./migrations/postgres")
}

#[async_trait]
impl Maintenance for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn queue_stats(&self) -> anyhow::Result<(i64, Option<i64>)> {
        self.queue_figures(ENDPOINT_HEAD).await
    }

    async fn migration_status(&self) -> anyhow::Result<(i64, i64)> {
        let known = migrator().migrations.len() as i64;
        let applied: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.read)
                .await?;
        Ok((applied, known))
    }

    /// `read` and `write` are the same pool.
    fn pool_stats(&self) -> (u32, u32) {
        (self.write.size(), self.write.num_idle() as u32)
    }

    /// ANALYZE of the queue tables once a tenth of their rows changed
    /// (autovacuum looks too seldom for tables that grow this fast).
    async fn maintain(&self) -> anyhow::Result<()> {
        let stale: Vec<String> = sqlx::query_scalar(
            "SELECT relname::text FROM pg_stat_user_tables \
             WHERE relname IN ('deliveries', 'delivery_attempts', 'events') \
             AND n_mod_since_analyze > GREATEST(1000, n_live_tup / 10)",
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
}
