//! The `pixelpatrol` binary as an operator runs it: killed mid-load it loses
//! nothing, and SIGTERM stops it cleanly.

mod common;

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::{ADMIN_TOKEN, Backend, Receiver, Reply, TestApp, TestDb};
use pixelpatrol_webhooks::{Verifier, WebhookHeaders};
use tokio::process::{Child, Command};

both_backends!(
    a_server_killed_mid_load_delivers_every_event_after_restart,
    sigterm_stops_the_server_cleanly,
);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_server(database_url: &str, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_pixelpatrol"))
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
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("starting the pixelpatrol binary")
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
