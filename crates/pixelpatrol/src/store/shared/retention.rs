//! Retention and queue figures (shared by both backends: compiled into
//! each).

use async_trait::async_trait;

use super::BackendStore;
use crate::model::Purged;
use crate::store::Retention;

impl BackendStore {
    /// Pending deliveries of active endpoints and the oldest one's creation
    /// time. Both read only the (endpoint, seq) index of pending deliveries,
    /// endpoint by endpoint; disabled endpoints' kept deliveries are not the
    /// queue. `endpoint_head` picks endpoint `e`'s first pending delivery as
    /// `p` (the backends write it differently for their planners).
    pub(super) async fn queue_figures(
        &self,
        endpoint_head: &str,
    ) -> anyhow::Result<(i64, Option<i64>)> {
        let pending: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM endpoints e JOIN deliveries d \
             ON d.endpoint_id = e.id AND d.status = 'pending' WHERE e.active",
        )
        .fetch_one(&self.read)
        .await?;
        let oldest: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT MIN((SELECT p.created_at FROM deliveries p WHERE {endpoint_head})) \
             FROM endpoints e WHERE e.active"
        ))
        .fetch_one(&self.read)
        .await?;
        Ok((pending, oldest))
    }
}

#[async_trait]
impl Retention for BackendStore {
    async fn purge_step(&self, cutoff_ms: i64, batch: i64) -> anyhow::Result<Purged> {
        // Small statements, each its own transaction: nothing here holds
        // locks long enough to stall delivery.
        let attempts = sqlx::query(
            "DELETE FROM delivery_attempts WHERE seq IN (SELECT a.seq FROM delivery_attempts a \
             WHERE a.started_at < $1 AND NOT EXISTS (SELECT 1 FROM deliveries d \
                WHERE d.id = a.delivery_id AND d.status = 'pending') \
             ORDER BY a.started_at LIMIT $2)",
        )
        .bind(cutoff_ms)
        .bind(batch)
        .execute(&self.write)
        .await?
        .rows_affected();
        // An event goes with its deliveries (and their attempts) once none
        // of them is pending.
        let events = sqlx::query(
            "DELETE FROM events WHERE id IN (SELECT e.id FROM events e WHERE e.created_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id \
                AND (d.status = 'pending' OR d.updated_at >= $1)) \
             ORDER BY e.created_at LIMIT $2)",
        )
        .bind(cutoff_ms)
        .bind(batch)
        .execute(&self.write)
        .await?
        .rows_affected();
        Ok(Purged { attempts, events })
    }
}
