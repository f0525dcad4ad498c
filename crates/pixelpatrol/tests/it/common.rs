//! Test harness: a real server on 127.0.0.1 (port 0) with a fresh database
//! per test, on SQLite or PostgreSQL, and real HTTP receivers that record
//! every request and answer as each test scripts them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use pixelpatrol::Config;
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Connection as _;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Runs each named `async fn name(backend: Backend)` once per backend, as
/// `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            )*
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where the PostgreSQL tests create their databases. They fail (never skip)
/// when it cannot be reached.
pub fn postgres_admin_url() -> String {
    std::env::var("PIXELPATROL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

static CLEANED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// A new, empty database for one test. SQLite files live in a temporary
/// folder that is removed with the [`TestDb`]; PostgreSQL databases are named
/// `pp_test_<unix time>_<random>`, and those older than an hour (left by
/// earlier runs) are dropped.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn create(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary folder");
                let url = format!("sqlite://{}/pixelpatrol.db", dir.path().display());
                TestDb {
                    url,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let admin_url = postgres_admin_url();
                let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap_or_else(|error| {
                    panic!("PostgreSQL tests need a database at {admin_url} (set PIXELPATROL_TEST_DATABASE_URL): {error}")
                });
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                CLEANED
                    .get_or_init(|| async {
                        drop_stale_databases(&admin_url, now).await;
                    })
                    .await;
                let name = format!(
                    "pp_test_{now}_{}",
                    ulid::Ulid::new().to_string().to_lowercase()
                );
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .expect("CREATE DATABASE");
                let base = admin_url
                    .rsplit_once('/')
                    .map(|(base, _)| base.to_string())
                    .expect("database URL with a database name");
                TestDb {
                    url: format!("{base}/{name}"),
                    _dir: None,
                }
            }
        }
    }
}

impl TestDb {
    /// Runs SQL statements directly on the test database (to backdate rows
    /// or break things on purpose).
    pub async fn execute(&self, sql: &str) {
        if self.url.starts_with("sqlite:") {
            let mut connection = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut connection).await.unwrap();
        } else {
            let mut connection = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut connection).await.unwrap();
        }
    }

    /// The number one query answers (`SELECT COUNT(*) ...`), read directly
    /// from the test database: what the store's own reads would not show.
    pub async fn count(&self, sql: &str) -> i64 {
        if self.url.starts_with("sqlite:") {
            let mut connection = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(sql)
                .fetch_one(&mut connection)
                .await
                .unwrap()
        } else {
            let mut connection = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(sql)
                .fetch_one(&mut connection)
                .await
                .unwrap()
        }
    }

    /// The database's name (PostgreSQL).
    pub fn name(&self) -> &str {
        self.url.rsplit('/').next().unwrap_or_default()
    }
}

async fn drop_stale_databases(admin_url: &str, now: u64) {
    let Ok(mut admin) = sqlx::PgConnection::connect(admin_url).await else {
        return;
    };
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'pp_test_%'")
            .fetch_all(&mut admin)
            .await
            .unwrap_or_default();
    for name in names {
        let created: Option<u64> = name
            .strip_prefix("pp_test_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse().ok());
        if created.is_some_and(|created| created + 3600 < now) {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await;
        }
    }
}

/// The configuration tests start from: development mode (loopback
/// receivers), a millisecond retry schedule and quick polling.
pub fn test_config(database_url: &str) -> Config {
    let mut config = Config::defaults();
    config.database_url = database_url.to_string();
    config.admin_token = Some(ADMIN_TOKEN.into());
    config.dev = true;
    config.retry_schedule = "0ms,20ms,40ms,60ms,80ms".parse().unwrap();
    config.poll_interval = Duration::from_millis(20);
    config.delivery_timeout = Duration::from_secs(5);
    config.db_max_connections = 4;
    config.shutdown_grace = Duration::from_secs(5);
    // Delivery tests count events exactly; moderation tests turn automatic
    // moderation on. Tests never download: `scripts/test` installs the model.
    config.auto_moderation = false;
    config.model_install = false;
    config.model_dir = model_dir();
    config
}

/// The NSFW model's directory: the workspace's `models/`, where
/// `scripts/test` (and `pixelpatrol serve` run from the workspace) put it.
pub fn model_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

/// Serves fixed files over HTTP on 127.0.0.1: `(path, content type, bytes)`.
/// Returns the base URL.
pub async fn serve_files(files: Vec<(&'static str, &'static str, Vec<u8>)>) -> String {
    let mut router = axum::Router::new();
    for (path, content_type, bytes) in files {
        let bytes = Bytes::from(bytes);
        router = router.route(
            path,
            axum::routing::get(move || {
                let bytes = bytes.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, content_type)], bytes) }
            }),
        );
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}")
}

pub struct TestApp {
    pub address: String,
    pub http: reqwest::Client,
    pub db: Arc<TestDb>,
    shutdown: CancellationToken,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

#[derive(Debug, Clone)]
pub struct TestSite {
    pub id: String,
    pub key: String,
}

#[derive(Debug, Clone)]
pub struct TestWebhook {
    pub id: String,
    pub secret: String,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

pub async fn spawn_app_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let db = Arc::new(TestDb::create(backend).await);
    spawn_app_on(db, adjust).await
}

/// Starts a server on an existing database (e.g. to restart after a stop).
pub async fn spawn_app_on(db: Arc<TestDb>, adjust: impl FnOnce(&mut Config)) -> TestApp {
    // Server logs go to the test's captured output (shown when it fails);
    // RUST_LOG selects them, warnings by default.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    let mut config = test_config(&db.url);
    adjust(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(pixelpatrol::run(config, listener, shutdown.clone()));
    let app = TestApp {
        address,
        http: reqwest::Client::new(),
        db,
        shutdown,
        server: Some(server),
    };
    // `run` migrates before serving; wait until it answers.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if app.is_healthy().await {
            break;
        }
        if app.server.as_ref().unwrap().is_finished() {
            let mut app = app;
            let result = app.server.take().unwrap().await.unwrap();
            panic!("the server stopped during start-up: {result:?}");
        }
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app
}

impl TestApp {
    /// A client for a server that runs elsewhere (e.g. in a child process).
    pub fn attach(address: String, db: Arc<TestDb>) -> TestApp {
        TestApp {
            address,
            http: reqwest::Client::new(),
            db,
            shutdown: CancellationToken::new(),
            server: None,
        }
    }

    /// The server's database through the store (a connection of its own).
    pub async fn store(&self) -> pixelpatrol::store::DynStore {
        pixelpatrol::store::connect(&self.db.url, 2).await.unwrap()
    }

    async fn is_healthy(&self) -> bool {
        matches!(
            self.http.get(format!("{}/healthz", self.address)).send().await,
            Ok(response) if response.status().is_success()
        )
    }

    /// Waits until the server answers its health check.
    pub async fn wait_until_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.is_healthy().await {
                return;
            }
            assert!(Instant::now() < deadline, "the server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{}", self.address, path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("request to the server");
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("non-JSON answer: {text}"))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.request(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.request(Method::POST, path, Some(token), Some(body))
            .await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.request(Method::PATCH, path, Some(token), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.request(Method::DELETE, path, Some(token), None).await
    }

    pub async fn create_site(&self) -> TestSite {
        let (status, body) = self
            .post(
                "/v1/sites",
                ADMIN_TOKEN,
                json!({"name": "Test site", "url": "https://example.com", "description": "tests"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        TestSite {
            id: body["id"].as_str().unwrap().into(),
            key: body["site_key"].as_str().unwrap().into(),
        }
    }

    pub async fn create_webhook(&self, site: &TestSite, body: Value) -> TestWebhook {
        let (status, created) = self
            .post(&format!("/v1/sites/{}/webhooks", site.id), &site.key, body)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        TestWebhook {
            id: created["id"].as_str().unwrap().into(),
            secret: created["secret"].as_str().unwrap().into(),
        }
    }

    /// An endpoint at `url` subscribed to both media events.
    pub async fn subscribe(&self, site: &TestSite, url: &str) -> TestWebhook {
        self.create_webhook(
            site,
            json!({"url": url, "events": ["media.created", "media.moderated"]}),
        )
        .await
    }

    pub async fn submit_text(&self, site: &TestSite, text: &str) -> String {
        let (status, body) = self
            .post(
                "/v1/submit-media",
                &site.key,
                json!({"body": text, "app_media_id": "app-1", "metadata": {"user": 7}}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body["id"].as_str().unwrap().into()
    }

    pub async fn review(&self, site: &TestSite, media_id: &str, status: &str) {
        let (code, body) = self
            .post(
                &format!("/v1/media/{media_id}/review"),
                &site.key,
                json!({"status": status}),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{body}");
    }

    pub async fn deliveries(&self, site: &TestSite, webhook: &TestWebhook, query: &str) -> Value {
        let (status, body) = self
            .get(
                &format!(
                    "/v1/sites/{}/webhooks/{}/deliveries?{query}",
                    site.id, webhook.id
                ),
                &site.key,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Polls the delivery log until `done` holds for its first page.
    pub async fn wait_for_log(
        &self,
        site: &TestSite,
        webhook: &TestWebhook,
        query: &str,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let page = self.deliveries(site, webhook, query).await;
            let data = page["data"].as_array().unwrap().clone();
            if done(&data) {
                return data;
            }
            assert!(
                Instant::now() < deadline,
                "the delivery log never reached the expected state: {data:#?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Graceful stop, as on SIGTERM; returns what `run` returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.server.take().unwrap().await.unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// How a receiver answers one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub delay: Duration,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            delay: Duration::ZERO,
            headers: Vec::new(),
            body: "ok".into(),
        }
    }

    pub fn ok() -> Self {
        Reply::status(200)
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// 200 with a JSON body.
    pub fn json(value: Value) -> Self {
        let mut reply = Reply::ok().header("content-type", "application/json");
        reply.body = value.to_string();
        reply
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// One request as a receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub json: Value,
    pub status: u16,
    /// Ticks of one clock shared by arrivals and answers: a request whose
    /// `arrived` is smaller than another's `answered` overlapped it.
    pub arrived: u64,
    pub answered: Option<u64>,
}

impl Received {
    pub fn event(&self) -> &str {
        self.json["event"].as_str().unwrap_or_default()
    }

    pub fn event_id(&self) -> &str {
        self.json["id"].as_str().unwrap_or_default()
    }

    pub fn media_id(&self) -> &str {
        self.json["data"]["media_id"].as_str().unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

type Script = Box<dyn Fn(&Received, usize) -> Reply + Send + Sync>;

struct ReceiverState {
    requests: Mutex<Vec<Received>>,
    script: Script,
    clock: AtomicU64,
    changed: Notify,
}

/// A webhook receiver on 127.0.0.1 that records every request.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub address: SocketAddr,
    state: Arc<ReceiverState>,
}

impl Receiver {
    /// Answers every request with 200.
    pub async fn start() -> Receiver {
        Receiver::scripted(|_, _| Reply::ok()).await
    }

    /// Answers with the script's reply for (request, 0-based request number).
    pub async fn scripted(
        script: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static,
    ) -> Receiver {
        let state = Arc::new(ReceiverState {
            requests: Mutex::new(Vec::new()),
            script: Box::new(script),
            clock: AtomicU64::new(0),
            changed: Notify::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = axum::Router::new()
            .fallback(receive)
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Receiver {
            url: format!("http://{address}/hook"),
            address,
            state,
        }
    }

    pub fn requests(&self) -> Vec<Received> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    /// Waits (up to 60 s) until `done` holds for the requests so far.
    pub async fn wait_until(
        &self,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let notified = self.state.changed.notified();
            {
                let requests = self.state.requests.lock().unwrap();
                if done(&requests) {
                    return requests.clone();
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "receiver: timed out waiting for {what}; got {} requests",
                self.count()
            );
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), notified).await;
        }
    }

    pub async fn wait_for_count(&self, count: usize) -> Vec<Received> {
        self.wait_until(&format!("{count} requests"), |requests| {
            requests.len() >= count
        })
        .await
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut received = Received {
        headers,
        body,
        json,
        status: 0,
        arrived: state.clock.fetch_add(1, Ordering::SeqCst),
        answered: None,
    };
    let (index, reply) = {
        let mut requests = state.requests.lock().unwrap();
        let reply = (state.script)(&received, requests.len());
        received.status = reply.status;
        requests.push(received);
        (requests.len() - 1, reply)
    };
    state.changed.notify_waiters();
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    {
        let mut requests = state.requests.lock().unwrap();
        requests[index].answered = Some(state.clock.fetch_add(1, Ordering::SeqCst));
    }
    state.changed.notify_waiters();
    let mut response = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    for (name, value) in reply.headers {
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    response
}
