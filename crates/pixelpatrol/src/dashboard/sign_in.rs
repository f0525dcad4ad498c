//! Signing in and out.
//!
//! Failed sign-ins are counted per account and per client address; after
//! five in a row each further try waits (1 s, 2 s, 4 s … up to 15 minutes,
//! [`crate::model::people::sign_in_back_off_ms`]), and every failure is
//! logged. A wrong email and a wrong password get the same answer, so the
//! form does not tell which accounts exist.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;
use serde::Deserialize;

use super::DashError;
use super::layout::{document, field_error};
use super::session::{
    Post, form_token_matches, pre_session_form, secure_cookies, session_cookie_name, set_cookie,
    sign_in_and_go, with_cookie,
};
use crate::api::AppState;
use crate::model::Timestamp;
use crate::model::people::normalize_email;
use crate::people::verify_password_or_burn;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sign-in", get(sign_in_page).post(sign_in))
        .route("/sign-out", post(sign_out))
}

#[derive(Deserialize, Default)]
struct Next {
    next: Option<String>,
}

/// Only a path on this server (never `//elsewhere` or a full URL): the
/// sign-in form must not become a redirect to another site.
fn local_path(next: Option<&str>) -> String {
    match next {
        // Browsers drop tabs and newlines from URLs (`/\t/evil.com` becomes
        // `//evil.com`): no control character or space is let through.
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.contains('\\')
                && !path.chars().any(|c| c.is_control() || c.is_whitespace()) =>
        {
            path.to_string()
        }
        _ => "/sites".to_string(),
    }
}

fn form(email: &str, next: &str, csrf: &str, error: Option<&str>) -> axum::response::Html<String> {
    document(
        "Sign in",
        html! {
            main.narrow.sign-in {
                p.brand { "PixelPatrol" }
                h1 { "Sign in" }
                form method="post" action="/sign-in" {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="next" value=(next);
                    (field_error(error))
                    label for="email" { "Email" }
                    input #email type="email" name="email" value=(email) autocomplete="username" required autofocus;
                    label for="password" { "Password" }
                    input #password type="password" name="password" autocomplete="current-password" required;
                    button.primary type="submit" { "Sign in" }
                }
            }
        },
    )
}

/// The form, with a fresh double-submit token in a cookie and a field.
fn fresh_form(state: &AppState, email: &str, next: &str, error: Option<&str>) -> Response {
    pre_session_form(state, |csrf| form(email, next, csrf, error).into_response())
}

async fn sign_in_page(State(state): State<AppState>, Query(query): Query<Next>) -> Response {
    fresh_form(&state, "", &local_path(query.next.as_deref()), None)
}

#[derive(Deserialize)]
struct SignIn {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

async fn sign_in(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, DashError> {
    let input: SignIn = serde_html_form::from_bytes(&body)
        .map_err(|_| DashError::BadRequest("the form could not be read".into()))?;
    let next = local_path(input.next.as_deref());
    if !form_token_matches(&state, &headers, &input.csrf) {
        tracing::warn!(address = %peer.ip(), "sign-in refused: missing or wrong CSRF token");
        return Err(DashError::Forbidden);
    }
    let email = normalize_email(&input.email);
    let keys = [format!("account:{email}"), format!("address:{}", peer.ip())];
    // Sign-ins are checked a few at a time: a burst cannot outrun the
    // back-off (each sees the failures before it), nor the slow hashing
    // exhaust the machine.
    let _turn = crate::people::sign_in_turn().await;
    let now = Timestamp::now();
    if let Some(until) = state.store.sign_in_blocked_until(&keys, now).await? {
        let wait = (until.ms_since(now) + 999) / 1_000;
        tracing::warn!(%email, address = %peer.ip(), "sign-in refused: too many failures");
        let message = format!("Too many failed attempts. Try again in {wait} seconds.");
        return Ok(fresh_form(&state, &email, &next, Some(&message)));
    }
    let user = state.store.user_by_email(&email).await?;
    // An unknown email costs the same hashing as a known one, so timing
    // does not tell which emails have an account.
    let verified = verify_password_or_burn(
        &input.password,
        user.as_ref().map(|user| user.password_hash.as_str()),
    )
    .await;
    let Some(user) = user.filter(|_| verified) else {
        let until = state.store.record_sign_in_failure(&keys, now).await?;
        tracing::warn!(%email, address = %peer.ip(), "sign-in failed");
        let message = if until > now {
            let wait = (until.ms_since(now) + 999) / 1_000;
            format!("Wrong email or password. Too many failed attempts: wait {wait} seconds.")
        } else {
            "Wrong email or password.".to_string()
        };
        return Ok(fresh_form(&state, &email, &next, Some(&message)));
    };
    // Only the account's count: a success of one's own account must not
    // reset the address's (someone trying many accounts from it).
    state.store.clear_sign_in_failures(&keys[..1]).await?;
    tracing::info!(email = %user.email, address = %peer.ip(), "signed in");
    Ok(sign_in_and_go(&state, &user, now, &next).await?)
}

#[derive(Deserialize)]
struct SignOut {}

async fn sign_out(
    State(state): State<AppState>,
    post: Post<SignOut>,
) -> Result<Response, DashError> {
    state
        .store
        .end_session(&post.viewer.session.token_hash)
        .await?;
    tracing::info!(email = %post.viewer.user.email, "signed out");
    Ok(with_cookie(
        Redirect::to("/sign-in").into_response(),
        set_cookie(
            session_cookie_name(secure_cookies(&state)),
            "",
            0,
            secure_cookies(&state),
        ),
    ))
}
