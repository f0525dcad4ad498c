//! The dashboard: in a real browser (Debian's chromium, driven by
//! `tests/browser/dashboard.mjs`) against a real server on a fresh
//! database, and over plain HTTP for what a browser would not do (forms
//! without their CSRF token, sign-in back-off, roles).

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

use crate::common::{ADMIN_TOKEN, Backend, Receiver, TestApp, spawn_app};
use pixelpatrol::model::{AuditEntry, Role};

both_backends!(
    a_person_signs_in_creates_a_site_and_signs_out_in_a_real_browser,
    a_form_without_its_csrf_token_is_refused_and_changes_nothing,
    repeated_wrong_passwords_back_off_and_name_no_account,
    each_role_sees_only_what_it_may_on_its_own_sites,
);

const PASSWORD: &str = "correct horse battery staple";

async fn operator(app: &TestApp, email: &str) {
    let created = pixelpatrol::people::create_account(&app.store().await, email, PASSWORD, true)
        .await
        .unwrap();
    assert!(created.is_ok(), "{created:?}");
}

/// A client that does not follow redirects (so they can be checked).
fn browserless() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of cookie `name` set by `response`.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| {
            let (pair, _) = value.split_once(';').unwrap_or((value, ""));
            let (key, value) = pair.split_once('=')?;
            (key == name && !value.is_empty()).then(|| value.to_string())
        })
}

/// The hidden CSRF field of a page.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[at..].split('"').next().unwrap().to_string()
}

/// Signs in over HTTP as a browser would; returns the session cookie and
/// the session's CSRF token.
async fn sign_in(app: &TestApp, email: &str, password: &str) -> Result<(String, String), String> {
    let http = browserless();
    let form = http
        .get(format!("{}/sign-in", app.address))
        .send()
        .await
        .unwrap();
    let form_cookie = set_cookie(&form, "pixelpatrol_sign_in").expect("the sign-in cookie");
    let form_csrf = csrf_of(&form.text().await.unwrap());
    let response = http
        .post(format!("{}/sign-in", app.address))
        .header(COOKIE, format!("pixelpatrol_sign_in={form_cookie}"))
        .form(&[
            ("csrf", form_csrf.as_str()),
            ("email", email),
            ("password", password),
            ("next", "/sites"),
        ])
        .send()
        .await
        .unwrap();
    if response.status() != StatusCode::SEE_OTHER {
        return Err(response.text().await.unwrap());
    }
    let session = set_cookie(&response, "pixelpatrol_session").expect("a session cookie");
    let cookie = format!("pixelpatrol_session={session}");
    let page = http
        .get(format!("{}/sites", app.address))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csrf = csrf_of(&page.text().await.unwrap());
    Ok((cookie, csrf))
}

async fn a_person_signs_in_creates_a_site_and_signs_out_in_a_real_browser(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    operator(&app, "operator@example.com").await;
    let browser_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("dashboard-screenshots")
        .join(format!("{backend:?}").to_lowercase());
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("node")
            .arg(browser_dir.join("dashboard.mjs"))
            .current_dir(&browser_dir)
            .env("BASE_URL", &app.address)
            .env("EMAIL", "operator@example.com")
            .env("PASSWORD", PASSWORD)
            .env("SCREENSHOTS", &shots)
            .env("RECEIVER_URL", &receiver.url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser test finished in time")
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the browser test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let learned: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a result line")).unwrap();

    // The key shown once in the page works against the API, for that site.
    let site_key = learned["site_key"].as_str().unwrap();
    let (status, sites) = app.get("/v1/sites", site_key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sites["data"][0]["name"], "Acme Forum");
    assert_eq!(sites["data"][0]["url"], "https://forum.example.com/");
    assert_eq!(sites["data"][0]["id"], learned["site_id"]);
    // Only its hash was kept.
    let stored = app
        .store()
        .await
        .get_site(&learned["site_id"].as_str().unwrap().into())
        .await
        .unwrap()
        .unwrap();
    assert_ne!(stored.key_hash, site_key);
    // The test webhook reached the receiver, signed with the secret the
    // form generated (an off-the-shelf Standard Webhooks library agrees).
    let tests = receiver.wait_for_count(1).await;
    assert_eq!(tests[0].event(), "test.webhook");
    let secret = learned["secret"].as_str().unwrap();
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(&tests[0].body, &tests[0].headers)
        .unwrap();
    // The endpoint as the API sees it: what the form said.
    let endpoint_path = format!(
        "/v1/sites/{}/webhooks/{}",
        learned["site_id"].as_str().unwrap(),
        learned["endpoint_id"].as_str().unwrap()
    );
    let (status, endpoint) = app.get(&endpoint_path, site_key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        endpoint["events"],
        serde_json::json!(["media.created", "media.moderated", "test.webhook"])
    );
    assert_eq!(endpoint["description"], "The forum's moderation hook");
    assert_eq!(endpoint["active"], true);
    // Who did what, newest first, and never a secret.
    let log: Vec<AuditEntry> = app
        .store()
        .await
        .list_audit(&stored.id, None, 10)
        .await
        .unwrap();
    let actions: Vec<&str> = log.iter().map(|entry| entry.action.as_str()).collect();
    assert_eq!(
        actions,
        ["secret.revealed", "endpoint.created", "site.created"]
    );
    assert!(
        log.iter()
            .all(|entry| entry.actor.as_ref().unwrap().email == "operator@example.com")
    );
    assert!(!log[1].detail.to_string().contains(secret));
    for page in [
        "01-sign-in",
        "03-new-site-error",
        "04-site-created",
        "05-site",
        "06-add-endpoint",
        "07-test-webhook",
        "08-site-with-endpoint",
        "09-sites",
    ] {
        assert!(
            shots.join(format!("{page}.png")).exists(),
            "screenshot {page}"
        );
    }
}

async fn a_form_without_its_csrf_token_is_refused_and_changes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    operator(&app, "operator@example.com").await;
    let (cookie, csrf) = sign_in(&app, "operator@example.com", PASSWORD)
        .await
        .unwrap();
    let http = browserless();
    let post = |csrf: Option<&str>| {
        let mut form = vec![("name", "Sneaky site")];
        if let Some(csrf) = csrf {
            form.push(("csrf", csrf));
        }
        http.post(format!("{}/sites", app.address))
            .header(COOKIE, &cookie)
            .form(&form)
            .send()
    };
    for forged in [None, Some("not-the-token"), Some("")] {
        let response = post(forged).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{forged:?}");
        assert!(response.text().await.unwrap().contains("Not allowed"));
    }
    let (_, sites) = app.get("/v1/sites", ADMIN_TOKEN).await;
    assert_eq!(
        sites["data"].as_array().unwrap().len(),
        0,
        "nothing created"
    );
    // With the token it works.
    let response = post(Some(&csrf)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (_, sites) = app.get("/v1/sites", ADMIN_TOKEN).await;
    assert_eq!(sites["data"][0]["name"], "Sneaky site");

    // Sign-out is a form too; after it the session is dead on the server.
    let refused = http
        .post(format!("{}/sign-out", app.address))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let signed_out = http
        .post(format!("{}/sign-out", app.address))
        .header(COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status(), StatusCode::SEE_OTHER);
    let after = http
        .get(format!("{}/sites", app.address))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::SEE_OTHER);
    assert_eq!(after.headers()[LOCATION], "/sign-in?next=%2Fsites");

    // The sign-in form checks its own token against its cookie.
    let response = http
        .post(format!("{}/sign-in", app.address))
        .form(&[("email", "operator@example.com"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

async fn repeated_wrong_passwords_back_off_and_name_no_account(backend: Backend) {
    let app = spawn_app(backend).await;
    operator(&app, "operator@example.com").await;
    for _ in 0..4 {
        let refused = sign_in(&app, "operator@example.com", "wrong password!")
            .await
            .unwrap_err();
        assert!(refused.contains("Wrong email or password."), "{refused}");
    }
    // An unknown email gets the very same answer.
    let unknown = sign_in(&app, "nobody@example.com", "wrong password!")
        .await
        .unwrap_err();
    assert!(unknown.contains("Wrong email or password."));
    // The fifth failure in a row for the account starts the back-off…
    let fifth = sign_in(&app, "operator@example.com", "wrong password!")
        .await
        .unwrap_err();
    assert!(fifth.contains("Too many failed attempts"), "{fifth}");
    // …which holds even for the right password until it has passed.
    let blocked = sign_in(&app, "operator@example.com", PASSWORD)
        .await
        .unwrap_err();
    assert!(blocked.contains("Try again in"), "{blocked}");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    sign_in(&app, "operator@example.com", PASSWORD)
        .await
        .unwrap();
}

async fn each_role_sees_only_what_it_may_on_its_own_sites(backend: Backend) {
    let app = spawn_app(backend).await;
    let alpha = app.create_site().await;
    let beta = app.create_site().await;
    let store = app.store().await;
    let mut people = Vec::new();
    for (email, role) in [
        ("owner@example.com", Role::Owner),
        ("dev@example.com", Role::Developer),
        ("mod@example.com", Role::Moderator),
    ] {
        let user = pixelpatrol::people::create_account(&store, email, PASSWORD, false)
            .await
            .unwrap()
            .unwrap();
        let audit = AuditEntry {
            id: pixelpatrol::model::AuditId::generate(),
            site_id: Some(alpha.id.as_str().into()),
            actor: None,
            action: "member.added".into(),
            target: Some(user.id.to_string()),
            detail: serde_json::json!({}),
            created_at: pixelpatrol::model::Timestamp::now(),
        };
        store
            .set_member(
                &alpha.id.as_str().into(),
                &user.id,
                role,
                audit.created_at,
                &audit,
            )
            .await
            .unwrap();
        people.push((email, role));
    }
    app.create_webhook(
        &alpha,
        serde_json::json!({"url": "http://127.0.0.1:9/hook", "events": ["media.created"]}),
    )
    .await;
    let http = browserless();
    for (email, role) in people {
        let (cookie, csrf) = sign_in(&app, email, PASSWORD).await.unwrap();
        let get = |path: String| {
            http.get(format!("{}{path}", app.address))
                .header(COOKIE, &cookie)
                .send()
        };
        // Their site: listed, and its page shows webhooks only to those who manage them.
        let list = get("/sites".into()).await.unwrap().text().await.unwrap();
        assert!(
            list.contains(&format!("/sites/{}", alpha.id)),
            "{email} sees their site"
        );
        assert!(
            !list.contains(&format!("/sites/{}", beta.id)),
            "{email} does not see another"
        );
        assert!(!list.contains("New site"), "only operators create sites");
        let page = get(format!("/sites/{}", alpha.id)).await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let page = page.text().await.unwrap();
        assert_eq!(
            page.contains("http://127.0.0.1:9/hook"),
            role.can_manage_webhooks(),
            "{email} ({role}) and the webhooks"
        );
        // Another site is not found, not forbidden: its existence is not told.
        let other = get(format!("/sites/{}", beta.id)).await.unwrap();
        assert_eq!(other.status(), StatusCode::NOT_FOUND, "{email}");
        // Creating sites is for operators: a 403 page.
        let create = http
            .post(format!("{}/sites", app.address))
            .header(COOKIE, &cookie)
            .form(&[("csrf", csrf.as_str()), ("name", "Mine")])
            .send()
            .await
            .unwrap();
        assert_eq!(create.status(), StatusCode::FORBIDDEN, "{email}");
    }
    let (_, sites) = app.get("/v1/sites", ADMIN_TOKEN).await;
    assert_eq!(
        sites["data"].as_array().unwrap().len(),
        2,
        "no site was created"
    );
}
