//! Endpoint health: the state machine that folds attempts into an
//! endpoint's failure streak and alert state, and the figures the delivery
//! log gives of it.

use std::collections::HashMap;

use pixelpatrol_webhooks::{EndpointAlert, EventType, LastFailure};
use serde::Serialize;

use super::delivery::AttemptRecord;
use super::event::NewEvent;
use super::{EndpointId, OPERATOR_SITE_ID, SiteId, Timestamp};

/// How attempts move endpoint health, and where alerts go.
#[derive(Debug, Clone)]
pub struct HealthPolicy {
    /// Consecutive failed attempts that make an endpoint `failing`.
    pub failing_after: i64,
    /// The operator's alert endpoint, when alerts are configured.
    pub alert_endpoint_id: Option<EndpointId>,
    /// Delay before an alert's first attempt, in milliseconds.
    pub alert_first_delay_ms: i64,
}

/// What a run of attempts says about one endpoint, in the order they
/// finished: folded into the endpoint's stored health by
/// `crate::store::EndpointHealth::fold_health`.
#[derive(Debug, Clone)]
pub struct HealthSummary {
    pub endpoint_id: EndpointId,
    /// Some attempt succeeded (the stored failure streak ends).
    pub had_success: bool,
    /// Failures before the first success, which continue the stored streak
    /// (0 until a success comes: then `trailing_failures` counts them all).
    pub leading_failures: i64,
    /// The longest run of failures between two successes.
    pub longest_inner_streak: i64,
    /// Failures after the last success of the run.
    pub trailing_failures: i64,
    pub first_trailing_failure: Option<Timestamp>,
    pub last_success: Option<Timestamp>,
    pub last_failure: Option<FailureInfo>,
    /// The receiver answered 410 Gone.
    pub gone: bool,
    /// When the last of these attempts finished.
    pub finished_at: Timestamp,
}

impl HealthSummary {
    /// A run with no attempts yet.
    pub fn new(endpoint_id: EndpointId) -> Self {
        HealthSummary {
            endpoint_id,
            had_success: false,
            leading_failures: 0,
            longest_inner_streak: 0,
            trailing_failures: 0,
            first_trailing_failure: None,
            last_success: None,
            last_failure: None,
            gone: false,
            finished_at: Timestamp::UNIX_EPOCH,
        }
    }

    fn add(&mut self, record: &AttemptRecord) {
        let finished = record.started_at.plus_ms(record.duration_ms);
        self.finished_at = self.finished_at.max(finished);
        if record.error_class.is_none() {
            if self.had_success {
                self.longest_inner_streak = self.longest_inner_streak.max(self.trailing_failures);
            } else {
                self.leading_failures = self.trailing_failures;
            }
            self.had_success = true;
            self.trailing_failures = 0;
            self.first_trailing_failure = None;
            self.last_success = Some(record.started_at);
        } else {
            self.trailing_failures += 1;
            self.first_trailing_failure.get_or_insert(record.started_at);
            self.last_failure = Some(FailureInfo {
                at: record.started_at,
                class: record.error_class.clone(),
                status_code: record.status_code,
                message: record.error_message.clone(),
            });
            self.gone |= record.status_code == Some(410);
        }
    }

    /// The endpoint's failure streak and alert state after this run, and the
    /// alert transitions it went through on the way, given the stored streak
    /// and state. A run folded at once says the same as its attempts folded
    /// one by one, except that several failing spells between successes are
    /// reported as one (the longest). Each `Failing` comes with the streak
    /// seen: where the run continued the stored streak, that streak at the
    /// run's first success; for a spell inside the run, its length; for the
    /// run's trailing failures, their count at the flush.
    pub fn apply(
        &self,
        stored_failures: i64,
        failing: bool,
        failing_after: i64,
    ) -> (i64, bool, Vec<(HealthChangeKind, i64)>) {
        let mut failing = failing;
        let mut transitions = Vec::new();
        if !self.had_success {
            let streak = stored_failures + self.trailing_failures;
            if !failing && streak >= failing_after {
                transitions.push((HealthChangeKind::Failing, streak));
                failing = true;
            }
            return (streak, failing, transitions);
        }
        let leading = stored_failures + self.leading_failures;
        // Only failures of this run cross the threshold (a streak stored
        // above it while healthy, after `--failing-after` was raised, does not).
        if !failing && self.leading_failures > 0 && leading >= failing_after {
            transitions.push((HealthChangeKind::Failing, leading));
            failing = true;
        }
        if failing {
            transitions.push((HealthChangeKind::Recovered, 0));
            failing = false;
        }
        if self.longest_inner_streak >= failing_after {
            transitions.push((HealthChangeKind::Failing, self.longest_inner_streak));
            transitions.push((HealthChangeKind::Recovered, 0));
        }
        let streak = self.trailing_failures;
        if streak >= failing_after {
            transitions.push((HealthChangeKind::Failing, streak));
            failing = true;
        }
        (streak, failing, transitions)
    }
}

/// Recorded attempts not yet folded into their endpoints' health, one
/// summary per endpoint (so a thousand attempts to an endpoint become one
/// row update).
#[derive(Debug, Default)]
pub struct HealthTally {
    summaries: Vec<HealthSummary>,
    index: HashMap<EndpointId, usize>,
}

impl HealthTally {
    pub fn add(&mut self, records: &[AttemptRecord]) {
        for record in records {
            let slot = match self.index.get(&record.endpoint_id) {
                Some(slot) => *slot,
                None => {
                    self.summaries
                        .push(HealthSummary::new(record.endpoint_id.clone()));
                    self.index
                        .insert(record.endpoint_id.clone(), self.summaries.len() - 1);
                    self.summaries.len() - 1
                }
            };
            self.summaries[slot].add(record);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.summaries.is_empty()
    }

    pub fn summaries(&self) -> &[HealthSummary] {
        &self.summaries
    }

    pub fn clear(&mut self) {
        self.summaries.clear();
        self.index.clear();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthChangeKind {
    Failing,
    Recovered,
    Disabled,
}

impl HealthChangeKind {
    pub fn event_type(self) -> EventType {
        match self {
            HealthChangeKind::Failing => EventType::EndpointFailing,
            HealthChangeKind::Recovered => EventType::EndpointRecovered,
            HealthChangeKind::Disabled => EventType::EndpointDisabled,
        }
    }

    pub fn state(self) -> &'static str {
        match self {
            HealthChangeKind::Failing => "failing",
            HealthChangeKind::Recovered => "healthy",
            HealthChangeKind::Disabled => "disabled",
        }
    }
}

/// The last failed attempt of an endpoint.
#[derive(Debug, Clone)]
pub struct FailureInfo {
    pub at: Timestamp,
    pub class: Option<String>,
    pub status_code: Option<i64>,
    pub message: Option<String>,
}

/// An endpoint's change of state, reported to the operator.
#[derive(Debug, Clone)]
pub struct HealthChange {
    pub kind: HealthChangeKind,
    pub endpoint_id: EndpointId,
    pub site_id: SiteId,
    pub url: String,
    pub consecutive_failures: i64,
    pub reason: Option<String>,
    pub last_failure: Option<FailureInfo>,
    pub at: Timestamp,
}

impl HealthChange {
    /// The signed alert event (`endpoint.failing`, `endpoint.recovered`,
    /// `endpoint.disabled`) for this change, to the operator's alert
    /// endpoint; the store writes it in the transaction that changes the
    /// endpoint. Alerts about one endpoint form one ordered lane.
    pub fn alert_event(&self, first_delay_ms: i64) -> anyhow::Result<NewEvent> {
        NewEvent::new(
            self.kind.event_type(),
            &SiteId::from(OPERATOR_SITE_ID),
            self.endpoint_id.as_str(),
            EndpointAlert {
                webhook_id: self.endpoint_id.to_string(),
                site_id: self.site_id.to_string(),
                url: self.url.clone(),
                state: self.kind.state().into(),
                consecutive_failures: self.consecutive_failures,
                reason: self.reason.clone(),
                last_failure: self.last_failure.as_ref().map(|failure| LastFailure {
                    at: failure.at.rfc3339(),
                    class: failure.class.clone(),
                    status_code: failure.status_code,
                    message: failure.message.clone(),
                }),
            },
            self.at,
            self.at.plus_ms(first_delay_ms),
        )
    }
}

/// Attempt figures over one time window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WindowFigures {
    pub attempts: i64,
    pub successes: i64,
    /// Successes / attempts; `None` without attempts.
    pub success_rate: Option<f64>,
    pub avg_response_ms: Option<f64>,
    pub p95_response_ms: Option<i64>,
}

/// What the delivery log says of an endpoint now.
#[derive(Debug, Clone, Default)]
pub struct HealthFigures {
    pub last_hour: WindowFigures,
    pub last_day: WindowFigures,
    /// Pending deliveries, those in flight included.
    pub pending: i64,
    pub in_flight: i64,
    pub oldest_pending_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::delivery::NextStep;

    fn record(endpoint: &str, at: i64, ok: bool) -> AttemptRecord {
        AttemptRecord {
            delivery_id: format!("dlv_{at}").into(),
            endpoint_id: endpoint.into(),
            lease_token: "lease".into(),
            attempt: 1,
            started_at: Timestamp::from_millis(at),
            duration_ms: 1,
            status_code: Some(if ok { 200 } else { 500 }),
            response_body: None,
            error_class: (!ok).then(|| "http_status".into()),
            error_message: None,
            next: NextStep::Succeeded,
        }
    }

    /// Folds attempts one at a time, as if each were flushed alone.
    fn one_by_one(
        outcomes: &[bool],
        mut streak: i64,
        mut failing: bool,
        failing_after: i64,
    ) -> (i64, bool, Vec<(HealthChangeKind, i64)>) {
        let mut transitions = Vec::new();
        for (at, ok) in outcomes.iter().enumerate() {
            let mut tally = HealthTally::default();
            tally.add(&[record("wh", at as i64, *ok)]);
            let (next_streak, next_failing, mut seen) =
                tally.summaries()[0].apply(streak, failing, failing_after);
            transitions.append(&mut seen);
            (streak, failing) = (next_streak, next_failing);
        }
        (streak, failing, transitions)
    }

    #[test]
    fn a_run_folded_at_once_ends_where_its_attempts_folded_one_by_one_end() {
        let runs: &[&[bool]] = &[
            &[false, false, false, true],
            &[false, false, false, false, false],
            &[true, false, false, false, true, false, false],
            &[false, true, true, false, false, false, false],
            &[true, true, true],
            &[false],
        ];
        for outcomes in runs {
            for (stored, failing) in [(0, false), (2, false), (4, true), (7, true)] {
                let mut tally = HealthTally::default();
                let records: Vec<AttemptRecord> = outcomes
                    .iter()
                    .enumerate()
                    .map(|(at, ok)| record("wh", at as i64, *ok))
                    .collect();
                tally.add(&records);
                // The same end, through the same transitions (each reported
                // with the streak when it was seen: at the flush).
                let kinds =
                    |(streak, failing, transitions): (i64, bool, Vec<(HealthChangeKind, i64)>)| {
                        let kinds: Vec<HealthChangeKind> =
                            transitions.into_iter().map(|(kind, _)| kind).collect();
                        (streak, failing, kinds)
                    };
                let at_once = kinds(tally.summaries()[0].apply(stored, failing, 3));
                let expected = kinds(one_by_one(outcomes, stored, failing, 3));
                assert_eq!(at_once, expected, "{outcomes:?} from ({stored}, {failing})");
            }
        }
    }

    #[test]
    fn several_failing_spells_between_successes_are_reported_as_the_longest() {
        let outcomes = [
            true, false, false, false, true, false, false, false, false, true,
        ];
        let records: Vec<AttemptRecord> = outcomes
            .iter()
            .enumerate()
            .map(|(at, ok)| record("wh", at as i64, *ok))
            .collect();
        let mut tally = HealthTally::default();
        tally.add(&records);
        let summary = &tally.summaries()[0];
        assert_eq!(summary.longest_inner_streak, 4);
        assert_eq!(
            summary.apply(0, false, 3),
            (
                0,
                false,
                vec![
                    (HealthChangeKind::Failing, 4),
                    (HealthChangeKind::Recovered, 0)
                ]
            )
        );
        assert_eq!(summary.last_success, Some(Timestamp::from_millis(9)));
        assert_eq!(
            summary
                .last_failure
                .as_ref()
                .map(|failure| failure.at.millis()),
            Some(8)
        );
    }

    #[test]
    fn only_failures_of_the_run_cross_the_threshold() {
        let mut tally = HealthTally::default();
        tally.add(&[record("wh", 1, true)]);
        // A streak stored above the threshold while healthy (the threshold
        // was raised since): a success ends it without alerts.
        assert_eq!(tally.summaries()[0].apply(7, false, 3), (0, false, vec![]));
        // Failing, then a success: recovered.
        assert_eq!(
            tally.summaries()[0].apply(7, true, 3),
            (0, false, vec![(HealthChangeKind::Recovered, 0)])
        );
        let mut tally = HealthTally::default();
        tally.add(&[record("wh", 1, false), record("wh", 2, true)]);
        // Two stored + one failure reaches three, then the success.
        assert_eq!(
            tally.summaries()[0].apply(2, false, 3),
            (
                0,
                false,
                vec![
                    (HealthChangeKind::Failing, 3),
                    (HealthChangeKind::Recovered, 0)
                ]
            )
        );
    }

    #[test]
    fn a_tally_keeps_one_summary_per_endpoint_in_first_seen_order() {
        let mut tally = HealthTally::default();
        tally.add(&[
            record("b", 1, false),
            record("a", 2, true),
            record("b", 3, false),
        ]);
        let endpoints: Vec<&str> = tally
            .summaries()
            .iter()
            .map(|summary| summary.endpoint_id.as_str())
            .collect();
        assert_eq!(endpoints, ["b", "a"]);
        assert_eq!(tally.summaries()[0].trailing_failures, 2);
        assert_eq!(tally.summaries()[0].finished_at, Timestamp::from_millis(4));
        tally.clear();
        assert!(tally.is_empty());
    }
}
