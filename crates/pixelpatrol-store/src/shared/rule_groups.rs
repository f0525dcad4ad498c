//! Rule groups (shared by both backends: compiled into each).

use async_trait::async_trait;
use pixelpatrol_core::model::{AuditEntry, RuleGroup, RuleGroupId, SiteId};
use pixelpatrol_core::store::RuleGroups;
use pixelpatrol_store::rows::RuleGroupRow;

use super::{BackendStore, Db};

impl BackendStore {
    /// Writes a rule group; a default group first takes the flag from the
    /// site's previous default (one default per site is also a unique index).
    pub(super) async fn write_rule_group(
        tx: &mut sqlx::Transaction<'_, Db>,
        group: &RuleGroup,
        insert: bool,
    ) -> anyhow::Result<bool> {
        let rules = serde_json::to_string(&group.rules)?;
        if group.is_default {
            let site_id = group.site_id.as_str();
            let id = group.id.as_str();
            sqlx::query!(
                "UPDATE rule_groups SET is_default = FALSE WHERE site_id = $1 AND is_default AND id <> $2",
                site_id,
                id
            )
            .execute(&mut **tx)
            .await?;
        }
        let result = if insert {
            let updated_at = group.updated_at.millis();
            let id = group.id.as_str();
            let site_id = group.site_id.as_str();
            let created_at = group.created_at.millis();
            sqlx::query!(
                "INSERT INTO rule_groups (name, description, is_default, rules, updated_at, id, site_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                group.name,
                group.description,
                group.is_default,
                rules,
                updated_at,
                id,
                site_id,
                created_at,
            )
            .execute(&mut **tx)
            .await?
        } else {
            // Only ever turned on here (turning another group on turns this
            // one off above), so a concurrent change is not undone.
            let updated_at = group.updated_at.millis();
            let id = group.id.as_str();
            let site_id = group.site_id.as_str();
            sqlx::query!(
                "UPDATE rule_groups SET name = $1, description = $2, is_default = (is_default OR $3), \
                 rules = $4, updated_at = $5 WHERE id = $6 AND site_id = $7",
                group.name,
                group.description,
                group.is_default,
                rules,
                updated_at,
                id,
                site_id,
            )
            .execute(&mut **tx)
            .await?
        };
        Ok(result.rows_affected() == 1)
    }
}

#[async_trait]
impl RuleGroups for BackendStore {
    async fn list_rule_groups(&self, site_id: &SiteId) -> anyhow::Result<Vec<RuleGroup>> {
        let site_id = site_id.as_str();
        let rows = sqlx::query_as!(
            RuleGroupRow,
            "SELECT id, site_id, name, description, is_default, rules, created_at, updated_at \
             FROM rule_groups WHERE site_id = $1 ORDER BY id",
            site_id
        )
        .fetch_all(&self.read)
        .await?;
        rows.into_iter().map(RuleGroup::try_from).collect()
    }

    async fn get_rule_group(
        &self,
        site_id: &SiteId,
        id: &RuleGroupId,
    ) -> anyhow::Result<Option<RuleGroup>> {
        let site_id = site_id.as_str();
        let id = id.as_str();
        let row = sqlx::query_as!(
            RuleGroupRow,
            "SELECT id, site_id, name, description, is_default, rules, created_at, updated_at \
             FROM rule_groups WHERE site_id = $1 AND id = $2",
            site_id,
            id
        )
        .fetch_optional(&self.read)
        .await?;
        row.map(RuleGroup::try_from).transpose()
    }

    async fn default_rule_group(&self, site_id: &SiteId) -> anyhow::Result<Option<RuleGroup>> {
        let site_id = site_id.as_str();
        let row = sqlx::query_as!(
            RuleGroupRow,
            "SELECT id, site_id, name, description, is_default, rules, created_at, updated_at \
             FROM rule_groups WHERE site_id = $1 AND is_default",
            site_id
        )
        .fetch_optional(&self.read)
        .await?;
        row.map(RuleGroup::try_from).transpose()
    }

    async fn create_rule_group(
        &self,
        group: &RuleGroup,
        audit: Option<&AuditEntry>,
    ) -> anyhow::Result<()> {
        let mut tx = super::locks::begin_write(&self.write).await?;
        Self::write_rule_group(&mut tx, group, true).await?;
        Self::insert_audit_if(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn update_rule_group(
        &self,
        group: &RuleGroup,
        audit: Option<&AuditEntry>,
    ) -> anyhow::Result<bool> {
        let mut tx = super::locks::begin_write(&self.write).await?;
        let updated = Self::write_rule_group(&mut tx, group, false).await?;
        if updated {
            Self::insert_audit_if(&mut tx, audit).await?;
            tx.commit().await?;
        }
        Ok(updated)
    }

    async fn delete_rule_group(
        &self,
        site_id: &SiteId,
        id: &RuleGroupId,
        audit: Option<&AuditEntry>,
    ) -> anyhow::Result<bool> {
        let mut tx = super::locks::begin_write(&self.write).await?;
        let site_id = site_id.as_str();
        let id = id.as_str();
        let result = sqlx::query!(
            "DELETE FROM rule_groups WHERE site_id = $1 AND id = $2 AND NOT is_default",
            site_id,
            id
        )
        .execute(&mut *tx)
        .await?;
        let deleted = result.rows_affected() == 1;
        if deleted {
            Self::insert_audit_if(&mut tx, audit).await?;
            tx.commit().await?;
        }
        Ok(deleted)
    }
}
