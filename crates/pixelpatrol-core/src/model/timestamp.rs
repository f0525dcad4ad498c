//! Points in time. Stored as milliseconds since the Unix epoch (one integer
//! type sorts and compares the same on SQLite and PostgreSQL), shown as
//! RFC 3339 in UTC with millisecond precision (`2024-01-20T10:30:00.123Z`).

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A point in time, to the millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const UNIX_EPOCH: Timestamp = Timestamp(0);

    pub fn now() -> Self {
        Self::of(OffsetDateTime::now_utc())
    }

    pub fn of(at: OffsetDateTime) -> Self {
        Self((at.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    /// From milliseconds since the Unix epoch (as stored).
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the Unix epoch (as stored).
    pub const fn millis(self) -> i64 {
        self.0
    }

    /// `ms` milliseconds later (earlier when negative).
    pub const fn plus_ms(self, ms: i64) -> Self {
        Self(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to this one (negative when `earlier` is later).
    pub const fn ms_since(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    /// As a `SystemTime` (the Unix epoch for times before it).
    pub fn system_time(self) -> std::time::SystemTime {
        std::time::SystemTime::UNIX_EPOCH + Duration::from_millis(self.0.max(0) as u64)
    }

    /// Parses RFC 3339 (any offset).
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        OffsetDateTime::parse(text, &Rfc3339).ok().map(Self::of)
    }

    /// RFC 3339 in UTC with millisecond precision.
    pub fn rfc3339(self) -> String {
        let at = OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let format = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        at.format(&format).unwrap_or_else(|_| self.0.to_string())
    }
}

fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;

    fn add(self, duration: Duration) -> Timestamp {
        self.plus_ms(duration_ms(duration))
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;

    fn sub(self, duration: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(duration_ms(duration)))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Timestamp::parse_rfc3339(&text)
            .ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 timestamp"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_rfc3339() {
        let at = Timestamp::from_millis(1_705_745_400_123);
        assert_eq!(at.rfc3339(), "2024-01-20T10:10:00.123Z");
        assert_eq!(Timestamp::parse_rfc3339(&at.rfc3339()), Some(at));
        assert_eq!(
            Timestamp::parse_rfc3339("2024-01-20T12:10:00+02:00"),
            Some(Timestamp::from_millis(1_705_745_400_000))
        );
        assert_eq!(Timestamp::parse_rfc3339("yesterday"), None);
        let json = serde_json::to_string(&at).unwrap();
        assert_eq!(json, "\"2024-01-20T10:10:00.123Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), at);
    }

    #[test]
    fn arithmetic_in_milliseconds() {
        let at = Timestamp::from_millis(1_000);
        assert_eq!(at + Duration::from_secs(2), Timestamp::from_millis(3_000));
        assert_eq!(
            at - Duration::from_millis(1_500),
            Timestamp::from_millis(-500)
        );
        assert_eq!(Timestamp::from_millis(3_000).ms_since(at), 2_000);
        assert_eq!(at.plus_ms(-1_000), Timestamp::UNIX_EPOCH);
    }
}
