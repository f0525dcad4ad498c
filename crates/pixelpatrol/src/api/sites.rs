//! Sites: the tenants. Created by the operator; each gets a site key.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::validate::{endpoint_url, nullable, optional_text, text, web_url};
use super::{ApiJson, Page};
use crate::alerts::OPERATOR_SITE_ID;
use crate::api::AppState;
use crate::api::auth::{Caller, new_site_key};
use crate::api::error::{AppError, Result};
use crate::model::{RuleGroupId, Site, SiteId, Timestamp};
use crate::moderation::rules::DEFAULT_CONFIDENCE_THRESHOLD;
use crate::moderation::template_group;
use crate::util::{new_webhook_secret, sha256_hex};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sites", post(create_site).get(list_sites))
        .route(
            "/v1/sites/{site_id}",
            get(get_site).patch(update_site).delete(delete_site),
        )
}

/// A site as the API shows it: never its key's hash or its analyzer's
/// secret (those are shown once, when made: [`NewSiteOut`], [`UpdatedSiteOut`]).
#[derive(Serialize)]
pub(super) struct SiteOut {
    id: SiteId,
    name: String,
    url: Option<String>,
    description: Option<String>,
    confidence_threshold: f64,
    external_analyzer_url: Option<String>,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl From<&Site> for SiteOut {
    fn from(site: &Site) -> Self {
        SiteOut {
            id: site.id.clone(),
            name: site.name.clone(),
            url: site.url.clone(),
            description: site.description.clone(),
            confidence_threshold: site.confidence_threshold,
            external_analyzer_url: site.external_analyzer_url.clone(),
            created_at: site.created_at,
            updated_at: site.updated_at,
        }
    }
}

/// A new site, with its key: the only time the key is shown.
#[derive(Serialize)]
struct NewSiteOut {
    #[serde(flatten)]
    site: SiteOut,
    site_key: String,
    default_rule_group_id: RuleGroupId,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_analyzer_secret: Option<String>,
}

/// An edited site; a new analyzer secret, when the edit made one, is shown here once.
#[derive(Serialize)]
struct UpdatedSiteOut {
    #[serde(flatten)]
    site: SiteOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_analyzer_secret: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSite {
    name: String,
    url: Option<String>,
    description: Option<String>,
    confidence_threshold: Option<f64>,
    external_analyzer_url: Option<String>,
}

pub fn threshold(value: f64) -> Result<f64> {
    if value.is_finite() && value > 0.0 && value <= 1.0 {
        Ok(value)
    } else {
        Err(AppError::invalid(
            "confidence_threshold",
            "confidence_threshold must be a number above 0 and at most 1",
        ))
    }
}

/// The external analyzer URL and a new secret to sign requests to it.
fn external_analyzer(url: &str, dev: bool) -> Result<(String, String)> {
    Ok((
        endpoint_url("external_analyzer_url", url, dev)?,
        new_webhook_secret(),
    ))
}

/// A site made from what a person or client gave, checked field by field,
/// with its default rule group, its key (shown once) and, when an external
/// analyzer is named, that analyzer's new secret (shown once). The API and
/// the dashboard both create sites through it.
pub struct NewSite {
    pub site: Site,
    pub default_group: crate::model::RuleGroup,
    pub site_key: String,
    pub analyzer_secret: Option<String>,
}

pub struct SiteFields<'a> {
    pub name: &'a str,
    pub url: Option<&'a str>,
    pub description: Option<&'a str>,
    pub confidence_threshold: Option<f64>,
    pub external_analyzer_url: Option<&'a str>,
}

pub fn new_site(fields: SiteFields<'_>, dev: bool) -> Result<NewSite> {
    let now = Timestamp::now();
    let site_key = new_site_key();
    let analyzer = fields
        .external_analyzer_url
        .map(|url| external_analyzer(url, dev))
        .transpose()?;
    let site = Site {
        id: SiteId::generate(),
        name: text("name", fields.name, 200)?,
        url: fields.url.map(|url| web_url("url", url)).transpose()?,
        description: optional_text("description", fields.description, 2000)?,
        key_hash: sha256_hex(&site_key),
        confidence_threshold: fields
            .confidence_threshold
            .map(threshold)
            .transpose()?
            .unwrap_or(DEFAULT_CONFIDENCE_THRESHOLD),
        external_analyzer_url: analyzer.as_ref().map(|(url, _)| url.clone()),
        external_analyzer_secret: analyzer.as_ref().map(|(_, secret)| secret.clone()),
        created_at: now,
        updated_at: now,
    };
    // Moderation works from the start: the recommended rules are the default.
    let default_group = template_group(&site.id, true);
    Ok(NewSite {
        site,
        default_group,
        site_key,
        analyzer_secret: analyzer.map(|(_, secret)| secret),
    })
}

async fn create_site(
    caller: Caller,
    State(state): State<AppState>,
    ApiJson(input): ApiJson<CreateSite>,
) -> Result<(StatusCode, Json<NewSiteOut>)> {
    caller.ensure_admin()?;
    let new = new_site(
        SiteFields {
            name: &input.name,
            url: input.url.as_deref(),
            description: input.description.as_deref(),
            confidence_threshold: input.confidence_threshold,
            external_analyzer_url: input.external_analyzer_url.as_deref(),
        },
        state.config.dev,
    )?;
    let audit = caller.audit(
        &new.site.id,
        "site.created",
        new.site.id.as_str(),
        serde_json::json!({"name": new.site.name}),
    );
    state
        .store
        .create_site(&new.site, &new.default_group, Some(&audit))
        .await?;
    // The key is shown here once; only its hash is kept.
    Ok((
        StatusCode::CREATED,
        Json(NewSiteOut {
            site: SiteOut::from(&new.site),
            site_key: new.site_key,
            default_rule_group_id: new.default_group.id,
            external_analyzer_secret: new.analyzer_secret,
        }),
    ))
}

async fn list_sites(caller: Caller, State(state): State<AppState>) -> Result<Json<Page<SiteOut>>> {
    let data = match caller {
        Caller::Admin => {
            let mut sites = state.store.list_sites().await?;
            sites.retain(|site| site.id != OPERATOR_SITE_ID);
            sites
        }
        Caller::Site(site) => vec![*site],
    };
    Ok(Json(Page {
        data: data.iter().map(SiteOut::from).collect(),
        next_cursor: None,
    }))
}

pub(super) async fn load_site(state: &AppState, caller: &Caller, site_id: &SiteId) -> Result<Site> {
    caller.ensure_site(site_id)?;
    // The operator's own site (alerts) is not managed through the API.
    if site_id == OPERATOR_SITE_ID {
        return Err(AppError::NotFound("site"));
    }
    state
        .store
        .get_site(site_id)
        .await?
        .ok_or(AppError::NotFound("site"))
}

async fn get_site(
    caller: Caller,
    State(state): State<AppState>,
    Path(site_id): Path<SiteId>,
) -> Result<Json<SiteOut>> {
    Ok(Json(SiteOut::from(
        &load_site(&state, &caller, &site_id).await?,
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateSite {
    name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    url: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
    confidence_threshold: Option<f64>,
    /// Setting it makes a new signing secret, shown in this answer;
    /// `null` removes the site's analyzer.
    #[serde(default, deserialize_with = "nullable")]
    external_analyzer_url: Option<Option<String>>,
}

/// What a site's audit entry says of an edit (never the analyzer's secret):
/// the API and the dashboard record the same.
pub fn audit_detail(site: &Site, before: &Site) -> serde_json::Value {
    let fields = |site: &Site| {
        serde_json::json!({
            "name": site.name,
            "url": site.url,
            "description": site.description,
            "confidence_threshold": site.confidence_threshold,
            "external_analyzer_url": site.external_analyzer_url,
        })
    };
    let mut detail = fields(site);
    detail["before"] = fields(before);
    detail
}

async fn update_site(
    caller: Caller,
    State(state): State<AppState>,
    Path(site_id): Path<SiteId>,
    ApiJson(input): ApiJson<UpdateSite>,
) -> Result<Json<UpdatedSiteOut>> {
    let mut site = load_site(&state, &caller, &site_id).await?;
    let before = site.clone();
    if let Some(name) = input.name {
        site.name = text("name", &name, 200)?;
    }
    if let Some(url) = input.url {
        site.url = url.as_deref().map(|url| web_url("url", url)).transpose()?;
    }
    if let Some(description) = input.description {
        site.description = optional_text("description", description.as_deref(), 2000)?;
    }
    if let Some(value) = input.confidence_threshold {
        site.confidence_threshold = threshold(value)?;
    }
    let mut new_secret = None;
    if let Some(url) = input.external_analyzer_url {
        let analyzer = url
            .as_deref()
            .map(|url| external_analyzer(url, state.config.dev))
            .transpose()?;
        site.external_analyzer_url = analyzer.as_ref().map(|(url, _)| url.clone());
        site.external_analyzer_secret = analyzer.as_ref().map(|(_, secret)| secret.clone());
        new_secret = analyzer.map(|(_, secret)| secret);
    }
    site.updated_at = Timestamp::now();
    let audit = caller.audit(
        &site.id,
        "site.updated",
        site.id.as_str(),
        audit_detail(&site, &before),
    );
    if !state.store.update_site(&site, Some(&audit)).await? {
        return Err(AppError::NotFound("site"));
    }
    Ok(Json(UpdatedSiteOut {
        site: SiteOut::from(&site),
        // Shown once, when it is made.
        external_analyzer_secret: new_secret,
    }))
}

async fn delete_site(
    caller: Caller,
    State(state): State<AppState>,
    Path(site_id): Path<SiteId>,
) -> Result<StatusCode> {
    caller.ensure_admin()?;
    if site_id != OPERATOR_SITE_ID && state.store.delete_site(&site_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::NotFound("site"))
    }
}
