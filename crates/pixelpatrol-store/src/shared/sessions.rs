//! Dashboard sessions and the back-off of failed sign-ins (shared by both
//! backends: compiled into each).

use async_trait::async_trait;
use pixelpatrol_core::model::people::sign_in_back_off_ms;
use pixelpatrol_core::model::{Session, Timestamp, User};
use pixelpatrol_core::store::Sessions;

use super::BackendStore;

/// A session's idle expiry is written at most this often (every page view
/// would otherwise be a write).
const TOUCH_EVERY_MS: i64 = 60_000;

/// Failures older than this are forgotten: the next one starts a new count.
const FAILURES_FORGOTTEN_AFTER_MS: i64 = 3_600_000;

#[derive(Debug)]
struct SessionUserRow {
    token_hash: String,
    user_id: String,
    csrf_token: String,
    created_at: i64,
    last_seen_at: i64,
    expires_at: i64,
    email: String,
    password_hash: String,
    is_admin: bool,
    user_created_at: i64,
    user_updated_at: i64,
}

#[async_trait]
impl Sessions for BackendStore {
    async fn create_session(&self, session: &Session) -> anyhow::Result<()> {
        let user_id = session.user_id.as_str();
        let (created_at, last_seen_at, expires_at) = (
            session.created_at.millis(),
            session.last_seen_at.millis(),
            session.expires_at.millis(),
        );
        sqlx::query!(
            "INSERT INTO sessions (token_hash, user_id, csrf_token, created_at, last_seen_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            session.token_hash,
            user_id,
            session.csrf_token,
            created_at,
            last_seen_at,
            expires_at
        )
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn touch_session(
        &self,
        token_hash: &str,
        now: Timestamp,
        idle_ms: i64,
        lifetime_ms: i64,
    ) -> anyhow::Result<Option<(Session, User)>> {
        let now_ms = now.millis();
        let row = sqlx::query_as!(
            SessionUserRow,
            "SELECT s.token_hash, s.user_id, s.csrf_token, s.created_at, s.last_seen_at, \
             s.expires_at, u.email, u.password_hash, u.is_admin, \
             u.created_at AS user_created_at, u.updated_at AS user_updated_at \
             FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.token_hash = $1 AND s.expires_at > $2",
            token_hash,
            now_ms
        )
        .fetch_optional(&self.read)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut session = Session {
            token_hash: row.token_hash,
            user_id: row.user_id.clone().into(),
            csrf_token: row.csrf_token,
            created_at: Timestamp::from_millis(row.created_at),
            last_seen_at: Timestamp::from_millis(row.last_seen_at),
            expires_at: Timestamp::from_millis(row.expires_at),
        };
        if now.ms_since(session.last_seen_at) >= TOUCH_EVERY_MS {
            // However busy, a session ends `lifetime_ms` after sign-in (a
            // tab left open on a self-refreshing page would otherwise keep
            // it alive for ever).
            let expires_at = now
                .plus_ms(idle_ms)
                .min(session.created_at.plus_ms(lifetime_ms))
                .millis();
            if expires_at <= now_ms {
                // Past its lifetime (a session older than the setting).
                return Ok(None);
            }
            // Only a live session moves on: one signed out meanwhile stays out.
            let touched = sqlx::query!(
                "UPDATE sessions SET last_seen_at = $2, expires_at = $3 \
                 WHERE token_hash = $1 AND expires_at > $2",
                session.token_hash,
                now_ms,
                expires_at
            )
            .execute(&self.write)
            .await?
            .rows_affected();
            if touched == 0 {
                return Ok(None);
            }
            session.last_seen_at = now;
            session.expires_at = Timestamp::from_millis(expires_at);
        }
        let user = User {
            id: row.user_id.into(),
            email: row.email,
            password_hash: row.password_hash,
            is_admin: row.is_admin,
            created_at: Timestamp::from_millis(row.user_created_at),
            updated_at: Timestamp::from_millis(row.user_updated_at),
        };
        Ok(Some((session, user)))
    }

    async fn end_session(&self, token_hash: &str) -> anyhow::Result<()> {
        sqlx::query!("DELETE FROM sessions WHERE token_hash = $1", token_hash)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn purge_expired_sessions(&self, now: Timestamp) -> anyhow::Result<u64> {
        let now = now.millis();
        let purged = sqlx::query!("DELETE FROM sessions WHERE expires_at <= $1", now)
            .execute(&self.write)
            .await?
            .rows_affected();
        Ok(purged)
    }

    async fn sign_in_blocked_until(
        &self,
        keys: &[String],
        now: Timestamp,
    ) -> anyhow::Result<Option<Timestamp>> {
        let now = now.millis();
        let mut until: Option<i64> = None;
        for key in keys {
            let locked = sqlx::query_scalar!(
                "SELECT locked_until FROM sign_in_failures WHERE throttle_key = $1 AND locked_until > $2",
                key,
                now
            )
            .fetch_optional(&self.read)
            .await?;
            until = until.max(locked);
        }
        Ok(until.map(Timestamp::from_millis))
    }

    async fn record_sign_in_failure(
        &self,
        keys: &[String],
        now: Timestamp,
    ) -> anyhow::Result<Timestamp> {
        let mut tx = super::locks::begin_write(&self.write).await?;
        let mut until = now;
        let forgotten_before = now.plus_ms(-FAILURES_FORGOTTEN_AFTER_MS).millis();
        let now_ms = now.millis();
        for key in keys {
            // Counted in the statement, so that concurrent failures all count.
            let failures = sqlx::query_scalar!(
                "INSERT INTO sign_in_failures (throttle_key, failures, last_failure_at, locked_until) \
                 VALUES ($1, 1, $2, $2) \
                 ON CONFLICT (throttle_key) DO UPDATE SET \
                 failures = CASE WHEN sign_in_failures.last_failure_at < $3 THEN 1 \
                   ELSE sign_in_failures.failures + 1 END, \
                 last_failure_at = $2 \
                 RETURNING failures",
                key,
                now_ms,
                forgotten_before
            )
            .fetch_one(&mut *tx)
            .await?;
            let locked_until = now.plus_ms(sign_in_back_off_ms(failures)).millis();
            sqlx::query!(
                "UPDATE sign_in_failures SET locked_until = $2 WHERE throttle_key = $1",
                key,
                locked_until
            )
            .execute(&mut *tx)
            .await?;
            until = until.max(Timestamp::from_millis(locked_until));
        }
        tx.commit().await?;
        Ok(until)
    }

    async fn clear_sign_in_failures(&self, keys: &[String]) -> anyhow::Result<()> {
        let mut tx = super::locks::begin_write(&self.write).await?;
        for key in keys {
            sqlx::query!("DELETE FROM sign_in_failures WHERE throttle_key = $1", key)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
