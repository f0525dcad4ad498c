//! Operations endpoints: `/healthz` (alive), `/readyz` (able to serve:
//! database reachable, migrations current, workers running) and `/metrics`
//! (Prometheus text format), plus the HTTP request metrics.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;

use crate::api::AppState;
use crate::model::Timestamp;

/// A readiness probe answers quickly, whatever the database does.
const READY_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let seconds = [
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            60.0, 300.0, 1800.0, 7200.0,
        ];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
            .expect("bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may be installed by an embedding program; then
        // its metrics are where ours go, and this handle renders nothing.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Histograms keep raw samples until upkeep folds them into buckets; without
/// it an unscraped process would grow without bound.
pub async fn metrics_upkeep(shutdown: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => prometheus().run_upkeep(),
            _ = shutdown.cancelled() => return,
        }
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    let (open, idle) = state.store.pool_stats();
    metrics::gauge!("pixelpatrol_db_pool_connections", "state" => "open").set(f64::from(open));
    metrics::gauge!("pixelpatrol_db_pool_connections", "state" => "idle").set(f64::from(idle));
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        prometheus().render(),
    )
        .into_response()
}

/// Counts and times every API request by route template (never the raw
/// path, so ids do not multiply the series), method and status.
pub async fn track_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    let method = match request.method().as_str() {
        method @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => method,
        _ => "other",
    }
    .to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("route", route), ("method", method), ("status", status)];
    metrics::counter!("pixelpatrol_http_requests_total", &labels).increment(1);
    metrics::histogram!("pixelpatrol_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

async fn readyz(State(state): State<AppState>) -> Response {
    let mut checks = serde_json::Map::new();
    let mut problems = Vec::new();
    let status = tokio::time::timeout(READY_CHECK_TIMEOUT, state.store.migration_status())
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {READY_CHECK_TIMEOUT:?}")));
    match status {
        Ok((applied, known)) => {
            checks.insert("database".into(), json!("ok"));
            if applied == known {
                checks.insert("migrations".into(), json!("ok"));
            } else {
                let problem = format!("{applied} migrations applied, this build has {known}");
                checks.insert("migrations".into(), json!(problem));
                problems.push(problem);
            }
        }
        Err(error) => {
            let problem = format!("database unreachable: {error:#}");
            checks.insert("database".into(), json!(problem));
            problems.push(problem);
        }
    }
    if state.config.runs_worker() {
        let now = Timestamp::now();
        let mut worker = |name: &str, alive: bool| {
            if alive {
                checks.insert(name.into(), json!("ok"));
            } else {
                let problem = format!("the {name} worker is not running");
                checks.insert(name.into(), json!(problem));
                problems.push(problem);
            }
        };
        worker("delivery", state.deliverer.worker_alive(now));
        if state.config.auto_moderation {
            worker("moderation", state.moderator.worker_alive(now));
        }
    }
    if problems.is_empty() {
        (
            StatusCode::OK,
            Json(json!({"status": "ready", "checks": checks})),
        )
            .into_response()
    } else {
        let body = json!({
            "error": {"code": "not_ready", "message": problems.join("; "), "field": null},
            "checks": checks,
        });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}
