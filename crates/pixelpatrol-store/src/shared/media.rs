//! Media items and their decisions (shared by both backends: compiled into
//! each).

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use anyhow::Context as _;
use async_trait::async_trait;
use pixelpatrol_webhooks::EventType;
use sqlx::QueryBuilder;

use super::{BackendStore, Db};
use pixelpatrol_core::model::{
    AuditEntry, DecideOutcome, DecisionRecord, Endpoint, Media, MediaFilter, MediaId, MediaStatus,
    ModerationJob, NewEvent, RuleGroupId, SiteId, Timestamp,
};
use pixelpatrol_core::store::MediaStore;
use pixelpatrol_store::batcher::NewMedia;
use pixelpatrol_store::rows::{MEDIA_COLUMNS, MediaRow};

/// Media items written per statement (SQLite's bound-parameter limit).
const MEDIA_CHUNK: usize = 1000;

impl BackendStore {
    /// Writes media items with their `media.created` events and deliveries,
    /// all in one transaction.
    pub(super) async fn write_media_batch(
        pool: &sqlx::Pool<Db>,
        items: &[NewMedia],
    ) -> anyhow::Result<()> {
        let mut tx = super::locks::begin_write(pool).await?;
        for chunk in items.chunks(MEDIA_CHUNK) {
            let mut insert = QueryBuilder::<Db>::new(
                "INSERT INTO media (id, site_id, app_media_id, content_type, content_url, body, \
                 metadata, status, review_note, decided_by, rule_group_id, created_at, updated_at, moderated_at) ",
            );
            insert.push_values(chunk, |mut values, (media, _, _)| {
                values
                    .push_bind(media.id.as_str())
                    .push_bind(media.site_id.as_str())
                    .push_bind(&media.app_media_id)
                    .push_bind(&media.content_type)
                    .push_bind(&media.content_url)
                    .push_bind(&media.body)
                    .push_bind(media.metadata.to_string())
                    .push_bind(media.status.as_str())
                    .push_bind(&media.review_note)
                    .push_bind(media.decided_by.map(|by| by.as_str()))
                    .push_bind(media.rule_group_id.as_ref().map(RuleGroupId::as_str))
                    .push_bind(media.created_at.millis())
                    .push_bind(media.updated_at.millis())
                    .push_bind(media.moderated_at.map(Timestamp::millis));
            });
            insert.build().persistent(false).execute(&mut *tx).await?;
            let analyze: Vec<&Media> = chunk
                .iter()
                .filter(|(_, _, analyze)| *analyze)
                .map(|(media, _, _)| media)
                .collect();
            if !analyze.is_empty() {
                let mut jobs = QueryBuilder::<Db>::new(
                    "INSERT INTO moderation_jobs (media_id, attempts, due_at, created_at) ",
                );
                jobs.push_values(analyze, |mut values, media| {
                    values
                        .push_bind(media.id.as_str())
                        .push_bind(0_i64)
                        .push_bind(media.created_at.millis())
                        .push_bind(media.created_at.millis());
                });
                jobs.build().persistent(false).execute(&mut *tx).await?;
            }
        }
        // Each site's subscribers are read once per batch.
        let mut subscribers: HashMap<(SiteId, EventType), Vec<Endpoint>> = HashMap::new();
        for (media, event, _) in items {
            let key = (media.site_id.clone(), event.event_type);
            if let Entry::Vacant(slot) = subscribers.entry(key) {
                slot.insert(
                    Self::subscribed_endpoints(&mut tx, &media.site_id, event.event_type).await?,
                );
            }
        }
        let targets: Vec<Vec<&Endpoint>> = items
            .iter()
            .map(|(media, event, _)| {
                subscribers[&(media.site_id.clone(), event.event_type)]
                    .iter()
                    .collect()
            })
            .collect();
        let events: Vec<(&NewEvent, &[&Endpoint])> = items
            .iter()
            .zip(&targets)
            .map(|((_, event, _), endpoints)| (event, endpoints.as_slice()))
            .collect();
        Self::insert_events(&mut tx, &events, None).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl MediaStore for BackendStore {
    async fn create_media(
        &self,
        media: &Media,
        event: &NewEvent,
        analyze: bool,
    ) -> anyhow::Result<()> {
        self.media_batcher
            .submit((media.clone(), event.clone(), analyze))
            .await
    }

    async fn get_media(&self, id: &MediaId) -> anyhow::Result<Option<Media>> {
        let id = id.as_str();
        let row = sqlx::query_as!(
            MediaRow,
            "SELECT id, site_id, app_media_id, content_type, content_url, body, metadata, status, \
             review_note, decided_by, reviewer_id, reviewer_email, rule_group_id, ai_labels, \
             applied_rules, processing_ms, created_at, updated_at, moderated_at FROM media WHERE id = $1",
            id
        )
        .fetch_optional(&self.read)
        .await?;
        row.map(Media::try_from).transpose()
    }

    async fn list_media(
        &self,
        site_id: &SiteId,
        filter: &MediaFilter,
    ) -> anyhow::Result<Vec<Media>> {
        let mut query = QueryBuilder::<Db>::new(format!(
            "SELECT {MEDIA_COLUMNS} FROM media WHERE site_id = "
        ));
        query.push_bind(site_id.as_str());
        if let Some(status) = filter.status {
            query.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(before) = &filter.before_id {
            query.push(" AND id < ").push_bind(before.as_str());
        }
        query
            .push(" ORDER BY id DESC LIMIT ")
            .push_bind(filter.limit);
        let rows: Vec<MediaRow> = query
            .build_query_as()
            .persistent(false)
            .fetch_all(&self.read)
            .await?;
        rows.into_iter().map(Media::try_from).collect()
    }

    async fn media_status_counts(
        &self,
        site_id: &SiteId,
    ) -> anyhow::Result<Vec<(MediaStatus, i64)>> {
        let site_id = site_id.as_str();
        let rows = sqlx::query!(
            r#"SELECT status, COUNT(*) AS "count!: i64" FROM media WHERE site_id = $1 GROUP BY status"#,
            site_id
        )
        .fetch_all(&self.read)
        .await?;
        rows.into_iter()
            .map(|row| {
                let status = MediaStatus::parse(&row.status)
                    .with_context(|| format!("unknown media status {:?}", row.status))?;
                Ok((status, row.count))
            })
            .collect()
    }

    async fn media_per_day(
        &self,
        site_id: &SiteId,
        since: Timestamp,
    ) -> anyhow::Result<Vec<(Timestamp, i64, i64)>> {
        const DAY_MS: i64 = 86_400_000;
        let (site_id, since) = (site_id.as_str(), since.millis());
        let submitted = sqlx::query!(
            r#"SELECT created_at / 86400000 AS "day!: i64", COUNT(*) AS "count!: i64"
               FROM media WHERE site_id = $1 AND created_at >= $2 GROUP BY created_at / 86400000"#,
            site_id,
            since
        )
        .fetch_all(&self.read)
        .await?;
        let decided = sqlx::query!(
            r#"SELECT moderated_at / 86400000 AS "day!: i64", COUNT(*) AS "count!: i64"
               FROM media WHERE site_id = $1 AND moderated_at >= $2 GROUP BY moderated_at / 86400000"#,
            site_id,
            since
        )
        .fetch_all(&self.read)
        .await?;
        let mut days: std::collections::BTreeMap<i64, (i64, i64)> = Default::default();
        for row in submitted {
            days.entry(row.day).or_default().0 = row.count;
        }
        for row in decided {
            days.entry(row.day).or_default().1 = row.count;
        }
        Ok(days
            .into_iter()
            .map(|(day, (submitted, decided))| {
                (Timestamp::from_millis(day * DAY_MS), submitted, decided)
            })
            .collect())
    }

    async fn decide_media(
        &self,
        media_id: &MediaId,
        decision: &DecisionRecord,
        event: &NewEvent,
        job: Option<&ModerationJob>,
        audit: Option<&AuditEntry>,
    ) -> anyhow::Result<DecideOutcome> {
        let mut tx = super::locks::begin_write(&self.write).await?;
        let media_id = media_id.as_str();
        match job {
            // A person decided: any analysis still queued is moot.
            None => {
                sqlx::query!("DELETE FROM moderation_jobs WHERE media_id = $1", media_id)
                    .execute(&mut *tx)
                    .await?;
            }
            Some(job) => {
                let lease_token = job.lease_token.as_str();
                let removed = sqlx::query!(
                    "DELETE FROM moderation_jobs WHERE media_id = $1 AND lease_token = $2",
                    media_id,
                    lease_token
                )
                .execute(&mut *tx)
                .await?;
                if removed.rows_affected() != 1 {
                    return Ok(DecideOutcome::LeaseLost);
                }
            }
        }
        let (labels, rules, processing_ms) = match &decision.analysis {
            Some((labels, rules, processing_ms)) => (
                Some(serde_json::to_string(labels)?),
                Some(serde_json::to_string(rules)?),
                Some(*processing_ms),
            ),
            None => (None, None, None),
        };
        // Updating the row first also serialises concurrent decisions about
        // one item, so their events are numbered in commit order. An
        // automatic decision never replaces a person's.
        let manual = job.is_none();
        let (status, decided_by) = (decision.status.as_str(), decision.decided_by.as_str());
        let moderated_at = decision.moderated_at.millis();
        let reviewer_id = decision
            .reviewer
            .as_ref()
            .map(|actor| actor.user_id.as_str());
        let reviewer_email = decision.reviewer.as_ref().map(|actor| actor.email.as_str());
        let row = sqlx::query_as!(
            MediaRow,
            "UPDATE media SET status = $1, decided_by = $2, review_note = $3, \
             moderated_at = $4, updated_at = $4, ai_labels = COALESCE($5, ai_labels), \
             applied_rules = COALESCE($6, applied_rules), processing_ms = COALESCE($7, processing_ms), \
             reviewer_id = $10, reviewer_email = $11 \
             WHERE id = $8 AND ($9 OR decided_by IS NULL OR decided_by NOT IN ('person', 'manual')) \
             RETURNING id, site_id, app_media_id, content_type, content_url, body, metadata, status, \
             review_note, decided_by, reviewer_id, reviewer_email, rule_group_id, ai_labels, \
             applied_rules, processing_ms, created_at, updated_at, moderated_at",
            status,
            decided_by,
            decision.note,
            moderated_at,
            labels,
            rules,
            processing_ms,
            media_id,
            manual,
            reviewer_id,
            reviewer_email
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            if job.is_some() {
                // The job is done all the same.
                tx.commit().await?;
                return Ok(DecideOutcome::ManuallyReviewed);
            }
            return Ok(DecideOutcome::NotFound);
        };
        let media = Media::try_from(row)?;
        let endpoints =
            Self::subscribed_endpoints(&mut tx, &media.site_id, event.event_type).await?;
        let targets: Vec<&Endpoint> = endpoints.iter().collect();
        Self::insert_event(&mut tx, event, &targets, None).await?;
        Self::insert_audit_if(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(DecideOutcome::Decided(Box::new(media)))
    }
}
