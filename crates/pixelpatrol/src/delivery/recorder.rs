//! The recorder: attempt outcomes written in batches, and folded into
//! endpoint health off the path that gates each lane's next delivery.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::Deliverer;
use crate::alerts;
use crate::model::AttemptRecord;

/// Records written in one transaction at most.
const RECORD_BATCH: usize = 512;
/// Attempt records waiting for the writer at most.
pub(super) const RECORD_BACKLOG: usize = RECORD_BATCH * 4;
/// How often recorded attempts are folded into their endpoints' health.
///
/// Folding in every record batch put an endpoint update (and on PostgreSQL a
/// row-lock statement) on the path that gates each lane's next delivery; a
/// quarter of a second later costs the health figures nothing that matters.
const HEALTH_FLUSH: Duration = Duration::from_millis(250);

/// Writes attempt records in batches (one transaction for all that queued up
/// meanwhile) and wakes the worker, since each write can unblock a lane; and
/// every `HEALTH_FLUSH` (at once after a 410 Gone, which disables), folds
/// what was recorded into endpoint health.
///
/// While the database is away, records are kept and retried. A record the
/// working database refuses (poison) is dropped after a few tries: its lease
/// expires and the delivery is sent again, a duplicate at worst, never a loss.
pub(super) async fn write_records(
    deliverer: Arc<Deliverer>,
    mut records: mpsc::Receiver<AttemptRecord>,
) {
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
        deliverer.wake_worker();
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
    pub(super) async fn flush_health(&self) -> bool {
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
