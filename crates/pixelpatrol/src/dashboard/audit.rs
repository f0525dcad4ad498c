//! A site's audit log: who changed what, newest first (endpoints created,
//! edited or deleted, secrets revealed or rotated, members invited or
//! removed, items reviewed, …). For the site's owners and operators.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Html;
use axum::routing::get;
use maud::html;
use serde::Deserialize;

use super::DashError;
use super::layout::{empty, page, when};
use super::session::Viewer;
use crate::api::AppState;
use crate::model::{AuditId, Role, SiteId};

const PAGE_SIZE: i64 = 50;

pub fn router() -> Router<AppState> {
    Router::new().route("/sites/{site_id}/audit", get(audit_log))
}

#[derive(Deserialize, Default)]
struct AuditQuery {
    cursor: Option<AuditId>,
}

async fn audit_log(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(site_id): Path<SiteId>,
    Query(query): Query<AuditQuery>,
) -> Result<Html<String>, DashError> {
    viewer
        .require(&state, &site_id, Role::can_manage_site)
        .await?;
    let site = state
        .store
        .get_site(&site_id)
        .await?
        .ok_or(DashError::NotFound)?;
    let entries = state
        .store
        .list_audit(&site.id, query.cursor.as_ref(), PAGE_SIZE)
        .await?;
    let next = (entries.len() as i64 == PAGE_SIZE)
        .then(|| entries.last().map(|entry| entry.id.clone()))
        .flatten();
    Ok(page(
        &viewer,
        "Audit log",
        &[
            ("Sites", "/sites".into()),
            (site.name.as_str(), format!("/sites/{}", site.id)),
        ],
        html! {
            @if entries.is_empty() {
                (empty("Nothing recorded yet. Changes to webhooks, secrets, members and reviews appear here."))
            } @else {
                table {
                    thead { tr { th { "When" } th { "Who" } th { "What" } th { "Target" } th { "Details" } } }
                    tbody {
                        @for entry in &entries {
                            tr {
                                td { (when(entry.created_at)) }
                                td {
                                    @if let Some(actor) = &entry.actor { (actor.email) }
                                    @else if let Some(via) = entry.detail["via"].as_str() { span.muted { (via) } }
                                    @else { span.muted { "the server" } }
                                }
                                td { code { (entry.action) } }
                                td { @if let Some(target) = &entry.target { code { (target) } } }
                                td {
                                    @if entry.detail.as_object().is_some_and(|detail| !detail.is_empty()) {
                                        code.detail { (entry.detail.to_string()) }
                                    }
                                }
                            }
                        }
                    }
                }
                @if let Some(next) = next {
                    p { a href=(format!("/sites/{}/audit?cursor={next}", site.id)) { "Older entries" } }
                }
            }
        },
    ))
}
