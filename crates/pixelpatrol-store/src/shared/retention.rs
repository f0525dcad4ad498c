//! Retention (shared by both backends: compiled into each).

use async_trait::async_trait;
use pixelpatrol_core::model::{Purged, Timestamp};
use pixelpatrol_core::store::Retention;

use super::BackendStore;

#[async_trait]
impl Retention for BackendStore {
    async fn purge_step(&self, cutoff: Timestamp, batch: i64) -> anyhow::Result<Purged> {
        // Small statements, each its own transaction: nothing here holds
        // locks long enough to stall delivery.
        let cutoff = cutoff.millis();
        let attempts = sqlx::query!(
            "DELETE FROM delivery_attempts WHERE seq IN (SELECT a.seq FROM delivery_attempts a \
             WHERE a.started_at < $1 AND NOT EXISTS (SELECT 1 FROM deliveries d \
                WHERE d.id = a.delivery_id AND d.status = 'pending') \
             ORDER BY a.started_at LIMIT $2)",
            cutoff,
            batch
        )
        .execute(&self.write)
        .await?
        .rows_affected();
        // An event goes with its deliveries (and their attempts) once none
        // of them is pending.
        let events = sqlx::query!(
            "DELETE FROM events WHERE id IN (SELECT e.id FROM events e WHERE e.created_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id \
                AND (d.status = 'pending' OR d.updated_at >= $1)) \
             ORDER BY e.created_at LIMIT $2)",
            cutoff,
            batch
        )
        .execute(&self.write)
        .await?
        .rows_affected();
        Ok(Purged { attempts, events })
    }
}
