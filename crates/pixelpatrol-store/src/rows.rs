//! Rows as the database returns them, apart from the domain types they turn
//! into. Static statements fill them with `sqlx::query_as!`, which checks at
//! compile time that the statement returns every field with its type and
//! nullability; statements built at run time (filters, id lists, the claim)
//! read them with `#[derive(FromRow)]` (one definition serves both backends:
//! the derive is generic over the row type), by column name, and use the
//! column lists below, so that a row struct and its list change together.

use anyhow::Context as _;

use pixelpatrol_core::model::{
    AiLabels, Attempt, DecidedBy, Delivery, DeliveryStatus, EventDelivery, EventSummary,
    FailureInfo, HealthChange, HealthChangeKind, LeaseToken, Media, MediaStatus, RuleGroup, Site,
    Timestamp,
};

/// What a health change reports of its endpoint.
pub const CHANGE_COLUMNS: &str = "id, site_id, url, consecutive_failures, disabled_reason, last_failure_at, \
     last_failure_class, last_failure_status, last_failure_message";
pub const MEDIA_COLUMNS: &str = "id, site_id, app_media_id, content_type, content_url, body, metadata, status, review_note, decided_by, reviewer_id, reviewer_email, rule_group_id, ai_labels, applied_rules, processing_ms, created_at, updated_at, moderated_at";
pub const DELIVERY_COLUMNS: &str = "seq, id, event_id, event_type, endpoint_id, site_id, ordering_key, status, attempts, next_attempt_at, last_status_code, last_error, created_at, updated_at";
pub const ATTEMPT_COLUMNS: &str = "delivery_id, attempt, started_at, duration_ms, status_code, response_body, error_class, error_message, next_attempt_at";

#[derive(Debug)]
pub struct SiteRow {
    pub id: String,
    pub name: String,
    pub url: Option<String>,
    pub description: Option<String>,
    pub key_hash: String,
    pub confidence_threshold: f64,
    pub external_analyzer_url: Option<String>,
    pub external_analyzer_secret: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<SiteRow> for Site {
    fn from(row: SiteRow) -> Self {
        Site {
            id: row.id.into(),
            name: row.name,
            url: row.url,
            description: row.description,
            key_hash: row.key_hash,
            confidence_threshold: row.confidence_threshold,
            external_analyzer_url: row.external_analyzer_url,
            external_analyzer_secret: row.external_analyzer_secret,
            created_at: Timestamp::from_millis(row.created_at),
            updated_at: Timestamp::from_millis(row.updated_at),
        }
    }
}

#[derive(Debug)]
pub struct RuleGroupRow {
    pub id: String,
    pub site_id: String,
    pub name: String,
    pub description: Option<String>,
    pub is_default: bool,
    /// JSON array of rules.
    pub rules: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl TryFrom<RuleGroupRow> for RuleGroup {
    type Error = anyhow::Error;

    fn try_from(row: RuleGroupRow) -> anyhow::Result<Self> {
        Ok(RuleGroup {
            rules: serde_json::from_str(&row.rules)
                .with_context(|| format!("rule group {}: unreadable rules", row.id))?,
            id: row.id.into(),
            site_id: row.site_id.into(),
            name: row.name,
            description: row.description,
            is_default: row.is_default,
            created_at: Timestamp::from_millis(row.created_at),
            updated_at: Timestamp::from_millis(row.updated_at),
        })
    }
}

/// [`CHANGE_COLUMNS`]: an endpoint as a health change reports it.
#[derive(Debug, sqlx::FromRow)]
pub struct ChangeRow {
    pub id: String,
    pub site_id: String,
    pub url: String,
    pub consecutive_failures: i64,
    pub disabled_reason: Option<String>,
    pub last_failure_at: Option<i64>,
    pub last_failure_class: Option<String>,
    pub last_failure_status: Option<i64>,
    pub last_failure_message: Option<String>,
}

impl ChangeRow {
    pub fn into_change(self, kind: HealthChangeKind, at: Timestamp) -> HealthChange {
        HealthChange {
            kind,
            last_failure: self.last_failure_at.map(|failed_at| FailureInfo {
                at: Timestamp::from_millis(failed_at),
                class: self.last_failure_class,
                status_code: self.last_failure_status,
                message: self.last_failure_message,
            }),
            endpoint_id: self.id.into(),
            site_id: self.site_id.into(),
            url: self.url,
            consecutive_failures: self.consecutive_failures,
            reason: self.disabled_reason,
            at,
        }
    }
}

/// [`CHANGE_COLUMNS`] with the stored alert state, read before a fold.
#[derive(Debug, sqlx::FromRow)]
pub struct StoredHealthRow {
    #[sqlx(flatten)]
    pub endpoint: ChangeRow,
    pub alert_state: String,
    pub active: bool,
}

#[derive(Debug, sqlx::FromRow)]
pub struct MediaRow {
    pub id: String,
    pub site_id: String,
    pub app_media_id: Option<String>,
    pub content_type: String,
    pub content_url: Option<String>,
    pub body: Option<String>,
    /// JSON object.
    pub metadata: String,
    pub status: String,
    pub review_note: Option<String>,
    pub decided_by: Option<String>,
    pub reviewer_id: Option<String>,
    pub reviewer_email: Option<String>,
    pub rule_group_id: Option<String>,
    /// JSON array of labels; absent before the first analysis.
    pub ai_labels: Option<String>,
    /// JSON array of rule outcomes; absent before the first analysis.
    pub applied_rules: Option<String>,
    pub processing_ms: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub moderated_at: Option<i64>,
}

impl TryFrom<MediaRow> for Media {
    type Error = anyhow::Error;

    fn try_from(row: MediaRow) -> anyhow::Result<Self> {
        Ok(Media {
            metadata: serde_json::from_str(&row.metadata)
                .with_context(|| format!("media {}: unreadable metadata", row.id))?,
            ai_results: AiLabels {
                labels: json_column(row.ai_labels)?,
            },
            applied_rules: json_column(row.applied_rules)?,
            id: row.id.into(),
            site_id: row.site_id.into(),
            app_media_id: row.app_media_id,
            content_type: row.content_type,
            content_url: row.content_url,
            body: row.body,
            status: MediaStatus::parse(&row.status)
                .with_context(|| format!("unknown media status {:?}", row.status))?,
            review_note: row.review_note,
            decided_by: match row.decided_by.as_deref() {
                Some(text) => Some(
                    DecidedBy::parse(text).with_context(|| format!("unknown decider {text:?}"))?,
                ),
                None => None,
            },
            reviewer: match (row.reviewer_id, row.reviewer_email) {
                (Some(user_id), Some(email)) => Some(pixelpatrol_core::model::Actor {
                    user_id: user_id.into(),
                    email,
                }),
                _ => None,
            },
            rule_group_id: row.rule_group_id.map(Into::into),
            processing_ms: row.processing_ms,
            created_at: Timestamp::from_millis(row.created_at),
            updated_at: Timestamp::from_millis(row.updated_at),
            moderated_at: row.moderated_at.map(Timestamp::from_millis),
        })
    }
}

/// Reads an optional JSON column; absent means empty.
fn json_column<T: serde::de::DeserializeOwned + Default>(
    text: Option<String>,
) -> anyhow::Result<T> {
    match text {
        Some(text) => Ok(serde_json::from_str(&text)?),
        None => Ok(T::default()),
    }
}

#[derive(Debug, sqlx::FromRow)]
pub struct DeliveryRow {
    pub seq: i64,
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    pub endpoint_id: String,
    pub site_id: String,
    pub ordering_key: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl TryFrom<DeliveryRow> for Delivery {
    type Error = anyhow::Error;

    fn try_from(row: DeliveryRow) -> anyhow::Result<Self> {
        Ok(Delivery {
            status: DeliveryStatus::parse(&row.status)
                .with_context(|| format!("unknown delivery status {:?}", row.status))?,
            seq: row.seq,
            id: row.id.into(),
            event_id: row.event_id.into(),
            event: row.event_type,
            webhook_id: row.endpoint_id.into(),
            site_id: row.site_id.into(),
            media_id: row.ordering_key,
            attempt_count: row.attempts,
            next_attempt_at: row.next_attempt_at.map(Timestamp::from_millis),
            last_status_code: row.last_status_code,
            last_error: row.last_error,
            created_at: Timestamp::from_millis(row.created_at),
            updated_at: Timestamp::from_millis(row.updated_at),
            attempts: Vec::new(),
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub struct AttemptRow {
    pub delivery_id: String,
    pub attempt: i64,
    pub started_at: i64,
    pub duration_ms: i64,
    pub status_code: Option<i64>,
    pub response_body: Option<String>,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    pub next_attempt_at: Option<i64>,
}

impl From<AttemptRow> for Attempt {
    fn from(row: AttemptRow) -> Self {
        Attempt {
            delivery_id: row.delivery_id.into(),
            attempt: row.attempt,
            started_at: Timestamp::from_millis(row.started_at),
            duration_ms: row.duration_ms,
            status_code: row.status_code,
            response_body: row.response_body,
            error_class: row.error_class,
            error_message: row.error_message,
            next_attempt_at: row.next_attempt_at.map(Timestamp::from_millis),
        }
    }
}

/// What a claim hands the sender, joined from the delivery, its endpoint and
/// its event.
#[derive(Debug, sqlx::FromRow)]
pub struct ClaimedRow {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    pub endpoint_id: String,
    pub attempts: i64,
    pub url: String,
    pub secret: String,
    pub payload: String,
    pub event_created_at: i64,
}

/// The columns of [`ClaimedRow`], from `deliveries d`, `endpoints e` and `events ev`.
pub const CLAIMED_COLUMNS: &str = "d.id, d.event_id, d.event_type, d.endpoint_id, d.attempts, \
     e.url, e.secret, ev.payload, ev.created_at AS event_created_at";

impl ClaimedRow {
    pub fn into_claimed(
        self,
        lease_token: &LeaseToken,
    ) -> pixelpatrol_core::model::ClaimedDelivery {
        pixelpatrol_core::model::ClaimedDelivery {
            id: self.id.into(),
            lease_token: lease_token.clone(),
            event_id: self.event_id.into(),
            event_type: self.event_type,
            endpoint_id: self.endpoint_id.into(),
            url: self.url,
            secret: self.secret,
            payload: self.payload,
            event_created_at: Timestamp::from_millis(self.event_created_at),
            previous_attempts: self.attempts,
        }
    }
}

#[derive(Debug, sqlx::FromRow)]
pub struct EventRow {
    pub id: String,
    pub event_type: String,
    pub media_id: String,
    pub created_at: i64,
}

impl From<EventRow> for EventSummary {
    fn from(row: EventRow) -> Self {
        EventSummary {
            id: row.id.into(),
            event: row.event_type,
            media_id: row.media_id,
            created_at: Timestamp::from_millis(row.created_at),
            deliveries: Vec::new(),
        }
    }
}

/// An event's delivery as the events list shows it.
#[derive(Debug, sqlx::FromRow)]
pub struct EventDeliveryRow {
    pub id: String,
    pub event_id: String,
    pub endpoint_id: String,
    pub status: String,
    pub attempts: i64,
    pub last_status_code: Option<i64>,
}

impl From<EventDeliveryRow> for EventDelivery {
    fn from(row: EventDeliveryRow) -> Self {
        EventDelivery {
            delivery_id: row.id.into(),
            webhook_id: row.endpoint_id.into(),
            status: row.status,
            attempts: row.attempts,
            last_status_code: row.last_status_code,
        }
    }
}

/// A stored event, read to be sent again.
#[derive(Debug)]
pub struct StoredEventRow {
    pub id: String,
    pub site_id: String,
    pub event_type: String,
    pub media_id: String,
    pub payload: String,
}

/// An analysis job as a claim leases it.
#[derive(Debug)]
pub struct LeasedJobRow {
    pub media_id: String,
    pub attempts: i64,
    pub created_at: i64,
}

/// The attempt figures of one time window.
#[derive(Debug)]
pub struct WindowRow {
    pub attempts: i64,
    pub successes: i64,
    pub average: Option<f64>,
}

/// An endpoint's queue right now.
#[derive(Debug)]
pub struct QueueRow {
    pub pending: i64,
    pub in_flight: i64,
    pub oldest: Option<i64>,
}
