//! Who is looking: the session cookie, the signed-in person it names, and
//! the CSRF token every state-changing form carries.
//!
//! The cookie holds a random token; the database keeps only its SHA-256, so
//! a copy of the database signs nobody in. Cookies are `HttpOnly` (no script
//! reads them), `SameSite=Lax` (other sites' forms do not carry them) and
//! `Secure` and `__Host-` prefixed outside `--dev` (see [`session_cookie_name`]).
//! Forms carry a per-session token that is checked
//! in constant time ([`Post`]); the sign-in form, before any session, uses a
//! cookie and a field that must match (the double-submit pattern).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq as _;

use super::DashError;
use crate::api::AppState;
use crate::model::{Access, Role, Session, SiteId, Timestamp, User};
use crate::util::{random_token, sha256_hex};

/// Whether cookies are `Secure`: everywhere but `--dev` (plain HTTP).
pub fn secure_cookies(state: &AppState) -> bool {
    !state.config.dev
}

/// The session cookie's name. A `Secure` cookie carries the `__Host-`
/// prefix: the browser then accepts it only from this very host over HTTPS,
/// for `Path=/` and without `Domain`, so a sibling subdomain cannot plant a
/// session of its choosing (fixation). Browsers refuse the prefix on plain
/// HTTP, hence the bare name in `--dev`.
pub fn session_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-pixelpatrol_session"
    } else {
        "pixelpatrol_session"
    }
}

/// The pre-session forms' own CSRF cookie (there is no session yet); named
/// like [`session_cookie_name`].
pub fn sign_in_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-pixelpatrol_sign_in"
    } else {
        "pixelpatrol_sign_in"
    }
}

/// The value of cookie `name` in the request, if sent.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// The session cookie: no `Max-Age`, so it ends with the browser; the
/// server ends the session itself when it has been idle too long (a fixed
/// `Max-Age` would end it that long after sign-in, however busy).
pub fn session_cookie(token: &str, secure: bool) -> HeaderValue {
    let name = session_cookie_name(secure);
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={token}; Path=/; HttpOnly; SameSite=Lax{secure}"
    ))
    .expect("cookie values are ASCII tokens")
}

/// A `Set-Cookie` value: `max_age` seconds (0 removes the cookie).
pub fn set_cookie(name: &str, value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .expect("cookie values are ASCII tokens")
}

/// A new session for `user`: the cookie's token (given to the browser only)
/// and what is stored.
pub fn new_session(user: &User, now: Timestamp, limits: SessionLimits) -> (String, Session) {
    let token = random_token("pps_", 43);
    let session = Session {
        token_hash: sha256_hex(&token),
        user_id: user.id.clone(),
        csrf_token: random_token("", 32),
        created_at: now,
        last_seen_at: now,
        expires_at: now.plus_ms(limits.idle_ms.min(limits.lifetime_ms)),
    };
    (token, session)
}

/// How long a session lasts, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Unused this long, it ends (`--session-idle`).
    pub idle_ms: i64,
    /// This long after sign-in, it ends however busy (`--session-lifetime`).
    pub lifetime_ms: i64,
}

impl SessionLimits {
    pub fn of(state: &AppState) -> Self {
        let ms =
            |duration: std::time::Duration| i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        SessionLimits {
            idle_ms: ms(state.config.session_idle),
            lifetime_ms: ms(state.config.session_lifetime),
        }
    }
}

/// A form shown before anyone is signed in (sign-in, an invitation), with
/// its double-submit token: `render` puts the token in a hidden field, the
/// same token goes into a cookie, and [`form_token_matches`] compares them.
pub fn pre_session_form(state: &AppState, render: impl FnOnce(&str) -> Response) -> Response {
    let csrf = random_token("", 32);
    with_cookie(
        render(&csrf),
        set_cookie(
            sign_in_cookie_name(secure_cookies(state)),
            &csrf,
            3_600,
            secure_cookies(state),
        ),
    )
}

/// Whether a pre-session form came back with the token of its cookie.
pub fn form_token_matches(state: &AppState, headers: &HeaderMap, submitted: &str) -> bool {
    let expected = cookie(headers, sign_in_cookie_name(secure_cookies(state))).unwrap_or("");
    !expected.is_empty() && same_secret(submitted, expected)
}

/// Starts a session for `user` and sends them to `next`, the pre-session
/// form's cookie dropped (signing in, or accepting an invitation).
pub async fn sign_in_and_go(
    state: &AppState,
    user: &User,
    now: Timestamp,
    next: &str,
) -> anyhow::Result<Response> {
    let (token, session) = new_session(user, now, SessionLimits::of(state));
    state.store.create_session(&session).await?;
    let secure = secure_cookies(state);
    let response = with_cookie(
        Redirect::to(next).into_response(),
        session_cookie(&token, secure),
    );
    Ok(with_cookie(
        response,
        set_cookie(sign_in_cookie_name(secure), "", 0, secure),
    ))
}

/// Equal in constant time (a CSRF token is a secret).
pub fn same_secret(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The signed-in person of this request. Pages that need one take it; a
/// request without a live session is sent to sign in, and back afterwards.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub user: User,
    pub session: Session,
    /// Flagged items waiting on the person's sites (those with any), for
    /// the count in the navigation.
    pub waiting: Vec<(SiteId, i64)>,
}

impl Viewer {
    /// What this person may do on `site_id` (`None`: nothing, and the site
    /// is not found for them).
    pub async fn access(&self, state: &AppState, site_id: &SiteId) -> Result<Access, DashError> {
        // The operator's own site (the alert endpoint) is the server's: no
        // page shows or changes it, for anyone (as in the API).
        if *site_id == crate::alerts::OPERATOR_SITE_ID {
            return Err(DashError::NotFound);
        }
        let role = if self.user.is_admin {
            None
        } else {
            state.store.member_role(site_id, &self.user.id).await?
        };
        Access::of(&self.user, role).ok_or(DashError::NotFound)
    }

    /// As [`Self::access`], refusing (403) a role that `allowed` rejects.
    pub async fn require(
        &self,
        state: &AppState,
        site_id: &SiteId,
        allowed: fn(Role) -> bool,
    ) -> Result<Access, DashError> {
        let access = self.access(state, site_id).await?;
        if allowed(access.role()) {
            Ok(access)
        } else {
            Err(DashError::Forbidden)
        }
    }

    pub fn actor(&self) -> crate::model::Actor {
        crate::model::Actor {
            user_id: self.user.id.clone(),
            email: self.user.email.clone(),
        }
    }
}

/// Where a visitor without a session goes: the sign-in page, then back.
pub struct SignInFirst(String);

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        let next: String = url::form_urlencoded::byte_serialize(self.0.as_bytes()).collect();
        Redirect::to(&format!("/sign-in?next={next}")).into_response()
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let back = parts
            .uri
            .path_and_query()
            .map_or("/", |path| path.as_str())
            .to_string();
        let Some(token) = cookie(&parts.headers, session_cookie_name(secure_cookies(state))) else {
            return Err(SignInFirst(back).into_response());
        };
        let limits = SessionLimits::of(state);
        match state
            .store
            .touch_session(
                &sha256_hex(token),
                Timestamp::now(),
                limits.idle_ms,
                limits.lifetime_ms,
            )
            .await
        {
            Ok(Some((session, user))) => {
                let member = (!user.is_admin).then_some(&user.id);
                let operator_site = SiteId::from(crate::alerts::OPERATOR_SITE_ID);
                match state.store.waiting_for_review(member, &operator_site).await {
                    Ok(waiting) => Ok(Viewer {
                        user,
                        session,
                        waiting,
                    }),
                    Err(error) => Err(DashError::from(error).into_response()),
                }
            }
            Ok(None) => Err(SignInFirst(back).into_response()),
            Err(error) => Err(DashError::from(error).into_response()),
        }
    }
}

#[derive(serde::Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

/// A submitted form of a signed-in person, its CSRF token checked: the
/// only way a dashboard handler receives a state-changing request.
pub struct Post<T> {
    pub viewer: Viewer,
    pub form: T,
}

impl<T: DeserializeOwned> FromRequest<AppState> for Post<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, state).await?;
        let bytes = axum::body::to_bytes(body, state.config.max_body_bytes)
            .await
            .map_err(|_| DashError::BadRequest("the form is too large".into()).into_response())?;
        let field: CsrfField = serde_html_form::from_bytes(&bytes).map_err(|_| {
            DashError::BadRequest("the form could not be read".into()).into_response()
        })?;
        if !same_secret(&field.csrf, &viewer.session.csrf_token) {
            tracing::warn!(user = %viewer.user.email, path = %parts.uri.path(), "form refused: missing or wrong CSRF token");
            return Err(DashError::Forbidden.into_response());
        }
        let form = serde_html_form::from_bytes(&bytes).map_err(|error| {
            DashError::BadRequest(format!("the form could not be read: {error}")).into_response()
        })?;
        Ok(Post { viewer, form })
    }
}

/// Adds `Set-Cookie` to a response.
pub fn with_cookie(mut response: Response, cookie: HeaderValue) -> Response {
    response.headers_mut().append(SET_COOKIE, cookie);
    response
}

/// Removes expired sessions every ten minutes until shutdown (a session
/// past its idle expiry already signs nobody in; this keeps the table small).
pub async fn purge_expired(
    store: crate::store::DynStore,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        match store.purge_expired_sessions(Timestamp::now()).await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "expired dashboard sessions removed"),
            Err(error) => tracing::warn!(error = ?error, "removing expired sessions failed"),
        }
    }
}
