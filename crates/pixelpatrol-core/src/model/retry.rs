//! When a failed delivery is tried again.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Delays before each attempt. `delays[0]` is the delay of the initial
/// attempt (normally zero); `delays[n]` is the wait after the n-th failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

/// The most a receiver's `Retry-After` may postpone an attempt.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

impl RetrySchedule {
    pub fn new(delays: Vec<Duration>) -> Option<Self> {
        (!delays.is_empty()).then_some(Self { delays })
    }

    /// The delay of the initial attempt.
    pub fn first_delay(&self) -> Duration {
        self.delays[0]
    }

    /// How many attempts a delivery gets before it is dead.
    pub fn max_attempts(&self) -> u32 {
        self.delays.len() as u32
    }

    /// The wait after attempt number `attempt` (1-based) failed, or `None`
    /// when it was the last one. A receiver's `Retry-After` lengthens the
    /// wait (up to [`MAX_RETRY_AFTER`]) but never brings it forward.
    pub fn delay_after_failure(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        let scheduled = *self.delays.get(attempt as usize)?;
        Some(match retry_after {
            Some(asked) => scheduled.max(asked.min(MAX_RETRY_AFTER)),
            None => scheduled,
        })
    }
}

/// The schedule a server runs with unless told otherwise
/// (`--retry-schedule`): the one place it is written.
pub const DEFAULT_RETRY_SCHEDULE: &str = "0s,1m,5m,30m,2h";

impl Default for RetrySchedule {
    fn default() -> Self {
        DEFAULT_RETRY_SCHEDULE
            .parse()
            .expect("the default schedule parses")
    }
}

impl FromStr for RetrySchedule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let delays = text
            .split(',')
            .map(|part| {
                humantime::parse_duration(part.trim())
                    .map_err(|error| format!("{part:?} is not a duration like 30s or 5m: {error}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        RetrySchedule::new(delays).ok_or_else(|| "the schedule needs at least one delay".into())
    }
}

impl fmt::Display for RetrySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .delays
            .iter()
            .map(|d| humantime::format_duration(*d).to_string())
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_is_the_documented_one() {
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.max_attempts(), 5);
        let minute = Duration::from_secs(60);
        assert_eq!(schedule.delay_after_failure(1, None), Some(minute));
        assert_eq!(schedule.delay_after_failure(2, None), Some(5 * minute));
        assert_eq!(schedule.delay_after_failure(3, None), Some(30 * minute));
        assert_eq!(schedule.delay_after_failure(4, None), Some(120 * minute));
        assert_eq!(schedule.delay_after_failure(5, None), None);
        assert_eq!(schedule.delay_after_failure(6, None), None);
    }

    #[test]
    fn retry_after_only_lengthens_the_wait_and_is_capped() {
        let schedule: RetrySchedule = "0s,1m".parse().unwrap();
        let minute = Duration::from_secs(60);
        assert_eq!(
            schedule.delay_after_failure(1, Some(Duration::from_secs(5))),
            Some(minute)
        );
        assert_eq!(
            schedule.delay_after_failure(1, Some(10 * minute)),
            Some(10 * minute)
        );
        assert_eq!(
            schedule.delay_after_failure(1, Some(Duration::from_secs(10 * 86_400))),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn millisecond_schedules_parse_and_bad_ones_say_why() {
        let schedule: RetrySchedule = "0ms, 10ms,20ms".parse().unwrap();
        assert_eq!(schedule.max_attempts(), 3);
        assert_eq!(
            schedule.delay_after_failure(2, None),
            Some(Duration::from_millis(20))
        );
        assert!("".parse::<RetrySchedule>().is_err());
        assert!(
            "1m,soon"
                .parse::<RetrySchedule>()
                .unwrap_err()
                .contains("soon")
        );
    }
}
