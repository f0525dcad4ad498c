//! Deliveries: one event to one endpoint, its attempts, and the requests
//! that claim, record and list them.

use pixelpatrol_webhooks::EventType;
use serde::Serialize;

use super::{DeliveryId, EndpointId, EventId, LeaseToken, SiteId, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Succeeded,
    /// Dead: every scheduled attempt failed. Kept, listed, retryable by hand.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(DeliveryStatus::Pending),
            "succeeded" => Some(DeliveryStatus::Succeeded),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

/// A delivery as the log shows it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: DeliveryId,
    pub event_id: EventId,
    pub event: String,
    pub webhook_id: EndpointId,
    pub site_id: SiteId,
    pub media_id: String,
    pub status: DeliveryStatus,
    pub attempt_count: i64,
    pub next_attempt_at: Option<Timestamp>,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub attempts: Vec<Attempt>,
    pub seq: i64,
}

#[derive(Debug, Clone)]
pub struct Attempt {
    pub attempt: i64,
    pub started_at: Timestamp,
    pub duration_ms: i64,
    pub status_code: Option<i64>,
    pub response_body: Option<String>,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    pub next_attempt_at: Option<Timestamp>,
    pub delivery_id: DeliveryId,
}

/// A delivery reserved for one worker, with everything needed to send it.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: DeliveryId,
    pub lease_token: LeaseToken,
    pub event_id: EventId,
    pub event_type: String,
    pub endpoint_id: EndpointId,
    pub url: String,
    pub secret: String,
    pub payload: String,
    /// When the event was created (for end-to-end latency).
    pub event_created_at: Timestamp,
    /// Attempts made before this one.
    pub previous_attempts: i64,
}

/// What happened to a delivery after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    Succeeded,
    RetryAt(Timestamp),
    Dead,
}

/// One finished attempt, to be recorded together with the delivery's new state.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub delivery_id: DeliveryId,
    pub endpoint_id: EndpointId,
    pub lease_token: LeaseToken,
    pub attempt: i64,
    pub started_at: Timestamp,
    pub duration_ms: i64,
    pub status_code: Option<i64>,
    pub response_body: Option<String>,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    pub next: NextStep,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RecoverOutcome {
    pub requeued: u64,
    /// Dead deliveries left alone because their lane has an attempt in
    /// flight; asking again later takes them.
    pub skipped_in_flight: u64,
}

/// What one retention step removed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Purged {
    pub attempts: u64,
    pub events: u64,
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub status: Option<DeliveryStatus>,
    pub event: Option<EventType>,
    pub since: Option<Timestamp>,
    /// Only deliveries older than this sequence number (the page cursor).
    pub before_seq: Option<i64>,
    pub limit: i64,
}

#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    pub lease_token: &'a LeaseToken,
    pub now: Timestamp,
    pub lease_until: Timestamp,
    pub limit: i64,
    /// Endpoints this worker will not take more work for right now.
    pub skip_endpoints: &'a [EndpointId],
    /// Most deliveries taken for one endpoint…
    pub max_per_endpoint: i64,
    /// …except these, which already have attempts in flight: (endpoint, room left).
    pub endpoint_room: &'a [(EndpointId, i64)],
}

/// Outcome of a request to retry a delivery by hand.
#[derive(Debug)]
pub enum RetryOutcome {
    Queued(Box<Delivery>),
    InFlight,
    NotFound,
}
