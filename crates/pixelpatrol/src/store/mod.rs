//! Storage: one [`Store`] trait, implemented for SQLite (the embedded default)
//! and PostgreSQL (shared by several processes for scale-out).
//!
//! The store owns the transactional outbox: every state change that emits an
//! event writes the event and one delivery per subscribed endpoint in the same
//! transaction, and workers claim due deliveries with leases, so a crash at
//! any moment loses nothing.

mod sql;

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use pixelpatrol_webhooks::EventType;
use serde::Serialize;

use crate::moderation::analyzer::Label;
use crate::moderation::rules::{Rule, RuleOutcome};

pub use sql::{PostgresStore, SqliteStore};

pub type DynStore = Arc<dyn Store>;

#[derive(Debug, Clone, Serialize)]
pub struct Site {
    pub id: String,
    pub name: String,
    pub url: Option<String>,
    pub description: Option<String>,
    #[serde(skip)]
    pub key_hash: String,
    /// The default threshold of the site's rules (0 to 1).
    pub confidence_threshold: f64,
    /// The site's own external analyzer, used instead of the operator's.
    pub external_analyzer_url: Option<String>,
    #[serde(skip)]
    pub external_analyzer_secret: Option<String>,
    #[serde(serialize_with = "ser_ms")]
    pub created_at: i64,
    #[serde(serialize_with = "ser_ms")]
    pub updated_at: i64,
}

/// A named set of rules; every site has exactly one default group.
#[derive(Debug, Clone, Serialize)]
pub struct RuleGroup {
    pub id: String,
    pub site_id: String,
    pub name: String,
    pub description: Option<String>,
    pub is_default: bool,
    pub rules: Vec<Rule>,
    #[serde(serialize_with = "ser_ms")]
    pub created_at: i64,
    #[serde(serialize_with = "ser_ms")]
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub id: String,
    pub site_id: String,
    pub url: String,
    #[serde(skip)]
    pub secret: String,
    pub events: Vec<EventType>,
    pub active: bool,
    pub description: Option<String>,
    pub strict_ordering: bool,
    /// Why the server disabled the endpoint (`410 Gone`, or failing too long).
    pub disabled_reason: Option<String>,
    #[serde(serialize_with = "ser_ms_opt")]
    pub disabled_at: Option<i64>,
    #[serde(skip)]
    pub health: EndpointHealthState,
    #[serde(serialize_with = "ser_ms")]
    pub created_at: i64,
    #[serde(serialize_with = "ser_ms")]
    pub updated_at: i64,
}

/// What the server keeps about an endpoint's recent attempts.
#[derive(Debug, Clone, Default)]
pub struct EndpointHealthState {
    pub consecutive_failures: i64,
    /// When the current run of failures began.
    pub failing_since: Option<i64>,
    pub last_success_at: Option<i64>,
    pub last_failure_at: Option<i64>,
    pub last_failure_class: Option<String>,
    pub last_failure_status: Option<i64>,
    pub last_failure_message: Option<String>,
}

impl Endpoint {
    pub fn subscribes_to(&self, event: EventType) -> bool {
        self.events.contains(&event)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Media {
    pub id: String,
    pub site_id: String,
    pub app_media_id: Option<String>,
    pub content_type: String,
    pub content_url: Option<String>,
    pub body: Option<String>,
    pub metadata: serde_json::Value,
    pub status: String,
    pub review_note: Option<String>,
    pub decided_by: Option<String>,
    /// The rule group chosen at submission; `None` means the site's default.
    pub rule_group_id: Option<String>,
    pub ai_results: AiLabels,
    pub applied_rules: Vec<RuleOutcome>,
    /// Submission (or re-moderation request) to automatic decision.
    pub processing_ms: Option<i64>,
    #[serde(serialize_with = "ser_ms")]
    pub created_at: i64,
    #[serde(serialize_with = "ser_ms")]
    pub updated_at: i64,
    #[serde(serialize_with = "ser_ms_opt")]
    pub moderated_at: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AiLabels {
    pub labels: Vec<Label>,
}

/// A decision to store with its `media.moderated` event.
#[derive(Debug, Clone)]
pub struct DecisionRecord {
    pub status: String,
    pub decided_by: String,
    pub note: Option<String>,
    pub moderated_at: i64,
    /// Automatic decisions: what analysis found, how the rules came out, how
    /// long it took. Manual decisions keep what is stored.
    pub analysis: Option<(Vec<Label>, Vec<RuleOutcome>, i64)>,
}

/// A moderation job leased to one worker.
#[derive(Debug, Clone)]
pub struct ModerationJob {
    pub media: Media,
    pub lease_token: String,
    /// Attempts including this one.
    pub attempts: i64,
    /// When the analysis was asked for (submission or re-moderation).
    pub requested_at: i64,
}

#[derive(Debug)]
pub enum DecideOutcome {
    Decided(Box<Media>),
    NotFound,
    /// A person decided meanwhile; their decision stands.
    ManuallyReviewed,
    /// The job's lease ran out and another worker took it (or re-moderation
    /// was asked for meanwhile): this result is dropped.
    LeaseLost,
}

#[derive(Debug, Clone, Default)]
pub struct MediaFilter {
    pub status: Option<String>,
    /// Only items with a smaller id (the page cursor).
    pub before_id: Option<String>,
    pub limit: i64,
}

/// An event about to be written with the state change that caused it.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    pub site_id: String,
    pub event_type: EventType,
    /// Deliveries about the same media item to one endpoint form an ordered lane.
    pub media_id: String,
    /// The exact JSON body every endpoint receives.
    pub payload: String,
    pub created_at: i64,
    /// When the first attempt is due (the retry schedule's first delay).
    pub deliver_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Succeeded,
    /// Dead: every scheduled attempt failed. Kept, listed, retryable by hand.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(DeliveryStatus::Pending),
            "succeeded" => Some(DeliveryStatus::Succeeded),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

/// A delivery as the log shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub id: String,
    pub event_id: String,
    pub event: String,
    pub webhook_id: String,
    pub site_id: String,
    pub media_id: String,
    pub status: DeliveryStatus,
    pub attempt_count: i64,
    #[serde(serialize_with = "ser_ms_opt")]
    pub next_attempt_at: Option<i64>,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    #[serde(serialize_with = "ser_ms")]
    pub created_at: i64,
    #[serde(serialize_with = "ser_ms")]
    pub updated_at: i64,
    pub attempts: Vec<Attempt>,
    #[serde(skip)]
    pub seq: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub attempt: i64,
    #[serde(serialize_with = "ser_ms")]
    pub started_at: i64,
    pub duration_ms: i64,
    pub status_code: Option<i64>,
    pub response_body: Option<String>,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    #[serde(serialize_with = "ser_ms_opt")]
    pub next_attempt_at: Option<i64>,
    #[serde(skip)]
    pub delivery_id: String,
}

/// A delivery reserved for one worker, with everything needed to send it.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: String,
    pub lease_token: String,
    pub event_id: String,
    pub event_type: String,
    pub endpoint_id: String,
    pub url: String,
    pub secret: String,
    pub payload: String,
    /// When the event was created (for end-to-end latency).
    pub event_created_at: i64,
    /// Attempts made before this one.
    pub previous_attempts: i64,
}

/// What happened to a delivery after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    Succeeded,
    RetryAt(i64),
    Dead,
}

/// One finished attempt, to be recorded together with the delivery's new state.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub delivery_id: String,
    pub endpoint_id: String,
    pub lease_token: String,
    pub attempt: i64,
    pub started_at: i64,
    pub duration_ms: i64,
    pub status_code: Option<i64>,
    pub response_body: Option<String>,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    pub next: NextStep,
}

/// How attempts move endpoint health, and where alerts go.
#[derive(Debug, Clone)]
pub struct HealthPolicy {
    /// Consecutive failed attempts that make an endpoint `failing`.
    pub failing_after: i64,
    /// The operator's alert endpoint, when alerts are configured.
    pub alert_endpoint_id: Option<String>,
    /// Delay before an alert's first attempt, in milliseconds.
    pub alert_first_delay_ms: i64,
}

/// What a run of attempts says about one endpoint, in the order they
/// finished: folded into the endpoint's stored health by
/// `Store::fold_health`.
#[derive(Debug, Clone, Default)]
pub struct HealthSummary {
    pub endpoint_id: String,
    /// Some attempt succeeded (the stored failure streak ends).
    pub had_success: bool,
    /// Failures before the first success, which continue the stored streak
    /// (0 until a success comes: then `trailing_failures` counts them all).
    pub leading_failures: i64,
    /// The longest run of failures between two successes.
    pub longest_inner_streak: i64,
    /// Failures after the last success of the run.
    pub trailing_failures: i64,
    pub first_trailing_failure: Option<i64>,
    pub last_success: Option<i64>,
    pub last_failure: Option<FailureInfo>,
    /// The receiver answered 410 Gone.
    pub gone: bool,
    /// When the last of these attempts finished.
    pub finished_at: i64,
}

impl HealthSummary {
    fn add(&mut self, record: &AttemptRecord) {
        let finished = record.started_at + record.duration_ms;
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
    index: HashMap<String, usize>,
}

impl HealthTally {
    pub fn add(&mut self, records: &[AttemptRecord]) {
        for record in records {
            let slot = match self.index.get(&record.endpoint_id) {
                Some(slot) => *slot,
                None => {
                    self.summaries.push(HealthSummary {
                        endpoint_id: record.endpoint_id.clone(),
                        ..HealthSummary::default()
                    });
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

/// The last failed attempt of an endpoint.
#[derive(Debug, Clone)]
pub struct FailureInfo {
    pub at: i64,
    pub class: Option<String>,
    pub status_code: Option<i64>,
    pub message: Option<String>,
}

/// An endpoint's change of state, reported to the operator.
#[derive(Debug, Clone)]
pub struct HealthChange {
    pub kind: HealthChangeKind,
    pub endpoint_id: String,
    pub site_id: String,
    pub url: String,
    pub consecutive_failures: i64,
    pub reason: Option<String>,
    pub last_failure: Option<FailureInfo>,
    pub at: i64,
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
    pub oldest_pending_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RecoverOutcome {
    pub requeued: u64,
    /// Dead deliveries left alone because their lane has an attempt in
    /// flight; asking again later takes them.
    pub skipped_in_flight: u64,
}

/// An event with its deliveries, as the events list shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EventSummary {
    pub id: String,
    pub event: String,
    pub media_id: String,
    #[serde(serialize_with = "ser_ms")]
    pub created_at: i64,
    pub deliveries: Vec<EventDelivery>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventDelivery {
    pub delivery_id: String,
    pub webhook_id: String,
    pub status: String,
    pub attempts: i64,
    pub last_status_code: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub event: Option<EventType>,
    pub since_ms: Option<i64>,
    /// Only events with a smaller id (the page cursor).
    pub before_id: Option<String>,
    pub limit: i64,
}

/// The outcome of resending an event.
#[derive(Debug)]
pub enum ResendOutcome {
    /// The new deliveries' ids.
    Queued(Vec<String>),
    EventNotFound,
    EndpointNotFound,
}

/// What one retention step removed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Purged {
    pub attempts: u64,
    pub events: u64,
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub status: Option<DeliveryStatus>,
    pub event: Option<EventType>,
    pub since_ms: Option<i64>,
    /// Only deliveries older than this sequence number (the page cursor).
    pub before_seq: Option<i64>,
    pub limit: i64,
}

#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    pub lease_token: &'a str,
    pub now_ms: i64,
    pub lease_until_ms: i64,
    pub limit: i64,
    /// Endpoints this worker will not take more work for right now.
    pub skip_endpoints: &'a [String],
    /// Most deliveries taken for one endpoint…
    pub max_per_endpoint: i64,
    /// …except these, which already have attempts in flight: (endpoint, room left).
    pub endpoint_room: &'a [(String, i64)],
}

/// Outcome of a request to retry a delivery by hand.
#[derive(Debug)]
pub enum RetryOutcome {
    Queued(Box<Delivery>),
    InFlight,
    NotFound,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    async fn get_setting(&self, key: &str) -> anyhow::Result<Option<String>>;
    /// Stores the value unless the key exists; returns the value in force.
    async fn put_setting_if_absent(&self, key: &str, value: &str) -> anyhow::Result<String>;

    /// Creates the site with its default rule group.
    async fn create_site(&self, site: &Site, default_group: &RuleGroup) -> anyhow::Result<()>;
    async fn list_sites(&self) -> anyhow::Result<Vec<Site>>;
    async fn get_site(&self, id: &str) -> anyhow::Result<Option<Site>>;
    async fn site_by_key_hash(&self, key_hash: &str) -> anyhow::Result<Option<Site>>;
    /// Updates name, url, description, threshold and external analyzer.
    async fn update_site(&self, site: &Site) -> anyhow::Result<bool>;
    async fn delete_site(&self, id: &str) -> anyhow::Result<bool>;

    async fn create_endpoint(&self, endpoint: &Endpoint) -> anyhow::Result<()>;
    async fn list_endpoints(&self, site_id: &str) -> anyhow::Result<Vec<Endpoint>>;
    async fn get_endpoint(&self, site_id: &str, id: &str) -> anyhow::Result<Option<Endpoint>>;
    /// Updates the endpoint; `active` is written only with `set_active` (so
    /// an unrelated edit cannot undo a concurrent disable). Turning it back
    /// on clears the disable, starts its health afresh and makes its
    /// pending deliveries due now.
    async fn update_endpoint(
        &self,
        endpoint: &Endpoint,
        set_active: bool,
        now_ms: i64,
    ) -> anyhow::Result<bool>;
    async fn delete_endpoint(&self, site_id: &str, id: &str) -> anyhow::Result<bool>;

    async fn list_rule_groups(&self, site_id: &str) -> anyhow::Result<Vec<RuleGroup>>;
    async fn get_rule_group(&self, site_id: &str, id: &str) -> anyhow::Result<Option<RuleGroup>>;
    async fn default_rule_group(&self, site_id: &str) -> anyhow::Result<Option<RuleGroup>>;
    /// Stores a new group; when it is the default, the previous default
    /// stops being one in the same transaction.
    async fn create_rule_group(&self, group: &RuleGroup) -> anyhow::Result<()>;
    async fn update_rule_group(&self, group: &RuleGroup) -> anyhow::Result<bool>;
    /// Deletes a group that is not the site's default.
    async fn delete_rule_group(&self, site_id: &str, id: &str) -> anyhow::Result<bool>;

    /// Writes the media item, its `media.created` event and the deliveries in
    /// one transaction, and its analysis job when `analyze` is set.
    async fn create_media(
        &self,
        media: &Media,
        event: &NewEvent,
        analyze: bool,
    ) -> anyhow::Result<()>;
    async fn get_media(&self, id: &str) -> anyhow::Result<Option<Media>>;
    /// A site's media, newest first.
    async fn list_media(&self, site_id: &str, filter: &MediaFilter) -> anyhow::Result<Vec<Media>>;
    /// Records a decision and its `media.moderated` event in one transaction.
    /// With `job`, the job is removed in the same transaction (only its
    /// lease holder can), and a manual decision already made is kept.
    async fn decide_media(
        &self,
        media_id: &str,
        decision: &DecisionRecord,
        event: &NewEvent,
        job: Option<&ModerationJob>,
    ) -> anyhow::Result<DecideOutcome>;
    /// Queues (or re-queues) analysis of an item; a lease held on it is
    /// voided, so the running analysis's result is dropped.
    async fn enqueue_moderation(&self, media_id: &str, now_ms: i64) -> anyhow::Result<()>;
    /// Leases up to `limit` due moderation jobs.
    async fn claim_moderation_jobs(
        &self,
        lease_token: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> anyhow::Result<Vec<ModerationJob>>;

    /// Writes a test event with one delivery to `endpoint_id`, already leased
    /// to the caller, who sends it at once.
    async fn create_leased_delivery(
        &self,
        endpoint: &Endpoint,
        event: &NewEvent,
        delivery_id: &str,
        lease_token: &str,
        lease_until_ms: i64,
    ) -> anyhow::Result<ClaimedDelivery>;

    /// Leases up to `limit` due deliveries that are first in their lane, at
    /// most `max_per_endpoint` (or the endpoint's room) for one endpoint, so
    /// that every claimed delivery can be sent at once, well within its lease.
    async fn claim_deliveries(
        &self,
        request: ClaimRequest<'_>,
    ) -> anyhow::Result<Vec<ClaimedDelivery>>;
    /// Records attempts and moves their deliveries on, in one transaction.
    async fn record_attempts(&self, records: &[AttemptRecord]) -> anyhow::Result<()>;
    /// Folds recorded attempts into their endpoints' health, in one
    /// transaction. An endpoint that answered `410 Gone` is disabled. State
    /// changes are returned, and their alerts (when configured) are written
    /// in the same transaction.
    async fn fold_health(
        &self,
        summaries: &[HealthSummary],
        health: &HealthPolicy,
    ) -> anyhow::Result<Vec<HealthChange>>;
    /// Disables active endpoints failing since before `failing_since_before`
    /// with at least `min_dead` dead deliveries since; their pending
    /// deliveries stay for recovery.
    async fn disable_failing_endpoints(
        &self,
        now_ms: i64,
        failing_since_before: i64,
        min_dead: i64,
        health: &HealthPolicy,
    ) -> anyhow::Result<Vec<HealthChange>>;
    /// Creates or updates the operator's alert endpoint (`None`: deactivates it).
    async fn configure_alert_endpoint(
        &self,
        target: Option<(&str, &str)>,
        now_ms: i64,
    ) -> anyhow::Result<()>;
    async fn endpoint_health(
        &self,
        endpoint_id: &str,
        now_ms: i64,
    ) -> anyhow::Result<HealthFigures>;
    /// Re-queues dead deliveries created in `[since, until)`, oldest first.
    async fn recover_deliveries(
        &self,
        endpoint_id: &str,
        since_ms: i64,
        until_ms: Option<i64>,
        now_ms: i64,
    ) -> anyhow::Result<RecoverOutcome>;
    /// New deliveries of an existing event to the site's subscribed active
    /// endpoints, or to the one named.
    async fn resend_event(
        &self,
        site_id: &str,
        event_id: &str,
        endpoint_id: Option<&str>,
        now_ms: i64,
    ) -> anyhow::Result<ResendOutcome>;
    async fn list_events(
        &self,
        site_id: &str,
        filter: &EventFilter,
    ) -> anyhow::Result<Vec<EventSummary>>;
    /// One bounded step of retention: up to `batch` attempts and `batch`
    /// events (with their finished deliveries) older than `cutoff`; events
    /// with pending deliveries are kept.
    async fn purge_step(&self, cutoff_ms: i64, batch: i64) -> anyhow::Result<Purged>;
    /// Pending deliveries in all and the oldest one's creation time.
    async fn queue_stats(&self) -> anyhow::Result<(i64, Option<i64>)>;
    /// Applied migrations against those this build knows.
    async fn migration_status(&self) -> anyhow::Result<(i64, i64)>;
    /// Connections open and idle in the pools.
    fn pool_stats(&self) -> (u32, u32);
    /// Gives leased deliveries back without an attempt (graceful shutdown).
    async fn release_leases(&self, leases: &[(String, String)]) -> anyhow::Result<()>;

    /// Keeps the planner's statistics current. Queue tables grow from empty
    /// to millions of rows faster than autovacuum looks at them (once a
    /// minute), and a plan made from an empty table's numbers can turn a
    /// 10 ms claim into a 10 s one. Called by the worker every few seconds.
    async fn maintain(&self) -> anyhow::Result<()>;

    async fn list_deliveries(
        &self,
        endpoint_id: &str,
        filter: &DeliveryFilter,
    ) -> anyhow::Result<Vec<Delivery>>;
    async fn get_delivery(
        &self,
        endpoint_id: &str,
        delivery_id: &str,
    ) -> anyhow::Result<Option<Delivery>>;
    async fn retry_delivery(
        &self,
        endpoint_id: &str,
        delivery_id: &str,
        now_ms: i64,
    ) -> anyhow::Result<RetryOutcome>;
}

/// Opens (creating if needed) and migrates the database named by `url`.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<DynStore> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = PostgresStore::connect(url, max_connections)
            .await
            .context("cannot open the PostgreSQL database")?;
        Ok(Arc::new(store))
    } else if url.starts_with("sqlite:") {
        let store = SqliteStore::connect(url, max_connections)
            .await
            .context("cannot open the SQLite database")?;
        Ok(Arc::new(store))
    } else {
        anyhow::bail!("unsupported database URL {url:?}: use sqlite://FILE or postgres://…")
    }
}

fn ser_ms<S: serde::Serializer>(ms: &i64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&crate::util::rfc3339(*ms))
}

fn ser_ms_opt<S: serde::Serializer>(ms: &Option<i64>, serializer: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => serializer.serialize_str(&crate::util::rfc3339(*ms)),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(endpoint: &str, at: i64, ok: bool) -> AttemptRecord {
        AttemptRecord {
            delivery_id: format!("dlv_{at}"),
            endpoint_id: endpoint.into(),
            lease_token: "lease".into(),
            attempt: 1,
            started_at: at,
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
        assert_eq!(summary.last_success, Some(9));
        assert_eq!(
            summary.last_failure.as_ref().map(|failure| failure.at),
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
        assert_eq!(tally.summaries()[0].finished_at, 4);
        tally.clear();
        assert!(tally.is_empty());
    }
}
