//! The store the server runs on: the storage roles
//! ([`pixelpatrol_core::store`]) and the backend the database URL names,
//! each a crate of its own (`pixelpatrol-store-sqlite`,
//! `pixelpatrol-store-postgres`).

use std::sync::Arc;

use anyhow::Context as _;

pub use pixelpatrol_core::store::*;
pub use pixelpatrol_store_postgres::PostgresStore;
pub use pixelpatrol_store_sqlite::SqliteStore;

/// Opens (creating if needed) and migrates the database named by `url`.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<DynStore> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = PostgresStore::connect(url, max_connections)
            .await
            .context("cannot open the PostgreSQL database")?;
        Ok(Arc::new(store))
    } else if url.starts_with("sqlite:") {
        let store = SqliteStore::connect(url, max_connections)
            .await
            .context("cannot open the SQLite database")?;
        Ok(Arc::new(store))
    } else {
        anyhow::bail!("unsupported database URL {url:?}: use sqlite://FILE or postgres://…")
    }
}
