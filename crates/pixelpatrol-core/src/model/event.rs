//! Events: written with the state change that caused them (the outbox), and
//! listed with their deliveries.

use pixelpatrol_webhooks::{EventType, WebhookEvent};
use serde::Serialize;

use super::{DeliveryId, EndpointId, EventId, SiteId, Timestamp};

/// An event about to be written with the state change that caused it.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: EventId,
    pub site_id: SiteId,
    pub event_type: EventType,
    /// Deliveries with the same lane key to one endpoint are sent in order:
    /// the media item's id (an endpoint's id for the alerts about it).
    pub media_id: String,
    /// The exact JSON body every endpoint receives.
    pub payload: String,
    pub created_at: Timestamp,
    /// When the first attempt is due (the retry schedule's first delay).
    pub deliver_at: Timestamp,
}

impl NewEvent {
    /// A new event of `event_type` about `data`, in the envelope every
    /// endpoint receives (`id`, `event`, `created_at`, `data`). Deliveries of
    /// events with the same `lane` to one endpoint are sent in order (the
    /// media item's id; an endpoint's id for its alerts).
    pub fn new(
        event_type: EventType,
        site_id: &SiteId,
        lane: &str,
        data: impl Serialize,
        created_at: Timestamp,
        deliver_at: Timestamp,
    ) -> anyhow::Result<Self> {
        let id = EventId::generate();
        let payload = serde_json::to_string(&WebhookEvent {
            id: id.to_string(),
            event: event_type.as_str().into(),
            created_at: created_at.rfc3339(),
            data,
        })?;
        Ok(NewEvent {
            id,
            site_id: site_id.clone(),
            event_type,
            media_id: lane.to_string(),
            payload,
            created_at,
            deliver_at,
        })
    }
}

/// An event with its deliveries, as the events list shows it.
#[derive(Debug, Clone)]
pub struct EventSummary {
    pub id: EventId,
    pub event: String,
    pub media_id: String,
    pub created_at: Timestamp,
    pub deliveries: Vec<EventDelivery>,
}

#[derive(Debug, Clone)]
pub struct EventDelivery {
    pub delivery_id: DeliveryId,
    pub webhook_id: EndpointId,
    pub status: String,
    pub attempts: i64,
    pub last_status_code: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub event: Option<EventType>,
    pub since: Option<Timestamp>,
    /// Only events with a smaller id (the page cursor).
    pub before_id: Option<EventId>,
    pub limit: i64,
}

/// The outcome of resending an event.
#[derive(Debug)]
pub enum ResendOutcome {
    /// The new deliveries' ids.
    Queued(Vec<DeliveryId>),
    EventNotFound,
    EndpointNotFound,
}
