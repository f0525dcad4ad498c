//! Media items, their moderation decisions and analysis jobs.

use serde::Serialize;

use super::moderation::{DecidedBy, Label, MediaStatus, RuleOutcome, Verdict};
use super::{Actor, LeaseToken, MediaId, RuleGroupId, SiteId, Timestamp};

#[derive(Debug, Clone)]
pub struct Media {
    pub id: MediaId,
    pub site_id: SiteId,
    pub app_media_id: Option<String>,
    pub content_type: String,
    pub content_url: Option<String>,
    pub body: Option<String>,
    pub metadata: serde_json::Value,
    pub status: MediaStatus,
    pub review_note: Option<String>,
    pub decided_by: Option<DecidedBy>,
    /// The person who reviewed it in the dashboard (a review through the
    /// API, made with a key, names nobody).
    pub reviewer: Option<Actor>,
    /// The rule group chosen at submission; `None` means the site's default.
    pub rule_group_id: Option<RuleGroupId>,
    pub ai_results: AiLabels,
    pub applied_rules: Vec<RuleOutcome>,
    /// Submission (or re-moderation request) to automatic decision.
    pub processing_ms: Option<i64>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub moderated_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AiLabels {
    pub labels: Vec<Label>,
}

/// A decision to store with its `media.moderated` event.
#[derive(Debug, Clone)]
pub struct DecisionRecord {
    pub status: Verdict,
    pub decided_by: DecidedBy,
    pub note: Option<String>,
    /// Who decided, when a signed-in person did.
    pub reviewer: Option<Actor>,
    pub moderated_at: Timestamp,
    /// Automatic decisions: what analysis found, how the rules came out, how
    /// long it took. Manual decisions keep what is stored.
    pub analysis: Option<(Vec<Label>, Vec<RuleOutcome>, i64)>,
}

/// A moderation job leased to one worker.
#[derive(Debug, Clone)]
pub struct ModerationJob {
    pub media: Media,
    pub lease_token: LeaseToken,
    /// Attempts including this one.
    pub attempts: i64,
    /// When the analysis was asked for (submission or re-moderation).
    pub requested_at: Timestamp,
}

#[derive(Debug)]
pub enum DecideOutcome {
    Decided(Box<Media>),
    NotFound,
    /// A person decided meanwhile; their decision stands.
    ManuallyReviewed,
    /// The job's lease ran out and another worker took it (or re-moderation
    /// was asked for meanwhile): this result is dropped.
    LeaseLost,
}

#[derive(Debug, Clone, Default)]
pub struct MediaFilter {
    pub status: Option<MediaStatus>,
    /// Only items with a smaller id (the page cursor).
    pub before_id: Option<MediaId>,
    pub limit: i64,
}
