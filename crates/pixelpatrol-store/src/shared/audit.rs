//! The audit log: who changed what (shared by both backends: compiled into
//! each). Changes to people write their entry in their own transaction
//! ([`BackendStore::insert_audit`]).

use anyhow::Context as _;
use async_trait::async_trait;
use pixelpatrol_core::model::{Actor, AuditEntry, AuditId, SiteId, Timestamp};
use pixelpatrol_core::store::AuditLog;

use super::{BackendStore, Db};

#[derive(Debug)]
struct AuditRow {
    id: String,
    site_id: Option<String>,
    actor_id: Option<String>,
    actor_email: Option<String>,
    action: String,
    target: Option<String>,
    detail: String,
    created_at: i64,
}

impl TryFrom<AuditRow> for AuditEntry {
    type Error = anyhow::Error;

    fn try_from(row: AuditRow) -> anyhow::Result<Self> {
        Ok(AuditEntry {
            detail: serde_json::from_str(&row.detail)
                .with_context(|| format!("audit entry {}: unreadable detail", row.id))?,
            actor: match (row.actor_id, row.actor_email) {
                (Some(user_id), Some(email)) => Some(Actor {
                    user_id: user_id.into(),
                    email,
                }),
                _ => None,
            },
            id: row.id.into(),
            site_id: row.site_id.map(Into::into),
            action: row.action,
            target: row.target,
            created_at: Timestamp::from_millis(row.created_at),
        })
    }
}

impl BackendStore {
    /// Writes an audit entry inside the caller's transaction.
    pub(super) async fn insert_audit(
        tx: &mut sqlx::Transaction<'static, Db>,
        entry: &AuditEntry,
    ) -> anyhow::Result<()> {
        let id = entry.id.as_str();
        let site_id = entry.site_id.as_ref().map(SiteId::as_str);
        let actor_id = entry.actor.as_ref().map(|actor| actor.user_id.as_str());
        let actor_email = entry.actor.as_ref().map(|actor| actor.email.as_str());
        let detail = entry.detail.to_string();
        let created_at = entry.created_at.millis();
        sqlx::query!(
            "INSERT INTO audit_log (id, site_id, actor_id, actor_email, action, target, detail, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            id,
            site_id,
            actor_id,
            actor_email,
            entry.action,
            entry.target,
            detail,
            created_at
        )
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// [`Self::insert_audit`] for the changes whose caller may name no entry.
    pub(super) async fn insert_audit_if(
        tx: &mut sqlx::Transaction<'static, Db>,
        entry: Option<&AuditEntry>,
    ) -> anyhow::Result<()> {
        match entry {
            Some(entry) => Self::insert_audit(tx, entry).await,
            None => Ok(()),
        }
    }
}

#[async_trait]
impl AuditLog for BackendStore {
    async fn record_audit(&self, entry: &AuditEntry) -> anyhow::Result<()> {
        let mut tx = super::locks::begin_write(&self.write).await?;
        Self::insert_audit(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_audit(
        &self,
        site_id: &SiteId,
        before: Option<&AuditId>,
        limit: i64,
    ) -> anyhow::Result<Vec<AuditEntry>> {
        let site_id = site_id.as_str();
        let before = before.map(AuditId::as_str);
        let rows = sqlx::query_as!(
            AuditRow,
            "SELECT id, site_id, actor_id, actor_email, action, target, detail, created_at \
             FROM audit_log WHERE site_id = $1 AND (CAST($2 AS TEXT) IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3",
            site_id,
            before,
            limit
        )
        .fetch_all(&self.read)
        .await?;
        rows.into_iter().map(AuditEntry::try_from).collect()
    }
}
