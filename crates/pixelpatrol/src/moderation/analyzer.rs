//! The analyzer interface: every analyzer turns one media item into labels.

use async_trait::async_trait;

pub use crate::model::moderation::{ANALYSIS_CATEGORY, Label};
use crate::model::{MediaId, SiteId};

/// What analyzers see of a media item.
#[derive(Debug, Clone)]
pub struct AnalysisInput {
    pub media_id: MediaId,
    pub site_id: SiteId,
    pub content_type: String,
    pub content_url: Option<String>,
    pub body: Option<String>,
    pub metadata: serde_json::Value,
    /// The site's own external analyzer, if it configured one.
    pub site_external_analyzer: Option<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AnalyzerError(pub String);

impl AnalyzerError {
    pub fn new(message: impl Into<String>) -> Self {
        AnalyzerError(message.into())
    }
}

/// An error with its causes, as one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads a response body of at most `max` bytes, refusing a larger one as
/// soon as its length is announced or its bytes pass the limit (never
/// buffering more than `max`). `what` names the body in errors.
pub async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
    what: &str,
) -> Result<Vec<u8>, AnalyzerError> {
    let too_large = || AnalyzerError::new(format!("{what} is larger than {max} bytes"));
    if response
        .content_length()
        .is_some_and(|length| length > max as u64)
    {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|error| {
        AnalyzerError::new(format!("reading {what} failed: {}", error_chain(&error)))
    })? {
        if bytes.len() + chunk.len() > max {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

#[async_trait]
pub trait Analyzer: Send + Sync + 'static {
    /// Stable name, reported in every label it produces.
    fn name(&self) -> &'static str;
    /// Whether this analyzer has anything to look at in `input`.
    fn applies_to(&self, input: &AnalysisInput) -> bool;
    async fn analyze(&self, input: &AnalysisInput) -> Result<Vec<Label>, AnalyzerError>;
}
