//! The delivery worker's periodic chores.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Deliverer;
use crate::alerts;
use crate::model::Timestamp;

/// An endpoint failing this long is disabled only with at least this many
/// dead deliveries.
const DISABLE_MIN_DEAD: i64 = 5;
/// Rows removed per retention statement, and statements per maintenance
/// tick: small steps that never hold locks long.
const PURGE_BATCH: i64 = 1000;
const PURGE_STEPS_PER_TICK: usize = 20;

/// The worker's periodic chores: planner statistics (see `store::Maintenance::maintain`),
/// disabling endpoints that have failed too long, retention, and the queue
/// gauges; and seldom, the sweep of orphaned deliveries.
pub(super) async fn maintain(deliverer: Arc<Deliverer>, shutdown: CancellationToken) {
    deliverer.beat();
    let mut tick = tokio::time::interval(deliverer.maintenance_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut queue_gauges_due = tokio::time::Instant::now();
    let mut orphan_sweep_due = tokio::time::Instant::now() + ORPHAN_SWEEP_INTERVAL;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        deliverer.beat();
        if let Err(error) = maintenance_tick(&deliverer, &mut queue_gauges_due).await {
            tracing::warn!(error = ?error, "maintenance failed");
        }
        if tokio::time::Instant::now() >= orphan_sweep_due {
            orphan_sweep_due = tokio::time::Instant::now() + ORPHAN_SWEEP_INTERVAL;
            match deliverer.store.sweep_orphaned_deliveries().await {
                Ok(0) => {}
                Ok(count) => {
                    tracing::info!(
                        count,
                        "removed deliveries whose endpoint or event was deleted"
                    )
                }
                Err(error) => tracing::warn!(error = ?error, "sweeping orphaned deliveries failed"),
            }
        }
    }
}

/// How often the worker looks for deliveries left behind by a deletion
/// (`store::Maintenance::sweep_orphaned_deliveries`): they only come from a
/// race between a deletion and a submission or resend, they are never sent,
/// and the look reads the whole queue, so seldom is enough.
const ORPHAN_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

/// The queue gauges count every pending delivery: with a backlog of millions
/// that is a second of database time. They are refreshed at most every
/// `QUEUE_GAUGES_COST_RATIO` times the last count's duration, so counting
/// never takes more than a small share of the database however deep the
/// queue (at most every maintenance tick).
const QUEUE_GAUGES_COST_RATIO: u32 = 40;

async fn maintenance_tick(
    deliverer: &Deliverer,
    queue_gauges_due: &mut tokio::time::Instant,
) -> anyhow::Result<()> {
    let store = &deliverer.store;
    store.maintain().await?;
    let now = Timestamp::now();
    let changes = store
        .disable_failing_endpoints(
            now,
            now - deliverer.disable_after,
            DISABLE_MIN_DEAD,
            &deliverer.health,
        )
        .await?;
    alerts::report(&changes);
    if !changes.is_empty() {
        deliverer.wake();
    }
    let cutoff = now - deliverer.retention;
    let mut purged = (0, 0);
    for _ in 0..PURGE_STEPS_PER_TICK {
        let step = store.purge_step(cutoff, PURGE_BATCH).await?;
        purged.0 += step.attempts;
        purged.1 += step.events;
        if step.attempts < PURGE_BATCH as u64 && step.events < PURGE_BATCH as u64 {
            break;
        }
    }
    if purged != (0, 0) {
        metrics::counter!("pixelpatrol_retention_purged_total", "table" => "delivery_attempts")
            .increment(purged.0);
        metrics::counter!("pixelpatrol_retention_purged_total", "table" => "events")
            .increment(purged.1);
        tracing::info!(
            attempts = purged.0,
            events = purged.1,
            "retention purged old delivery data"
        );
    }
    if tokio::time::Instant::now() < *queue_gauges_due {
        return Ok(());
    }
    let started = tokio::time::Instant::now();
    let (pending, oldest) = store.queue_stats().await?;
    *queue_gauges_due = tokio::time::Instant::now() + started.elapsed() * QUEUE_GAUGES_COST_RATIO;
    metrics::gauge!("pixelpatrol_queue_depth").set(pending as f64);
    metrics::gauge!("pixelpatrol_oldest_pending_age_seconds")
        .set(oldest.map_or(0.0, |oldest| now.ms_since(oldest).max(0) as f64 / 1000.0));
    Ok(())
}
