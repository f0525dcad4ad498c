//! Retention (shared by both backends: compiled into each).

use async_trait::async_trait;
use pixelpatrol_core::model::{Purged, Timestamp};
use pixelpatrol_core::store::Retention;
use sqlx::QueryBuilder;

use super::{BackendStore, Db};

#[async_trait]
impl Retention for BackendStore {
    async fn purge_step(&self, cutoff: Timestamp, batch: i64) -> anyhow::Result<Purged> {
        // Small batches, each its own transaction: nothing here holds locks
        // long enough to stall delivery.
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
        // of them is pending, in one transaction: PostgreSQL's queue tables
        // have no foreign keys to cascade (its migration 0009 says why).
        let mut tx = super::locks::begin_write(&self.write).await?;
        let expired = sqlx::query_scalar!(
            "SELECT e.id FROM events e WHERE e.created_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id \
                AND (d.status = 'pending' OR d.updated_at >= $1)) \
             ORDER BY e.created_at LIMIT $2",
            cutoff,
            batch
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut events = 0;
        if !expired.is_empty() {
            let in_expired = |head: &str, tail: &str| {
                let mut delete = QueryBuilder::<Db>::new(head);
                let mut ids = delete.separated(", ");
                for id in &expired {
                    ids.push_bind(id.as_str());
                }
                delete.push(tail);
                delete
            };
            in_expired(
                "DELETE FROM delivery_attempts WHERE delivery_id IN \
                 (SELECT d.id FROM deliveries d WHERE d.event_id IN (",
                "))",
            )
            .build()
            .persistent(false)
            .execute(&mut *tx)
            .await?;
            in_expired("DELETE FROM deliveries WHERE event_id IN (", ")")
                .build()
                .persistent(false)
                .execute(&mut *tx)
                .await?;
            events = in_expired("DELETE FROM events WHERE id IN (", ")")
                .build()
                .persistent(false)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(Purged { attempts, events })
    }
}
