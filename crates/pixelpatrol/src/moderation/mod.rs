//! Moderation decisions. Every decision, manual review today and automatic
//! analysis later, goes through [`record_decision`], which stores the new
//! status together with its `media.moderated` event.

use pixelpatrol_webhooks::{AiResults, EventType, MediaModerated, WebhookEvent};

use crate::AppState;
use crate::error::{AppError, Result};
use crate::store::{Media, NewEvent};
use crate::util::{new_id, now_ms, rfc3339};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approved,
    Rejected,
    Flagged,
}

impl Verdict {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "approved" => Some(Verdict::Approved),
            "rejected" => Some(Verdict::Rejected),
            "flagged" => Some(Verdict::Flagged),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approved => "approved",
            Verdict::Rejected => "rejected",
            Verdict::Flagged => "flagged",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecidedBy {
    Manual,
    Automatic,
}

impl DecidedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            DecidedBy::Manual => "manual",
            DecidedBy::Automatic => "automatic",
        }
    }
}

/// Stores a decision about `media` and emits `media.moderated`, atomically.
pub async fn record_decision(
    state: &AppState,
    media: &Media,
    verdict: Verdict,
    decided_by: DecidedBy,
    note: Option<&str>,
) -> Result<Media> {
    let now = now_ms();
    let event_id = new_id("evt");
    let payload = WebhookEvent {
        id: event_id.clone(),
        event: EventType::MediaModerated.as_str().into(),
        created_at: rfc3339(now),
        data: MediaModerated {
            media_id: media.id.clone(),
            site_id: media.site_id.clone(),
            status: verdict.as_str().into(),
            ai_results: AiResults::default(),
            applied_rules: Vec::new(),
            moderated_at: rfc3339(now),
            app_media_id: media.app_media_id.clone(),
            decided_by: Some(decided_by.as_str().into()),
            note: note.map(str::to_string),
        },
    };
    let event = NewEvent {
        id: event_id,
        site_id: media.site_id.clone(),
        event_type: EventType::MediaModerated,
        media_id: media.id.clone(),
        payload: serde_json::to_string(&payload).map_err(anyhow::Error::from)?,
        created_at: now,
        deliver_at: state.deliverer.first_attempt_at(now),
    };
    let decided = state
        .store
        .decide_media(
            &media.id,
            verdict.as_str(),
            decided_by.as_str(),
            note,
            now,
            &event,
        )
        .await?
        .ok_or(AppError::NotFound("media"))?;
    state.deliverer.wake();
    Ok(decided)
}
