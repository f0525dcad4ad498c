//! Events: written with the state change that caused them (the outbox), and
//! listed with their deliveries.

use pixelpatrol_webhooks::{EventType, WebhookEvent};
use serde::Serialize;

use super::ser_ms;
use crate::util::{new_id, rfc3339};

/// An event about to be written with the state change that caused it.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    pub site_id: String,
    pub event_type: EventType,
    /// Deliveries about the same media item to one endpoint form an ordered lane.
    pub media_id: String,
    /// The exact JSON body every endpoint receives.
    pub payload: String,
    pub created_at: i64,
    /// When the first attempt is due (the retry schedule's first delay).
    pub deliver_at: i64,
}

impl NewEvent {
    /// A new event of `event_type` about `data`, in the envelope every
    /// endpoint receives (`id`, `event`, `created_at`, `data`). Deliveries of
    /// events with the same `lane` to one endpoint are sent in order (the
    /// media item's id; an endpoint's id for its alerts).
    pub fn new(
        event_type: EventType,
        site_id: &str,
        lane: &str,
        data: impl Serialize,
        created_at: i64,
        deliver_at: i64,
    ) -> anyhow::Result<Self> {
        let id = new_id("evt");
        let payload = serde_json::to_string(&WebhookEvent {
            id: id.clone(),
            event: event_type.as_str().into(),
            created_at: rfc3339(created_at),
            data,
        })?;
        Ok(NewEvent {
            id,
            site_id: site_id.to_string(),
            event_type,
            media_id: lane.to_string(),
            payload,
            created_at,
            deliver_at,
        })
    }
}

/// An event with its deliveries, as the events list shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EventSummary {
    pub id: String,
    pub event: String,
    pub media_id: String,
    #[serde(serialize_with = "ser_ms")]
    pub created_at: i64,
    pub deliveries: Vec<EventDelivery>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventDelivery {
    pub delivery_id: String,
    pub webhook_id: String,
    pub status: String,
    pub attempts: i64,
    pub last_status_code: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub event: Option<EventType>,
    pub since_ms: Option<i64>,
    /// Only events with a smaller id (the page cursor).
    pub before_id: Option<String>,
    pub limit: i64,
}

/// The outcome of resending an event.
#[derive(Debug)]
pub enum ResendOutcome {
    /// The new deliveries' ids.
    Queued(Vec<String>),
    EventNotFound,
    EndpointNotFound,
}
