//! The set-up a scenario runs with, and what it reports, stage by stage.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::*;

/// Which server a scenario measures.
#[derive(Debug, Clone, Default)]
pub enum Target {
    #[default]
    PixelPatrol,
    /// The Svix server at this path, on PostgreSQL (`--peer svix`).
    Svix(PathBuf),
}

impl Target {
    pub fn name(&self) -> &'static str {
        match self {
            Target::PixelPatrol => "pixelpatrol",
            Target::Svix(_) => "svix",
        }
    }
}

/// Where the binaries are and what to run against.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The server measured; PixelPatrol unless a `--peer` run measures the peer.
    pub target: Target,
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
    /// `pixelpatrol`, or the peer's name.
    pub server: String,
    pub backend: String,
    pub parameters: BTreeMap<String, Value>,
    pub figures: BTreeMap<String, Value>,
    /// Checks that must hold whatever the speed (nothing lost, signatures, order).
    pub checks: BTreeMap<String, bool>,
}

impl Report {
    pub(crate) fn new(scenario: &str, setup: &Setup) -> Self {
        Report {
            scenario: scenario.into(),
            server: setup.target.name().into(),
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

    pub(crate) fn latency(&mut self, prefix: &str, stats: &ReceiverStats) {
        let ms = |us: u64| (us as f64 / 1000.0 * 100.0).round() / 100.0;
        self.figure(&format!("{prefix}latency_p50_ms"), ms(stats.latency_p50_us));
        self.figure(&format!("{prefix}latency_p90_ms"), ms(stats.latency_p90_us));
        self.figure(&format!("{prefix}latency_p99_ms"), ms(stats.latency_p99_us));
        self.figure(&format!("{prefix}latency_max_ms"), ms(stats.latency_max_us));
    }

    pub(crate) fn delivery_checks(&mut self, expected: u64, stats: &ReceiverStats) {
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
        let (server, api) = match &setup.target {
            Target::PixelPatrol => {
                let server = Server::start(&setup.server_binary, &database.url, &args).await?;
                let api = Api::new(&server.api, concurrency);
                (server, api)
            }
            Target::Svix(binary) => {
                anyhow::ensure!(
                    setup.backend == Backend::Postgres,
                    "the peer runs on PostgreSQL"
                );
                let server = Server::start_svix(binary, &database.url).await?;
                let api = Api::svix(&server.api, concurrency, svix_token(binary).await?);
                (server, api)
            }
        };
        let receiver = ReceiverProcess::start(&setup.receiver_binary).await?;
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

/// Two decimals are all a figure of this benchmark means.
pub(crate) fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

pub(crate) fn rate(count: u64, elapsed: Duration) -> f64 {
    (count as f64 / elapsed.as_secs_f64().max(1e-9)).round()
}

/// Deliveries per second from the first submission to the last receipt.
pub(crate) fn delivery_rate(stats: &ReceiverStats, started_us: u64) -> f64 {
    let end = stats.last_receipt_us.unwrap_or(started_us);
    rate(
        stats.delivered,
        Duration::from_micros(end.saturating_sub(started_us)),
    )
}
