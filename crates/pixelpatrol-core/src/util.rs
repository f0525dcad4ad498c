//! Small shared helpers: identifiers, clocks, secrets and hashing.

use base64::Engine as _;
use rand::Rng as _;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A new sortable identifier with a type prefix, e.g. `media_01JD…`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new())
}

/// Milliseconds since the Unix epoch, the unit every stored timestamp uses:
/// one integer type sorts and compares the same on SQLite and PostgreSQL.
pub fn now_ms() -> i64 {
    ms_of(OffsetDateTime::now_utc())
}

pub fn ms_of(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

/// RFC 3339 in UTC with millisecond precision, e.g. `2024-01-20T10:30:00.123Z`.
pub fn rfc3339(ms: i64) -> String {
    let at = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    at.format(&format).unwrap_or_else(|_| ms.to_string())
}

pub fn rfc3339_opt(ms: Option<i64>) -> Option<String> {
    ms.map(rfc3339)
}

/// Parses an RFC 3339 timestamp into epoch milliseconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    OffsetDateTime::parse(text, &Rfc3339).ok().map(ms_of)
}

/// `prefix` followed by `len` random alphanumeric characters (≈5.95 bits each).
pub fn random_token(prefix: &str, len: usize) -> String {
    let suffix: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect();
    format!("{prefix}{suffix}")
}

/// When a worker loop last ran, for readiness checks.
#[derive(Debug, Default)]
pub struct Heartbeat(std::sync::atomic::AtomicI64);

impl Heartbeat {
    pub fn beat(&self) {
        self.0.store(now_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether it beat within three `interval`s (plus slack for a busy
    /// machine); never before the first beat.
    pub fn alive(&self, now: i64, interval: std::time::Duration) -> bool {
        let last = self.0.load(std::sync::atomic::Ordering::Relaxed);
        last > 0 && now - last <= (interval.as_millis() as i64) * 3 + 5_000
    }
}

/// A generated webhook secret: `whsec_` + base64 of 32 random bytes, the
/// Standard Webhooks form, so the same secret works with its libraries.
pub fn new_webhook_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// Hex SHA-256. API keys are long random strings, so a fast unsalted hash is
/// enough to keep them out of the database while allowing an indexed lookup.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_through_rfc3339() {
        let ms = 1_705_745_400_123;
        assert_eq!(rfc3339(ms), "2024-01-20T10:10:00.123Z");
        assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms));
        assert_eq!(
            parse_rfc3339("2024-01-20T10:10:00Z"),
            Some(1_705_745_400_000)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn generated_secrets_decode_to_32_bytes() {
        let secret = new_webhook_secret();
        let key = pixelpatrol_webhooks::standard_webhooks_key(&secret);
        assert_eq!(key.len(), 32);
        assert_ne!(secret, new_webhook_secret());
    }
}
