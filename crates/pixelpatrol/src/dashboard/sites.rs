//! Sites: the list (an operator's every site, a member's own), a new site
//! (operators), and a site's page.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use maud::{Markup, html};
use serde::Deserialize;

use super::DashError;
use super::layout::{empty, field_error, page, refused, reveal_once, when};
use super::session::{Post, Viewer};
use crate::alerts::OPERATOR_SITE_ID;
use crate::api::AppState;
use crate::api::error::AppError;
use crate::api::sites::{SiteFields, new_site};
use crate::model::{Access, Role, Site, SiteId};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sites", get(list).post(create))
        .route("/sites/{site_id}", get(site_page))
        .route("/sites/{site_id}/edit", axum::routing::post(edit))
        .route("/sites/{site_id}/delete", axum::routing::post(delete))
}

/// The sites this person sees, with their role (operators: every site).
async fn visible_sites(
    state: &AppState,
    viewer: &Viewer,
) -> Result<Vec<(Site, Access)>, DashError> {
    if viewer.user.is_admin {
        let mut sites = state.store.list_sites().await?;
        sites.retain(|site| site.id != OPERATOR_SITE_ID);
        sites.sort_by_key(|site| site.name.to_lowercase());
        Ok(sites
            .into_iter()
            .map(|site| (site, Access::Operator))
            .collect())
    } else {
        Ok(state
            .store
            .sites_of_member(&viewer.user.id)
            .await?
            .into_iter()
            .map(|(site, role)| (site, Access::Member(role)))
            .collect())
    }
}

fn access_label(access: Access) -> &'static str {
    match access {
        Access::Operator => "operator",
        Access::Member(role) => role.as_str(),
    }
}

#[derive(Deserialize, Default)]
struct NewSiteForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    description: String,
    /// Only in the settings form; empty keeps what is stored.
    #[serde(default)]
    confidence_threshold: String,
}

/// The `New site` form, with what was typed and the error of its field.
fn new_site_form(viewer: &Viewer, input: &NewSiteForm, error: Option<(&str, &str)>) -> Markup {
    let error_of = |field: &str| {
        error
            .filter(|(name, _)| *name == field)
            .map(|(_, text)| text)
    };
    html! {
        section.card aria-labelledby="new-site" {
            h2 #new-site { "New site" }
            form method="post" action="/sites" {
                input type="hidden" name="csrf" value=(viewer.session.csrf_token);
                label for="site-name" { "Name" }
                input #site-name name="name" value=(input.name) required maxlength="200";
                (field_error(error_of("name")))
                label for="site-url" { "URL" }
                input #site-url name="url" type="url" value=(input.url) placeholder="https://example.com";
                (field_error(error_of("url")))
                label for="site-description" { "Description" }
                textarea #site-description name="description" rows="2" maxlength="2000" { (input.description) }
                (field_error(error_of("description")))
                button.primary type="submit" { "Create site" }
            }
        }
    }
}

fn sites_table(sites: &[(Site, Access)], waiting: &[(SiteId, i64)]) -> Markup {
    html! {
        @if sites.is_empty() {
            (empty("No sites yet. An operator creates sites; an owner of a site can invite you to it."))
        } @else {
            table {
                thead { tr { th { "Site" } th { "URL" } th { "Your role" } th { "Waiting for review" } th { "Created" } } }
                tbody {
                    @for (site, access) in sites {
                        tr {
                            td { a href=(format!("/sites/{}", site.id)) { (site.name) } }
                            td { @if let Some(url) = &site.url { (url) } @else { span.muted { "—" } } }
                            td { span.badge { (access_label(*access)) } }
                            td {
                                @match waiting.iter().find(|(id, _)| *id == site.id) {
                                    Some((_, count)) => a href=(format!("/sites/{}/moderation", site.id)) { (count) " flagged" },
                                    None => span.muted { "none" },
                                }
                            }
                            td { (when(site.created_at)) }
                        }
                    }
                }
            }
        }
    }
}

async fn list(State(state): State<AppState>, viewer: Viewer) -> Result<Html<String>, DashError> {
    let sites = visible_sites(&state, &viewer).await?;
    Ok(page(
        &viewer,
        "Sites",
        &[],
        html! {
            (sites_table(&sites, &viewer.waiting))
            @if viewer.user.is_admin { (new_site_form(&viewer, &NewSiteForm::default(), None)) }
        },
    ))
}

async fn create(
    State(state): State<AppState>,
    post: Post<NewSiteForm>,
) -> Result<Response, DashError> {
    let Post { viewer, form } = post;
    if !viewer.user.is_admin {
        return Err(DashError::Forbidden);
    }
    let optional = |text: &str| {
        Some(text.trim())
            .filter(|text| !text.is_empty())
            .map(str::to_string)
    };
    let (url, description) = (optional(&form.url), optional(&form.description));
    let made = new_site(
        SiteFields {
            name: form.name.trim(),
            url: url.as_deref(),
            description: description.as_deref(),
            confidence_threshold: None,
            external_analyzer_url: None,
        },
        state.config.dev,
    );
    let new = match made {
        Ok(new) => new,
        Err(AppError::Invalid { field, message }) => {
            // The form again, with the error next to its field.
            let sites = visible_sites(&state, &viewer).await?;
            let field = field.unwrap_or_default();
            let body = html! {
                (sites_table(&sites, &viewer.waiting))
                (new_site_form(&viewer, &form, Some((field.as_str(), message.as_str()))))
            };
            return Ok(refused(page(&viewer, "Sites", &[], body)));
        }
        Err(other) => return Err(other.into()),
    };
    let audit = super::audit_entry(
        &viewer,
        &new.site.id,
        "site.created",
        new.site.id.as_str(),
        serde_json::json!({"name": new.site.name}),
    );
    state
        .store
        .create_site(&new.site, &new.default_group, Some(&audit))
        .await?;
    let site_path = format!("/sites/{}", new.site.id);
    Ok(page(
        &viewer,
        &format!("{} created", new.site.name),
        &[("Sites", "/sites".into())],
        html! {
            p { "The site's key lets its application submit media and manage its webhooks through the API." }
            (reveal_once("Site key", "site-key", &new.site_key))
            p { a.button href=(site_path) { "Open " (new.site.name) } }
        },
    )
    .into_response())
}

async fn site_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(site_id): Path<SiteId>,
) -> Result<Html<String>, DashError> {
    // `access` refuses the operator's own site too.
    let access = viewer.access(&state, &site_id).await?;
    let site = state
        .store
        .get_site(&site_id)
        .await?
        .ok_or(DashError::NotFound)?;
    let members = super::members::section(&state, &viewer, &site, access, None, "").await?;
    site_page_with(&state, &viewer, &site, access, members).await
}

/// A site's page: its facts, its webhooks (for those who manage them), and
/// `people` (the members section, or what an action on it answered).
pub async fn site_page_with(
    state: &AppState,
    viewer: &Viewer,
    site: &Site,
    access: Access,
    people: Markup,
) -> Result<Html<String>, DashError> {
    let role = access.role();
    // Read once for the overview, the queue's count and the endpoint list.
    let counts = state.store.media_status_counts(&site.id).await?;
    let flagged = super::overview::count_of(&counts, crate::model::MediaStatus::Flagged);
    let endpoints = if role.can_manage_webhooks() {
        let now = crate::model::Timestamp::now();
        let mut with_health = Vec::new();
        for endpoint in state.store.list_endpoints(&site.id).await? {
            let figures = state.store.endpoint_health(&endpoint.id, now).await?;
            with_health.push((endpoint, figures));
        }
        Some(with_health)
    } else {
        None
    };
    let overview = super::overview::section(state, site, &counts, endpoints.as_deref()).await?;
    let failing_after = state.deliverer.failing_after();
    Ok(page(
        viewer,
        &site.name,
        &[("Sites", "/sites".into())],
        html! {
            dl.facts {
                dt { "Your role" } dd { span.badge { (access_label(access)) } }
                dt { "URL" } dd { @if let Some(url) = &site.url { (url) } @else { span.muted { "none" } } }
                @if let Some(description) = &site.description { dt { "Description" } dd { (description) } }
                dt { "Created" } dd { (when(site.created_at)) }
            }
            p.links {
                a.button href=(format!("/sites/{}/moderation", site.id)) {
                    "Moderation queue" @if flagged > 0 { " (" (flagged) " flagged)" }
                }
                @if role.can_manage_site() { " " a.button.secondary href=(format!("/sites/{}/audit", site.id)) { "Audit log" } }
            }
            (overview)
            @if let Some(endpoints) = endpoints {
                section aria-labelledby="webhooks" {
                    h2 #webhooks { "Webhooks" }
                    (super::webhooks::endpoints_table(site, &endpoints, failing_after))
                }
            } @else {
                p.muted { "As a " (Role::Moderator) ", you work this site's moderation queue; its webhooks and secrets are for its owners and developers." }
            }
            (people)
            @if role.can_manage_site() { (settings(viewer, site)) }
        },
    ))
}

/// The site's settings (owners and operators) and, for operators, deleting it.
fn settings(viewer: &Viewer, site: &Site) -> Markup {
    let csrf = &viewer.session.csrf_token;
    html! {
        section aria-labelledby="settings" {
            h2 #settings { "Site settings" }
            form.card method="post" action=(format!("/sites/{}/edit", site.id)) {
                input type="hidden" name="csrf" value=(csrf);
                label for="edit-name" { "Name" }
                input #edit-name name="name" value=(site.name) required maxlength="200";
                label for="edit-url" { "URL" }
                input #edit-url name="url" type="url" value=(site.url.as_deref().unwrap_or(""));
                label for="edit-description" { "Description" }
                textarea #edit-description name="description" rows="2" maxlength="2000" { (site.description.as_deref().unwrap_or("")) }
                label for="edit-threshold" { "Confidence threshold" }
                input #edit-threshold name="confidence_threshold" type="number" min="0.01" max="1" step="any"
                    value=(site.confidence_threshold) aria-describedby="edit-threshold-hint";
                p.hint #edit-threshold-hint { "A rule without its own threshold fails when its label scores at least this (0.01 to 1)." }
                button.primary type="submit" { "Save settings" }
            }
            @if viewer.user.is_admin {
                details.danger {
                    summary { "Delete this site" }
                    form method="post" action=(format!("/sites/{}/delete", site.id)) {
                        input type="hidden" name="csrf" value=(csrf);
                        label.check {
                            input type="checkbox" name="confirm" value="yes" required;
                            "Yes, delete it with its endpoints, deliveries, media and members"
                        }
                        button.danger type="submit" { "Delete site" }
                    }
                }
            }
        }
    }
}

async fn edit(
    State(state): State<AppState>,
    Path(site_id): Path<SiteId>,
    post: Post<NewSiteForm>,
) -> Result<Response, DashError> {
    let Post { viewer, form } = post;
    viewer
        .require(&state, &site_id, Role::can_manage_site)
        .await?;
    let mut site = state
        .store
        .get_site(&site_id)
        .await?
        .ok_or(DashError::NotFound)?;
    let before = site.clone();
    site.name = crate::api::validate::text("name", form.name.trim(), 200)?;
    site.url = Some(form.url.trim())
        .filter(|url| !url.is_empty())
        .map(|url| crate::api::validate::web_url("url", url))
        .transpose()?;
    site.description =
        crate::api::validate::optional_text("description", Some(form.description.trim()), 2000)?;
    let threshold = form.confidence_threshold.trim();
    if !threshold.is_empty() {
        let value = threshold.parse::<f64>().map_err(|_| {
            DashError::BadRequest(
                "The confidence threshold is a number above 0 and at most 1.".into(),
            )
        })?;
        site.confidence_threshold = crate::api::sites::threshold(value)?;
    }
    site.updated_at = crate::model::Timestamp::now();
    let audit = super::audit_entry(
        &viewer,
        &site.id,
        "site.updated",
        site.id.as_str(),
        crate::api::sites::audit_detail(&site, &before),
    );
    if !state.store.update_site(&site, Some(&audit)).await? {
        return Err(DashError::NotFound);
    }
    Ok(axum::response::Redirect::to(&format!("/sites/{}", site.id)).into_response())
}

#[derive(Deserialize)]
struct Confirm {
    confirm: Option<String>,
}

async fn delete(
    State(state): State<AppState>,
    Path(site_id): Path<SiteId>,
    post: Post<Confirm>,
) -> Result<Response, DashError> {
    if !post.viewer.user.is_admin {
        return Err(DashError::Forbidden);
    }
    if site_id == OPERATOR_SITE_ID {
        return Err(DashError::NotFound);
    }
    if post.form.confirm.as_deref() != Some("yes") {
        return Err(DashError::BadRequest(
            "Tick the confirmation to delete the site.".into(),
        ));
    }
    if !state.store.delete_site(&site_id).await? {
        return Err(DashError::NotFound);
    }
    // The site's audit log goes with it; the server's log keeps the fact.
    tracing::info!(site_id = %site_id, by = %post.viewer.user.email, "site deleted");
    Ok(axum::response::Redirect::to("/sites").into_response())
}
