//! Operator alerts about endpoint health: an endpoint turning `failing`,
//! recovering, or being disabled. Each is a structured warning in the log, a
//! metric, and — when `PIXELPATROL_ALERT_WEBHOOK_URL` is set — a signed
//! webhook (`endpoint.failing`, `endpoint.recovered`, `endpoint.disabled`)
//! sent by the delivery worker like any other, to an endpoint of the
//! operator's own (hidden) site. The alert event itself is the domain's
//! (`HealthChange::alert_event`), written by the store with the change.

use crate::model::HealthChange;

pub use crate::model::{ALERT_ENDPOINT_ID, OPERATOR_SITE_ID};

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
