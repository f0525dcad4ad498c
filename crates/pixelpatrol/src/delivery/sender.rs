//! Sends one signed delivery attempt over HTTP and classifies its outcome.

use std::error::Error as StdError;
use std::time::{Duration, Instant, SystemTime};

use pixelpatrol_webhooks as signing;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};

use crate::model::ClaimedDelivery;
use crate::model::Timestamp;
use crate::net::guard::{BlockedTarget, DnsFailure, GuardedResolver, is_blocked, literal_ip};

/// At most this much of a receiver's answer is kept in the delivery log.
pub const RESPONSE_BODY_LIMIT: usize = 4096;

pub const USER_AGENT: &str = concat!(
    "PixelPatrol-Webhooks/",
    env!("CARGO_PKG_VERSION"),
    " (+https://github.com/pixelpatrol/pixelpatrol)"
);

/// Why an attempt failed, as the delivery log names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    HttpStatus,
    Timeout,
    Connect,
    Dns,
    Tls,
    BlockedTarget,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::HttpStatus => "http_status",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Connect => "connect",
            ErrorClass::Dns => "dns",
            ErrorClass::Tls => "tls",
            ErrorClass::BlockedTarget => "blocked_target",
        }
    }
}

/// What one attempt came to.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub started_at: Timestamp,
    pub duration_ms: i64,
    pub status_code: Option<u16>,
    pub response_body: Option<String>,
    pub error: Option<(ErrorClass, String)>,
    /// The receiver's `Retry-After` on a 429 or 503.
    pub retry_after: Option<Duration>,
}

impl AttemptOutcome {
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
    allow_private: bool,
}

impl Sender {
    pub fn new(timeout: Duration, allow_private: bool) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            // A redirect is an answer, and not a 2xx: following it could also
            // lead the request somewhere the endpoint's owner did not choose.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            // A proxy would be resolved and connected to instead of the
            // target, which would defeat the private-address guard.
            .no_proxy()
            .dns_resolver(std::sync::Arc::new(GuardedResolver { allow_private }))
            .build()?;
        Ok(Self {
            client,
            allow_private,
        })
    }

    /// The headers of one attempt: both signature schemes and the event name.
    pub fn signed_headers(delivery: &ClaimedDelivery, now: SystemTime) -> HeaderMap {
        Self::headers_for(
            &delivery.secret,
            delivery.event_id.as_str(),
            &delivery.event_type,
            delivery.payload.as_bytes(),
            now,
        )
    }

    /// The headers an attempt of event `event_id` (`event_type`, `body`)
    /// signed with `secret` at `now` carries; the delivery log shows them.
    pub fn headers_for(
        secret: &str,
        event_id: &str,
        event_type: &str,
        body: &[u8],
        now: SystemTime,
    ) -> HeaderMap {
        let since_epoch = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let timestamp_ms = since_epoch.as_millis() as i64;
        let timestamp_secs = since_epoch.as_secs() as i64;
        let mut headers = HeaderMap::new();
        let mut put = |name: &'static str, value: String| {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        };
        put(
            signing::SIGNATURE_HEADER,
            signing::sign_pixelpatrol(secret, body),
        );
        put(signing::TIMESTAMP_HEADER, timestamp_ms.to_string());
        put(signing::EVENT_HEADER, event_type.to_string());
        put(signing::STANDARD_ID_HEADER, event_id.to_string());
        put(
            signing::STANDARD_TIMESTAMP_HEADER,
            timestamp_secs.to_string(),
        );
        put(
            signing::STANDARD_SIGNATURE_HEADER,
            signing::sign_standard(secret, event_id, timestamp_secs, body),
        );
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers
    }

    /// Sends the delivery once. Never fails: every problem is an outcome.
    pub async fn send(&self, delivery: &ClaimedDelivery) -> AttemptOutcome {
        let started_at = Timestamp::now();
        let clock = Instant::now();
        let elapsed = |clock: Instant| clock.elapsed().as_millis() as i64;

        if let Some(refusal) = self.refuse_literal_target(&delivery.url) {
            return AttemptOutcome {
                started_at,
                duration_ms: 0,
                status_code: None,
                response_body: None,
                error: Some((ErrorClass::BlockedTarget, refusal)),
                retry_after: None,
            };
        }

        let request = self
            .client
            .post(&delivery.url)
            // Signed at the attempt's recorded start, so that the delivery log
            // can show the headers exactly as they were sent.
            .headers(Self::signed_headers(delivery, started_at.system_time()))
            .body(delivery.payload.clone());
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                return AttemptOutcome {
                    started_at,
                    duration_ms: elapsed(clock),
                    status_code: None,
                    response_body: None,
                    error: Some(classify(&error)),
                    retry_after: None,
                };
            }
        };

        let status = response.status();
        let retry_after = if status.as_u16() == 429 || status.as_u16() == 503 {
            response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(parse_retry_after)
        } else {
            None
        };
        let (body, body_error) = read_prefix(response, RESPONSE_BODY_LIMIT).await;
        let duration_ms = elapsed(clock);
        let error = if let Some(error) = body_error {
            // The status line arrived but the body did not in time: the
            // receiver did not answer completely, which is not a success.
            Some(classify(&error))
        } else if status.is_success() {
            None
        } else {
            Some((
                ErrorClass::HttpStatus,
                format!("endpoint answered {status}"),
            ))
        };
        AttemptOutcome {
            started_at,
            duration_ms,
            status_code: Some(status.as_u16()),
            response_body: Some(body),
            error,
            retry_after,
        }
    }

    /// Targets given as an IP literal never pass through the resolver, so
    /// they are checked here; plain http is refused outside `--dev` too.
    fn refuse_literal_target(&self, url: &str) -> Option<String> {
        if self.allow_private {
            return None;
        }
        let parsed = match url::Url::parse(url) {
            Ok(parsed) => parsed,
            Err(error) => return Some(format!("invalid URL: {error}")),
        };
        if parsed.scheme() != "https" {
            return Some("plain http is refused outside --dev".into());
        }
        literal_ip(&parsed)
            .filter(|ip| is_blocked(*ip))
            .map(|ip| format!("{ip} is a private or reserved address; refused outside --dev"))
    }
}

/// Reads at most `limit` bytes of the body (lossy UTF-8), and any error that
/// stopped the read early.
async fn read_prefix(
    mut response: reqwest::Response,
    limit: usize,
) -> (String, Option<reqwest::Error>) {
    let mut kept = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = limit - kept.len();
                kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if kept.len() >= limit {
                    break;
                }
            }
            Ok(None) => break,
            Err(error) => return (storable_text(&kept), Some(error)),
        }
    }
    (storable_text(&kept), None)
}

/// Text that both databases store: PostgreSQL refuses NUL characters.
pub fn storable_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace('\0', "\u{fffd}")
}

/// `Retry-After` as delta-seconds or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

fn classify(error: &reqwest::Error) -> (ErrorClass, String) {
    let mut chain: Vec<&(dyn StdError + 'static)> = Vec::new();
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(current) = source {
        chain.push(current);
        source = current.source();
    }
    // The causes' own words, not reqwest's summary, which names the URL (and
    // a URL may contain any word, e.g. /certificates).
    let message = chain
        .iter()
        .skip(1)
        .map(|error| error.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    let message = if message.is_empty() {
        error.to_string()
    } else {
        message
    };

    let message = storable_text(message.as_bytes());
    if let Some(blocked) = chain.iter().find_map(|e| e.downcast_ref::<BlockedTarget>()) {
        return (ErrorClass::BlockedTarget, blocked.to_string());
    }
    if let Some(dns) = chain.iter().find_map(|e| e.downcast_ref::<DnsFailure>()) {
        return (ErrorClass::Dns, dns.to_string());
    }
    if error.is_timeout()
        || chain.iter().any(|e| {
            e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        })
    {
        return (ErrorClass::Timeout, message);
    }
    // rustls reports through io errors; its messages are the stable signal
    // without tying this crate to reqwest's exact rustls version.
    let lower = message.to_lowercase();
    // (Only the causes are searched; see above.)
    if [
        "tls",
        "certificate",
        "handshake",
        "corrupt message",
        "invalidcontenttype",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
    {
        return (ErrorClass::Tls, message);
    }
    (ErrorClass::Connect, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        let in_a_minute = SystemTime::now() + Duration::from_secs(61);
        let parsed = parse_retry_after(&httpdate::fmt_http_date(in_a_minute)).unwrap();
        assert!(parsed > Duration::from_secs(55) && parsed <= Duration::from_secs(61));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
