//! Webhook delivery end to end: real server, real database (both backends),
//! real receivers on 127.0.0.1.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::common::{Backend, Received, Receiver, Reply, spawn_app, spawn_app_with};
use pixelpatrol_webhooks::{Verifier, WebhookHeaders};
use serde_json::{Value, json};

both_backends!(
    a_submission_reaches_the_receiver_signed_and_shaped_as_the_spec_says,
    a_review_emits_media_moderated_after_media_created,
    the_test_endpoint_sends_test_webhook_now_whatever_the_selection,
    failures_follow_the_retry_schedule_then_die_and_a_manual_retry_succeeds,
    every_failure_class_is_recorded,
    retry_after_postpones_the_next_attempt,
    events_about_one_media_item_arrive_in_order_under_failures,
    a_strict_ordering_endpoint_is_one_fifo_lane_under_failures,
    a_hanging_endpoint_does_not_delay_other_endpoints,
    private_targets_are_refused_outside_dev_mode,
    graceful_shutdown_finishes_the_attempt_in_flight,
    inactive_and_unsubscribed_endpoints_get_nothing,
    deleting_an_endpoint_mid_attempt_holds_back_no_other_delivery,
    a_response_with_nul_bytes_is_logged,
    a_manual_retry_waits_while_its_lane_is_in_flight,
    the_first_delay_of_the_schedule_postpones_the_first_attempt,
);

fn headers_of(received: &Received) -> WebhookHeaders {
    WebhookHeaders::from_fn(|name| received.header(name).map(str::to_string))
}

async fn a_submission_reaches_the_receiver_signed_and_shaped_as_the_spec_says(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    let site = app.create_site().await;
    let webhook = app.subscribe(&site, &receiver.url).await;
    let media_id = app.submit_text(&site, "hello world").await;

    let request = receiver.wait_for_count(1).await.remove(0);
    let body = std::str::from_utf8(&request.body).unwrap();

    // The envelope and media.created data, field by field.
    let keys: Vec<&str> = request
        .json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 4, "{body}");
    assert!(
        body.starts_with(r#"{"id":""#),
        "the envelope starts with id: {body}"
    );
    assert_eq!(request.json["event"], "media.created");
    assert!(request.event_id().starts_with("evt_"));
    let created_at = request.json["created_at"].as_str().unwrap();
    assert!(
        created_at.ends_with('Z') && created_at.contains('T'),
        "{created_at}"
    );
    let data = &request.json["data"];
    assert_eq!(data["media_id"], media_id.as_str());
    assert_eq!(data["site_id"], site.id.as_str());
    assert_eq!(data["status"], "pending");
    assert_eq!(data["app_media_id"], "app-1");
    assert_eq!(data["content_type"], "text");
    assert_eq!(data["metadata"], json!({"user": 7}));
    assert!(data["created_at"].as_str().unwrap().ends_with('Z'));

    // Headers.
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert!(
        request
            .header("user-agent")
            .unwrap()
            .starts_with("PixelPatrol")
    );
    assert_eq!(request.header("x-pixelpatrol-event"), Some("media.created"));
    assert_eq!(request.header("webhook-id"), Some(request.event_id()));
    let timestamp_ms: i64 = request
        .header("x-pixelpatrol-timestamp")
        .unwrap()
        .parse()
        .unwrap();
    let timestamp_s: i64 = request
        .header("webhook-timestamp")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(timestamp_ms / 1000, timestamp_s);

    // The documented verifyWebhookSignature, step for step: hex HMAC-SHA256
    // of the raw body keyed with the secret string, compared with ===.
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(webhook.secret.as_bytes()).unwrap();
    mac.update(&request.body);
    let expected = hex::encode(mac.finalize().into_bytes());
    assert_eq!(
        request.header("x-pixelpatrol-signature"),
        Some(expected.as_str())
    );

    // Our receiver library, both schemes, replay window included.
    Verifier::new(&webhook.secret)
        .verify(&headers_of(&request), &request.body)
        .unwrap();
    // An off-the-shelf Standard Webhooks library.
    let standard = standardwebhooks::Webhook::new(&webhook.secret).unwrap();
    standard.verify(&request.body, &request.headers).unwrap();
    // And a wrong secret fails.
    assert!(
        Verifier::new("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
            .verify(&headers_of(&request), &request.body)
            .is_err()
    );

    // The delivery log shows the success.
    let log = app
        .wait_for_log(&site, &webhook, "", |data| {
            data.len() == 1 && data[0]["status"] == "succeeded"
        })
        .await;
    assert_eq!(log[0]["event_id"], request.event_id());
    assert_eq!(log[0]["event"], "media.created");
    let attempt = &log[0]["attempts"][0];
    assert_eq!(attempt["attempt"], 1);
    assert_eq!(attempt["status_code"], 200);
    assert_eq!(attempt["response_body"], "ok");
    assert_eq!(attempt["error_class"], Value::Null);
    assert!(attempt["duration_ms"].as_i64().unwrap() >= 0);
}

async fn a_review_emits_media_moderated_after_media_created(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    let site = app.create_site().await;
    app.subscribe(&site, &receiver.url).await;
    let media_id = app.submit_text(&site, "some text").await;
    app.review(&site, &media_id, "rejected").await;

    let requests = receiver.wait_for_count(2).await;
    assert_eq!(requests[0].event(), "media.created");
    assert_eq!(requests[1].event(), "media.moderated");
    assert_ne!(requests[0].event_id(), requests[1].event_id());
    let data = &requests[1].json["data"];
    assert_eq!(data["media_id"], media_id.as_str());
    assert_eq!(data["site_id"], site.id.as_str());
    assert_eq!(data["status"], "rejected");
    assert_eq!(data["ai_results"], json!({"labels": []}));
    assert_eq!(data["applied_rules"], json!([]));
    assert_eq!(data["app_media_id"], "app-1");
    assert!(data["moderated_at"].as_str().unwrap().ends_with('Z'));

    let (status, media) = app.get(&format!("/v1/media/{media_id}"), &site.key).await;
    assert_eq!(status, 200);
    assert_eq!(media["status"], "rejected");
}

async fn the_test_endpoint_sends_test_webhook_now_whatever_the_selection(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    let site = app.create_site().await;
    // Subscribed to media.created only: the test is sent anyway.
    let webhook = app
        .create_webhook(
            &site,
            json!({"url": receiver.url, "events": ["media.created"]}),
        )
        .await;

    let (status, outcome) = app
        .post(
            &format!("/v1/sites/{}/webhooks/{}/test", site.id, webhook.id),
            &site.key,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["success"], true);
    assert_eq!(outcome["status_code"], 200);
    assert_eq!(outcome["error"], Value::Null);
    assert!(outcome["duration_ms"].as_i64().is_some());
    // The answer came after the receiver had the request.
    assert_eq!(receiver.count(), 1);
    let request = receiver.requests().remove(0);
    assert_eq!(request.event(), "test.webhook");
    assert_eq!(request.event_id(), outcome["event_id"].as_str().unwrap());
    let data = &request.json["data"];
    assert!(data["media_id"].as_str().unwrap().starts_with("test_"));
    assert_eq!(data["site_id"], site.id.as_str());
    assert_eq!(data["status"], "test");
    assert_eq!(data["is_test"], true);
    assert_eq!(data["message"], "Test webhook received successfully");
    Verifier::new(&webhook.secret)
        .verify(&headers_of(&request), &request.body)
        .unwrap();

    // Logged like any delivery.
    let (status, delivery) = app
        .get(
            &format!(
                "/v1/sites/{}/webhooks/{}/deliveries/{}",
                site.id,
                webhook.id,
                outcome["delivery_id"].as_str().unwrap()
            ),
            &site.key,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(delivery["status"], "succeeded");
    assert_eq!(delivery["event"], "test.webhook");
    assert_eq!(delivery["attempts"].as_array().unwrap().len(), 1);

    // A failing endpoint's test says so.
    let failing = Receiver::scripted(|_, _| Reply::status(500)).await;
    let (_, broken) = app
        .patch(
            &format!("/v1/sites/{}/webhooks/{}", site.id, webhook.id),
            &site.key,
            json!({"url": failing.url}),
        )
        .await;
    assert_eq!(broken["url"], failing.url.as_str());
    let (_, outcome) = app
        .post(
            &format!("/v1/sites/{}/webhooks/{}/test", site.id, webhook.id),
            &site.key,
            json!({}),
        )
        .await;
    assert_eq!(outcome["success"], false);
    assert_eq!(outcome["status_code"], 500);
    assert_eq!(outcome["error"]["class"], "http_status");
}

async fn failures_follow_the_retry_schedule_then_die_and_a_manual_retry_succeeds(backend: Backend) {
    let app = spawn_app_with(backend, |config| {
        config.retry_schedule = "0ms,50ms,100ms,150ms,200ms".parse().unwrap();
    })
    .await;
    // Five failures, then success.
    let receiver = Receiver::scripted(|_, index| {
        if index < 5 {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    })
    .await;
    let site = app.create_site().await;
    let webhook = app.subscribe(&site, &receiver.url).await;
    app.submit_text(&site, "retry me").await;

    let log = app
        .wait_for_log(&site, &webhook, "", |data| {
            data.len() == 1 && data[0]["status"] == "failed"
        })
        .await;
    let delivery = &log[0];
    let attempts = delivery["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 5, "{delivery:#}");
    assert_eq!(delivery["attempt_count"], 5);
    assert_eq!(delivery["last_status_code"], 500);
    assert_eq!(delivery["next_attempt_at"], Value::Null);
    let scheduled = [50, 100, 150, 200];
    for (index, attempt) in attempts.iter().enumerate() {
        assert_eq!(attempt["attempt"], index as i64 + 1);
        assert_eq!(attempt["status_code"], 500);
        assert_eq!(attempt["error_class"], "http_status");
        if index < 4 {
            // Each retry waits at least its delay after the previous failure.
            let finished =
                millis(&attempt["started_at"]) + attempt["duration_ms"].as_i64().unwrap();
            let next_at = millis(&attempt["next_attempt_at"]);
            assert!(next_at - finished >= scheduled[index], "{attempt:#}");
            let next_started = millis(&attempts[index + 1]["started_at"]);
            assert!(
                next_started >= next_at,
                "attempt {} started before it was due",
                index + 2
            );
        } else {
            assert_eq!(attempt["next_attempt_at"], Value::Null);
        }
    }
    assert_eq!(receiver.count(), 5);
    // Every retry carries the same event id.
    let ids: HashSet<String> = receiver
        .requests()
        .iter()
        .map(|r| r.event_id().to_string())
        .collect();
    assert_eq!(ids.len(), 1);

    // Dead deliveries are listed by status and retried by hand.
    let dead = app.deliveries(&site, &webhook, "status=failed").await;
    assert_eq!(dead["data"].as_array().unwrap().len(), 1);
    let delivery_id = delivery["id"].as_str().unwrap();
    let (status, retried) = app
        .post(
            &format!(
                "/v1/sites/{}/webhooks/{}/deliveries/{delivery_id}/retry",
                site.id, webhook.id
            ),
            &site.key,
            json!({}),
        )
        .await;
    assert_eq!(status, 202, "{retried}");
    assert_eq!(retried["status"], "pending");
    let log = app
        .wait_for_log(&site, &webhook, "", |data| data[0]["status"] == "succeeded")
        .await;
    assert_eq!(log[0]["attempts"].as_array().unwrap().len(), 6);
    assert_eq!(log[0]["attempts"][5]["status_code"], 200);
    assert_eq!(receiver.count(), 6);
}

fn millis(value: &Value) -> i64 {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {value}"));
    let at =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap();
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

/// A plain TCP listener that answers a TLS handshake with plain HTTP.
async fn plain_tcp_listener() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 1024];
                let _ = socket.read(&mut buffer).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    address
}

async fn every_failure_class_is_recorded(backend: Backend) {
    let app = spawn_app_with(backend, |config| {
        // One attempt each: every delivery dies at once with its class.
        config.retry_schedule = "0s".parse().unwrap();
        config.delivery_timeout = Duration::from_millis(700);
    })
    .await;
    let site = app.create_site().await;

    let server_error = Receiver::scripted(|_, _| Reply::status(500)).await;
    let redirect_target = Receiver::start().await;
    let target_url = redirect_target.url.clone();
    let redirect =
        Receiver::scripted(move |_, _| Reply::status(302).header("location", &target_url)).await;
    let slow = Receiver::scripted(|_, _| Reply::ok().after(Duration::from_secs(5))).await;
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let tls = plain_tcp_listener().await;

    let cases = [
        ("http_status", server_error.url.clone(), Some(500)),
        ("http_status", redirect.url.clone(), Some(302)),
        ("timeout", slow.url.clone(), None),
        ("connect", format!("http://{closed_port}/hook"), None),
        ("tls", format!("https://{tls}/hook"), None),
        (
            "dns",
            "http://pixelpatrol-test.invalid/hook".to_string(),
            None,
        ),
    ];
    let mut webhooks = Vec::new();
    for (class, url, status) in &cases {
        webhooks.push((
            app.subscribe(&site, url).await,
            *class,
            *status,
            url.clone(),
        ));
    }
    app.submit_text(&site, "fail everywhere").await;

    for (webhook, class, status, url) in &webhooks {
        let log = app
            .wait_for_log(&site, webhook, "", |data| {
                data.len() == 1 && data[0]["status"] == "failed"
            })
            .await;
        let attempt = &log[0]["attempts"][0];
        assert_eq!(attempt["error_class"], *class, "{url}: {attempt:#}");
        assert_eq!(attempt["status_code"], json!(status), "{url}: {attempt:#}");
        assert!(
            attempt["error_message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    // Redirects are not followed.
    assert_eq!(redirect.count(), 1);
    assert_eq!(redirect_target.count(), 0);
}

async fn retry_after_postpones_the_next_attempt(backend: Backend) {
    let app = spawn_app_with(backend, |config| {
        config.retry_schedule = "0ms,10ms".parse().unwrap();
    })
    .await;
    let receiver = Receiver::scripted(|_, index| {
        if index == 0 {
            Reply::status(503).header("retry-after", "1")
        } else {
            Reply::ok()
        }
    })
    .await;
    let site = app.create_site().await;
    let webhook = app.subscribe(&site, &receiver.url).await;
    app.submit_text(&site, "later please").await;
    let log = app
        .wait_for_log(&site, &webhook, "", |data| {
            data.len() == 1 && data[0]["status"] == "succeeded"
        })
        .await;
    let first = &log[0]["attempts"][0];
    let finished = millis(&first["started_at"]) + first["duration_ms"].as_i64().unwrap();
    assert!(
        millis(&first["next_attempt_at"]) - finished >= 1000,
        "{first:#}"
    );
    assert!(millis(&log[0]["attempts"][1]["started_at"]) >= millis(&first["next_attempt_at"]));
}

/// A receiver that fails the first two attempts of every third event it
/// sees: deterministic, and bounded per event, so that no delivery exhausts
/// its retries by chance.
async fn flaky_receiver() -> Receiver {
    // event id -> (attempts so far, unlucky)
    let events: std::sync::Mutex<HashMap<String, (usize, bool)>> = Default::default();
    Receiver::scripted(move |request, _| {
        let mut events = events.lock().unwrap();
        let seen = events.len();
        let (attempts, unlucky) = events
            .entry(request.event_id().to_string())
            .or_insert((0, seen.is_multiple_of(3)));
        *attempts += 1;
        if *unlucky && *attempts <= 2 {
            Reply::status(500)
        } else {
            Reply::ok().after(Duration::from_millis(2))
        }
    })
    .await
}

/// Checks one ordered lane: requests never overlap, and a request for the
/// n-th event arrives only after the (n-1)-th was answered with success.
fn assert_lane_in_order(lane: &str, requests: &[&Received], order: &[String]) {
    let position = |request: &Received| {
        order
            .iter()
            .position(|id| id == request.event_id())
            .unwrap_or_else(|| panic!("unexpected event {}", request.event_id()))
    };
    let mut acknowledged: Option<(usize, u64)> = None;
    let mut previous_answer = 0;
    for request in requests {
        assert!(
            request.arrived >= previous_answer,
            "lane {lane}: two requests in flight at once"
        );
        previous_answer = request.answered.expect("answered");
        let place = position(request);
        let expected_next = acknowledged.map_or(0, |(done, _)| done + 1);
        assert!(
            place <= expected_next,
            "lane {lane}: event #{place} sent before #{expected_next} succeeded"
        );
        if request.status < 300 && place == expected_next {
            acknowledged = Some((place, previous_answer));
        }
    }
    assert_eq!(
        acknowledged.map(|(done, _)| done + 1),
        Some(order.len()),
        "lane {lane}: not every event succeeded"
    );
}

async fn events_about_one_media_item_arrive_in_order_under_failures(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = flaky_receiver().await;
    let site = app.create_site().await;
    app.subscribe(&site, &receiver.url).await;

    let mut media_ids = Vec::new();
    for item in 0..12 {
        media_ids.push(app.submit_text(&site, &format!("item {item}")).await);
    }
    for media_id in &media_ids {
        for status in ["flagged", "rejected", "approved"] {
            app.review(&site, media_id, status).await;
        }
    }
    let total_events = media_ids.len() * 4;
    let requests = receiver
        .wait_until("every event acknowledged", |requests| {
            requests
                .iter()
                .filter(|r| r.status < 300 && r.answered.is_some())
                .count()
                >= total_events
        })
        .await;

    let mut lanes: HashMap<&str, Vec<&Received>> = HashMap::new();
    for request in &requests {
        lanes.entry(request.media_id()).or_default().push(request);
    }
    assert_eq!(lanes.len(), media_ids.len());
    assert!(
        requests.iter().any(|r| r.status >= 500),
        "failures were injected"
    );
    for (media_id, mut lane) in lanes {
        lane.sort_by_key(|request| request.arrived);
        // Creation order: created, then the three reviews in turn.
        let mut order: Vec<String> = Vec::new();
        for (event, status) in [
            ("media.created", "pending"),
            ("media.moderated", "flagged"),
            ("media.moderated", "rejected"),
            ("media.moderated", "approved"),
        ] {
            let id = lane
                .iter()
                .find(|r| r.event() == event && r.json["data"]["status"] == status)
                .unwrap_or_else(|| panic!("{media_id}: no {event} {status}"))
                .event_id()
                .to_string();
            order.push(id);
        }
        assert_lane_in_order(media_id, &lane, &order);
    }
}

async fn a_strict_ordering_endpoint_is_one_fifo_lane_under_failures(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = flaky_receiver().await;
    let site = app.create_site().await;
    app.create_webhook(
        &site,
        json!({"url": receiver.url, "events": ["media.created"], "strict_ordering": true}),
    )
    .await;
    let mut media_ids = Vec::new();
    for item in 0..30 {
        media_ids.push(app.submit_text(&site, &format!("item {item}")).await);
    }
    let requests = receiver
        .wait_until("every event acknowledged", |requests| {
            requests
                .iter()
                .filter(|r| r.status < 300 && r.answered.is_some())
                .count()
                >= media_ids.len()
        })
        .await;
    let order: Vec<String> = media_ids
        .iter()
        .map(|media_id| {
            requests
                .iter()
                .find(|r| r.media_id() == media_id)
                .unwrap()
                .event_id()
                .to_string()
        })
        .collect();
    let mut lane: Vec<&Received> = requests.iter().collect();
    lane.sort_by_key(|request| request.arrived);
    assert!(
        requests.iter().any(|r| r.status >= 500),
        "failures were injected"
    );
    assert_lane_in_order("strict endpoint", &lane, &order);
}

async fn a_hanging_endpoint_does_not_delay_other_endpoints(backend: Backend) {
    let app = spawn_app_with(backend, |config| {
        config.delivery_timeout = Duration::from_secs(20);
        config.endpoint_concurrency = 4;
        config.delivery_concurrency = 16;
    })
    .await;
    let hanging = Receiver::scripted(|_, _| Reply::ok().after(Duration::from_secs(60))).await;
    let healthy = Receiver::start().await;
    let site = app.create_site().await;
    let hanging_webhook = app.subscribe(&site, &hanging.url).await;
    app.subscribe(&site, &healthy.url).await;

    for item in 0..40 {
        app.submit_text(&site, &format!("item {item}")).await;
    }
    // Every event reaches the healthy endpoint while the hanging one has not
    // answered a single request (its first attempts time out only after 20 s).
    healthy.wait_for_count(40).await;
    let hanging_requests = hanging.requests();
    assert!(
        hanging_requests
            .iter()
            .all(|request| request.answered.is_none())
    );
    // The hanging endpoint holds no more than its share of delivery slots.
    assert!(
        hanging_requests.len() <= 4,
        "{} in flight",
        hanging_requests.len()
    );
    assert!(!hanging_requests.is_empty());
    let pending = app
        .deliveries(&site, &hanging_webhook, "status=pending&limit=100")
        .await;
    assert_eq!(pending["data"].as_array().unwrap().len(), 40);
}

async fn private_targets_are_refused_outside_dev_mode(backend: Backend) {
    let app = spawn_app_with(backend, |config| {
        config.dev = false;
        config.retry_schedule = "0s".parse().unwrap();
    })
    .await;
    let receiver = Receiver::start().await;
    let site = app.create_site().await;

    for (url, reason) in [
        (receiver.url.clone(), "plain http"),
        ("https://127.0.0.1/hook".to_string(), "loopback literal"),
        (
            "https://169.254.169.254/latest".to_string(),
            "metadata literal",
        ),
        ("https://[::1]/hook".to_string(), "IPv6 loopback"),
        ("https://10.0.0.8/hook".to_string(), "private literal"),
    ] {
        let (status, body) = app
            .post(
                &format!("/v1/sites/{}/webhooks", site.id),
                &site.key,
                json!({"url": url, "events": ["media.created"]}),
            )
            .await;
        assert_eq!(status, 400, "{reason}: {body}");
        assert_eq!(body["error"]["field"], "url", "{reason}");
    }

    // A name that resolves to loopback passes creation but is refused at
    // connection time, on the resolved address.
    let webhook = app
        .create_webhook(
            &site,
            json!({"url": format!("https://localhost:{}/hook", receiver.address.port()), "events": ["media.created"]}),
        )
        .await;
    app.submit_text(&site, "no SSRF").await;
    let log = app
        .wait_for_log(&site, &webhook, "", |data| {
            data.len() == 1 && data[0]["status"] == "failed"
        })
        .await;
    assert_eq!(log[0]["attempts"][0]["error_class"], "blocked_target");
    assert_eq!(receiver.count(), 0);
}

async fn graceful_shutdown_finishes_the_attempt_in_flight(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::scripted(|_, _| Reply::ok().after(Duration::from_millis(800))).await;
    let site = app.create_site().await;
    let webhook = app.subscribe(&site, &receiver.url).await;
    app.submit_text(&site, "finish me").await;
    receiver.wait_for_count(1).await;
    let db = app.db.clone();
    app.stop().await.unwrap();
    assert!(receiver.requests()[0].answered.is_some());

    // After a restart, the log says it succeeded once and nothing is resent.
    let app = crate::common::spawn_app_on(db, |_| {}).await;
    let log = app.deliveries(&site, &webhook, "").await;
    assert_eq!(log["data"][0]["status"], "succeeded", "{log:#}");
    assert_eq!(log["data"][0]["attempt_count"], 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.count(), 1);
}

async fn inactive_and_unsubscribed_endpoints_get_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let inactive = Receiver::start().await;
    let moderated_only = Receiver::start().await;
    let all = Receiver::start().await;
    let site = app.create_site().await;
    let inactive_webhook = app
        .create_webhook(
            &site,
            json!({"url": inactive.url, "events": ["media.created"], "active": false}),
        )
        .await;
    app.create_webhook(
        &site,
        json!({"url": moderated_only.url, "events": ["media.moderated"]}),
    )
    .await;
    app.subscribe(&site, &all.url).await;

    let media_id = app.submit_text(&site, "x").await;
    all.wait_for_count(1).await;
    app.review(&site, &media_id, "approved").await;
    all.wait_for_count(2).await;
    let moderated = moderated_only.wait_for_count(1).await;
    assert_eq!(moderated[0].event(), "media.moderated");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(inactive.count(), 0);
    assert_eq!(moderated_only.count(), 1);
    // Nothing was even queued for the inactive endpoint.
    let log = app.deliveries(&site, &inactive_webhook, "").await;
    assert_eq!(log["data"].as_array().unwrap().len(), 0);
}

async fn deleting_an_endpoint_mid_attempt_holds_back_no_other_delivery(backend: Backend) {
    let app = spawn_app(backend).await;
    let slow = Receiver::scripted(|_, _| Reply::ok().after(Duration::from_millis(700))).await;
    let fast = Receiver::start().await;
    let site = app.create_site().await;
    let doomed = app.subscribe(&site, &slow.url).await;
    let kept = app.subscribe(&site, &fast.url).await;
    app.submit_text(&site, "first").await;
    slow.wait_for_count(1).await;
    // Its attempt finishes after the endpoint and its deliveries are gone.
    let (status, _) = app
        .delete(
            &format!("/v1/sites/{}/webhooks/{}", site.id, doomed.id),
            &site.key,
        )
        .await;
    assert_eq!(status, 204);
    slow.wait_until("the orphaned attempt to finish", |requests| {
        requests[0].answered.is_some()
    })
    .await;
    for item in 0..5 {
        app.submit_text(&site, &format!("after {item}")).await;
    }
    app.wait_for_log(&site, &kept, "", |data| {
        data.len() == 6 && data.iter().all(|d| d["status"] == "succeeded")
    })
    .await;
    assert_eq!(fast.count(), 6, "nothing was sent twice");
}

async fn a_response_with_nul_bytes_is_logged(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::scripted(|_, _| {
        let mut reply = Reply::ok();
        reply.body = "ok\0with\0nul".into();
        reply
    })
    .await;
    let site = app.create_site().await;
    let webhook = app.subscribe(&site, &receiver.url).await;
    app.submit_text(&site, "x").await;
    let log = app
        .wait_for_log(&site, &webhook, "", |data| {
            data.len() == 1 && data[0]["status"] == "succeeded"
        })
        .await;
    assert_eq!(
        log[0]["attempts"][0]["response_body"],
        "ok\u{fffd}with\u{fffd}nul"
    );
    assert_eq!(receiver.count(), 1);
}

async fn a_manual_retry_waits_while_its_lane_is_in_flight(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::scripted(|_, _| Reply::ok().after(Duration::from_millis(1500))).await;
    let site = app.create_site().await;
    let webhook = app.subscribe(&site, &receiver.url).await;
    let media_id = app.submit_text(&site, "x").await;
    receiver.wait_for_count(1).await;
    app.review(&site, &media_id, "approved").await;
    let log = app
        .deliveries(&site, &webhook, "event=media.moderated")
        .await;
    let waiting = log["data"][0]["id"].as_str().unwrap().to_string();
    let retry = format!(
        "/v1/sites/{}/webhooks/{}/deliveries/{waiting}/retry",
        site.id, webhook.id
    );
    let (status, body) = app.post(&retry, &site.key, json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    // Once the lane is free, the order holds and a retry is accepted.
    let requests = receiver.wait_for_count(2).await;
    assert_eq!(requests[0].event(), "media.created");
    assert_eq!(requests[1].event(), "media.moderated");
    app.wait_for_log(&site, &webhook, "", |data| {
        data.iter().all(|d| d["status"] == "succeeded")
    })
    .await;
    let (status, _) = app.post(&retry, &site.key, json!({})).await;
    assert_eq!(status, 202);
    receiver.wait_for_count(3).await;
}

async fn the_first_delay_of_the_schedule_postpones_the_first_attempt(backend: Backend) {
    let app = spawn_app_with(backend, |config| {
        config.retry_schedule = "400ms,10ms".parse().unwrap();
    })
    .await;
    let receiver = Receiver::start().await;
    let site = app.create_site().await;
    let webhook = app.subscribe(&site, &receiver.url).await;
    app.submit_text(&site, "x").await;
    let log = app
        .wait_for_log(&site, &webhook, "", |data| {
            data.len() == 1 && data[0]["status"] == "succeeded"
        })
        .await;
    let waited = millis(&log[0]["attempts"][0]["started_at"]) - millis(&log[0]["created_at"]);
    assert!(
        waited >= 400,
        "the first attempt came {waited} ms after the event"
    );
}
