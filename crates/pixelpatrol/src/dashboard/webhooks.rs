//! A site's webhook endpoints, as the webhook spec walks a person through
//! them: add one (URL, a generated or typed secret, the events), send a test
//! webhook and see the outcome at once, reveal or rotate the secret
//! (audited), delete it. Owners and developers only: a moderator gets 403.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use pixelpatrol_webhooks::EventType;
use serde::Deserialize;

use super::layout::{empty, field_error, page, reveal_once, when};
use super::session::{Post, Viewer};
use super::{DashError, audit};
use crate::api::AppState;
use crate::api::error::AppError;
use crate::api::webhooks::{EndpointFields, new_endpoint, send_test_webhook};
use crate::model::{Endpoint, EndpointId, Role, Site, SiteId, Timestamp};
use crate::util::new_webhook_secret;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sites/{site_id}/webhooks", post(create))
        .route("/sites/{site_id}/webhooks/new", get(new_form))
        .route("/sites/{site_id}/webhooks/{webhook_id}", get(endpoint_page))
        .route(
            "/sites/{site_id}/webhooks/{webhook_id}/test",
            post(send_test),
        )
        .route(
            "/sites/{site_id}/webhooks/{webhook_id}/secret",
            post(reveal_secret),
        )
        .route(
            "/sites/{site_id}/webhooks/{webhook_id}/rotate",
            post(rotate_secret),
        )
        .route(
            "/sites/{site_id}/webhooks/{webhook_id}/delete",
            post(delete),
        )
        .route(
            "/sites/{site_id}/webhooks/{webhook_id}/enable",
            post(enable),
        )
        .route(
            "/sites/{site_id}/webhooks/{webhook_id}/edit",
            get(edit_form).post(edit),
        )
}

/// The site, if this person may manage its webhooks.
async fn webhook_site(
    state: &AppState,
    viewer: &Viewer,
    site_id: &SiteId,
) -> Result<Site, DashError> {
    viewer
        .require(state, site_id, Role::can_manage_webhooks)
        .await?;
    state
        .store
        .get_site(site_id)
        .await?
        .ok_or(DashError::NotFound)
}

async fn load(
    state: &AppState,
    viewer: &Viewer,
    site_id: &SiteId,
    webhook_id: &EndpointId,
) -> Result<(Site, Endpoint), DashError> {
    let site = webhook_site(state, viewer, site_id).await?;
    let endpoint = state
        .store
        .get_endpoint(&site.id, webhook_id)
        .await?
        .ok_or(DashError::NotFound)?;
    Ok((site, endpoint))
}

fn crumbs(site: &Site) -> Vec<(&str, String)> {
    vec![
        ("Sites", "/sites".into()),
        (site.name.as_str(), format!("/sites/{}", site.id)),
    ]
}

/// The events a site's endpoint can subscribe to.
fn subscribable() -> impl Iterator<Item = EventType> {
    EventType::ALL
        .into_iter()
        .filter(|event| !event.is_operator_alert())
}

#[derive(Deserialize, Default)]
struct EndpointForm {
    #[serde(default)]
    url: String,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    events: Vec<String>,
    active: Option<String>,
    strict_ordering: Option<String>,
    #[serde(default)]
    description: String,
}

/// Where the form posts, and what its secret field means.
enum FormFor<'a> {
    New,
    Edit(&'a Endpoint),
}

fn endpoint_form(
    viewer: &Viewer,
    site: &Site,
    input: &EndpointForm,
    error: Option<(&str, &str)>,
    purpose: FormFor<'_>,
) -> Markup {
    let (action, secret_hint) = match purpose {
        FormFor::New => (
            format!("/sites/{}/webhooks", site.id),
            "Leave empty to have one generated",
        ),
        FormFor::Edit(endpoint) => (
            format!("/sites/{}/webhooks/{}/edit", site.id, endpoint.id),
            "Leave empty to keep the current secret",
        ),
    };
    // The API names `events[2]`; the form shows one error for the group.
    let error_of = |field: &str| {
        error
            .filter(|(name, _)| *name == field || name.starts_with(&format!("{field}[")))
            .map(|(_, text)| text)
    };
    let checked = |event: EventType| input.events.iter().any(|name| name == event.as_str());
    html! {
        form.card method="post" action=(action) {
            input type="hidden" name="csrf" value=(viewer.session.csrf_token);
            label for="endpoint-url" { "Endpoint URL" }
            input #endpoint-url name="url" type="url" value=(input.url) required placeholder="https://example.com/webhooks/pixelpatrol";
            (field_error(error_of("url")))
            label for="endpoint-secret" { "Secret" }
            div.with-button {
                input #endpoint-secret name="secret" value=(input.secret) autocomplete="off" spellcheck="false"
                    placeholder=(secret_hint);
                button type="button" data-generate-secret="endpoint-secret" { "Generate" }
            }
            p.hint { "16 to 256 characters. A generated secret (whsec_…) also works with the Standard Webhooks libraries." }
            (field_error(error_of("secret")))
            fieldset {
                legend { "Events" }
                @for event in subscribable() {
                    label.check {
                        input type="checkbox" name="events" value=(event.as_str()) checked[checked(event)];
                        (event.as_str())
                    }
                }
            }
            (field_error(error_of("events")))
            label.check {
                input type="checkbox" name="active" value="on" checked[input.active.is_some()];
                "Active"
            }
            label.check {
                input type="checkbox" name="strict_ordering" value="on" checked[input.strict_ordering.is_some()];
                "Strict ordering"
            }
            p.hint { "Every event to this endpoint in order, one at a time. Otherwise events are in order per media item, and different items go in parallel." }
            label for="endpoint-description" { "Description" }
            input #endpoint-description name="description" value=(input.description) maxlength="2000";
            (field_error(error_of("description")))
            button.primary type="submit" { "Save" }
        }
    }
}

async fn new_form(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(site_id): Path<SiteId>,
) -> Result<Html<String>, DashError> {
    let site = webhook_site(&state, &viewer, &site_id).await?;
    let defaults = EndpointForm {
        events: vec![
            EventType::MediaCreated.as_str().into(),
            EventType::MediaModerated.as_str().into(),
        ],
        active: Some("on".into()),
        ..EndpointForm::default()
    };
    Ok(page(
        &viewer,
        "Add endpoint",
        &crumbs(&site),
        endpoint_form(&viewer, &site, &defaults, None, FormFor::New),
    ))
}

async fn create(
    State(state): State<AppState>,
    Path(site_id): Path<SiteId>,
    post: Post<EndpointForm>,
) -> Result<Response, DashError> {
    let Post { viewer, form } = post;
    let site = webhook_site(&state, &viewer, &site_id).await?;
    let secret = Some(form.secret.trim()).filter(|secret| !secret.is_empty());
    let description = Some(form.description.trim()).filter(|text| !text.is_empty());
    let made = new_endpoint(
        &site.id,
        EndpointFields {
            url: form.url.trim(),
            secret,
            events: &form.events,
            active: form.active.is_some(),
            description,
            strict_ordering: form.strict_ordering.is_some(),
        },
        state.config.dev,
    );
    let endpoint = match made {
        Ok(endpoint) => endpoint,
        Err(AppError::Invalid { field, message }) => {
            let field = field.unwrap_or_default();
            let body = endpoint_form(
                &viewer,
                &site,
                &form,
                Some((&field, &message)),
                FormFor::New,
            );
            let mut response = page(&viewer, "Add endpoint", &crumbs(&site), body).into_response();
            *response.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
            return Ok(response);
        }
        Err(other) => return Err(other.into()),
    };
    state.store.create_endpoint(&endpoint).await?;
    let detail = serde_json::json!({
        "url": endpoint.url,
        "events": endpoint.events,
        "active": endpoint.active,
        "strict_ordering": endpoint.strict_ordering,
    });
    audit(
        &state,
        &viewer,
        &site.id,
        "endpoint.created",
        endpoint.id.as_str(),
        detail,
    )
    .await?;
    Ok(Redirect::to(&format!("/sites/{}/webhooks/{}", site.id, endpoint.id)).into_response())
}

/// healthy, failing or disabled.
pub fn endpoint_state(endpoint: &Endpoint, failing_after: i64) -> &'static str {
    if !endpoint.active {
        "disabled"
    } else if endpoint.health.consecutive_failures >= failing_after {
        "failing"
    } else {
        "healthy"
    }
}

/// The endpoint's page, with `extra` (a test's outcome, a revealed secret)
/// in the place the buttons' results go.
async fn render(
    state: &AppState,
    viewer: &Viewer,
    site: &Site,
    endpoint: &Endpoint,
    extra: Markup,
) -> Result<Html<String>, DashError> {
    let state_label = endpoint_state(endpoint, state.deliverer.failing_after());
    let base = format!("/sites/{}/webhooks/{}", site.id, endpoint.id);
    let csrf = &viewer.session.csrf_token;
    let health = super::health::section(state, endpoint, csrf, &base).await?;
    let button = |action: &str, label: &str| {
        html! {
            form.inline method="post" action=(format!("{base}/{action}")) data-inline="result" {
                input type="hidden" name="csrf" value=(csrf);
                button type="submit" { (label) }
            }
        }
    };
    Ok(page(
        viewer,
        &endpoint.url,
        &crumbs(site),
        html! {
            dl.facts {
                dt { "State" } dd { span class=(format!("state {state_label}")) { (state_label) }
                    @if let Some(reason) = &endpoint.disabled_reason { " — " (reason) } }
                dt { "Events" } dd { (endpoint.events.iter().map(|event| event.as_str()).collect::<Vec<_>>().join(", ")) }
                dt { "Ordering" } dd { @if endpoint.strict_ordering { "strict: one at a time, in order" } @else { "in order per media item" } }
                @if let Some(description) = &endpoint.description { dt { "Description" } dd { (description) } }
                @if let Some(at) = endpoint.health.last_success_at { dt { "Last success" } dd { (when(at)) } }
                @if let Some(at) = endpoint.health.last_failure_at {
                    dt { "Last failure" } dd { (when(at)) @if let Some(message) = &endpoint.health.last_failure_message { " — " (message) } }
                }
                dt { "Created" } dd { (when(endpoint.created_at)) }
            }
            div.actions {
                (button("test", "Send test webhook"))
                (button("secret", "Reveal secret"))
                (button("rotate", "Rotate secret"))
                a.button.secondary href=(format!("{base}/edit")) { "Edit" }
            }
            div #result aria-live="polite" { (extra) }
            (health)
            p { a.button href=(format!("{base}/deliveries")) { "Delivery log" } }
            (super::deliveries::recover_form(viewer, site, endpoint))
            details.danger {
                summary { "Delete this endpoint" }
                form method="post" action=(format!("{base}/delete")) {
                    input type="hidden" name="csrf" value=(csrf);
                    label.check {
                        input type="checkbox" name="confirm" value="yes" required;
                        "Yes, delete it: its pending deliveries are dropped"
                    }
                    button.danger type="submit" { "Delete endpoint" }
                }
            }
        },
    ))
}

async fn endpoint_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((site_id, webhook_id)): Path<(SiteId, EndpointId)>,
) -> Result<Html<String>, DashError> {
    let (site, endpoint) = load(&state, &viewer, &site_id, &webhook_id).await?;
    render(&state, &viewer, &site, &endpoint, html! {}).await
}

#[derive(Deserialize)]
struct NoFields {}

async fn send_test(
    State(state): State<AppState>,
    Path((site_id, webhook_id)): Path<(SiteId, EndpointId)>,
    post: Post<NoFields>,
) -> Result<Html<String>, DashError> {
    let (site, endpoint) = load(&state, &post.viewer, &site_id, &webhook_id).await?;
    let outcome = send_test_webhook(&state, &endpoint).await?;
    // The attempt has moved the endpoint's health on: show it as it is now.
    let endpoint = state
        .store
        .get_endpoint(&site.id, &endpoint.id)
        .await?
        .ok_or(DashError::NotFound)?;
    let result = html! {
        div class=(if outcome.success { "outcome ok" } else { "outcome bad" }) role="status" {
            p {
                strong { @if outcome.success { "Test webhook delivered" } @else { "Test webhook failed" } }
                " — "
                @if let Some(code) = outcome.status_code { "HTTP " (code) ", " }
                (outcome.duration_ms) " ms"
            }
            @if let Some(error) = &outcome.error {
                p { "Error: " code { (error.class) } " — " (error.message) }
            }
            @if let Some(at) = outcome.next_attempt_at {
                p { "It will be retried at " (when(at)) "." }
            }
        }
    };
    render(&state, &post.viewer, &site, &endpoint, result).await
}

async fn reveal_secret(
    State(state): State<AppState>,
    Path((site_id, webhook_id)): Path<(SiteId, EndpointId)>,
    post: Post<NoFields>,
) -> Result<Html<String>, DashError> {
    let (site, endpoint) = load(&state, &post.viewer, &site_id, &webhook_id).await?;
    audit(
        &state,
        &post.viewer,
        &site.id,
        "secret.revealed",
        endpoint.id.as_str(),
        serde_json::json!({}),
    )
    .await?;
    let shown = html! {
        div.reveal role="status" {
            p { strong { "Signing secret" } " (this reveal is in the site's audit log)" }
            div.copy { code #endpoint-secret-value { (endpoint.secret) } button type="button" data-copy="endpoint-secret-value" { "Copy" } }
        }
    };
    render(&state, &post.viewer, &site, &endpoint, shown).await
}

async fn rotate_secret(
    State(state): State<AppState>,
    Path((site_id, webhook_id)): Path<(SiteId, EndpointId)>,
    post: Post<NoFields>,
) -> Result<Html<String>, DashError> {
    let (site, mut endpoint) = load(&state, &post.viewer, &site_id, &webhook_id).await?;
    endpoint.secret = new_webhook_secret();
    endpoint.updated_at = Timestamp::now();
    if !state
        .store
        .update_endpoint(&endpoint, false, endpoint.updated_at)
        .await?
    {
        return Err(DashError::NotFound);
    }
    audit(
        &state,
        &post.viewer,
        &site.id,
        "secret.rotated",
        endpoint.id.as_str(),
        serde_json::json!({}),
    )
    .await?;
    let shown = reveal_once(
        "New signing secret",
        "endpoint-secret-value",
        &endpoint.secret,
    );
    render(&state, &post.viewer, &site, &endpoint, shown).await
}

fn form_of(endpoint: &Endpoint) -> EndpointForm {
    EndpointForm {
        url: endpoint.url.clone(),
        secret: String::new(),
        events: endpoint
            .events
            .iter()
            .map(|event| event.as_str().to_string())
            .collect(),
        active: endpoint.active.then(|| "on".to_string()),
        strict_ordering: endpoint.strict_ordering.then(|| "on".to_string()),
        description: endpoint.description.clone().unwrap_or_default(),
    }
}

async fn edit_form(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((site_id, webhook_id)): Path<(SiteId, EndpointId)>,
) -> Result<Html<String>, DashError> {
    let (site, endpoint) = load(&state, &viewer, &site_id, &webhook_id).await?;
    let form = endpoint_form(
        &viewer,
        &site,
        &form_of(&endpoint),
        None,
        FormFor::Edit(&endpoint),
    );
    Ok(page(&viewer, "Edit endpoint", &crumbs(&site), form))
}

/// The endpoint with the form's values, checked as the API checks them.
fn edited(endpoint: &Endpoint, form: &EndpointForm, dev: bool) -> Result<Endpoint, AppError> {
    let mut edited = endpoint.clone();
    edited.url = crate::api::validate::endpoint_url("url", form.url.trim(), dev)?;
    if !form.secret.trim().is_empty() {
        edited.secret = crate::api::webhooks::check_secret(form.secret.trim())?;
    }
    edited.events = crate::api::webhooks::parse_events(&form.events)?;
    edited.description =
        crate::api::validate::optional_text("description", Some(form.description.trim()), 2000)?;
    edited.strict_ordering = form.strict_ordering.is_some();
    let active = form.active.is_some();
    if active && !endpoint.active {
        // Turned back on: what disabled it no longer applies.
        edited.disabled_reason = None;
        edited.disabled_at = None;
    }
    edited.active = active;
    edited.updated_at = Timestamp::now();
    Ok(edited)
}

async fn edit(
    State(state): State<AppState>,
    Path((site_id, webhook_id)): Path<(SiteId, EndpointId)>,
    post: Post<EndpointForm>,
) -> Result<Response, DashError> {
    let Post { viewer, form } = post;
    let (site, endpoint) = load(&state, &viewer, &site_id, &webhook_id).await?;
    let changed = match edited(&endpoint, &form, state.config.dev) {
        Ok(changed) => changed,
        Err(AppError::Invalid { field, message }) => {
            let field = field.unwrap_or_default();
            let body = endpoint_form(
                &viewer,
                &site,
                &form,
                Some((&field, &message)),
                FormFor::Edit(&endpoint),
            );
            let mut response = page(&viewer, "Edit endpoint", &crumbs(&site), body).into_response();
            *response.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
            return Ok(response);
        }
        Err(other) => return Err(other.into()),
    };
    let set_active = changed.active != endpoint.active;
    if !state
        .store
        .update_endpoint(&changed, set_active, changed.updated_at)
        .await?
    {
        return Err(DashError::NotFound);
    }
    state.deliverer.wake();
    let detail = serde_json::json!({
        "url": changed.url,
        "events": changed.events,
        "active": changed.active,
        "strict_ordering": changed.strict_ordering,
        "secret_changed": changed.secret != endpoint.secret,
    });
    audit(
        &state,
        &viewer,
        &site.id,
        "endpoint.updated",
        endpoint.id.as_str(),
        detail,
    )
    .await?;
    Ok(Redirect::to(&format!("/sites/{}/webhooks/{}", site.id, endpoint.id)).into_response())
}

async fn enable(
    State(state): State<AppState>,
    Path((site_id, webhook_id)): Path<(SiteId, EndpointId)>,
    post: Post<NoFields>,
) -> Result<Response, DashError> {
    let (site, mut endpoint) = load(&state, &post.viewer, &site_id, &webhook_id).await?;
    if !endpoint.active {
        let was = endpoint.disabled_reason.clone();
        endpoint.active = true;
        endpoint.disabled_reason = None;
        endpoint.disabled_at = None;
        endpoint.updated_at = Timestamp::now();
        // The store starts its health afresh and makes its backlog due now.
        if !state
            .store
            .update_endpoint(&endpoint, true, endpoint.updated_at)
            .await?
        {
            return Err(DashError::NotFound);
        }
        state.deliverer.wake();
        let detail = serde_json::json!({"disabled_reason": was});
        audit(
            &state,
            &post.viewer,
            &site.id,
            "endpoint.enabled",
            endpoint.id.as_str(),
            detail,
        )
        .await?;
    }
    Ok(Redirect::to(&format!("/sites/{}/webhooks/{}", site.id, endpoint.id)).into_response())
}

#[derive(Deserialize)]
struct Confirm {
    confirm: Option<String>,
}

async fn delete(
    State(state): State<AppState>,
    Path((site_id, webhook_id)): Path<(SiteId, EndpointId)>,
    post: Post<Confirm>,
) -> Result<Response, DashError> {
    let (site, endpoint) = load(&state, &post.viewer, &site_id, &webhook_id).await?;
    if post.form.confirm.as_deref() != Some("yes") {
        return Err(DashError::BadRequest(
            "Tick the confirmation to delete the endpoint.".into(),
        ));
    }
    if state.store.delete_endpoint(&site.id, &endpoint.id).await? {
        let detail = serde_json::json!({"url": endpoint.url});
        audit(
            &state,
            &post.viewer,
            &site.id,
            "endpoint.deleted",
            endpoint.id.as_str(),
            detail,
        )
        .await?;
    }
    Ok(Redirect::to(&format!("/sites/{}", site.id)).into_response())
}

/// The site page's list of endpoints.
pub fn endpoints_table(site: &Site, endpoints: &[Endpoint], failing_after: i64) -> Markup {
    html! {
        @if endpoints.is_empty() {
            (empty("No webhook endpoints yet. Add one to receive media.created and media.moderated events."))
        } @else {
            table {
                thead { tr { th { "State" } th { "Endpoint URL" } th { "Events" } th { "Ordering" } } }
                tbody {
                    @for endpoint in endpoints {
                        @let endpoint_state = endpoint_state(endpoint, failing_after);
                        tr {
                            td { span class=(format!("state {endpoint_state}")) { (endpoint_state) } }
                            td { a href=(format!("/sites/{}/webhooks/{}", site.id, endpoint.id)) { (endpoint.url) } }
                            td { (endpoint.events.iter().map(|event| event.as_str()).collect::<Vec<_>>().join(", ")) }
                            td { @if endpoint.strict_ordering { "strict" } @else { "per media item" } }
                        }
                    }
                }
            }
        }
        p { a.button href=(format!("/sites/{}/webhooks/new", site.id)) { "Add endpoint" } }
    }
}
