//! The delivery scenarios: throughput, latency, isolation, backlog, fan-out, ordering.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::*;

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
    report.figure(
        "server_cpu_s",
        round2(stage.server.cpu_seconds() - cpu_before),
    );
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

pub(crate) async fn steady_run(
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
        round2(stage.server.cpu_seconds() - cpu_before),
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
    let pending = Backlog::enqueue(setup, params).await?;
    report.figure("enqueue_submissions_per_s", pending.submissions_per_s);
    report.figure("enqueue_server_peak_rss_mib", pending.server_peak_rss_mib);
    let started = Instant::now();
    let drain = pending.drain(setup).await?;
    let drain_time = Duration::from_micros(
        drain
            .stats
            .last_receipt_us
            .unwrap_or(drain.started_us)
            .saturating_sub(drain.started_us),
    );
    report.figure("drain_per_s", rate(drain.stats.delivered, drain_time));
    report.figure(
        "time_to_empty_s",
        (drain_time.as_secs_f64() * 10.0).round() / 10.0,
    );
    report.figure("drain_server_peak_rss_mib", drain.server_peak_rss_mib);
    report.figure("wall_s", started.elapsed().as_secs_f64().round());
    report.delivery_checks(drain.expected, &drain.stats);
    Ok(report)
}

/// A backlog written with no worker running, ready to be drained.
pub(crate) struct Backlog {
    database: Database,
    receiver: ReceiverProcess,
    expected: u64,
    submissions_per_s: f64,
    server_peak_rss_mib: f64,
}

/// How a drain went: the receiver's count sampled every few milliseconds
/// from the full server's start.
pub(crate) struct Drain {
    expected: u64,
    started_us: u64,
    stats: ReceiverStats,
    /// (microseconds since the epoch, deliveries received).
    samples: Vec<(u64, u64)>,
    server_peak_rss_mib: f64,
}

impl Backlog {
    pub(crate) async fn enqueue(setup: &Setup, params: &BacklogParams) -> anyhow::Result<Self> {
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
        let server_peak_rss_mib = stage.server.peak_rss_mib();
        let Stage {
            database,
            server,
            receiver,
            ..
        } = stage;
        server.stop().await?;
        Ok(Backlog {
            database,
            receiver,
            expected: load.accepted * params.endpoints_per_site as u64,
            submissions_per_s: rate(load.accepted, load.elapsed),
            server_peak_rss_mib,
        })
    }

    /// Starts a full server on the backlog and waits until everything
    /// arrived (or nothing arrived for a minute); removes the database.
    pub(crate) async fn drain(self, setup: &Setup) -> anyhow::Result<Drain> {
        let server =
            Server::start(&setup.server_binary, &self.database.url, &setup.server_args).await?;
        let started_us = now_us();
        let mut peak_rss: f64 = 0.0;
        let mut samples = Vec::new();
        let mut last = 0;
        let mut last_change = Instant::now();
        let mut last_rss = Instant::now();
        let stats = loop {
            let stats = self.receiver.stats().await?;
            samples.push((now_us(), stats.delivered));
            if last_rss.elapsed() > Duration::from_millis(250) {
                peak_rss = peak_rss.max(server.rss_mib());
                last_rss = Instant::now();
            }
            if stats.delivered >= self.expected {
                break stats;
            }
            if stats.delivered != last {
                last = stats.delivered;
                last_change = Instant::now();
            } else if last_change.elapsed() > Duration::from_secs(60) {
                break stats;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let drain = Drain {
            expected: self.expected,
            started_us,
            stats,
            samples,
            server_peak_rss_mib: server.peak_rss_mib().max(peak_rss),
        };
        server.stop().await?;
        self.database.drop_database().await;
        Ok(drain)
    }
}

impl Drain {
    /// Deliveries per second between the `from`th and the `to`th receipt
    /// (times interpolated between samples); None when the drain did not
    /// get that far.
    fn rate_between(&self, from: u64, to: u64) -> Option<f64> {
        let time_at = |count: u64| {
            let after = self.samples.iter().position(|(_, n)| *n >= count)?;
            let (t1, n1) = self.samples[after];
            let (t0, n0) = if after == 0 {
                (self.started_us, 0)
            } else {
                self.samples[after - 1]
            };
            let share = if n1 == n0 {
                1.0
            } else {
                (count - n0) as f64 / (n1 - n0) as f64
            };
            Some(t0 as f64 + share * (t1 - t0) as f64)
        };
        let seconds = (time_at(to)? - time_at(from)?) / 1e6;
        Some(((to - from) as f64 / seconds.max(1e-9)).round())
    }
}

#[derive(Debug, Clone)]
pub struct ScalingParams {
    pub sites: usize,
    pub endpoints_per_site: u32,
    /// Pending deliveries of the small and the large backlog.
    pub small: u64,
    pub large: u64,
    pub concurrency: usize,
}

/// Does the cost of a delivery grow with the queue's depth? Two backlogs
/// (10,000 and 1,000,000 pending by default), each drained by a fresh full
/// server; the rate is taken over the same stretch of each drain (from the
/// 10th to the 90th percent of the small backlog), so that the one
/// difference is the number of deliveries waiting behind. The large drain
/// is also measured at later stretches, as its queue shrinks.
pub async fn scaling(setup: &Setup, params: &ScalingParams) -> anyhow::Result<Report> {
    let mut report = Report::new("scaling", setup);
    report.param("sites", params.sites);
    report.param("endpoints_per_site", params.endpoints_per_site);
    report.param("small_pending", params.small);
    report.param("large_pending", params.large);
    anyhow::ensure!(
        params.small < params.large && params.small >= 100,
        "--small must be at least 100 and below --large"
    );
    let (from, to) = (params.small / 10, params.small * 9 / 10);
    report.param(
        "measured",
        format!("deliveries {from} to {to} of each drain"),
    );
    let backlog = |pending: u64| BacklogParams {
        sites: params.sites,
        endpoints_per_site: params.endpoints_per_site,
        events: pending.div_ceil(params.endpoints_per_site as u64),
        concurrency: params.concurrency,
    };
    let mut all_delivered = true;
    let mut rates = Vec::new();
    for (name, pending) in [("small", params.small), ("large", params.large)] {
        let drain = Backlog::enqueue(setup, &backlog(pending))
            .await?
            .drain(setup)
            .await?;
        let measured = drain.rate_between(from, to);
        report.figure(&format!("{name}_pending"), drain.expected);
        report.figure(&format!("{name}_deliveries_per_s"), measured);
        report.figure(
            &format!("{name}_drain_server_peak_rss_mib"),
            drain.server_peak_rss_mib,
        );
        if name == "large" {
            // The same stretch length further into the drain.
            for share in [25, 50, 75] {
                let start = drain.expected * share / 100;
                report.figure(
                    &format!("large_deliveries_per_s_at_{share}_percent_drained"),
                    drain.rate_between(start, start + (to - from)),
                );
            }
        }
        report.figure(
            &format!("{name}_lost"),
            drain.expected.saturating_sub(drain.stats.delivered),
        );
        all_delivered &= drain.stats.delivered >= drain.expected && drain.stats.bad_signatures == 0;
        rates.push(measured.unwrap_or(0.0));
    }
    let ratio = rates[1] / rates[0].max(1.0);
    report.figure("large_over_small", (ratio * 100.0).round() / 100.0);
    report.figure("target_large_over_small_at_least", 0.8);
    report.check("nothing_lost_every_signature_valid", all_delivered);
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
