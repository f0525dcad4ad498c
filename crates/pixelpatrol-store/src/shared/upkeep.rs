//! What the backends' `maintenance.rs` share (compiled into each): the
//! queue's size and the migrations applied.

use super::BackendStore;

impl BackendStore {
    /// Pending deliveries of active endpoints. It reads only the (endpoint,
    /// seq) index of pending deliveries, endpoint by endpoint; disabled
    /// endpoints' kept deliveries are not the queue. (The oldest one is in
    /// the backend's `maintenance.rs`: each writes the head lookup its
    /// planner reads best.)
    pub(super) async fn pending_deliveries(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar!(
            r#"SELECT COUNT(*) AS "pending!: i64" FROM endpoints e JOIN deliveries d
             ON d.endpoint_id = e.id AND d.status = 'pending' WHERE e.active"#
        )
        .fetch_one(&self.read)
        .await?)
    }

    /// Applied migrations.
    pub(super) async fn applied_migrations(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar!(
            r#"SELECT COUNT(*) AS "applied!: i64" FROM _sqlx_migrations WHERE success"#
        )
        .fetch_one(&self.read)
        .await?)
    }
}
