//! The `pixelpatrol` binary as an operator runs it: killed mid-load it loses
//! nothing, and SIGTERM stops it cleanly.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{ADMIN_TOKEN, Backend, Receiver, Reply, TestApp, TestDb};
use pixelpatrol_webhooks::{Verifier, WebhookHeaders};
use tokio::io::AsyncWriteExt as _;
use tokio::process::{Child, Command};

both_backends!(
    a_server_killed_mid_load_delivers_every_event_after_restart,
    a_server_killed_during_analysis_decides_exactly_once_after_restart,
    sigterm_stops_the_server_cleanly,
    users_create_makes_an_operator_with_the_password_from_stdin_once,
);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_server(database_url: &str, port: u16) -> Child {
    start_server_with(database_url, port, &[])
}

/// Starts the binary; `settings` (environment) override the defaults here.
fn start_server_with(database_url: &str, port: u16, settings: &[(&str, &str)]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pixelpatrol"));
    command
        .arg("serve")
        .env("PIXELPATROL_DATABASE_URL", database_url)
        .env("PIXELPATROL_LISTEN", format!("127.0.0.1:{port}"))
        .env("PIXELPATROL_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("PIXELPATROL_DEV", "true")
        .env("PIXELPATROL_DELIVERY_TIMEOUT", "1s")
        .env("PIXELPATROL_ENDPOINT_CONCURRENCY", "4")
        .env("PIXELPATROL_RETRY_SCHEDULE", "0ms,50ms,100ms,200ms")
        .env("PIXELPATROL_POLL_INTERVAL", "50ms")
        .env("PIXELPATROL_DB_MAX_CONNECTIONS", "4")
        .env("PIXELPATROL_AUTO_MODERATION", "false")
        .env("PIXELPATROL_MODEL_INSTALL", "false")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (name, value) in settings {
        command.env(name, value);
    }
    command.spawn().expect("starting the pixelpatrol binary")
}

async fn a_server_killed_during_analysis_decides_exactly_once_after_restart(backend: Backend) {
    let db = Arc::new(TestDb::create(backend).await);
    let receiver = Receiver::start().await;
    // The first analysis never answers: the server dies waiting for it.
    let analyzer = Receiver::scripted(|_, number| {
        let reply =
            Reply::json(serde_json::json!({"labels": [{"name": "custom", "confidence": 0.3}]}));
        if number == 0 {
            reply.after(Duration::from_secs(60))
        } else {
            reply
        }
    })
    .await;
    let model_dir = crate::common::model_dir();
    let settings = [
        ("PIXELPATROL_AUTO_MODERATION", "true"),
        ("PIXELPATROL_ANALYZER_TIMEOUT", "2s"),
        ("PIXELPATROL_EXTERNAL_ANALYZER_URL", analyzer.url.as_str()),
        (
            "PIXELPATROL_EXTERNAL_ANALYZER_SECRET",
            "analyzer-secret-0123456789",
        ),
        ("PIXELPATROL_MODEL_DIR", model_dir.to_str().unwrap()),
    ];
    let port = free_port();
    let mut server = start_server_with(&db.url, port, &settings);
    let app = TestApp::attach(format!("http://127.0.0.1:{port}"), db.clone());
    app.wait_until_healthy().await;
    let site = app.create_site().await;
    app.subscribe(&site, &receiver.url).await;
    let media_id = app.submit_text(&site, "hello, world").await;
    analyzer.wait_for_count(1).await;
    server.kill().await.unwrap();
    assert!(
        receiver
            .requests()
            .iter()
            .all(|request| request.event() != "media.moderated"),
        "decided before the kill"
    );

    let port = free_port();
    let _restarted = start_server_with(&db.url, port, &settings);
    let app = TestApp::attach(format!("http://127.0.0.1:{port}"), db.clone());
    app.wait_until_healthy().await;
    receiver
        .wait_until("media.moderated", |requests| {
            requests
                .iter()
                .any(|request| request.event() == "media.moderated")
        })
        .await;
    // Time for a second decision, were there one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let decisions: HashSet<String> = receiver
        .requests()
        .iter()
        .filter(|request| request.event() == "media.moderated")
        .map(|request| request.event_id().to_string())
        .collect();
    assert_eq!(decisions.len(), 1, "decided exactly once");
    assert_eq!(analyzer.count(), 2, "analysed again after the crash, once");
    let (_, media) = app.get(&format!("/v1/media/{media_id}"), &site.key).await;
    assert_eq!(media["status"], "approved", "{media}");
    assert_eq!(media["decided_by"], "automatic");
    assert_eq!(media["ai_results"]["labels"][0]["name"], "custom");
}

async fn a_server_killed_mid_load_delivers_every_event_after_restart(backend: Backend) {
    let db = Arc::new(TestDb::create(backend).await);
    // Slow enough that deliveries are in flight when the process dies.
    let receiver = Receiver::scripted(|_, _| Reply::ok().after(Duration::from_millis(40))).await;

    let port = free_port();
    let mut server = start_server(&db.url, port);
    let app = TestApp::attach(format!("http://127.0.0.1:{port}"), db.clone());
    app.wait_until_healthy().await;
    let site = app.create_site().await;
    let webhook = app.subscribe(&site, &receiver.url).await;

    let mut accepted = Vec::new();
    for item in 0..120 {
        accepted.push(app.submit_text(&site, &format!("item {item}")).await);
    }
    receiver.wait_for_count(20).await;
    server.kill().await.unwrap();
    let delivered_before = receiver.count();
    assert!(
        delivered_before < 120,
        "the kill came after everything was delivered"
    );

    let port = free_port();
    let _restarted = start_server(&db.url, port);
    let app = TestApp::attach(format!("http://127.0.0.1:{port}"), db.clone());
    app.wait_until_healthy().await;
    for item in 0..30 {
        accepted.push(app.submit_text(&site, &format!("after {item}")).await);
    }

    let expected: HashSet<&str> = accepted.iter().map(String::as_str).collect();
    let requests = receiver
        .wait_until("every accepted submission delivered", |requests| {
            let seen: HashSet<&str> = requests
                .iter()
                .filter(|r| r.status == 200 && r.answered.is_some())
                .map(|r| r.media_id())
                .collect();
            expected.iter().all(|id| seen.contains(id))
        })
        .await;
    let verifier = Verifier::new(&webhook.secret);
    for request in &requests {
        let headers = WebhookHeaders::from_fn(|name| request.header(name).map(str::to_string));
        verifier.verify(&headers, &request.body).unwrap();
    }
    // The log agrees: every delivery succeeded.
    app.wait_for_log(&site, &webhook, "limit=250", |data| {
        data.len() == 150 && data.iter().all(|d| d["status"] == "succeeded")
    })
    .await;
}

async fn sigterm_stops_the_server_cleanly(backend: Backend) {
    let db = Arc::new(TestDb::create(backend).await);
    let port = free_port();
    let mut server = start_server(&db.url, port);
    let app = TestApp::attach(format!("http://127.0.0.1:{port}"), db.clone());
    app.wait_until_healthy().await;
    let pid = server.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), server.wait())
        .await
        .expect("the server exits after SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

/// `pixelpatrol users create` with `password` on standard input.
async fn users_create(database_url: &str, email: &str, password: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pixelpatrol"))
        .args(["users", "create", "--email", email, "--admin"])
        .env("PIXELPATROL_DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting pixelpatrol users create");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{password}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    child.wait_with_output().await.unwrap()
}

async fn users_create_makes_an_operator_with_the_password_from_stdin_once(backend: Backend) {
    let db = TestDb::create(backend).await;
    let password = "a long passphrase with spaces";
    let output = users_create(&db.url, " Op@Example.com ", password).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("created operator op@example.com"),
        "{stdout}"
    );

    // Stored hashed (argon2id), as an operator, under the normalized email.
    let store = pixelpatrol::store::connect(&db.url, 2).await.unwrap();
    let user = store
        .user_by_email("op@example.com")
        .await
        .unwrap()
        .expect("the account");
    assert!(user.is_admin);
    assert!(user.password_hash.starts_with("$argon2id$"));
    assert!(!user.password_hash.contains(password));
    assert!(pixelpatrol::people::verify_password(password, &user.password_hash).await);
    assert!(
        !pixelpatrol::people::verify_password("a long passphrase with space", &user.password_hash)
            .await
    );

    // The same email again, or a short password: refused, saying why.
    let again = users_create(&db.url, "op@example.com", password).await;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("an account with that email exists"));
    let short = users_create(&db.url, "other@example.com", "short").await;
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 12 characters"));
    assert!(
        store
            .user_by_email("other@example.com")
            .await
            .unwrap()
            .is_none()
    );
}
