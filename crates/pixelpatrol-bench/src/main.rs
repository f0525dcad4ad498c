//! `pixelpatrol-bench <scenario>`: builds the release binaries, runs one
//! scenario against a real server and receiver, prints a table and writes
//! `bench/results/<scenario>-<backend>.json`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use pixelpatrol_bench::{
    Backend, BacklogParams, FanoutParams, LatencyParams, ModerationParams, OrderingParams, Report,
    Setup, ThroughputParams,
};

#[derive(Parser)]
#[command(about = "End-to-end benchmark of PixelPatrol webhook delivery")]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Args)]
struct Common {
    /// Storage backend of the server under test.
    #[arg(long, value_enum, default_value_t = Backend::Sqlite, global = true)]
    backend: Backend,
    /// PostgreSQL server for `--backend postgres` (a fresh database is created on it).
    #[arg(
        long,
        env = "PIXELPATROL_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        global = true
    )]
    database_url: String,
    /// The server binary; by default the release build, built first.
    #[arg(long, global = true)]
    server_bin: Option<PathBuf>,
    /// The receiver binary; by default the release build, built first.
    #[arg(long, global = true)]
    receiver_bin: Option<PathBuf>,
    /// Extra flags for every `pixelpatrol serve` started (repeatable).
    #[arg(long = "server-arg", global = true, allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Where the JSON results go.
    #[arg(long, default_value = "bench/results", global = true)]
    results_dir: PathBuf,
}

#[derive(Subcommand)]
enum Scenario {
    /// Saturate: many events as fast as the server accepts them.
    Throughput {
        #[arg(long, default_value_t = 10)]
        sites: usize,
        #[arg(long, default_value_t = 10)]
        endpoints_per_site: u32,
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// Steady moderate load: latency percentiles.
    Latency(SteadyArgs),
    /// Steady load with one hanging and one failing endpoint.
    Isolation(SteadyArgs),
    /// A large backlog, then its drain.
    Backlog {
        #[arg(long, default_value_t = 10)]
        sites: usize,
        #[arg(long, default_value_t = 10)]
        endpoints_per_site: u32,
        /// Events; each reaches every endpoint of its site.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// One event type subscribed by many endpoints of one site.
    Fanout {
        #[arg(long, default_value_t = 1000)]
        endpoints: u32,
        #[arg(long, default_value_t = 5)]
        events: u64,
    },
    /// Ordering under injected failures.
    Ordering {
        #[arg(long, default_value_t = 10)]
        endpoints: u32,
        #[arg(long, default_value_t = 5)]
        strict_endpoints: u32,
        #[arg(long, default_value_t = 5_000)]
        media: u64,
        #[arg(long, default_value_t = 0.1)]
        failure_rate: f64,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// Automatic moderation: text and image items per second, decided and
    /// delivered, and the NSFW model's time per image.
    Moderation {
        #[arg(long, default_value_t = 5_000)]
        texts: u64,
        #[arg(long, default_value_t = 300)]
        images: u64,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Where the NSFW model is installed.
        #[arg(long, default_value = "models")]
        model_dir: PathBuf,
        /// The image every image item points at.
        #[arg(
            long,
            default_value = "crates/pixelpatrol/tests/fixtures/nsfw/body-640x480.jpg"
        )]
        image: PathBuf,
    },
}

#[derive(Args)]
struct SteadyArgs {
    #[arg(long, default_value_t = 10)]
    sites: usize,
    #[arg(long, default_value_t = 10)]
    endpoints_per_site: u32,
    /// Events per second.
    #[arg(long, default_value_t = 500)]
    rate: u64,
    #[arg(long, default_value = "60s", value_parser = humantime_like)]
    duration: Duration,
}

fn humantime_like(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not like 60s"))?;
    match unit {
        "s" | "" => Ok(Duration::from_secs(number)),
        "ms" => Ok(Duration::from_millis(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        _ => Err(format!("{text:?} is not like 60s")),
    }
}

/// Builds the release binaries unless they were given.
fn binaries(common: &Common) -> anyhow::Result<(PathBuf, PathBuf)> {
    let here = std::env::current_exe()?;
    let dir = here.parent().context("no folder")?.to_path_buf();
    if common.server_bin.is_none() || common.receiver_bin.is_none() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args([
                "build",
                "--release",
                "-p",
                "pixelpatrol",
                "-p",
                "pixelpatrol-bench",
                "--bins",
            ])
            .status()?;
        anyhow::ensure!(status.success(), "building the release binaries failed");
    }
    Ok((
        common
            .server_bin
            .clone()
            .unwrap_or_else(|| dir.join("pixelpatrol")),
        common
            .receiver_bin
            .clone()
            .unwrap_or_else(|| dir.join("pixelpatrol-bench-receiver")),
    ))
}

fn print_report(report: &Report) {
    println!("\n{} on {}", report.scenario, report.backend);
    for (name, value) in &report.parameters {
        println!("  {name:<34} {value}");
    }
    println!("  {:-<50}", "");
    for (name, value) in &report.figures {
        println!("  {name:<34} {value}");
    }
    for (name, ok) in &report.checks {
        println!("  {name:<34} {}", if *ok { "ok" } else { "FAILED" });
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (server_binary, receiver_binary) = binaries(&cli.common)?;
    let setup = Setup {
        server_binary,
        receiver_binary,
        backend: cli.common.backend,
        postgres_admin_url: cli.common.database_url.clone(),
        server_args: cli.common.server_args.clone(),
    };
    let steady = |args: &SteadyArgs| LatencyParams {
        sites: args.sites,
        endpoints_per_site: args.endpoints_per_site,
        rate: args.rate,
        duration: args.duration,
    };
    let report = match &cli.scenario {
        Scenario::Moderation {
            texts,
            images,
            concurrency,
            model_dir,
            image,
        } => {
            pixelpatrol_bench::moderation(
                &setup,
                &ModerationParams {
                    texts: *texts,
                    images: *images,
                    concurrency: *concurrency,
                    model_dir: model_dir.clone(),
                    image: image.clone(),
                },
            )
            .await?
        }
        Scenario::Throughput {
            sites,
            endpoints_per_site,
            events,
            concurrency,
        } => {
            pixelpatrol_bench::throughput(
                &setup,
                &ThroughputParams {
                    sites: *sites,
                    endpoints_per_site: *endpoints_per_site,
                    events: *events,
                    concurrency: *concurrency,
                },
            )
            .await?
        }
        Scenario::Latency(args) => pixelpatrol_bench::latency(&setup, &steady(args)).await?,
        Scenario::Isolation(args) => pixelpatrol_bench::isolation(&setup, &steady(args)).await?,
        Scenario::Backlog {
            sites,
            endpoints_per_site,
            events,
            concurrency,
        } => {
            pixelpatrol_bench::backlog(
                &setup,
                &BacklogParams {
                    sites: *sites,
                    endpoints_per_site: *endpoints_per_site,
                    events: *events,
                    concurrency: *concurrency,
                },
            )
            .await?
        }
        Scenario::Fanout { endpoints, events } => {
            pixelpatrol_bench::fanout(
                &setup,
                &FanoutParams {
                    endpoints: *endpoints,
                    events: *events,
                },
            )
            .await?
        }
        Scenario::Ordering {
            endpoints,
            strict_endpoints,
            media,
            failure_rate,
            concurrency,
        } => {
            pixelpatrol_bench::ordering(
                &setup,
                &OrderingParams {
                    endpoints: *endpoints,
                    strict_endpoints: *strict_endpoints,
                    media: *media,
                    failure_rate: *failure_rate,
                    concurrency: *concurrency,
                },
            )
            .await?
        }
    };
    print_report(&report);
    std::fs::create_dir_all(&cli.common.results_dir)?;
    let path = cli
        .common
        .results_dir
        .join(format!("{}-{}.json", report.scenario, report.backend));
    let document = serde_json::json!({
        "machine": pixelpatrol_bench::machine(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "report": report,
    });
    std::fs::write(&path, serde_json::to_string_pretty(&document)? + "\n")?;
    println!("\nwritten to {}", path.display());
    if !report.all_checks_pass() {
        anyhow::bail!("a check failed: see above");
    }
    Ok(())
}
