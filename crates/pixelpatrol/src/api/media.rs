//! Media submission, status look-up, the moderation queue, re-moderation
//! and manual review.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use pixelpatrol_webhooks::{EventType, MediaCreated};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::validate::{no_control_characters, optional_text, web_url};
use super::{ApiJson, Page, query};
use crate::api::AppState;
use crate::api::auth::{Caller, authenticate};
use crate::api::error::{AppError, Result};
use crate::model::{
    Actor, AiLabels, AuditEntry, DecidedBy, Media, MediaFilter, MediaId, MediaStatus, NewEvent,
    RuleGroupId, RuleOutcome, SiteId, Timestamp,
};
use crate::moderation::{self, Verdict};

/// Largest text body accepted for moderation, in characters.
const MAX_TEXT_CHARS: usize = 100_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/submit-media", post(submit_media))
        .route("/v1/get-media-status", post(get_media_status))
        .route("/v1/media/{media_id}", get(get_media))
        .route("/v1/media/{media_id}/review", post(review_media))
        .route("/v1/media/{media_id}/remoderate", post(remoderate_media))
        .route("/v1/sites/{site_id}/media", get(list_media))
}

const MAX_PAGE: i64 = 500;

/// A media item with its moderation state, as status look-ups, the queue and
/// reviews show it.
#[derive(Serialize)]
struct MediaOut {
    id: MediaId,
    site_id: SiteId,
    app_media_id: Option<String>,
    content_type: String,
    content_url: Option<String>,
    body: Option<String>,
    metadata: Value,
    status: MediaStatus,
    review_note: Option<String>,
    decided_by: Option<DecidedBy>,
    /// The person who reviewed it in the dashboard.
    reviewer: Option<Actor>,
    rule_group_id: Option<RuleGroupId>,
    ai_results: AiLabels,
    applied_rules: Vec<RuleOutcome>,
    processing_ms: Option<i64>,
    created_at: Timestamp,
    updated_at: Timestamp,
    moderated_at: Option<Timestamp>,
}

impl From<&Media> for MediaOut {
    fn from(media: &Media) -> Self {
        MediaOut {
            id: media.id.clone(),
            site_id: media.site_id.clone(),
            app_media_id: media.app_media_id.clone(),
            content_type: media.content_type.clone(),
            content_url: media.content_url.clone(),
            body: media.body.clone(),
            metadata: media.metadata.clone(),
            status: media.status,
            review_note: media.review_note.clone(),
            decided_by: media.decided_by,
            reviewer: media.reviewer.clone(),
            rule_group_id: media.rule_group_id.clone(),
            ai_results: media.ai_results.clone(),
            applied_rules: media.applied_rules.clone(),
            processing_ms: media.processing_ms,
            created_at: media.created_at,
            updated_at: media.updated_at,
            moderated_at: media.moderated_at,
        }
    }
}

/// The answer to a submission or a re-moderation request.
#[derive(Serialize)]
struct QueuedOut {
    id: MediaId,
    status: MediaStatus,
    message: &'static str,
}

#[derive(Deserialize)]
struct SubmitMedia {
    api_key: Option<String>,
    body: Option<String>,
    content_url: Option<String>,
    app_media_id: Option<String>,
    metadata: Option<Value>,
    rule_group_id: Option<RuleGroupId>,
}

/// `video` for well-known video file endings, otherwise `image`.
fn content_type_of(url: &str) -> &'static str {
    let path = url::Url::parse(url)
        .map(|url| url.path().to_ascii_lowercase())
        .unwrap_or_default();
    let video = [
        ".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v", ".mpeg", ".mpg",
    ];
    if video.iter().any(|ending| path.ends_with(ending)) {
        "video"
    } else {
        "image"
    }
}

async fn submit_media(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(input): ApiJson<SubmitMedia>,
) -> Result<(StatusCode, Json<QueuedOut>)> {
    let caller = authenticate(&state, &headers, input.api_key.as_deref()).await?;
    let Caller::Site(site) = caller else {
        return Err(AppError::invalid(
            "api_key",
            "media is submitted with a site key, not the admin token",
        ));
    };
    let body = match input.body {
        Some(body) if body.chars().count() > MAX_TEXT_CHARS => {
            return Err(AppError::invalid(
                "body",
                format!("body must be at most {MAX_TEXT_CHARS} characters"),
            ));
        }
        Some(body) if body.trim().is_empty() => None,
        Some(body) => {
            no_control_characters("body", &body)?;
            Some(body)
        }
        None => None,
    };
    let content_url = input
        .content_url
        .as_deref()
        .map(|url| web_url("content_url", url))
        .transpose()?;
    if body.is_none() && content_url.is_none() {
        return Err(AppError::invalid(
            "body",
            "give body (text) or content_url (image or video), or both",
        ));
    }
    let metadata = match input.metadata {
        None | Some(Value::Null) => json!({}),
        // Stored as JSON text, where any character is escaped, so any
        // object is safe to keep.
        Some(object @ Value::Object(_)) => object,
        Some(_) => {
            return Err(AppError::invalid(
                "metadata",
                "metadata must be a JSON object",
            ));
        }
    };
    // Another site's group is as unknown as a missing one.
    let rule_group_id = match input.rule_group_id {
        Some(id) => Some(
            state
                .store
                .get_rule_group(&site.id, &id)
                .await?
                .ok_or(AppError::NotFound("rule group"))?
                .id,
        ),
        None => None,
    };
    let now = Timestamp::now();
    let media = Media {
        id: MediaId::generate(),
        site_id: site.id.clone(),
        app_media_id: optional_text("app_media_id", input.app_media_id.as_deref(), 255)?,
        content_type: content_url
            .as_deref()
            .map_or("text", content_type_of)
            .to_string(),
        content_url,
        body,
        metadata,
        status: MediaStatus::Pending,
        review_note: None,
        decided_by: None,
        reviewer: None,
        rule_group_id,
        ai_results: AiLabels::default(),
        applied_rules: Vec::new(),
        processing_ms: None,
        created_at: now,
        updated_at: now,
        moderated_at: None,
    };
    let event = NewEvent::new(
        EventType::MediaCreated,
        &media.site_id,
        media.id.as_str(),
        MediaCreated {
            media_id: media.id.to_string(),
            site_id: media.site_id.to_string(),
            status: media.status.as_str().into(),
            app_media_id: media.app_media_id.clone(),
            content_type: media.content_type.clone(),
            metadata: media.metadata.clone(),
            created_at: now.rfc3339(),
        },
        now,
        state.deliverer.first_attempt_at(now),
    )?;
    let analyze = state.config.auto_moderation;
    state.store.create_media(&media, &event, analyze).await?;
    state.deliverer.wake();
    if analyze {
        state.moderator.wake();
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(QueuedOut {
            id: media.id,
            status: MediaStatus::Pending,
            message: "Media submitted for moderation",
        }),
    ))
}

async fn load_media(state: &AppState, caller: &Caller, media_id: &MediaId) -> Result<Media> {
    let media = state
        .store
        .get_media(media_id)
        .await?
        .ok_or(AppError::NotFound("media"))?;
    caller
        .ensure_site(&media.site_id)
        .map_err(|_| AppError::NotFound("media"))?;
    Ok(media)
}

async fn get_media(
    caller: Caller,
    State(state): State<AppState>,
    Path(media_id): Path<MediaId>,
) -> Result<Json<MediaOut>> {
    Ok(Json(MediaOut::from(
        &load_media(&state, &caller, &media_id).await?,
    )))
}

#[derive(Deserialize)]
struct MediaStatusRequest {
    api_key: Option<String>,
    media_id: MediaId,
}

async fn get_media_status(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(input): ApiJson<MediaStatusRequest>,
) -> Result<Json<MediaOut>> {
    let caller = authenticate(&state, &headers, input.api_key.as_deref()).await?;
    Ok(Json(MediaOut::from(
        &load_media(&state, &caller, &input.media_id).await?,
    )))
}

#[derive(Deserialize)]
struct Review {
    status: String,
    note: Option<String>,
}

async fn review_media(
    caller: Caller,
    State(state): State<AppState>,
    Path(media_id): Path<MediaId>,
    ApiJson(input): ApiJson<Review>,
) -> Result<Json<MediaOut>> {
    let media = load_media(&state, &caller, &media_id).await?;
    let verdict = Verdict::parse(&input.status).ok_or_else(|| {
        AppError::invalid("status", "status must be approved, rejected or flagged")
    })?;
    let note = optional_text("note", input.note.as_deref(), 2000)?;
    let audit = caller.audit(
        &media.site_id,
        "media.reviewed",
        media.id.as_str(),
        moderation::review_detail(&media, verdict, note.as_deref()),
    );
    let decided = moderation::record_decision(
        state.store.as_ref(),
        &state.deliverer,
        &media,
        verdict,
        note.as_deref(),
        // A key names no person.
        None,
        Some(&audit),
    )
    .await?
    .ok_or(AppError::NotFound("media"))?;
    Ok(Json(MediaOut::from(&decided)))
}

/// Queues analysis and the rules again for `media` (the API and the
/// dashboard): refused for an item a person decided, or when automatic
/// moderation is off.
pub async fn queue_remoderation(state: &AppState, media: &Media, audit: &AuditEntry) -> Result<()> {
    if media.decided_by == Some(moderation::DecidedBy::Person) {
        return Err(AppError::Conflict(
            "this item was reviewed by a person; their decision stands (review it again to change it)".into(),
        ));
    }
    if !state.config.auto_moderation {
        return Err(AppError::Conflict(
            "automatic moderation is off on this server (PIXELPATROL_AUTO_MODERATION=false)".into(),
        ));
    }
    state
        .store
        .enqueue_moderation(&media.id, Timestamp::now(), Some(audit))
        .await?;
    state.moderator.wake();
    Ok(())
}

/// Runs analysis and the rules again; a new `media.moderated` follows. The
/// status stays as it is until then. A person's decision is final: items
/// reviewed by hand are not re-moderated.
async fn remoderate_media(
    caller: Caller,
    State(state): State<AppState>,
    Path(media_id): Path<MediaId>,
) -> Result<(StatusCode, Json<QueuedOut>)> {
    let media = load_media(&state, &caller, &media_id).await?;
    let audit = caller.audit(
        &media.site_id,
        "media.remoderated",
        media.id.as_str(),
        serde_json::json!({"was": media.status.as_str()}),
    );
    queue_remoderation(&state, &media, &audit).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(QueuedOut {
            id: media.id,
            status: media.status,
            message: "Media queued for moderation",
        }),
    ))
}

/// A site's media, newest first; `?status=flagged` is the moderation queue.
async fn list_media(
    caller: Caller,
    State(state): State<AppState>,
    Path(site_id): Path<SiteId>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Page<MediaOut>>> {
    caller.ensure_site(&site_id)?;
    let mut filter = MediaFilter {
        limit: query::DEFAULT_PAGE,
        ..MediaFilter::default()
    };
    for (name, value) in &query::params(raw.as_deref()) {
        match name.as_str() {
            "status" => {
                filter.status = Some(MediaStatus::parse(value).ok_or_else(|| {
                    AppError::invalid(
                        "status",
                        "status must be pending, approved, rejected or flagged",
                    )
                })?);
            }
            "limit" => filter.limit = query::limit(value, MAX_PAGE)?,
            "cursor" => filter.before_id = Some(query::id_cursor(value, "media_")?),
            other => return Err(query::unknown(other, "status, limit or cursor")),
        }
    }
    if state.store.get_site(&site_id).await?.is_none() {
        return Err(AppError::NotFound("site"));
    }
    let data = state.store.list_media(&site_id, &filter).await?;
    let next_cursor = (data.len() as i64 == filter.limit)
        .then(|| data.last().map(|media| media.id.to_string()))
        .flatten();
    Ok(Json(Page {
        data: data.iter().map(MediaOut::from).collect(),
        next_cursor,
    }))
}
