//! The HTTP API: one module per resource, each with its own `router()`.
//! Every error answers with the one JSON shape of [`error::AppError`].

pub mod auth;
mod deliveries;
pub mod error;
mod events;
mod health;
pub mod media;
pub mod ops;
mod query;
mod rule_groups;
pub mod sites;
pub mod validate;
pub mod webhooks;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::config::Role;
use crate::delivery::Deliverer;
use crate::moderation::Moderator;
use crate::store::DynStore;
use error::{AppError, Result};
use std::sync::Arc;

/// What every request handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: DynStore,
    pub config: Arc<Config>,
    pub deliverer: Arc<Deliverer>,
    pub moderator: Arc<Moderator>,
    pub admin_token_hash: Arc<str>,
}

/// The API's routes and `pages` (the dashboard's, given by the caller so
/// that the API does not depend on it), behind the API's layers.
pub fn router(state: AppState, pages: Router<AppState>) -> Router {
    // The recorder exists before the first request is counted.
    ops::prometheus();
    let api = if state.config.role == Role::Worker {
        Router::new()
    } else {
        pages
            .merge(sites::router())
            .merge(webhooks::router())
            .merge(deliveries::router())
            .merge(media::router())
            .merge(rule_groups::router())
            .merge(health::router())
            .merge(events::router())
    };
    ops::router()
        .merge(api)
        .fallback(|| async { AppError::NotFound("route") })
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(axum::middleware::from_fn(ops::track_requests))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .with_state(state)
}

/// The request log's span: method and path, never the query string (a key
/// may travel there) nor an invitation link's token (whoever reads the log
/// could join with it).
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    tracing::debug_span!(
        "request",
        method = %request.method(),
        path = %loggable_path(request.uri().path()),
    )
}

fn loggable_path(path: &str) -> &str {
    if path.starts_with("/invitations/") {
        "/invitations/…"
    } else {
        path
    }
}

/// A JSON body whose errors name the offending field, e.g.
/// `{"error": {"code": "invalid_field", "field": "events[1]", ...}}`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self> {
        let content_type = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(|value| value.to_ascii_lowercase());
        if let Some(content_type) = content_type
            && !content_type.starts_with("application/json")
            && !content_type.contains("+json")
        {
            return Err(AppError::UnsupportedMediaType);
        }
        let limit = state.config.max_body_bytes;
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    AppError::PayloadTooLarge(limit)
                } else {
                    AppError::MalformedBody {
                        message: rejection.body_text(),
                    }
                }
            })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses JSON, turning serde's error into one that names the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(AppError::MalformedBody {
            message: "the request body is empty; send a JSON object".into(),
        });
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if !inner.is_data() {
            return AppError::MalformedBody {
                message: format!("the body is not valid JSON: {inner}"),
            };
        }
        let message = inner.to_string();
        // serde names a missing field only in its message: `missing field `x``.
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .map(str::to_string);
        let field = match (missing, path.as_str()) {
            (Some(name), ".") => Some(name),
            (Some(name), parent) => Some(format!("{parent}.{name}")),
            (None, ".") => None,
            (None, path) => Some(path.to_string()),
        };
        AppError::Invalid {
            message: match &field {
                Some(field) => format!("{field}: {}", strip_position(&message)),
                None => strip_position(&message).to_string(),
            },
            field,
        }
    })?;
    deserializer
        .end()
        .map_err(|error| AppError::MalformedBody {
            message: format!("the body is not valid JSON: {error}"),
        })?;
    Ok(value)
}

/// serde_json appends "at line 1 column 7"; the field name says more.
fn strip_position(message: &str) -> &str {
    message
        .rsplit_once(" at line ")
        .map_or(message, |(head, _)| head)
}

/// `{"data": [...]}` with the cursor of the next page, if there is one.
#[derive(serde::Serialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        events: Vec<u32>,
    }

    #[test]
    fn the_request_log_never_shows_an_invitation_token() {
        assert_eq!(loggable_path("/invitations/ppi_secret"), "/invitations/…");
        assert_eq!(loggable_path("/sites/s_1/webhooks"), "/sites/s_1/webhooks");
    }

    fn field_of(body: &str) -> (String, Option<String>) {
        match parse_json::<Sample>(body.as_bytes()).unwrap_err() {
            AppError::Invalid { field, .. } => ("invalid_field".into(), field),
            AppError::MalformedBody { .. } => ("malformed_json".into(), None),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            field_of(r#"{"events": []}"#),
            ("invalid_field".into(), Some("name".into()))
        );
        assert_eq!(
            field_of(r#"{"name": "x", "events": [1, "two"]}"#),
            ("invalid_field".into(), Some("events[1]".into()))
        );
        assert_eq!(
            field_of(r#"{"name": 5, "events": []}"#),
            ("invalid_field".into(), Some("name".into()))
        );
        assert_eq!(field_of(r#"{"name": "#), ("malformed_json".into(), None));
        assert_eq!(
            field_of(r#"{"name": "x", "events": []} extra"#),
            ("malformed_json".into(), None)
        );
        assert_eq!(field_of(""), ("malformed_json".into(), None));
    }
}
