//! Durable analysis jobs (shared by both backends: compiled into each).

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::QueryBuilder;

use super::{BackendStore, Db, locks};
use pixelpatrol_core::model::{Media, ModerationJob};
use pixelpatrol_core::store::ModerationQueue;
use pixelpatrol_store::rows::{MEDIA_COLUMNS, MediaRow};

#[async_trait]
impl ModerationQueue for BackendStore {
    async fn enqueue_moderation(&self, media_id: &str, now_ms: i64) -> anyhow::Result<()> {
        sqlx::query!(
            "INSERT INTO moderation_jobs (media_id, attempts, due_at, created_at) VALUES ($1, 0, $2, $2) \
             ON CONFLICT (media_id) DO UPDATE SET attempts = 0, due_at = $2, created_at = $2, \
             lease_token = NULL, leased_until = NULL",
            media_id,
            now_ms
        )
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn claim_moderation_jobs(
        &self,
        lease_token: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> anyhow::Result<Vec<ModerationJob>> {
        let mut tx = self.write.begin().await?;
        let rows =
            locks::lease_moderation_jobs(&mut tx, lease_token, now_ms, lease_until_ms, limit)
                .await?;
        let leased: HashMap<String, (i64, i64)> = rows
            .into_iter()
            .map(|row| (row.media_id, (row.attempts, row.created_at)))
            .collect();
        let mut jobs = Vec::with_capacity(leased.len());
        if !leased.is_empty() {
            let mut query =
                QueryBuilder::<Db>::new(format!("SELECT {MEDIA_COLUMNS} FROM media WHERE id IN ("));
            let mut ids = query.separated(", ");
            for id in leased.keys() {
                ids.push_bind(id);
            }
            query.push(") ORDER BY id");
            let rows: Vec<MediaRow> = query
                .build_query_as()
                .persistent(false)
                .fetch_all(&mut *tx)
                .await?;
            for row in rows {
                let media = Media::try_from(row)?;
                let (attempts, requested_at) = leased[&media.id];
                jobs.push(ModerationJob {
                    media,
                    lease_token: lease_token.to_string(),
                    attempts,
                    requested_at,
                });
            }
        }
        tx.commit().await?;
        Ok(jobs)
    }
}
