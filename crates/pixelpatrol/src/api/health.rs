//! Endpoint health (from the delivery log and the endpoint's running state)
//! and dead-letter recovery.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::sites::load_site;
use super::webhooks::load_endpoint;
use super::{ApiJson, query};
use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::error::{AppError, Result};
use crate::model::{Endpoint, EndpointId, RecoverOutcome, SiteId, Timestamp, WindowFigures};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sites/{site_id}/webhooks/health", get(site_health))
        .route(
            "/v1/sites/{site_id}/webhooks/{webhook_id}/health",
            get(endpoint_health),
        )
        .route(
            "/v1/sites/{site_id}/webhooks/{webhook_id}/recover",
            post(recover),
        )
}

#[derive(Serialize)]
struct LastFailure {
    at: Timestamp,
    class: Option<String>,
    status_code: Option<i64>,
    message: Option<String>,
}

#[derive(Serialize)]
struct Queue {
    /// Pending deliveries, those in flight included.
    depth: i64,
    in_flight: i64,
    oldest_pending_age_seconds: Option<f64>,
}

#[derive(Serialize)]
struct Health {
    webhook_id: EndpointId,
    url: String,
    /// `healthy`, `failing` or `disabled`.
    state: &'static str,
    disabled_reason: Option<String>,
    disabled_at: Option<Timestamp>,
    consecutive_failures: i64,
    last_hour: WindowFigures,
    last_24h: WindowFigures,
    queue: Queue,
    last_success_at: Option<Timestamp>,
    last_failure: Option<LastFailure>,
}

async fn health_of(state: &AppState, endpoint: Endpoint) -> Result<Health> {
    let now = Timestamp::now();
    let figures = state.store.endpoint_health(&endpoint.id, now).await?;
    let health = &endpoint.health;
    let status = endpoint.state(state.deliverer.failing_after());
    Ok(Health {
        webhook_id: endpoint.id.clone(),
        url: endpoint.url.clone(),
        state: status,
        disabled_reason: endpoint.disabled_reason.clone(),
        disabled_at: endpoint.disabled_at,
        consecutive_failures: health.consecutive_failures,
        last_hour: figures.last_hour,
        last_24h: figures.last_day,
        queue: Queue {
            depth: figures.pending,
            in_flight: figures.in_flight,
            oldest_pending_age_seconds: figures
                .oldest_pending_at
                .map(|oldest| now.ms_since(oldest).max(0) as f64 / 1000.0),
        },
        last_success_at: health.last_success_at,
        last_failure: health.last_failure_at.map(|at| LastFailure {
            at,
            class: health.last_failure_class.clone(),
            status_code: health.last_failure_status,
            message: health.last_failure_message.clone(),
        }),
    })
}

async fn endpoint_health(
    caller: Caller,
    State(state): State<AppState>,
    Path((site_id, webhook_id)): Path<(SiteId, EndpointId)>,
) -> Result<Json<Health>> {
    let endpoint = load_endpoint(&state, &caller, &site_id, &webhook_id).await?;
    Ok(Json(health_of(&state, endpoint).await?))
}

#[derive(Serialize)]
struct SiteHealth {
    data: Vec<Health>,
}

async fn site_health(
    caller: Caller,
    State(state): State<AppState>,
    Path(site_id): Path<SiteId>,
) -> Result<Json<SiteHealth>> {
    let site = load_site(&state, &caller, &site_id).await?;
    let mut data = Vec::new();
    for endpoint in state.store.list_endpoints(&site.id).await? {
        data.push(health_of(&state, endpoint).await?);
    }
    Ok(Json(SiteHealth { data }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Recover {
    since: String,
    until: Option<String>,
    /// Only dead (`failed`) deliveries are recovered.
    status: Option<String>,
}

/// Re-queues the endpoint's dead deliveries created in `[since, until)`, in
/// their original order. Running it again finds nothing new to queue.
async fn recover(
    caller: Caller,
    State(state): State<AppState>,
    Path((site_id, webhook_id)): Path<(SiteId, EndpointId)>,
    ApiJson(input): ApiJson<Recover>,
) -> Result<Json<Value>> {
    let endpoint = load_endpoint(&state, &caller, &site_id, &webhook_id).await?;
    let since = query::time("since", &input.since)?;
    let until = input
        .until
        .as_deref()
        .map(|until| query::time("until", until))
        .transpose()?;
    if until.is_some_and(|until| until <= since) {
        return Err(AppError::invalid("until", "until must be after since"));
    }
    if input
        .status
        .as_deref()
        .is_some_and(|status| status != "failed")
    {
        return Err(AppError::invalid(
            "status",
            "only dead deliveries (status failed) are recovered; retry others by hand",
        ));
    }
    let audit = caller.audit(
        &site_id,
        "deliveries.recovered",
        endpoint.id.as_str(),
        serde_json::json!({"since": since, "until": until}),
    );
    let RecoverOutcome {
        requeued,
        skipped_in_flight,
    } = state
        .store
        .recover_deliveries(&endpoint.id, since, until, Timestamp::now(), Some(&audit))
        .await?;
    if requeued > 0 {
        state.deliverer.wake();
    }
    Ok(Json(serde_json::json!({
        "requeued": requeued,
        "skipped_in_flight": skipped_in_flight,
        "active": endpoint.active,
    })))
}
