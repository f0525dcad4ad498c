//! An endpoint's delivery log: every delivery newest first (filtered by
//! status and event, paged by cursor, refreshing itself while open), and a
//! delivery's page: the request as sent and every attempt, with `Retry
//! now`; and recovering dead deliveries since a chosen time.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use pixelpatrol_webhooks::EventType;
use serde::Deserialize;

use super::layout::{empty, page, when};
use super::session::{Post, Viewer};
use super::webhooks::load;
use super::{DashError, audit_entry};
use crate::api::AppState;
use crate::delivery::sender::Sender;
use crate::model::{
    Delivery, DeliveryFilter, DeliveryId, DeliveryStatus, Endpoint, EndpointId, RetryOutcome, Site,
    SiteId, Timestamp,
};

const PAGE_SIZE: i64 = 50;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/sites/{site_id}/webhooks/{webhook_id}/deliveries",
            get(log),
        )
        .route(
            "/sites/{site_id}/webhooks/{webhook_id}/deliveries/{delivery_id}",
            get(delivery_page),
        )
        .route(
            "/sites/{site_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
            post(retry),
        )
        .route(
            "/sites/{site_id}/webhooks/{webhook_id}/recover",
            post(recover),
        )
}

fn crumbs<'a>(site: &'a Site, endpoint: &'a Endpoint) -> Vec<(&'a str, String)> {
    vec![
        ("Sites", "/sites".into()),
        (site.name.as_str(), format!("/sites/{}", site.id)),
        (
            endpoint.url.as_str(),
            format!("/sites/{}/webhooks/{}", site.id, endpoint.id),
        ),
    ]
}

#[derive(Deserialize, Default)]
struct LogQuery {
    status: Option<String>,
    event: Option<String>,
    cursor: Option<i64>,
}

fn status_label(delivery: &Delivery) -> &'static str {
    match delivery.status {
        DeliveryStatus::Succeeded => "succeeded",
        DeliveryStatus::Failed => "dead",
        DeliveryStatus::Pending if delivery.attempt_count == 0 => "pending",
        DeliveryStatus::Pending => "retrying",
    }
}

fn status_class(delivery: &Delivery) -> &'static str {
    match delivery.status {
        DeliveryStatus::Succeeded => "state healthy",
        DeliveryStatus::Failed => "state disabled",
        DeliveryStatus::Pending => "state failing",
    }
}

async fn log(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((site_id, webhook_id)): Path<(SiteId, EndpointId)>,
    Query(query): Query<LogQuery>,
) -> Result<Html<String>, DashError> {
    let (site, endpoint) = load(&state, &viewer, &site_id, &webhook_id).await?;
    let status = match query.status.as_deref().filter(|text| !text.is_empty()) {
        None => None,
        Some(text) => Some(
            DeliveryStatus::parse(text)
                .ok_or_else(|| DashError::BadRequest(format!("unknown status {text:?}")))?,
        ),
    };
    let event = match query.event.as_deref().filter(|text| !text.is_empty()) {
        None => None,
        Some(text) => Some(
            text.parse::<EventType>()
                .map_err(|error| DashError::BadRequest(error.to_string()))?,
        ),
    };
    let filter = DeliveryFilter {
        status,
        event,
        since: None,
        before_seq: query.cursor,
        limit: PAGE_SIZE,
    };
    let deliveries = state.store.list_deliveries(&endpoint.id, &filter).await?;
    let base = format!("/sites/{}/webhooks/{}/deliveries", site.id, endpoint.id);
    let next = (deliveries.len() as i64 == PAGE_SIZE)
        .then(|| deliveries.last().map(|delivery| delivery.seq))
        .flatten();
    let selected_status = query.status.clone().unwrap_or_default();
    let selected_event = query.event.clone().unwrap_or_default();
    Ok(page(
        &viewer,
        "Delivery log",
        &crumbs(&site, &endpoint),
        html! {
            form.filters method="get" action=(base) {
                label for="filter-status" { "Status" }
                select #filter-status name="status" {
                    option value="" selected[selected_status.is_empty()] { "any" }
                    @for option in ["pending", "succeeded", "failed"] {
                        option value=(option) selected[selected_status == option] { (option) }
                    }
                }
                label for="filter-event" { "Event" }
                select #filter-event name="event" {
                    option value="" selected[selected_event.is_empty()] { "any" }
                    @for option in EventType::ALL.iter().filter(|event| !event.is_operator_alert()) {
                        option value=(option.as_str()) selected[selected_event == option.as_str()] { (option.as_str()) }
                    }
                }
                button type="submit" { "Filter" }
            }
            // Refreshed by the script while the page is open (only the
            // first page: older pages do not change at the top).
            div #log data-refresh=[query.cursor.is_none().then_some("3000")] aria-live="polite" {
                @if deliveries.is_empty() {
                    (empty("No deliveries yet — send a test webhook from the endpoint's page."))
                } @else {
                    table {
                        thead { tr { th { "Event" } th { "Created" } th { "Status" } th { "Attempts" } th { "Last response" } th { "Next retry" } } }
                        tbody {
                            @for delivery in &deliveries {
                                tr {
                                    td { a href=(format!("{base}/{}", delivery.id)) { (delivery.event) } }
                                    td { (when(delivery.created_at)) }
                                    td { span class=(status_class(delivery)) { (status_label(delivery)) } }
                                    td { (delivery.attempt_count) }
                                    td {
                                        @if let Some(code) = delivery.last_status_code { "HTTP " (code) }
                                        @if let Some(last) = delivery.attempts.last() { " · " (last.duration_ms) " ms" }
                                        @if let Some(error) = &delivery.last_error { br; span.muted { (error) } }
                                    }
                                    td {
                                        @if delivery.status == DeliveryStatus::Pending && delivery.attempt_count > 0 {
                                            @if let Some(at) = delivery.next_attempt_at { (when(at)) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(next) = next {
                p { a href=(format!("{base}?status={selected_status}&event={selected_event}&cursor={next}")) { "Older deliveries" } }
            }
        },
    ))
}

fn pretty(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .and_then(|value| serde_json::to_string_pretty(&value))
        .unwrap_or_else(|_| body.to_string())
}

fn request_as_sent(endpoint: &Endpoint, delivery: &Delivery, body: Option<&str>) -> Markup {
    html! {
        section aria-labelledby="request" {
            h2 #request { "Request" }
            @match body {
                None => { (empty("The request body is gone: retention purged this event.")) }
                Some(body) => {
                    @let sent_at = delivery.attempts.last().map_or(delivery.created_at, |attempt| attempt.started_at);
                    @let headers = Sender::headers_for(&endpoint.secret, delivery.event_id.as_str(), &delivery.event, body.as_bytes(), sent_at.system_time());
                    pre.request aria-label="Request headers" {
                        "POST " (endpoint.url) "\n"
                        @for (name, value) in &headers {
                            (name.as_str()) ": " (value.to_str().unwrap_or("")) "\n"
                        }
                    }
                    p.hint { "Headers of the last attempt, signed with the endpoint's current secret: after a rotation the signature sent was the old secret's." }
                    div.bodies {
                        div { h3 { "Body" } pre { (pretty(body)) } }
                        div { h3 { "Raw bytes (" (body.len()) ")" } pre.raw aria-label="Raw body" { (body) } }
                    }
                }
            }
        }
    }
}

async fn delivery_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((site_id, webhook_id, delivery_id)): Path<(SiteId, EndpointId, DeliveryId)>,
) -> Result<Html<String>, DashError> {
    let (site, endpoint) = load(&state, &viewer, &site_id, &webhook_id).await?;
    let delivery = state
        .store
        .get_delivery(&endpoint.id, &delivery_id)
        .await?
        .ok_or(DashError::NotFound)?;
    let body = state
        .store
        .event_payload(&site.id, &delivery.event_id)
        .await?;
    let mut crumbs = crumbs(&site, &endpoint);
    crumbs.push((
        "Delivery log",
        format!("/sites/{}/webhooks/{}/deliveries", site.id, endpoint.id),
    ));
    Ok(page(
        &viewer,
        &format!("{} delivery", delivery.event),
        &crumbs,
        html! {
            dl.facts {
                dt { "Status" } dd { span class=(status_class(&delivery)) { (status_label(&delivery)) } }
                dt { "Event" } dd { code { (delivery.event_id) } }
                dt { "Media item" } dd { code { (delivery.media_id) } }
                dt { "Created" } dd { (when(delivery.created_at)) }
                @if delivery.status == DeliveryStatus::Pending && delivery.attempt_count > 0 {
                    @if let Some(at) = delivery.next_attempt_at { dt { "Next retry" } dd { (when(at)) } }
                }
            }
            form method="post" action=(format!("/sites/{}/webhooks/{}/deliveries/{}/retry", site.id, endpoint.id, delivery.id)) {
                input type="hidden" name="csrf" value=(viewer.session.csrf_token);
                button.primary type="submit" { "Retry now" }
            }
            (request_as_sent(&endpoint, &delivery, body.as_deref()))
            section aria-labelledby="attempts" {
                h2 #attempts { "Attempts" }
                @if delivery.attempts.is_empty() {
                    (empty("No attempt yet: it is due now or waiting for its turn in order."))
                } @else {
                    table {
                        thead { tr { th { "#" } th { "Time" } th { "Status code" } th { "Duration" } th { "Error" } th { "Response" } } }
                        tbody {
                            @for attempt in &delivery.attempts {
                                tr {
                                    td { (attempt.attempt) }
                                    td { (when(attempt.started_at)) }
                                    td { @if let Some(code) = attempt.status_code { (code) } @else { span.muted { "—" } } }
                                    td { (attempt.duration_ms) " ms" }
                                    td {
                                        @if let Some(class) = &attempt.error_class { code { (class) } }
                                        @if let Some(message) = &attempt.error_message { " " (message) }
                                    }
                                    td { @if let Some(body) = &attempt.response_body { pre.excerpt { (body.chars().take(500).collect::<String>()) } } }
                                }
                            }
                        }
                    }
                }
            }
        },
    ))
}

#[derive(Deserialize)]
struct NoFields {}

async fn retry(
    State(state): State<AppState>,
    Path((site_id, webhook_id, delivery_id)): Path<(SiteId, EndpointId, DeliveryId)>,
    post: Post<NoFields>,
) -> Result<Response, DashError> {
    let (site, endpoint) = load(&state, &post.viewer, &site_id, &webhook_id).await?;
    let audit = audit_entry(
        &post.viewer,
        &site.id,
        "delivery.retried",
        delivery_id.as_str(),
        serde_json::json!({"endpoint_id": endpoint.id}),
    );
    match state
        .store
        .retry_delivery(&endpoint.id, &delivery_id, Timestamp::now(), Some(&audit))
        .await?
    {
        RetryOutcome::Queued(_) => state.deliverer.wake(),
        RetryOutcome::InFlight => {
            return Err(DashError::BadRequest(
                "An attempt of this delivery is being sent right now; try again when it has finished.".into(),
            ));
        }
        RetryOutcome::NotFound => return Err(DashError::NotFound),
    }
    Ok(Redirect::to(&format!(
        "/sites/{}/webhooks/{}/deliveries/{}",
        site.id, endpoint.id, delivery_id
    ))
    .into_response())
}

#[derive(Deserialize)]
struct RecoverForm {
    /// RFC 3339, filled in by the script from `since_local`.
    #[serde(default)]
    since: String,
    /// The `datetime-local` field as typed (no zone: taken as UTC without the script).
    #[serde(default)]
    since_local: String,
}

async fn recover(
    State(state): State<AppState>,
    Path((site_id, webhook_id)): Path<(SiteId, EndpointId)>,
    post: Post<RecoverForm>,
) -> Result<Response, DashError> {
    let (site, endpoint) = load(&state, &post.viewer, &site_id, &webhook_id).await?;
    // `datetime-local` gives no zone: the form's script sends the time with
    // the browser's offset; without it the time is taken as UTC.
    let since = Timestamp::parse_rfc3339(&post.form.since)
        .or_else(|| Timestamp::parse_rfc3339(&format!("{}:00Z", post.form.since_local)))
        .ok_or_else(|| DashError::BadRequest("Give the time to recover from.".into()))?;
    let audit = audit_entry(
        &post.viewer,
        &site.id,
        "deliveries.recovered",
        endpoint.id.as_str(),
        serde_json::json!({"since": since, "until": null}),
    );
    let outcome = state
        .store
        .recover_deliveries(&endpoint.id, since, None, Timestamp::now(), Some(&audit))
        .await?;
    if outcome.requeued > 0 {
        state.deliverer.wake();
    }
    Ok(Redirect::to(&format!(
        "/sites/{}/webhooks/{}/deliveries",
        site.id, endpoint.id
    ))
    .into_response())
}

/// The endpoint page's recovery form.
pub fn recover_form(viewer: &Viewer, site: &Site, endpoint: &Endpoint) -> Markup {
    html! {
        form.card method="post" action=(format!("/sites/{}/webhooks/{}/recover", site.id, endpoint.id)) data-local-time="since" {
            h3 { "Recover dead deliveries" }
            p.hint { "Queues again every delivery that failed all its attempts since this time, in its original order." }
            input type="hidden" name="csrf" value=(viewer.session.csrf_token);
            input type="hidden" name="since";
            label for="recover-since" { "Since" }
            input #recover-since type="datetime-local" name="since_local" required;
            button.primary type="submit" { "Recover" }
        }
    }
}
