//! The one error type of the HTTP API and its JSON shape:
//! `{"error": {"code": "...", "message": "...", "field": "..."}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub type Result<T, E = AppError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request is well-formed JSON but a field is wrong.
    #[error("{message}")]
    Invalid {
        field: Option<String>,
        message: String,
    },
    #[error("{message}")]
    MalformedBody { message: String },
    #[error("missing or unknown API key")]
    Unauthorized,
    #[error("this operation needs the admin token")]
    Forbidden,
    /// Also what a caller gets for another site's resources: their existence
    /// is not revealed.
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("unsupported media type: send Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Anything unexpected: logged with its cause chain, answered generically.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<crate::moderation::rules::RuleError> for AppError {
    fn from(error: crate::moderation::rules::RuleError) -> Self {
        AppError::invalid(error.field, error.message)
    }
}

impl AppError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        AppError::Invalid {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// The request field an `Invalid` error names.
    pub fn field(&self) -> Option<&str> {
        match self {
            AppError::Invalid { field, .. } => field.as_deref(),
            _ => None,
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            AppError::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid_field"),
            AppError::MalformedBody { .. } => (StatusCode::BAD_REQUEST, "malformed_json"),
            AppError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            AppError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            AppError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            AppError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            AppError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            AppError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            AppError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            AppError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let (message, field) = match &self {
            AppError::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                ("internal server error".to_string(), None)
            }
            AppError::Invalid { field, message } => (message.clone(), field.clone()),
            other => (other.to_string(), None),
        };
        let body = json!({"error": {"code": code, "message": message, "field": field}});
        (status, Json(body)).into_response()
    }
}
