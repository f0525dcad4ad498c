//! The delivery worker: claims due deliveries, keeps each endpoint under its
//! in-flight cap, sends, and hands every outcome to the recorder.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Deliverer;
use super::maintenance::maintain;
use super::recorder::{RECORD_BACKLOG, write_records};
use crate::config::Config;
use crate::model::{AttemptRecord, ClaimRequest, DeliveryId, EndpointId, LeaseToken, Timestamp};

/// How long the worker gathers wake-ups before it claims.
const CLAIM_LINGER: Duration = Duration::from_millis(1);

#[derive(Debug, Default)]
struct InFlight {
    total: usize,
    per_endpoint: HashMap<EndpointId, usize>,
    /// delivery id → lease token, to give leases back on shutdown.
    leases: HashMap<DeliveryId, LeaseToken>,
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
            let leases: Vec<(DeliveryId, LeaseToken)> = self
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
        let token = LeaseToken::generate();
        let now = Timestamp::now();
        let batch = self
            .deliverer
            .store
            .claim_deliveries(ClaimRequest {
                lease_token: &token,
                now,
                lease_until: self.deliverer.lease_until(now),
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
