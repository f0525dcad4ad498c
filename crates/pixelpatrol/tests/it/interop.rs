//! The product documentation's own TypeScript handler (express +
//! `verifyWebhookSignature`, in tests/interop/receiver.ts) must accept every
//! request PixelPatrol sends. It answers 401 on a bad signature, so every
//! delivery succeeding is the proof. Needs Node.js and `npm ci` in
//! tests/interop (the README's test command does it); fails otherwise.

use std::path::PathBuf;
use std::process::Stdio;

use crate::common::{Backend, spawn_app};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

both_backends!(the_documented_typescript_handler_accepts_every_request);

async fn the_documented_typescript_handler_accepts_every_request(backend: Backend) {
    let interop = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    let tsx = interop.join("node_modules/tsx");
    assert!(
        tsx.exists(),
        "{} is missing: run `npm ci --prefix crates/pixelpatrol/tests/interop`",
        tsx.display()
    );
    let app = spawn_app(backend).await;
    let site = app.create_site().await;

    // A generated whsec_ secret and a chosen one with non-ASCII characters.
    for secret in [None, Some("s3cr3t-ünïcødé-🔑-0123456789")] {
        let mut body = json!({
            "url": "http://127.0.0.1:1/webhooks/pixel-patrol",
            "events": ["media.created", "media.moderated"],
        });
        if let Some(secret) = secret {
            body["secret"] = json!(secret);
        }
        let webhook = app.create_webhook(&site, body).await;

        // One node process with tsx as its loader (not the tsx launcher, which
        // forks a second process that would outlive the kill below).
        let mut receiver = Command::new("node")
            .args(["--import", "tsx", "receiver.ts"])
            .current_dir(&interop)
            .env("PORT", "0")
            .env("WEBHOOK_SECRET", &webhook.secret)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("running the TypeScript receiver with tsx");
        let mut lines = BufReader::new(receiver.stdout.take().unwrap()).lines();
        let mut next_report = async || -> Value {
            loop {
                let line =
                    tokio::time::timeout(std::time::Duration::from_secs(60), lines.next_line())
                        .await
                        .expect("the TypeScript receiver reports in time")
                        .unwrap()
                        .expect("the TypeScript receiver is running");
                if let Ok(report) = serde_json::from_str::<Value>(&line)
                    && report.is_object()
                {
                    return report;
                }
            }
        };
        let port = next_report().await["listening"].as_u64().expect("a port");
        let url = format!("http://127.0.0.1:{port}/webhooks/pixel-patrol");
        let (status, _) = app
            .patch(
                &format!("/v1/sites/{}/webhooks/{}", site.id, webhook.id),
                &site.key,
                json!({"url": url}),
            )
            .await;
        assert_eq!(status, 200);

        let media_id = app.submit_text(&site, "naïve café — 表情 😀").await;
        assert_eq!(next_report().await["accepted"], "media.created");
        app.review(&site, &media_id, "approved").await;
        assert_eq!(next_report().await["accepted"], "media.moderated");
        let handled = next_report().await;
        assert_eq!(handled["handled"], "media.moderated");
        assert_eq!(handled["media_id"], media_id.as_str());
        assert_eq!(handled["status"], "approved");

        let (_, outcome) = app
            .post(
                &format!("/v1/sites/{}/webhooks/{}/test", site.id, webhook.id),
                &site.key,
                json!({}),
            )
            .await;
        assert_eq!(outcome["success"], true, "{outcome}");
        assert_eq!(next_report().await["accepted"], "test.webhook");

        let log = app
            .wait_for_log(&site, &webhook, "", |data| {
                data.len() == 3 && data.iter().all(|d| d["status"] == "succeeded")
            })
            .await;
        for delivery in log {
            assert_eq!(delivery["attempts"][0]["status_code"], 200);
        }
        // Disable it so the next round's events go only to the next receiver.
        app.patch(
            &format!("/v1/sites/{}/webhooks/{}", site.id, webhook.id),
            &site.key,
            json!({"active": false}),
        )
        .await;
    }
}
