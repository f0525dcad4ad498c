//! The JSON bodies PixelPatrol sends. The server builds its requests from these
//! same types, so a receiver that parses with them reads exactly what was sent.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The events an endpoint can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// New media was submitted for moderation.
    #[serde(rename = "media.created")]
    MediaCreated,
    /// Moderation of a media item completed (automatically or by review).
    #[serde(rename = "media.moderated")]
    MediaModerated,
    /// A test event sent on request to check an endpoint.
    #[serde(rename = "test.webhook")]
    TestWebhook,
    /// Operator alert: an endpoint's deliveries keep failing.
    #[serde(rename = "endpoint.failing")]
    EndpointFailing,
    /// Operator alert: a failing endpoint succeeded again.
    #[serde(rename = "endpoint.recovered")]
    EndpointRecovered,
    /// Operator alert: an endpoint was disabled (410 Gone, or failing too long).
    #[serde(rename = "endpoint.disabled")]
    EndpointDisabled,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        EventType::MediaCreated,
        EventType::MediaModerated,
        EventType::TestWebhook,
        EventType::EndpointFailing,
        EventType::EndpointRecovered,
        EventType::EndpointDisabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::MediaCreated => "media.created",
            EventType::MediaModerated => "media.moderated",
            EventType::TestWebhook => "test.webhook",
            EventType::EndpointFailing => "endpoint.failing",
            EventType::EndpointRecovered => "endpoint.recovered",
            EventType::EndpointDisabled => "endpoint.disabled",
        }
    }

    /// The operator's alerts (sent to `PIXELPATROL_ALERT_WEBHOOK_URL`), as
    /// opposed to the events a site's endpoints subscribe to.
    pub fn is_operator_alert(self) -> bool {
        matches!(
            self,
            EventType::EndpointFailing | EventType::EndpointRecovered | EventType::EndpointDisabled
        )
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown event type {0:?}; expected one of media.created, media.moderated, test.webhook, endpoint.failing, endpoint.recovered, endpoint.disabled"
)]
pub struct UnknownEventType(pub String);

impl FromStr for EventType {
    type Err = UnknownEventType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|event| event.as_str() == s)
            .ok_or_else(|| UnknownEventType(s.to_string()))
    }
}

/// The envelope of every webhook body: `{"id", "event", "created_at", "data"}`.
///
/// `id` identifies the event: it is the same on every retry and for every
/// endpoint, so use it to deduplicate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookEvent<T = serde_json::Value> {
    pub id: String,
    pub event: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub data: T,
}

impl WebhookEvent {
    /// The event name parsed, if it is one this library knows.
    pub fn event_type(&self) -> Result<EventType, UnknownEventType> {
        self.event.parse()
    }

    /// Reads `data` as the typed payload of its event.
    pub fn data_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.data)
    }
}

/// `data` of `media.created`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaCreated {
    pub media_id: String,
    pub site_id: String,
    /// Always `pending`.
    pub status: String,
    pub app_media_id: Option<String>,
    /// `text`, `image` or `video`.
    pub content_type: String,
    pub metadata: serde_json::Value,
    pub created_at: String,
}

/// `data` of `media.moderated`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaModerated {
    pub media_id: String,
    pub site_id: String,
    /// `approved`, `rejected` or `flagged`.
    pub status: String,
    pub ai_results: AiResults,
    pub applied_rules: Vec<serde_json::Value>,
    pub moderated_at: String,
    pub app_media_id: Option<String>,
    /// How the decision was reached: `person` (a review) or `automatic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// The reviewer's note, for a person's decisions that carry one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The person who decided, for reviews made in the dashboard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewer: Option<Reviewer>,
}

/// A person who reviewed an item (`media.moderated`'s `reviewer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reviewer {
    pub user_id: String,
    pub email: String,
}

/// What the analyzers found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AiResults {
    pub labels: Vec<serde_json::Value>,
}

/// `data` of the operator alerts `endpoint.failing`, `endpoint.recovered`
/// and `endpoint.disabled`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointAlert {
    pub webhook_id: String,
    pub site_id: String,
    pub url: String,
    /// `failing`, `healthy` or `disabled`.
    pub state: String,
    pub consecutive_failures: i64,
    /// Why the endpoint was disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub last_failure: Option<LastFailure>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastFailure {
    /// RFC 3339, UTC.
    pub at: String,
    /// `http_status`, `timeout`, `connect`, `dns`, `tls` or `blocked_target`.
    pub class: Option<String>,
    pub status_code: Option<i64>,
    pub message: Option<String>,
}

/// `data` of `test.webhook`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestWebhook {
    /// `test_` followed by a unique suffix.
    pub media_id: String,
    pub site_id: String,
    /// Always `test`.
    pub status: String,
    pub is_test: bool,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_round_trip_through_their_names() {
        for event in EventType::ALL {
            assert_eq!(event.as_str().parse::<EventType>(), Ok(event));
            assert_eq!(
                serde_json::to_string(&event).unwrap(),
                format!("\"{}\"", event.as_str())
            );
        }
        assert!("media.deleted".parse::<EventType>().is_err());
    }

    #[test]
    fn the_spec_example_parses_as_media_moderated() {
        let body = r#"{"id":"webhook_123","event":"media.moderated","created_at":"2024-01-20T10:30:00Z","data":{"media_id":"media_456","site_id":"site_789","status":"approved","ai_results":{"labels":[]},"applied_rules":[],"moderated_at":"2024-01-20T10:30:00Z","app_media_id":null}}"#;
        let event: WebhookEvent = serde_json::from_str(body).unwrap();
        assert_eq!(event.event_type(), Ok(EventType::MediaModerated));
        let data: MediaModerated = event.data_as().unwrap();
        assert_eq!(data.status, "approved");
        assert_eq!(data.media_id, "media_456");
    }
}
