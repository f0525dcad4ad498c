//! The delivery log of an endpoint, and retrying a delivery by hand.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use super::webhooks::load_endpoint;
use super::{Page, query};
use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::error::{AppError, Result};
use crate::model::{
    Attempt, Delivery, DeliveryFilter, DeliveryId, DeliveryStatus, EndpointId, EventId,
    RetryOutcome, SiteId, Timestamp,
};

const MAX_PAGE: i64 = 250;

/// A delivery as the log shows it, with every attempt.
#[derive(Serialize)]
struct DeliveryOut {
    id: DeliveryId,
    event_id: EventId,
    event: String,
    webhook_id: EndpointId,
    site_id: SiteId,
    media_id: String,
    status: DeliveryStatus,
    attempt_count: i64,
    next_attempt_at: Option<Timestamp>,
    last_status_code: Option<i64>,
    last_error: Option<String>,
    created_at: Timestamp,
    updated_at: Timestamp,
    attempts: Vec<AttemptOut>,
}

#[derive(Serialize)]
struct AttemptOut {
    attempt: i64,
    started_at: Timestamp,
    duration_ms: i64,
    status_code: Option<i64>,
    response_body: Option<String>,
    error_class: Option<String>,
    error_message: Option<String>,
    next_attempt_at: Option<Timestamp>,
}

impl From<&Delivery> for DeliveryOut {
    fn from(delivery: &Delivery) -> Self {
        DeliveryOut {
            id: delivery.id.clone(),
            event_id: delivery.event_id.clone(),
            event: delivery.event.clone(),
            webhook_id: delivery.webhook_id.clone(),
            site_id: delivery.site_id.clone(),
            media_id: delivery.media_id.clone(),
            status: delivery.status,
            attempt_count: delivery.attempt_count,
            next_attempt_at: delivery.next_attempt_at,
            last_status_code: delivery.last_status_code,
            last_error: delivery.last_error.clone(),
            created_at: delivery.created_at,
            updated_at: delivery.updated_at,
            attempts: delivery.attempts.iter().map(AttemptOut::from).collect(),
        }
    }
}

impl From<&Attempt> for AttemptOut {
    fn from(attempt: &Attempt) -> Self {
        AttemptOut {
            attempt: attempt.attempt,
            started_at: attempt.started_at,
            duration_ms: attempt.duration_ms,
            status_code: attempt.status_code,
            response_body: attempt.response_body.clone(),
            error_class: attempt.error_class.clone(),
            error_message: attempt.error_message.clone(),
            next_attempt_at: attempt.next_attempt_at,
        }
    }
}

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
            "since" => filter.since = Some(query::since(value)?),
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
    Path((site_id, webhook_id)): Path<(SiteId, EndpointId)>,
    RawQuery(query): RawQuery,
) -> Result<Json<Page<DeliveryOut>>> {
    let filter = parse_filter(query.as_deref())?;
    let endpoint = load_endpoint(&state, &caller, &site_id, &webhook_id).await?;
    let data = state.store.list_deliveries(&endpoint.id, &filter).await?;
    // A full page may have more behind it; the cursor is the oldest seq seen.
    let next_cursor = (data.len() as i64 == filter.limit)
        .then(|| data.last().map(|delivery| delivery.seq.to_string()))
        .flatten();
    Ok(Json(Page {
        data: data.iter().map(DeliveryOut::from).collect(),
        next_cursor,
    }))
}

async fn get_delivery(
    caller: Caller,
    State(state): State<AppState>,
    Path((site_id, webhook_id, delivery_id)): Path<(SiteId, EndpointId, DeliveryId)>,
) -> Result<Json<DeliveryOut>> {
    let endpoint = load_endpoint(&state, &caller, &site_id, &webhook_id).await?;
    state
        .store
        .get_delivery(&endpoint.id, &delivery_id)
        .await?
        .map(|delivery| Json(DeliveryOut::from(&delivery)))
        .ok_or(AppError::NotFound("delivery"))
}

/// Queues a fresh attempt now, for a pending, dead or even succeeded delivery.
async fn retry_delivery(
    caller: Caller,
    State(state): State<AppState>,
    Path((site_id, webhook_id, delivery_id)): Path<(SiteId, EndpointId, DeliveryId)>,
) -> Result<(StatusCode, Json<DeliveryOut>)> {
    let endpoint = load_endpoint(&state, &caller, &site_id, &webhook_id).await?;
    let audit = caller.audit(
        &site_id,
        "delivery.retried",
        delivery_id.as_str(),
        serde_json::json!({"endpoint_id": endpoint.id}),
    );
    match state
        .store
        .retry_delivery(&endpoint.id, &delivery_id, Timestamp::now(), Some(&audit))
        .await?
    {
        RetryOutcome::Queued(delivery) => {
            state.deliverer.wake();
            Ok((StatusCode::ACCEPTED, Json(DeliveryOut::from(&*delivery))))
        }
        RetryOutcome::InFlight => Err(AppError::Conflict(
            "an attempt of this delivery is in flight; try again when it has finished".into(),
        )),
        RetryOutcome::NotFound => Err(AppError::NotFound("delivery")),
    }
}
