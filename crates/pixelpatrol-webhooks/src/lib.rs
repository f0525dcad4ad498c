//! Receive PixelPatrol webhooks safely.
//!
//! PixelPatrol signs every webhook request twice:
//!
//! * the **PixelPatrol scheme** (`X-PixelPatrol-Signature`): lowercase hex of
//!   HMAC-SHA256 over the exact body bytes, keyed with the UTF-8 bytes of the
//!   endpoint secret. This is what the product documentation's
//!   `verifyWebhookSignature` checks. It does not cover the timestamp, so it
//!   cannot by itself reject a replayed request.
//! * the **Standard Webhooks scheme** (`webhook-id`, `webhook-timestamp`,
//!   `webhook-signature`): `v1,` + base64 HMAC-SHA256 over
//!   `"{id}.{timestamp}.{body}"`. The signed timestamp makes replay protection
//!   possible: [`Verifier::verify`] requires this scheme and enforces the
//!   timestamp tolerance, unless told to accept body-only signatures.
//!
//! Every comparison of a received signature is constant-time.
//!
//! ```
//! use pixelpatrol_webhooks::{sign_pixelpatrol, verify_pixelpatrol};
//! let body = br#"{"id":"evt_1","event":"test.webhook","created_at":"2024-01-20T10:30:00Z","data":{}}"#;
//! let signature = sign_pixelpatrol("my-secret-0123456789", body);
//! assert!(verify_pixelpatrol("my-secret-0123456789", body, &signature).is_ok());
//! ```

mod payload;

pub use payload::{
    AiResults, EndpointAlert, EventType, LastFailure, MediaCreated, MediaModerated, Reviewer,
    TestWebhook, UnknownEventType, WebhookEvent,
};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Lowercase hex HMAC-SHA256 of the body (PixelPatrol scheme).
pub const SIGNATURE_HEADER: &str = "X-PixelPatrol-Signature";
/// Milliseconds since the Unix epoch at which this attempt was sent.
pub const TIMESTAMP_HEADER: &str = "X-PixelPatrol-Timestamp";
/// The event name, e.g. `media.moderated`.
pub const EVENT_HEADER: &str = "X-PixelPatrol-Event";
/// Standard Webhooks: the event id (stable across retries).
pub const STANDARD_ID_HEADER: &str = "webhook-id";
/// Standard Webhooks: seconds since the Unix epoch, covered by the signature.
pub const STANDARD_TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// Standard Webhooks: space-separated list of `v1,<base64>` signatures.
pub const STANDARD_SIGNATURE_HEADER: &str = "webhook-signature";

/// How far a signed timestamp may be from the receiver's clock by default.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Prefix of generated secrets whose remainder is base64 key material.
pub const SECRET_PREFIX: &str = "whsec_";

/// Why a request failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("header {0} is malformed")]
    MalformedHeader(&'static str),
    #[error("no signature matches the body")]
    SignatureMismatch,
    #[error("timestamp is outside the tolerance ({0}s away from now)")]
    TimestampOutOfTolerance(i64),
}

fn mac_with_key(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length")
}

fn pixelpatrol_mac(secret: &str, body: &[u8]) -> [u8; 32] {
    let mut mac = mac_with_key(secret.as_bytes());
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// `X-PixelPatrol-Signature` for a body: lowercase hex HMAC-SHA256 keyed with
/// the UTF-8 bytes of the secret (the whole secret, `whsec_` prefix included).
pub fn sign_pixelpatrol(secret: &str, body: &[u8]) -> String {
    hex::encode(pixelpatrol_mac(secret, body))
}

/// Checks an `X-PixelPatrol-Signature` value against the body, in constant time.
pub fn verify_pixelpatrol(secret: &str, body: &[u8], signature: &str) -> Result<(), VerifyError> {
    let received = hex::decode(signature.trim())
        .map_err(|_| VerifyError::MalformedHeader(SIGNATURE_HEADER))?;
    let expected = pixelpatrol_mac(secret, body);
    if bool::from(expected.as_slice().ct_eq(&received)) {
        Ok(())
    } else {
        Err(VerifyError::SignatureMismatch)
    }
}

/// The HMAC key of the Standard Webhooks scheme: the base64-decoded part after
/// `whsec_` for secrets of that form, otherwise the secret's UTF-8 bytes.
pub fn standard_webhooks_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix(SECRET_PREFIX)
        .and_then(|encoded| BASE64.decode(encoded).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

fn standard_mac(key: &[u8], id: &str, timestamp_secs: i64, body: &[u8]) -> [u8; 32] {
    let mut mac = mac_with_key(key);
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// `webhook-signature` for a message: `v1,` + base64 HMAC-SHA256 over
/// `"{id}.{timestamp}.{body}"`.
pub fn sign_standard(secret: &str, id: &str, timestamp_secs: i64, body: &[u8]) -> String {
    let key = standard_webhooks_key(secret);
    format!(
        "v1,{}",
        BASE64.encode(standard_mac(&key, id, timestamp_secs, body))
    )
}

/// Checks a `webhook-signature` header (one or more space-separated
/// `version,signature` pairs; only `v1` is understood) in constant time.
/// The timestamp is not checked here; [`Verifier`] does that.
pub fn verify_standard_signature(
    secret: &str,
    id: &str,
    timestamp_secs: i64,
    body: &[u8],
    signature_header: &str,
) -> Result<(), VerifyError> {
    let expected = standard_mac(&standard_webhooks_key(secret), id, timestamp_secs, body);
    let mut any_v1 = false;
    for candidate in signature_header.split_whitespace() {
        let Some(encoded) = candidate.strip_prefix("v1,") else {
            continue;
        };
        any_v1 = true;
        let Ok(received) = BASE64.decode(encoded) else {
            continue;
        };
        if bool::from(expected.as_slice().ct_eq(&received)) {
            return Ok(());
        }
    }
    if any_v1 {
        Err(VerifyError::SignatureMismatch)
    } else {
        Err(VerifyError::MalformedHeader(STANDARD_SIGNATURE_HEADER))
    }
}

/// The signature-related headers of one request, however the web framework
/// stores them. Header names are matched case-insensitively by the caller's
/// lookup function.
#[derive(Debug, Clone, Default)]
pub struct WebhookHeaders {
    pub signature: Option<String>,
    pub timestamp_ms: Option<String>,
    pub event: Option<String>,
    pub standard_id: Option<String>,
    pub standard_timestamp: Option<String>,
    pub standard_signature: Option<String>,
}

impl WebhookHeaders {
    /// Builds the set from a lookup function, e.g.
    /// `WebhookHeaders::from_fn(|name| headers.get(name)?.to_str().ok().map(String::from))`.
    pub fn from_fn(lookup: impl Fn(&str) -> Option<String>) -> Self {
        Self {
            signature: lookup(SIGNATURE_HEADER),
            timestamp_ms: lookup(TIMESTAMP_HEADER),
            event: lookup(EVENT_HEADER),
            standard_id: lookup(STANDARD_ID_HEADER),
            standard_timestamp: lookup(STANDARD_TIMESTAMP_HEADER),
            standard_signature: lookup(STANDARD_SIGNATURE_HEADER),
        }
    }
}

/// Verifies requests for one endpoint secret.
#[derive(Debug, Clone)]
pub struct Verifier {
    secret: String,
    tolerance: Duration,
    allow_body_only: bool,
}

impl Verifier {
    pub fn new(secret: impl Into<String>) -> Self {
        Self {
            secret: secret.into(),
            tolerance: DEFAULT_TOLERANCE,
            allow_body_only: false,
        }
    }

    /// Also accept requests that carry only `X-PixelPatrol-Signature`.
    /// That signature does not cover the timestamp, so such a request can be
    /// replayed: deduplicate by event id. Off by default, so that an attacker
    /// cannot strip the Standard Webhooks headers to get around replay checks.
    pub fn allow_body_only_signature(mut self, allow: bool) -> Self {
        self.allow_body_only = allow;
        self
    }

    /// How far the request's timestamp may be from now (default 5 minutes).
    pub fn with_tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Verifies a request at the current time.
    pub fn verify(&self, headers: &WebhookHeaders, body: &[u8]) -> Result<(), VerifyError> {
        self.verify_at(headers, body, SystemTime::now())
    }

    /// Verifies a request as if received at `now`.
    ///
    /// The Standard Webhooks signature and its signed timestamp are checked
    /// (replay protection); where `X-PixelPatrol-Signature` is present too,
    /// it must match as well. Requests without the Standard Webhooks headers
    /// pass only with [`Verifier::allow_body_only_signature`].
    pub fn verify_at(
        &self,
        headers: &WebhookHeaders,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), VerifyError> {
        let now_ms = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let tolerance_ms = self.tolerance.as_millis() as i64;
        let mut checked_any = false;

        if let Some(signature) = &headers.standard_signature {
            let id = headers
                .standard_id
                .as_deref()
                .ok_or(VerifyError::MissingHeader(STANDARD_ID_HEADER))?;
            let timestamp: i64 = headers
                .standard_timestamp
                .as_deref()
                .ok_or(VerifyError::MissingHeader(STANDARD_TIMESTAMP_HEADER))?
                .trim()
                .parse()
                .map_err(|_| VerifyError::MalformedHeader(STANDARD_TIMESTAMP_HEADER))?;
            check_tolerance(timestamp.saturating_mul(1000), now_ms, tolerance_ms)?;
            verify_standard_signature(&self.secret, id, timestamp, body, signature)?;
            checked_any = true;
        }

        if !checked_any && !self.allow_body_only {
            return Err(VerifyError::MissingHeader(STANDARD_SIGNATURE_HEADER));
        }
        if let Some(signature) = &headers.signature {
            if let Some(timestamp) = &headers.timestamp_ms {
                let timestamp: i64 = timestamp
                    .trim()
                    .parse()
                    .map_err(|_| VerifyError::MalformedHeader(TIMESTAMP_HEADER))?;
                check_tolerance(timestamp, now_ms, tolerance_ms)?;
            }
            verify_pixelpatrol(&self.secret, body, signature)?;
            checked_any = true;
        }

        if checked_any {
            Ok(())
        } else {
            Err(VerifyError::MissingHeader(SIGNATURE_HEADER))
        }
    }

    /// Verifies, then parses the body into an event.
    pub fn verify_event(
        &self,
        headers: &WebhookHeaders,
        body: &[u8],
    ) -> Result<WebhookEvent, ReceiveError> {
        self.verify(headers, body)?;
        Ok(serde_json::from_slice(body)?)
    }
}

fn check_tolerance(timestamp_ms: i64, now_ms: i64, tolerance_ms: i64) -> Result<(), VerifyError> {
    let skew = timestamp_ms.saturating_sub(now_ms);
    if skew.abs() > tolerance_ms {
        Err(VerifyError::TimestampOutOfTolerance(skew / 1000))
    } else {
        Ok(())
    }
}

/// Why a request could not be turned into a trusted event.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("body is not a webhook event: {0}")]
    Payload(#[from] serde_json::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_for(secret: &str, body: &[u8], at_ms: i64) -> WebhookHeaders {
        WebhookHeaders {
            signature: Some(sign_pixelpatrol(secret, body)),
            timestamp_ms: Some(at_ms.to_string()),
            event: Some("test.webhook".into()),
            standard_id: Some("evt_1".into()),
            standard_timestamp: Some((at_ms / 1000).to_string()),
            standard_signature: Some(sign_standard(secret, "evt_1", at_ms / 1000, body)),
        }
    }

    fn at(ms: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    }

    #[test]
    fn a_signed_request_verifies_within_the_tolerance() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let headers = headers_for(secret, b"{}", 1_700_000_000_000);
        let verifier = Verifier::new(secret);
        assert_eq!(
            verifier.verify_at(&headers, b"{}", at(1_700_000_100_000)),
            Ok(())
        );
    }

    #[test]
    fn a_replayed_request_is_rejected_after_the_tolerance() {
        let secret = "0123456789abcdef-secret";
        let headers = headers_for(secret, b"{}", 1_700_000_000_000);
        let verifier = Verifier::new(secret);
        assert!(matches!(
            verifier.verify_at(&headers, b"{}", at(1_700_000_000_000 + 301_000)),
            Err(VerifyError::TimestampOutOfTolerance(_))
        ));
    }

    #[test]
    fn a_tampered_body_fails_both_schemes() {
        let secret = "0123456789abcdef-secret";
        let headers = headers_for(secret, b"{\"a\":1}", 1_700_000_000_000);
        let now = at(1_700_000_000_000);
        let verifier = Verifier::new(secret);
        assert_eq!(
            verifier.verify_at(&headers, b"{\"a\":2}", now),
            Err(VerifyError::SignatureMismatch)
        );
        let only_pixelpatrol = WebhookHeaders {
            standard_signature: None,
            ..headers
        };
        assert_eq!(
            verifier.clone().allow_body_only_signature(true).verify_at(
                &only_pixelpatrol,
                b"{\"a\":2}",
                now
            ),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn stripping_the_standard_headers_does_not_get_around_replay_protection() {
        let secret = "0123456789abcdef-secret";
        let headers = headers_for(secret, b"{}", 1_700_000_000_000);
        let stripped = WebhookHeaders {
            standard_id: None,
            standard_timestamp: None,
            standard_signature: None,
            timestamp_ms: None,
            ..headers
        };
        let a_day_later = at(1_700_000_000_000 + 86_400_000);
        assert_eq!(
            Verifier::new(secret).verify_at(&stripped, b"{}", a_day_later),
            Err(VerifyError::MissingHeader(STANDARD_SIGNATURE_HEADER))
        );
        // Accepted only when the receiver opts in to body-only signatures.
        assert_eq!(
            Verifier::new(secret)
                .allow_body_only_signature(true)
                .verify_at(&stripped, b"{}", a_day_later),
            Ok(())
        );
    }

    #[test]
    fn a_request_without_signatures_is_rejected() {
        let verifier = Verifier::new("0123456789abcdef-secret");
        assert_eq!(
            verifier.verify_at(&WebhookHeaders::default(), b"{}", at(0)),
            Err(VerifyError::MissingHeader(STANDARD_SIGNATURE_HEADER))
        );
        assert_eq!(
            verifier.allow_body_only_signature(true).verify_at(
                &WebhookHeaders::default(),
                b"{}",
                at(0)
            ),
            Err(VerifyError::MissingHeader(SIGNATURE_HEADER))
        );
    }

    #[test]
    fn a_wrong_secret_is_rejected() {
        let headers = headers_for("right-secret-0123456789", b"{}", 1_000_000);
        assert_eq!(
            Verifier::new("wrong-secret-0123456789").verify_at(&headers, b"{}", at(1_000_000)),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn non_hex_pixelpatrol_signatures_are_malformed() {
        assert_eq!(
            verify_pixelpatrol("secret", b"{}", "zz"),
            Err(VerifyError::MalformedHeader(SIGNATURE_HEADER))
        );
    }

    #[test]
    fn any_matching_signature_in_a_rotated_list_is_accepted() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let good = sign_standard(secret, "msg", 10, b"x");
        let header = format!("v1,AAAA v2,ignored {good}");
        assert_eq!(
            verify_standard_signature(secret, "msg", 10, b"x", &header),
            Ok(())
        );
        assert_eq!(
            verify_standard_signature(secret, "msg", 10, b"x", "v2,abc"),
            Err(VerifyError::MalformedHeader(STANDARD_SIGNATURE_HEADER))
        );
    }

    #[test]
    fn secrets_without_the_whsec_prefix_key_with_their_utf8_bytes() {
        assert_eq!(standard_webhooks_key("plain-secret"), b"plain-secret");
        assert_eq!(standard_webhooks_key("whsec_AAEC"), vec![0u8, 1, 2]);
    }
}
