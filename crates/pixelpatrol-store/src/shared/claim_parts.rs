//! The pieces both backends' claims share (compiled into each): which
//! endpoints a claim leaves out, how candidates are ranked per endpoint, and
//! which ranked candidates it takes. Each backend's `claim.rs` assembles
//! them around its own search.

use sqlx::QueryBuilder;

use super::Db;
use pixelpatrol_core::model::ClaimRequest;

/// Ranks the candidates of each endpoint, the earliest due first.
pub(super) const RANKED: &str = "), ranked AS (SELECT seq, next_attempt_at, endpoint_id, ROW_NUMBER() OVER \
     (PARTITION BY endpoint_id ORDER BY next_attempt_at, seq) AS place \
     FROM candidates) ";

/// Leaves out the endpoints this worker will not take more work for.
pub(super) fn push_skipped(claim: &mut QueryBuilder<'_, Db>, request: &ClaimRequest<'_>) {
    if !request.skip_endpoints.is_empty() {
        claim.push(" AND e.id NOT IN (");
        let mut ids = claim.separated(", ");
        for id in request.skip_endpoints {
            ids.push_bind(id.to_string());
        }
        claim.push(")");
    }
}

/// Which ranked candidates are taken: each endpoint's room, the earliest due
/// first, `limit` in all.
pub(super) fn push_choice(
    claim: &mut QueryBuilder<'_, Db>,
    request: &ClaimRequest<'_>,
    limit: i64,
) {
    claim.push("SELECT seq FROM ranked WHERE place <= ");
    if request.endpoint_room.is_empty() {
        claim.push_bind(request.max_per_endpoint);
    } else {
        claim.push("CASE endpoint_id");
        for (endpoint_id, room) in request.endpoint_room {
            claim
                .push(" WHEN ")
                .push_bind(endpoint_id.to_string())
                .push(" THEN ")
                .push_bind(*room);
        }
        claim
            .push(" ELSE ")
            .push_bind(request.max_per_endpoint)
            .push(" END");
    }
    claim
        .push(" ORDER BY next_attempt_at, seq LIMIT ")
        .push_bind(limit);
}
