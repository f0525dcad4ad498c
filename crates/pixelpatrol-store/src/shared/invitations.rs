//! One-time invitation links (shared by both backends: compiled into each).

use async_trait::async_trait;
use pixelpatrol_core::model::{
    AcceptOutcome, Actor, AuditEntry, AuditId, Invitation, InvitationId, Role, SiteId, Timestamp,
    User,
};
use pixelpatrol_core::store::Invitations;

use super::{BackendStore, Db, locks};

#[derive(Debug)]
struct InvitationRow {
    id: String,
    token_hash: String,
    site_id: Option<String>,
    email: String,
    role: Option<String>,
    is_admin: bool,
    invited_by: Option<String>,
    created_at: i64,
    expires_at: i64,
    accepted_at: Option<i64>,
}

impl TryFrom<InvitationRow> for Invitation {
    type Error = anyhow::Error;

    fn try_from(row: InvitationRow) -> anyhow::Result<Self> {
        Ok(Invitation {
            role: row.role.map(|role| role.parse()).transpose()?,
            id: row.id.into(),
            token_hash: row.token_hash,
            site_id: row.site_id.map(Into::into),
            email: row.email,
            is_admin: row.is_admin,
            invited_by: row.invited_by.map(Into::into),
            created_at: Timestamp::from_millis(row.created_at),
            expires_at: Timestamp::from_millis(row.expires_at),
            accepted_at: row.accepted_at.map(Timestamp::from_millis),
        })
    }
}

impl BackendStore {
    async fn usable_invitation_in<'e>(
        executor: impl sqlx::Executor<'e, Database = Db>,
        token_hash: &str,
        now: Timestamp,
    ) -> anyhow::Result<Option<Invitation>> {
        let now = now.millis();
        let row = sqlx::query_as!(
            InvitationRow,
            "SELECT id, token_hash, site_id, email, role, is_admin, invited_by, created_at, \
             expires_at, accepted_at FROM invitations \
             WHERE token_hash = $1 AND accepted_at IS NULL AND expires_at > $2",
            token_hash,
            now
        )
        .fetch_optional(executor)
        .await?;
        row.map(Invitation::try_from).transpose()
    }

    /// Whether whoever sent the invitation may still give what it gives: an
    /// operator, or (for a site's invitation) an owner of that site. A link
    /// outlives nobody's rights: an owner removed or demoted, or an
    /// operator no longer one, leaves their pending links dead. Links made
    /// by the CLI (no sender) stand.
    async fn inviter_still_may(
        tx: &mut sqlx::Transaction<'static, Db>,
        invitation: &Invitation,
    ) -> anyhow::Result<bool> {
        let Some(inviter) = &invitation.invited_by else {
            return Ok(true);
        };
        let inviter = inviter.as_str();
        let site = invitation.site_id.as_ref().map(SiteId::as_str);
        if let Some(site) = site {
            // The sender's role cannot change between this check and the
            // commit (member changes of the site wait for this one).
            locks::lock_site_members(tx, site).await?;
        }
        let may = sqlx::query_scalar!(
            r#"SELECT (u.is_admin OR EXISTS (
                 SELECT 1 FROM site_members m
                 WHERE m.site_id = $2 AND m.user_id = u.id AND m.role = 'owner')) AS "may!: bool"
               FROM users u WHERE u.id = $1"#,
            inviter,
            site
        )
        .fetch_optional(&mut **tx)
        .await?;
        Ok(may.unwrap_or(false))
    }
}

#[async_trait]
impl Invitations for BackendStore {
    async fn create_invitation(
        &self,
        invitation: &Invitation,
        audit: &AuditEntry,
    ) -> anyhow::Result<()> {
        let mut tx = locks::begin_write(&self.write).await?;
        let id = invitation.id.as_str();
        let site_id = invitation.site_id.as_ref().map(SiteId::as_str);
        let role = invitation.role.map(|role| role.as_str());
        let invited_by = invitation.invited_by.as_ref().map(|user| user.as_str());
        let (created_at, expires_at) = (
            invitation.created_at.millis(),
            invitation.expires_at.millis(),
        );
        sqlx::query!(
            "INSERT INTO invitations (token_hash, id, site_id, email, role, is_admin, invited_by, \
             created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            invitation.token_hash,
            id,
            site_id,
            invitation.email,
            role,
            invitation.is_admin,
            invited_by,
            created_at,
            expires_at
        )
        .execute(&mut *tx)
        .await?;
        Self::insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn pending_invitations(
        &self,
        site_id: Option<&SiteId>,
        now: Timestamp,
    ) -> anyhow::Result<Vec<Invitation>> {
        let site_id = site_id.map(SiteId::as_str);
        let now = now.millis();
        // `site_id IS NOT DISTINCT FROM` is spelled out: SQLite's `IS` and
        // PostgreSQL's operator differ, this form is the same on both.
        let rows = sqlx::query_as!(
            InvitationRow,
            "SELECT id, token_hash, site_id, email, role, is_admin, invited_by, created_at, \
             expires_at, accepted_at FROM invitations \
             WHERE ((CAST($1 AS TEXT) IS NULL AND site_id IS NULL) OR site_id = $1) \
             AND accepted_at IS NULL AND expires_at > $2 \
             ORDER BY created_at DESC, id DESC",
            site_id,
            now
        )
        .fetch_all(&self.read)
        .await?;
        rows.into_iter().map(Invitation::try_from).collect()
    }

    async fn usable_invitation(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> anyhow::Result<Option<Invitation>> {
        Self::usable_invitation_in(&self.read, token_hash, now).await
    }

    async fn revoke_invitation(
        &self,
        site_id: Option<&SiteId>,
        id: &InvitationId,
        audit: &AuditEntry,
    ) -> anyhow::Result<bool> {
        let mut tx = locks::begin_write(&self.write).await?;
        let site_id = site_id.map(SiteId::as_str);
        let id = id.as_str();
        let revoked = sqlx::query!(
            "DELETE FROM invitations WHERE id = $2 AND accepted_at IS NULL \
             AND ((CAST($1 AS TEXT) IS NULL AND site_id IS NULL) OR site_id = $1)",
            site_id,
            id
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if revoked == 1 {
            Self::insert_audit(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(revoked == 1)
    }

    async fn accept_invitation(
        &self,
        token_hash: &str,
        new_user: &User,
        now: Timestamp,
    ) -> anyhow::Result<AcceptOutcome> {
        let mut tx = locks::begin_write(&self.write).await?;
        let Some(invitation) = Self::usable_invitation_in(&mut *tx, token_hash, now).await? else {
            return Ok(AcceptOutcome::Invalid);
        };
        if !Self::inviter_still_may(&mut tx, &invitation).await? {
            return Ok(AcceptOutcome::Invalid);
        }
        // Used up first: of two acceptances at once, one wins.
        let now_ms = now.millis();
        let used = sqlx::query!(
            "UPDATE invitations SET accepted_at = $2 WHERE token_hash = $1 AND accepted_at IS NULL",
            token_hash,
            now_ms
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if used != 1 {
            return Ok(AcceptOutcome::Invalid);
        }
        let mut user = match Self::user_with_email(&mut *tx, &invitation.email).await? {
            Some(user) => user,
            None => {
                let user = User {
                    email: invitation.email.clone(),
                    ..new_user.clone()
                };
                if !Self::insert_user(&mut tx, &user).await? {
                    anyhow::bail!("the account for {} appeared meanwhile", user.email);
                }
                user
            }
        };
        if invitation.is_admin && !user.is_admin {
            let id = user.id.as_str();
            sqlx::query!(
                "UPDATE users SET is_admin = TRUE, updated_at = $2 WHERE id = $1",
                id,
                now_ms
            )
            .execute(&mut *tx)
            .await?;
            user.is_admin = true;
        }
        if let (Some(site_id), Some(role)) = (&invitation.site_id, invitation.role) {
            // An invitation gives a role, never takes one away: a member
            // invited again with a lesser role keeps theirs (an owner
            // accepting a moderator's link must not leave the site ownerless).
            let (site, member) = (site_id.as_str(), user.id.as_str());
            let current = sqlx::query_scalar!(
                "SELECT role FROM site_members WHERE site_id = $1 AND user_id = $2",
                site,
                member
            )
            .fetch_optional(&mut *tx)
            .await?
            .map(|current| current.parse::<Role>())
            .transpose()?;
            if current.is_none_or(|current| current < role) {
                Self::upsert_member(&mut tx, site_id, &user.id, role, now).await?;
            }
        }
        let audit = AuditEntry {
            id: AuditId::generate(),
            site_id: invitation.site_id.clone(),
            actor: Some(Actor {
                user_id: user.id.clone(),
                email: user.email.clone(),
            }),
            action: "invitation.accepted".into(),
            target: Some(invitation.id.to_string()),
            detail: serde_json::json!({
                "role": invitation.role,
                "operator": invitation.is_admin,
            }),
            created_at: now,
        };
        Self::insert_audit(&mut tx, &audit).await?;
        tx.commit().await?;
        Ok(AcceptOutcome::Accepted(Box::new(user)))
    }
}
