//! Webhook endpoints of a site, their secrets, and the test event.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use pixelpatrol_webhooks::{EventType, TestWebhook};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ApiJson;
use super::Page;
use super::sites::load_site;
use super::validate::{endpoint_url, nullable, optional_text};
use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::error::{AppError, Result};
use crate::model::{
    DeliveryId, Endpoint, EndpointId, EventId, LeaseToken, NewEvent, NextStep, SiteId, Timestamp,
};
use crate::util::{new_id, new_webhook_secret};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/sites/{site_id}/webhooks",
            post(create_endpoint).get(list_endpoints),
        )
        .route(
            "/v1/sites/{site_id}/webhooks/{webhook_id}",
            get(get_endpoint)
                .patch(update_endpoint)
                .delete(delete_endpoint),
        )
        .route(
            "/v1/sites/{site_id}/webhooks/{webhook_id}/secret",
            get(get_secret),
        )
        .route(
            "/v1/sites/{site_id}/webhooks/{webhook_id}/test",
            post(send_test),
        )
}

/// The events a site's endpoint may subscribe to, as the errors list them:
/// every event type but the operator's alerts.
pub fn subscribable_events() -> String {
    EventType::ALL
        .iter()
        .filter(|event| !event.is_operator_alert())
        .map(|event| event.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Event names as given; checked one by one so the error names the entry.
pub fn parse_events(events: &[String]) -> Result<Vec<EventType>> {
    if events.is_empty() {
        return Err(AppError::invalid(
            "events",
            format!("events must name at least one of {}", subscribable_events()),
        ));
    }
    let mut parsed = Vec::new();
    for (index, name) in events.iter().enumerate() {
        let event: EventType =
            name.parse()
                .map_err(|error: pixelpatrol_webhooks::UnknownEventType| {
                    AppError::invalid(format!("events[{index}]"), error.to_string())
                })?;
        if event.is_operator_alert() {
            return Err(AppError::invalid(
                format!("events[{index}]"),
                format!(
                    "{event} is an operator alert, sent to the server's PIXELPATROL_ALERT_WEBHOOK_URL; endpoints subscribe to {}",
                    subscribable_events()
                ),
            ));
        }
        if !parsed.contains(&event) {
            parsed.push(event);
        }
    }
    Ok(parsed)
}

/// "Generate or enter a webhook secret": 16–256 printable characters.
pub fn check_secret(secret: &str) -> Result<String> {
    let length = secret.chars().count();
    if !(16..=256).contains(&length) {
        return Err(AppError::invalid(
            "secret",
            "secret must be 16 to 256 characters (omit it to have one generated)",
        ));
    }
    if secret.chars().any(char::is_control) {
        return Err(AppError::invalid(
            "secret",
            "secret must consist of printable characters",
        ));
    }
    Ok(secret.to_string())
}

/// An endpoint as the API shows it: never its secret (shown when made, and
/// by `GET …/secret` to those who may see it).
#[derive(Serialize)]
pub(super) struct EndpointOut {
    id: EndpointId,
    site_id: SiteId,
    url: String,
    events: Vec<EventType>,
    active: bool,
    description: Option<String>,
    strict_ordering: bool,
    /// Why the server disabled the endpoint (`410 Gone`, or failing too long).
    disabled_reason: Option<String>,
    disabled_at: Option<Timestamp>,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl From<&Endpoint> for EndpointOut {
    fn from(endpoint: &Endpoint) -> Self {
        EndpointOut {
            id: endpoint.id.clone(),
            site_id: endpoint.site_id.clone(),
            url: endpoint.url.clone(),
            events: endpoint.events.clone(),
            active: endpoint.active,
            description: endpoint.description.clone(),
            strict_ordering: endpoint.strict_ordering,
            disabled_reason: endpoint.disabled_reason.clone(),
            disabled_at: endpoint.disabled_at,
            created_at: endpoint.created_at,
            updated_at: endpoint.updated_at,
        }
    }
}

/// A new endpoint with its secret.
#[derive(Serialize)]
struct NewEndpointOut {
    #[serde(flatten)]
    endpoint: EndpointOut,
    secret: String,
}

#[derive(Deserialize)]
struct CreateEndpoint {
    url: String,
    secret: Option<String>,
    events: Vec<String>,
    active: Option<bool>,
    description: Option<String>,
    strict_ordering: Option<bool>,
}

/// What a new endpoint is made from, checked field by field (the API and
/// the dashboard both create endpoints through [`new_endpoint`]).
pub struct EndpointFields<'a> {
    pub url: &'a str,
    /// `None`: one is generated.
    pub secret: Option<&'a str>,
    pub events: &'a [String],
    pub active: bool,
    pub description: Option<&'a str>,
    pub strict_ordering: bool,
}

pub fn new_endpoint(site_id: &SiteId, fields: EndpointFields<'_>, dev: bool) -> Result<Endpoint> {
    let now = Timestamp::now();
    Ok(Endpoint {
        id: EndpointId::generate(),
        site_id: site_id.clone(),
        url: endpoint_url("url", fields.url, dev)?,
        secret: match fields.secret {
            Some(secret) => check_secret(secret)?,
            None => new_webhook_secret(),
        },
        events: parse_events(fields.events)?,
        active: fields.active,
        description: optional_text("description", fields.description, 2000)?,
        strict_ordering: fields.strict_ordering,
        disabled_reason: None,
        disabled_at: None,
        health: Default::default(),
        created_at: now,
        updated_at: now,
    })
}

async fn create_endpoint(
    caller: Caller,
    State(state): State<AppState>,
    Path(site_id): Path<SiteId>,
    ApiJson(input): ApiJson<CreateEndpoint>,
) -> Result<(StatusCode, Json<NewEndpointOut>)> {
    load_site(&state, &caller, &site_id).await?;
    let endpoint = new_endpoint(
        &site_id,
        EndpointFields {
            url: &input.url,
            secret: input.secret.as_deref(),
            events: &input.events,
            active: input.active.unwrap_or(true),
            description: input.description.as_deref(),
            strict_ordering: input.strict_ordering.unwrap_or(false),
        },
        state.config.dev,
    )?;
    let detail = audit_detail(&endpoint);
    let audit = caller.audit(
        &endpoint.site_id,
        "endpoint.created",
        endpoint.id.as_str(),
        detail,
    );
    state.store.create_endpoint(&endpoint, Some(&audit)).await?;
    Ok((
        StatusCode::CREATED,
        Json(NewEndpointOut {
            endpoint: EndpointOut::from(&endpoint),
            secret: endpoint.secret,
        }),
    ))
}

async fn list_endpoints(
    caller: Caller,
    State(state): State<AppState>,
    Path(site_id): Path<SiteId>,
) -> Result<Json<Page<EndpointOut>>> {
    load_site(&state, &caller, &site_id).await?;
    let endpoints = state.store.list_endpoints(&site_id).await?;
    Ok(Json(Page {
        data: endpoints.iter().map(EndpointOut::from).collect(),
        next_cursor: None,
    }))
}

pub(super) async fn load_endpoint(
    state: &AppState,
    caller: &Caller,
    site_id: &SiteId,
    webhook_id: &EndpointId,
) -> Result<Endpoint> {
    caller.ensure_site(site_id)?;
    state
        .store
        .get_endpoint(site_id, webhook_id)
        .await?
        .ok_or(AppError::NotFound("webhook"))
}

async fn get_endpoint(
    caller: Caller,
    State(state): State<AppState>,
    Path((site_id, webhook_id)): Path<(SiteId, EndpointId)>,
) -> Result<Json<EndpointOut>> {
    Ok(Json(EndpointOut::from(
        &load_endpoint(&state, &caller, &site_id, &webhook_id).await?,
    )))
}

async fn get_secret(
    caller: Caller,
    State(state): State<AppState>,
    Path((site_id, webhook_id)): Path<(SiteId, EndpointId)>,
) -> Result<Json<Value>> {
    let endpoint = load_endpoint(&state, &caller, &site_id, &webhook_id).await?;
    // Logged before it is answered: no reveal goes unrecorded.
    let audit = caller.audit(&site_id, "secret.revealed", endpoint.id.as_str(), json!({}));
    state.store.record_audit(&audit).await?;
    Ok(Json(json!({"secret": endpoint.secret})))
}

#[derive(Deserialize)]
struct UpdateEndpoint {
    url: Option<String>,
    secret: Option<String>,
    events: Option<Vec<String>>,
    active: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
    strict_ordering: Option<bool>,
}

async fn update_endpoint(
    caller: Caller,
    State(state): State<AppState>,
    Path((site_id, webhook_id)): Path<(SiteId, EndpointId)>,
    ApiJson(input): ApiJson<UpdateEndpoint>,
) -> Result<Json<EndpointOut>> {
    let mut endpoint = load_endpoint(&state, &caller, &site_id, &webhook_id).await?;
    let secret_changed = input.secret.is_some();
    if let Some(url) = input.url {
        endpoint.url = endpoint_url("url", &url, state.config.dev)?;
    }
    if let Some(secret) = input.secret {
        endpoint.secret = check_secret(&secret)?;
    }
    if let Some(events) = input.events {
        endpoint.events = parse_events(&events)?;
    }
    if let Some(active) = input.active {
        if active {
            // Turned back on: what disabled it no longer applies, and its
            // health starts afresh (the store does the same).
            if !endpoint.active {
                endpoint.health.consecutive_failures = 0;
                endpoint.health.failing_since = None;
            }
            endpoint.disabled_reason = None;
            endpoint.disabled_at = None;
        }
        endpoint.active = active;
    }
    if let Some(description) = input.description {
        endpoint.description = optional_text("description", description.as_deref(), 2000)?;
    }
    if let Some(strict) = input.strict_ordering {
        endpoint.strict_ordering = strict;
    }
    endpoint.updated_at = Timestamp::now();
    let mut detail = audit_detail(&endpoint);
    detail["secret_changed"] = json!(secret_changed);
    let audit = caller.audit(&site_id, "endpoint.updated", endpoint.id.as_str(), detail);
    if !state
        .store
        .update_endpoint(
            &endpoint,
            input.active.is_some(),
            endpoint.updated_at,
            Some(&audit),
        )
        .await?
    {
        return Err(AppError::NotFound("webhook"));
    }
    // Re-activation may have made pending deliveries due.
    state.deliverer.wake();
    Ok(Json(EndpointOut::from(&endpoint)))
}

async fn delete_endpoint(
    caller: Caller,
    State(state): State<AppState>,
    Path((site_id, webhook_id)): Path<(SiteId, EndpointId)>,
) -> Result<StatusCode> {
    caller.ensure_site(&site_id)?;
    let audit = caller.audit(&site_id, "endpoint.deleted", webhook_id.as_str(), json!({}));
    if state
        .store
        .delete_endpoint(&site_id, &webhook_id, Some(&audit))
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::NotFound("webhook"))
    }
}

/// What the audit log keeps of an endpoint as created or changed (never its
/// secret): the API and the dashboard record the same.
pub fn audit_detail(endpoint: &Endpoint) -> Value {
    json!({
        "url": endpoint.url,
        "events": endpoint.events,
        "active": endpoint.active,
        "strict_ordering": endpoint.strict_ordering,
    })
}

/// The outcome of a test send.
#[derive(Serialize)]
pub struct TestOut {
    pub delivery_id: DeliveryId,
    pub event_id: EventId,
    pub success: bool,
    pub status_code: Option<u16>,
    pub duration_ms: i64,
    pub error: Option<TestError>,
    pub next_attempt_at: Option<Timestamp>,
}

#[derive(Serialize)]
pub struct TestError {
    pub class: &'static str,
    pub message: String,
}

/// Sends a `test.webhook` event to this endpoint now, whatever its event
/// selection, and answers with the attempt's outcome. The delivery is logged
/// (and, if it failed, retried) like any other.
async fn send_test(
    caller: Caller,
    State(state): State<AppState>,
    Path((site_id, webhook_id)): Path<(SiteId, EndpointId)>,
) -> Result<Json<TestOut>> {
    let endpoint = load_endpoint(&state, &caller, &site_id, &webhook_id).await?;
    Ok(Json(send_test_webhook(&state, &endpoint).await?))
}

/// Writes a `test.webhook` delivery to `endpoint`, sends it at once and
/// records the attempt (the API's `…/test` and the dashboard's button).
pub async fn send_test_webhook(state: &AppState, endpoint: &Endpoint) -> Result<TestOut> {
    let now = Timestamp::now();
    // Test events have a lane of their own each.
    let media_id = new_id("test");
    let event = NewEvent::new(
        EventType::TestWebhook,
        &endpoint.site_id,
        &media_id,
        TestWebhook {
            media_id: media_id.clone(),
            site_id: endpoint.site_id.to_string(),
            status: "test".into(),
            is_test: true,
            message: "Test webhook received successfully".into(),
        },
        now,
        // Sent at once by this request, whatever the schedule says.
        now,
    )?;
    let delivery_id = DeliveryId::generate();
    let claimed = state
        .store
        .create_leased_delivery(
            endpoint,
            &event,
            &delivery_id,
            &LeaseToken::generate(),
            state.deliverer.lease_until(now),
        )
        .await?;
    let (outcome, record) = state.deliverer.send_now(&claimed).await?;
    Ok(TestOut {
        delivery_id,
        event_id: event.id,
        success: outcome.succeeded(),
        status_code: outcome.status_code,
        duration_ms: outcome.duration_ms,
        error: outcome.error.as_ref().map(|(class, message)| TestError {
            class: class.as_str(),
            message: message.clone(),
        }),
        next_attempt_at: match record.next {
            NextStep::RetryAt(at) => Some(at),
            _ => None,
        },
    })
}
