//! Operator alerts about endpoint health: an endpoint turning `failing`,
//! recovering, or being disabled. Each is a structured warning in the log, a
//! metric, and — when `PIXELPATROL_ALERT_WEBHOOK_URL` is set — a signed
//! webhook (`endpoint.failing`, `endpoint.recovered`, `endpoint.disabled`)
//! sent by the delivery worker like any other, to an endpoint of the
//! operator's own (hidden) site.

use pixelpatrol_webhooks::{EndpointAlert, LastFailure, WebhookEvent};

use crate::model::{HealthChange, NewEvent};
use crate::util::{new_id, rfc3339};

pub use crate::model::{ALERT_ENDPOINT_ID, OPERATOR_SITE_ID};

/// The alert event for `change`, to the alert endpoint. Alerts about one
/// endpoint form one ordered lane.
pub fn alert_event(change: &HealthChange, first_delay_ms: i64) -> anyhow::Result<NewEvent> {
    let event_type = change.kind.event_type();
    let id = new_id("evt");
    let payload = WebhookEvent {
        id: id.clone(),
        event: event_type.as_str().into(),
        created_at: rfc3339(change.at),
        data: EndpointAlert {
            webhook_id: change.endpoint_id.clone(),
            site_id: change.site_id.clone(),
            url: change.url.clone(),
            state: change.kind.state().into(),
            consecutive_failures: change.consecutive_failures,
            reason: change.reason.clone(),
            last_failure: change.last_failure.as_ref().map(|failure| LastFailure {
                at: rfc3339(failure.at),
                class: failure.class.clone(),
                status_code: failure.status_code,
                message: failure.message.clone(),
            }),
        },
    };
    Ok(NewEvent {
        id,
        site_id: OPERATOR_SITE_ID.into(),
        event_type,
        media_id: change.endpoint_id.clone(),
        payload: serde_json::to_string(&payload)?,
        created_at: change.at,
        deliver_at: change.at + first_delay_ms,
    })
}

/// Logs and counts health changes (their webhooks were written with them).
pub fn report(changes: &[HealthChange]) {
    for change in changes {
        let kind = change.kind.event_type().as_str();
        metrics::counter!("pixelpatrol_endpoint_alerts_total", "alert" => kind).increment(1);
        tracing::warn!(
            alert = kind,
            webhook_id = %change.endpoint_id,
            site_id = %change.site_id,
            url = %change.url,
            consecutive_failures = change.consecutive_failures,
            reason = change.reason.as_deref(),
            last_failure_class = change.last_failure.as_ref().and_then(|failure| failure.class.as_deref()),
            last_failure_status = change.last_failure.as_ref().and_then(|failure| failure.status_code),
            "endpoint health changed"
        );
    }
}
