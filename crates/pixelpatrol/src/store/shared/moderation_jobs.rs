//! Durable analysis jobs (shared by both backends: compiled into each).

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::QueryBuilder;

use super::{BackendStore, Db, locks};
use crate::model::{Media, ModerationJob};
use crate::store::ModerationQueue;
use crate::store::rows::{LeasedJobRow, MEDIA_COLUMNS, MediaRow};

#[async_trait]
impl ModerationQueue for BackendStore {
    async fn enqueue_moderation(&self, media_id: &str, now_ms: i64) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO moderation_jobs (media_id, attempts, due_at, created_at) VALUES ($1, 0, $2, $2) \
             ON CONFLICT (media_id) DO UPDATE SET attempts = 0, due_at = $2, created_at = $2, \
             lease_token = NULL, leased_until = NULL",
        )
        .bind(media_id)
        .bind(now_ms)
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
        let sql = format!(
            "UPDATE moderation_jobs SET lease_token = $1, leased_until = $2, attempts = attempts + 1 \
             WHERE media_id IN (SELECT media_id FROM moderation_jobs \
               WHERE due_at <= $3 AND (leased_until IS NULL OR leased_until < $3) \
               ORDER BY due_at LIMIT $4 {}) \
             RETURNING media_id, attempts, created_at",
            locks::JOB_CLAIM_LOCK
        );
        let mut tx = self.write.begin().await?;
        let rows: Vec<LeasedJobRow> = sqlx::query_as(&sql)
            .bind(lease_token)
            .bind(lease_until_ms)
            .bind(now_ms)
            .bind(limit)
            .fetch_all(&mut *tx)
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
