//! The public HTTP API, as the load generator uses it.

use anyhow::ensure;
use serde_json::{Value, json};

use crate::*;

/// The public API, as a site owner and the operator use it.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    http: reqwest::Client,
}

#[derive(Debug, Clone)]
pub struct Site {
    pub id: String,
    pub key: String,
}

impl Api {
    pub fn new(base: &str, concurrency: usize) -> Self {
        Api {
            base: base.to_string(),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(concurrency.max(1))
                .tcp_nodelay(true)
                .build()
                .expect("HTTP client"),
        }
    }

    pub(crate) async fn post(
        &self,
        path: &str,
        token: &str,
        body: &Value,
    ) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .post(format!("{}{}", self.base, path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    pub async fn create_site(&self, name: &str) -> anyhow::Result<Site> {
        let (status, body) = self
            .post("/v1/sites", ADMIN_TOKEN, &json!({"name": name}))
            .await?;
        ensure!(status == 201, "creating a site: {status} {body}");
        Ok(Site {
            id: body["id"].as_str().unwrap_or_default().into(),
            key: body["site_key"].as_str().unwrap_or_default().into(),
        })
    }

    pub async fn create_endpoint(
        &self,
        site: &Site,
        url: &str,
        index: u32,
        events: &[&str],
        strict: bool,
    ) -> anyhow::Result<String> {
        let (status, body) = self
            .post(
                &format!("/v1/sites/{}/webhooks", site.id),
                &site.key,
                &json!({"url": url, "secret": secret_for(index), "events": events, "strict_ordering": strict}),
            )
            .await?;
        ensure!(status == 201, "creating an endpoint: {status} {body}");
        Ok(body["id"].as_str().unwrap_or_default().into())
    }

    /// Submits one text item stamped with the submission time; returns the
    /// media id when accepted.
    pub async fn submit(&self, site: &Site, sequence: u64) -> anyhow::Result<Option<String>> {
        let (status, body) = self
            .post(
                "/v1/submit-media",
                &site.key,
                &json!({"body": format!("benchmark item {sequence}"), "metadata": {"t": now_us(), "seq": sequence}}),
            )
            .await?;
        Ok((status == 202).then(|| body["id"].as_str().unwrap_or_default().to_string()))
    }

    /// Submits any body; returns the media id when accepted.
    pub async fn submit_body(&self, site: &Site, body: &Value) -> anyhow::Result<Option<String>> {
        let (status, answer) = self.post("/v1/submit-media", &site.key, body).await?;
        Ok((status == 202).then(|| answer["id"].as_str().unwrap_or_default().to_string()))
    }

    pub async fn review(&self, site: &Site, media_id: &str, status: &str) -> anyhow::Result<bool> {
        let (code, _) = self
            .post(
                &format!("/v1/media/{media_id}/review"),
                &site.key,
                &json!({"status": status}),
            )
            .await?;
        Ok(code == 200)
    }
}
