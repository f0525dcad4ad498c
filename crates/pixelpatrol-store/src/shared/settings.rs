//! Server-wide settings (shared by both backends: compiled into each).

use async_trait::async_trait;
use pixelpatrol_core::store::Settings;

use super::BackendStore;

#[async_trait]
impl Settings for BackendStore {
    async fn get_setting(&self, key: &str) -> anyhow::Result<Option<String>> {
        Ok(
            sqlx::query_scalar!("SELECT value FROM settings WHERE key = $1", key)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    async fn put_setting_if_absent(&self, key: &str, value: &str) -> anyhow::Result<String> {
        sqlx::query!(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            key,
            value
        )
        .execute(&self.write)
        .await?;
        Ok(
            sqlx::query_scalar!("SELECT value FROM settings WHERE key = $1", key)
                .fetch_one(&self.write)
                .await?,
        )
    }
}
