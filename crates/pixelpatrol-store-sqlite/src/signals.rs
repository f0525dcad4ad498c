//! Word of committed work between processes: none on SQLite. One process
//! owns the database file, and its worker is woken in process when work
//! commits; PostgreSQL's file of the same name is where several processes
//! tell each other.

use async_trait::async_trait;
use pixelpatrol_core::store::WorkSignals;

use super::SqliteStore;

#[async_trait]
impl WorkSignals for SqliteStore {
    async fn announce_work(&self, _sender: &str) -> anyhow::Result<()> {
        Ok(())
    }

    async fn listen_for_work(
        &self,
        _me: &str,
        _on_work: Box<dyn Fn() + Send + Sync>,
    ) -> anyhow::Result<()> {
        Ok(())
    }
}
