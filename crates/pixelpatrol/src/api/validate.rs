//! Field checks shared by the API modules; each error names its field.

use serde::{Deserialize, Deserializer};

use crate::api::error::{AppError, Result};
use crate::net::guard::{is_blocked, literal_ip};

/// A required, trimmed, non-empty text of at most `max` characters.
pub fn text(field: &str, value: &str, max: usize) -> Result<String> {
    let value = value.trim();
    no_control_characters(field, value)?;
    if value.is_empty() {
        return Err(AppError::invalid(
            field,
            format!("{field} must not be empty"),
        ));
    }
    if value.chars().count() > max {
        return Err(AppError::invalid(
            field,
            format!("{field} must be at most {max} characters"),
        ));
    }
    Ok(value.to_string())
}

/// Refuses control characters other than tab and line breaks (PostgreSQL
/// cannot even store NUL, so both backends refuse alike).
pub fn no_control_characters(field: &str, value: &str) -> Result<()> {
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(AppError::invalid(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(())
}

/// An optional text; empty means absent.
pub fn optional_text(field: &str, value: Option<&str>, max: usize) -> Result<Option<String>> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(value) => text(field, value, max).map(Some),
    }
}

/// An absolute http(s) URL, e.g. a site's address or a media item's content.
pub fn web_url(field: &str, value: &str) -> Result<String> {
    let parsed = parse_url(field, value)?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(AppError::invalid(
            field,
            format!("{field} must be an http or https URL"),
        ));
    }
    Ok(parsed.to_string())
}

/// A webhook endpoint URL: absolute `https://`, no credentials, and not an
/// internal address. `--dev` also allows `http://` and internal targets.
pub fn endpoint_url(field: &str, value: &str, dev: bool) -> Result<String> {
    let parsed = parse_url(field, value)?;
    match parsed.scheme() {
        "https" => {}
        "http" if dev => {}
        "http" => {
            return Err(AppError::invalid(
                field,
                format!("{field} must use https:// (plain http:// is allowed only with --dev)"),
            ));
        }
        _ => {
            return Err(AppError::invalid(
                field,
                format!("{field} must be an https:// URL"),
            ));
        }
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(AppError::invalid(
            field,
            format!("{field} must not contain credentials"),
        ));
    }
    // parse_url guarantees a host.
    if !dev && literal_ip(&parsed).is_some_and(is_blocked) {
        return Err(AppError::invalid(
            field,
            format!("{field} points at a private or reserved address (allowed only with --dev)"),
        ));
    }
    Ok(parsed.to_string())
}

fn parse_url(field: &str, value: &str) -> Result<url::Url> {
    let value = value.trim();
    if value.len() > 2048 {
        return Err(AppError::invalid(
            field,
            format!("{field} must be at most 2048 characters"),
        ));
    }
    url::Url::parse(value)
        .ok()
        .filter(|url| url.has_host())
        .ok_or_else(|| AppError::invalid(field, format!("{field} must be an absolute URL")))
}

/// For PATCH bodies: tells an absent field (`None`) from an explicit `null`
/// (`Some(None)`), which clears the value.
pub fn nullable<'de, D, T>(deserializer: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}
