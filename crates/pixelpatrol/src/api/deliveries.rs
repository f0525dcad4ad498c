//! The delivery log of an endpoint, and retrying a delivery by hand.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::webhooks::load_endpoint;
use super::{Page, query};
use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::error::{AppError, Result};
use crate::model::{Delivery, DeliveryFilter, DeliveryStatus, RetryOutcome};
use crate::util::now_ms;

const MAX_PAGE: i64 = 250;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/sites/{site_id}/webhooks/{webhook_id}/deliveries",
            get(list_deliveries),
        )
        .route(
            "/v1/sites/{site_id}/webhooks/{webhook_id}/deliveries/{delivery_id}",
            get(get_delivery),
        )
        .route(
            "/v1/sites/{site_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
            post(retry_delivery),
        )
}

fn parse_filter(raw: Option<&str>) -> Result<DeliveryFilter> {
    let mut filter = DeliveryFilter {
        limit: query::DEFAULT_PAGE,
        ..DeliveryFilter::default()
    };
    for (name, value) in &query::params(raw) {
        match name.as_str() {
            "status" => {
                filter.status = Some(DeliveryStatus::parse(value).ok_or_else(|| {
                    AppError::invalid("status", "status must be pending, succeeded or failed")
                })?);
            }
            "event" => filter.event = Some(query::event(value)?),
            "since" => filter.since_ms = Some(query::since(value)?),
            "limit" => filter.limit = query::limit(value, MAX_PAGE)?,
            "cursor" => {
                // The log pages by sequence number, not by id.
                filter.before_seq = Some(
                    value
                        .parse::<i64>()
                        .ok()
                        .filter(|seq| *seq > 0)
                        .ok_or_else(|| {
                            AppError::invalid(
                                "cursor",
                                "cursor must be a next_cursor value from a previous page",
                            )
                        })?,
                );
            }
            other => {
                return Err(query::unknown(
                    other,
                    "status, event, since, limit or cursor",
                ));
            }
        }
    }
    Ok(filter)
}

async fn list_deliveries(
    caller: Caller,
    State(state): State<AppState>,
    Path((site_id, webhook_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Json<Page<Delivery>>> {
    let filter = parse_filter(query.as_deref())?;
    let endpoint = load_endpoint(&state, &caller, &site_id, &webhook_id).await?;
    let data = state.store.list_deliveries(&endpoint.id, &filter).await?;
    // A full page may have more behind it; the cursor is the oldest seq seen.
    let next_cursor = (data.len() as i64 == filter.limit)
        .then(|| data.last().map(|delivery| delivery.seq.to_string()))
        .flatten();
    Ok(Json(Page { data, next_cursor }))
}

async fn get_delivery(
    caller: Caller,
    State(state): State<AppState>,
    Path((site_id, webhook_id, delivery_id)): Path<(String, String, String)>,
) -> Result<Json<Delivery>> {
    let endpoint = load_endpoint(&state, &caller, &site_id, &webhook_id).await?;
    state
        .store
        .get_delivery(&endpoint.id, &delivery_id)
        .await?
        .map(Json)
        .ok_or(AppError::NotFound("delivery"))
}

/// Queues a fresh attempt now, for a pending, dead or even succeeded delivery.
async fn retry_delivery(
    caller: Caller,
    State(state): State<AppState>,
    Path((site_id, webhook_id, delivery_id)): Path<(String, String, String)>,
) -> Result<(StatusCode, Json<Delivery>)> {
    let endpoint = load_endpoint(&state, &caller, &site_id, &webhook_id).await?;
    match state
        .store
        .retry_delivery(&endpoint.id, &delivery_id, now_ms())
        .await?
    {
        RetryOutcome::Queued(delivery) => {
            state.deliverer.wake();
            Ok((StatusCode::ACCEPTED, Json(*delivery)))
        }
        RetryOutcome::InFlight => Err(AppError::Conflict(
            "an attempt of this delivery is in flight; try again when it has finished".into(),
        )),
        RetryOutcome::NotFound => Err(AppError::NotFound("delivery")),
    }
}
