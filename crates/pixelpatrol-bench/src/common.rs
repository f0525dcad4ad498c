//! Values the benchmark and its receiver process share.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

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
