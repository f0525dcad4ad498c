//! The dashboard: in a real browser (Debian's chromium, driven by
//! `tests/browser/dashboard.mjs`) against a real server on a fresh
//! database, and over plain HTTP for what a browser would not do (forms
//! without their CSRF token, sign-in back-off, roles).

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

use crate::common::{ADMIN_TOKEN, Backend, Receiver, Reply, TestApp, spawn_app, spawn_app_with};
use pixelpatrol::model::{AuditEntry, Role};

both_backends!(
    a_person_signs_in_creates_a_site_and_signs_out_in_a_real_browser,
    a_form_without_its_csrf_token_is_refused_and_changes_nothing,
    repeated_wrong_passwords_back_off_and_name_no_account,
    each_role_sees_only_what_it_may_on_its_own_sites,
    the_first_operator_chooses_a_password_through_a_setup_link_printed_once,
    a_site_keeps_an_owner_and_a_revoked_invitation_does_not_work,
    a_disabled_endpoint_is_re_enabled_from_its_page,
    an_endpoint_is_edited_with_the_api_checks_and_keeps_its_secret_unless_given,
    the_queue_shows_images_through_the_servers_own_small_preview,
    owners_edit_their_site_and_only_operators_delete_one,
    sign_in_returns_only_to_this_server_and_no_page_reaches_the_operators_own_site,
    outside_dev_cookies_are_host_only_and_a_session_ends_at_its_lifetime,
    a_moderator_overturns_an_automatic_decision_or_has_it_analysed_again,
);

const PASSWORD: &str = "correct horse battery staple";

async fn operator(app: &TestApp, email: &str) {
    let created = pixelpatrol::people::create_account(&app.store().await, email, PASSWORD, true)
        .await
        .unwrap();
    assert!(created.is_ok(), "{created:?}");
}

/// A new account (`PASSWORD`) holding `role` on the site.
async fn member(
    store: &pixelpatrol::store::DynStore,
    site_id: &pixelpatrol::model::SiteId,
    email: &str,
    role: Role,
) -> pixelpatrol::model::User {
    let user = pixelpatrol::people::create_account(store, email, PASSWORD, false)
        .await
        .unwrap()
        .unwrap();
    let audit = AuditEntry {
        id: pixelpatrol::model::AuditId::generate(),
        site_id: Some(site_id.clone()),
        actor: None,
        action: "member.added".into(),
        target: Some(user.id.to_string()),
        detail: serde_json::json!({}),
        created_at: pixelpatrol::model::Timestamp::now(),
    };
    store
        .set_member(site_id, &user.id, role, audit.created_at, &audit)
        .await
        .unwrap();
    user
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
    sign_in_with_cookies(app, email, password, "").await
}

/// [`sign_in`] with cookie names starting with `prefix` (`__Host-` outside
/// `--dev`).
async fn sign_in_with_cookies(
    app: &TestApp,
    email: &str,
    password: &str,
    prefix: &str,
) -> Result<(String, String), String> {
    let http = browserless();
    let form = http
        .get(format!("{}/sign-in", app.address))
        .send()
        .await
        .unwrap();
    let form_cookie =
        set_cookie(&form, &format!("{prefix}pixelpatrol_sign_in")).expect("the sign-in cookie");
    let form_csrf = csrf_of(&form.text().await.unwrap());
    let response = http
        .post(format!("{}/sign-in", app.address))
        .header(COOKIE, format!("{prefix}pixelpatrol_sign_in={form_cookie}"))
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
    let session =
        set_cookie(&response, &format!("{prefix}pixelpatrol_session")).expect("a session cookie");
    let cookie = format!("{prefix}pixelpatrol_session={session}");
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
    // Automatic moderation on: the submitted item is flagged by the rules.
    let app = spawn_app_with(backend, |config| {
        config.auto_moderation = true;
        config.analyzer_timeout = Duration::from_secs(5);
        // A failed attempt waits an hour: the page shows the retry to come.
        config.retry_schedule = "0ms,1h".parse().unwrap();
    })
    .await;
    // The first delivery of the item `flaky-1` fails: the log shows it.
    let flaky_seen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let receiver = Receiver::scripted(move |request, _| {
        let flaky =
            request.json["data"]["app_media_id"] == "flaky-1" && request.event() == "media.created";
        if flaky && !flaky_seen.swap(true, std::sync::atomic::Ordering::SeqCst) {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    })
    .await;
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
    // The request the delivery page showed is what a receiver verifies: its
    // headers and raw body pass an off-the-shelf Standard Webhooks check.
    let secret = learned["secret"].as_str().unwrap();
    let mut shown = reqwest::header::HeaderMap::new();
    for line in learned["sent_headers"].as_str().unwrap().lines().skip(1) {
        let (name, value) = line.split_once(": ").expect("a header line");
        shown.insert(
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let shown_body = learned["sent_body"].as_str().unwrap();
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(shown_body.as_bytes(), &shown)
        .unwrap();
    assert!(
        receiver
            .requests()
            .iter()
            .any(|request| request.body == shown_body.as_bytes()),
        "the body shown is the body sent, byte for byte"
    );
    // The test webhook reached the receiver, signed with the secret the
    // form generated (an off-the-shelf Standard Webhooks library agrees).
    let tests = receiver.wait_for_count(1).await;
    assert_eq!(tests[0].event(), "test.webhook");
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
        [
            "media.reviewed",
            "invitation.accepted",
            "invitation.accepted",
            "member.invited",
            "member.invited",
            "delivery.retried",
            "secret.revealed",
            "endpoint.created",
            "site.created"
        ]
    );
    let actors: Vec<&str> = log
        .iter()
        .map(|entry| entry.actor.as_ref().unwrap().email.as_str())
        .collect();
    assert_eq!(
        &actors[..3],
        ["mod@example.com", "mod@example.com", "dev@example.com"]
    );
    assert!(
        actors[3..]
            .iter()
            .all(|email| *email == "operator@example.com")
    );
    // The moderator's decision reached the receiver at once, naming them.
    let media_id = learned["media_id"].as_str().unwrap();
    let approved = |request: &crate::common::Received| {
        request.event() == "media.moderated"
            && request.media_id() == media_id
            && request.json["data"]["status"] == "approved"
    };
    let received = receiver
        .wait_until("the person's decision", |requests| {
            requests.iter().any(approved)
        })
        .await;
    let decision = received.iter().find(|request| approved(request)).unwrap();
    assert_eq!(decision.media_id(), media_id);
    assert_eq!(decision.json["data"]["decided_by"], "person");
    assert_eq!(
        decision.json["data"]["reviewer"]["email"],
        "mod@example.com"
    );
    assert_eq!(decision.json["data"]["note"], "Reached out to the user");
    assert_eq!(decision.json["data"]["app_media_id"], "post-42");
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(&decision.body, &decision.headers)
        .unwrap();
    // Before it, in the item's lane: created, then flagged by the rules.
    let lane: Vec<(&str, &str)> = received
        .iter()
        .filter(|request| request.media_id() == media_id)
        .map(|request| {
            (
                request.event(),
                request.json["data"]["status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        lane,
        [
            ("media.created", "pending"),
            ("media.moderated", "flagged"),
            ("media.moderated", "approved")
        ]
    );
    let (_, media) = app.get(&format!("/v1/media/{media_id}"), site_key).await;
    assert_eq!(media["reviewer"]["email"], "mod@example.com");
    assert!(
        !log.iter()
            .any(|entry| entry.detail.to_string().contains(secret))
    );
    // The two people hold the roles they were invited with, and only those.
    let members: Vec<(String, Role)> = app
        .store()
        .await
        .list_members(&stored.id)
        .await
        .unwrap()
        .into_iter()
        .map(|member| (member.email, member.role))
        .collect();
    assert_eq!(
        members,
        [
            ("dev@example.com".to_string(), Role::Developer),
            ("mod@example.com".to_string(), Role::Moderator)
        ]
    );
    for page in [
        "01-sign-in",
        "03-new-site-error",
        "04-site-created",
        "05-site",
        "06-add-endpoint",
        "07-test-webhook",
        "08-delivery-log",
        "09-delivery",
        "10-endpoint-health",
        "11-site-with-endpoint",
        "12-members-invited",
        "13-developer-site",
        "14-moderator-site",
        "15-moderation-queue",
        "16-moderator-forbidden",
        "17-audit-log",
        "18-sites",
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

    // Pages cannot be framed by another site, load only this server's
    // files, and are not cached.
    let page = http
        .get(format!("{}/sign-in", app.address))
        .send()
        .await
        .unwrap();
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    assert_eq!(page.headers()["cache-control"], "no-store");

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
        member(&store, &alpha.id.as_str().into(), email, role).await;
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
        // The audit log is the owners'.
        let audit = get(format!("/sites/{}/audit", alpha.id)).await.unwrap();
        let expected = if role == Role::Owner {
            StatusCode::OK
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(audit.status(), expected, "{email} and the audit log");
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

/// Accepts an invitation link as a newcomer would: the form, then a password
/// of their own. Returns the answer to the submission.
async fn accept_as_newcomer(link: &str, password: &str) -> reqwest::Response {
    let http = browserless();
    let form = http.get(link).send().await.unwrap();
    assert_eq!(form.status(), StatusCode::OK, "the invitation page");
    let form_cookie = set_cookie(&form, "pixelpatrol_sign_in").expect("the form cookie");
    let csrf = csrf_of(&form.text().await.unwrap());
    http.post(link)
        .header(COOKIE, format!("pixelpatrol_sign_in={form_cookie}"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("password", password),
            ("password_again", password),
        ])
        .send()
        .await
        .unwrap()
}

async fn the_first_operator_chooses_a_password_through_a_setup_link_printed_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_pixelpatrol"))
        .args([
            "users",
            "create",
            "--email",
            "First@Example.com",
            "--admin",
            "--setup-link",
        ])
        .env("PIXELPATROL_DATABASE_URL", &app.db.url)
        .env("PIXELPATROL_PUBLIC_URL", &app.address)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let link = stdout
        .split_whitespace()
        .find(|word| word.starts_with(&format!("{}/invitations/", app.address)))
        .expect("a setup link")
        .to_string();
    // No account until the link is used; a short password is refused.
    let store = app.store().await;
    assert!(
        store
            .user_by_email("first@example.com")
            .await
            .unwrap()
            .is_none()
    );
    let short = accept_as_newcomer(&link, "short").await;
    assert_eq!(short.status(), StatusCode::OK);
    assert!(
        short
            .text()
            .await
            .unwrap()
            .contains("at least 12 characters")
    );
    let accepted = accept_as_newcomer(&link, PASSWORD).await;
    assert_eq!(accepted.status(), StatusCode::SEE_OTHER);
    let operator = store
        .user_by_email("first@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(operator.is_admin);
    // Signed in by accepting, and able to sign in again.
    let session = set_cookie(&accepted, "pixelpatrol_session").expect("signed in");
    let sites = browserless()
        .get(format!("{}/sites", app.address))
        .header(COOKIE, format!("pixelpatrol_session={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(sites.status(), StatusCode::OK);
    assert!(sites.text().await.unwrap().contains("New site"));
    sign_in(&app, "first@example.com", PASSWORD).await.unwrap();
    // The link worked once.
    let again = browserless().get(&link).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    assert!(again.text().await.unwrap().contains("does not work"));
}

async fn a_site_keeps_an_owner_and_a_revoked_invitation_does_not_work(backend: Backend) {
    let app = spawn_app(backend).await;
    operator(&app, "operator@example.com").await;
    let site = app.create_site().await;
    let (cookie, csrf) = sign_in(&app, "operator@example.com", PASSWORD)
        .await
        .unwrap();
    let http = browserless();
    let post = |path: String, form: Vec<(&'static str, String)>| {
        let mut form = form;
        form.push(("csrf", csrf.clone()));
        http.post(format!("{}{path}", app.address))
            .header(COOKIE, &cookie)
            .form(&form)
            .send()
    };
    let invite = |email: &'static str, role: &'static str| {
        post(
            format!("/sites/{}/invitations", site.id),
            vec![("email", email.to_string()), ("role", role.to_string())],
        )
    };
    // A bad email or role: the form again, the error next to the field.
    let bad = invite("not an email", "owner").await.unwrap();
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        bad.text()
            .await
            .unwrap()
            .contains("that is not an email address")
    );
    let bad = invite("x@example.com", "admin").await.unwrap();
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // An owner joins through a link.
    let page = invite("owner@example.com", "owner")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let link = page
        .split('>')
        .find_map(|part| {
            part.split('<')
                .next()
                .filter(|text| text.contains("/invitations/ppi_"))
        })
        .expect("the link in the page")
        .to_string();
    assert_eq!(
        accept_as_newcomer(&link, PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
    let store = app.store().await;
    let owner = store
        .user_by_email("owner@example.com")
        .await
        .unwrap()
        .unwrap();
    let site_id = site.id.as_str().into();
    assert_eq!(
        store.member_role(&site_id, &owner.id).await.unwrap(),
        Some(Role::Owner)
    );

    // The only owner can be neither demoted nor removed…
    let demote = post(
        format!("/sites/{}/members/{}/role", site.id, owner.id),
        vec![("role", "developer".into())],
    )
    .await
    .unwrap();
    assert_eq!(demote.status(), StatusCode::BAD_REQUEST);
    assert!(demote.text().await.unwrap().contains("at least one owner"));
    let remove = post(
        format!("/sites/{}/members/{}/remove", site.id, owner.id),
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(remove.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        store.member_role(&site_id, &owner.id).await.unwrap(),
        Some(Role::Owner)
    );

    // …and a revoked invitation is refused, telling nothing more.
    let page = invite("late@example.com", "moderator")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let late_link = page
        .split('>')
        .find_map(|part| {
            part.split('<')
                .next()
                .filter(|text| text.contains("/invitations/ppi_"))
        })
        .unwrap()
        .to_string();
    let pending = store
        .pending_invitations(Some(&site_id), pixelpatrol::model::Timestamp::now())
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    let revoked = post(
        format!("/sites/{}/invitations/{}/revoke", site.id, pending[0].id),
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(revoked.status(), StatusCode::SEE_OTHER);
    let refused = browserless().get(&late_link).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    assert!(
        store
            .user_by_email("late@example.com")
            .await
            .unwrap()
            .is_none()
    );
    // A second owner: now the first may step down.
    member(&store, &site_id, "second@example.com", Role::Owner).await;
    let demote = post(
        format!("/sites/{}/members/{}/role", site.id, owner.id),
        vec![("role", "developer".into())],
    )
    .await
    .unwrap();
    assert_eq!(demote.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        store.member_role(&site_id, &owner.id).await.unwrap(),
        Some(Role::Developer)
    );
    let actions: Vec<String> = store
        .list_audit(&site_id, None, 20)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.action)
        .collect();
    assert!(actions.contains(&"member.role_changed".to_string()));
    assert!(actions.contains(&"invitation.revoked".to_string()));
}

async fn a_disabled_endpoint_is_re_enabled_from_its_page(backend: Backend) {
    let app = spawn_app(backend).await;
    operator(&app, "operator@example.com").await;
    let site = app.create_site().await;
    let webhook = app
        .create_webhook(
            &site,
            serde_json::json!({"url": "http://127.0.0.1:9/hook", "events": ["media.created"]}),
        )
        .await;
    let path = format!("/v1/sites/{}/webhooks/{}", site.id, webhook.id);
    let (status, _) = app
        .patch(&path, &site.key, serde_json::json!({"active": false}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (cookie, csrf) = sign_in(&app, "operator@example.com", PASSWORD)
        .await
        .unwrap();
    let http = browserless();
    let page_path = format!("{}/sites/{}/webhooks/{}", app.address, site.id, webhook.id);
    let page = http
        .get(&page_path)
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Re-enable"),
        "a disabled endpoint offers to re-enable it"
    );
    assert!(page.contains("Attempts per hour over the last 24 hours: 0 in all, 0 failed"));
    let enabled = http
        .post(format!("{page_path}/enable"))
        .header(COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(enabled.status(), StatusCode::SEE_OTHER);
    let (_, endpoint) = app.get(&path, &site.key).await;
    assert_eq!(endpoint["active"], true);
    let page = http
        .get(&page_path)
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("Re-enable"));
    let log = app
        .store()
        .await
        .list_audit(&site.id.as_str().into(), None, 5)
        .await
        .unwrap();
    assert_eq!(log[0].action, "endpoint.enabled");
    // The API's changes are in the log too, with the credential that made them.
    let actions: Vec<&str> = log.iter().map(|entry| entry.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "endpoint.enabled",
            "endpoint.updated",
            "endpoint.created",
            "site.created"
        ]
    );
    assert_eq!(log[1].detail["via"], "API, site key");
    assert_eq!(log[1].detail["active"], false);
    assert!(log[1].actor.is_none());
    assert_eq!(log[2].detail["via"], "API, site key");
}

async fn an_endpoint_is_edited_with_the_api_checks_and_keeps_its_secret_unless_given(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    operator(&app, "operator@example.com").await;
    let site = app.create_site().await;
    let webhook = app
        .create_webhook(
            &site,
            serde_json::json!({"url": "http://127.0.0.1:9/hook", "events": ["media.created", "media.moderated"]}),
        )
        .await;
    let (cookie, csrf) = sign_in(&app, "operator@example.com", PASSWORD)
        .await
        .unwrap();
    let http = browserless();
    let edit_path = format!(
        "{}/sites/{}/webhooks/{}/edit",
        app.address, site.id, webhook.id
    );
    let form = http
        .get(&edit_path)
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(form.contains("Leave empty to keep the current secret"));
    assert!(form.contains("http://127.0.0.1:9/hook"));
    let post = |fields: Vec<(&'static str, &'static str)>| {
        let mut fields = fields;
        fields.push(("csrf", csrf.as_str()));
        http.post(&edit_path)
            .header(COOKIE, &cookie)
            .form(&fields)
            .send()
    };
    // A bad URL: refused next to the field, nothing changed.
    let refused = post(vec![
        ("url", "ftp://x.example.com/h"),
        ("events", "media.created"),
    ])
    .await
    .unwrap();
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.text().await.unwrap().contains("field-error"));
    // No event at all: refused too.
    let refused = post(vec![("url", "http://127.0.0.1:9/other")])
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // A real edit: one event, strict, a description, switched off; the
    // secret field empty, so the secret stays.
    let saved = post(vec![
        ("url", "http://127.0.0.1:9/other"),
        ("events", "media.moderated"),
        ("strict_ordering", "on"),
        ("description", "Edited"),
        ("secret", ""),
    ])
    .await
    .unwrap();
    assert_eq!(saved.status(), StatusCode::SEE_OTHER);
    let path = format!("/v1/sites/{}/webhooks/{}", site.id, webhook.id);
    let (_, endpoint) = app.get(&path, &site.key).await;
    assert_eq!(endpoint["url"], "http://127.0.0.1:9/other");
    assert_eq!(endpoint["events"], serde_json::json!(["media.moderated"]));
    assert_eq!(endpoint["strict_ordering"], true);
    assert_eq!(endpoint["description"], "Edited");
    assert_eq!(endpoint["active"], false);
    let (_, secret) = app.get(&format!("{path}/secret"), &site.key).await;
    assert_eq!(secret["secret"], webhook.secret.as_str(), "the secret kept");
    let log = app
        .store()
        .await
        .list_audit(&site.id.as_str().into(), None, 5)
        .await
        .unwrap();
    // The API's read of the secret just now is logged too.
    assert_eq!(log[0].action, "secret.revealed");
    assert_eq!(log[0].detail["via"], "API, site key");
    assert_eq!(log[1].action, "endpoint.updated");
    assert_eq!(log[1].detail["secret_changed"], false);
}

async fn the_queue_shows_images_through_the_servers_own_small_preview(backend: Backend) {
    let app = spawn_app(backend).await;
    operator(&app, "operator@example.com").await;
    let site = app.create_site().await;
    let image = std::fs::read(format!(
        "{}/tests/fixtures/nsfw/gradient-640x480.png",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let host = crate::common::serve_files(vec![("/cat.png", "image/png", image)]).await;
    let image_url = format!("{host}/cat.png");
    let (status, submitted) = app
        .post(
            "/v1/submit-media",
            &site.key,
            serde_json::json!({"content_url": image_url}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let media_id = submitted["id"].as_str().unwrap();
    let (cookie, _) = sign_in(&app, "operator@example.com", PASSWORD)
        .await
        .unwrap();
    let http = browserless();
    let queue = http
        .get(format!(
            "{}/sites/{}/moderation?status=pending",
            app.address, site.id
        ))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let preview = format!("/sites/{}/moderation/{media_id}/thumbnail", site.id);
    assert!(
        queue.contains(&preview),
        "the item's preview is the server's"
    );
    assert!(
        !queue.contains(&image_url),
        "the page holds no third-party URL"
    );
    let thumbnail = http
        .get(format!("{}{preview}", app.address))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(thumbnail.status(), StatusCode::OK);
    assert_eq!(thumbnail.headers()["content-type"], "image/png");
    let png = thumbnail.bytes().await.unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (320, 240), "scaled to fit 320 pixels");
    // Signed out, or another site's item: nothing.
    let anonymous = http
        .get(format!("{}{preview}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
    let other = app.create_site().await;
    let wrong_site = http
        .get(format!(
            "{}/sites/{}/moderation/{media_id}/thumbnail",
            app.address, other.id
        ))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_site.status(), StatusCode::NOT_FOUND);
}

async fn owners_edit_their_site_and_only_operators_delete_one(backend: Backend) {
    let app = spawn_app(backend).await;
    operator(&app, "operator@example.com").await;
    let site = app.create_site().await;
    let store = app.store().await;
    let site_id: pixelpatrol::model::SiteId = site.id.as_str().into();
    for (email, role) in [
        ("owner@example.com", Role::Owner),
        ("dev@example.com", Role::Developer),
    ] {
        member(&store, &site_id, email, role).await;
    }
    let http = browserless();
    let post =
        |cookie: String, csrf: String, path: String, fields: Vec<(&'static str, &'static str)>| {
            let mut fields: Vec<(&str, String)> = fields
                .into_iter()
                .map(|(k, v)| (k, v.to_string()))
                .collect();
            fields.push(("csrf", csrf));
            http.post(format!("{}{path}", app.address))
                .header(COOKIE, cookie)
                .form(&fields)
                .send()
        };
    let edit = format!("/sites/{}/edit", site.id);
    let delete = format!("/sites/{}/delete", site.id);
    // A developer may not change the site.
    let (cookie, csrf) = sign_in(&app, "dev@example.com", PASSWORD).await.unwrap();
    let refused = post(cookie, csrf, edit.clone(), vec![("name", "Nope")])
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    // An owner may, with the API's checks; but may not delete it.
    let (cookie, csrf) = sign_in(&app, "owner@example.com", PASSWORD).await.unwrap();
    let bad = post(
        cookie.clone(),
        csrf.clone(),
        edit.clone(),
        vec![("name", "x"), ("url", "ftp://x.example.com")],
    )
    .await
    .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    for threshold in ["1.5", "0", "much"] {
        let bad = post(
            cookie.clone(),
            csrf.clone(),
            edit.clone(),
            vec![("name", "Renamed"), ("confidence_threshold", threshold)],
        )
        .await
        .unwrap();
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST, "{threshold}");
    }
    let saved = post(
        cookie.clone(),
        csrf.clone(),
        edit.clone(),
        vec![
            ("name", "Renamed"),
            ("url", "https://renamed.example.com"),
            ("description", "New words"),
            ("confidence_threshold", "0.6"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(saved.status(), StatusCode::SEE_OTHER);
    let (_, shown) = app
        .get(&format!("/v1/sites/{}", site.id), ADMIN_TOKEN)
        .await;
    assert_eq!(shown["name"], "Renamed");
    assert_eq!(shown["url"], "https://renamed.example.com/");
    assert_eq!(shown["description"], "New words");
    assert_eq!(shown["confidence_threshold"], 0.6);
    let refused = post(cookie, csrf, delete.clone(), vec![("confirm", "yes")])
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    // An operator deletes it, once they confirm.
    let (cookie, csrf) = sign_in(&app, "operator@example.com", PASSWORD)
        .await
        .unwrap();
    let unconfirmed = post(cookie.clone(), csrf.clone(), delete.clone(), vec![])
        .await
        .unwrap();
    assert_eq!(unconfirmed.status(), StatusCode::BAD_REQUEST);
    let deleted = post(cookie, csrf, delete, vec![("confirm", "yes")])
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::SEE_OTHER);
    let (status, _) = app
        .get(&format!("/v1/sites/{}", site.id), ADMIN_TOKEN)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn sign_in_returns_only_to_this_server_and_no_page_reaches_the_operators_own_site(
    backend: Backend,
) {
    let app = spawn_app_with(backend, |config| {
        config.alert_webhook_url = Some("http://127.0.0.1:9/alerts".into());
        config.alert_webhook_secret = Some("alert-secret-0123456789abcdef".into());
    })
    .await;
    operator(&app, "operator@example.com").await;
    let http = browserless();
    for (next, expected) in [
        ("/sites?x=1", "/sites?x=1"),
        ("//evil.example.com", "/sites"),
        ("/\tevil", "/sites"),
        ("/\t/evil.example.com", "/sites"),
        ("/\n/evil.example.com", "/sites"),
        ("https://evil.example.com", "/sites"),
        ("/\\evil.example.com", "/sites"),
    ] {
        let form = http
            .get(format!("{}/sign-in", app.address))
            .send()
            .await
            .unwrap();
        let form_cookie = set_cookie(&form, "pixelpatrol_sign_in").unwrap();
        let csrf = csrf_of(&form.text().await.unwrap());
        let response = http
            .post(format!("{}/sign-in", app.address))
            .header(COOKIE, format!("pixelpatrol_sign_in={form_cookie}"))
            .form(&[
                ("csrf", csrf.as_str()),
                ("email", "operator@example.com"),
                ("password", PASSWORD),
                ("next", next),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{next:?}");
        assert_eq!(response.headers()[LOCATION], expected, "{next:?}");
    }
    // The operator's own site holds the alert endpoint the server manages:
    // not a page of it is reachable, even for an operator.
    let (cookie, csrf) = sign_in(&app, "operator@example.com", PASSWORD)
        .await
        .unwrap();
    for path in [
        "/sites/site_operator",
        "/sites/site_operator/webhooks/wh_operator_alerts",
        "/sites/site_operator/webhooks/wh_operator_alerts/deliveries",
        "/sites/site_operator/moderation",
        "/sites/site_operator/audit",
    ] {
        let page = http
            .get(format!("{}{path}", app.address))
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let rotate = http
        .post(format!(
            "{}/sites/site_operator/webhooks/wh_operator_alerts/rotate",
            app.address
        ))
        .header(COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(rotate.status(), StatusCode::NOT_FOUND);
    let invite = http
        .post(format!("{}/sites/site_operator/invitations", app.address))
        .header(COOKIE, &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("email", "x@example.com"),
            ("role", "owner"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(invite.status(), StatusCode::NOT_FOUND);
}

async fn outside_dev_cookies_are_host_only_and_a_session_ends_at_its_lifetime(backend: Backend) {
    let app = spawn_app_with(backend, |config| {
        config.dev = false;
        config.session_lifetime = Duration::from_secs(2);
    })
    .await;
    operator(&app, "operator@example.com").await;
    let http = browserless();
    let form = http
        .get(format!("{}/sign-in", app.address))
        .send()
        .await
        .unwrap();
    let cookies: Vec<String> = form
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|value| value.to_str().unwrap().to_string())
        .collect();
    assert!(
        cookies
            .iter()
            .any(|cookie| cookie.starts_with("__Host-pixelpatrol_sign_in=")
                && cookie.contains("; Secure")
                && cookie.contains("Path=/")
                && !cookie.contains("Domain")),
        "{cookies:?}"
    );
    let form_cookie = set_cookie(&form, "__Host-pixelpatrol_sign_in").unwrap();
    let csrf = csrf_of(&form.text().await.unwrap());
    let bare_named = http
        .post(format!("{}/sign-in", app.address))
        .header(COOKIE, format!("pixelpatrol_sign_in={form_cookie}"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("email", "operator@example.com"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        bare_named.status(),
        StatusCode::FORBIDDEN,
        "a cookie without the prefix is not the sign-in form's"
    );

    let (cookie, _) = sign_in_with_cookies(&app, "operator@example.com", PASSWORD, "__Host-")
        .await
        .expect("signed in with __Host- cookies");
    let bare = cookie.replacen("__Host-", "", 1);
    let page = |cookie: String| {
        http.get(format!("{}/sites", app.address))
            .header(COOKIE, cookie)
            .send()
    };
    assert_eq!(
        page(bare).await.unwrap().status(),
        StatusCode::SEE_OTHER,
        "a session cookie without the prefix signs nobody in"
    );
    assert_eq!(page(cookie.clone()).await.unwrap().status(), StatusCode::OK);
    // Two seconds after sign-in the session is over, used or not.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let after = page(cookie).await.unwrap();
    assert_eq!(after.status(), StatusCode::SEE_OTHER);
    assert!(
        after.headers()[LOCATION]
            .to_str()
            .unwrap()
            .starts_with("/sign-in")
    );
}

async fn a_moderator_overturns_an_automatic_decision_or_has_it_analysed_again(backend: Backend) {
    let app = spawn_app_with(backend, |config| config.auto_moderation = true).await;
    let site = app.create_site().await;
    let store = app.store().await;
    let site_id: pixelpatrol::model::SiteId = site.id.as_str().into();
    member(&store, &site_id, "mod@example.com", Role::Moderator).await;
    let media_id = app.submit_text(&site, "What a lovely afternoon").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, media) = app.get(&format!("/v1/media/{media_id}"), &site.key).await;
        if media["status"] == "approved" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never decided: {media}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (cookie, csrf) = sign_in(&app, "mod@example.com", PASSWORD).await.unwrap();
    let http = browserless();
    let approved = http
        .get(format!(
            "{}/sites/{}/moderation?status=approved",
            app.address, site.id
        ))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(approved.contains("What a lovely afternoon"));
    assert!(approved.contains(">Reject<") && !approved.contains(">Approve<"));
    assert!(approved.contains(">Analyse again<"));

    let item = format!("{}/sites/{}/moderation/{media_id}", app.address, site.id);
    let again = http
        .post(format!("{item}/remoderate"))
        .header(COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str()), ("back", "approved")])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::SEE_OTHER);
    let overturned = http
        .post(format!("{item}/review"))
        .header(COOKIE, &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("decision", "rejected"),
            ("note", "sarcasm"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(overturned.status(), StatusCode::SEE_OTHER);
    let (_, media) = app.get(&format!("/v1/media/{media_id}"), &site.key).await;
    assert_eq!(media["status"], "rejected");
    assert_eq!(media["decided_by"], "person");
    // A person's decision stands: it is not analysed again.
    let refused = http
        .post(format!("{item}/remoderate"))
        .header(COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(refused.text().await.unwrap().contains("decision stands"));
    let actions: Vec<String> = store
        .list_audit(&site_id, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.action)
        .collect();
    assert_eq!(
        &actions[..2],
        ["media.reviewed", "media.remoderated"],
        "the refused request left no entry"
    );
}
