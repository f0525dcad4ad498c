//! The external analyzer: "bring your own AI". PixelPatrol POSTs the item to
//! an HTTP service the operator (globally) or the site runs, signed like a
//! webhook, and takes the labels it answers with. A small adapter puts any
//! model or cloud service behind it.
//!
//! Request: `{media_id, site_id, content_type, content_url, body, metadata}`
//! with `X-PixelPatrol-Signature` (hex HMAC-SHA256 of the body) and
//! `X-PixelPatrol-Timestamp`. Answer: `{"labels": [{"name", "category"?,
//! "confidence"}]}` with a 2xx status.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pixelpatrol_webhooks as signing;
use serde::Deserialize;
use serde_json::json;

use super::analyzer::{AnalysisInput, Analyzer, AnalyzerError, Label, read_capped};
use crate::model::Timestamp;
use crate::net::guard::{GuardedResolver, is_blocked, literal_ip};

pub const ANALYZER: &str = "external";
/// Largest answer read, in bytes.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// Most labels taken from one answer.
const MAX_LABELS: usize = 100;

#[derive(Deserialize)]
struct Answer {
    labels: Vec<AnswerLabel>,
}

#[derive(Deserialize)]
struct AnswerLabel {
    name: String,
    category: Option<String>,
    confidence: f64,
}

pub struct ExternalAnalyzer {
    /// For sites' analyzers: private and reserved addresses refused.
    guarded: reqwest::Client,
    /// For the operator's analyzer, which may well run next to the server.
    trusted: reqwest::Client,
    /// The operator's analyzer for every site: (url, secret).
    global: Option<(String, String)>,
    allow_private: bool,
}

impl ExternalAnalyzer {
    pub fn new(
        global: Option<(String, String)>,
        timeout: Duration,
        allow_private: bool,
    ) -> anyhow::Result<Self> {
        let client = |allow_private: bool| {
            reqwest::Client::builder()
                .user_agent(concat!("PixelPatrol-Analyzer/", env!("CARGO_PKG_VERSION")))
                .timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .dns_resolver(Arc::new(GuardedResolver { allow_private }))
                .build()
        };
        Ok(ExternalAnalyzer {
            guarded: client(allow_private)?,
            trusted: client(true)?,
            global,
            allow_private,
        })
    }

    /// The site's own analyzer wins over the operator's.
    fn target<'a>(&'a self, input: &'a AnalysisInput) -> Option<&'a (String, String)> {
        input
            .site_external_analyzer
            .as_ref()
            .or(self.global.as_ref())
    }
}

#[async_trait]
impl Analyzer for ExternalAnalyzer {
    fn name(&self) -> &'static str {
        ANALYZER
    }

    fn applies_to(&self, input: &AnalysisInput) -> bool {
        self.target(input).is_some()
    }

    async fn analyze(&self, input: &AnalysisInput) -> Result<Vec<Label>, AnalyzerError> {
        let Some((url, secret)) = self.target(input) else {
            return Ok(Vec::new());
        };
        let site_owned = input.site_external_analyzer.is_some();
        let parsed = url::Url::parse(url)
            .map_err(|error| AnalyzerError::new(format!("bad analyzer URL: {error}")))?;
        if site_owned && !self.allow_private && literal_ip(&parsed).is_some_and(is_blocked) {
            return Err(AnalyzerError::new(
                "the analyzer URL points to a private or reserved address",
            ));
        }
        let body = json!({
            "media_id": input.media_id,
            "site_id": input.site_id,
            "content_type": input.content_type,
            "content_url": input.content_url,
            "body": input.body,
            "metadata": input.metadata,
        })
        .to_string();
        let client = if site_owned {
            &self.guarded
        } else {
            &self.trusted
        };
        let response = client
            .post(parsed)
            .header("content-type", "application/json")
            .header(
                signing::SIGNATURE_HEADER,
                signing::sign_pixelpatrol(secret, body.as_bytes()),
            )
            .header(
                signing::TIMESTAMP_HEADER,
                Timestamp::now().millis().to_string(),
            )
            .body(body)
            .send()
            .await
            .map_err(|error| {
                let kind = if error.is_timeout() {
                    "timed out"
                } else {
                    "failed"
                };
                AnalyzerError::new(format!("the external analyzer {kind}: {error}"))
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(AnalyzerError::new(format!(
                "the external analyzer answered HTTP {}",
                status.as_u16()
            )));
        }
        let bytes =
            read_capped(response, MAX_ANSWER_BYTES, "the external analyzer's answer").await?;
        let answer: Answer = serde_json::from_slice(&bytes).map_err(|error| {
            AnalyzerError::new(format!(
                "the external analyzer's answer is not {{\"labels\": [{{\"name\", \"confidence\"}}]}}: {error}"
            ))
        })?;
        if answer.labels.len() > MAX_LABELS {
            return Err(AnalyzerError::new(format!(
                "the external analyzer answered more than {MAX_LABELS} labels"
            )));
        }
        answer
            .labels
            .into_iter()
            .map(|label| {
                let name = label.name.trim();
                if name.is_empty() || name.len() > 100 {
                    return Err(AnalyzerError::new(
                        "the external analyzer answered a label without a name",
                    ));
                }
                if !(label.confidence.is_finite() && (0.0..=1.0).contains(&label.confidence)) {
                    return Err(AnalyzerError::new(format!(
                        "the external analyzer's label {name:?} has confidence {} outside 0..1",
                        label.confidence
                    )));
                }
                let category = label
                    .category
                    .as_deref()
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .unwrap_or(name);
                Ok(Label::new(name, category, label.confidence, ANALYZER))
            })
            .collect()
    }
}
