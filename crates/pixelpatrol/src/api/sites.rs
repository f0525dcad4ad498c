//! Sites: the tenants. Created by the operator; each gets a site key.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::validate::{nullable, optional_text, text, web_url};
use super::{ApiJson, Page};
use crate::AppState;
use crate::auth::{Caller, new_site_key};
use crate::error::{AppError, Result};
use crate::store::Site;
use crate::util::{new_id, now_ms, sha256_hex};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sites", post(create_site).get(list_sites))
        .route(
            "/v1/sites/{site_id}",
            get(get_site).patch(update_site).delete(delete_site),
        )
}

#[derive(Deserialize)]
struct CreateSite {
    name: String,
    url: Option<String>,
    description: Option<String>,
}

async fn create_site(
    caller: Caller,
    State(state): State<AppState>,
    ApiJson(input): ApiJson<CreateSite>,
) -> Result<(StatusCode, Json<Value>)> {
    caller.ensure_admin()?;
    let now = now_ms();
    let site_key = new_site_key();
    let site = Site {
        id: new_id("site"),
        name: text("name", &input.name, 200)?,
        url: input
            .url
            .as_deref()
            .map(|url| web_url("url", url))
            .transpose()?,
        description: optional_text("description", input.description.as_deref(), 2000)?,
        key_hash: sha256_hex(&site_key),
        created_at: now,
        updated_at: now,
    };
    state.store.create_site(&site).await?;
    let mut body = serde_json::to_value(&site).map_err(anyhow::Error::from)?;
    // The key is shown here once; only its hash is kept.
    body["site_key"] = json!(site_key);
    Ok((StatusCode::CREATED, Json(body)))
}

async fn list_sites(caller: Caller, State(state): State<AppState>) -> Result<Json<Page<Site>>> {
    let data = match caller {
        Caller::Admin => state.store.list_sites().await?,
        Caller::Site(site) => vec![*site],
    };
    Ok(Json(Page {
        data,
        next_cursor: None,
    }))
}

pub(super) async fn load_site(state: &AppState, caller: &Caller, site_id: &str) -> Result<Site> {
    caller.ensure_site(site_id)?;
    state
        .store
        .get_site(site_id)
        .await?
        .ok_or(AppError::NotFound("site"))
}

async fn get_site(
    caller: Caller,
    State(state): State<AppState>,
    Path(site_id): Path<String>,
) -> Result<Json<Site>> {
    Ok(Json(load_site(&state, &caller, &site_id).await?))
}

#[derive(Deserialize)]
struct UpdateSite {
    name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    url: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
}

async fn update_site(
    caller: Caller,
    State(state): State<AppState>,
    Path(site_id): Path<String>,
    ApiJson(input): ApiJson<UpdateSite>,
) -> Result<Json<Site>> {
    let mut site = load_site(&state, &caller, &site_id).await?;
    if let Some(name) = input.name {
        site.name = text("name", &name, 200)?;
    }
    if let Some(url) = input.url {
        site.url = url.as_deref().map(|url| web_url("url", url)).transpose()?;
    }
    if let Some(description) = input.description {
        site.description = optional_text("description", description.as_deref(), 2000)?;
    }
    site.updated_at = now_ms();
    if !state.store.update_site(&site).await? {
        return Err(AppError::NotFound("site"));
    }
    Ok(Json(site))
}

async fn delete_site(
    caller: Caller,
    State(state): State<AppState>,
    Path(site_id): Path<String>,
) -> Result<StatusCode> {
    caller.ensure_admin()?;
    if state.store.delete_site(&site_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::NotFound("site"))
    }
}
