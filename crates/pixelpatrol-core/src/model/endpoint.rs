//! Webhook endpoints: where a site's events go, and what the server keeps
//! of their health.

use pixelpatrol_webhooks::EventType;

use super::{EndpointId, SiteId, Timestamp};

/// The endpoint operator alerts are delivered to (on [`super::OPERATOR_SITE_ID`]).
pub const ALERT_ENDPOINT_ID: &str = "wh_operator_alerts";

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: EndpointId,
    pub site_id: SiteId,
    pub url: String,
    pub secret: String,
    pub events: Vec<EventType>,
    pub active: bool,
    pub description: Option<String>,
    pub strict_ordering: bool,
    /// Why the server disabled the endpoint (`410 Gone`, or failing too long).
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<Timestamp>,
    pub health: EndpointHealthState,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// What the server keeps about an endpoint's recent attempts.
#[derive(Debug, Clone, Default)]
pub struct EndpointHealthState {
    pub consecutive_failures: i64,
    /// When the current run of failures began.
    pub failing_since: Option<Timestamp>,
    pub last_success_at: Option<Timestamp>,
    pub last_failure_at: Option<Timestamp>,
    pub last_failure_class: Option<String>,
    pub last_failure_status: Option<i64>,
    pub last_failure_message: Option<String>,
}

impl Endpoint {
    pub fn subscribes_to(&self, event: EventType) -> bool {
        self.events.contains(&event)
    }

    /// `healthy`, `failing` (at least `failing_after` failed attempts in a
    /// row) or `disabled`, as the health API and the dashboard show it.
    pub fn state(&self, failing_after: i64) -> &'static str {
        if !self.active {
            "disabled"
        } else if self.health.consecutive_failures >= failing_after {
            "failing"
        } else {
            "healthy"
        }
    }
}
