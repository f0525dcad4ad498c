//! The SQLite claim: which due deliveries a worker leases next.
//!
//! A delivery is due when its time has come, nobody holds a live lease on
//! it, its endpoint is active and nothing earlier in its lane is still
//! pending: per media item always, and for the whole endpoint when it asks
//! for strict ordering.
//!
//! The search runs per endpoint (at most its cap from each), so an endpoint
//! left out (at its cap, e.g. hanging) or with a large backlog costs nothing
//! to the others' claims. SQLite has no LATERAL: the per-endpoint search is a
//! correlated `IN`. A strict-order endpoint can only ever send its first
//! pending delivery: it is looked up directly (the search would test every
//! due delivery of its backlog against the ones before it, at every claim);
//! SQLite's `MIN` over the (endpoint, seq) pending index is one seek.
//!
//! A leased delivery is next due when its lease ends: that keeps in-flight
//! and not yet recorded deliveries out of the due index range the next
//! claims scan, and an expired lease makes the delivery due again by itself.
//!
//! SQLite cannot join in `RETURNING`: the writer returns the sequence
//! numbers, and a reader (beside the writer, which is the bottleneck)
//! fetches what sending needs.

use anyhow::Context as _;
use sqlx::QueryBuilder;

use super::claim_parts::{RANKED, push_choice, push_skipped};
use super::{Db, SqliteStore};
use pixelpatrol_core::model::{ClaimRequest, ClaimedDelivery};
use pixelpatrol_store::rows::{CLAIMED_COLUMNS, ClaimedRow};

impl SqliteStore {
    pub(super) async fn claim(
        &self,
        request: ClaimRequest<'_>,
    ) -> anyhow::Result<Vec<ClaimedDelivery>> {
        let mut claim = QueryBuilder::<Db>::new(
            "WITH candidates AS (SELECT d.seq, d.endpoint_id, d.next_attempt_at \
             FROM endpoints e JOIN deliveries d ON d.seq IN (\
                SELECT x.seq FROM deliveries x ",
        );
        claim
            .push(
                "WHERE x.endpoint_id = e.id AND x.status = 'pending' \
                 AND x.next_attempt_at <= ",
            )
            .push_bind(request.now.millis())
            .push(" AND (x.lease_until IS NULL OR x.lease_until < ")
            .push_bind(request.now.millis())
            .push(
                ") AND NOT EXISTS (SELECT 1 FROM deliveries p \
                    WHERE p.endpoint_id = x.endpoint_id AND p.ordering_key = x.ordering_key \
                    AND p.status = 'pending' AND p.seq < x.seq) \
                 ORDER BY x.next_attempt_at, x.seq LIMIT ",
            )
            .push_bind(request.max_per_endpoint);
        claim.push(") WHERE e.active AND NOT e.strict_ordering");
        push_skipped(&mut claim, &request);
        claim.push(
            " UNION ALL SELECT h.seq, h.endpoint_id, h.next_attempt_at \
             FROM endpoints e JOIN deliveries h ON h.seq = (SELECT MIN(p.seq) \
                FROM deliveries p WHERE p.endpoint_id = e.id AND p.status = 'pending') ",
        );
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
        claim.push(RANKED);
        claim
            .push("UPDATE deliveries SET lease_until = ")
            .push_bind(request.lease_until.millis())
            .push(", next_attempt_at = ")
            .push_bind(request.lease_until.millis())
            .push(", lease_token = ")
            .push_bind(request.lease_token.as_str())
            .push(" WHERE seq IN (");
        push_choice(&mut claim, &request, request.limit);
        claim.push(")");
        claim.push(" RETURNING seq");
        let seqs: Vec<i64> = claim
            .build_query_scalar()
            .persistent(false)
            .fetch_all(&self.write)
            .await?;
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        match self.read_claimed(&request, &seqs).await {
            Ok(rows) => Ok(rows
                .into_iter()
                .map(|row| row.into_claimed(request.lease_token))
                .collect()),
            Err(error) => {
                // Nobody will send these: due again at once rather than when
                // the lease runs out.
                if let Err(release_error) = self.release_unread(&request, &seqs).await {
                    tracing::warn!(error = ?release_error, "releasing unread claims failed; they are retried when their lease ends");
                }
                Err(error).context("reading the claimed deliveries")
            }
        }
    }

    /// What sending the claimed deliveries needs, from a reader.
    async fn read_claimed(
        &self,
        request: &ClaimRequest<'_>,
        seqs: &[i64],
    ) -> Result<Vec<ClaimedRow>, sqlx::Error> {
        let mut details = QueryBuilder::<Db>::new(format!(
            "SELECT {CLAIMED_COLUMNS} FROM deliveries d \
             JOIN endpoints e ON e.id = d.endpoint_id \
             JOIN events ev ON ev.id = d.event_id WHERE d.lease_token = "
        ));
        details
            .push_bind(request.lease_token.as_str())
            .push(" AND d.seq IN (");
        let mut list = details.separated(", ");
        for seq in seqs {
            list.push_bind(*seq);
        }
        details.push(") ORDER BY d.seq");
        details
            .build_query_as()
            .persistent(false)
            .fetch_all(&self.read)
            .await
    }

    async fn release_unread(
        &self,
        request: &ClaimRequest<'_>,
        seqs: &[i64],
    ) -> Result<(), sqlx::Error> {
        let mut release = QueryBuilder::<Db>::new(
            "UPDATE deliveries SET lease_until = NULL, lease_token = NULL, next_attempt_at = ",
        );
        release
            .push_bind(request.now.millis())
            .push(" WHERE lease_token = ")
            .push_bind(request.lease_token.as_str())
            .push(" AND seq IN (");
        let mut list = release.separated(", ");
        for seq in seqs {
            list.push_bind(*seq);
        }
        release.push(")");
        release
            .build()
            .persistent(false)
            .execute(&self.write)
            .await?;
        Ok(())
    }
}
