//! Dashboard accounts and their roles on sites (shared by both backends:
//! compiled into each).

use async_trait::async_trait;
use pixelpatrol_core::model::{
    AuditEntry, MemberChange, Membership, Role, Site, SiteId, Timestamp, User, UserId,
};
use pixelpatrol_core::store::People;
use pixelpatrol_store::rows::SiteRow;

use super::{BackendStore, Db, locks};

#[derive(Debug)]
pub(super) struct UserRow {
    id: String,
    email: String,
    password_hash: String,
    is_admin: bool,
    created_at: i64,
    updated_at: i64,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        User {
            id: row.id.into(),
            email: row.email,
            password_hash: row.password_hash,
            is_admin: row.is_admin,
            created_at: Timestamp::from_millis(row.created_at),
            updated_at: Timestamp::from_millis(row.updated_at),
        }
    }
}

#[derive(Debug)]
struct MemberRow {
    site_id: String,
    user_id: String,
    email: String,
    role: String,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<MemberRow> for Membership {
    type Error = anyhow::Error;

    fn try_from(row: MemberRow) -> anyhow::Result<Self> {
        Ok(Membership {
            role: row.role.parse()?,
            site_id: row.site_id.into(),
            user_id: row.user_id.into(),
            email: row.email,
            created_at: Timestamp::from_millis(row.created_at),
            updated_at: Timestamp::from_millis(row.updated_at),
        })
    }
}

impl BackendStore {
    /// The account with this (normalized) email, inside a transaction or on the pool.
    pub(super) async fn user_with_email<'e>(
        executor: impl sqlx::Executor<'e, Database = Db>,
        email: &str,
    ) -> anyhow::Result<Option<User>> {
        let row = sqlx::query_as!(
            UserRow,
            "SELECT id, email, password_hash, is_admin, created_at, updated_at \
             FROM users WHERE email = $1",
            email
        )
        .fetch_optional(executor)
        .await?;
        Ok(row.map(User::from))
    }

    pub(super) async fn insert_user(
        tx: &mut sqlx::Transaction<'static, Db>,
        user: &User,
    ) -> anyhow::Result<bool> {
        let id = user.id.as_str();
        let (created_at, updated_at) = (user.created_at.millis(), user.updated_at.millis());
        let inserted = sqlx::query!(
            "INSERT INTO users (id, email, password_hash, is_admin, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (email) DO NOTHING",
            id,
            user.email,
            user.password_hash,
            user.is_admin,
            created_at,
            updated_at
        )
        .execute(&mut **tx)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// Takes the site's turn for member changes and tells whether the
    /// person is an owner before this one.
    async fn owner_before_change(
        tx: &mut sqlx::Transaction<'static, Db>,
        site_id: &SiteId,
        user_id: &UserId,
    ) -> anyhow::Result<bool> {
        let (site, user) = (site_id.as_str(), user_id.as_str());
        locks::lock_site_members(tx, site).await?;
        let role = sqlx::query_scalar!(
            "SELECT role FROM site_members WHERE site_id = $1 AND user_id = $2",
            site,
            user
        )
        .fetch_optional(&mut **tx)
        .await?;
        Ok(role.as_deref() == Some(Role::Owner.as_str()))
    }

    /// Commits a member change with its audit entry, unless it took the
    /// site's last owner away (then nothing is written). A site that never
    /// had an owner (made by an operator) may gain other members.
    async fn finish_member_change(
        mut tx: sqlx::Transaction<'static, Db>,
        site_id: &SiteId,
        was_owner: bool,
        audit: &AuditEntry,
    ) -> anyhow::Result<MemberChange> {
        if was_owner {
            let site = site_id.as_str();
            let owners = sqlx::query_scalar!(
                r#"SELECT COUNT(*) AS "owners!" FROM site_members WHERE site_id = $1 AND role = 'owner'"#,
                site
            )
            .fetch_one(&mut *tx)
            .await?;
            if owners == 0 {
                tx.rollback().await?;
                return Ok(MemberChange::LastOwner);
            }
        }
        Self::insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(MemberChange::Done)
    }

    /// Gives the person `role` on the site (or changes it), inside the
    /// caller's transaction.
    pub(super) async fn upsert_member(
        tx: &mut sqlx::Transaction<'static, Db>,
        site_id: &SiteId,
        user_id: &UserId,
        role: Role,
        now: Timestamp,
    ) -> anyhow::Result<()> {
        let (site_id, user_id, role) = (site_id.as_str(), user_id.as_str(), role.as_str());
        let now = now.millis();
        sqlx::query!(
            "INSERT INTO site_members (site_id, user_id, role, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (site_id, user_id) DO UPDATE SET role = $3, updated_at = $4",
            site_id,
            user_id,
            role,
            now
        )
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl People for BackendStore {
    async fn create_user(&self, user: &User) -> anyhow::Result<bool> {
        let mut tx = locks::begin_write(&self.write).await?;
        let created = Self::insert_user(&mut tx, user).await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn get_user(&self, id: &UserId) -> anyhow::Result<Option<User>> {
        let id = id.as_str();
        let row = sqlx::query_as!(
            UserRow,
            "SELECT id, email, password_hash, is_admin, created_at, updated_at \
             FROM users WHERE id = $1",
            id
        )
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(User::from))
    }

    async fn user_by_email(&self, email: &str) -> anyhow::Result<Option<User>> {
        Self::user_with_email(&self.read, email).await
    }

    async fn set_password(
        &self,
        id: &UserId,
        password_hash: &str,
        now: Timestamp,
    ) -> anyhow::Result<bool> {
        let mut tx = locks::begin_write(&self.write).await?;
        let (id, now) = (id.as_str(), now.millis());
        let updated = sqlx::query!(
            "UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1",
            id,
            password_hash,
            now
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // Whoever knew the old password is signed out everywhere.
        sqlx::query!("DELETE FROM sessions WHERE user_id = $1", id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(updated == 1)
    }

    async fn set_member(
        &self,
        site_id: &SiteId,
        user_id: &UserId,
        role: Role,
        now: Timestamp,
        audit: &AuditEntry,
    ) -> anyhow::Result<MemberChange> {
        let mut tx = locks::begin_write(&self.write).await?;
        let was_owner = Self::owner_before_change(&mut tx, site_id, user_id).await?;
        Self::upsert_member(&mut tx, site_id, user_id, role, now).await?;
        Self::finish_member_change(tx, site_id, was_owner, audit).await
    }

    async fn remove_member(
        &self,
        site_id: &SiteId,
        user_id: &UserId,
        audit: &AuditEntry,
    ) -> anyhow::Result<MemberChange> {
        let mut tx = locks::begin_write(&self.write).await?;
        let was_owner = Self::owner_before_change(&mut tx, site_id, user_id).await?;
        let (site, user) = (site_id.as_str(), user_id.as_str());
        let removed = sqlx::query!(
            "DELETE FROM site_members WHERE site_id = $1 AND user_id = $2",
            site,
            user
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if removed == 0 {
            return Ok(MemberChange::NotMember);
        }
        Self::finish_member_change(tx, site_id, was_owner, audit).await
    }

    async fn list_members(&self, site_id: &SiteId) -> anyhow::Result<Vec<Membership>> {
        let site_id = site_id.as_str();
        let rows = sqlx::query_as!(
            MemberRow,
            "SELECT m.site_id, m.user_id, u.email, m.role, m.created_at, m.updated_at \
             FROM site_members m JOIN users u ON u.id = m.user_id \
             WHERE m.site_id = $1 ORDER BY u.email",
            site_id
        )
        .fetch_all(&self.read)
        .await?;
        rows.into_iter().map(Membership::try_from).collect()
    }

    async fn member_role(
        &self,
        site_id: &SiteId,
        user_id: &UserId,
    ) -> anyhow::Result<Option<Role>> {
        let (site_id, user_id) = (site_id.as_str(), user_id.as_str());
        let role = sqlx::query_scalar!(
            "SELECT role FROM site_members WHERE site_id = $1 AND user_id = $2",
            site_id,
            user_id
        )
        .fetch_optional(&self.read)
        .await?;
        Ok(role.map(|role| role.parse()).transpose()?)
    }

    async fn sites_of_member(&self, user_id: &UserId) -> anyhow::Result<Vec<(Site, Role)>> {
        let user_id = user_id.as_str();
        let rows = sqlx::query!(
            "SELECT s.id, s.name, s.url, s.description, s.key_hash, s.confidence_threshold, \
             s.external_analyzer_url, s.external_analyzer_secret, s.created_at, s.updated_at, m.role \
             FROM site_members m JOIN sites s ON s.id = m.site_id \
             WHERE m.user_id = $1 ORDER BY s.name, s.id",
            user_id
        )
        .fetch_all(&self.read)
        .await?;
        rows.into_iter()
            .map(|row| {
                let site = Site::from(SiteRow {
                    id: row.id,
                    name: row.name,
                    url: row.url,
                    description: row.description,
                    key_hash: row.key_hash,
                    confidence_threshold: row.confidence_threshold,
                    external_analyzer_url: row.external_analyzer_url,
                    external_analyzer_secret: row.external_analyzer_secret,
                    created_at: row.created_at,
                    updated_at: row.updated_at,
                });
                Ok((site, row.role.parse()?))
            })
            .collect()
    }

    async fn waiting_for_review(
        &self,
        user_id: Option<&UserId>,
        except: &SiteId,
    ) -> anyhow::Result<Vec<(SiteId, i64)>> {
        let (user_id, except) = (user_id.map(UserId::as_str), except.as_str());
        // Counted per site on the (site_id, status) index: the cost is the
        // flagged items of the person's sites, never the whole media table.
        let rows = sqlx::query!(
            r#"SELECT s.id AS "site_id!", (SELECT COUNT(*) FROM media m
                 WHERE m.site_id = s.id AND m.status = 'flagged') AS "waiting!: i64"
               FROM sites s
               WHERE s.id <> $2 AND (CAST($1 AS TEXT) IS NULL OR EXISTS (
                 SELECT 1 FROM site_members sm WHERE sm.site_id = s.id AND sm.user_id = $1))
               ORDER BY s.name, s.id"#,
            user_id,
            except
        )
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .filter(|row| row.waiting > 0)
            .map(|row| (row.site_id.into(), row.waiting))
            .collect())
    }
}
