//! The public HTTP API, as the load generator uses it: PixelPatrol's, or in
//! `--peer` runs the peer's equivalent calls (a site is an application, an
//! endpoint an endpoint, a submission a message whose payload is shaped like
//! our `media.created`).

use std::sync::Arc;

use anyhow::{bail, ensure};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::*;

/// The public API, as a site owner and the operator use it.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    http: reqwest::Client,
    flavor: Flavor,
}

#[derive(Clone)]
enum Flavor {
    PixelPatrol,
    /// The Svix server: one bearer token for every call; `run` makes the
    /// event ids of this run unique (the receiver counts duplicates by id).
    Svix {
        token: Arc<str>,
        run: u64,
    },
}

/// The whole `whsec_` secret the peer is given for endpoint `index`: the
/// same key bytes as [`secret_for`], so the receiver verifies both alike.
pub fn svix_secret_for(index: u32) -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(secret_for(index))
    )
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
            flavor: Flavor::PixelPatrol,
        }
    }

    /// The peer's API at `base`, called with `token`.
    pub fn svix(base: &str, concurrency: usize, token: String) -> Self {
        Api {
            flavor: Flavor::Svix {
                token: token.into(),
                run: now_us(),
            },
            ..Api::new(base, concurrency)
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
        if let Flavor::Svix { token, .. } = &self.flavor {
            let (status, body) = self
                .post("/api/v1/app/", token, &json!({"name": name}))
                .await?;
            ensure!(
                status == 201,
                "creating a peer application: {status} {body}"
            );
            return Ok(Site {
                id: body["id"].as_str().unwrap_or_default().into(),
                key: token.to_string(),
            });
        }
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
        if let Flavor::Svix { .. } = &self.flavor {
            // Every endpoint of an application gets every message: the
            // scenarios a peer runs send one event type only.
            ensure!(!strict, "the peer runs no ordering scenario");
            ensure!(
                events == ["media.created"],
                "the peer runs media.created only"
            );
            let (status, body) = self
                .post(
                    &format!("/api/v1/app/{}/endpoint/", site.id),
                    &site.key,
                    &json!({"url": url, "version": 1, "secret": svix_secret_for(index)}),
                )
                .await?;
            ensure!(status == 201, "creating a peer endpoint: {status} {body}");
            return Ok(body["id"].as_str().unwrap_or_default().into());
        }
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
        if let Flavor::Svix { run, .. } = &self.flavor {
            // The message is the body the peer sends as is: an event like
            // ours, carrying the submission time where ours carries it.
            let media_id = format!("m_{run}_{sequence}");
            let payload = json!({
                "id": format!("evt_{run}_{sequence}"),
                "event": "media.created",
                "timestamp": time::OffsetDateTime::now_utc().unix_timestamp() * 1000,
                "data": {
                    "media_id": media_id,
                    "site_id": site.id,
                    "type": "text",
                    "status": "pending",
                    "app_media_id": null,
                    "metadata": {"t": now_us(), "seq": sequence},
                },
            });
            let (status, _) = self
                .post(
                    &format!("/api/v1/app/{}/msg/", site.id),
                    &site.key,
                    &json!({"eventType": "media.created", "payload": payload}),
                )
                .await?;
            return Ok((status == 202).then_some(media_id));
        }
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
        self.pixelpatrol_only()?;
        let (status, answer) = self.post("/v1/submit-media", &site.key, body).await?;
        Ok((status == 202).then(|| answer["id"].as_str().unwrap_or_default().to_string()))
    }

    pub async fn review(&self, site: &Site, media_id: &str, status: &str) -> anyhow::Result<bool> {
        self.pixelpatrol_only()?;
        let (code, _) = self
            .post(
                &format!("/v1/media/{media_id}/review"),
                &site.key,
                &json!({"status": status}),
            )
            .await?;
        Ok(code == 200)
    }

    fn pixelpatrol_only(&self) -> anyhow::Result<()> {
        if let Flavor::Svix { .. } = self.flavor {
            bail!("the peer has no such call");
        }
        Ok(())
    }
}
