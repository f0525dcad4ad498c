//! What moderation produces: labels from analysis, rules and their
//! outcomes, and the verdict.

use serde::{Deserialize, Serialize};

/// Category of the labels that say analysis is incomplete (an analyzer
/// failed, timed out, had no model, or could not read the format). Such a
/// label always flags the item: content is never let through unexamined.
pub const ANALYSIS_CATEGORY: &str = "analysis";

/// One finding about a media item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub name: String,
    pub category: String,
    /// 0 to 1.
    pub confidence: f64,
    /// The analyzer that produced it.
    pub analyzer: String,
    /// What the analyzer saw or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Label {
    pub fn new(name: &str, category: &str, confidence: f64, analyzer: &str) -> Self {
        Label {
            name: name.into(),
            category: category.into(),
            confidence: round(confidence.clamp(0.0, 1.0)),
            analyzer: analyzer.into(),
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// An analyzer failed or timed out: the item goes to a human.
    pub fn analyzer_failed(analyzer: &str, why: impl Into<String>) -> Self {
        Label::new("analyzer_failed", ANALYSIS_CATEGORY, 1.0, analyzer).with_detail(why)
    }
}

/// Six decimals are plenty for a confidence and keep payloads readable.
fn round(value: f64) -> f64 {
    (value * 1e6).round() / 1e6
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    /// Fails when the label's confidence reaches the threshold.
    Prohibition,
    /// Fails unless the label's confidence reaches the threshold.
    Requirement,
    /// Fails when the regular expression matches the text body.
    Pattern,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    Reject,
    Flag,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub id: String,
    pub name: String,
    pub kind: RuleKind,
    /// The label a prohibition or requirement looks at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Confidence in 0..=1; `None` uses the site's confidence threshold.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// The regular expression of a pattern rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    pub action: RuleAction,
}

/// One rule's result, as `applied_rules` of `media.moderated` carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleOutcome {
    pub rule_id: String,
    pub name: String,
    /// `prohibition`, `requirement`, `pattern`, or `system` for the built-in
    /// check that every analyzer completed.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    pub passed: bool,
    /// Passed, but the score is within the gray area below the threshold:
    /// the item is flagged for review.
    #[serde(default)]
    pub gray_area: bool,
    pub action: RuleAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approved,
    Rejected,
    Flagged,
}

impl Verdict {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "approved" => Some(Verdict::Approved),
            "rejected" => Some(Verdict::Rejected),
            "flagged" => Some(Verdict::Flagged),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approved => "approved",
            Verdict::Rejected => "rejected",
            Verdict::Flagged => "flagged",
        }
    }
}

/// Who made a decision: a person or the automatic moderation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DecidedBy {
    /// Someone reviewing the item (dashboard or API).
    Person,
    Automatic,
}

impl DecidedBy {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            // `manual` is what earlier versions wrote (and a process of an
            // earlier version may still write during a rolling upgrade).
            "person" | "manual" => Some(DecidedBy::Person),
            "automatic" => Some(DecidedBy::Automatic),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DecidedBy::Person => "person",
            DecidedBy::Automatic => "automatic",
        }
    }
}

/// Where a media item stands: waiting for its first decision, or decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaStatus {
    Pending,
    Approved,
    Rejected,
    Flagged,
}

impl MediaStatus {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(MediaStatus::Pending),
            _ => Verdict::parse(text).map(MediaStatus::from),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MediaStatus::Pending => "pending",
            MediaStatus::Approved => Verdict::Approved.as_str(),
            MediaStatus::Rejected => Verdict::Rejected.as_str(),
            MediaStatus::Flagged => Verdict::Flagged.as_str(),
        }
    }
}

impl From<Verdict> for MediaStatus {
    fn from(verdict: Verdict) -> Self {
        match verdict {
            Verdict::Approved => MediaStatus::Approved,
            Verdict::Rejected => MediaStatus::Rejected,
            Verdict::Flagged => MediaStatus::Flagged,
        }
    }
}
