//! A site's events with their per-endpoint delivery status, and resending an
//! event.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::sites::load_site;
use super::{Page, parse_json, query};
use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::error::{AppError, Result};
use crate::model::{
    DeliveryId, EndpointId, EventDelivery, EventFilter, EventId, EventSummary, ResendOutcome,
    SiteId, Timestamp,
};

const MAX_PAGE: i64 = 500;

/// An event with where it went.
#[derive(Serialize)]
struct EventOut {
    id: EventId,
    event: String,
    media_id: String,
    created_at: Timestamp,
    deliveries: Vec<EventDeliveryOut>,
}

#[derive(Serialize)]
struct EventDeliveryOut {
    delivery_id: DeliveryId,
    webhook_id: EndpointId,
    status: String,
    attempts: i64,
    last_status_code: Option<i64>,
}

impl From<&EventSummary> for EventOut {
    fn from(event: &EventSummary) -> Self {
        EventOut {
            id: event.id.clone(),
            event: event.event.clone(),
            media_id: event.media_id.clone(),
            created_at: event.created_at,
            deliveries: event
                .deliveries
                .iter()
                .map(EventDeliveryOut::from)
                .collect(),
        }
    }
}

impl From<&EventDelivery> for EventDeliveryOut {
    fn from(delivery: &EventDelivery) -> Self {
        EventDeliveryOut {
            delivery_id: delivery.delivery_id.clone(),
            webhook_id: delivery.webhook_id.clone(),
            status: delivery.status.clone(),
            attempts: delivery.attempts,
            last_status_code: delivery.last_status_code,
        }
    }
}

/// The deliveries a resend queued.
#[derive(Serialize)]
struct ResendOut {
    event_id: EventId,
    deliveries: Vec<DeliveryId>,
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sites/{site_id}/events", get(list_events))
        .route("/v1/sites/{site_id}/events/{event_id}/resend", post(resend))
}

async fn list_events(
    caller: Caller,
    State(state): State<AppState>,
    Path(site_id): Path<SiteId>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Page<EventOut>>> {
    let site = load_site(&state, &caller, &site_id).await?;
    let mut filter = EventFilter {
        limit: query::DEFAULT_PAGE,
        ..EventFilter::default()
    };
    for (name, value) in &query::params(raw.as_deref()) {
        match name.as_str() {
            "event" => filter.event = Some(query::event(value)?),
            "since" => filter.since = Some(query::since(value)?),
            "limit" => filter.limit = query::limit(value, MAX_PAGE)?,
            "cursor" => filter.before_id = Some(query::id_cursor(value, "evt_")?),
            other => return Err(query::unknown(other, "event, since, limit or cursor")),
        }
    }
    let data = state.store.list_events(&site.id, &filter).await?;
    let next_cursor = (data.len() as i64 == filter.limit)
        .then(|| data.last().map(|event| event.id.to_string()))
        .flatten();
    Ok(Json(Page {
        data: data.iter().map(EventOut::from).collect(),
        next_cursor,
    }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Resend {
    /// Only to this endpoint (subscribed or not); otherwise to every active
    /// endpoint of the site subscribed to the event.
    webhook_id: Option<EndpointId>,
}

/// Sends an event again: new deliveries with the same event id and body, so
/// receivers deduplicate as for any retry.
async fn resend(
    caller: Caller,
    State(state): State<AppState>,
    Path((site_id, event_id)): Path<(SiteId, EventId)>,
    body: Bytes,
) -> Result<(StatusCode, Json<ResendOut>)> {
    let site = load_site(&state, &caller, &site_id).await?;
    // The body is optional: none resends to every subscribed endpoint.
    let input: Resend = if body.iter().all(u8::is_ascii_whitespace) {
        Resend::default()
    } else {
        parse_json(&body)?
    };
    match state
        .store
        .resend_event(
            &site.id,
            &event_id,
            input.webhook_id.as_ref(),
            Timestamp::now(),
        )
        .await?
    {
        ResendOutcome::Queued(deliveries) => {
            state.deliverer.wake();
            Ok((
                StatusCode::ACCEPTED,
                Json(ResendOut {
                    event_id,
                    deliveries,
                }),
            ))
        }
        ResendOutcome::EventNotFound => Err(AppError::NotFound("event")),
        ResendOutcome::EndpointNotFound => Err(AppError::NotFound("webhook")),
    }
}
