//! How concurrent writers are kept apart on SQLite: they are not concurrent.
//! Every write goes through the one writer connection, one transaction at a
//! time, so what PostgreSQL locks (see `pixelpatrol-store-postgres`'s
//! `locks.rs`, the file of the same name) needs nothing here, and the
//! statements read rows without a locking clause.

use pixelpatrol_core::model::{DeliveryId, Endpoint, EndpointId, LeaseToken, NewEvent, Timestamp};
use pixelpatrol_store::rows::{DeliveryRow, LeasedJobRow};

use super::Db;

/// The end of the fold's read of stored endpoint health.
pub(super) const FOLD_READ_ORDER: &str = ") ORDER BY id";

/// Sequence numbers are handed out in commit order by the single writer:
/// strict-order endpoints need no turn-taking (and the submission path does
/// not even look for them).
pub(super) async fn lock_strict_endpoints(
    _tx: &mut sqlx::Transaction<'static, Db>,
    _events: &[(&NewEvent, &[&Endpoint])],
) -> anyhow::Result<()> {
    Ok(())
}

/// A claim is one write transaction: when recover runs, none is half done.
pub(super) async fn wait_for_claims(
    _tx: &mut sqlx::Transaction<'static, Db>,
    _endpoint_id: &EndpointId,
) -> anyhow::Result<()> {
    Ok(())
}

/// A delivery retried by hand, read inside the retry's transaction.
pub(super) async fn delivery_for_retry(
    tx: &mut sqlx::Transaction<'static, Db>,
    endpoint_id: &EndpointId,
    delivery_id: &DeliveryId,
) -> anyhow::Result<Option<DeliveryRow>> {
    let endpoint_id = endpoint_id.as_str();
    let delivery_id = delivery_id.as_str();
    Ok(sqlx::query_as!(
        DeliveryRow,
        r#"SELECT seq AS "seq!", id, event_id, event_type, endpoint_id, site_id, ordering_key, status,
           attempts, next_attempt_at, last_status_code, last_error, created_at, updated_at
           FROM deliveries WHERE endpoint_id = $1 AND id = $2"#,
        endpoint_id,
        delivery_id
    )
    .fetch_optional(&mut **tx)
    .await?)
}

/// Leases up to `limit` due analysis jobs.
pub(super) async fn lease_moderation_jobs(
    tx: &mut sqlx::Transaction<'static, Db>,
    lease_token: &LeaseToken,
    now: Timestamp,
    lease_until: Timestamp,
    limit: i64,
) -> anyhow::Result<Vec<LeasedJobRow>> {
    let lease_token = lease_token.as_str();
    let lease_until = lease_until.millis();
    let now = now.millis();
    Ok(sqlx::query_as!(
        LeasedJobRow,
        "UPDATE moderation_jobs SET lease_token = $1, leased_until = $2, attempts = attempts + 1 \
         WHERE media_id IN (SELECT media_id FROM moderation_jobs \
           WHERE due_at <= $3 AND (leased_until IS NULL OR leased_until < $3) \
           ORDER BY due_at LIMIT $4) \
         RETURNING media_id, attempts, created_at",
        lease_token,
        lease_until,
        now,
        limit
    )
    .fetch_all(&mut **tx)
    .await?)
}

/// Member changes already take turns: one writer, one transaction at a time.
pub(super) async fn lock_site_members(
    _tx: &mut sqlx::Transaction<'static, Db>,
    _site_id: &str,
) -> anyhow::Result<()> {
    Ok(())
}

/// A site's deletion needs no turn of its own: one writer, one transaction
/// at a time, and the foreign keys cascade.
pub(super) async fn lock_site(
    _tx: &mut sqlx::Transaction<'static, Db>,
    _site_id: &str,
) -> anyhow::Result<()> {
    Ok(())
}

/// Begins a write transaction. IMMEDIATE takes the file's write lock at
/// once: in this process that changes nothing (the one writer connection
/// already runs one transaction at a time), but a writer in another process
/// on the same file (a `pixelpatrol` command beside `serve`) then waits its
/// turn for the busy timeout. A deferred transaction that reads first would
/// instead fail busy at its first write whenever the other process committed
/// after its read: SQLite cannot wait that conflict out.
pub(super) async fn begin_write(
    pool: &sqlx::Pool<Db>,
) -> Result<sqlx::Transaction<'static, Db>, sqlx::Error> {
    pool.begin_with("BEGIN IMMEDIATE").await
}
