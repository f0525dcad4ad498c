//! The dashboard: server-rendered pages for people, at `/`, with their
//! stylesheet and script embedded in the binary (no CDN; works offline).
//!
//! Pages call the same store roles and the same checks as the JSON API
//! (`api::sites::new_site`, `api::validate`, …): the dashboard is another
//! face of the one logic, never a second copy. Every page and action asks
//! [`session::Viewer`] what the signed-in person may do on the site
//! ([`crate::model::Access`]); a forbidden action is a 403 page, another
//! site a 404, and every state-changing form carries its CSRF token
//! ([`session::Post`]).

mod audit;
mod deliveries;
mod endpoint_form;
mod health;
mod invitations;
mod layout;
mod members;
mod moderation;
mod overview;
pub mod session;
mod sign_in;
mod sites;
mod webhooks;

use axum::Router;
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::api::AppState;
use crate::model::{AuditEntry, AuditId, SiteId, Timestamp};
use session::Viewer;

/// An audit entry: the viewer did `action` to `target` on the site.
fn audit_entry(
    viewer: &Viewer,
    site_id: &SiteId,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> AuditEntry {
    AuditEntry {
        id: AuditId::generate(),
        site_id: Some(site_id.clone()),
        actor: Some(viewer.actor()),
        action: action.into(),
        target: Some(target.into()),
        detail,
        created_at: Timestamp::now(),
    }
}

/// Records in the site's audit log that the viewer did `action` to `target`.
async fn audit(
    state: &AppState,
    viewer: &Viewer,
    site_id: &SiteId,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> anyhow::Result<()> {
    let entry = audit_entry(viewer, site_id, action, target, detail);
    state.store.record_audit(&entry).await
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/sites") }))
        .route("/assets/app.css", get(stylesheet))
        .route("/assets/app.js", get(script))
        .merge(sign_in::router())
        .merge(sites::router())
        .merge(members::router())
        .merge(moderation::router())
        .merge(invitations::router())
        .merge(webhooks::router())
        .merge(endpoint_form::router())
        .merge(deliveries::router())
        .merge(audit::router())
        .layer(axum::middleware::map_response(security_headers))
}

/// What every dashboard response carries: pages load only this server's
/// stylesheet, script and images, cannot be framed by another site
/// (clickjacking), post forms only here, leak no URL to other sites, and —
/// pages show keys and secrets — are not cached (assets set their own).
async fn security_headers(mut response: Response) -> Response {
    use axum::http::HeaderValue;
    use axum::http::header::{
        CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
    };
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

const STYLESHEET: &str = include_str!("assets/app.css");
const SCRIPT: &str = include_str!("assets/app.js");

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", STYLESHEET)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            (CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// What a dashboard page can fail with, each as a page a person can read.
#[derive(Debug, thiserror::Error)]
pub enum DashError {
    #[error("not found")]
    NotFound,
    #[error("forbidden")]
    Forbidden,
    #[error("{0}")]
    BadRequest(String),
    /// Logged with its cause chain; the page says only that it went wrong.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<crate::api::error::AppError> for DashError {
    fn from(error: crate::api::error::AppError) -> Self {
        use crate::api::error::AppError;
        match error {
            AppError::NotFound(_) => DashError::NotFound,
            AppError::Forbidden | AppError::Unauthorized => DashError::Forbidden,
            AppError::Internal(cause) => DashError::Internal(cause),
            other => DashError::BadRequest(other.to_string()),
        }
    }
}

impl IntoResponse for DashError {
    fn into_response(self) -> Response {
        let (status, title, text) = match &self {
            DashError::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "There is nothing here, or it is not yours to see.".to_string(),
            ),
            DashError::Forbidden => (
                StatusCode::FORBIDDEN,
                "Not allowed",
                "Your role on this site does not allow this. An owner of the site can change your role."
                    .to_string(),
            ),
            DashError::BadRequest(message) => {
                (StatusCode::BAD_REQUEST, "That did not work", message.clone())
            }
            DashError::Internal(cause) => {
                tracing::error!(error = ?cause, "dashboard error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The server could not finish this. It has been logged; try again in a moment."
                        .to_string(),
                )
            }
        };
        (status, layout::message_page(title, &text)).into_response()
    }
}
