//! An endpoint's page: send a test webhook and see the outcome at once,
//! reveal or rotate the secret (audited), its health, re-enable, delete;
//! and the site page's list of endpoints. Adding and editing one is
//! `endpoint_form`. Owners and developers only: a moderator gets 403.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{empty, page, reveal_once, when};
use super::session::{Post, Viewer};
use super::{DashError, audit, audit_entry};
use crate::api::AppState;
use crate::api::webhooks::send_test_webhook;
use crate::model::{Endpoint, EndpointId, HealthFigures, Role, Site, SiteId, Timestamp};
use crate::util::new_webhook_secret;

pub fn router() -> Router<AppState> {
    Router::new()
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
}

/// The site, if this person may manage its webhooks.
pub(super) async fn webhook_site(
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

pub(super) async fn load(
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

pub(super) fn crumbs(site: &Site) -> Vec<(&str, String)> {
    vec![
        ("Sites", "/sites".into()),
        (site.name.as_str(), format!("/sites/{}", site.id)),
    ]
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
    let state_label = endpoint.state(state.deliverer.failing_after());
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
    let entry = audit_entry(
        &post.viewer,
        &site.id,
        "secret.rotated",
        endpoint.id.as_str(),
        serde_json::json!({}),
    );
    if !state
        .store
        .update_endpoint(&endpoint, false, endpoint.updated_at, Some(&entry))
        .await?
    {
        return Err(DashError::NotFound);
    }
    let shown = reveal_once(
        "New signing secret",
        "endpoint-secret-value",
        &endpoint.secret,
    );
    render(&state, &post.viewer, &site, &endpoint, shown).await
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
        let detail = serde_json::json!({"disabled_reason": was});
        let entry = audit_entry(
            &post.viewer,
            &site.id,
            "endpoint.enabled",
            endpoint.id.as_str(),
            detail,
        );
        // The store starts its health afresh and makes its backlog due now.
        if !state
            .store
            .update_endpoint(&endpoint, true, endpoint.updated_at, Some(&entry))
            .await?
        {
            return Err(DashError::NotFound);
        }
        state.deliverer.wake();
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
    let detail = serde_json::json!({"url": endpoint.url});
    let entry = audit_entry(
        &post.viewer,
        &site.id,
        "endpoint.deleted",
        endpoint.id.as_str(),
        detail,
    );
    state
        .store
        .delete_endpoint(&site.id, &endpoint.id, Some(&entry))
        .await?;
    Ok(Redirect::to(&format!("/sites/{}", site.id)).into_response())
}

/// The site page's list of endpoints: state, URL, events, the last
/// delivery and the success rate over 24 hours.
pub fn endpoints_table(
    site: &Site,
    endpoints: &[(Endpoint, HealthFigures)],
    failing_after: i64,
) -> Markup {
    html! {
        @if endpoints.is_empty() {
            (empty("No webhook endpoints yet. Add one to receive media.created and media.moderated events."))
        } @else {
            table {
                thead { tr { th { "State" } th { "Endpoint URL" } th { "Events" } th { "Last delivery" } th { "Success, 24 h" } } }
                tbody {
                    @for (endpoint, figures) in endpoints {
                        @let endpoint_state = endpoint.state(failing_after);
                        @let last = endpoint.health.last_success_at.max(endpoint.health.last_failure_at);
                        tr {
                            td { span class=(format!("state {endpoint_state}")) { (endpoint_state) } }
                            td { a href=(format!("/sites/{}/webhooks/{}", site.id, endpoint.id)) { (endpoint.url) }
                                @if endpoint.strict_ordering { br; span.muted { "strict ordering" } } }
                            td { (endpoint.events.iter().map(|event| event.as_str()).collect::<Vec<_>>().join(", ")) }
                            td { @if let Some(at) = last { (when(at)) } @else { span.muted { "none yet" } } }
                            td { @if let Some(rate) = figures.last_day.success_rate { (format!("{:.1}%", rate * 100.0)) } @else { span.muted { "—" } } }
                        }
                    }
                }
            }
        }
        p { a.button href=(format!("/sites/{}/webhooks/new", site.id)) { "Add endpoint" } }
    }
}
