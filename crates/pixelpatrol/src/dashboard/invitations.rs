//! Accepting an invitation link: a newcomer chooses a password, someone
//! with an account confirms theirs; either way the link is used up, the
//! role given and the person signed in, in one step. A link that was used,
//! revoked or has expired says so, and nothing more.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::html;
use serde::Deserialize;

use super::DashError;
use super::layout::{document, field_error, message_page};
use super::session::{form_token_matches, pre_session_form, sign_in_and_go};
use crate::api::AppState;
use crate::model::{AcceptOutcome, Invitation, Timestamp, User, UserId};
use crate::people::{check_password, hash_password, verify_password_or_burn};
use crate::util::sha256_hex;

pub fn router() -> Router<AppState> {
    Router::new().route("/invitations/{token}", get(accept_page).post(accept))
}

fn unusable() -> Response {
    let mut response = message_page(
        "This invitation link does not work",
        "It was used already, revoked, or it expired (links last 7 days). Ask whoever invited you for a new one.",
    )
    .into_response();
    *response.status_mut() = axum::http::StatusCode::NOT_FOUND;
    response
}

async fn what_it_gives(state: &AppState, invitation: &Invitation) -> Result<String, DashError> {
    Ok(match (&invitation.site_id, invitation.role) {
        (Some(site_id), Some(role)) => {
            let site = state
                .store
                .get_site(site_id)
                .await?
                .ok_or(DashError::NotFound)?;
            format!("join {} as {role}", site.name)
        }
        _ => "become an operator of this PixelPatrol server".into(),
    })
}

async fn form(
    state: &AppState,
    token: &str,
    invitation: &Invitation,
    has_account: bool,
    error: Option<&str>,
) -> Result<Response, DashError> {
    let gives = what_it_gives(state, invitation).await?;
    Ok(pre_session_form(state, |csrf| {
        document(
        "Accept invitation",
        html! {
            main.narrow.sign-in {
                p.brand { "PixelPatrol" }
                h1 { "Accept invitation" }
                p { "You are invited to " (gives) ", as " strong { (invitation.email) } "." }
                form method="post" action=(format!("/invitations/{token}")) {
                    input type="hidden" name="csrf" value=(csrf);
                    (field_error(error))
                    @if has_account {
                        p.hint { "You have an account: confirm it is you." }
                        label for="password" { "Password" }
                        input #password type="password" name="password" autocomplete="current-password" required autofocus;
                    } @else {
                        label for="password" { "Choose a password" }
                        input #password type="password" name="password" autocomplete="new-password" minlength="12" required autofocus;
                        p.hint { "At least 12 characters." }
                        label for="password-again" { "Password again" }
                        input #password-again type="password" name="password_again" autocomplete="new-password" required;
                    }
                    button.primary type="submit" { "Accept invitation" }
                }
            }
        },
    )
        .into_response()
    }))
}

async fn accept_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, DashError> {
    let now = Timestamp::now();
    let Some(invitation) = state
        .store
        .usable_invitation(&sha256_hex(&token), now)
        .await?
    else {
        return Ok(unusable());
    };
    let has_account = state
        .store
        .user_by_email(&invitation.email)
        .await?
        .is_some();
    form(&state, &token, &invitation, has_account, None).await
}

#[derive(Deserialize)]
struct AcceptForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    password: String,
    password_again: Option<String>,
}

async fn accept(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(token): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, DashError> {
    let input: AcceptForm = serde_html_form::from_bytes(&body)
        .map_err(|_| DashError::BadRequest("the form could not be read".into()))?;
    if !form_token_matches(&state, &headers, &input.csrf) {
        return Err(DashError::Forbidden);
    }
    let token_hash = sha256_hex(&token);
    let now = Timestamp::now();
    let Some(invitation) = state.store.usable_invitation(&token_hash, now).await? else {
        return Ok(unusable());
    };
    // As a sign-in: one turn at a time (see `sign_in_turn`).
    let _turn = crate::people::sign_in_turn().await;
    let existing = state.store.user_by_email(&invitation.email).await?;
    let new_user = match &existing {
        Some(user) => {
            // Confirming an account is a sign-in: the same back-off applies.
            let keys = [
                format!("account:{}", user.email),
                format!("address:{}", peer.ip()),
            ];
            if state
                .store
                .sign_in_blocked_until(&keys, now)
                .await?
                .is_some()
            {
                return form(
                    &state,
                    &token,
                    &invitation,
                    true,
                    Some("Too many failed attempts. Wait a moment and try again."),
                )
                .await;
            }
            if !verify_password_or_burn(&input.password, Some(&user.password_hash)).await {
                state.store.record_sign_in_failure(&keys, now).await?;
                return form(
                    &state,
                    &token,
                    &invitation,
                    true,
                    Some("That is not the password of this account."),
                )
                .await;
            }
            state.store.clear_sign_in_failures(&keys[..1]).await?;
            user.clone()
        }
        None => {
            if let Err(error) = check_password(&input.password) {
                return form(&state, &token, &invitation, false, Some(&error.to_string())).await;
            }
            if input.password_again.as_deref() != Some(input.password.as_str()) {
                return form(
                    &state,
                    &token,
                    &invitation,
                    false,
                    Some("The two passwords differ."),
                )
                .await;
            }
            User {
                id: UserId::generate(),
                email: invitation.email.clone(),
                password_hash: hash_password(&input.password).await?,
                is_admin: false,
                created_at: now,
                updated_at: now,
            }
        }
    };
    let AcceptOutcome::Accepted(user) = state
        .store
        .accept_invitation(&token_hash, &new_user, now)
        .await?
    else {
        return Ok(unusable());
    };
    tracing::info!(email = %user.email, address = %peer.ip(), "invitation accepted");
    if existing.is_none() && user.id != new_user.id {
        // The account was made meanwhile (by another link, or the command
        // line): it joined, but whoever holds this link has not shown its
        // password, so they sign in like anyone else.
        return Ok(Redirect::to("/sign-in").into_response());
    }
    let next = match &invitation.site_id {
        Some(site_id) => format!("/sites/{site_id}"),
        None => "/sites".into(),
    };
    Ok(sign_in_and_go(&state, &user, now, &next).await?)
}
