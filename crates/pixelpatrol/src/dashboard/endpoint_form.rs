//! The endpoint form: adding an endpoint as the webhook guide walks a
//! person through it (URL, a generated or typed secret, the events), and
//! editing one. Checked by the same functions as the JSON API, errors shown
//! next to their field.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use pixelpatrol_webhooks::EventType;
use serde::Deserialize;

use super::layout::{field_error, page, refused};
use super::session::{Post, Viewer};
use super::webhooks::{crumbs, load, webhook_site};
use super::{DashError, audit_entry};
use crate::api::AppState;
use crate::api::error::AppError;
use crate::api::webhooks::{EndpointFields, audit_detail, new_endpoint};
use crate::model::{Endpoint, EndpointId, Site, SiteId, Timestamp};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sites/{site_id}/webhooks", post(create))
        .route("/sites/{site_id}/webhooks/new", get(new_form))
        .route(
            "/sites/{site_id}/webhooks/{webhook_id}/edit",
            get(edit_form).post(edit),
        )
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
            return Ok(refused(page(&viewer, "Add endpoint", &crumbs(&site), body)));
        }
        Err(other) => return Err(other.into()),
    };
    let detail = audit_detail(&endpoint);
    let entry = audit_entry(
        &viewer,
        &site.id,
        "endpoint.created",
        endpoint.id.as_str(),
        detail,
    );
    state.store.create_endpoint(&endpoint, Some(&entry)).await?;
    Ok(Redirect::to(&format!("/sites/{}/webhooks/{}", site.id, endpoint.id)).into_response())
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
            return Ok(refused(page(
                &viewer,
                "Edit endpoint",
                &crumbs(&site),
                body,
            )));
        }
        Err(other) => return Err(other.into()),
    };
    let set_active = changed.active != endpoint.active;
    let mut detail = audit_detail(&changed);
    detail["secret_changed"] = serde_json::json!(changed.secret != endpoint.secret);
    let entry = audit_entry(
        &viewer,
        &site.id,
        "endpoint.updated",
        endpoint.id.as_str(),
        detail,
    );
    if !state
        .store
        .update_endpoint(&changed, set_active, changed.updated_at, Some(&entry))
        .await?
    {
        return Err(DashError::NotFound);
    }
    state.deliverer.wake();
    Ok(Redirect::to(&format!("/sites/{}/webhooks/{}", site.id, endpoint.id)).into_response())
}
