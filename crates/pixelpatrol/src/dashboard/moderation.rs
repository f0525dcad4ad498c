//! The moderation queue: a site's items by status (flagged first), each
//! with what analysis found and how the rules came out, and `Approve` /
//! `Reject` with an optional note. A decision is recorded with the person
//! who made it and sends `media.moderated` (naming them) at once, through
//! the same path as the API's review. Every role of the site may moderate.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{empty, page, when};
use super::session::{Post, Viewer};
use super::{DashError, audit_entry};
use crate::api::AppState;
use crate::model::{
    DecidedBy, Media, MediaFilter, MediaId, MediaStatus, Role, Site, SiteId, Verdict,
};
use crate::moderation::{record_decision, review_detail};

const PAGE_SIZE: i64 = 25;
/// How much of a text item the queue shows.
const PREVIEW_CHARS: usize = 600;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sites/{site_id}/moderation", get(queue))
        .route(
            "/sites/{site_id}/moderation/{media_id}/review",
            post(review),
        )
        .route(
            "/sites/{site_id}/moderation/{media_id}/thumbnail",
            get(thumbnail),
        )
        .route(
            "/sites/{site_id}/moderation/{media_id}/remoderate",
            post(remoderate),
        )
}

#[derive(Deserialize, Default)]
struct QueueQuery {
    status: Option<String>,
    cursor: Option<MediaId>,
}

const STATUSES: [MediaStatus; 4] = [
    MediaStatus::Flagged,
    MediaStatus::Pending,
    MediaStatus::Approved,
    MediaStatus::Rejected,
];

async fn moderated_site(
    state: &AppState,
    viewer: &Viewer,
    site_id: &SiteId,
) -> Result<Site, DashError> {
    viewer.require(state, site_id, Role::can_moderate).await?;
    state
        .store
        .get_site(site_id)
        .await?
        .ok_or(DashError::NotFound)
}

/// The site and its media item `media_id`, if this person may moderate it
/// (another site's item is not found).
async fn site_media(
    state: &AppState,
    viewer: &Viewer,
    site_id: &SiteId,
    media_id: &MediaId,
) -> Result<(Site, Media), DashError> {
    let site = moderated_site(state, viewer, site_id).await?;
    let media = state
        .store
        .get_media(media_id)
        .await?
        .filter(|media| media.site_id == site.id)
        .ok_or(DashError::NotFound)?;
    Ok((site, media))
}

fn preview(site: &Site, media: &Media) -> Markup {
    html! {
        @if let Some(body) = &media.body {
            @let shown: String = body.chars().take(PREVIEW_CHARS).collect();
            blockquote.preview { (shown) @if body.chars().count() > PREVIEW_CHARS { "…" } }
        }
        @if let Some(url) = &media.content_url {
            // Through the server's proxy, never the third party's URL: it
            // would learn who moderates, and when.
            @if media.content_type == "image" {
                img.thumbnail src=(format!("/sites/{}/moderation/{}/thumbnail", site.id, media.id))
                    alt="Preview of the submitted image" loading="lazy";
            }
            // The host only: the page holds no third-party URL at all.
            @let host = url::Url::parse(url).ok().and_then(|url| url.host_str().map(str::to_string));
            p.preview-url { (media.content_type) @if let Some(host) = host { " from " code { (host) } } }
        }
    }
}

fn analysis(media: &Media) -> Markup {
    html! {
        @if !media.ai_results.labels.is_empty() {
            details open[media.status == MediaStatus::Flagged] {
                summary { "What analysis found" }
                ul.labels {
                    @for label in &media.ai_results.labels {
                        li {
                            strong { (label.name) } " " (format!("{:.2}", label.confidence))
                            span.muted { " · " (label.analyzer) }
                            @if let Some(detail) = &label.detail { span.muted { " — " (detail) } }
                        }
                    }
                }
                @if !media.applied_rules.is_empty() {
                    table.rules {
                        thead { tr { th { "Rule" } th { "Outcome" } th { "Score" } } }
                        tbody {
                            @for rule in &media.applied_rules {
                                tr {
                                    td { (rule.name) }
                                    td {
                                        @if !rule.passed { span.state.failing { "failed → " (format!("{:?}", rule.action).to_lowercase()) } }
                                        @else if rule.gray_area { span.state.failing { "near the threshold → review" } }
                                        @else { span.state.healthy { "passed" } }
                                    }
                                    td {
                                        @if let (Some(score), Some(threshold)) = (rule.score, rule.threshold) {
                                            (format!("{:.2} / {:.2}", score, threshold))
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One item of the queue with its decisions: `Approve` and `Reject` on a
/// flagged or pending item, the other verdict on a decided one (a person
/// may overturn an automatic or an earlier decision), and `Analyse again`
/// where automatic moderation may decide it anew.
fn item(
    viewer: &Viewer,
    site: &Site,
    media: &Media,
    status_filter: MediaStatus,
    auto_moderation: bool,
) -> Markup {
    let (approve, reject) = match media.status {
        MediaStatus::Approved => (false, true),
        MediaStatus::Rejected => (true, false),
        MediaStatus::Flagged | MediaStatus::Pending => (true, true),
    };
    // A pending item is being analysed already (asking again would only
    // restart it).
    let analysable = auto_moderation
        && media.status != MediaStatus::Pending
        && media.decided_by != Some(DecidedBy::Person);
    let note_id = format!("note-{}", media.id);
    html! {
        article.item aria-label=(format!("Item {}", media.id)) {
            header {
                span class=(format!("badge status-{}", media.status.as_str())) { (media.status.as_str()) }
                " " (when(media.created_at))
                @if let Some(app_id) = &media.app_media_id { span.muted { " · your id " code { (app_id) } } }
            }
            (preview(site, media))
            (analysis(media))
            @if let Some(reviewer) = &media.reviewer {
                p.muted { "Reviewed by " (reviewer.email) @if let Some(at) = media.moderated_at { ", " (when(at)) }
                    @if let Some(note) = &media.review_note { ": “" (note) "”" } }
            }
            form.review method="post" action=(format!("/sites/{}/moderation/{}/review", site.id, media.id)) {
                input type="hidden" name="csrf" value=(viewer.session.csrf_token);
                input type="hidden" name="back" value=(status_filter.as_str());
                label for=(note_id) { "Note (optional)" }
                input id=(note_id) name="note" maxlength="2000";
                div.actions {
                    @if approve { button.primary type="submit" name="decision" value="approved" { "Approve" } }
                    @if reject { button.danger type="submit" name="decision" value="rejected" { "Reject" } }
                    @if analysable {
                        button type="submit" formaction=(format!("/sites/{}/moderation/{}/remoderate", site.id, media.id)) { "Analyse again" }
                    }
                }
            }
        }
    }
}

async fn queue(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(site_id): Path<SiteId>,
    Query(query): Query<QueueQuery>,
) -> Result<Html<String>, DashError> {
    let site = moderated_site(&state, &viewer, &site_id).await?;
    let status = match query.status.as_deref() {
        None => MediaStatus::Flagged,
        Some(text) => MediaStatus::parse(text)
            .ok_or_else(|| DashError::BadRequest(format!("unknown status {text:?}")))?,
    };
    let filter = MediaFilter {
        status: Some(status),
        before_id: query.cursor.clone(),
        limit: PAGE_SIZE,
    };
    let items = state.store.list_media(&site.id, &filter).await?;
    let base = format!("/sites/{}/moderation", site.id);
    let next = (items.len() as i64 == PAGE_SIZE)
        .then(|| items.last().map(|media| media.id.clone()))
        .flatten();
    Ok(page(
        &viewer,
        "Moderation queue",
        &[
            ("Sites", "/sites".into()),
            (site.name.as_str(), format!("/sites/{}", site.id)),
        ],
        html! {
            nav.tabs aria-label="Status" {
                @for option in STATUSES {
                    a href=(format!("{base}?status={}", option.as_str()))
                        aria-current=[(option == status).then_some("page")] { (option.as_str()) }
                }
            }
            @if items.is_empty() {
                (empty(match status {
                    MediaStatus::Flagged => "Nothing flagged: every item is decided. Flagged items appear here for a person to approve or reject.",
                    MediaStatus::Pending => "Nothing waiting for analysis.",
                    _ => "No items with this status yet.",
                }))
            } @else {
                @for media in &items { (item(&viewer, &site, media, status, state.config.auto_moderation)) }
                @if let Some(next) = next {
                    p { a href=(format!("{base}?status={}&cursor={next}", status.as_str())) { "Older items" } }
                }
            }
        },
    ))
}

#[derive(Deserialize)]
struct ReviewForm {
    #[serde(default)]
    decision: String,
    #[serde(default)]
    note: String,
    back: Option<String>,
}

async fn review(
    State(state): State<AppState>,
    Path((site_id, media_id)): Path<(SiteId, MediaId)>,
    post: Post<ReviewForm>,
) -> Result<Response, DashError> {
    let Post { viewer, form } = post;
    let (site, media) = site_media(&state, &viewer, &site_id, &media_id).await?;
    let verdict = match form.decision.as_str() {
        "approved" => Verdict::Approved,
        "rejected" => Verdict::Rejected,
        _ => return Err(DashError::BadRequest("Choose Approve or Reject.".into())),
    };
    let note = crate::api::validate::optional_text("note", Some(form.note.trim()), 2000)?;
    let actor = viewer.actor();
    let audit = audit_entry(
        &viewer,
        &site.id,
        "media.reviewed",
        media.id.as_str(),
        review_detail(&media, verdict, note.as_deref()),
    );
    record_decision(
        state.store.as_ref(),
        &state.deliverer,
        &media,
        verdict,
        note.as_deref(),
        Some(&actor),
        Some(&audit),
    )
    .await?
    .ok_or(DashError::NotFound)?;
    Ok(back_to_queue(&site, form.back.as_deref()))
}

/// Back to the queue's tab the form came from (`back`: a status; the
/// flagged items when it names none).
fn back_to_queue(site: &Site, back: Option<&str>) -> Response {
    let back = back
        .and_then(MediaStatus::parse)
        .unwrap_or(MediaStatus::Flagged);
    Redirect::to(&format!(
        "/sites/{}/moderation?status={}",
        site.id,
        back.as_str()
    ))
    .into_response()
}

#[derive(Deserialize)]
struct BackTo {
    #[serde(default)]
    back: Option<String>,
}

/// Queues the item's analysis and rules again (as the API's `remoderate`);
/// its new decision follows as a `media.moderated`.
async fn remoderate(
    State(state): State<AppState>,
    Path((site_id, media_id)): Path<(SiteId, MediaId)>,
    post: Post<BackTo>,
) -> Result<Response, DashError> {
    let Post { viewer, form } = post;
    let (site, media) = site_media(&state, &viewer, &site_id, &media_id).await?;
    let audit = audit_entry(
        &viewer,
        &site.id,
        "media.remoderated",
        media.id.as_str(),
        serde_json::json!({"was": media.status.as_str()}),
    );
    crate::api::media::queue_remoderation(&state, &media, &audit).await?;
    Ok(back_to_queue(&site, form.back.as_deref()))
}

/// An item's image, small, fetched by the server under the same guard and
/// limits as analysis.
async fn thumbnail(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((site_id, media_id)): Path<(SiteId, MediaId)>,
) -> Result<Response, DashError> {
    let (_, media) = site_media(&state, &viewer, &site_id, &media_id).await?;
    let url = media.content_url.as_deref().ok_or(DashError::NotFound)?;
    match state.moderator.thumbnail(url).await {
        Ok(png) => Ok((
            [
                (axum::http::header::CONTENT_TYPE, "image/png"),
                (axum::http::header::CACHE_CONTROL, "private, max-age=600"),
            ],
            png,
        )
            .into_response()),
        Err(error) => {
            // The reason stays in the log: it can name internal addresses.
            tracing::info!(media_id = %media.id, error = %error, "no preview");
            Ok((
                axum::http::StatusCode::BAD_GATEWAY,
                "no preview of this image",
            )
                .into_response())
        }
    }
}
