//! Who is calling: the operator (admin token) or a site (its site key).
//!
//! Keys arrive as `Authorization: Bearer <key>` or, as the product's
//! documented API allows, as `api_key` in the JSON body. Only SHA-256 hashes
//! of keys are stored; the admin hash is compared in constant time.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use subtle::ConstantTimeEq;

use crate::api::AppState;
use crate::api::error::{AppError, Result};
use crate::model::{AuditEntry, AuditId, Site, SiteId, Timestamp};
use crate::util::{random_token, sha256_hex};

/// Settings key of the stored admin token hash.
pub const ADMIN_TOKEN_SETTING: &str = "admin_token_sha256";
/// Site keys are this prefix and 40 random alphanumerics (about 238 bits).
pub const SITE_KEY_PREFIX: &str = "site_";

#[derive(Debug, Clone)]
pub enum Caller {
    Admin,
    Site(Box<Site>),
}

impl Caller {
    /// The audit entry of a change this caller makes through the API: no
    /// person, but the credential that made it (in `detail.via`).
    pub fn audit(
        &self,
        site_id: &SiteId,
        action: &str,
        target: &str,
        mut detail: serde_json::Value,
    ) -> AuditEntry {
        detail["via"] = serde_json::json!(match self {
            Caller::Admin => "API, admin token",
            Caller::Site(_) => "API, site key",
        });
        AuditEntry {
            id: AuditId::generate(),
            site_id: Some(site_id.clone()),
            actor: None,
            action: action.into(),
            target: Some(target.into()),
            detail,
            created_at: Timestamp::now(),
        }
    }

    /// Admins see every site; a site sees only itself. Anything else is a 404
    /// so that other sites' ids are not even confirmed to exist.
    pub fn ensure_site(&self, site_id: &SiteId) -> Result<()> {
        // The operator's own site (alerts) is configured by the server, not
        // through the API, by anyone.
        if *site_id == crate::alerts::OPERATOR_SITE_ID {
            return Err(AppError::NotFound("site"));
        }
        match self {
            Caller::Admin => Ok(()),
            Caller::Site(site) if &site.id == site_id => Ok(()),
            Caller::Site(_) => Err(AppError::NotFound("site")),
        }
    }

    pub fn ensure_admin(&self) -> Result<()> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Site(_) => Err(AppError::Forbidden),
        }
    }
}

pub fn new_site_key() -> String {
    random_token(SITE_KEY_PREFIX, 40)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// Resolves the caller from the `Authorization` header, else from the body's
/// `api_key`.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    body_key: Option<&str>,
) -> Result<Caller> {
    let key = bearer(headers)
        .or(body_key.filter(|key| !key.is_empty()))
        .ok_or(AppError::Unauthorized)?;
    let hash = sha256_hex(key);
    if bool::from(hash.as_bytes().ct_eq(state.admin_token_hash.as_bytes())) {
        return Ok(Caller::Admin);
    }
    if key.starts_with(SITE_KEY_PREFIX)
        && let Some(site) = state.store.site_by_key_hash(&hash).await?
    {
        return Ok(Caller::Site(Box::new(site)));
    }
    Err(AppError::Unauthorized)
}

/// Axum extractor for routes that take the key from the header only.
impl axum::extract::FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self> {
        authenticate(state, &parts.headers, None).await
    }
}

/// The admin token hash in force: the configured token's, else the stored
/// one, else a newly generated token's (the token itself is returned once so
/// that it can be shown to the operator).
pub async fn admin_token_hash(
    store: &crate::store::DynStore,
    configured: Option<&str>,
) -> anyhow::Result<(String, Option<String>)> {
    if let Some(token) = configured {
        anyhow::ensure!(
            token.len() >= 16,
            "PIXELPATROL_ADMIN_TOKEN must be at least 16 characters"
        );
        return Ok((sha256_hex(token), None));
    }
    if let Some(hash) = store.get_setting(ADMIN_TOKEN_SETTING).await? {
        return Ok((hash, None));
    }
    let token = random_token("ppadm_", 40);
    let stored = store
        .put_setting_if_absent(ADMIN_TOKEN_SETTING, &sha256_hex(&token))
        .await?;
    // Another process may have generated one first; then ours is void.
    let fresh = (stored == sha256_hex(&token)).then_some(token);
    Ok((stored, fresh))
}
