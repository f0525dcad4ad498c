//! Rule groups of a site: the rules automatic moderation decides with.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::sites::load_site;
use super::validate::{nullable, optional_text, text};
use super::{ApiJson, Page};
use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::error::{AppError, Result};
use crate::model::{Rule, RuleGroup, RuleGroupId, SiteId, Timestamp};
use crate::moderation::rules::{RuleInput, validate_rules};
use crate::moderation::{all_templates, template_group};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/rule-templates", get(list_templates))
        .route(
            "/v1/sites/{site_id}/rule-groups",
            post(create_group).get(list_groups),
        )
        .route(
            "/v1/sites/{site_id}/rule-groups/recommended",
            post(recreate_recommended),
        )
        .route(
            "/v1/sites/{site_id}/rule-groups/{group_id}",
            get(get_group).patch(update_group).delete(delete_group),
        )
}

/// A rule group as the API shows it.
#[derive(Serialize)]
struct RuleGroupOut {
    id: RuleGroupId,
    site_id: SiteId,
    name: String,
    description: Option<String>,
    is_default: bool,
    rules: Vec<Rule>,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl From<&RuleGroup> for RuleGroupOut {
    fn from(group: &RuleGroup) -> Self {
        RuleGroupOut {
            id: group.id.clone(),
            site_id: group.site_id.clone(),
            name: group.name.clone(),
            description: group.description.clone(),
            is_default: group.is_default,
            rules: group.rules.clone(),
            created_at: group.created_at,
            updated_at: group.updated_at,
        }
    }
}

async fn list_templates(_caller: Caller) -> Json<Value> {
    Json(json!({ "data": all_templates().collect::<Vec<_>>() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateGroup {
    name: String,
    description: Option<String>,
    #[serde(default)]
    rules: Vec<RuleInput>,
    /// Makes this the site's default group (the previous one stays, not default).
    #[serde(default)]
    is_default: bool,
}

async fn create_group(
    caller: Caller,
    State(state): State<AppState>,
    Path(site_id): Path<SiteId>,
    ApiJson(input): ApiJson<CreateGroup>,
) -> Result<(StatusCode, Json<RuleGroupOut>)> {
    let site = load_site(&state, &caller, &site_id).await?;
    let now = Timestamp::now();
    let group = RuleGroup {
        id: RuleGroupId::generate(),
        site_id: site.id,
        name: text("name", &input.name, 200)?,
        description: optional_text("description", input.description.as_deref(), 2000)?,
        is_default: input.is_default,
        rules: validate_rules(input.rules)?,
        created_at: now,
        updated_at: now,
    };
    store_new_group(&state, &caller, group).await
}

/// Stores a new group with its audit entry and answers it (`201`).
async fn store_new_group(
    state: &AppState,
    caller: &Caller,
    group: RuleGroup,
) -> Result<(StatusCode, Json<RuleGroupOut>)> {
    let audit = caller.audit(
        &group.site_id,
        "rule_group.created",
        group.id.as_str(),
        audit_detail(&group),
    );
    state.store.create_rule_group(&group, Some(&audit)).await?;
    Ok((StatusCode::CREATED, Json(RuleGroupOut::from(&group))))
}

/// What a group's audit entry says: its name, whether it is the default,
/// and its rules by name.
fn audit_detail(group: &RuleGroup) -> serde_json::Value {
    serde_json::json!({
        "name": group.name,
        "is_default": group.is_default,
        "rules": group.rules.iter().map(|rule| rule.name.as_str()).collect::<Vec<_>>(),
    })
}

/// Makes a new group from every template and makes it the site's default:
/// the one call that restores recommended moderation.
async fn recreate_recommended(
    caller: Caller,
    State(state): State<AppState>,
    Path(site_id): Path<SiteId>,
) -> Result<(StatusCode, Json<RuleGroupOut>)> {
    let site = load_site(&state, &caller, &site_id).await?;
    let group = template_group(&site.id, true);
    store_new_group(&state, &caller, group).await
}

async fn list_groups(
    caller: Caller,
    State(state): State<AppState>,
    Path(site_id): Path<SiteId>,
) -> Result<Json<Page<RuleGroupOut>>> {
    let site = load_site(&state, &caller, &site_id).await?;
    let data = state.store.list_rule_groups(&site.id).await?;
    Ok(Json(Page {
        data: data.iter().map(RuleGroupOut::from).collect(),
        next_cursor: None,
    }))
}

async fn load_group(
    state: &AppState,
    caller: &Caller,
    site_id: &SiteId,
    group_id: &RuleGroupId,
) -> Result<RuleGroup> {
    let site = load_site(state, caller, site_id).await?;
    state
        .store
        .get_rule_group(&site.id, group_id)
        .await?
        .ok_or(AppError::NotFound("rule group"))
}

async fn get_group(
    caller: Caller,
    State(state): State<AppState>,
    Path((site_id, group_id)): Path<(SiteId, RuleGroupId)>,
) -> Result<Json<RuleGroupOut>> {
    Ok(Json(RuleGroupOut::from(
        &load_group(&state, &caller, &site_id, &group_id).await?,
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateGroup {
    name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
    /// Replaces every rule of the group.
    rules: Option<Vec<RuleInput>>,
    is_default: Option<bool>,
}

async fn update_group(
    caller: Caller,
    State(state): State<AppState>,
    Path((site_id, group_id)): Path<(SiteId, RuleGroupId)>,
    ApiJson(input): ApiJson<UpdateGroup>,
) -> Result<Json<RuleGroupOut>> {
    let mut group = load_group(&state, &caller, &site_id, &group_id).await?;
    if let Some(name) = input.name {
        group.name = text("name", &name, 200)?;
    }
    if let Some(description) = input.description {
        group.description = optional_text("description", description.as_deref(), 2000)?;
    }
    if let Some(rules) = input.rules {
        group.rules = validate_rules(rules)?;
    }
    match input.is_default {
        Some(true) => group.is_default = true,
        Some(false) if group.is_default => {
            return Err(AppError::invalid(
                "is_default",
                "a site always has a default group: make another group the default instead",
            ));
        }
        _ => {}
    }
    group.updated_at = Timestamp::now();
    let audit = caller.audit(
        &group.site_id,
        "rule_group.updated",
        group.id.as_str(),
        audit_detail(&group),
    );
    if !state.store.update_rule_group(&group, Some(&audit)).await? {
        return Err(AppError::NotFound("rule group"));
    }
    Ok(Json(RuleGroupOut::from(&group)))
}

async fn delete_group(
    caller: Caller,
    State(state): State<AppState>,
    Path((site_id, group_id)): Path<(SiteId, RuleGroupId)>,
) -> Result<StatusCode> {
    let group = load_group(&state, &caller, &site_id, &group_id).await?;
    if group.is_default {
        return Err(AppError::Conflict(
            "the site's default rule group cannot be deleted: make another group the default first"
                .into(),
        ));
    }
    let audit = caller.audit(
        &group.site_id,
        "rule_group.deleted",
        group.id.as_str(),
        serde_json::json!({"name": group.name}),
    );
    if state
        .store
        .delete_rule_group(&group.site_id, &group.id, Some(&audit))
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::NotFound("rule group"))
    }
}
