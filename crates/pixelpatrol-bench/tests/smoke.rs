//! A tiny run of the benchmark machinery: a few hundred events through a real
//! server process and the receiver process, on both backends. It checks that
//! nothing is lost, every signature verifies and order holds; it asserts no
//! timing (speed is what the benchmark itself reports).

use std::path::PathBuf;
use std::time::Duration;

use pixelpatrol_bench::{Backend, LatencyParams, OrderingParams, Setup, Target, ThroughputParams};

fn setup(backend: Backend) -> Setup {
    // The server binary of this workspace's debug build (`cargo test
    // --workspace --all-targets` builds it beside this test).
    let deps = std::env::current_exe().unwrap();
    let server = deps
        .parent()
        .and_then(|deps| deps.parent())
        .map(|debug| debug.join("pixelpatrol"))
        .unwrap();
    assert!(
        server.exists(),
        "{} is missing: build it with `cargo build -p pixelpatrol`",
        server.display()
    );
    Setup {
        target: Target::PixelPatrol,
        server_binary: server,
        receiver_binary: PathBuf::from(env!("CARGO_BIN_EXE_pixelpatrol-bench-receiver")),
        backend,
        postgres_admin_url: std::env::var("PIXELPATROL_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        server_args: vec![
            "--db-max-connections".into(),
            "4".into(),
            "--shutdown-grace".into(),
            "1s".into(),
        ],
    }
}

async fn small_runs_lose_nothing(backend: Backend) {
    let setup = setup(backend);
    let report = pixelpatrol_bench::throughput(
        &setup,
        &ThroughputParams {
            sites: 2,
            endpoints_per_site: 3,
            events: 200,
            concurrency: 4,
        },
    )
    .await
    .unwrap();
    assert_eq!(report.figures["lost"], 0, "{report:#?}");
    assert_eq!(report.figures["deliveries_received"], 600);
    assert_eq!(report.figures["bad_signatures"], 0);
    assert!(report.all_checks_pass(), "{report:#?}");

    let report = pixelpatrol_bench::isolation(
        &setup,
        &LatencyParams {
            sites: 2,
            endpoints_per_site: 3,
            rate: 100,
            duration: Duration::from_secs(2),
        },
    )
    .await
    .unwrap();
    assert!(report.all_checks_pass(), "{report:#?}");
    assert_eq!(report.figures["isolated_lost"], 0);

    let report = pixelpatrol_bench::ordering(
        &setup,
        &OrderingParams {
            endpoints: 4,
            strict_endpoints: 2,
            media: 100,
            failure_rate: 0.2,
            concurrency: 4,
        },
    )
    .await
    .unwrap();
    assert!(
        report.figures["injected_failures"].as_u64().unwrap() > 0,
        "{report:#?}"
    );
    assert_eq!(report.figures["order_violations"], 0, "{report:#?}");
    assert!(report.all_checks_pass(), "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_runs_lose_nothing_on_sqlite() {
    small_runs_lose_nothing(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_runs_lose_nothing_on_postgres() {
    small_runs_lose_nothing(Backend::Postgres).await;
}
