//! Sites and their rule groups.

use super::moderation::Rule;
use super::{RuleGroupId, SiteId, Timestamp};

/// The operator's own site: it holds the alert endpoint, is never listed and
/// has no usable key.
pub const OPERATOR_SITE_ID: &str = "site_operator";

#[derive(Debug, Clone)]
pub struct Site {
    pub id: SiteId,
    pub name: String,
    pub url: Option<String>,
    pub description: Option<String>,
    pub key_hash: String,
    /// The default threshold of the site's rules (0 to 1).
    pub confidence_threshold: f64,
    /// The site's own external analyzer, used instead of the operator's.
    pub external_analyzer_url: Option<String>,
    pub external_analyzer_secret: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A named set of rules; every site has exactly one default group.
#[derive(Debug, Clone)]
pub struct RuleGroup {
    pub id: RuleGroupId,
    pub site_id: SiteId,
    pub name: String,
    pub description: Option<String>,
    pub is_default: bool,
    pub rules: Vec<Rule>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}
