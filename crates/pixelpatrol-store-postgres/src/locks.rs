//! How concurrent writers are kept apart on PostgreSQL, where several
//! transactions (and several processes) write at once. SQLite's file of the
//! same name says why it needs none of this.

use pixelpatrol_core::model::{DeliveryId, Endpoint, EndpointId, LeaseToken, NewEvent, Timestamp};
use pixelpatrol_store::rows::{DeliveryRow, LeasedJobRow};

use super::Db;

/// The end of the fold's read of stored endpoint health: the rows stay
/// locked until commit, so the transitions are worked out exactly. NO KEY
/// UPDATE: a submission inserting deliveries holds a key-share lock on each
/// endpoint row (the foreign key); FOR UPDATE would conflict with it, and
/// the two, taking many endpoints in different orders, deadlocked.
pub(super) const FOLD_READ_ORDER: &str = ") ORDER BY id FOR NO KEY UPDATE";

/// Sequence numbers are handed out before commit, so two concurrent
/// transactions could commit in the opposite order of their numbers. For
/// strict-order endpoints that would let a later event overtake an earlier
/// one, so writers to such an endpoint take turns. Sorted ids keep two
/// writers from waiting on each other.
pub(super) async fn lock_strict_endpoints(
    tx: &mut sqlx::Transaction<'static, Db>,
    events: &[(&NewEvent, &[&Endpoint])],
) -> anyhow::Result<()> {
    let mut strict: Vec<&str> = events
        .iter()
        .flat_map(|(_, endpoints)| endpoints.iter())
        .filter(|endpoint| endpoint.strict_ordering)
        .map(|endpoint| endpoint.id.as_str())
        .collect();
    strict.sort_unstable();
    strict.dedup();
    for endpoint_id in strict {
        sqlx::query!("SELECT pg_advisory_xact_lock(hashtext($1))", endpoint_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// A claim still in progress holds the endpoint's pending rows; waiting for
/// it makes its leases visible to recover's check for busy lanes.
pub(super) async fn wait_for_claims(
    tx: &mut sqlx::Transaction<'static, Db>,
    endpoint_id: &EndpointId,
) -> anyhow::Result<()> {
    sqlx::query!(
        "SELECT seq FROM deliveries WHERE endpoint_id = $1 AND status = 'pending' FOR UPDATE",
        endpoint_id.as_str()
    )
    .fetch_all(&mut **tx)
    .await?;
    Ok(())
}

/// A delivery retried by hand, locked while its lane is checked.
pub(super) async fn delivery_for_retry(
    tx: &mut sqlx::Transaction<'static, Db>,
    endpoint_id: &EndpointId,
    delivery_id: &DeliveryId,
) -> anyhow::Result<Option<DeliveryRow>> {
    Ok(sqlx::query_as!(
        DeliveryRow,
        r#"SELECT seq AS "seq!", id, event_id, event_type, endpoint_id, site_id, ordering_key, status,
           attempts, next_attempt_at, last_status_code, last_error, created_at, updated_at
           FROM deliveries WHERE endpoint_id = $1 AND id = $2 FOR UPDATE"#,
        endpoint_id.as_str(),
        delivery_id.as_str()
    )
    .fetch_optional(&mut **tx)
    .await?)
}

/// Leases up to `limit` due analysis jobs; workers of several processes
/// lease different ones.
pub(super) async fn lease_moderation_jobs(
    tx: &mut sqlx::Transaction<'static, Db>,
    lease_token: &LeaseToken,
    now: Timestamp,
    lease_until: Timestamp,
    limit: i64,
) -> anyhow::Result<Vec<LeasedJobRow>> {
    Ok(sqlx::query_as!(
        LeasedJobRow,
        "UPDATE moderation_jobs SET lease_token = $1, leased_until = $2, attempts = attempts + 1 \
         WHERE media_id IN (SELECT media_id FROM moderation_jobs \
           WHERE due_at <= $3 AND (leased_until IS NULL OR leased_until < $3) \
           ORDER BY due_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
         RETURNING media_id, attempts, created_at",
        lease_token.as_str(),
        lease_until.millis(),
        now.millis(),
        limit
    )
    .fetch_all(&mut **tx)
    .await?)
}

/// Changes to one site's members take turns, so that the last-owner check
/// (count the owners after the change) sees every other change committed:
/// two owners demoting each other at once would otherwise both see the
/// other still an owner, and leave the site with none.
pub(super) async fn lock_site_members(
    tx: &mut sqlx::Transaction<'static, Db>,
    site_id: &str,
) -> anyhow::Result<()> {
    let key = format!("site-members:{site_id}");
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtext($1))", key)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The site's row, locked until commit, before its deletion reads what to
/// delete: a submission writing to the site (its media and event reference
/// the row) or an endpoint being created for it has committed by then, and
/// none starts until the deletion is done.
pub(super) async fn lock_site(
    tx: &mut sqlx::Transaction<'static, Db>,
    site_id: &str,
) -> anyhow::Result<()> {
    sqlx::query!("SELECT id FROM sites WHERE id = $1 FOR UPDATE", site_id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(())
}

/// Begins a write transaction. PostgreSQL's row locks (above) keep
/// concurrent writers apart; SQLite's file of the same name says why it
/// begins its own differently.
pub(super) async fn begin_write(
    pool: &sqlx::Pool<Db>,
) -> Result<sqlx::Transaction<'static, Db>, sqlx::Error> {
    pool.begin().await
}
