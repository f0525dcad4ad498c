//! `pixelpatrol-bench <scenario>`: builds the release binaries, runs one
//! scenario against a real server and receiver, prints a table and writes
//! `bench/results/<scenario>-<backend>.json`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use pixelpatrol_bench::{
    Backend, BacklogParams, FanoutParams, LatencyParams, ModerationParams, OrderingParams, Report,
    ScalingParams, Setup, Target, ThroughputParams,
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
    /// Also measure a peer on the same workload (throughput, latency and
    /// fanout): each pair runs the peer, then PixelPatrol, and prints both
    /// and their ratio.
    #[arg(long, value_enum, global = true, requires = "peer_bin")]
    peer: Option<Peer>,
    /// The peer's server binary.
    #[arg(long, global = true)]
    peer_bin: Option<PathBuf>,
    /// How many peer-then-PixelPatrol pairs a `--peer` run measures.
    #[arg(long, default_value_t = 2, global = true)]
    pairs: u32,
    /// Where the JSON results go.
    #[arg(long, default_value = "bench/results", global = true)]
    results_dir: PathBuf,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Peer {
    /// The Svix server, on PostgreSQL with its in-memory queue.
    Svix,
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
    /// Delivery rate with a small and with a large backlog waiting: does the
    /// cost of a delivery grow with the queue's depth?
    Scaling {
        #[arg(long, default_value_t = 10)]
        sites: usize,
        #[arg(long, default_value_t = 10)]
        endpoints_per_site: u32,
        /// Pending deliveries of the small backlog.
        #[arg(long, default_value_t = 10_000)]
        small: u64,
        /// Pending deliveries of the large backlog.
        #[arg(long, default_value_t = 1_000_000)]
        large: u64,
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
        target: Target::PixelPatrol,
        server_binary,
        receiver_binary,
        backend: cli.common.backend,
        postgres_admin_url: cli.common.database_url.clone(),
        server_args: cli.common.server_args.clone(),
    };
    std::fs::create_dir_all(&cli.common.results_dir)?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    if let (Some(Peer::Svix), Some(peer_bin)) = (cli.common.peer, &cli.common.peer_bin) {
        anyhow::ensure!(
            matches!(
                cli.scenario,
                Scenario::Throughput { .. } | Scenario::Latency(_) | Scenario::Fanout { .. }
            ),
            "--peer measures throughput, latency and fanout"
        );
        let peer = Setup {
            target: Target::Svix(peer_bin.clone()),
            backend: Backend::Postgres,
            server_args: Vec::new(),
            ..setup.clone()
        };
        return side_by_side(&cli, &setup, &peer, &command).await;
    }
    let report = run(&setup, &cli.scenario).await?;
    print_report(&report);
    let path = cli
        .common
        .results_dir
        .join(format!("{}-{}.json", report.scenario, report.backend));
    let document = serde_json::json!({
        "machine": pixelpatrol_bench::machine(),
        "command": command,
        "report": report,
    });
    std::fs::write(&path, serde_json::to_string_pretty(&document)? + "\n")?;
    println!("\nwritten to {}", path.display());
    if !report.all_checks_pass() {
        anyhow::bail!("a check failed: see above");
    }
    Ok(())
}

/// `--peer`: pairs of runs, the peer first, then PixelPatrol, on the same
/// workload, receiver and load generator; every figure both report is
/// printed with the ratio ours / peer (above 1 is more for PixelPatrol:
/// better for rates, worse for times).
async fn side_by_side(cli: &Cli, ours: &Setup, peer: &Setup, command: &str) -> anyhow::Result<()> {
    let mut pairs = Vec::new();
    let mut all_pass = true;
    for pair in 1..=cli.common.pairs.max(1) {
        let theirs = run(peer, &cli.scenario).await?;
        print_report(&theirs);
        let mine = run(ours, &cli.scenario).await?;
        print_report(&mine);
        all_pass &= theirs.all_checks_pass() && mine.all_checks_pass();
        let mut ratios = serde_json::Map::new();
        println!(
            "\npair {pair}: {:<32} {:>12} {:>12} {:>10}",
            "figure", "svix", "pixelpatrol", "ours/peer"
        );
        for (name, value) in &mine.figures {
            let (Some(our_value), Some(their_value)) = (
                value.as_f64(),
                theirs.figures.get(name).and_then(|value| value.as_f64()),
            ) else {
                continue;
            };
            let ratio = (their_value != 0.0).then(|| our_value / their_value);
            println!(
                "  {name:<38} {their_value:>12} {our_value:>12} {:>10}",
                ratio.map_or("-".into(), |ratio| format!("{ratio:.2}"))
            );
            ratios.insert(
                name.clone(),
                serde_json::json!(ratio.map(|ratio| (ratio * 100.0).round() / 100.0)),
            );
        }
        pairs.push(serde_json::json!({"peer": theirs, "ours": mine, "ours_over_peer": ratios}));
    }
    let scenario = pairs[0]["ours"]["scenario"].as_str().unwrap_or("scenario");
    let path = cli
        .common
        .results_dir
        .join(format!("{scenario}-{}-vs-svix.json", ours.backend.name()));
    let document = serde_json::json!({
        "machine": pixelpatrol_bench::machine(),
        "command": command,
        "peer": "svix-server 1.100.0, PostgreSQL, in-memory queue and cache",
        "pairs": pairs,
    });
    std::fs::write(&path, serde_json::to_string_pretty(&document)? + "\n")?;
    println!("\nwritten to {}", path.display());
    anyhow::ensure!(all_pass, "a check failed: see above");
    Ok(())
}

async fn run(setup: &Setup, scenario: &Scenario) -> anyhow::Result<Report> {
    let steady = |args: &SteadyArgs| LatencyParams {
        sites: args.sites,
        endpoints_per_site: args.endpoints_per_site,
        rate: args.rate,
        duration: args.duration,
    };
    Ok(match scenario {
        Scenario::Moderation {
            texts,
            images,
            concurrency,
            model_dir,
            image,
        } => {
            pixelpatrol_bench::moderation(
                setup,
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
                setup,
                &ThroughputParams {
                    sites: *sites,
                    endpoints_per_site: *endpoints_per_site,
                    events: *events,
                    concurrency: *concurrency,
                },
            )
            .await?
        }
        Scenario::Latency(args) => pixelpatrol_bench::latency(setup, &steady(args)).await?,
        Scenario::Isolation(args) => pixelpatrol_bench::isolation(setup, &steady(args)).await?,
        Scenario::Backlog {
            sites,
            endpoints_per_site,
            events,
            concurrency,
        } => {
            pixelpatrol_bench::backlog(
                setup,
                &BacklogParams {
                    sites: *sites,
                    endpoints_per_site: *endpoints_per_site,
                    events: *events,
                    concurrency: *concurrency,
                },
            )
            .await?
        }
        Scenario::Scaling {
            sites,
            endpoints_per_site,
            small,
            large,
            concurrency,
        } => {
            pixelpatrol_bench::scaling(
                setup,
                &ScalingParams {
                    sites: *sites,
                    endpoints_per_site: *endpoints_per_site,
                    small: *small,
                    large: *large,
                    concurrency: *concurrency,
                },
            )
            .await?
        }
        Scenario::Fanout { endpoints, events } => {
            pixelpatrol_bench::fanout(
                setup,
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
                setup,
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
    })
}
