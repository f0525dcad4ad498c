//! Small shared helpers: tokens, secrets and hashing.

use base64::Engine as _;
use rand::Rng as _;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};

use crate::model::Timestamp;

/// A new sortable identifier with a type prefix, e.g. `rule_01JD…`, for
/// things without an id type of their own ([`crate::model::id`]).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", crate::model::id::next_ulid())
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
        self.0.store(
            Timestamp::now().millis(),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Whether it beat within three `interval`s (plus slack for a busy
    /// machine); never before the first beat.
    pub fn alive(&self, now: Timestamp, interval: std::time::Duration) -> bool {
        let last = self.0.load(std::sync::atomic::Ordering::Relaxed);
        last > 0 && now.millis() - last <= (interval.as_millis() as i64) * 3 + 5_000
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
    fn generated_secrets_decode_to_32_bytes() {
        let secret = new_webhook_secret();
        let key = pixelpatrol_webhooks::standard_webhooks_key(&secret);
        assert_eq!(key.len(), 32);
        assert_ne!(secret, new_webhook_secret());
    }
}
