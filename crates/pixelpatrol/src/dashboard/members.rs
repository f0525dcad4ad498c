//! A site's people: its members and their roles, and invitations (a
//! one-time link shown once, valid 7 days; no mail server needed). Everyone
//! on the site sees who else is; only owners (and operators) invite, change
//! roles and remove, and a site always keeps an owner.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::http::header::HOST;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{field_error, refused, reveal_once, when};
use super::session::{Post, Viewer};
use super::{DashError, audit_entry};
use crate::api::AppState;
use crate::model::people::INVITATION_LIFETIME_MS;
use crate::model::{
    Access, Invitation, InvitationId, MemberChange, Membership, Role, Site, SiteId, Timestamp,
    UserId,
};
use crate::people::parse_email;
use crate::util::{random_token, sha256_hex};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sites/{site_id}/invitations", post(invite))
        .route(
            "/sites/{site_id}/invitations/{invitation_id}/revoke",
            post(revoke),
        )
        .route("/sites/{site_id}/members/{user_id}/role", post(change_role))
        .route("/sites/{site_id}/members/{user_id}/remove", post(remove))
}

/// Where links to this server start: `--public-url`, else the address the
/// request came to.
pub fn public_base(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.config.public_url {
        return url.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if state.config.dev { "http" } else { "https" };
    format!("{scheme}://{host}")
}

/// The members section of a site's page.
pub async fn section(
    state: &AppState,
    viewer: &Viewer,
    site: &Site,
    access: Access,
    invite_error: Option<(&str, &str)>,
    typed_email: &str,
) -> Result<Markup, DashError> {
    let members = state.store.list_members(&site.id).await?;
    let manages = access.role().can_manage_site();
    let invitations = if manages {
        state
            .store
            .pending_invitations(Some(&site.id), Timestamp::now())
            .await?
    } else {
        Vec::new()
    };
    let csrf = &viewer.session.csrf_token;
    let base = format!("/sites/{}", site.id);
    let error_of = |field: &str| {
        invite_error
            .filter(|(name, _)| *name == field)
            .map(|(_, text)| text)
    };
    Ok(html! {
        section aria-labelledby="members" {
            h2 #members { "Members" }
            @if members.is_empty() {
                p.empty { "No members yet." @if manages { " Invite people below: an owner, developers, moderators." } }
            } @else {
                table {
                    thead { tr { th { "Email" } th { "Role" } th { "Since" } @if manages { th { span.visually-hidden { "Actions" } } } } }
                    tbody {
                        @for member in &members {
                            tr {
                                td { (member.email) @if member.user_id == viewer.user.id { " (you)" } }
                                td {
                                    @if manages {
                                        (role_form(&base, member, csrf))
                                    } @else {
                                        span.badge { (member.role) }
                                    }
                                }
                                td { (when(member.created_at)) }
                                @if manages {
                                    td {
                                        form.inline method="post" action=(format!("{base}/members/{}/remove", member.user_id)) {
                                            input type="hidden" name="csrf" value=(csrf);
                                            button type="submit" aria-label=(format!("Remove {}", member.email)) { "Remove" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if manages {
                @if !invitations.is_empty() {
                    h3 { "Invitations waiting" }
                    table {
                        thead { tr { th { "Email" } th { "Role" } th { "Expires" } th { span.visually-hidden { "Actions" } } } }
                        tbody {
                            @for invitation in &invitations {
                                tr {
                                    td { (invitation.email) }
                                    td { @if let Some(role) = invitation.role { span.badge { (role) } } }
                                    td { (when(invitation.expires_at)) }
                                    td {
                                        form.inline method="post" action=(format!("{base}/invitations/{}/revoke", invitation.id)) {
                                            input type="hidden" name="csrf" value=(csrf);
                                            button type="submit" aria-label=(format!("Revoke the invitation of {}", invitation.email)) { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                form.card method="post" action=(format!("{base}/invitations")) {
                    h3 { "Invite someone" }
                    input type="hidden" name="csrf" value=(csrf);
                    label for="invite-email" { "Email" }
                    input #invite-email type="email" name="email" value=(typed_email) required;
                    (field_error(error_of("email")))
                    label for="invite-role" { "Role" }
                    select #invite-role name="role" {
                        option value="moderator" { "moderator — the moderation queue only" }
                        option value="developer" { "developer — webhooks, secrets, delivery logs" }
                        option value="owner" { "owner — everything, members included" }
                    }
                    (field_error(error_of("role")))
                    button.primary type="submit" { "Invite" }
                }
            }
        }
    })
}

fn role_form(base: &str, member: &Membership, csrf: &str) -> Markup {
    let id = format!("role-{}", member.user_id);
    html! {
        form.inline.role method="post" action=(format!("{base}/members/{}/role", member.user_id)) {
            input type="hidden" name="csrf" value=(csrf);
            label.visually-hidden for=(id) { "Role of " (member.email) }
            select id=(id) name="role" {
                @for role in Role::ALL {
                    option value=(role.as_str()) selected[role == member.role] { (role) }
                }
            }
            button type="submit" aria-label=(format!("Change the role of {}", member.email)) { "Change" }
        }
    }
}

/// The site, if this person manages its members.
async fn managed_site(
    state: &AppState,
    viewer: &Viewer,
    site_id: &SiteId,
) -> Result<(Site, Access), DashError> {
    let access = viewer
        .require(state, site_id, Role::can_manage_site)
        .await?;
    let site = state
        .store
        .get_site(site_id)
        .await?
        .ok_or(DashError::NotFound)?;
    Ok((site, access))
}

#[derive(Deserialize)]
struct InviteForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    role: String,
}

async fn invite(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(site_id): Path<SiteId>,
    post: Post<InviteForm>,
) -> Result<Response, DashError> {
    let Post { viewer, form } = post;
    let (site, access) = managed_site(&state, &viewer, &site_id).await?;
    let email = parse_email(&form.email).map_err(|error| ("email", error.to_string()));
    let role = form
        .role
        .parse::<Role>()
        .map_err(|error| ("role", error.to_string()));
    let (email, role) = match (email, role) {
        (Ok(email), Ok(role)) => (email, role),
        (Err((field, message)), _) | (_, Err((field, message))) => {
            let members = section(
                &state,
                &viewer,
                &site,
                access,
                Some((field, &message)),
                &form.email,
            )
            .await?;
            let page =
                super::sites::site_page_with(&state, &viewer, &site, access, members).await?;
            return Ok(refused(page));
        }
    };
    let token = random_token("ppi_", 43);
    let now = Timestamp::now();
    let invitation = Invitation {
        id: InvitationId::generate(),
        token_hash: sha256_hex(&token),
        site_id: Some(site.id.clone()),
        email: email.clone(),
        role: Some(role),
        is_admin: false,
        invited_by: Some(viewer.user.id.clone()),
        created_at: now,
        expires_at: now.plus_ms(INVITATION_LIFETIME_MS),
        accepted_at: None,
    };
    let audit = audit_entry(
        &viewer,
        &site.id,
        "member.invited",
        invitation.id.as_str(),
        serde_json::json!({"email": email, "role": role}),
    );
    state.store.create_invitation(&invitation, &audit).await?;
    let link = format!("{}/invitations/{token}", public_base(&state, &headers));
    let members = section(&state, &viewer, &site, access, None, "").await?;
    let shown = html! {
        (reveal_once(&format!("Invitation link for {email} ({role})"), "invitation-link", &link))
        p.hint { "Send it to them yourself. It works once, for 7 days; revoke it below if it goes astray." }
        (members)
    };
    Ok(
        super::sites::site_page_with(&state, &viewer, &site, access, shown)
            .await?
            .into_response(),
    )
}

#[derive(Deserialize)]
struct NoFields {}

async fn revoke(
    State(state): State<AppState>,
    Path((site_id, invitation_id)): Path<(SiteId, InvitationId)>,
    post: Post<NoFields>,
) -> Result<Response, DashError> {
    let (site, _) = managed_site(&state, &post.viewer, &site_id).await?;
    let audit = audit_entry(
        &post.viewer,
        &site.id,
        "invitation.revoked",
        invitation_id.as_str(),
        serde_json::json!({}),
    );
    if !state
        .store
        .revoke_invitation(Some(&site.id), &invitation_id, &audit)
        .await?
    {
        return Err(DashError::NotFound);
    }
    Ok(Redirect::to(&format!("/sites/{}#members", site.id)).into_response())
}

/// What a refused or missed member change answers.
fn member_changed(change: MemberChange, site: &Site) -> Result<Response, DashError> {
    match change {
        MemberChange::Done => {
            Ok(Redirect::to(&format!("/sites/{}#members", site.id)).into_response())
        }
        MemberChange::NotMember => Err(DashError::NotFound),
        MemberChange::LastOwner => Err(DashError::BadRequest(
            "A site keeps at least one owner: make someone else an owner first.".into(),
        )),
    }
}

#[derive(Deserialize)]
struct RoleForm {
    #[serde(default)]
    role: String,
}

async fn change_role(
    State(state): State<AppState>,
    Path((site_id, user_id)): Path<(SiteId, UserId)>,
    post: Post<RoleForm>,
) -> Result<Response, DashError> {
    let (site, _) = managed_site(&state, &post.viewer, &site_id).await?;
    let role: Role =
        post.form
            .role
            .parse()
            .map_err(|error: crate::model::people::UnknownRole| {
                DashError::BadRequest(error.to_string())
            })?;
    let Some(before) = state.store.member_role(&site.id, &user_id).await? else {
        return Err(DashError::NotFound);
    };
    if before == role {
        return member_changed(MemberChange::Done, &site);
    }
    let audit = audit_entry(
        &post.viewer,
        &site.id,
        "member.role_changed",
        user_id.as_str(),
        serde_json::json!({"from": before, "to": role}),
    );
    let change = state
        .store
        .set_member(&site.id, &user_id, role, Timestamp::now(), &audit)
        .await?;
    member_changed(change, &site)
}

async fn remove(
    State(state): State<AppState>,
    Path((site_id, user_id)): Path<(SiteId, UserId)>,
    post: Post<NoFields>,
) -> Result<Response, DashError> {
    let (site, _) = managed_site(&state, &post.viewer, &site_id).await?;
    let audit = audit_entry(
        &post.viewer,
        &site.id,
        "member.removed",
        user_id.as_str(),
        serde_json::json!({}),
    );
    let change = state
        .store
        .remove_member(&site.id, &user_id, &audit)
        .await?;
    member_changed(change, &site)
}
