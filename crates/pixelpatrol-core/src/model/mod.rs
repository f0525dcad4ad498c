//! The domain: plain data and the rules that hold for it, with no storage,
//! HTTP or I/O in them. The store keeps these types, the API shows them, the
//! delivery worker and moderation act on them.
//!
//! Timestamps are milliseconds since the Unix epoch (`i64`), the unit every
//! stored timestamp uses: one integer type sorts and compares the same on
//! SQLite and PostgreSQL. They are shown as RFC 3339 by `ser_ms`.

pub mod delivery;
pub mod endpoint;
pub mod event;
pub mod health;
pub mod media;
pub mod moderation;
pub mod retry;
pub mod site;

pub use delivery::{
    Attempt, AttemptRecord, ClaimRequest, ClaimedDelivery, Delivery, DeliveryFilter,
    DeliveryStatus, NextStep, Purged, RecoverOutcome, RetryOutcome,
};
pub use endpoint::{ALERT_ENDPOINT_ID, Endpoint, EndpointHealthState};
pub use event::{EventDelivery, EventFilter, EventSummary, NewEvent, ResendOutcome};
pub use health::{
    FailureInfo, HealthChange, HealthChangeKind, HealthFigures, HealthPolicy, HealthSummary,
    HealthTally, WindowFigures,
};
pub use media::{AiLabels, DecideOutcome, DecisionRecord, Media, MediaFilter, ModerationJob};
pub use moderation::{
    DecidedBy, Label, MediaStatus, Rule, RuleAction, RuleKind, RuleOutcome, Verdict,
};
pub use retry::RetrySchedule;
pub use site::{OPERATOR_SITE_ID, RuleGroup, Site};

/// Serializes epoch milliseconds as RFC 3339.
fn ser_ms<S: serde::Serializer>(ms: &i64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&crate::util::rfc3339(*ms))
}

fn ser_ms_opt<S: serde::Serializer>(ms: &Option<i64>, serializer: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => serializer.serialize_str(&crate::util::rfc3339(*ms)),
        None => serializer.serialize_none(),
    }
}
