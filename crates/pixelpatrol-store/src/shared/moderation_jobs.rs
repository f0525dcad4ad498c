//! Durable analysis jobs (shared by both backends: compiled into each).

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::QueryBuilder;

use super::{BackendStore, Db, locks};
use pixelpatrol_core::model::{AuditEntry, LeaseToken, Media, MediaId, ModerationJob, Timestamp};
use pixelpatrol_core::store::ModerationQueue;
use pixelpatrol_store::rows::{MEDIA_COLUMNS, MediaRow};

#[async_trait]
impl ModerationQueue for BackendStore {
    async fn enqueue_moderation(
        &self,
        media_id: &MediaId,
        now: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> anyhow::Result<()> {
        let mut tx = locks::begin_write(&self.write).await?;
        let media_id = media_id.as_str();
        let now = now.millis();
        sqlx::query!(
            "INSERT INTO moderation_jobs (media_id, attempts, due_at, created_at) VALUES ($1, 0, $2, $2) \
             ON CONFLICT (media_id) DO UPDATE SET attempts = 0, due_at = $2, created_at = $2, \
             lease_token = NULL, leased_until = NULL",
            media_id,
            now
        )
        .execute(&mut *tx)
        .await?;
        Self::insert_audit_if(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn claim_moderation_jobs(
        &self,
        lease_token: &LeaseToken,
        now: Timestamp,
        lease_until: Timestamp,
        limit: i64,
    ) -> anyhow::Result<Vec<ModerationJob>> {
        let mut tx = locks::begin_write(&self.write).await?;
        let rows =
            locks::lease_moderation_jobs(&mut tx, lease_token, now, lease_until, limit).await?;
        let leased: HashMap<MediaId, (i64, Timestamp)> = rows
            .into_iter()
            .map(|row| {
                let requested_at = Timestamp::from_millis(row.created_at);
                (MediaId::from(row.media_id), (row.attempts, requested_at))
            })
            .collect();
        let mut jobs = Vec::with_capacity(leased.len());
        if !leased.is_empty() {
            let mut query =
                QueryBuilder::<Db>::new(format!("SELECT {MEDIA_COLUMNS} FROM media WHERE id IN ("));
            let mut ids = query.separated(", ");
            for id in leased.keys() {
                ids.push_bind(id.as_str());
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
                    lease_token: lease_token.clone(),
                    attempts,
                    requested_at,
                });
            }
        }
        tx.commit().await?;
        Ok(jobs)
    }
}
