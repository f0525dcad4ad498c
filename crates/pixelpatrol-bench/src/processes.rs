//! The processes under measurement: a fresh database, the server, the receiver.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use sqlx::Connection as _;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::*;

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

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A server under measurement: a `pixelpatrol serve` child process, or the
/// peer's server in `--peer` runs.
pub struct Server {
    child: Child,
    pub api: String,
    /// How to stop it: PixelPatrol gets SIGTERM and a graceful exit; the
    /// peer, whose graceful exit takes about 20 s, is killed once measured.
    graceful: bool,
    _workdir: Option<tempfile::TempDir>,
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
            .env("RUST_LOG", "warn");
        Self::spawn(command, binary, port, "/healthz", true, None).await
    }

    /// The Svix server on PostgreSQL with its in-memory queue and cache (its
    /// fastest single-node mode, `../shared/peers/README.md`), allowed to
    /// deliver to 127.0.0.1; started in an empty folder because it reads a
    /// `config.toml` from where it starts.
    pub async fn start_svix(binary: &Path, database_url: &str) -> anyhow::Result<Self> {
        let port = free_port()?;
        let workdir = tempfile::tempdir()?;
        let mut command = Command::new(binary);
        command
            .arg("--run-migrations")
            .current_dir(workdir.path())
            .envs(svix_environment())
            .env("SVIX_DB_DSN", database_url)
            .env("SVIX_LISTEN_ADDRESS", format!("127.0.0.1:{port}"))
            .env("SVIX_WHITELIST_SUBNETS", "[127.0.0.1/32]")
            .env("SVIX_LOG_LEVEL", "info");
        Self::spawn(
            command,
            binary,
            port,
            "/api/v1/health/",
            false,
            Some(workdir),
        )
        .await
    }

    async fn spawn(
        mut command: Command,
        binary: &Path,
        port: u16,
        health: &str,
        graceful: bool,
        workdir: Option<tempfile::TempDir>,
    ) -> anyhow::Result<Self> {
        command
            .stdout(Stdio::null())
            .stderr(if graceful {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let server = Server {
            child,
            api: format!("http://127.0.0.1:{port}"),
            graceful,
            _workdir: workdir,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = http.get(format!("{}{health}", server.api)).send().await
                && response.status().is_success()
            {
                return Ok(server);
            }
            ensure!(
                Instant::now() < deadline,
                "{} did not start",
                binary.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn proc_status(&self, field: &str) -> Option<u64> {
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
        round2(self.proc_status("VmHWM:").unwrap_or(0) as f64 / 1024.0)
    }

    pub fn rss_mib(&self) -> f64 {
        round2(self.proc_status("VmRSS:").unwrap_or(0) as f64 / 1024.0)
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

    /// SIGTERM, then wait for the graceful exit (the peer is killed).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if !self.graceful {
            self.child.kill().await?;
            return Ok(());
        }
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

/// The peer's settings shared by its server and its token generator.
fn svix_environment() -> [(&'static str, &'static str); 3] {
    [
        ("SVIX_JWT_SECRET", "pixelpatrol-bench-peer-secret"),
        ("SVIX_QUEUE_TYPE", "memory"),
        ("SVIX_CACHE_TYPE", "memory"),
    ]
}

/// A bearer token for the peer's API, from its own `jwt generate`.
pub async fn svix_token(binary: &Path) -> anyhow::Result<String> {
    let output = Command::new(binary)
        .args(["jwt", "generate"])
        .envs(svix_environment())
        .output()
        .await
        .with_context(|| format!("running {} jwt generate", binary.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|line| line.strip_prefix("Token (Bearer): "))
        .map(|token| token.trim().to_string())
        .with_context(|| format!("no token in the output of jwt generate: {text}"))
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
