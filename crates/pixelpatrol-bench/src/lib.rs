//! The benchmark's machinery: a real `pixelpatrol serve` process (SQLite or
//! PostgreSQL), a separate receiver process, load through the public HTTP API
//! only, and the scenarios that measure what the README publishes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail, ensure};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::Connection as _;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";

/// The secret of endpoint `index`, known to both the benchmark and the
/// receiver, so the receiver can verify every request.
pub fn secret_for(index: u32) -> String {
    format!("bench-secret-{index:06}-pixelpatrol")
}

/// How the receiver answers one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Ok,
    /// 500 to everything.
    Fail,
    /// 503 to everything.
    Down,
    /// Never answers (until the server's timeout).
    Hang,
    /// 500 with this probability, else 200.
    Flaky(f64),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Control {
    pub default: Mode,
    pub modes: HashMap<u32, Mode>,
    /// Endpoints with strict ordering: one lane for all their events.
    pub strict: Vec<u32>,
    /// How long every answer is held, so that overlapping requests show.
    pub hold_ms: u64,
    pub check_order: bool,
}

impl Control {
    pub fn mode_of(&self, endpoint: u32) -> Mode {
        self.modes.get(&endpoint).copied().unwrap_or(self.default)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReceiverStats {
    pub requests: u64,
    /// Distinct (event, endpoint) pairs acknowledged with a 2xx.
    pub delivered: u64,
    /// 2xx answers for a pair acknowledged before.
    pub duplicates: u64,
    pub bad_signatures: u64,
    pub injected_failures: u64,
    pub order_violations: u64,
    pub violation_examples: Vec<String>,
    pub latency_count: u64,
    pub latency_p50_us: u64,
    pub latency_p90_us: u64,
    pub latency_p99_us: u64,
    pub latency_p999_us: u64,
    pub latency_max_us: u64,
    pub first_receipt_us: Option<u64>,
    pub last_receipt_us: Option<u64>,
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A fresh database for one run, removed afterwards.
pub struct Database {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl Database {
    pub async fn create(backend: Backend, postgres_admin_url: &str) -> anyhow::Result<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir()?;
                Ok(Database {
                    url: format!("sqlite://{}/bench.db", dir.path().display()),
                    _dir: Some(dir),
                    postgres: None,
                })
            }
            Backend::Postgres => {
                let mut admin = sqlx::PgConnection::connect(postgres_admin_url)
                    .await
                    .with_context(|| format!("connecting to {postgres_admin_url}"))?;
                let name = format!("pp_bench_{}", now_us());
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await?;
                let base = postgres_admin_url
                    .rsplit_once('/')
                    .map(|(base, _)| base.to_string())
                    .context("the PostgreSQL URL needs a database name")?;
                Ok(Database {
                    url: format!("{base}/{name}"),
                    _dir: None,
                    postgres: Some((postgres_admin_url.to_string(), name)),
                })
            }
        }
    }

    pub async fn drop_database(&self) {
        if let Some((admin_url, name)) = &self.postgres
            && let Ok(mut admin) = sqlx::PgConnection::connect(admin_url).await
        {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await;
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A `pixelpatrol serve` child process.
pub struct Server {
    child: Child,
    pub api: String,
}

impl Server {
    pub async fn start(
        binary: &Path,
        database_url: &str,
        extra: &[String],
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .args(["--dev", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", database_url])
            .args(["--admin-token", ADMIN_TOKEN])
            .args(extra)
            // Delivery scenarios measure delivery; the moderation scenario
            // turns analysis on with `--auto-moderation true`.
            .env("PIXELPATROL_AUTO_MODERATION", "false")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let server = Server {
            child,
            api: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = http.get(format!("{}/healthz", server.api)).send().await
                && response.status().is_success()
            {
                return Ok(server);
            }
            ensure!(Instant::now() < deadline, "the server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn proc_status(&self, field: &str) -> Option<u64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find(|line| line.starts_with(field))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// Peak resident memory so far, in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.proc_status("VmHWM:").unwrap_or(0) as f64 / 1024.0
    }

    pub fn rss_mib(&self) -> f64 {
        self.proc_status("VmRSS:").unwrap_or(0) as f64 / 1024.0
    }

    /// User + system CPU time so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let Some(pid) = self.child.id() else {
            return 0.0;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return 0.0;
        };
        // Fields after the command name (which may hold spaces) in parentheses.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = fields
            .get(11)
            .and_then(|u| u.parse::<u64>().ok())
            .unwrap_or(0)
            + fields
                .get(12)
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
        ticks as f64 / 100.0
    }

    /// SIGTERM, then wait for the graceful exit.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        match tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => self.child.kill().await?,
        }
        Ok(())
    }
}

/// The receiver child process.
pub struct ReceiverProcess {
    _child: Child,
    pub base: String,
    http: reqwest::Client,
}

impl ReceiverProcess {
    pub async fn start(binary: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new(binary)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut lines = BufReader::new(child.stdout.take().context("receiver stdout")?).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("the receiver did not start")??
            .context("the receiver exited")?;
        let port = line
            .strip_prefix("listening ")
            .context("unexpected receiver output")?;
        Ok(ReceiverProcess {
            _child: child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        })
    }

    pub fn url_for(&self, endpoint: u32) -> String {
        format!("{}/e/{endpoint}", self.base)
    }

    pub async fn control(&self, control: &Control) -> anyhow::Result<()> {
        let response = self
            .http
            .post(format!("{}/control", self.base))
            .body(serde_json::to_vec(control)?)
            .send()
            .await?;
        ensure!(response.status().is_success(), "receiver control failed");
        Ok(())
    }

    pub async fn reset(&self) -> anyhow::Result<()> {
        self.http
            .post(format!("{}/reset", self.base))
            .send()
            .await?;
        Ok(())
    }

    pub async fn stats(&self) -> anyhow::Result<ReceiverStats> {
        let text = self
            .http
            .get(format!("{}/stats", self.base))
            .send()
            .await?
            .text()
            .await?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Waits until `expected` deliveries arrived, or until nothing arrived
    /// for `stall`; returns the stats then (fewer means lost).
    pub async fn wait_delivered(
        &self,
        expected: u64,
        stall: Duration,
    ) -> anyhow::Result<ReceiverStats> {
        let mut last = 0;
        let mut last_change = Instant::now();
        loop {
            let stats = self.stats().await?;
            if stats.delivered >= expected {
                return Ok(stats);
            }
            if stats.delivered != last {
                last = stats.delivered;
                last_change = Instant::now();
            } else if last_change.elapsed() > stall {
                return Ok(stats);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The public API, as a site owner and the operator use it.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    http: reqwest::Client,
}

#[derive(Debug, Clone)]
pub struct Site {
    pub id: String,
    pub key: String,
}

impl Api {
    pub fn new(base: &str, concurrency: usize) -> Self {
        Api {
            base: base.to_string(),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(concurrency.max(1))
                .tcp_nodelay(true)
                .build()
                .expect("HTTP client"),
        }
    }

    async fn post(&self, path: &str, token: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .post(format!("{}{}", self.base, path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    pub async fn create_site(&self, name: &str) -> anyhow::Result<Site> {
        let (status, body) = self
            .post("/v1/sites", ADMIN_TOKEN, &json!({"name": name}))
            .await?;
        ensure!(status == 201, "creating a site: {status} {body}");
        Ok(Site {
            id: body["id"].as_str().unwrap_or_default().into(),
            key: body["site_key"].as_str().unwrap_or_default().into(),
        })
    }

    pub async fn create_endpoint(
        &self,
        site: &Site,
        url: &str,
        index: u32,
        events: &[&str],
        strict: bool,
    ) -> anyhow::Result<String> {
        let (status, body) = self
            .post(
                &format!("/v1/sites/{}/webhooks", site.id),
                &site.key,
                &json!({"url": url, "secret": secret_for(index), "events": events, "strict_ordering": strict}),
            )
            .await?;
        ensure!(status == 201, "creating an endpoint: {status} {body}");
        Ok(body["id"].as_str().unwrap_or_default().into())
    }

    /// Submits one text item stamped with the submission time; returns the
    /// media id when accepted.
    pub async fn submit(&self, site: &Site, sequence: u64) -> anyhow::Result<Option<String>> {
        let (status, body) = self
            .post(
                "/v1/submit-media",
                &site.key,
                &json!({"body": format!("benchmark item {sequence}"), "metadata": {"t": now_us(), "seq": sequence}}),
            )
            .await?;
        Ok((status == 202).then(|| body["id"].as_str().unwrap_or_default().to_string()))
    }

    /// Submits any body; returns the media id when accepted.
    pub async fn submit_body(&self, site: &Site, body: &Value) -> anyhow::Result<Option<String>> {
        let (status, answer) = self.post("/v1/submit-media", &site.key, body).await?;
        Ok((status == 202).then(|| answer["id"].as_str().unwrap_or_default().to_string()))
    }

    pub async fn review(&self, site: &Site, media_id: &str, status: &str) -> anyhow::Result<bool> {
        let (code, _) = self
            .post(
                &format!("/v1/media/{media_id}/review"),
                &site.key,
                &json!({"status": status}),
            )
            .await?;
        Ok(code == 200)
    }
}

/// The result of submitting load.
#[derive(Debug, Clone, Default)]
pub struct Load {
    pub accepted: u64,
    pub rejected: u64,
    pub elapsed: Duration,
    /// (site index, media id) of every accepted submission, when kept.
    pub media: Vec<(usize, String)>,
    /// Accepted submissions per site.
    pub per_site: Vec<u64>,
}

/// Submits `total` items as fast as the server accepts them from
/// `concurrency` clients, spread over the sites.
pub async fn closed_loop(
    api: &Api,
    sites: &[Site],
    total: u64,
    concurrency: usize,
    keep_ids: bool,
) -> Load {
    let next = Arc::new(AtomicU64::new(0));
    let rejected = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let api = api.clone();
        let sites = sites.to_vec();
        let next = next.clone();
        let rejected = rejected.clone();
        tasks.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            let mut per_site = vec![0u64; sites.len()];
            loop {
                let sequence = next.fetch_add(1, Ordering::Relaxed);
                if sequence >= total {
                    break;
                }
                let site_index = sequence as usize % sites.len();
                match api.submit(&sites[site_index], sequence).await {
                    Ok(Some(id)) => {
                        per_site[site_index] += 1;
                        if keep_ids {
                            accepted.push((site_index, id));
                        }
                    }
                    _ => {
                        rejected.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            (per_site, accepted)
        }));
    }
    let mut load = Load {
        per_site: vec![0; sites.len()],
        ..Load::default()
    };
    for task in tasks {
        if let Ok((per_site, ids)) = task.await {
            for (total, count) in load.per_site.iter_mut().zip(per_site) {
                *total += count;
            }
            load.media.extend(ids);
        }
    }
    load.accepted = load.per_site.iter().sum();
    load.elapsed = started.elapsed();
    load.rejected = rejected.load(Ordering::Relaxed);
    load
}

/// Submits at a steady `rate` per second for `duration` (open loop: a slow
/// answer does not slow the arrivals).
pub async fn open_loop(api: &Api, sites: &[Site], rate: u64, duration: Duration) -> Load {
    let total = (rate as f64 * duration.as_secs_f64()) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let accepted: Arc<Vec<AtomicU64>> = Arc::new(sites.iter().map(|_| AtomicU64::new(0)).collect());
    let rejected = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(1024));
    let started = Instant::now();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    for sequence in 0..total {
        ticker.tick().await;
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let api = api.clone();
        let site_index = sequence as usize % sites.len();
        let site = sites[site_index].clone();
        let accepted = accepted.clone();
        let rejected = rejected.clone();
        tasks.spawn(async move {
            match api.submit(&site, sequence).await {
                Ok(Some(_)) => accepted[site_index].fetch_add(1, Ordering::Relaxed),
                _ => rejected.fetch_add(1, Ordering::Relaxed),
            };
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let per_site: Vec<u64> = accepted
        .iter()
        .map(|count| count.load(Ordering::Relaxed))
        .collect();
    Load {
        accepted: per_site.iter().sum(),
        rejected: rejected.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        media: Vec::new(),
        per_site,
    }
}

/// Where the binaries are and what to run against.
#[derive(Debug, Clone)]
pub struct Setup {
    pub server_binary: PathBuf,
    pub receiver_binary: PathBuf,
    pub backend: Backend,
    pub postgres_admin_url: String,
    /// Extra `pixelpatrol serve` flags for every server started.
    pub server_args: Vec<String>,
}

/// One scenario's parameters and figures, as printed and saved.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub backend: String,
    pub parameters: BTreeMap<String, Value>,
    pub figures: BTreeMap<String, Value>,
    /// Checks that must hold whatever the speed (nothing lost, signatures, order).
    pub checks: BTreeMap<String, bool>,
}

impl Report {
    fn new(scenario: &str, setup: &Setup) -> Self {
        Report {
            scenario: scenario.into(),
            backend: setup.backend.name().into(),
            parameters: BTreeMap::new(),
            figures: BTreeMap::new(),
            checks: BTreeMap::new(),
        }
    }

    pub fn param(&mut self, name: &str, value: impl Serialize) {
        self.parameters.insert(
            name.into(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
    }

    pub fn figure(&mut self, name: &str, value: impl Serialize) {
        self.figures.insert(
            name.into(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
    }

    pub fn check(&mut self, name: &str, ok: bool) {
        self.checks.insert(name.into(), ok);
    }

    pub fn all_checks_pass(&self) -> bool {
        self.checks.values().all(|ok| *ok)
    }

    fn latency(&mut self, prefix: &str, stats: &ReceiverStats) {
        let ms = |us: u64| (us as f64 / 1000.0 * 100.0).round() / 100.0;
        self.figure(&format!("{prefix}latency_p50_ms"), ms(stats.latency_p50_us));
        self.figure(&format!("{prefix}latency_p90_ms"), ms(stats.latency_p90_us));
        self.figure(&format!("{prefix}latency_p99_ms"), ms(stats.latency_p99_us));
        self.figure(&format!("{prefix}latency_max_ms"), ms(stats.latency_max_us));
    }

    fn delivery_checks(&mut self, expected: u64, stats: &ReceiverStats) {
        self.figure("deliveries_expected", expected);
        self.figure("deliveries_received", stats.delivered);
        self.figure("lost", expected.saturating_sub(stats.delivered));
        self.figure("duplicates", stats.duplicates);
        self.figure("bad_signatures", stats.bad_signatures);
        self.check("nothing_lost", stats.delivered >= expected);
        self.check("every_signature_valid", stats.bad_signatures == 0);
    }
}

/// A server, a receiver and sites with endpoints, ready for load.
pub struct Stage {
    pub database: Database,
    pub server: Server,
    pub receiver: ReceiverProcess,
    pub api: Api,
    pub sites: Vec<Site>,
    pub endpoints: u32,
}

impl Stage {
    /// `sites` sites with `per_site` endpoints each (endpoint numbers run
    /// across sites), subscribed to `events`; `strict` endpoints get strict
    /// ordering.
    pub async fn build(
        setup: &Setup,
        sites: usize,
        per_site: u32,
        events: &[&str],
        strict: &[u32],
        server_args: &[String],
        concurrency: usize,
    ) -> anyhow::Result<Stage> {
        let database = Database::create(setup.backend, &setup.postgres_admin_url).await?;
        let mut args = setup.server_args.clone();
        args.extend_from_slice(server_args);
        let server = Server::start(&setup.server_binary, &database.url, &args).await?;
        let receiver = ReceiverProcess::start(&setup.receiver_binary).await?;
        let api = Api::new(&server.api, concurrency);
        let mut created = Vec::new();
        let mut index = 0;
        for site_number in 0..sites {
            let site = api
                .create_site(&format!("bench site {site_number}"))
                .await?;
            for _ in 0..per_site {
                api.create_endpoint(
                    &site,
                    &receiver.url_for(index),
                    index,
                    events,
                    strict.contains(&index),
                )
                .await?;
                index += 1;
            }
            created.push(site);
        }
        Ok(Stage {
            database,
            server,
            receiver,
            api,
            sites: created,
            endpoints: index,
        })
    }

    pub async fn finish(self) -> anyhow::Result<()> {
        self.server.stop().await?;
        self.database.drop_database().await;
        Ok(())
    }
}

fn rate(count: u64, elapsed: Duration) -> f64 {
    (count as f64 / elapsed.as_secs_f64().max(1e-9)).round()
}

/// Deliveries per second from the first submission to the last receipt.
fn delivery_rate(stats: &ReceiverStats, started_us: u64) -> f64 {
    let end = stats.last_receipt_us.unwrap_or(started_us);
    rate(
        stats.delivered,
        Duration::from_micros(end.saturating_sub(started_us)),
    )
}

#[derive(Debug, Clone)]
pub struct ThroughputParams {
    pub sites: usize,
    pub endpoints_per_site: u32,
    pub events: u64,
    pub concurrency: usize,
}

pub async fn throughput(setup: &Setup, params: &ThroughputParams) -> anyhow::Result<Report> {
    let mut report = Report::new("throughput", setup);
    report.param("sites", params.sites);
    report.param("endpoints_per_site", params.endpoints_per_site);
    report.param("events", params.events);
    report.param("concurrency", params.concurrency);
    let stage = Stage::build(
        setup,
        params.sites,
        params.endpoints_per_site,
        &["media.created"],
        &[],
        &[],
        params.concurrency,
    )
    .await?;
    let cpu_before = stage.server.cpu_seconds();
    let started_us = now_us();
    let load = closed_loop(
        &stage.api,
        &stage.sites,
        params.events,
        params.concurrency,
        false,
    )
    .await;
    let expected = load.accepted * params.endpoints_per_site as u64;
    let stats = stage
        .receiver
        .wait_delivered(expected, Duration::from_secs(60))
        .await?;
    report.figure("submissions_accepted", load.accepted);
    report.figure("submissions_rejected", load.rejected);
    report.figure("submissions_per_s", rate(load.accepted, load.elapsed));
    report.figure("deliveries_per_s", delivery_rate(&stats, started_us));
    report.latency("", &stats);
    report.delivery_checks(expected, &stats);
    report.figure("server_peak_rss_mib", stage.server.peak_rss_mib());
    report.figure("server_cpu_s", stage.server.cpu_seconds() - cpu_before);
    stage.finish().await?;
    Ok(report)
}

#[derive(Debug, Clone)]
pub struct LatencyParams {
    pub sites: usize,
    pub endpoints_per_site: u32,
    pub rate: u64,
    pub duration: Duration,
}

async fn steady_run(
    setup: &Setup,
    params: &LatencyParams,
    modes: HashMap<u32, Mode>,
    report: &mut Report,
    prefix: &str,
) -> anyhow::Result<ReceiverStats> {
    let stage = Stage::build(
        setup,
        params.sites,
        params.endpoints_per_site,
        &["media.created"],
        &[],
        &[],
        64,
    )
    .await?;
    let healthy_per_site: Vec<u64> = (0..params.sites as u32)
        .map(|site| {
            let first = site * params.endpoints_per_site;
            (first..first + params.endpoints_per_site)
                .filter(|endpoint| !modes.contains_key(endpoint))
                .count() as u64
        })
        .collect();
    stage
        .receiver
        .control(&Control {
            modes,
            ..Control::default()
        })
        .await?;
    let cpu_before = stage.server.cpu_seconds();
    let started_us = now_us();
    let load = open_loop(&stage.api, &stage.sites, params.rate, params.duration).await;
    let expected: u64 = load
        .per_site
        .iter()
        .zip(&healthy_per_site)
        .map(|(accepted, healthy)| accepted * healthy)
        .sum();
    let stats = stage
        .receiver
        .wait_delivered(expected, Duration::from_secs(30))
        .await?;
    report.figure(&format!("{prefix}submissions_accepted"), load.accepted);
    report.figure(
        &format!("{prefix}submissions_per_s"),
        rate(load.accepted, load.elapsed),
    );
    report.figure(
        &format!("{prefix}deliveries_per_s"),
        delivery_rate(&stats, started_us),
    );
    report.latency(prefix, &stats);
    report.figure(
        &format!("{prefix}server_peak_rss_mib"),
        stage.server.peak_rss_mib(),
    );
    report.figure(
        &format!("{prefix}server_cpu_s"),
        stage.server.cpu_seconds() - cpu_before,
    );
    report.figure(
        &format!("{prefix}lost"),
        expected.saturating_sub(stats.delivered),
    );
    report.figure(&format!("{prefix}duplicates"), stats.duplicates);
    report.check(
        &format!("{prefix}nothing_lost"),
        stats.delivered >= expected,
    );
    report.check(
        &format!("{prefix}every_signature_valid"),
        stats.bad_signatures == 0,
    );
    stage.finish().await?;
    Ok(stats)
}

pub async fn latency(setup: &Setup, params: &LatencyParams) -> anyhow::Result<Report> {
    let mut report = Report::new("latency", setup);
    report.param("sites", params.sites);
    report.param("endpoints_per_site", params.endpoints_per_site);
    report.param("events_per_s", params.rate);
    report.param("duration_s", params.duration.as_secs_f64());
    steady_run(setup, params, HashMap::new(), &mut report, "").await?;
    Ok(report)
}

/// `latency` twice: as is, and with endpoint 0 hanging and endpoint 1
/// answering 500; the healthy endpoints' p99 is compared.
pub async fn isolation(setup: &Setup, params: &LatencyParams) -> anyhow::Result<Report> {
    let mut report = Report::new("isolation", setup);
    report.param("sites", params.sites);
    report.param("endpoints_per_site", params.endpoints_per_site);
    report.param("events_per_s", params.rate);
    report.param("duration_s", params.duration.as_secs_f64());
    report.param("unhealthy", "endpoint 0 hangs, endpoint 1 answers 500");
    let baseline = steady_run(setup, params, HashMap::new(), &mut report, "baseline_").await?;
    let modes = HashMap::from([(0, Mode::Hang), (1, Mode::Fail)]);
    let isolated = steady_run(setup, params, modes, &mut report, "isolated_").await?;
    let ratio = isolated.latency_p99_us as f64 / baseline.latency_p99_us.max(1) as f64;
    report.figure("p99_ratio", (ratio * 100.0).round() / 100.0);
    report.figure("target_p99_ratio_at_most", 2.0);
    Ok(report)
}

#[derive(Debug, Clone)]
pub struct BacklogParams {
    pub sites: usize,
    pub endpoints_per_site: u32,
    pub events: u64,
    pub concurrency: usize,
}

/// Deliveries pile up while no worker runs (the API alone takes
/// submissions), then a full server drains them.
pub async fn backlog(setup: &Setup, params: &BacklogParams) -> anyhow::Result<Report> {
    let mut report = Report::new("backlog", setup);
    report.param("sites", params.sites);
    report.param("endpoints_per_site", params.endpoints_per_site);
    report.param("events", params.events);
    report.param(
        "pending_deliveries",
        params.events * params.endpoints_per_site as u64,
    );
    report.param(
        "enqueue",
        "the server runs --role api (no worker) while the backlog is written",
    );
    let stage = Stage::build(
        setup,
        params.sites,
        params.endpoints_per_site,
        &["media.created"],
        &[],
        &["--role".into(), "api".into()],
        params.concurrency,
    )
    .await?;
    let load = closed_loop(
        &stage.api,
        &stage.sites,
        params.events,
        params.concurrency,
        false,
    )
    .await;
    report.figure(
        "enqueue_submissions_per_s",
        rate(load.accepted, load.elapsed),
    );
    report.figure("enqueue_server_peak_rss_mib", stage.server.peak_rss_mib());
    let expected = load.accepted * params.endpoints_per_site as u64;
    let Stage {
        database,
        server,
        receiver,
        ..
    } = stage;
    server.stop().await?;

    let drain = Server::start(&setup.server_binary, &database.url, &setup.server_args).await?;
    let started = Instant::now();
    let started_us = now_us();
    let mut peak_rss: f64 = 0.0;
    let mut last = 0;
    let mut last_change = Instant::now();
    let stats = loop {
        let stats = receiver.stats().await?;
        peak_rss = peak_rss.max(drain.rss_mib());
        if stats.delivered >= expected {
            break stats;
        }
        if stats.delivered != last {
            last = stats.delivered;
            last_change = Instant::now();
        } else if last_change.elapsed() > Duration::from_secs(60) {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let drain_time = Duration::from_micros(
        stats
            .last_receipt_us
            .unwrap_or(started_us)
            .saturating_sub(started_us),
    );
    report.figure("drain_per_s", rate(stats.delivered, drain_time));
    report.figure(
        "time_to_empty_s",
        (drain_time.as_secs_f64() * 10.0).round() / 10.0,
    );
    report.figure(
        "drain_server_peak_rss_mib",
        drain.peak_rss_mib().max(peak_rss),
    );
    report.figure("wall_s", started.elapsed().as_secs_f64().round());
    report.delivery_checks(expected, &stats);
    drain.stop().await?;
    database.drop_database().await;
    Ok(report)
}

#[derive(Debug, Clone)]
pub struct FanoutParams {
    pub endpoints: u32,
    pub events: u64,
}

/// One site, `endpoints` endpoints on one event type: per event, the time
/// from submission to the last endpoint's receipt.
pub async fn fanout(setup: &Setup, params: &FanoutParams) -> anyhow::Result<Report> {
    let mut report = Report::new("fanout", setup);
    report.param("endpoints", params.endpoints);
    report.param("events", params.events);
    let stage = Stage::build(setup, 1, params.endpoints, &["media.created"], &[], &[], 4).await?;
    let mut times_ms = Vec::new();
    let mut lost = 0;
    let mut bad = 0;
    for sequence in 0..params.events {
        stage.receiver.reset().await?;
        let submitted = now_us();
        if stage.api.submit(&stage.sites[0], sequence).await?.is_none() {
            bail!("a fan-out submission was refused");
        }
        let stats = stage
            .receiver
            .wait_delivered(params.endpoints as u64, Duration::from_secs(30))
            .await?;
        lost += (params.endpoints as u64).saturating_sub(stats.delivered);
        bad += stats.bad_signatures;
        let last = stats.last_receipt_us.unwrap_or(submitted);
        times_ms.push(last.saturating_sub(submitted) as f64 / 1000.0);
    }
    times_ms.sort_by(f64::total_cmp);
    let round = |ms: f64| (ms * 100.0).round() / 100.0;
    report.figure(
        "time_to_last_endpoint_ms_median",
        round(times_ms[times_ms.len() / 2]),
    );
    report.figure(
        "time_to_last_endpoint_ms_max",
        round(*times_ms.last().unwrap_or(&0.0)),
    );
    report.figure("lost", lost);
    report.figure("bad_signatures", bad);
    report.check("nothing_lost", lost == 0);
    report.check("every_signature_valid", bad == 0);
    report.figure("server_peak_rss_mib", stage.server.peak_rss_mib());
    stage.finish().await?;
    Ok(report)
}

#[derive(Debug, Clone)]
pub struct OrderingParams {
    pub endpoints: u32,
    pub strict_endpoints: u32,
    pub media: u64,
    pub failure_rate: f64,
    pub concurrency: usize,
}

/// Per-media and strict ordering under injected failures with a millisecond
/// retry schedule: every item gets `media.created` then a review's
/// `media.moderated`; the receiver checks every lane.
pub async fn ordering(setup: &Setup, params: &OrderingParams) -> anyhow::Result<Report> {
    let mut report = Report::new("ordering", setup);
    report.param("endpoints", params.endpoints);
    report.param("strict_endpoints", params.strict_endpoints);
    report.param("media", params.media);
    report.param("failure_rate", params.failure_rate);
    let schedule = "0ms,5ms,10ms,20ms,40ms,80ms,160ms,320ms,640ms,1s,2s,4s";
    report.param("retry_schedule", schedule);
    let strict: Vec<u32> = (0..params.strict_endpoints).collect();
    let stage = Stage::build(
        setup,
        1,
        params.endpoints,
        &["media.created", "media.moderated"],
        &strict,
        &["--retry-schedule".into(), schedule.into()],
        params.concurrency,
    )
    .await?;
    stage
        .receiver
        .control(&Control {
            default: Mode::Flaky(params.failure_rate),
            strict,
            hold_ms: 1,
            check_order: true,
            ..Control::default()
        })
        .await?;
    let started_us = now_us();
    let load = closed_loop(
        &stage.api,
        &stage.sites,
        params.media,
        params.concurrency,
        true,
    )
    .await;
    // Reviews follow at once, racing the media.created deliveries.
    let next = Arc::new(AtomicUsize::new(0));
    let media = Arc::new(load.media.clone());
    let mut tasks = Vec::new();
    for _ in 0..params.concurrency {
        let api = stage.api.clone();
        let site = stage.sites[0].clone();
        let media = media.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut reviewed = 0u64;
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some((_, media_id)) = media.get(index) else {
                    break;
                };
                if api
                    .review(&site, media_id, "approved")
                    .await
                    .unwrap_or(false)
                {
                    reviewed += 1;
                }
            }
            reviewed
        }));
    }
    let mut reviewed = 0;
    for task in tasks {
        reviewed += task.await.unwrap_or(0);
    }
    let expected = (load.accepted + reviewed) * params.endpoints as u64;
    let stats = stage
        .receiver
        .wait_delivered(expected, Duration::from_secs(60))
        .await?;
    report.figure("deliveries_per_s", delivery_rate(&stats, started_us));
    report.figure("injected_failures", stats.injected_failures);
    report.figure("order_violations", stats.order_violations);
    report.figure("violation_examples", &stats.violation_examples);
    report.check("no_order_violation", stats.order_violations == 0);
    report.delivery_checks(expected, &stats);
    stage.finish().await?;
    Ok(report)
}

/// Cores, memory and revision of the machine the figures come from.
#[derive(Debug, Clone)]
pub struct ModerationParams {
    pub texts: u64,
    pub images: u64,
    pub concurrency: usize,
    /// Where the NSFW model is installed.
    pub model_dir: PathBuf,
    /// The image every image item points at.
    pub image: PathBuf,
}

/// Serves `bytes` at any path on 127.0.0.1 (the image items' `content_url`).
async fn serve_image(bytes: Vec<u8>) -> anyhow::Result<String> {
    use http_body_util::Full;
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let bytes = bytes::Bytes::from(bytes);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let bytes = bytes.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_request| {
                    let bytes = bytes.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(bytes)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(format!("http://{address}/image"))
}

/// Submits `bodies` from `concurrency` clients and waits until the receiver
/// has `media.moderated` for each; returns items per second from the first
/// submission to the last receipt.
async fn moderate_all(
    stage: &Stage,
    bodies: Vec<Value>,
    concurrency: usize,
) -> anyhow::Result<(f64, ReceiverStats)> {
    stage.receiver.reset().await?;
    let count = bodies.len() as u64;
    let started = now_us();
    let queue = Arc::new(std::sync::Mutex::new(bodies));
    let mut clients = Vec::new();
    for _ in 0..concurrency.max(1) {
        let queue = queue.clone();
        let api = Api::new(&stage.api.base, 1);
        let site = stage.sites[0].clone();
        clients.push(tokio::spawn(async move {
            loop {
                let Some(body) = queue.lock().expect("queue").pop() else {
                    return Ok::<_, anyhow::Error>(());
                };
                ensure!(
                    api.submit_body(&site, &body).await?.is_some(),
                    "a submission was refused"
                );
            }
        }));
    }
    for client in clients {
        client.await??;
    }
    let stats = stage
        .receiver
        .wait_delivered(count, Duration::from_secs(600))
        .await?;
    Ok((delivery_rate(&stats, started), stats))
}

/// Automatic moderation throughput: text items, then image items (fetched
/// from 127.0.0.1 and scored by the NSFW model), each decided and its
/// `media.moderated` received; plus the model's time per image in process.
pub async fn moderation(setup: &Setup, params: &ModerationParams) -> anyhow::Result<Report> {
    let mut report = Report::new("moderation", setup);
    report.param("texts", params.texts);
    report.param("images", params.images);
    report.param("concurrency", params.concurrency);
    report.param("image", params.image.display().to_string());
    ensure!(
        pixelpatrol::moderation::nsfw::is_installed(&params.model_dir),
        "the NSFW model is not in {}: run `cargo run --release -p pixelpatrol -- models install`",
        params.model_dir.display()
    );
    let image_bytes = std::fs::read(&params.image)
        .with_context(|| format!("reading {}", params.image.display()))?;

    // The model alone: preprocessing and inference of one image, in process.
    let model = pixelpatrol::moderation::nsfw::NsfwModel::load(
        &params
            .model_dir
            .join(pixelpatrol::moderation::nsfw::MODEL_FILE),
    )?;
    let decoded = image::load_from_memory(&image_bytes)?;
    model.score(&decoded)?;
    let mut times_ms = Vec::new();
    for _ in 0..20 {
        let clock = Instant::now();
        model.score(&decoded)?;
        times_ms.push(clock.elapsed().as_secs_f64() * 1000.0);
    }
    drop(model);
    times_ms.sort_by(f64::total_cmp);
    let round = |ms: f64| (ms * 10.0).round() / 10.0;
    report.figure("inference_ms_p50", round(times_ms[times_ms.len() / 2]));
    report.figure("inference_ms_max", round(*times_ms.last().unwrap_or(&0.0)));

    let model_dir = std::fs::canonicalize(&params.model_dir)?;
    let args = [
        "--auto-moderation".to_string(),
        "true".to_string(),
        "--model-install".to_string(),
        "false".to_string(),
        "--model-dir".to_string(),
        model_dir.display().to_string(),
    ];
    let stage = Stage::build(
        setup,
        1,
        1,
        &["media.moderated"],
        &[],
        &args,
        params.concurrency,
    )
    .await?;
    let texts: Vec<Value> = (0..params.texts)
        .map(|n| json!({"body": format!("benchmark comment {n}: lovely photo, see you at the meetup on friday"), "metadata": {"t": now_us()}}))
        .collect();
    let (text_rate, text_stats) = moderate_all(&stage, texts, params.concurrency).await?;
    let url = serve_image(image_bytes).await?;
    let images: Vec<Value> = (0..params.images)
        .map(|n| json!({"content_url": format!("{url}?n={n}"), "metadata": {"t": now_us()}}))
        .collect();
    let (image_rate, image_stats) = moderate_all(&stage, images, params.concurrency).await?;
    report.figure("text_items_per_s", text_rate);
    report.figure("image_items_per_s", image_rate);
    report.figure("server_peak_rss_mib", stage.server.peak_rss_mib());
    report.figure("server_cpu_seconds", stage.server.cpu_seconds());
    let lost = params.texts.saturating_sub(text_stats.delivered)
        + params.images.saturating_sub(image_stats.delivered);
    report.figure("lost", lost);
    report.check("every_item_decided", lost == 0);
    report.check(
        "every_signature_valid",
        text_stats.bad_signatures + image_stats.bad_signatures == 0,
    );
    stage.finish().await?;
    Ok(report)
}

pub fn machine() -> Value {
    let memory_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let dirty = !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty();
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_gib": (memory_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "git_revision": format!("{}{}", git(&["rev-parse", "--short", "HEAD"]), if dirty { "-dirty" } else { "" }),
        "date": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
    })
}
