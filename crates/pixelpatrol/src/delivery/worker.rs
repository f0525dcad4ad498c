//! The delivery worker: claims due deliveries, keeps each endpoint under its
//! in-flight cap, sends, and hands every outcome to the recorder.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Deliverer;
use super::maintenance::maintain;
use super::recorder::{RECORD_BACKLOG, write_records};
use crate::config::Config;
use crate::model::{
    AttemptRecord, ClaimRequest, ClaimedDelivery, DeliveryId, EndpointId, FreshClaim,
    FreshDelivery, LeaseToken, Timestamp,
};

/// How long the worker gathers wake-ups before it claims.
const CLAIM_LINGER: Duration = Duration::from_millis(1);

#[derive(Debug, Default)]
struct InFlight {
    total: usize,
    per_endpoint: HashMap<EndpointId, usize>,
    /// delivery id → lease token, to give leases back on shutdown.
    leases: HashMap<DeliveryId, LeaseToken>,
}

impl InFlight {
    /// Counts an attempt to `endpoint` in flight.
    fn take(&mut self, endpoint: &EndpointId) {
        self.total += 1;
        *self.per_endpoint.entry(endpoint.clone()).or_default() += 1;
    }

    /// Counts an attempt to `endpoint` finished (or never started).
    fn give_back(&mut self, endpoint: &EndpointId) {
        self.total -= 1;
        if let Some(slot) = self.per_endpoint.get_mut(endpoint) {
            *slot -= 1;
            if *slot == 0 {
                self.per_endpoint.remove(endpoint);
            }
        }
    }
}

/// The attempts being sent, shared by the claim loop and the hand-over.
type Tasks = Arc<Mutex<JoinSet<()>>>;

/// Hand-overs leased at once at most.
const FRESH_BATCH: usize = 512;

/// What starting an attempt needs: the in-flight counts and caps, shared by
/// the claim loop and the hand-over.
#[derive(Clone)]
struct Slots {
    in_flight: Arc<Mutex<InFlight>>,
    slot_freed: Arc<Notify>,
    max_in_flight: usize,
    max_per_endpoint: usize,
}

impl Slots {
    /// Leases and sends the deliveries handed over by this process's
    /// submissions (`Deliverer::hand_over`) as they come, beside the claim
    /// loop (which may be in the middle of a claim): each takes a slot first,
    /// and the claim loop keeps only what still fits when its claim returns,
    /// so the caps hold; what finds no room, or is no longer due (another
    /// process took it, its endpoint was disabled), is left to the claims.
    async fn send_fresh(
        self,
        deliverer: Arc<Deliverer>,
        tasks: Tasks,
        records: mpsc::Sender<AttemptRecord>,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = deliverer.fresh_ready.notified() => {}
                _ = shutdown.cancelled() => return,
            }
            while !shutdown.is_cancelled() {
                let fresh = deliverer.take_fresh(FRESH_BATCH);
                if fresh.is_empty() {
                    break;
                }
                let mut left_over = false;
                let chosen: Vec<FreshDelivery> = {
                    let mut in_flight = self.in_flight.lock().expect("in-flight lock");
                    let mut chosen = Vec::with_capacity(fresh.len());
                    for delivery in fresh {
                        let to_endpoint = in_flight
                            .per_endpoint
                            .get(&delivery.endpoint_id)
                            .copied()
                            .unwrap_or(0);
                        if in_flight.total < self.max_in_flight
                            && to_endpoint < self.max_per_endpoint
                        {
                            in_flight.take(&delivery.endpoint_id);
                            chosen.push(delivery);
                        } else {
                            left_over = true;
                        }
                    }
                    chosen
                };
                let token = LeaseToken::generate();
                let now = Timestamp::now();
                let ids: Vec<DeliveryId> =
                    chosen.iter().map(|delivery| delivery.id.clone()).collect();
                let claimed = deliverer
                    .store
                    .claim_fresh_deliveries(FreshClaim {
                        lease_token: &token,
                        now,
                        lease_until: deliverer.lease_until(now),
                        ids: &ids,
                    })
                    .await
                    .unwrap_or_else(|error| {
                        tracing::error!(error = ?error, "leasing handed-over deliveries failed; they wait for a claim");
                        Vec::new()
                    });
                {
                    let leased: HashSet<&DeliveryId> =
                        claimed.iter().map(|delivery| &delivery.id).collect();
                    let mut in_flight = self.in_flight.lock().expect("in-flight lock");
                    for delivery in chosen
                        .iter()
                        .filter(|delivery| !leased.contains(&delivery.id))
                    {
                        in_flight.give_back(&delivery.endpoint_id);
                        left_over = true;
                    }
                }
                if left_over {
                    // A slot given back without a send: the claim loop may
                    // be waiting for one.
                    self.slot_freed.notify_one();
                }
                for delivery in claimed {
                    self.start_sending(&deliverer, &tasks, &records, delivery);
                }
                if left_over {
                    deliverer.wake();
                }
            }
        }
    }

    /// Sends one leased delivery whose slot is taken, and hands its outcome
    /// to the recorder; the slot is given back when it is done.
    fn start_sending(
        &self,
        deliverer: &Arc<Deliverer>,
        tasks: &Tasks,
        records: &mpsc::Sender<AttemptRecord>,
        delivery: ClaimedDelivery,
    ) {
        self.in_flight
            .lock()
            .expect("in-flight lock")
            .leases
            .insert(delivery.id.clone(), delivery.lease_token.clone());
        let deliverer = deliverer.clone();
        let records = records.clone();
        let in_flight = self.in_flight.clone();
        let slot_freed = self.slot_freed.clone();
        tasks.lock().expect("tasks lock").spawn(async move {
            let outcome = deliverer.sender.send(&delivery).await;
            let record = deliverer.record_for(&delivery, &outcome);
            deliverer.observe_attempt(&delivery, &record);
            // The writer outlives every task; a send error only happens
            // if it died, and then the lease expires and the delivery is
            // sent again.
            let _ = records.send(record).await;
            {
                let mut in_flight = in_flight.lock().expect("in-flight lock");
                in_flight.leases.remove(&delivery.id);
                in_flight.give_back(&delivery.endpoint_id);
            }
            slot_freed.notify_one();
        });
    }
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
        let tasks: Tasks = Arc::default();
        let fresh = tokio::spawn(self.slots().send_fresh(
            self.deliverer.clone(),
            tasks.clone(),
            records_tx.clone(),
            shutdown.clone(),
        ));
        self.deliverer
            .worker_running
            .store(true, std::sync::atomic::Ordering::Release);

        while !shutdown.is_cancelled() {
            self.deliverer.beat();
            while tasks.lock().expect("tasks lock").try_join_next().is_some() {}
            let claimed = match self.try_claim_and_send(&tasks, &records_tx).await {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::error!(error = ?error, "claiming deliveries failed");
                    Some((0, false))
                }
            };
            match claimed {
                // Full batch: there is probably more, claim again at once.
                Some((count, _)) if count == self.claim_batch => continue,
                Some((_, held_back)) => {
                    // A freed slot is a reason to claim only when room held
                    // the last claim back; otherwise it would find nothing.
                    let held_back = held_back || self.held_back_by_room();
                    let woken = tokio::select! {
                        _ = self.deliverer.wake.notified() => true,
                        _ = self.slot_freed.notified(), if held_back => true,
                        _ = tokio::time::sleep(self.poll_interval) => false,
                        _ = shutdown.cancelled() => false,
                    };
                    if woken {
                        self.linger().await;
                    }
                }
                // No free slot: wait for one (or the poll, should a slot be
                // given back without a send behind it).
                None => {
                    tokio::select! {
                        _ = self.slot_freed.notified() => self.linger().await,
                        _ = tokio::time::sleep(self.poll_interval) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
            }
        }

        self.deliverer
            .worker_running
            .store(false, std::sync::atomic::Ordering::Release);
        let _ = fresh.await;
        // Hand-overs this worker will not take: the other processes hear of
        // them (they are in the database, unleased).
        if !self.deliverer.take_fresh(usize::MAX).is_empty() {
            self.deliverer.wake();
        }
        let mut tasks = std::mem::take(&mut *tasks.lock().expect("tasks lock"));
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

    /// Whether every slot, or every slot of some endpoint, is taken: due
    /// work may have been left behind for want of room.
    fn held_back_by_room(&self) -> bool {
        let in_flight = self.in_flight.lock().expect("in-flight lock");
        in_flight.total >= self.max_in_flight
            || in_flight
                .per_endpoint
                .values()
                .any(|count| *count >= self.max_per_endpoint)
    }

    fn slots(&self) -> Slots {
        Slots {
            in_flight: self.in_flight.clone(),
            slot_freed: self.slot_freed.clone(),
            max_in_flight: self.max_in_flight,
            max_per_endpoint: self.max_per_endpoint,
        }
    }

    /// A wake-up usually comes with more behind it (attempts finish and
    /// submissions commit one after another): waiting a moment lets one
    /// claim take them all instead of one claim each.
    async fn linger(&self) {
        tokio::time::sleep(CLAIM_LINGER).await;
    }

    /// Claims as many due deliveries as there are free slots and starts
    /// sending them: how many were claimed, and whether room held the claim
    /// back (due work may be left for a freed slot). `None` when every slot
    /// is taken.
    async fn try_claim_and_send(
        &self,
        tasks: &Tasks,
        records: &mpsc::Sender<AttemptRecord>,
    ) -> anyhow::Result<Option<(usize, bool)>> {
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
        let limit = free.min(self.claim_batch);
        // Room may have been taken by hand-overs while the claim was out
        // (`Slots::send_fresh`): what no longer fits is given back, due at
        // once, so the caps hold.
        let mut held_back = (count == limit && limit < self.claim_batch) || !saturated.is_empty();
        let mut sending = Vec::with_capacity(count);
        let mut over = Vec::new();
        {
            let mut in_flight = self.in_flight.lock().expect("in-flight lock");
            for delivery in batch {
                let to_endpoint = in_flight
                    .per_endpoint
                    .get(&delivery.endpoint_id)
                    .copied()
                    .unwrap_or(0);
                if in_flight.total < self.max_in_flight && to_endpoint < self.max_per_endpoint {
                    in_flight.take(&delivery.endpoint_id);
                    sending.push(delivery);
                } else {
                    over.push((delivery.id, delivery.lease_token));
                }
            }
        }
        // An endpoint given all the room it had may have more due.
        let mut per_endpoint: HashMap<&EndpointId, usize> = HashMap::new();
        for delivery in &sending {
            *per_endpoint.entry(&delivery.endpoint_id).or_default() += 1;
        }
        held_back |= per_endpoint.iter().any(|(endpoint, taken)| {
            let room = endpoint_room
                .iter()
                .find(|(id, _)| id == *endpoint)
                .map_or(self.max_per_endpoint, |(_, room)| *room as usize);
            *taken >= room
        });
        if !over.is_empty() {
            held_back = true;
            if let Err(error) = self.deliverer.store.release_leases(&over).await {
                tracing::warn!(error = ?error, "giving back claimed deliveries without room failed; they are due when their lease ends");
            }
        }
        let slots = self.slots();
        for delivery in sending {
            slots.start_sending(&self.deliverer, tasks, records, delivery);
        }
        Ok(Some((count, held_back)))
    }
}
