//! Query-string parameters shared by the list endpoints: pages, cursors,
//! times and event names, each failing as a 400 that names the parameter.

use std::collections::HashMap;

use pixelpatrol_webhooks::{EventType, UnknownEventType};

use crate::api::error::{AppError, Result};
use crate::model::Timestamp;

/// A page's size when the request names none.
pub const DEFAULT_PAGE: i64 = 50;

/// The query string as name → value.
pub fn params(query: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// `limit`: 1 to `max`.
pub fn limit(value: &str, max: i64) -> Result<i64> {
    value
        .parse::<i64>()
        .ok()
        .filter(|limit| (1..=max).contains(limit))
        .ok_or_else(|| AppError::invalid("limit", format!("limit must be 1 to {max}")))
}

/// `since`: an RFC 3339 time.
pub fn since(value: &str) -> Result<Timestamp> {
    time("since", value)
}

/// An RFC 3339 time in `field`.
pub fn time(field: &str, value: &str) -> Result<Timestamp> {
    Timestamp::parse_rfc3339(value).ok_or_else(|| {
        AppError::invalid(
            field,
            format!("{field} must be an RFC 3339 time, e.g. 2024-01-20T10:30:00Z"),
        )
    })
}

/// `event`: one of the event names.
pub fn event(value: &str) -> Result<EventType> {
    value
        .parse()
        .map_err(|error: UnknownEventType| AppError::invalid("event", error.to_string()))
}

/// `cursor` of a list paged by id: an id of the listed kind.
pub fn id_cursor<Id: From<String>>(value: &str, prefix: &str) -> Result<Id> {
    if value.starts_with(prefix) {
        Ok(Id::from(value.to_string()))
    } else {
        Err(AppError::invalid(
            "cursor",
            "cursor must be a next_cursor value from a previous page",
        ))
    }
}

/// A parameter the endpoint does not know.
pub fn unknown(name: &str, known: &str) -> AppError {
    AppError::invalid(
        name,
        format!("unknown query parameter {name:?}; use {known}"),
    )
}
