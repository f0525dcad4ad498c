//! Webhook delivery: the worker that claims due deliveries from the outbox,
//! sends them with bounded concurrency, and records each attempt with the
//! delivery's next step (done, retry at a time, or dead).
//!
//! Guarantees and where they come from:
//! * at-least-once: a delivery leaves `pending` only after an attempt's
//!   outcome is committed; a worker that dies leaves a lease that expires and
//!   the delivery is claimed again;
//! * ordering: the claim only takes the first pending delivery of each lane
//!   (see `store::Store::claim_deliveries`), so a later event about the same
//!   media waits for the earlier one to succeed or die;
//! * isolation: each endpoint has its own in-flight cap, and endpoints at
//!   their cap are left out of claims, so a hanging endpoint holds at most
//!   its cap of slots and never the others'.

pub mod retry;
pub mod sender;
pub mod target;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::alerts::{self, ALERT_ENDPOINT_ID};
use crate::config::Config;
use crate::store::{
    AttemptRecord, ClaimRequest, ClaimedDelivery, DynStore, HealthPolicy, HealthTally, NextStep,
};
use crate::util::{Heartbeat, new_id, now_ms};
use retry::RetrySchedule;
use sender::{AttemptOutcome, Sender};

/// Records written in one transaction at most.
const RECORD_BATCH: usize = 512;
/// Attempt records waiting for the writer at most.
const RECORD_BACKLOG: usize = RECORD_BATCH * 4;
/// An endpoint failing this long is disabled only with at least this many
/// dead deliveries.
const DISABLE_MIN_DEAD: i64 = 5;
/// Rows removed per retention statement, and statements per maintenance
/// tick: small steps that never hold locks long.
const PURGE_BATCH: i64 = 1000;
const PURGE_STEPS_PER_TICK: usize = 20;
/// How often recorded attempts are folded into their endpoints' health.
///
/// Folding in every record batch put an endpoint update (and on PostgreSQL a
/// row-lock statement) on the path that gates each lane's next delivery; a
/// quarter of a second later costs the health figures nothing that matters.
const HEALTH_FLUSH: Duration = Duration::from_millis(250);
/// How long the worker gathers wake-ups before it claims.
const CLAIM_LINGER: Duration = Duration::from_millis(1);

/// What the API needs from delivery: waking the worker when new work was
/// committed, and sending a delivery right now (the endpoint test).
pub struct Deliverer {
    store: DynStore,
    sender: Sender,
    schedule: RetrySchedule,
    lease: Duration,
    wake: Notify,
    health: HealthPolicy,
    per_endpoint_metrics: bool,
    maintenance_interval: Duration,
    disable_after: Duration,
    retention: Duration,
    /// When the worker last showed it was alive.
    heartbeat: Heartbeat,
    /// Recorded attempts not yet folded into endpoint health. One tally for
    /// the worker and the endpoint test, so they are folded in the order
    /// they were recorded.
    health_tally: tokio::sync::Mutex<HealthTally>,
}

impl Deliverer {
    pub fn new(store: DynStore, config: &Config) -> anyhow::Result<Arc<Self>> {
        let schedule = config.retry_schedule.clone();
        let first_delay_ms = schedule.first_delay().as_millis().min(i64::MAX as u128) as i64;
        Ok(Arc::new(Self {
            store,
            sender: Sender::new(config.delivery_timeout, config.dev)?,
            schedule,
            lease: config.lease_duration(),
            wake: Notify::new(),
            health: HealthPolicy {
                failing_after: config.failing_after.max(1),
                alert_endpoint_id: config
                    .alert_webhook_url
                    .as_ref()
                    .map(|_| ALERT_ENDPOINT_ID.to_string()),
                alert_first_delay_ms: first_delay_ms,
            },
            per_endpoint_metrics: config.metrics_per_endpoint,
            maintenance_interval: config.maintenance_interval.max(Duration::from_millis(100)),
            disable_after: config.disable_after,
            retention: config.retention,
            heartbeat: Heartbeat::default(),
            health_tally: tokio::sync::Mutex::default(),
        }))
    }

    /// Consecutive failed attempts that make an endpoint `failing`.
    pub fn failing_after(&self) -> i64 {
        self.health.failing_after
    }

    fn beat(&self) {
        self.heartbeat.beat();
    }

    /// Whether the delivery worker has shown signs of life recently.
    pub fn worker_alive(&self, now: i64) -> bool {
        self.heartbeat.alive(now, self.maintenance_interval)
    }

    /// Tells the worker that deliveries may be due now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// When a delivery of an event created at `now` is first due.
    pub fn first_attempt_at(&self, now: i64) -> i64 {
        now + self
            .schedule
            .first_delay()
            .as_millis()
            .min(i64::MAX as u128) as i64
    }

    pub fn lease_until(&self, now: i64) -> i64 {
        now + self.lease.as_millis() as i64
    }

    /// Sends an already-leased delivery at once and records the attempt like
    /// any other (a failure is retried on the usual schedule).
    pub async fn send_now(
        &self,
        delivery: &ClaimedDelivery,
    ) -> anyhow::Result<(AttemptOutcome, AttemptRecord)> {
        let outcome = self.sender.send(delivery).await;
        let record = self.record_for(delivery, &outcome);
        self.observe_attempt(delivery, &record);
        let records = std::slice::from_ref(&record);
        self.store.record_attempts(records).await?;
        // Someone is testing this endpoint: its health shows the outcome now
        // (after the attempts recorded before it).
        self.health_tally.lock().await.add(records);
        self.flush_health().await;
        if !matches!(record.next, NextStep::Succeeded) {
            self.wake();
        }
        Ok((outcome, record))
    }

    /// The attempt's log record and the delivery's next step.
    fn record_for(&self, delivery: &ClaimedDelivery, outcome: &AttemptOutcome) -> AttemptRecord {
        let attempt = delivery.previous_attempts + 1;
        let finished_at = outcome.started_at + outcome.duration_ms;
        let next = if outcome.succeeded() {
            NextStep::Succeeded
        } else {
            match self
                .schedule
                .delay_after_failure(attempt as u32, outcome.retry_after)
            {
                Some(delay) => NextStep::RetryAt(finished_at + delay.as_millis() as i64),
                None => NextStep::Dead,
            }
        };
        AttemptRecord {
            delivery_id: delivery.id.clone(),
            endpoint_id: delivery.endpoint_id.clone(),
            lease_token: delivery.lease_token.clone(),
            attempt,
            started_at: outcome.started_at,
            duration_ms: outcome.duration_ms,
            status_code: outcome.status_code.map(i64::from),
            response_body: outcome.response_body.clone(),
            error_class: outcome
                .error
                .as_ref()
                .map(|(class, _)| class.as_str().into()),
            error_message: outcome.error.as_ref().map(|(_, message)| message.clone()),
            next,
        }
    }
}

impl Deliverer {
    /// One log line and the metrics of an attempt.
    fn observe_attempt(&self, delivery: &ClaimedDelivery, record: &AttemptRecord) {
        let outcome = match record.next {
            NextStep::Succeeded => "succeeded",
            NextStep::RetryAt(_) => "retry",
            NextStep::Dead => "dead",
        };
        let class = record.error_class.clone().unwrap_or_else(|| "none".into());
        if self.per_endpoint_metrics {
            metrics::counter!("pixelpatrol_delivery_attempts_total", "outcome" => outcome, "error_class" => class, "webhook_id" => delivery.endpoint_id.clone()).increment(1);
        } else {
            metrics::counter!("pixelpatrol_delivery_attempts_total", "outcome" => outcome, "error_class" => class).increment(1);
        }
        metrics::histogram!("pixelpatrol_delivery_attempt_duration_seconds")
            .record(record.duration_ms as f64 / 1000.0);
        if outcome == "succeeded" {
            let finished = record.started_at + record.duration_ms;
            metrics::histogram!("pixelpatrol_delivery_latency_seconds")
                .record((finished - delivery.event_created_at).max(0) as f64 / 1000.0);
        }
        log_attempt(delivery, record, outcome);
    }
}

fn log_attempt(delivery: &ClaimedDelivery, record: &AttemptRecord, outcome: &str) {
    tracing::info!(
        delivery_id = %delivery.id,
        event_id = %delivery.event_id,
        endpoint_id = %delivery.endpoint_id,
        event = %delivery.event_type,
        attempt = record.attempt,
        outcome,
        status_code = record.status_code,
        duration_ms = record.duration_ms,
        error_class = record.error_class.as_deref(),
        error = record.error_message.as_deref(),
        "delivery attempt"
    );
}

#[derive(Debug, Default)]
struct InFlight {
    total: usize,
    per_endpoint: HashMap<String, usize>,
    /// delivery id → lease token, to give leases back on shutdown.
    leases: HashMap<String, String>,
}

/// The delivery worker of one process.
pub struct Worker {
    deliverer: Arc<Deliverer>,
    max_in_flight: usize,
    max_per_endpoint: usize,
    claim_batch: usize,
    poll_interval: Duration,
    shutdown_grace: Duration,
    in_flight: Arc<Mutex<InFlight>>,
    slot_freed: Arc<Notify>,
}

impl Worker {
    pub fn new(deliverer: Arc<Deliverer>, config: &Config) -> Self {
        Self {
            deliverer,
            max_in_flight: config.delivery_concurrency.max(1),
            max_per_endpoint: config.endpoint_concurrency.max(1),
            claim_batch: config.claim_batch.max(1),
            poll_interval: config.poll_interval,
            shutdown_grace: config.shutdown_grace,
            in_flight: Arc::new(Mutex::new(InFlight::default())),
            slot_freed: Arc::new(Notify::new()),
        }
    }

    /// Runs until `shutdown` is cancelled, then stops claiming, lets in-flight
    /// attempts finish within the grace period, gives back the leases of
    /// those that did not, and writes every outcome it has.
    pub async fn run(self, shutdown: CancellationToken) {
        // Bounded: when the database records attempts slower than they are
        // made, sending waits (holding its slot) instead of piling records
        // up in memory.
        let (records_tx, records_rx) = mpsc::channel(RECORD_BACKLOG);
        let writer = tokio::spawn(write_records(self.deliverer.clone(), records_rx));
        let maintenance = tokio::spawn(maintain(self.deliverer.clone(), shutdown.clone()));
        let mut tasks = JoinSet::new();

        while !shutdown.is_cancelled() {
            self.deliverer.beat();
            while tasks.try_join_next().is_some() {}
            let claimed = match self.try_claim_and_send(&mut tasks, &records_tx).await {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::error!(error = ?error, "claiming deliveries failed");
                    Some(0)
                }
            };
            match claimed {
                // Full batch: there is probably more, claim again at once.
                Some(count) if count == self.claim_batch => continue,
                Some(_) => {
                    let woken = tokio::select! {
                        _ = self.deliverer.wake.notified() => true,
                        _ = self.slot_freed.notified() => true,
                        _ = tokio::time::sleep(self.poll_interval) => false,
                        _ = shutdown.cancelled() => false,
                    };
                    if woken {
                        self.linger().await;
                    }
                }
                // No free slot: wait for one.
                None => {
                    tokio::select! {
                        _ = self.slot_freed.notified() => self.linger().await,
                        _ = shutdown.cancelled() => {}
                    }
                }
            }
        }

        let drained = tokio::time::timeout(self.shutdown_grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
            let leases: Vec<(String, String)> = self
                .in_flight
                .lock()
                .expect("in-flight lock")
                .leases
                .drain()
                .collect();
            tracing::warn!(
                count = leases.len(),
                "attempts still in flight at shutdown; releasing their leases"
            );
            if let Err(error) = self.deliverer.store.release_leases(&leases).await {
                // The leases expire on their own; the deliveries are retried then.
                tracing::error!(error = ?error, "releasing leases failed");
            }
        }
        drop(records_tx);
        let _ = maintenance.await;
        if let Err(error) = writer.await {
            tracing::error!(error = ?error, "the attempt writer stopped abnormally");
        }
    }

    /// A wake-up usually comes with more behind it (attempts finish and
    /// submissions commit one after another): waiting a moment lets one
    /// claim take them all instead of one claim each.
    async fn linger(&self) {
        tokio::time::sleep(CLAIM_LINGER).await;
    }

    /// Claims as many due deliveries as there are free slots and starts
    /// sending them. `None` when every slot is taken.
    async fn try_claim_and_send(
        &self,
        tasks: &mut JoinSet<()>,
        records: &mpsc::Sender<AttemptRecord>,
    ) -> anyhow::Result<Option<usize>> {
        let (free, saturated, endpoint_room) = {
            let in_flight = self.in_flight.lock().expect("in-flight lock");
            let free = self.max_in_flight.saturating_sub(in_flight.total);
            let mut saturated = Vec::new();
            let mut endpoint_room = Vec::new();
            for (endpoint, count) in &in_flight.per_endpoint {
                match self.max_per_endpoint.saturating_sub(*count) {
                    0 => saturated.push(endpoint.clone()),
                    room => endpoint_room.push((endpoint.clone(), room as i64)),
                }
            }
            (free, saturated, endpoint_room)
        };
        if free == 0 {
            return Ok(None);
        }
        let token = new_id("lease");
        let now = now_ms();
        let batch = self
            .deliverer
            .store
            .claim_deliveries(ClaimRequest {
                lease_token: &token,
                now_ms: now,
                lease_until_ms: self.deliverer.lease_until(now),
                limit: free.min(self.claim_batch) as i64,
                skip_endpoints: &saturated,
                max_per_endpoint: self.max_per_endpoint as i64,
                endpoint_room: &endpoint_room,
            })
            .await?;
        let count = batch.len();
        {
            let mut in_flight = self.in_flight.lock().expect("in-flight lock");
            for delivery in &batch {
                in_flight
                    .leases
                    .insert(delivery.id.clone(), delivery.lease_token.clone());
                in_flight.total += 1;
                *in_flight
                    .per_endpoint
                    .entry(delivery.endpoint_id.clone())
                    .or_default() += 1;
            }
        }
        for delivery in batch {
            let deliverer = self.deliverer.clone();
            let records = records.clone();
            let in_flight = self.in_flight.clone();
            let slot_freed = self.slot_freed.clone();
            tasks.spawn(async move {
                let outcome = deliverer.sender.send(&delivery).await;
                let record = deliverer.record_for(&delivery, &outcome);
                deliverer.observe_attempt(&delivery, &record);
                // The writer outlives every task; a send error only happens
                // if it died, and then the lease expires and the delivery is
                // sent again.
                let _ = records.send(record).await;
                {
                    let mut in_flight = in_flight.lock().expect("in-flight lock");
                    in_flight.total -= 1;
                    in_flight.leases.remove(&delivery.id);
                    if let Some(slot) = in_flight.per_endpoint.get_mut(&delivery.endpoint_id) {
                        *slot -= 1;
                        if *slot == 0 {
                            in_flight.per_endpoint.remove(&delivery.endpoint_id);
                        }
                    }
                }
                slot_freed.notify_one();
            });
        }
        Ok(Some(count))
    }
}

/// The worker's periodic chores: planner statistics (see `Store::maintain`),
/// disabling endpoints that have failed too long, retention, and the queue
/// gauges.
async fn maintain(deliverer: Arc<Deliverer>, shutdown: CancellationToken) {
    deliverer.beat();
    let mut tick = tokio::time::interval(deliverer.maintenance_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut queue_gauges_due = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        deliverer.beat();
        if let Err(error) = maintenance_tick(&deliverer, &mut queue_gauges_due).await {
            tracing::warn!(error = ?error, "maintenance failed");
        }
    }
}

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
    let now = now_ms();
    let changes = store
        .disable_failing_endpoints(
            now,
            now - deliverer.disable_after.as_millis() as i64,
            DISABLE_MIN_DEAD,
            &deliverer.health,
        )
        .await?;
    alerts::report(&changes);
    if !changes.is_empty() {
        deliverer.wake();
    }
    let cutoff = now - deliverer.retention.as_millis() as i64;
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
        .set(oldest.map_or(0.0, |oldest| (now - oldest).max(0) as f64 / 1000.0));
    Ok(())
}

/// Writes attempt records in batches (one transaction for all that queued up
/// meanwhile) and wakes the worker, since each write can unblock a lane; and
/// every `HEALTH_FLUSH` (at once after a 410 Gone, which disables), folds
/// what was recorded into endpoint health.
///
/// While the database is away, records are kept and retried. A record the
/// working database refuses (poison) is dropped after a few tries: its lease
/// expires and the delivery is sent again, a duplicate at worst, never a loss.
async fn write_records(deliverer: Arc<Deliverer>, mut records: mpsc::Receiver<AttemptRecord>) {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    let mut unfolded = false;
    let mut next_flush = tokio::time::Instant::now() + HEALTH_FLUSH;
    loop {
        let received = tokio::select! {
            received = records.recv_many(&mut batch, RECORD_BATCH) => received,
            _ = tokio::time::sleep_until(next_flush), if unfolded => {
                unfolded = !deliverer.flush_health().await;
                next_flush = tokio::time::Instant::now() + HEALTH_FLUSH;
                continue;
            }
        };
        if received == 0 {
            break;
        }
        let gone = batch.iter().any(|record| record.status_code == Some(410));
        write_batch(&deliverer, &records, &mut batch).await;
        unfolded = true;
        batch.clear();
        deliverer.wake();
        if gone || tokio::time::Instant::now() >= next_flush {
            unfolded = !deliverer.flush_health().await;
            next_flush = tokio::time::Instant::now() + HEALTH_FLUSH;
        }
    }
    for _ in 0..5 {
        if deliverer.flush_health().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tracing::error!("endpoint health of the last attempts could not be saved at shutdown");
}

impl Deliverer {
    /// Folds the tally into endpoint health; on failure it is kept (and keeps
    /// growing) for the next flush. Whether it was folded.
    async fn flush_health(&self) -> bool {
        let mut tally = self.health_tally.lock().await;
        if tally.is_empty() {
            return true;
        }
        match self
            .store
            .fold_health(tally.summaries(), &self.health)
            .await
        {
            Ok(changes) => {
                alerts::report(&changes);
                if !changes.is_empty() {
                    // An alert was written, or an endpoint disabled.
                    self.wake();
                }
                tally.clear();
                true
            }
            Err(error) => {
                tracing::error!(error = ?error, "updating endpoint health failed; kept for the next try");
                false
            }
        }
    }
}

/// Records one batch, retrying while the database is away; what was
/// recorded goes into the health tally.
async fn write_batch(
    deliverer: &Deliverer,
    records: &mpsc::Receiver<AttemptRecord>,
    batch: &mut Vec<AttemptRecord>,
) {
    let store = &deliverer.store;
    let mut backoff = Duration::from_millis(50);
    let mut failures = 0;
    loop {
        let error = match store.record_attempts(batch).await {
            Ok(()) => {
                deliverer.health_tally.lock().await.add(batch);
                return;
            }
            Err(error) => error,
        };
        failures += 1;
        if batch.len() > 1 {
            // One refused record must not hold back the others.
            let offered = batch.len();
            let mut refused = Vec::new();
            for record in batch.drain(..) {
                match store.record_attempts(std::slice::from_ref(&record)).await {
                    Ok(()) => deliverer
                        .health_tally
                        .lock()
                        .await
                        .add(std::slice::from_ref(&record)),
                    Err(_) => refused.push(record),
                }
            }
            *batch = refused;
            if batch.is_empty() {
                return;
            }
            if batch.len() < offered {
                for record in batch.iter() {
                    tracing::error!(error = ?error, delivery_id = %record.delivery_id, "the database refuses this attempt record; dropping it");
                }
                return;
            }
        } else if failures >= 3 && store.get_setting("ping").await.is_ok() {
            tracing::error!(error = ?error, delivery_id = %batch[0].delivery_id, "the database refuses this attempt record; dropping it");
            return;
        }
        if failures >= 5 && records.is_closed() {
            tracing::error!(error = ?error, count = batch.len(), "recording attempts failed at shutdown; these deliveries will be sent again");
            return;
        }
        tracing::error!(error = ?error, count = batch.len(), "recording attempts failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
