//! The PostgreSQL claim: which due deliveries a worker leases next, with
//! several processes claiming at once.
//!
//! A delivery is due when its time has come, nobody holds a live lease on
//! it, its endpoint is active and nothing earlier in its lane is still
//! pending: per media item always, and for the whole endpoint when it asks
//! for strict ordering. One statement, read top to bottom:
//!
//! 1. **candidates**, per endpoint (at most its cap from each, as a LATERAL
//!    join), so an endpoint left out (at its cap, e.g. hanging) or with a
//!    large backlog costs nothing to the others' claims. The lane check is a
//!    per-candidate lookup of the lane's first pending delivery, so that
//!    PostgreSQL seeks the lane index on (endpoint, key) for each candidate
//!    (as an anti-join it sometimes scanned the endpoint's whole lane index
//!    per candidate instead), evaluated only until the endpoint's cap is
//!    found. `<=` is `=` there (the candidate is itself pending in its lane)
//!    but lets the planner assume that many candidates pass, as they do;
//!    with `=` it assumed almost none would and read and sorted every due
//!    delivery first.
//! 2. A strict-order endpoint can only ever send its first pending delivery:
//!    it is looked up directly (the search above would test every due
//!    delivery of its backlog against the ones before it, at every claim),
//!    with [`ENDPOINT_HEAD`]. `LIMIT` keeps the subquery from being
//!    flattened into a join PostgreSQL may hash against a scan of the whole
//!    table.
//! 3. **ranked** and the choice: each endpoint's room, the earliest due
//!    first (`pixelpatrol-store/src/shared/claim_parts.rs`).
//! 4. **chosen**: the search locks nothing (locking every candidate it
//!    looked at took most of the database's time); only the chosen rows are
//!    locked, skipping those another process holds. A row another process
//!    changed and committed meanwhile (leased, recorded with a later retry,
//!    its endpoint disabled) is checked again here and left out, and so is
//!    one whose event is gone (no foreign key here, migration 0009: it would
//!    be leased and never returned). Processes
//!    searching at once find the same first rows: choosing among more than
//!    needed, the limit applied after skipping, leaves each of them a full
//!    batch. The choice is handed over as an array so that the rows are
//!    fetched by key whatever the statistics say (as `IN`, the planner
//!    joined it against every due delivery).
//! 5. **claimed**: the lease is written, touching only unindexed columns (a
//!    heap-only update; SQLite moves the due time to the lease's end, which
//!    here would write a new entry in every index of the table), and the
//!    leased rows come back joined with their endpoints and events: one
//!    round trip.

use sqlx::QueryBuilder;

use super::claim_parts::{RANKED, push_choice, push_skipped};
use super::{Db, PostgresStore};
use pixelpatrol_core::model::{ClaimRequest, ClaimedDelivery};
use pixelpatrol_store::rows::{CLAIMED_COLUMNS, ClaimedRow};

/// The condition that picks endpoint `e`'s first pending delivery (as `p`).
/// Written as `p.endpoint_id = e.id ... ORDER BY p.seq`, the planner may read
/// the primary key (seq order) from the oldest delivery of all, filtering,
/// until it meets the endpoint's head: it assumes pending rows are spread
/// evenly over seq, where in a queue they are the newest (33,000 buffer
/// reads a claim in the ordering benchmark). Matched as a range and ordered
/// on, the endpoint needs an ascending (endpoint_id, seq) index to be read
/// without a sort, and the pending partial index is the only one (migration
/// 0005). The queue gauges (`maintenance.rs`) are built from it too.
pub(super) const ENDPOINT_HEAD: &str = "p.endpoint_id >= e.id AND p.endpoint_id <= e.id \
    AND p.status = 'pending' ORDER BY p.endpoint_id, p.seq LIMIT 1";

impl PostgresStore {
    pub(super) async fn claim(
        &self,
        request: ClaimRequest<'_>,
    ) -> anyhow::Result<Vec<ClaimedDelivery>> {
        let mut claim = QueryBuilder::<Db>::new(
            "WITH candidates AS (SELECT d.seq, d.endpoint_id, d.next_attempt_at \
             FROM endpoints e CROSS JOIN LATERAL (\
                SELECT x.seq, x.endpoint_id, x.next_attempt_at FROM deliveries x ",
        );
        // 1. Candidates of endpoints without strict ordering.
        claim
            .push(
                "WHERE x.endpoint_id = e.id AND x.status = 'pending' \
                 AND x.next_attempt_at <= ",
            )
            .push_bind(request.now.millis())
            .push(" AND (x.lease_until IS NULL OR x.lease_until < ")
            .push_bind(request.now.millis())
            .push(
                ") AND x.seq <= (SELECT MIN(p.seq) FROM deliveries p \
                    WHERE p.endpoint_id = x.endpoint_id AND p.ordering_key = x.ordering_key \
                    AND p.status = 'pending') \
                 ORDER BY x.next_attempt_at, x.seq LIMIT ",
            )
            .push_bind(request.max_per_endpoint);
        claim.push(") d WHERE e.active AND NOT e.strict_ordering");
        push_skipped(&mut claim, &request);
        // 2. The head of each strict-order endpoint.
        claim
            .push(
                " UNION ALL SELECT h.seq, h.endpoint_id, h.next_attempt_at \
                 FROM endpoints e CROSS JOIN LATERAL (SELECT p.seq, p.endpoint_id, \
                    p.next_attempt_at, p.lease_until FROM deliveries p WHERE ",
            )
            .push(ENDPOINT_HEAD)
            .push(") h ");
        claim
            .push("WHERE e.active AND e.strict_ordering AND h.next_attempt_at <= ")
            .push_bind(request.now.millis())
            .push(" AND (h.lease_until IS NULL OR h.lease_until < ")
            .push_bind(request.now.millis())
            .push(")");
        push_skipped(&mut claim, &request);
        claim
            .push(" ORDER BY next_attempt_at, seq LIMIT ")
            .push_bind(request.limit.saturating_mul(4));
        // 3. Ranked per endpoint.
        claim.push(RANKED);
        // 4. The chosen rows, checked again and locked.
        claim.push(
            ", chosen AS (SELECT seq FROM deliveries WHERE status = 'pending' \
             AND endpoint_id IN (SELECT id FROM endpoints WHERE active) \
             AND EXISTS (SELECT 1 FROM events ev WHERE ev.id = deliveries.event_id) \
             AND next_attempt_at <= ",
        );
        claim
            .push_bind(request.now.millis())
            .push(" AND (lease_until IS NULL OR lease_until < ")
            .push_bind(request.now.millis())
            .push(") AND seq = ANY(ARRAY(");
        push_choice(&mut claim, &request, request.limit.saturating_mul(2));
        claim
            .push(")) ORDER BY next_attempt_at, seq LIMIT ")
            .push_bind(request.limit)
            .push(" FOR UPDATE SKIP LOCKED), claimed AS (");
        // 5. Leased, and returned with what sending needs.
        claim
            .push("UPDATE deliveries SET lease_until = ")
            .push_bind(request.lease_until.millis())
            .push(", lease_token = ")
            .push_bind(request.lease_token.as_str())
            .push(" WHERE seq IN (SELECT seq FROM chosen)");
        claim.push(format!(
            " RETURNING seq, id, event_id, event_type, endpoint_id, attempts) \
             SELECT {CLAIMED_COLUMNS} FROM claimed d \
             JOIN endpoints e ON e.id = d.endpoint_id \
             JOIN events ev ON ev.id = d.event_id ORDER BY d.seq"
        ));
        let rows: Vec<ClaimedRow> = claim
            .build_query_as()
            .persistent(false)
            .fetch_all(&self.write)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| row.into_claimed(request.lease_token))
            .collect())
    }
}
