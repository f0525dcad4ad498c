//! Webhook delivery: the worker that claims due deliveries from the outbox,
//! sends them with bounded concurrency, and records each attempt with the
//! delivery's next step (done, retry at a time, or dead).
//!
//! Guarantees and where they come from:
//! * at-least-once: a delivery leaves `pending` only after an attempt's
//!   outcome is committed; a worker that dies leaves a lease that expires and
//!   the delivery is claimed again;
//! * ordering: the claim only takes the first pending delivery of each lane
//!   (see `store::Outbox::claim_deliveries`), so a later event about the same
//!   media waits for the earlier one to succeed or die;
//! * isolation: each endpoint has its own in-flight cap, and endpoints at
//!   their cap are left out of claims, so a hanging endpoint holds at most
//!   its cap of slots and never the others'.
//!
//! Files: the [`Deliverer`] here (what the API and moderation use: wake the
//! worker, send a test delivery now); `worker.rs` claims and sends;
//! `recorder.rs` writes attempt records in batches and folds endpoint
//! health; `maintenance.rs` runs the periodic chores; `sender.rs` makes one
//! signed HTTP attempt and classifies its failure.

mod maintenance;
mod recorder;
pub mod sender;

mod worker;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::alerts::ALERT_ENDPOINT_ID;
use crate::config::Config;
use crate::model::RetrySchedule;
use crate::model::{
    AttemptRecord, ClaimedDelivery, EndpointId, HealthPolicy, HealthTally, NextStep, Timestamp,
};
use crate::store::DeliveryStore;
use crate::util::Heartbeat;
use sender::{AttemptOutcome, Sender};
pub use worker::Worker;

/// The least time between two signals to the other processes: at most 200
/// a second, and the first after a quiet spell goes at once.
const ANNOUNCE_GAP: Duration = Duration::from_millis(5);

/// What the API needs from delivery: waking the worker when new work was
/// committed, and sending a delivery right now (the endpoint test).
pub struct Deliverer {
    store: Arc<dyn DeliveryStore>,
    sender: Sender,
    schedule: RetrySchedule,
    lease: Duration,
    wake: Notify,
    /// Work was committed here: the other processes on the database are to
    /// hear of it ([`Self::announce_work`]).
    announce: Notify,
    /// This process's id in those signals, by which it ignores its own.
    process_id: String,
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
    pub fn new(store: Arc<dyn DeliveryStore>, config: &Config) -> anyhow::Result<Arc<Self>> {
        let schedule = config.retry_schedule.clone();
        let first_delay_ms = schedule.first_delay().as_millis().min(i64::MAX as u128) as i64;
        Ok(Arc::new(Self {
            store,
            sender: Sender::new(config.delivery_timeout, config.dev)?,
            schedule,
            lease: config.lease_duration(),
            wake: Notify::new(),
            announce: Notify::new(),
            process_id: crate::util::random_token("proc_", 16),
            health: HealthPolicy {
                failing_after: config.failing_after.max(1),
                alert_endpoint_id: config
                    .alert_webhook_url
                    .as_ref()
                    .map(|_| EndpointId::from(ALERT_ENDPOINT_ID)),
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
    pub fn worker_alive(&self, now: Timestamp) -> bool {
        self.heartbeat.alive(now, self.maintenance_interval)
    }

    /// Tells the worker that deliveries were committed and may be due now,
    /// and the workers of the other processes on the database too.
    pub fn wake(&self) {
        self.wake.notify_one();
        self.announce.notify_one();
    }

    /// Wakes this process's worker only (its own bookkeeping freed work it
    /// will claim itself).
    fn wake_worker(&self) {
        self.wake.notify_one();
    }

    /// Passes this process's wake-ups on to the other processes on the
    /// database, until shutdown. Wake-ups coalesce: at most one signal per
    /// `ANNOUNCE_GAP` (5 ms), however many commits (a busy API commits thousands
    /// a second; one signal each would cost the database more than the
    /// poll it saves).
    pub async fn announce_work(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.announce.notified() => {}
            }
            if let Err(error) = self.store.announce_work(&self.process_id).await {
                tracing::warn!(error = %format!("{error:#}"), "could not signal the other processes");
            }
            tokio::time::sleep(ANNOUNCE_GAP).await;
        }
    }

    /// Wakes this process's worker when another process on the database
    /// commits work, until shutdown; the signal connection is opened again
    /// when it fails (polling covers the gap).
    pub async fn listen_for_work(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let deliverer = self.clone();
            let listening = self
                .store
                .listen_for_work(&self.process_id, Box::new(move || deliverer.wake_worker()));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ended = listening => match ended {
                    // Nothing to listen to (one process owns the database).
                    Ok(()) => return,
                    Err(error) => tracing::warn!(
                        error = %format!("{error:#}"),
                        "lost the signals of the other processes; polling until they are back"
                    ),
                },
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => self.wake_worker(),
            }
        }
    }

    /// When a delivery of an event created at `now` is first due.
    pub fn first_attempt_at(&self, now: Timestamp) -> Timestamp {
        now + self.schedule.first_delay()
    }

    pub fn lease_until(&self, now: Timestamp) -> Timestamp {
        now + self.lease
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
        let finished_at = outcome.started_at.plus_ms(outcome.duration_ms);
        let next = if outcome.succeeded() {
            NextStep::Succeeded
        } else {
            match self
                .schedule
                .delay_after_failure(attempt as u32, outcome.retry_after)
            {
                Some(delay) => NextStep::RetryAt(finished_at + delay),
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
            metrics::counter!("pixelpatrol_delivery_attempts_total", "outcome" => outcome, "error_class" => class, "webhook_id" => delivery.endpoint_id.to_string()).increment(1);
        } else {
            metrics::counter!("pixelpatrol_delivery_attempts_total", "outcome" => outcome, "error_class" => class).increment(1);
        }
        metrics::histogram!("pixelpatrol_delivery_attempt_duration_seconds")
            .record(record.duration_ms as f64 / 1000.0);
        if outcome == "succeeded" {
            let finished = record.started_at.plus_ms(record.duration_ms);
            let latency_ms = finished.ms_since(delivery.event_created_at).max(0);
            metrics::histogram!("pixelpatrol_delivery_latency_seconds")
                .record(latency_ms as f64 / 1000.0);
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
