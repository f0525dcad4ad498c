//! Word of committed work between the processes on one database, with
//! `LISTEN`/`NOTIFY`: a process that commits deliveries notifies the
//! channel, and every other process's worker wakes and claims at once
//! instead of at its next poll.
//!
//! The notification is sent after the commit, from outside the writing
//! transaction: a `NOTIFY` inside it would take PostgreSQL's notification
//! queue lock at every commit and serialize the writers. Sent late or
//! lost, it costs a poll interval; the deliveries are in the outbox either
//! way.

use async_trait::async_trait;
use pixelpatrol_core::store::WorkSignals;
use sqlx::postgres::PgListener;

use super::PostgresStore;

/// The channel every process listens on.
const WORK_CHANNEL: &str = "pixelpatrol_work";

#[async_trait]
impl WorkSignals for PostgresStore {
    async fn announce_work(&self, sender: &str) -> anyhow::Result<()> {
        sqlx::query!("SELECT pg_notify($1, $2)", WORK_CHANNEL, sender)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn listen_for_work(
        &self,
        me: &str,
        on_work: Box<dyn Fn() + Send + Sync>,
    ) -> anyhow::Result<()> {
        // Its own connection, outside the pool: a listener holds it for good.
        let mut listener = PgListener::connect(&self.url).await?;
        listener.listen(WORK_CHANNEL).await?;
        loop {
            match listener.try_recv().await? {
                // Our own word: our worker was woken in process already.
                Some(signal) if signal.payload() == me => {}
                Some(_) => on_work(),
                // The connection was lost (the next call reconnects and
                // listens again); what was said meanwhile is gone.
                None => on_work(),
            }
        }
    }
}
