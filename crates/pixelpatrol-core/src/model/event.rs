//! Events: written with the state change that caused them (the outbox), and
//! listed with their deliveries.

use pixelpatrol_webhooks::EventType;
use serde::Serialize;

use super::ser_ms;

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
