//! What the backends' `maintenance.rs` share (compiled into each): the
//! migrations, the queue's size.

use sqlx::migrate::Migrator;

use super::BackendStore;

/// The migrations this build applies on start: the compiling backend
/// crate's own `migrations/`.
pub(super) fn migrator() -> Migrator {
    sqlx::migrate!("./migrations")
}

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

    /// Applied migrations against those this build knows.
    pub(super) async fn migration_figures(&self) -> anyhow::Result<(i64, i64)> {
        let applied = sqlx::query_scalar!(
            r#"SELECT COUNT(*) AS "applied!: i64" FROM _sqlx_migrations WHERE success"#
        )
        .fetch_one(&self.read)
        .await?;
        Ok((applied, migrator().migrations.len() as i64))
    }
}
