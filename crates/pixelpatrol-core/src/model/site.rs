//! Sites and their rule groups.

use serde::Serialize;

use super::moderation::Rule;
use super::ser_ms;

/// The operator's own site: it holds the alert endpoint, is never listed and
/// has no usable key.
pub const OPERATOR_SITE_ID: &str = "site_operator";

#[derive(Debug, Clone, Serialize)]
pub struct Site {
    pub id: String,
    pub name: String,
    pub url: Option<String>,
    pub description: Option<String>,
    #[serde(skip)]
    pub key_hash: String,
    /// The default threshold of the site's rules (0 to 1).
    pub confidence_threshold: f64,
    /// The site's own external analyzer, used instead of the operator's.
    pub external_analyzer_url: Option<String>,
    #[serde(skip)]
    pub external_analyzer_secret: Option<String>,
    #[serde(serialize_with = "ser_ms")]
    pub created_at: i64,
    #[serde(serialize_with = "ser_ms")]
    pub updated_at: i64,
}

/// A named set of rules; every site has exactly one default group.
#[derive(Debug, Clone, Serialize)]
pub struct RuleGroup {
    pub id: String,
    pub site_id: String,
    pub name: String,
    pub description: Option<String>,
    pub is_default: bool,
    pub rules: Vec<Rule>,
    #[serde(serialize_with = "ser_ms")]
    pub created_at: i64,
    #[serde(serialize_with = "ser_ms")]
    pub updated_at: i64,
}
