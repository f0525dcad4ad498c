//! The HTTP API: authentication, tenant isolation, resources and bad input,
//! through real HTTP on both backends.

use crate::common::{ADMIN_TOKEN, Backend, Receiver, spawn_app, spawn_app_with};
use reqwest::Method;
use serde_json::{Value, json};

both_backends!(
    sites_are_created_listed_updated_and_deleted_by_the_operator,
    keys_are_required_and_checked,
    a_site_key_reaches_nothing_of_another_site,
    webhook_secrets_are_generated_or_checked_and_never_listed,
    webhook_endpoints_are_validated_field_by_field,
    media_is_submitted_with_a_header_key_or_a_body_api_key,
    bad_media_submissions_name_the_field_and_write_nothing,
    malformed_and_oversize_bodies_are_refused,
    the_delivery_log_filters_and_pages,
    reviews_take_only_known_statuses,
    the_admin_token_is_generated_once_when_not_configured,
    the_apis_changes_are_audited_with_the_credential_that_made_them,
);

fn field(body: &Value) -> &str {
    body["error"]["field"].as_str().unwrap_or("")
}

async fn sites_are_created_listed_updated_and_deleted_by_the_operator(backend: Backend) {
    let app = spawn_app(backend).await;
    let site = app.create_site().await;
    assert!(site.key.starts_with("site_") && site.key.len() >= 25);

    let (status, list) = app.get("/v1/sites", ADMIN_TOKEN).await;
    assert_eq!(status, 200);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert!(
        list["data"][0].get("site_key").is_none(),
        "the key is shown once"
    );
    assert!(list["data"][0].get("key_hash").is_none());

    let (status, updated) = app
        .patch(
            &format!("/v1/sites/{}", site.id),
            ADMIN_TOKEN,
            json!({"name": "Renamed", "description": null}),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["name"], "Renamed");
    assert_eq!(updated["description"], Value::Null);
    assert_eq!(updated["url"], "https://example.com/");

    let (_, fetched) = app.get(&format!("/v1/sites/{}", site.id), &site.key).await;
    assert_eq!(fetched["name"], "Renamed");

    // Site keys cannot create or delete sites.
    let (status, body) = app
        .post("/v1/sites", &site.key, json!({"name": "Mine"}))
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = app
        .delete(&format!("/v1/sites/{}", site.id), &site.key)
        .await;
    assert_eq!(status, 403);

    let (status, _) = app
        .delete(&format!("/v1/sites/{}", site.id), ADMIN_TOKEN)
        .await;
    assert_eq!(status, 204);
    let (status, body) = app
        .get(&format!("/v1/sites/{}", site.id), ADMIN_TOKEN)
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    // The deleted site's key no longer works.
    let (status, _) = app.get("/v1/sites", &site.key).await;
    assert_eq!(status, 401);
}

async fn keys_are_required_and_checked(backend: Backend) {
    let app = spawn_app(backend).await;
    let (status, body) = app.request(Method::GET, "/v1/sites", None, None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = app
        .get("/v1/sites", "site_notarealkeynotarealkeynotarealkey")
        .await;
    assert_eq!(status, 401);
    let (status, _) = app.get("/v1/sites", "wrong-admin-token-0123456789").await;
    assert_eq!(status, 401);
    let (status, _) = app
        .request(
            Method::POST,
            "/v1/submit-media",
            None,
            Some(json!({"body": "x"})),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = app
        .request(
            Method::POST,
            "/v1/submit-media",
            None,
            Some(json!({"api_key": "site_unknown0000000000000000", "body": "x"})),
        )
        .await;
    assert_eq!(status, 401);
    // Unknown routes and methods answer in the same JSON shape.
    let (status, body) = app.get("/v1/nothing-here", ADMIN_TOKEN).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = app
        .request(Method::PUT, "/v1/sites", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, 405);
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

async fn a_site_key_reaches_nothing_of_another_site(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    let site_a = app.create_site().await;
    let site_b = app.create_site().await;
    let webhook_b = app.subscribe(&site_b, &receiver.url).await;
    let media_b = app.submit_text(&site_b, "b's").await;
    let deliveries = app
        .wait_for_log(&site_b, &webhook_b, "", |data| data.len() == 1)
        .await;
    let delivery_b = deliveries[0]["id"].as_str().unwrap();

    let b = &site_b.id;
    let w = &webhook_b.id;
    for path in [
        format!("/v1/sites/{b}"),
        format!("/v1/sites/{b}/webhooks"),
        format!("/v1/sites/{b}/webhooks/{w}"),
        format!("/v1/sites/{b}/webhooks/{w}/secret"),
        format!("/v1/sites/{b}/webhooks/{w}/deliveries"),
        format!("/v1/sites/{b}/webhooks/{w}/deliveries/{delivery_b}"),
        format!("/v1/media/{media_b}"),
    ] {
        let (status, body) = app.get(&path, &site_a.key).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    // B's webhook under A's site id is unknown too.
    let (status, _) = app
        .get(
            &format!("/v1/sites/{}/webhooks/{w}", site_a.id),
            &site_a.key,
        )
        .await;
    assert_eq!(status, 404);
    for (path, body) in [
        (
            format!("/v1/sites/{b}/webhooks"),
            json!({"url": receiver.url, "events": ["media.created"]}),
        ),
        (format!("/v1/sites/{b}/webhooks/{w}/test"), json!({})),
        (
            format!("/v1/sites/{b}/webhooks/{w}/deliveries/{delivery_b}/retry"),
            json!({}),
        ),
        (
            format!("/v1/media/{media_b}/review"),
            json!({"status": "approved"}),
        ),
    ] {
        let (status, answer) = app.post(&path, &site_a.key, body).await;
        assert_eq!(status, 404, "{path}: {answer}");
    }
    let (status, _) = app
        .patch(
            &format!("/v1/sites/{b}/webhooks/{w}"),
            &site_a.key,
            json!({"active": false}),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .delete(&format!("/v1/sites/{b}/webhooks/{w}"), &site_a.key)
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .post(
            "/v1/get-media-status",
            &site_a.key,
            json!({"media_id": media_b}),
        )
        .await;
    assert_eq!(status, 404);
    // A site lists only itself.
    let (_, list) = app.get("/v1/sites", &site_a.key).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["id"], site_a.id.as_str());
    // Nothing of B changed.
    let (_, webhook) = app
        .get(&format!("/v1/sites/{b}/webhooks/{w}"), &site_b.key)
        .await;
    assert_eq!(webhook["active"], true);
    let (_, media) = app.get(&format!("/v1/media/{media_b}"), &site_b.key).await;
    assert_eq!(media["status"], "pending");
}

async fn webhook_secrets_are_generated_or_checked_and_never_listed(backend: Backend) {
    let app = spawn_app(backend).await;
    let site = app.create_site().await;
    let generated = app
        .create_webhook(
            &site,
            json!({"url": "https://example.com/hook", "events": ["media.created"]}),
        )
        .await;
    assert!(generated.secret.starts_with("whsec_"));
    assert_eq!(
        pixelpatrol_webhooks::standard_webhooks_key(&generated.secret).len(),
        32
    );

    let chosen = app
        .create_webhook(
            &site,
            json!({"url": "https://example.com/other", "events": ["media.moderated"], "secret": "your-webhook-secret-key"}),
        )
        .await;
    assert_eq!(chosen.secret, "your-webhook-secret-key");

    let (_, list) = app
        .get(&format!("/v1/sites/{}/webhooks", site.id), &site.key)
        .await;
    let list_text = list.to_string();
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    assert!(
        !list_text.contains(&generated.secret) && !list_text.contains("your-webhook-secret-key")
    );
    let (_, one) = app
        .get(
            &format!("/v1/sites/{}/webhooks/{}", site.id, generated.id),
            &site.key,
        )
        .await;
    assert!(one.get("secret").is_none());
    let (status, secret) = app
        .get(
            &format!("/v1/sites/{}/webhooks/{}/secret", site.id, generated.id),
            &site.key,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(secret["secret"], generated.secret.as_str());

    for (secret, why) in [
        ("short", "too short"),
        ("x".repeat(257).as_str(), "too long"),
        ("tab\tinside-this-secret", "control character"),
    ] {
        let (status, body) = app
            .post(
                &format!("/v1/sites/{}/webhooks", site.id),
                &site.key,
                json!({"url": "https://example.com/hook", "events": ["media.created"], "secret": secret}),
            )
            .await;
        assert_eq!(status, 400, "{why}");
        assert_eq!(field(&body), "secret", "{why}");
    }
    // Rotation through PATCH.
    let (status, _) = app
        .patch(
            &format!("/v1/sites/{}/webhooks/{}", site.id, generated.id),
            &site.key,
            json!({"secret": "a-brand-new-secret-value"}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, secret) = app
        .get(
            &format!("/v1/sites/{}/webhooks/{}/secret", site.id, generated.id),
            &site.key,
        )
        .await;
    assert_eq!(secret["secret"], "a-brand-new-secret-value");
    // The admin may manage a site's endpoints too.
    let (status, _) = app
        .get(
            &format!("/v1/sites/{}/webhooks/{}/secret", site.id, generated.id),
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .delete(
            &format!("/v1/sites/{}/webhooks/{}", site.id, generated.id),
            &site.key,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = app
        .get(
            &format!("/v1/sites/{}/webhooks/{}", site.id, generated.id),
            &site.key,
        )
        .await;
    assert_eq!(status, 404);
}

async fn webhook_endpoints_are_validated_field_by_field(backend: Backend) {
    let app = spawn_app_with(backend, |config| config.dev = false).await;
    let site = app.create_site().await;
    let path = format!("/v1/sites/{}/webhooks", site.id);
    for (body, expected_field) in [
        (json!({"events": ["media.created"]}), "url"),
        (
            json!({"url": "not a url", "events": ["media.created"]}),
            "url",
        ),
        (
            json!({"url": "http://example.com/hook", "events": ["media.created"]}),
            "url",
        ),
        (
            json!({"url": "ftp://example.com/hook", "events": ["media.created"]}),
            "url",
        ),
        (
            json!({"url": "https://user:pw@example.com/hook", "events": ["media.created"]}),
            "url",
        ),
        (json!({"url": "https://example.com/hook"}), "events"),
        (
            json!({"url": "https://example.com/hook", "events": []}),
            "events",
        ),
        (
            json!({"url": "https://example.com/hook", "events": ["media.created", "media.deleted"]}),
            "events[1]",
        ),
        (
            json!({"url": "https://example.com/hook", "events": "media.created"}),
            "events",
        ),
        (
            json!({"url": "https://example.com/hook", "events": ["media.created"], "active": "yes"}),
            "active",
        ),
        (
            json!({"url": "https://example.com/hook", "events": ["media.created"], "strict_ordering": 1}),
            "strict_ordering",
        ),
    ] {
        let (status, answer) = app.post(&path, &site.key, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_field", "{body}");
        assert_eq!(field(&answer), expected_field, "{body}: {answer}");
        assert!(!answer["error"]["message"].as_str().unwrap().is_empty());
    }
    // Nothing was half-written.
    let (_, list) = app.get(&path, &site.key).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);

    // A good one, then a bad PATCH that changes nothing.
    let webhook = app
        .create_webhook(&site, json!({"url": "https://example.com/hook", "events": ["media.created", "media.created"]}))
        .await;
    let (_, created) = app.get(&format!("{path}/{}", webhook.id), &site.key).await;
    assert_eq!(
        created["events"],
        json!(["media.created"]),
        "duplicates collapse"
    );
    assert_eq!(created["active"], true);
    assert_eq!(created["strict_ordering"], false);
    let (status, answer) = app
        .patch(
            &format!("{path}/{}", webhook.id),
            &site.key,
            json!({"description": "new", "events": ["nope"]}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(field(&answer), "events[0]");
    let (_, after) = app.get(&format!("{path}/{}", webhook.id), &site.key).await;
    assert_eq!(after["description"], Value::Null);
    let (status, unknown) = app.get(&format!("{path}/wh_unknown"), &site.key).await;
    assert_eq!(status, 404, "{unknown}");
}

async fn media_is_submitted_with_a_header_key_or_a_body_api_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let site = app.create_site().await;
    // As the product's documented API: api_key in the body, no header.
    let (status, body) = app
        .request(
            Method::POST,
            "/v1/submit-media",
            None,
            Some(json!({"api_key": site.key, "content_url": "https://cdn.example.com/cat.jpg", "app_media_id": "42"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "pending");
    assert!(body["message"].as_str().is_some());
    let media_id = body["id"].as_str().unwrap().to_string();

    let (status, media) = app
        .request(
            Method::POST,
            "/v1/get-media-status",
            None,
            Some(json!({"api_key": site.key, "media_id": media_id})),
        )
        .await;
    assert_eq!(status, 200, "{media}");
    assert_eq!(media["id"], media_id.as_str());
    assert_eq!(media["status"], "pending");
    assert_eq!(media["content_type"], "image");
    assert_eq!(media["app_media_id"], "42");

    let (_, video) = app
        .post(
            "/v1/submit-media",
            &site.key,
            json!({"content_url": "https://cdn.example.com/clip.MP4"}),
        )
        .await;
    let (_, video) = app
        .get(
            &format!("/v1/media/{}", video["id"].as_str().unwrap()),
            &site.key,
        )
        .await;
    assert_eq!(video["content_type"], "video");

    // The admin can read any media item but cannot submit as a site.
    let (status, _) = app.get(&format!("/v1/media/{media_id}"), ADMIN_TOKEN).await;
    assert_eq!(status, 200);
    let (status, body) = app
        .post("/v1/submit-media", ADMIN_TOKEN, json!({"body": "x"}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(field(&body), "api_key");
    let (status, _) = app.get("/v1/media/media_unknown", &site.key).await;
    assert_eq!(status, 404);
}

async fn bad_media_submissions_name_the_field_and_write_nothing(backend: Backend) {
    let receiver = Receiver::start().await;
    let app = spawn_app(backend).await;
    let site = app.create_site().await;
    let webhook = app.subscribe(&site, &receiver.url).await;
    for (body, expected) in [
        (json!({}), "body"),
        (json!({"body": "   "}), "body"),
        (json!({"body": 5}), "body"),
        (json!({"content_url": "not a url"}), "content_url"),
        (json!({"content_url": "file:///etc/passwd"}), "content_url"),
        (json!({"body": "x", "metadata": [1, 2]}), "metadata"),
        (
            json!({"body": "x", "app_media_id": "y".repeat(300)}),
            "app_media_id",
        ),
        (json!({"body": "x".repeat(100_001)}), "body"),
        (json!({"body": "nul \u{0000} inside"}), "body"),
        (
            json!({"body": "x", "app_media_id": "a\u{0000}b"}),
            "app_media_id",
        ),
    ] {
        let (status, answer) = app.post("/v1/submit-media", &site.key, body.clone()).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(field(&answer), expected, "{answer}");
    }
    // No event was emitted for any of them.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(receiver.count(), 0);
    assert_eq!(
        app.deliveries(&site, &webhook, "").await["data"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

async fn malformed_and_oversize_bodies_are_refused(backend: Backend) {
    let app = spawn_app_with(backend, |config| config.max_body_bytes = 4096).await;
    let site = app.create_site().await;
    let url = format!("{}/v1/submit-media", app.address);
    let send = |body: String, content_type: &'static str| {
        app.http
            .post(&url)
            .bearer_auth(&site.key)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let answer = send("{\"body\": ".into(), "application/json")
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let body: Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "malformed_json");
    assert!(body["error"].get("field").is_some());

    let answer = send(
        format!("{{\"body\": \"{}\"}}", "x".repeat(5000)),
        "application/json",
    )
    .await
    .unwrap();
    assert_eq!(answer.status(), 413);
    let body: Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");

    let answer = send("body=x".into(), "application/x-www-form-urlencoded")
        .await
        .unwrap();
    assert_eq!(answer.status(), 415);
    let body: Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "unsupported_media_type");
}

async fn the_delivery_log_filters_and_pages(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    let site = app.create_site().await;
    let webhook = app.subscribe(&site, &receiver.url).await;
    let mut media_ids = Vec::new();
    for item in 0..7 {
        media_ids.push(app.submit_text(&site, &format!("item {item}")).await);
    }
    app.review(&site, &media_ids[0], "approved").await;
    app.wait_for_log(&site, &webhook, "limit=100", |data| {
        data.len() == 8 && data.iter().all(|d| d["status"] == "succeeded")
    })
    .await;

    // Newest first, in pages of three.
    let mut seen = Vec::new();
    let mut query = "limit=3".to_string();
    loop {
        let page = app.deliveries(&site, &webhook, &query).await;
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 3);
        seen.extend(data.iter().map(|d| d["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 8);
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 8);
    let first = app.deliveries(&site, &webhook, "limit=1").await;
    assert_eq!(first["data"][0]["event"], "media.moderated", "newest first");

    let moderated = app
        .deliveries(&site, &webhook, "event=media.moderated")
        .await;
    assert_eq!(moderated["data"].as_array().unwrap().len(), 1);
    let succeeded = app
        .deliveries(&site, &webhook, "status=succeeded&limit=100")
        .await;
    assert_eq!(succeeded["data"].as_array().unwrap().len(), 8);
    let failed = app.deliveries(&site, &webhook, "status=failed").await;
    assert_eq!(failed["data"].as_array().unwrap().len(), 0);
    let future = app
        .deliveries(&site, &webhook, "since=2999-01-01T00:00:00Z")
        .await;
    assert_eq!(future["data"].as_array().unwrap().len(), 0);
    let past = app
        .deliveries(&site, &webhook, "since=2000-01-01T00:00:00Z&limit=100")
        .await;
    assert_eq!(past["data"].as_array().unwrap().len(), 8);

    for (query, expected) in [
        ("status=dead", "status"),
        ("event=media.deleted", "event"),
        ("since=yesterday", "since"),
        ("limit=0", "limit"),
        ("limit=1000", "limit"),
        ("cursor=abc", "cursor"),
        ("colour=blue", "colour"),
    ] {
        let (status, body) = app
            .get(
                &format!(
                    "/v1/sites/{}/webhooks/{}/deliveries?{query}",
                    site.id, webhook.id
                ),
                &site.key,
            )
            .await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(field(&body), expected, "{query}");
    }
    let (status, _) = app
        .get(
            &format!(
                "/v1/sites/{}/webhooks/{}/deliveries/dlv_unknown",
                site.id, webhook.id
            ),
            &site.key,
        )
        .await;
    assert_eq!(status, 404);
}

async fn reviews_take_only_known_statuses(backend: Backend) {
    let app = spawn_app(backend).await;
    let site = app.create_site().await;
    let media_id = app.submit_text(&site, "x").await;
    let path = format!("/v1/media/{media_id}/review");
    for body in [
        json!({"status": "deleted"}),
        json!({}),
        json!({"status": "approved", "note": 3}),
    ] {
        let (status, answer) = app.post(&path, &site.key, body.clone()).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(
            field(&answer),
            if body.get("note").is_some() {
                "note"
            } else {
                "status"
            }
        );
    }
    let (_, media) = app.get(&format!("/v1/media/{media_id}"), &site.key).await;
    assert_eq!(media["status"], "pending");
    let (status, media) = app
        .post(
            &path,
            &site.key,
            json!({"status": "flagged", "note": "needs a second look"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(media["status"], "flagged");
    assert_eq!(media["review_note"], "needs a second look");
    assert_eq!(media["decided_by"], "person");
    assert!(media["moderated_at"].as_str().is_some());
    let (status, _) = app
        .post(
            "/v1/media/media_unknown/review",
            &site.key,
            json!({"status": "approved"}),
        )
        .await;
    assert_eq!(status, 404);
}

async fn the_admin_token_is_generated_once_when_not_configured(backend: Backend) {
    let db = std::sync::Arc::new(crate::common::TestDb::create(backend).await);
    let store = pixelpatrol::store::connect(&db.url, 2).await.unwrap();
    let (hash, token) = pixelpatrol::api::auth::admin_token_hash(&store, None)
        .await
        .unwrap();
    let token = token.expect("a fresh token on first start");
    assert_eq!(hash, pixelpatrol::util::sha256_hex(&token));
    assert_ne!(hash, token, "only the hash is kept");
    let (again, second) = pixelpatrol::api::auth::admin_token_hash(&store, None)
        .await
        .unwrap();
    assert_eq!(again, hash);
    assert!(second.is_none(), "shown only once");

    // The generated token works against a server on that database.
    let app = crate::common::spawn_app_on(db, |config| config.admin_token = None).await;
    let (status, _) = app.get("/v1/sites", &token).await;
    assert_eq!(status, 200);
    let (status, _) = app.get("/v1/sites", ADMIN_TOKEN).await;
    assert_eq!(status, 401);
}

async fn the_apis_changes_are_audited_with_the_credential_that_made_them(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    let site = app.create_site().await;
    let webhook = app.subscribe(&site, &receiver.url).await;
    let (status, _) = app
        .patch(
            &format!("/v1/sites/{}", site.id),
            ADMIN_TOKEN,
            json!({"name": "Renamed forum"}),
        )
        .await;
    assert_eq!(status, 200);
    let groups = format!("/v1/sites/{}/rule-groups", site.id);
    let (status, group) = app
        .post(&groups, &site.key, json!({"name": "Extra", "rules": []}))
        .await;
    assert_eq!(status, 201, "{group}");
    let group_path = format!("{groups}/{}", group["id"].as_str().unwrap());
    let (status, _) = app.delete(&group_path, &site.key).await;
    assert_eq!(status, 204);
    let media_id = app.submit_text(&site, "hello").await;
    app.review(&site, &media_id, "approved").await;
    // A refused review changes nothing and logs nothing.
    let (status, _) = app
        .post(
            &format!("/v1/media/{media_id}/review"),
            &site.key,
            json!({"status": "deleted"}),
        )
        .await;
    assert_eq!(status, 400);
    let log = app
        .wait_for_log(&site, &webhook, "limit=10", |data| {
            data.len() == 2 && data.iter().all(|d| d["status"] == "succeeded")
        })
        .await;
    let delivery_id = log[0]["id"].as_str().unwrap().to_string();
    let webhook_path = format!("/v1/sites/{}/webhooks/{}", site.id, webhook.id);
    let (status, _) = app
        .post(
            &format!("{webhook_path}/deliveries/{delivery_id}/retry"),
            &site.key,
            json!({}),
        )
        .await;
    assert_eq!(status, 202);
    let (status, secret) = app.get(&format!("{webhook_path}/secret"), &site.key).await;
    assert_eq!(status, 200);
    assert_eq!(secret["secret"].as_str(), Some(webhook.secret.as_str()));
    let (status, _) = app
        .post(
            &format!("{webhook_path}/recover"),
            &site.key,
            json!({"since": "2000-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 200);

    let entries = app
        .store()
        .await
        .list_audit(&site.id.as_str().into(), None, 20)
        .await
        .unwrap();
    let actions: Vec<&str> = entries.iter().map(|entry| entry.action.as_str()).collect();
    assert_eq!(
        actions,
        // The recovery found nothing dead: no change, no entry.
        [
            "secret.revealed",
            "delivery.retried",
            "media.reviewed",
            "rule_group.deleted",
            "rule_group.created",
            "site.updated",
            "endpoint.created",
            "site.created"
        ]
    );
    for entry in &entries {
        assert!(entry.actor.is_none(), "a key names no person");
        let via = if entry.action.starts_with("site.") {
            "API, admin token"
        } else {
            "API, site key"
        };
        assert_eq!(entry.detail["via"], via, "{}", entry.action);
    }
    assert_eq!(entries[0].target.as_deref(), Some(webhook.id.as_str()));
    assert_eq!(entries[1].target.as_deref(), Some(delivery_id.as_str()));
    assert_eq!(entries[2].detail["status"], "approved");
    assert_eq!(entries[2].detail["was"], "pending");
    assert_eq!(entries[4].detail["name"], "Extra");
    assert_eq!(entries[5].detail["name"], "Renamed forum");
    assert_ne!(entries[5].detail["before"]["name"], "Renamed forum");
}
