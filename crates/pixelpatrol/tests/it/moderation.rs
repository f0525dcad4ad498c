//! Automatic moderation end to end: real analyzers (text lexicons, the NSFW
//! model, an external analyzer on 127.0.0.1), rule groups through the API,
//! and `media.moderated` at a real receiver. Both backends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::common::{Backend, Receiver, Reply, TestApp, TestSite, serve_files, spawn_app_with};
use axum::http::StatusCode;
use pixelpatrol::Config;
use serde_json::{Value, json};

both_backends!(
    a_violent_threat_is_rejected_with_its_labels_and_rules_after_media_created,
    everyday_text_is_approved,
    a_rule_group_chosen_at_submission_decides,
    rule_groups_are_validated_and_scoped_to_their_site,
    a_score_in_the_gray_area_flags_and_a_clear_one_rejects,
    the_external_analyzer_is_signed_and_its_labels_count,
    a_failing_or_slow_analyzer_flags_the_item,
    images_are_scored_by_the_nsfw_model,
    without_the_model_images_are_flagged_unanalyzed,
    unreadable_and_oversized_images_are_flagged,
    remoderation_decides_again_and_manual_review_wins,
    the_moderation_queue_lists_flagged_items,
);

fn moderating(config: &mut Config) {
    config.auto_moderation = true;
    config.analyzer_timeout = Duration::from_secs(5);
}

async fn app_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_with(backend, |config| {
        moderating(config);
        adjust(config);
    })
    .await
}

async fn submit(app: &TestApp, site: &TestSite, body: Value) -> String {
    let (status, answer) = app.post("/v1/submit-media", &site.key, body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    answer["id"].as_str().unwrap().to_string()
}

/// Polls the media item until automatic moderation has decided it.
async fn decided(app: &TestApp, site: &TestSite, media_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, media) = app.get(&format!("/v1/media/{media_id}"), &site.key).await;
        assert_eq!(status, StatusCode::OK, "{media}");
        if media["status"] != "pending" {
            return media;
        }
        assert!(Instant::now() < deadline, "never decided: {media}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn label<'a>(media: &'a Value, name: &str) -> Option<&'a Value> {
    media["ai_results"]["labels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|label| label["name"] == name)
}

/// Sets the site's default group to exactly `rules`.
async fn set_default_rules(app: &TestApp, site: &TestSite, rules: Value) -> String {
    let (status, group) = app
        .post(
            &format!("/v1/sites/{}/rule-groups", site.id),
            &site.key,
            json!({"name": "custom", "rules": rules, "is_default": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    group["id"].as_str().unwrap().to_string()
}

/// An external analyzer that answers with `confidence` for label `custom`,
/// changeable while the test runs (milli-units).
async fn scored_analyzer(confidence: Arc<AtomicU64>) -> Receiver {
    Receiver::scripted(move |_, _| {
        let value = confidence.load(Ordering::SeqCst) as f64 / 1000.0;
        Reply::json(
            json!({"labels": [{"name": "custom", "category": "test", "confidence": value}]}),
        )
    })
    .await
}

async fn use_external_analyzer(app: &TestApp, site: &TestSite, url: &str) -> String {
    let (status, body) = app
        .patch(
            &format!("/v1/sites/{}", site.id),
            &site.key,
            json!({"external_analyzer_url": url}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["external_analyzer_secret"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn a_violent_threat_is_rejected_with_its_labels_and_rules_after_media_created(
    backend: Backend,
) {
    let app = app_with(backend, |_| {}).await;
    let site = app.create_site().await;
    let receiver = Receiver::start().await;
    app.subscribe(&site, &receiver.url).await;

    let media_id = submit(
        &app,
        &site,
        json!({"body": "I will kill you tomorrow, you are dead"}),
    )
    .await;
    let requests = receiver.wait_for_count(2).await;
    assert_eq!(requests[0].event(), "media.created");
    assert_eq!(requests[1].event(), "media.moderated");
    let data = &requests[1].json["data"];
    assert_eq!(data["media_id"], media_id.as_str());
    assert_eq!(data["status"], "rejected");
    assert_eq!(data["decided_by"], "automatic");
    let labels = data["ai_results"]["labels"].as_array().unwrap();
    let violence = labels
        .iter()
        .find(|label| label["name"] == "violence")
        .unwrap();
    assert_eq!(violence["category"], "violence");
    assert_eq!(violence["analyzer"], "text");
    assert!(
        violence["confidence"].as_f64().unwrap() >= 0.75,
        "{violence}"
    );
    let rules = data["applied_rules"].as_array().unwrap();
    assert!(
        rules.len() >= 8,
        "every template rule is reported: {rules:?}"
    );
    let failed = rules
        .iter()
        .find(|rule| rule["label"] == "violence")
        .unwrap();
    assert_eq!(failed["passed"], false);
    assert_eq!(failed["action"], "reject");
    assert_eq!(failed["kind"], "prohibition");
    assert_eq!(failed["threshold"], 0.75);
    assert!(
        rules
            .iter()
            .filter(|rule| rule["label"] != "violence")
            .all(|rule| rule["passed"] == true)
    );

    let media = decided(&app, &site, &media_id).await;
    assert_eq!(media["status"], "rejected");
    assert!(
        media["processing_ms"].is_i64(),
        "processing time is stored: {media}"
    );
    assert_eq!(media["ai_results"]["labels"], data["ai_results"]["labels"]);
}

async fn everyday_text_is_approved(backend: Backend) {
    let app = app_with(backend, |_| {}).await;
    let site = app.create_site().await;
    let media_id = submit(
        &app,
        &site,
        json!({"body": "Lovely walk along the river in Scunthorpe this morning."}),
    )
    .await;
    let media = decided(&app, &site, &media_id).await;
    assert_eq!(media["status"], "approved", "{media}");
    assert_eq!(media["decided_by"], "automatic");
    assert_eq!(media["ai_results"]["labels"], json!([]));
}

async fn a_rule_group_chosen_at_submission_decides(backend: Backend) {
    let app = app_with(backend, |_| {}).await;
    let site = app.create_site().await;
    let (status, group) = app
        .post(
            &format!("/v1/sites/{}/rule-groups", site.id),
            &site.key,
            json!({"name": "no phone numbers", "rules": [
                {"name": "phone number", "kind": "pattern", "pattern": r"\d{3}-\d{4}", "action": "flag"}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    assert_eq!(group["is_default"], false);
    let group_id = group["id"].as_str().unwrap();

    let chosen = submit(
        &app,
        &site,
        json!({"body": "call me at 555-1234", "rule_group_id": group_id}),
    )
    .await;
    let by_default = submit(&app, &site, json!({"body": "call me at 555-1234"})).await;
    let chosen = decided(&app, &site, &chosen).await;
    assert_eq!(chosen["status"], "flagged", "{chosen}");
    assert_eq!(chosen["rule_group_id"], group_id);
    assert_eq!(chosen["applied_rules"][0]["kind"], "pattern");
    assert_eq!(chosen["applied_rules"][0]["passed"], false);
    let by_default = decided(&app, &site, &by_default).await;
    assert_eq!(by_default["status"], "approved", "{by_default}");
}

async fn rule_groups_are_validated_and_scoped_to_their_site(backend: Backend) {
    let app = app_with(backend, |_| {}).await;
    let site = app.create_site().await;
    let other = app.create_site().await;
    let groups_path = format!("/v1/sites/{}/rule-groups", site.id);

    // A new site starts with the recommended group as its default.
    let (status, list) = app.get(&groups_path, &site.key).await;
    assert_eq!(status, StatusCode::OK);
    let groups = list["data"].as_array().unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["is_default"], true);
    let default_id = groups[0]["id"].as_str().unwrap().to_string();

    for (rules, field) in [
        (
            json!([{"name": "x", "kind": "prohibition", "label": "violence", "threshold": 2, "action": "reject"}]),
            "rules[0].threshold",
        ),
        (
            json!([{"name": "x", "kind": "pattern", "pattern": "(", "action": "flag"}]),
            "rules[0].pattern",
        ),
        (
            json!([{"name": "x", "kind": "requirement", "action": "flag"}]),
            "rules[0].label",
        ),
        (
            json!([{"name": "x", "kind": "banana", "label": "a", "action": "flag"}]),
            "rules[0].kind",
        ),
        (
            json!([{"name": "x", "kind": "prohibition", "label": "a", "action": "delete"}]),
            "rules[0].action",
        ),
    ] {
        let (status, error) = app
            .post(
                &groups_path,
                &site.key,
                json!({"name": "g", "rules": rules}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
        assert_eq!(error["error"]["field"], field, "{error}");
    }
    let (_, list) = app.get(&groups_path, &site.key).await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "nothing half-written"
    );

    // Another site's group is a 404, through the API and at submission.
    let (status, _) = app
        .get(
            &format!("/v1/sites/{}/rule-groups/{default_id}", other.id),
            &other.key,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, error) = app
        .post(
            "/v1/submit-media",
            &other.key,
            json!({"body": "hi", "rule_group_id": default_id}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{error}");

    // The default cannot be deleted; recreating the recommended group moves
    // the default to the new group, and then the old one can go.
    let (status, _) = app
        .delete(&format!("{groups_path}/{default_id}"), &site.key)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, recreated) = app
        .post(&format!("{groups_path}/recommended"), &site.key, json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{recreated}");
    assert_eq!(recreated["is_default"], true);
    let (_, old) = app
        .get(&format!("{groups_path}/{default_id}"), &site.key)
        .await;
    assert_eq!(old["is_default"], false);
    let (status, _) = app
        .delete(&format!("{groups_path}/{default_id}"), &site.key)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Editing replaces the rules and keeps ids given by the client.
    let new_id = recreated["id"].as_str().unwrap();
    let (status, edited) = app
        .patch(
            &format!("{groups_path}/{new_id}"),
            &site.key,
            json!({"rules": [{"id": "no-casino", "name": "casino", "kind": "pattern", "pattern": "(?i)casino", "action": "reject"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert_eq!(edited["rules"][0]["id"], "no-casino");
    let (status, error) = app
        .patch(
            &format!("{groups_path}/{new_id}"),
            &site.key,
            json!({"is_default": false}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["field"], "is_default");

    let (status, templates) = app.get("/v1/rule-templates", &site.key).await;
    assert_eq!(status, StatusCode::OK);
    assert!(templates["data"].as_array().unwrap().len() >= 8);
}

async fn a_score_in_the_gray_area_flags_and_a_clear_one_rejects(backend: Backend) {
    let app = app_with(backend, |_| {}).await;
    let site = app.create_site().await;
    let confidence = Arc::new(AtomicU64::new(0));
    let analyzer = scored_analyzer(confidence.clone()).await;
    use_external_analyzer(&app, &site, &analyzer.url).await;
    set_default_rules(
        &app,
        &site,
        json!([{"name": "no custom", "kind": "prohibition", "label": "custom", "threshold": 0.9, "action": "reject"}]),
    )
    .await;
    for (score, expected, gray) in [
        (850, "flagged", true),
        (950, "rejected", false),
        (700, "approved", false),
    ] {
        confidence.store(score, Ordering::SeqCst);
        let media_id = submit(&app, &site, json!({"body": "hello there"})).await;
        let media = decided(&app, &site, &media_id).await;
        assert_eq!(media["status"], expected, "score {score}: {media}");
        assert_eq!(media["applied_rules"][0]["gray_area"], gray);
        assert_eq!(media["applied_rules"][0]["score"], score as f64 / 1000.0);
    }
    // The site threshold is the default rule threshold.
    let (status, _) = app
        .patch(
            &format!("/v1/sites/{}", site.id),
            &site.key,
            json!({"confidence_threshold": 0.5}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    set_default_rules(
        &app,
        &site,
        json!([{"name": "no custom", "kind": "prohibition", "label": "custom", "action": "reject"}]),
    )
    .await;
    confidence.store(550, Ordering::SeqCst);
    let media_id = submit(&app, &site, json!({"body": "hello again"})).await;
    let media = decided(&app, &site, &media_id).await;
    assert_eq!(media["status"], "rejected", "{media}");
    assert_eq!(media["applied_rules"][0]["threshold"], 0.5);
    let (status, error) = app
        .patch(
            &format!("/v1/sites/{}", site.id),
            &site.key,
            json!({"confidence_threshold": 0}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["field"], "confidence_threshold");
}

async fn the_external_analyzer_is_signed_and_its_labels_count(backend: Backend) {
    let app = app_with(backend, |_| {}).await;
    let site = app.create_site().await;
    let analyzer = scored_analyzer(Arc::new(AtomicU64::new(420))).await;
    let secret = use_external_analyzer(&app, &site, &analyzer.url).await;
    let media_id = submit(
        &app,
        &site,
        json!({"body": "hello", "metadata": {"user": 9}, "app_media_id": "a-1"}),
    )
    .await;
    let media = decided(&app, &site, &media_id).await;
    let custom = label(&media, "custom").expect("the external label is kept");
    assert_eq!(custom["analyzer"], "external");
    assert_eq!(custom["category"], "test");
    assert_eq!(custom["confidence"], 0.42);

    let request = &analyzer.requests()[0];
    assert_eq!(request.json["media_id"], media_id.as_str());
    assert_eq!(request.json["site_id"], site.id.as_str());
    assert_eq!(request.json["content_type"], "text");
    assert_eq!(request.json["body"], "hello");
    assert_eq!(request.json["metadata"], json!({"user": 9}));
    let signature = request.header("x-pixelpatrol-signature").unwrap();
    pixelpatrol_webhooks::verify_pixelpatrol(&secret, &request.body, signature)
        .expect("the request is signed with the site's analyzer secret");
    assert!(request.header("x-pixelpatrol-timestamp").is_some());
    // The secret is not shown again.
    let (_, shown) = app.get(&format!("/v1/sites/{}", site.id), &site.key).await;
    assert!(shown.get("external_analyzer_secret").is_none(), "{shown}");
}

async fn a_failing_or_slow_analyzer_flags_the_item(backend: Backend) {
    let app = app_with(backend, |config| {
        config.analyzer_timeout = Duration::from_millis(500)
    })
    .await;
    let site = app.create_site().await;
    let failing = Receiver::scripted(|_, _| Reply::status(500)).await;
    use_external_analyzer(&app, &site, &failing.url).await;
    let media_id = submit(&app, &site, json!({"body": "perfectly fine text"})).await;
    let media = decided(&app, &site, &media_id).await;
    assert_eq!(media["status"], "flagged", "{media}");
    let failure = label(&media, "analyzer_failed").unwrap();
    assert_eq!(failure["analyzer"], "external");
    assert_eq!(failure["category"], "analysis");
    assert!(
        failure["detail"].as_str().unwrap().contains("500"),
        "{failure}"
    );

    let slow =
        Receiver::scripted(|_, _| Reply::json(json!({"labels": []})).after(Duration::from_secs(3)))
            .await;
    use_external_analyzer(&app, &site, &slow.url).await;
    let media_id = submit(&app, &site, json!({"body": "more fine text"})).await;
    let media = decided(&app, &site, &media_id).await;
    assert_eq!(media["status"], "flagged", "{media}");
    let failure = label(&media, "analyzer_failed").unwrap();
    assert!(
        failure["detail"].as_str().unwrap().contains("timed out"),
        "{failure}"
    );

    let garbage =
        Receiver::scripted(|_, _| Reply::json(json!({"labels": [{"name": "x", "confidence": 7}]})))
            .await;
    use_external_analyzer(&app, &site, &garbage.url).await;
    let media_id = submit(&app, &site, json!({"body": "and more"})).await;
    let media = decided(&app, &site, &media_id).await;
    assert_eq!(media["status"], "flagged", "{media}");
    assert!(
        label(&media, "x").is_none(),
        "out-of-range labels are not taken"
    );
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/nsfw/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

async fn images_are_scored_by_the_nsfw_model(backend: Backend) {
    assert!(
        pixelpatrol::moderation::nsfw::is_installed(&crate::common::model_dir()),
        "the NSFW model is not installed in {}: run ./scripts/test (or `pixelpatrol models install --model-dir models`)",
        crate::common::model_dir().display()
    );
    let app = app_with(backend, |config| {
        config.analyzer_timeout = Duration::from_secs(60)
    })
    .await;
    let site = app.create_site().await;
    let base = serve_files(vec![
        ("/shapes.png", "image/png", fixture("shapes-1024x768.png")),
        ("/body.jpg", "image/jpeg", fixture("body-640x480.jpg")),
    ])
    .await;
    let safe = submit(
        &app,
        &site,
        json!({"content_url": format!("{base}/shapes.png")}),
    )
    .await;
    let explicit = submit(
        &app,
        &site,
        json!({"content_url": format!("{base}/body.jpg")}),
    )
    .await;

    let safe = decided(&app, &site, &safe).await;
    assert_eq!(safe["content_type"], "image");
    let adult = label(&safe, "adult").unwrap();
    assert_eq!(adult["category"], "adult_content");
    assert_eq!(adult["analyzer"], "image");
    assert!(adult["confidence"].as_f64().unwrap() < 0.1, "{adult}");
    // Flat synthetic shapes have few edges: blurry by the Laplacian measure,
    // which the recommended rules send to a person.
    assert!(
        label(&safe, "blurry").unwrap()["confidence"]
            .as_f64()
            .unwrap()
            > 0.75,
        "{safe}"
    );
    assert_eq!(safe["status"], "flagged", "{safe}");
    let failed: Vec<&Value> = safe["applied_rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|rule| rule["passed"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["label"], "blurry");

    let explicit = decided(&app, &site, &explicit).await;
    assert!(
        label(&explicit, "adult").unwrap()["confidence"]
            .as_f64()
            .unwrap()
            > 0.85,
        "{explicit}"
    );
    assert_eq!(explicit["status"], "rejected", "{explicit}");
    let rule = explicit["applied_rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|rule| rule["label"] == "adult")
        .unwrap();
    assert_eq!(rule["passed"], false);
}

async fn without_the_model_images_are_flagged_unanalyzed(backend: Backend) {
    let empty = tempfile::tempdir().unwrap();
    let model_dir = empty.path().to_path_buf();
    let app = app_with(backend, move |config| config.model_dir = model_dir).await;
    let site = app.create_site().await;
    let base = serve_files(vec![(
        "/shapes.png",
        "image/png",
        fixture("shapes-1024x768.png"),
    )])
    .await;
    let media_id = submit(
        &app,
        &site,
        json!({"content_url": format!("{base}/shapes.png")}),
    )
    .await;
    let media = decided(&app, &site, &media_id).await;
    assert_eq!(media["status"], "flagged", "{media}");
    let unanalyzed = label(&media, "unanalyzed").unwrap();
    assert!(
        unanalyzed["detail"]
            .as_str()
            .unwrap()
            .contains("models install"),
        "{unanalyzed}"
    );
    assert!(label(&media, "adult").is_none());
}

/// A PNG whose header claims `width`×`height` pixels; no pixel data follows.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut header = b"IHDR".to_vec();
    header.extend(width.to_be_bytes());
    header.extend(height.to_be_bytes());
    header.extend([8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    // The header, then an empty data chunk: decoders read up to the first
    // data chunk before they tell the size.
    for chunk in [header, b"IDAT".to_vec(), b"IEND".to_vec()] {
        png.extend((chunk.len() as u32 - 4).to_be_bytes());
        png.extend(&chunk);
        png.extend(crc32(&chunk).to_be_bytes());
    }
    png
}

async fn unreadable_and_oversized_images_are_flagged(backend: Backend) {
    let app = app_with(backend, |_| {}).await;
    let site = app.create_site().await;
    let mut avif = vec![0, 0, 0, 0x1c];
    avif.extend(b"ftypavif\0\0\0\0mif1avif");
    let base = serve_files(vec![
        ("/bomb.png", "image/png", png_claiming(100_000, 100_000)),
        (
            "/page.png",
            "image/png",
            b"<html>not an image</html>".to_vec(),
        ),
        ("/photo.avif", "image/avif", avif),
    ])
    .await;
    let bomb = submit(
        &app,
        &site,
        json!({"content_url": format!("{base}/bomb.png")}),
    )
    .await;
    let page = submit(
        &app,
        &site,
        json!({"content_url": format!("{base}/page.png")}),
    )
    .await;
    let avif = submit(
        &app,
        &site,
        json!({"content_url": format!("{base}/photo.avif")}),
    )
    .await;
    let missing = submit(
        &app,
        &site,
        json!({"content_url": format!("{base}/missing.png")}),
    )
    .await;
    let video = submit(
        &app,
        &site,
        json!({"content_url": format!("{base}/clip.mp4")}),
    )
    .await;

    let bomb = decided(&app, &site, &bomb).await;
    assert_eq!(bomb["status"], "flagged");
    assert!(
        label(&bomb, "analyzer_failed").unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("pixels"),
        "{bomb}"
    );
    let page = decided(&app, &site, &page).await;
    assert_eq!(page["status"], "flagged");
    assert!(label(&page, "analyzer_failed").is_some(), "{page}");
    let missing = decided(&app, &site, &missing).await;
    assert!(
        label(&missing, "analyzer_failed").unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("404"),
        "{missing}"
    );
    for item in [&avif, &video] {
        let media = decided(&app, &site, item).await;
        assert_eq!(media["status"], "flagged", "{media}");
        assert!(label(&media, "unsupported_format").is_some(), "{media}");
    }

    // An external analyzer takes over formats the built-in ones cannot read.
    let analyzer = scored_analyzer(Arc::new(AtomicU64::new(10))).await;
    use_external_analyzer(&app, &site, &analyzer.url).await;
    let video = submit(
        &app,
        &site,
        json!({"content_url": format!("{base}/clip.mp4")}),
    )
    .await;
    let video = decided(&app, &site, &video).await;
    assert_eq!(video["content_type"], "video");
    assert_eq!(video["status"], "approved", "{video}");
    assert!(label(&video, "unsupported_format").is_none());
}

async fn remoderation_decides_again_and_manual_review_wins(backend: Backend) {
    let app = app_with(backend, |_| {}).await;
    let site = app.create_site().await;
    let receiver = Receiver::start().await;
    app.subscribe(&site, &receiver.url).await;
    let confidence = Arc::new(AtomicU64::new(100));
    let analyzer = scored_analyzer(confidence.clone()).await;
    use_external_analyzer(&app, &site, &analyzer.url).await;
    set_default_rules(
        &app,
        &site,
        json!([{"name": "no custom", "kind": "prohibition", "label": "custom", "threshold": 0.8, "action": "reject"}]),
    )
    .await;

    let media_id = submit(&app, &site, json!({"body": "hello"})).await;
    assert_eq!(decided(&app, &site, &media_id).await["status"], "approved");
    confidence.store(990, Ordering::SeqCst);
    let (status, answer) = app
        .post(
            &format!("/v1/media/{media_id}/remoderate"),
            &site.key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let requests = receiver
        .wait_until("three events", |requests| requests.len() >= 3)
        .await;
    let events: Vec<(&str, &str)> = requests
        .iter()
        .map(|request| {
            (
                request.event(),
                request.json["data"]["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            ("media.created", "pending"),
            ("media.moderated", "approved"),
            ("media.moderated", "rejected")
        ]
    );

    // A person's decision stands: no re-moderation over it…
    app.review(&site, &media_id, "approved").await;
    let (status, _) = app
        .post(
            &format!("/v1/media/{media_id}/remoderate"),
            &site.key,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // …and a review made while analysis runs wins over its result.
    let slow = Receiver::scripted(|_, _| {
        Reply::json(json!({"labels": [{"name": "custom", "confidence": 0.99}]}))
            .after(Duration::from_millis(800))
    })
    .await;
    use_external_analyzer(&app, &site, &slow.url).await;
    let reviewed = submit(&app, &site, json!({"body": "hello again"})).await;
    slow.wait_for_count(1).await;
    app.review(&site, &reviewed, "approved").await;
    // The analysis did finish (its answer was sent) and was outvoted.
    slow.wait_until("the analyzer to answer", |requests| {
        requests[0].answered.is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, media) = app.get(&format!("/v1/media/{reviewed}"), &site.key).await;
    assert_eq!(media["status"], "approved");
    assert_eq!(media["decided_by"], "person");
    let moderated: Vec<_> = receiver
        .requests()
        .into_iter()
        .filter(|request| request.media_id() == reviewed && request.event() == "media.moderated")
        .collect();
    assert_eq!(moderated.len(), 1, "only the person's decision is sent");
}

async fn the_moderation_queue_lists_flagged_items(backend: Backend) {
    let app = app_with(backend, |_| {}).await;
    let site = app.create_site().await;
    let mut flagged = Vec::new();
    for index in 0..3 {
        let id = submit(
            &app,
            &site,
            json!({"body": format!("I am going to kill myself tonight {index}")}),
        )
        .await;
        flagged.push(id);
    }
    let approved = submit(&app, &site, json!({"body": "nice photo"})).await;
    for id in flagged.iter().chain([&approved]) {
        decided(&app, &site, id).await;
    }
    let path = format!("/v1/sites/{}/media?status=flagged&limit=2", site.id);
    let (status, page) = app.get(&path, &site.key).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let first: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, page) = app.get(&format!("{path}&cursor={cursor}"), &site.key).await;
    let second: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    let mut listed: Vec<&str> = first.into_iter().chain(second).collect();
    listed.sort();
    let mut expected: Vec<&str> = flagged.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(
        listed, expected,
        "the queue holds exactly the flagged items"
    );
    let (status, error) = app
        .get(
            &format!("/v1/sites/{}/media?status=maybe", site.id),
            &site.key,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["field"], "status");
}
