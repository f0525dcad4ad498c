//! Operations: endpoint health figures, failing/recovered/disabled alerts,
//! auto-disable and 410 Gone, dead-letter recovery, resend and the events
//! list, retention, Prometheus metrics and readiness. Both backends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::{
    ADMIN_TOKEN, Backend, Received, Receiver, Reply, TestApp, TestSite, TestWebhook, spawn_app_on,
    spawn_app_with,
};
use axum::http::StatusCode;
use pixelpatrol_webhooks::{Verifier, WebhookHeaders};
use serde_json::{Value, json};
use sqlx::Connection as _;

both_backends!(
    health_figures_match_a_known_pattern_of_successes_and_failures,
    alerts_are_signed_and_follow_failing_then_recovered,
    a_410_disables_the_endpoint_and_reenabling_resumes_in_order,
    an_endpoint_failing_long_enough_with_five_dead_deliveries_is_disabled,
    recover_requeues_exactly_the_dead_deliveries_in_order_once,
    events_are_listed_with_their_deliveries_and_can_be_resent,
    retention_purges_only_old_finished_data,
    metrics_parse_and_move_as_deliveries_happen,
    readyz_fails_when_migrations_are_not_current,
);

mod postgres_only {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readyz_fails_when_the_database_is_unreachable() {
        super::readyz_fails_when_the_database_is_unreachable().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_hears_at_once_of_work_another_process_commits() {
        super::a_worker_hears_at_once_of_work_another_process_commits().await
    }
}

const ALERT_SECRET: &str = "alert-secret-0123456789abcdef";

fn headers_of(received: &Received) -> WebhookHeaders {
    WebhookHeaders::from_fn(|name| received.header(name).map(str::to_string))
}

async fn health(app: &TestApp, site: &TestSite, webhook: &TestWebhook) -> Value {
    let (status, body) = app
        .get(
            &format!("/v1/sites/{}/webhooks/{}/health", site.id, webhook.id),
            &site.key,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn subscribe_created(app: &TestApp, site: &TestSite, url: &str, strict: bool) -> TestWebhook {
    app.create_webhook(
        site,
        json!({"url": url, "events": ["media.created"], "strict_ordering": strict}),
    )
    .await
}

async fn health_figures_match_a_known_pattern_of_successes_and_failures(backend: Backend) {
    let app = spawn_app_with(backend, |config| {
        // One attempt per delivery, one at a time: the pattern is exact.
        config.retry_schedule = "0ms".parse().unwrap();
        config.endpoint_concurrency = 1;
    })
    .await;
    // Every fourth request fails, slowly.
    let receiver = Receiver::scripted(|_, number| {
        if number % 4 == 3 {
            Reply::status(500).after(Duration::from_millis(150))
        } else {
            Reply::ok()
        }
    })
    .await;
    let site = app.create_site().await;
    let webhook = subscribe_created(&app, &site, &receiver.url, true).await;
    for item in 0..8 {
        app.submit_text(&site, &format!("item {item}")).await;
    }
    receiver.wait_for_count(8).await;
    // Attempts are logged at once; the endpoint's running state is folded in
    // by the worker a moment later.
    wait_for("every attempt logged and folded into health", async || {
        let body = health(&app, &site, &webhook).await;
        body["last_hour"]["attempts"] == 8
            && body["last_failure"]["at"].as_str() > body["last_success_at"].as_str()
    })
    .await;
    let body = health(&app, &site, &webhook).await;
    for window in ["last_hour", "last_24h"] {
        let figures = &body[window];
        assert_eq!(figures["attempts"], 8, "{body}");
        assert_eq!(figures["successes"], 6);
        assert_eq!(figures["success_rate"], 0.75);
        // Nearest-rank p95 of 8 is the slowest: a failure that took 150 ms.
        assert!(
            figures["p95_response_ms"].as_i64().unwrap() >= 150,
            "{figures}"
        );
        let average = figures["avg_response_ms"].as_f64().unwrap();
        assert!((37.5..150.0).contains(&average), "{figures}");
    }
    assert_eq!(body["state"], "healthy");
    assert_eq!(
        body["consecutive_failures"], 1,
        "the last attempt failed: {body}"
    );
    assert_eq!(body["queue"]["depth"], 0);
    assert_eq!(body["queue"]["oldest_pending_age_seconds"], Value::Null);
    assert_eq!(body["last_failure"]["class"], "http_status");
    assert_eq!(body["last_failure"]["status_code"], 500);
    assert!(body["last_success_at"].is_string());

    let (status, all) = app
        .get(&format!("/v1/sites/{}/webhooks/health", site.id), &site.key)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all["data"][0]["webhook_id"], webhook.id.as_str());
    assert_eq!(all["data"][0]["last_hour"], body["last_hour"]);
}

async fn alerts_are_signed_and_follow_failing_then_recovered(backend: Backend) {
    let alerts = Receiver::start().await;
    let alert_url = alerts.url.clone();
    let app = spawn_app_with(backend, move |config| {
        config.alert_webhook_url = Some(alert_url);
        config.alert_webhook_secret = Some(ALERT_SECRET.into());
        config.failing_after = 3;
        config.endpoint_concurrency = 1;
    })
    .await;
    // Three failures, then success.
    let receiver = Receiver::scripted(|_, number| {
        if number < 3 {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    })
    .await;
    let site = app.create_site().await;
    let webhook = subscribe_created(&app, &site, &receiver.url, false).await;
    app.submit_text(&site, "hello").await;
    let received = alerts.wait_for_count(2).await;
    let kinds: Vec<&str> = received.iter().map(Received::event).collect();
    assert_eq!(kinds, ["endpoint.failing", "endpoint.recovered"]);
    for alert in &received {
        Verifier::new(ALERT_SECRET)
            .verify(&headers_of(alert), &alert.body)
            .expect("alerts are signed with the alert secret");
        assert_eq!(alert.json["data"]["webhook_id"], webhook.id.as_str());
        assert_eq!(alert.json["data"]["site_id"], site.id.as_str());
    }
    assert_eq!(received[0].json["data"]["state"], "failing");
    assert_eq!(received[0].json["data"]["consecutive_failures"], 3);
    assert_eq!(received[0].json["data"]["last_failure"]["status_code"], 503);
    assert_eq!(received[1].json["data"]["state"], "healthy");
    // The operator's site stays out of the API, even for the admin.
    let (_, sites) = app.get("/v1/sites", ADMIN_TOKEN).await;
    assert_eq!(sites["data"].as_array().unwrap().len(), 1, "{sites}");
    for path in [
        "/v1/sites/site_operator",
        "/v1/sites/site_operator/webhooks",
        "/v1/sites/site_operator/webhooks/wh_operator_alerts/secret",
    ] {
        let (status, _) = app.get(path, ADMIN_TOKEN).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    // Once each: no more alerts follow.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(alerts.count(), 2);
}

async fn a_410_disables_the_endpoint_and_reenabling_resumes_in_order(backend: Backend) {
    let alerts = Receiver::start().await;
    let alert_url = alerts.url.clone();
    let app = spawn_app_with(backend, move |config| {
        config.alert_webhook_url = Some(alert_url);
        config.alert_webhook_secret = Some(ALERT_SECRET.into());
        // The 410'd delivery would wait an hour: re-enabling must not.
        config.retry_schedule = "0ms,1h".parse().unwrap();
    })
    .await;
    let gone = Arc::new(AtomicBool::new(true));
    let answer = gone.clone();
    // The 410 comes after a moment: a disabled endpoint gets no new events,
    // so all three must be written before it is disabled.
    let receiver = Receiver::scripted(move |_, _| {
        if answer.load(Ordering::SeqCst) {
            Reply::status(410).after(Duration::from_millis(500))
        } else {
            Reply::ok()
        }
    })
    .await;
    let site = app.create_site().await;
    let webhook = subscribe_created(&app, &site, &receiver.url, true).await;
    let mut media = Vec::new();
    for item in 0..3 {
        media.push(app.submit_text(&site, &format!("item {item}")).await);
    }
    let alert = alerts.wait_for_count(1).await;
    assert_eq!(alert[0].event(), "endpoint.disabled");
    assert!(
        alert[0].json["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("410")
    );
    let path = format!("/v1/sites/{}/webhooks/{}", site.id, webhook.id);
    let (_, endpoint) = app.get(&path, &site.key).await;
    assert_eq!(endpoint["active"], false);
    assert!(
        endpoint["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("410"),
        "{endpoint}"
    );
    assert!(endpoint["disabled_at"].is_string());
    assert_eq!(health(&app, &site, &webhook).await["state"], "disabled");
    // Nothing more is sent while disabled; the deliveries wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.count(), 1);
    let waiting = health(&app, &site, &webhook).await;
    assert_eq!(waiting["queue"]["depth"], 3, "{waiting}");

    gone.store(false, Ordering::SeqCst);
    let (status, body) = app.patch(&path, &site.key, json!({"active": true})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["disabled_reason"], Value::Null);
    let requests = receiver.wait_for_count(4).await;
    let order: Vec<&str> = requests[1..].iter().map(Received::media_id).collect();
    assert_eq!(order, media.iter().map(String::as_str).collect::<Vec<_>>());
    let health = health(&app, &site, &webhook).await;
    assert_eq!(health["state"], "healthy", "{health}");
    assert_eq!(health["consecutive_failures"], 0);
}

async fn an_endpoint_failing_long_enough_with_five_dead_deliveries_is_disabled(backend: Backend) {
    let app = spawn_app_with(backend, |config| {
        config.retry_schedule = "0ms".parse().unwrap();
        config.disable_after = Duration::from_millis(500);
        config.maintenance_interval = Duration::from_millis(100);
        config.endpoint_concurrency = 1;
    })
    .await;
    let receiver = Receiver::scripted(|_, _| Reply::status(500)).await;
    let site = app.create_site().await;
    let webhook = subscribe_created(&app, &site, &receiver.url, false).await;
    for item in 0..4 {
        app.submit_text(&site, &format!("item {item}")).await;
    }
    receiver.wait_for_count(4).await;
    // Failing for long enough, but only four dead deliveries: still on.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = health(&app, &site, &webhook).await;
    assert_eq!(before["state"], "healthy", "{before}");
    assert_eq!(before["consecutive_failures"], 4);

    app.submit_text(&site, "the fifth").await;
    wait_for("the endpoint to be disabled", async || {
        health(&app, &site, &webhook).await["state"] == "disabled"
    })
    .await;
    let (_, endpoint) = app
        .get(
            &format!("/v1/sites/{}/webhooks/{}", site.id, webhook.id),
            &site.key,
        )
        .await;
    assert_eq!(endpoint["active"], false);
    assert!(
        endpoint["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("every delivery failed"),
        "{endpoint}"
    );
}

async fn recover_requeues_exactly_the_dead_deliveries_in_order_once(backend: Backend) {
    let app = spawn_app_with(backend, |config| {
        config.retry_schedule = "0ms".parse().unwrap();
        config.endpoint_concurrency = 1;
    })
    .await;
    let failing = Arc::new(AtomicBool::new(true));
    let answer = failing.clone();
    let receiver = Receiver::scripted(move |_, _| {
        if answer.load(Ordering::SeqCst) {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    })
    .await;
    let site = app.create_site().await;
    let webhook = subscribe_created(&app, &site, &receiver.url, true).await;
    let since = pixelpatrol::model::Timestamp::now()
        .plus_ms(-1000)
        .rfc3339();
    let mut dead = Vec::new();
    for item in 0..4 {
        dead.push(app.submit_text(&site, &format!("dead {item}")).await);
    }
    app.wait_for_log(&site, &webhook, "status=failed", |data| data.len() == 4)
        .await;
    failing.store(false, Ordering::SeqCst);
    let delivered = app.submit_text(&site, "delivered").await;
    app.wait_for_log(&site, &webhook, "status=succeeded", |data| data.len() == 1)
        .await;

    let path = format!("/v1/sites/{}/webhooks/{}/recover", site.id, webhook.id);
    let (status, body) = app.post(&path, &site.key, json!({"since": since})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["requeued"], 4);
    let requests = receiver.wait_for_count(9).await;
    let replayed: Vec<&str> = requests[5..].iter().map(Received::media_id).collect();
    assert_eq!(
        replayed,
        dead.iter().map(String::as_str).collect::<Vec<_>>(),
        "original order"
    );
    assert!(!replayed.contains(&delivered.as_str()));
    app.wait_for_log(&site, &webhook, "status=succeeded", |data| data.len() == 5)
        .await;

    // Idempotent: nothing is dead any more, nothing is queued twice.
    let (_, again) = app.post(&path, &site.key, json!({"since": since})).await;
    assert_eq!(again["requeued"], 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.count(), 9);

    let (status, error) = app
        .post(&path, &site.key, json!({"since": "yesterday"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["field"], "since");
    let (status, error) = app
        .post(
            &path,
            &site.key,
            json!({"since": since, "status": "succeeded"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["field"], "status");
}

async fn events_are_listed_with_their_deliveries_and_can_be_resent(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let receiver = Receiver::start().await;
    let other = Receiver::start().await;
    let site = app.create_site().await;
    let webhook = subscribe_created(&app, &site, &receiver.url, false).await;
    let silent = app
        .create_webhook(
            &site,
            json!({"url": other.url, "events": ["media.moderated"]}),
        )
        .await;
    let media_id = app.submit_text(&site, "hello").await;
    receiver.wait_for_count(1).await;
    app.wait_for_log(&site, &webhook, "status=succeeded", |data| data.len() == 1)
        .await;

    let (status, page) = app
        .get(
            &format!("/v1/sites/{}/events?event=media.created&limit=10", site.id),
            &site.key,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let events = page["data"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["media_id"], media_id.as_str());
    assert_eq!(
        events[0]["deliveries"][0]["webhook_id"],
        webhook.id.as_str()
    );
    assert_eq!(events[0]["deliveries"][0]["status"], "succeeded");
    let event_id = events[0]["id"].as_str().unwrap().to_string();

    // To every subscribed endpoint (by default)…
    let resend = format!("/v1/sites/{}/events/{event_id}/resend", site.id);
    let (status, body) = app.post(&resend, &site.key, json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["deliveries"].as_array().unwrap().len(), 1);
    let requests = receiver.wait_for_count(2).await;
    assert_eq!(
        requests[1].event_id(),
        event_id,
        "the same event id: receivers deduplicate"
    );
    assert_eq!(requests[1].body, requests[0].body);
    // …or to one named endpoint.
    let (status, _) = app
        .post(&resend, &site.key, json!({"webhook_id": silent.id}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    other.wait_for_count(1).await;

    let other_site = app.create_site().await;
    let (status, _) = app
        .post(
            &format!("/v1/sites/{}/events/{event_id}/resend", other_site.id),
            &other_site.key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another site's event");
    let (status, error) = app
        .get(
            &format!("/v1/sites/{}/events?event=nope", site.id),
            &site.key,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["field"], "event");
}

async fn retention_purges_only_old_finished_data(backend: Backend) {
    let app = spawn_app_with(backend, |config| {
        config.maintenance_interval = Duration::from_millis(100);
        // The failing endpoint keeps its delivery pending for an hour.
        config.retry_schedule = "0ms,1h".parse().unwrap();
    })
    .await;
    let receiver = Receiver::start().await;
    let failing = Receiver::scripted(|_, _| Reply::status(500)).await;
    let site = app.create_site().await;
    let webhook = subscribe_created(&app, &site, &receiver.url, false).await;
    let old = app.submit_text(&site, "old").await;
    let recent = app.submit_text(&site, "recent").await;
    app.wait_for_log(&site, &webhook, "status=succeeded", |data| data.len() == 2)
        .await;
    let stuck_hook = subscribe_created(&app, &site, &failing.url, false).await;
    let pending = app.submit_text(&site, "old but pending").await;
    failing.wait_for_count(1).await;
    receiver.wait_for_count(3).await;
    app.wait_for_log(&site, &stuck_hook, "", |data| {
        data.len() == 1 && data[0]["attempt_count"] == 1
    })
    .await;

    // 31 days ago, for the old item and the pending one.
    let long_ago = pixelpatrol::model::Timestamp::now()
        .plus_ms(-31 * 24 * 3600 * 1000)
        .millis();
    app.db
        .execute(&format!(
            "UPDATE events SET created_at = {long_ago} WHERE media_id IN ('{old}', '{pending}'); \
             UPDATE deliveries SET created_at = {long_ago}, updated_at = {long_ago} \
               WHERE event_id IN (SELECT id FROM events WHERE media_id IN ('{old}', '{pending}')); \
             UPDATE delivery_attempts SET started_at = {long_ago} WHERE delivery_id IN \
               (SELECT id FROM deliveries WHERE event_id IN (SELECT id FROM events WHERE media_id = '{old}'));"
        ))
        .await;
    let events_path = format!("/v1/sites/{}/events", site.id);
    wait_for("the old event to be purged", async || {
        let (_, page) = app.get(&events_path, &site.key).await;
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|event| event["media_id"] != old.as_str())
    })
    .await;
    let (_, page) = app.get(&events_path, &site.key).await;
    let left: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["media_id"].as_str().unwrap())
        .collect();
    assert!(
        left.contains(&recent.as_str()),
        "recent data stays: {left:?}"
    );
    assert!(
        left.contains(&pending.as_str()),
        "pending deliveries are never purged: {left:?}"
    );
    // The old delivery went with its event; the recent one keeps its attempts.
    let log = app.deliveries(&site, &webhook, "").await;
    let kept: Vec<&Value> = log["data"].as_array().unwrap().iter().collect();
    assert!(
        kept.iter()
            .all(|delivery| delivery["media_id"] != old.as_str()),
        "{log}"
    );
    let recent_delivery = kept
        .iter()
        .find(|delivery| delivery["media_id"] == recent.as_str())
        .unwrap();
    assert_eq!(
        recent_delivery["attempts"].as_array().unwrap().len(),
        1,
        "{recent_delivery}"
    );
    // The media items themselves are not delivery data: they stay.
    let (status, _) = app.get(&format!("/v1/media/{old}"), &site.key).await;
    assert_eq!(status, StatusCode::OK);
}

/// Sums a metric's samples (all label sets) in a scrape.
fn total(scrape: &prometheus_parse::Scrape, name: &str) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == name)
        .map(|sample| match sample.value {
            prometheus_parse::Value::Counter(value)
            | prometheus_parse::Value::Gauge(value)
            | prometheus_parse::Value::Untyped(value) => value,
            _ => 0.0,
        })
        .sum()
}

async fn scrape(app: &TestApp) -> prometheus_parse::Scrape {
    let response = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_string())))
        .expect("the Prometheus text format parses")
}

async fn metrics_parse_and_move_as_deliveries_happen(backend: Backend) {
    let app = spawn_app_with(backend, |config| {
        config.maintenance_interval = Duration::from_millis(100);
        config.metrics_per_endpoint = true;
    })
    .await;
    let receiver = Receiver::start().await;
    let site = app.create_site().await;
    let webhook = subscribe_created(&app, &site, &receiver.url, false).await;
    let before = scrape(&app).await;
    for item in 0..3 {
        app.submit_text(&site, &format!("item {item}")).await;
    }
    receiver.wait_for_count(3).await;
    // Counters are process-wide (other tests run beside this one): they
    // grow by at least what this test did.
    wait_for("the attempts to be counted", async || {
        let after = scrape(&app).await;
        total(&after, "pixelpatrol_delivery_attempts_total")
            >= total(&before, "pixelpatrol_delivery_attempts_total") + 3.0
    })
    .await;
    // This endpoint's own series (enabled per endpoint): exactly its three.
    let after = scrape(&app).await;
    let mine: f64 = after
        .samples
        .iter()
        .filter(|sample| sample.metric == "pixelpatrol_delivery_attempts_total")
        .filter(|sample| {
            sample.labels.get("webhook_id").map(|id| id as &str) == Some(webhook.id.as_str())
        })
        .map(|sample| match sample.value {
            prometheus_parse::Value::Counter(value) | prometheus_parse::Value::Untyped(value) => {
                value
            }
            _ => 0.0,
        })
        .sum();
    assert_eq!(mine, 3.0);
    assert!(
        total(&after, "pixelpatrol_http_requests_total")
            >= total(&before, "pixelpatrol_http_requests_total") + 3.0
    );
    let routes: Vec<&str> = after
        .samples
        .iter()
        .filter(|sample| sample.metric == "pixelpatrol_http_requests_total")
        .filter_map(|sample| sample.labels.get("route").map(|route| route as &str))
        .collect();
    assert!(routes.contains(&"/v1/submit-media"), "{routes:?}");
    assert!(
        routes.iter().all(|route| !route.contains("media_")),
        "no ids in labels: {routes:?}"
    );
    for histogram in [
        "pixelpatrol_delivery_attempt_duration_seconds",
        "pixelpatrol_delivery_latency_seconds",
        "pixelpatrol_http_request_duration_seconds",
    ] {
        assert!(
            after.samples.iter().any(|sample| sample.metric == histogram
                && matches!(sample.value, prometheus_parse::Value::Histogram(_))),
            "{histogram} is a histogram"
        );
    }
    for gauge in [
        "pixelpatrol_db_pool_connections",
        "pixelpatrol_queue_depth",
        "pixelpatrol_oldest_pending_age_seconds",
    ] {
        assert!(
            after.samples.iter().any(|sample| sample.metric == gauge),
            "{gauge} is exported"
        );
    }
}

/// `GET /readyz`: its status and body.
async fn readyz(app: &TestApp) -> (StatusCode, Value) {
    let response = app
        .http
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (
        status,
        serde_json::from_str(&response.text().await.unwrap()).unwrap(),
    )
}

async fn readyz_fails_when_migrations_are_not_current(backend: Backend) {
    let app = spawn_app_with(backend, |config| {
        config.maintenance_interval = Duration::from_millis(100);
    })
    .await;
    let (status, body) = readyz(&app).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(body["checks"]["delivery"], "ok");
    // A database migrated by a newer build: this one must not take traffic.
    let blob = if app.db.url.starts_with("sqlite:") {
        "x'00'"
    } else {
        "'\\x00'::bytea"
    };
    app.db
        .execute(&format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'from the future', TRUE, {blob}, 0)"
        ))
        .await;
    let (status, body) = readyz(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "not_ready");
    assert!(
        body["checks"]["migrations"]
            .as_str()
            .unwrap()
            .contains("applied"),
        "{body}"
    );
    // /healthz only says the process is alive.
    let (status, _) = app.get("/healthz", ADMIN_TOKEN).await;
    assert_eq!(status, StatusCode::OK);
}

async fn readyz_fails_when_the_database_is_unreachable() {
    let app = spawn_app_with(Backend::Postgres, |_| {}).await;
    let (status, body) = readyz(&app).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let name = app.db.name().to_string();
    let mut admin = sqlx::PgConnection::connect(&crate::common::postgres_admin_url())
        .await
        .unwrap();
    sqlx::raw_sql(&format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}';"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, body) = readyz(&app).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "readyz never noticed the database is gone"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        body["checks"]["database"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{body}"
    );
    sqlx::raw_sql(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .execute(&mut admin)
        .await
        .unwrap();
}

/// Two processes on one PostgreSQL database: one serves only the API, the
/// other only delivers and polls once a minute. What the first commits
/// reaches the receiver in moments, because the second hears of it
/// (`LISTEN`/`NOTIFY`), also after its signal connection was cut.
async fn a_worker_hears_at_once_of_work_another_process_commits() {
    use pixelpatrol::config::Role;
    const POLL: Duration = Duration::from_secs(60);
    let api = spawn_app_with(Backend::Postgres, |config| config.role = Role::Api).await;
    let _worker = spawn_app_on(api.db.clone(), |config| {
        config.role = Role::Worker;
        config.poll_interval = POLL;
    })
    .await;
    let receiver = Receiver::start().await;
    let site = api.create_site().await;
    subscribe_created(&api, &site, &receiver.url, false).await;
    // The worker's first round may or may not have seen this one; once it
    // is delivered the worker is idle, waiting for a signal or its poll.
    api.submit_text(&site, "first").await;
    receiver.wait_for_count(1).await;

    let heard_within = |started: Instant| {
        let took = started.elapsed();
        // A missed signal would take the whole poll (and time out the wait).
        assert!(
            took < POLL / 3,
            "delivered after {took:?}: the worker polled, it did not hear"
        );
    };
    let started = Instant::now();
    api.submit_text(&site, "second").await;
    receiver.wait_for_count(2).await;
    heard_within(started);

    // Cut the worker's signal connection; it listens again by itself.
    let name = api.db.name().to_string();
    let mut admin = sqlx::PgConnection::connect(&crate::common::postgres_admin_url())
        .await
        .unwrap();
    let listeners = async |admin: &mut sqlx::PgConnection| -> Vec<i32> {
        sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN%'",
        )
        .bind(&name)
        .fetch_all(admin)
        .await
        .unwrap()
    };
    let before = listeners(&mut admin).await;
    assert_eq!(
        before.len(),
        1,
        "the worker listens, the API process does not"
    );
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(before[0])
        .execute(&mut admin)
        .await
        .unwrap();
    wait_for("the worker to listen again", async || {
        listeners(&mut admin)
            .await
            .iter()
            .any(|pid| *pid != before[0])
    })
    .await;
    let started = Instant::now();
    api.submit_text(&site, "third").await;
    receiver.wait_for_count(3).await;
    heard_within(started);
}
