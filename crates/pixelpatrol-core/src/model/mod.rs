//! The domain: plain data and the rules that hold for it, with no storage,
//! HTTP or I/O in them. The store keeps these types, the delivery worker and
//! moderation act on them, and the API shows them through response types of
//! its own (so that a field reaches clients only when the API adds it).
//!
//! Ids are one type per kind ([`SiteId`], [`EndpointId`], …) and points in
//! time are [`Timestamp`]s; durations stay plain milliseconds (`i64`, named
//! `…_ms`).

pub mod delivery;
pub mod endpoint;
pub mod event;
pub mod health;
pub mod id;
pub mod media;
pub mod moderation;
pub mod people;
pub mod retry;
pub mod site;
pub mod timestamp;

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
pub use id::{
    AuditId, DeliveryId, EndpointId, EventId, InvitationId, LeaseToken, MediaId, RuleGroupId,
    SiteId, UserId,
};
pub use media::{AiLabels, DecideOutcome, DecisionRecord, Media, MediaFilter, ModerationJob};
pub use moderation::{
    DecidedBy, Label, MediaStatus, Rule, RuleAction, RuleKind, RuleOutcome, Verdict,
};
pub use people::{
    AcceptOutcome, Access, Actor, AuditEntry, Invitation, MemberChange, Membership, Role, Session,
    User,
};
pub use retry::RetrySchedule;
pub use site::{OPERATOR_SITE_ID, RuleGroup, Site};
pub use timestamp::Timestamp;
