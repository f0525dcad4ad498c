//! How concurrent writers are kept apart on PostgreSQL, where several
//! transactions (and several processes) write at once.

use super::Db;

/// The end of the fold's read of stored endpoint health: the rows stay
/// locked until commit, so the transitions are worked out exactly. NO KEY
/// UPDATE: a submission inserting deliveries holds a key-share lock on each
/// endpoint row (the foreign key); FOR UPDATE would conflict with it, and
/// the two, taking many endpoints in different orders, deadlocked.
pub(super) const FOLD_READ_ORDER: &str = ") ORDER BY id FOR NO KEY UPDATE";
/// A delivery retried by hand is locked while its lane is checked.
pub(super) const RETRY_READ_LOCK: &str = " FOR UPDATE";
/// Workers of several processes lease different jobs.
pub(super) const JOB_CLAIM_LOCK: &str = "FOR UPDATE SKIP LOCKED";

/// Sequence numbers are handed out before commit, so two concurrent
/// transactions could commit in the opposite order of their numbers. For
/// strict-order endpoints that would let a later event overtake an earlier
/// one, so writers to such an endpoint take turns. Sorted ids keep two
/// writers from waiting on each other.
pub(super) async fn lock_strict_endpoints(
    tx: &mut sqlx::Transaction<'static, Db>,
    endpoint_ids: &[&str],
) -> anyhow::Result<()> {
    let mut strict = endpoint_ids.to_vec();
    strict.sort_unstable();
    strict.dedup();
    for endpoint_id in strict {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(endpoint_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// A claim still in progress holds the endpoint's pending rows; waiting for
/// it makes its leases visible to recover's check for busy lanes.
pub(super) async fn wait_for_claims(
    tx: &mut sqlx::Transaction<'static, Db>,
    endpoint_id: &str,
) -> anyhow::Result<()> {
    sqlx::query(
        "SELECT seq FROM deliveries WHERE endpoint_id = $1 AND status = 'pending' FOR UPDATE",
    )
    .bind(endpoint_id)
    .fetch_all(&mut **tx)
    .await?;
    Ok(())
}
