//! Sites (shared by both backends: compiled into each).

use async_trait::async_trait;

use super::{BackendStore, locks};
use pixelpatrol_core::model::{AuditEntry, RuleGroup, Site, SiteId};
use pixelpatrol_core::store::Sites;
use pixelpatrol_store::rows::SiteRow;

#[async_trait]
impl Sites for BackendStore {
    async fn create_site(
        &self,
        site: &Site,
        default_group: &RuleGroup,
        audit: Option<&AuditEntry>,
    ) -> anyhow::Result<()> {
        let mut tx = locks::begin_write(&self.write).await?;
        let id = site.id.as_str();
        let created_at = site.created_at.millis();
        let updated_at = site.updated_at.millis();
        sqlx::query!(
            "INSERT INTO sites (id, name, url, description, key_hash, confidence_threshold, \
             external_analyzer_url, external_analyzer_secret, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            id,
            site.name,
            site.url,
            site.description,
            site.key_hash,
            site.confidence_threshold,
            site.external_analyzer_url,
            site.external_analyzer_secret,
            created_at,
            updated_at,
        )
        .execute(&mut *tx)
        .await?;
        Self::write_rule_group(&mut tx, default_group, true).await?;
        Self::insert_audit_if(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_sites(&self) -> anyhow::Result<Vec<Site>> {
        let rows = sqlx::query_as!(
            SiteRow,
            "SELECT id, name, url, description, key_hash, confidence_threshold, external_analyzer_url, \
             external_analyzer_secret, created_at, updated_at FROM sites ORDER BY created_at, id"
        )
        .fetch_all(&self.read)
        .await?;
        Ok(rows.into_iter().map(Site::from).collect())
    }

    async fn get_site(&self, id: &SiteId) -> anyhow::Result<Option<Site>> {
        let id = id.as_str();
        let row = sqlx::query_as!(
            SiteRow,
            "SELECT id, name, url, description, key_hash, confidence_threshold, external_analyzer_url, \
             external_analyzer_secret, created_at, updated_at FROM sites WHERE id = $1",
            id
        )
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(Site::from))
    }

    async fn site_by_key_hash(&self, key_hash: &str) -> anyhow::Result<Option<Site>> {
        let row = sqlx::query_as!(
            SiteRow,
            "SELECT id, name, url, description, key_hash, confidence_threshold, external_analyzer_url, \
             external_analyzer_secret, created_at, updated_at FROM sites WHERE key_hash = $1",
            key_hash
        )
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(Site::from))
    }

    async fn update_site(&self, site: &Site, audit: Option<&AuditEntry>) -> anyhow::Result<bool> {
        let mut tx = locks::begin_write(&self.write).await?;
        let updated_at = site.updated_at.millis();
        let id = site.id.as_str();
        let result = sqlx::query!(
            "UPDATE sites SET name = $1, url = $2, description = $3, updated_at = $4, \
             confidence_threshold = $6, external_analyzer_url = $7, external_analyzer_secret = $8 \
             WHERE id = $5",
            site.name,
            site.url,
            site.description,
            updated_at,
            id,
            site.confidence_threshold,
            site.external_analyzer_url,
            site.external_analyzer_secret,
        )
        .execute(&mut *tx)
        .await?;
        let updated = result.rows_affected() == 1;
        if updated {
            Self::insert_audit_if(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(updated)
    }

    async fn delete_site(&self, id: &SiteId) -> anyhow::Result<bool> {
        let id = id.as_str();
        let mut tx = locks::begin_write(&self.write).await?;
        // The site is locked first (`locks::lock_site`): the endpoints read
        // next are all it has, and every delivery a submission wrote for them
        // is committed and seen by the deletes below.
        locks::lock_site(&mut tx, id).await?;
        let endpoints = sqlx::query_scalar!("SELECT id FROM endpoints WHERE site_id = $1", id)
            .fetch_all(&mut *tx)
            .await?;
        for endpoint_id in &endpoints {
            Self::delete_queue_of_endpoint(&mut tx, endpoint_id).await?;
        }
        // Its endpoints, media and events go by cascade.
        let result = sqlx::query!("DELETE FROM sites WHERE id = $1", id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(result.rows_affected() == 1)
    }
}
