//! The delivery log of an endpoint, and retrying a delivery by hand.

use std::collections::HashMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::Page;
use super::webhooks::load_endpoint;
use crate::AppState;
use crate::auth::Caller;
use crate::error::{AppError, Result};
use crate::store::{Delivery, DeliveryFilter, DeliveryStatus, RetryOutcome};
use crate::util::{now_ms, parse_rfc3339};

const DEFAULT_PAGE: i64 = 50;
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

fn parse_filter(query: Option<&str>) -> Result<DeliveryFilter> {
    let params: HashMap<String, String> =
        url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let mut filter = DeliveryFilter {
        limit: DEFAULT_PAGE,
        ..DeliveryFilter::default()
    };
    for (name, value) in &params {
        match name.as_str() {
            "status" => {
                filter.status = Some(DeliveryStatus::parse(value).ok_or_else(|| {
                    AppError::invalid("status", "status must be pending, succeeded or failed")
                })?);
            }
            "event" => {
                filter.event = Some(value.parse().map_err(
                    |error: pixelpatrol_webhooks::UnknownEventType| {
                        AppError::invalid("event", error.to_string())
                    },
                )?);
            }
            "since" => {
                filter.since_ms = Some(parse_rfc3339(value).ok_or_else(|| {
                    AppError::invalid(
                        "since",
                        "since must be an RFC 3339 time, e.g. 2024-01-20T10:30:00Z",
                    )
                })?);
            }
            "limit" => {
                filter.limit = value
                    .parse::<i64>()
                    .ok()
                    .filter(|limit| (1..=MAX_PAGE).contains(limit))
                    .ok_or_else(|| {
                        AppError::invalid("limit", format!("limit must be 1 to {MAX_PAGE}"))
                    })?;
            }
            "cursor" => {
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
                return Err(AppError::invalid(
                    other,
                    format!(
                        "unknown query parameter {other:?}; use status, event, since, limit or cursor"
                    ),
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
