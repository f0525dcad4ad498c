//! How concurrent writers are kept apart on SQLite: they are not concurrent.
//! Every write goes through the one writer connection, one transaction at a
//! time, so what PostgreSQL locks (see `../postgres/locks.rs`) needs nothing
//! here, and the statements read rows without a locking clause.

use super::Db;

/// The end of the fold's read of stored endpoint health.
pub(super) const FOLD_READ_ORDER: &str = ") ORDER BY id";
/// Appended to the read of a delivery retried by hand.
pub(super) const RETRY_READ_LOCK: &str = "";
/// Appended to the choice of moderation jobs to lease.
pub(super) const JOB_CLAIM_LOCK: &str = "";

/// Sequence numbers are handed out in commit order by the single writer:
/// strict-order endpoints need no turn-taking.
pub(super) async fn lock_strict_endpoints(
    _tx: &mut sqlx::Transaction<'static, Db>,
    _endpoint_ids: &[&str],
) -> anyhow::Result<()> {
    Ok(())
}

/// A claim is one write transaction: when recover runs, none is half done.
pub(super) async fn wait_for_claims(
    _tx: &mut sqlx::Transaction<'static, Db>,
    _endpoint_id: &str,
) -> anyhow::Result<()> {
    Ok(())
}
