//! Group commit for submissions, the same on both backends.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use pixelpatrol_core::model::{Media, NewEvent};

/// A submission: the item, its `media.created` event, whether to queue analysis.
pub type NewMedia = (Media, NewEvent, bool);
type MediaRequest = (NewMedia, oneshot::Sender<Result<(), String>>);

/// Writes a group of submissions in one transaction.
pub type WriteMedia = Arc<
    dyn Fn(Vec<NewMedia>) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> + Send + Sync,
>;

/// Group commit for submissions: a commit costs far more than the rows in
/// it (SQLite has one writer; PostgreSQL flushes its WAL per commit), so
/// submissions that arrive while the previous group commits are written
/// together in the next transaction.
#[derive(Clone)]
pub struct MediaBatcher {
    requests: mpsc::Sender<MediaRequest>,
}

impl std::fmt::Debug for MediaBatcher {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("MediaBatcher")
            .finish_non_exhaustive()
    }
}

/// Submissions written in one transaction at most.
const MEDIA_BATCH: usize = 128;

impl MediaBatcher {
    /// `writers` groups are written at once at most: SQLite has one writer,
    /// PostgreSQL commits several transactions in parallel.
    pub fn start(write: WriteMedia, writers: usize) -> Self {
        let (requests, queue) = mpsc::channel::<MediaRequest>(MEDIA_BATCH * 8);
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        for _ in 0..writers.max(1) {
            let (queue, write) = (queue.clone(), write.clone());
            tokio::spawn(async move {
                let mut batch = Vec::with_capacity(MEDIA_BATCH);
                loop {
                    // The next writer takes what gathered while this one waited.
                    if queue.lock().await.recv_many(&mut batch, MEDIA_BATCH).await == 0 {
                        return;
                    }
                    let items: Vec<NewMedia> = batch.iter().map(|(item, _)| item.clone()).collect();
                    match write(items).await {
                        Ok(()) => {
                            for (_, reply) in batch.drain(..) {
                                let _ = reply.send(Ok(()));
                            }
                        }
                        // One bad item must not fail the others: alone, each
                        // gets its own answer.
                        Err(_) => {
                            for (item, reply) in batch.drain(..) {
                                let result = write(vec![item]).await;
                                let _ = reply.send(result.map_err(|error| format!("{error:#}")));
                            }
                        }
                    }
                }
            });
        }
        MediaBatcher { requests }
    }

    pub async fn submit(&self, item: NewMedia) -> anyhow::Result<()> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send((item, reply))
            .await
            .map_err(|_| anyhow::anyhow!("the submission writer has stopped"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the submission writer has stopped"))?
            .map_err(|error| anyhow::anyhow!(error))
    }
}
