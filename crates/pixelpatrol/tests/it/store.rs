//! The storage contract: what the `Store` does, pinned on both backends by
//! calling the trait directly (no server, no HTTP, no timers), so that the
//! storage layer can be rewritten (split per backend, the delivery path
//! redesigned) and checked against the same outcomes.
//!
//! Covered: the transactional outbox (a state change writes its event and
//! one delivery per active subscribed endpoint, or nothing), lanes (one per
//! endpoint and media item; one per endpoint for strict ordering) and their
//! heads, leases and lost leases, retries, dead deliveries and manual
//! retries, claim caps, inactive endpoints, health folding, 410 Gone and
//! auto-disable with their alerts, recovery, retention, tenancy and the
//! moderation job queue.
//!
//! Every time is a fixed millisecond count from `T0`, passed in as `now`,
//! so nothing depends on the machine's speed. The one exception is
//! `release_leases`, which reads the wall clock itself.

use std::collections::BTreeSet;

use crate::common::{Backend, TestDb};
use pixelpatrol::model::{
    ALERT_ENDPOINT_ID, AiLabels, AttemptRecord, ClaimRequest, ClaimedDelivery, DecideOutcome,
    DecidedBy, DecisionRecord, Delivery, DeliveryFilter, DeliveryStatus, Endpoint, EventFilter,
    EventSummary, HealthChange, HealthChangeKind, HealthPolicy, HealthTally, Media, MediaStatus,
    NewEvent, NextStep, OPERATOR_SITE_ID, ResendOutcome, RetryOutcome, RuleGroup, Site, Verdict,
};
use pixelpatrol::model::{
    DeliveryId, EndpointId, EventId, LeaseToken, MediaId, RuleGroupId, SiteId, Timestamp,
};
use pixelpatrol::store::DynStore;
use pixelpatrol::util::{new_id, sha256_hex};
use pixelpatrol_webhooks::EventType;
use serde_json::{Value, json};

both_backends!(
    a_submission_writes_its_media_its_event_and_one_delivery_per_active_subscribed_endpoint,
    a_submission_whose_event_cannot_be_written_leaves_nothing_behind,
    a_claim_takes_only_lane_heads_and_different_lanes_go_together,
    a_strict_ordering_endpoint_is_claimed_one_delivery_at_a_time_in_creation_order,
    a_live_lease_is_not_claimed_again_and_a_lost_lease_only_logs_its_attempt,
    a_retry_waits_for_its_time_a_dead_delivery_fails_and_a_manual_retry_requeues_it,
    released_leases_are_claimable_again_at_once,
    workers_claiming_at_once_never_lease_one_delivery_twice,
    claims_honour_the_limit_the_per_endpoint_cap_skipped_endpoints_and_endpoint_room,
    an_inactive_endpoint_is_not_claimed_and_reactivating_it_makes_its_backlog_due_now,
    a_run_folded_at_once_ends_where_it_ends_folded_attempt_by_attempt,
    a_410_gone_disables_the_endpoint_and_reactivation_starts_its_health_afresh,
    health_changes_write_their_alerts_to_the_alert_endpoint,
    an_endpoint_failing_long_enough_with_enough_dead_deliveries_is_disabled,
    recover_requeues_dead_deliveries_in_lane_order_and_skips_lanes_in_flight,
    purge_removes_old_finished_data_in_batches_and_never_pending_or_recent_data,
    every_lookup_is_scoped_to_its_site_or_endpoint_and_deleting_a_site_cascades,
    a_moderation_job_is_leased_once_and_only_its_lease_holder_decides,
    a_manual_decision_is_never_replaced_by_an_automatic_one,
    a_test_delivery_is_written_already_leased,
    queue_figures_count_pending_in_flight_and_recent_attempts,
    a_setting_keeps_the_first_value_put,
    media_figures_count_statuses_and_days_per_site,
    an_endpoint_change_writes_its_audit_entry_with_it_and_a_refused_one_none,
    deleting_an_endpoint_a_site_or_expired_events_leaves_no_delivery_or_attempt_behind,
);

mod postgres_only {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sweep_removes_deliveries_whose_endpoint_or_event_is_gone_and_only_those() {
        super::the_sweep_removes_deliveries_whose_endpoint_or_event_is_gone_and_only_those().await
    }
}

mod sqlite_only {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_from_another_process_on_the_same_file_waits_its_turn() {
        super::a_write_from_another_process_on_the_same_file_waits_its_turn().await
    }
}

/// The tests' epoch; [`t`] is a time after it.
const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);
const LEASE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// `ms` milliseconds after [`T0`].
fn t(ms: i64) -> Timestamp {
    T0.plus_ms(ms)
}

const ALERT_URL: &str = "http://127.0.0.1:9/alerts";
const ALERT_SECRET: &str = "alert-secret-0123456789abcdef";

/// A fresh, migrated database and its store (the `TestDb` keeps it alive).
async fn open(backend: Backend) -> (TestDb, DynStore) {
    let db = TestDb::create(backend).await;
    let store = pixelpatrol::store::connect(&db.url, 4).await.unwrap();
    (db, store)
}

async fn site(store: &DynStore) -> Site {
    let site = Site {
        id: SiteId::generate(),
        name: "Test site".into(),
        url: None,
        description: None,
        key_hash: sha256_hex(&new_id("key")),
        confidence_threshold: 0.75,
        external_analyzer_url: None,
        external_analyzer_secret: None,
        created_at: T0,
        updated_at: T0,
    };
    let group = RuleGroup {
        id: RuleGroupId::generate(),
        site_id: site.id.clone(),
        name: "Default".into(),
        description: None,
        is_default: true,
        rules: Vec::new(),
        created_at: T0,
        updated_at: T0,
    };
    store.create_site(&site, &group, None).await.unwrap();
    site
}

/// Endpoints of one site are listed (and get their deliveries written) in
/// `created_at` order; ids made in the same millisecond do not sort in the
/// order they were made, so tests that depend on that order give distinct
/// times.
async fn add_endpoint(
    store: &DynStore,
    site: &Site,
    events: &[EventType],
    active: bool,
    strict: bool,
    created_at: Timestamp,
) -> Endpoint {
    let endpoint = Endpoint {
        id: EndpointId::generate(),
        site_id: site.id.clone(),
        url: format!("http://127.0.0.1:9/{}", new_id("hook")),
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        events: events.to_vec(),
        active,
        description: None,
        strict_ordering: strict,
        disabled_reason: None,
        disabled_at: None,
        health: Default::default(),
        created_at,
        updated_at: created_at,
    };
    store.create_endpoint(&endpoint, None).await.unwrap();
    endpoint
}

/// An active endpoint subscribed to both media events.
async fn endpoint(store: &DynStore, site: &Site, strict: bool) -> Endpoint {
    let events = [EventType::MediaCreated, EventType::MediaModerated];
    add_endpoint(store, site, &events, true, strict, T0).await
}

async fn get_endpoint(store: &DynStore, endpoint: &Endpoint) -> Endpoint {
    store
        .get_endpoint(&endpoint.site_id, &endpoint.id)
        .await
        .unwrap()
        .expect("the endpoint")
}

pub(crate) fn media(site: &Site, at: Timestamp) -> Media {
    Media {
        id: MediaId::generate(),
        site_id: site.id.clone(),
        app_media_id: None,
        content_type: "text".into(),
        content_url: None,
        body: Some("hello".into()),
        metadata: json!({}),
        status: MediaStatus::Pending,
        review_note: None,
        decided_by: None,
        reviewer: None,
        rule_group_id: None,
        ai_results: AiLabels::default(),
        applied_rules: Vec::new(),
        processing_ms: None,
        created_at: at,
        updated_at: at,
        moderated_at: None,
    }
}

/// An event in the lane of `media_id` (any lane key).
pub(crate) fn event(
    site_id: &SiteId,
    event_type: EventType,
    media_id: &(impl AsRef<str> + ?Sized),
    at: Timestamp,
    deliver_at: Timestamp,
) -> NewEvent {
    let id = EventId::generate();
    let media_id = media_id.as_ref();
    let payload = json!({"id": id, "event": event_type.as_str(), "data": {"media_id": media_id}});
    NewEvent {
        id,
        site_id: site_id.clone(),
        event_type,
        media_id: media_id.into(),
        payload: payload.to_string(),
        created_at: at,
        deliver_at,
    }
}

/// Submits a media item at `at` as the API does; returns its `media.created`.
async fn submit(store: &DynStore, site: &Site, at: Timestamp) -> NewEvent {
    submit_with(store, site, at, at, false).await
}

async fn submit_with(
    store: &DynStore,
    site: &Site,
    at: Timestamp,
    deliver_at: Timestamp,
    analyze: bool,
) -> NewEvent {
    let media = media(site, at);
    let created = event(&site.id, EventType::MediaCreated, &media.id, at, deliver_at);
    store.create_media(&media, &created, analyze).await.unwrap();
    created
}

/// The person a manual decision names.
fn reviewer() -> pixelpatrol::model::Actor {
    pixelpatrol::model::Actor {
        user_id: "usr_reviewer".into(),
        email: "reviewer@example.com".into(),
    }
}

fn manual(status: Verdict, at: Timestamp) -> DecisionRecord {
    DecisionRecord {
        status,
        decided_by: DecidedBy::Person,
        note: Some("checked by hand".into()),
        reviewer: Some(reviewer()),
        moderated_at: at,
        analysis: None,
    }
}

fn automatic(status: Verdict, at: Timestamp) -> DecisionRecord {
    DecisionRecord {
        status,
        decided_by: DecidedBy::Automatic,
        note: None,
        reviewer: None,
        moderated_at: at,
        analysis: Some((Vec::new(), Vec::new(), 42)),
    }
}

/// A person's decision about the item: one more event in its lane.
async fn review(store: &DynStore, site: &Site, media_id: &MediaId, at: Timestamp) -> NewEvent {
    let moderated = event(&site.id, EventType::MediaModerated, media_id, at, at);
    let outcome = store
        .decide_media(
            media_id,
            &manual(Verdict::Approved, at),
            &moderated,
            None,
            None,
        )
        .await
        .unwrap();
    assert!(matches!(outcome, DecideOutcome::Decided(_)), "{outcome:?}");
    moderated
}

fn request(token: &LeaseToken, now: Timestamp) -> ClaimRequest<'_> {
    ClaimRequest {
        lease_token: token,
        now,
        lease_until: now.plus_ms(LEASE),
        limit: 100,
        skip_endpoints: &[],
        max_per_endpoint: 100,
        endpoint_room: &[],
    }
}

/// Everything due at `now`, under a new lease token.
async fn claim(store: &DynStore, now: Timestamp) -> Vec<ClaimedDelivery> {
    let token = LeaseToken::generate();
    store.claim_deliveries(request(&token, now)).await.unwrap()
}

fn event_ids(claimed: &[ClaimedDelivery]) -> Vec<EventId> {
    claimed
        .iter()
        .map(|delivery| delivery.event_id.clone())
        .collect()
}

/// (endpoint, event) of each claimed delivery, in the order returned.
fn pairs(claimed: &[ClaimedDelivery]) -> Vec<(EndpointId, EventId)> {
    claimed
        .iter()
        .map(|delivery| (delivery.endpoint_id.clone(), delivery.event_id.clone()))
        .collect()
}

fn ok(claimed: &ClaimedDelivery, at: Timestamp) -> AttemptRecord {
    AttemptRecord {
        delivery_id: claimed.id.clone(),
        endpoint_id: claimed.endpoint_id.clone(),
        lease_token: claimed.lease_token.clone(),
        attempt: claimed.previous_attempts + 1,
        started_at: at,
        duration_ms: 1,
        status_code: Some(200),
        response_body: Some("ok".into()),
        error_class: None,
        error_message: None,
        next: NextStep::Succeeded,
    }
}

fn failed(claimed: &ClaimedDelivery, at: Timestamp, status: i64, next: NextStep) -> AttemptRecord {
    AttemptRecord {
        status_code: Some(status),
        response_body: None,
        error_class: Some("http_status".into()),
        error_message: Some(format!("HTTP {status}")),
        next,
        ..ok(claimed, at)
    }
}

async fn record(store: &DynStore, records: &[AttemptRecord]) {
    store.record_attempts(records).await.unwrap();
}

async fn delivery(
    store: &DynStore,
    endpoint_id: &EndpointId,
    delivery_id: &DeliveryId,
) -> Delivery {
    store
        .get_delivery(endpoint_id, delivery_id)
        .await
        .unwrap()
        .expect("the delivery")
}

/// The endpoint's deliveries, newest first.
async fn deliveries(store: &DynStore, endpoint_id: &EndpointId) -> Vec<Delivery> {
    let filter = DeliveryFilter {
        limit: 100,
        ..DeliveryFilter::default()
    };
    store.list_deliveries(endpoint_id, &filter).await.unwrap()
}

fn all_events() -> EventFilter {
    EventFilter {
        limit: 100,
        ..EventFilter::default()
    }
}

/// Claims and kills everything due at `now`, lane head after lane head;
/// returns how many deliveries died.
async fn fail_all(store: &DynStore, now: Timestamp) -> usize {
    let mut dead = 0;
    loop {
        let claimed = claim(store, now).await;
        if claimed.is_empty() {
            return dead;
        }
        let records: Vec<AttemptRecord> = claimed
            .iter()
            .map(|delivery| failed(delivery, now, 500, NextStep::Dead))
            .collect();
        record(store, &records).await;
        dead += claimed.len();
    }
}

/// The media item an event is about (its lane).
fn media_of(event: &NewEvent) -> MediaId {
    MediaId::from(event.media_id.as_str())
}

fn alert_endpoint_id() -> EndpointId {
    EndpointId::from(ALERT_ENDPOINT_ID)
}

fn policy() -> HealthPolicy {
    HealthPolicy {
        failing_after: 3,
        alert_endpoint_id: None,
        alert_first_delay_ms: 0,
    }
}

/// An attempt as health sees it (fold_health reads no delivery).
fn attempt_on(endpoint_id: &EndpointId, at: Timestamp, status: i64) -> AttemptRecord {
    AttemptRecord {
        delivery_id: DeliveryId::generate(),
        endpoint_id: endpoint_id.clone(),
        lease_token: "lease".into(),
        attempt: 1,
        started_at: at,
        duration_ms: 1,
        status_code: Some(status),
        response_body: None,
        error_class: (status >= 300).then(|| "http_status".to_string()),
        error_message: None,
        next: NextStep::Succeeded,
    }
}

async fn fold(
    store: &DynStore,
    records: &[AttemptRecord],
    policy: &HealthPolicy,
) -> Vec<HealthChange> {
    let mut tally = HealthTally::default();
    tally.add(records);
    store.fold_health(tally.summaries(), policy).await.unwrap()
}

fn kinds(changes: &[HealthChange]) -> Vec<(HealthChangeKind, i64)> {
    changes
        .iter()
        .map(|change| (change.kind, change.consecutive_failures))
        .collect()
}

/// consecutive failures, failing since, last success, last failure, its
/// class and status.
type Health = (
    i64,
    Option<Timestamp>,
    Option<Timestamp>,
    Option<Timestamp>,
    Option<String>,
    Option<i64>,
);

fn health(endpoint: &Endpoint) -> Health {
    let health = &endpoint.health;
    (
        health.consecutive_failures,
        health.failing_since,
        health.last_success_at,
        health.last_failure_at,
        health.last_failure_class.clone(),
        health.last_failure_status,
    )
}

async fn a_submission_writes_its_media_its_event_and_one_delivery_per_active_subscribed_endpoint(
    backend: Backend,
) {
    let (_db, store) = open(backend).await;
    let site = site(&store).await;
    let other_site = self::site(&store).await;
    let subscribed = endpoint(&store, &site, false).await;
    let created = [EventType::MediaCreated];
    let inactive = add_endpoint(&store, &site, &created, false, false, T0).await;
    let unsubscribed =
        add_endpoint(&store, &site, &[EventType::MediaModerated], true, false, T0).await;
    let foreign = add_endpoint(&store, &other_site, &created, true, false, T0).await;

    let submitted = submit_with(&store, &site, T0, t(500), false).await;

    let stored = store
        .get_media(&media_of(&submitted))
        .await
        .unwrap()
        .expect("the media row");
    assert_eq!(stored.site_id, site.id);
    assert_eq!(stored.status, MediaStatus::Pending);
    let events = store.list_events(&site.id, &all_events()).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].id, submitted.id);
    assert_eq!(events[0].event, "media.created");
    assert_eq!(events[0].media_id, submitted.media_id);
    let targets: Vec<(&str, &str, i64)> = events[0]
        .deliveries
        .iter()
        .map(|delivery| {
            (
                delivery.webhook_id.as_str(),
                delivery.status.as_str(),
                delivery.attempts,
            )
        })
        .collect();
    assert_eq!(targets, [(subscribed.id.as_str(), "pending", 0)]);

    let log = deliveries(&store, &subscribed.id).await;
    assert_eq!(log.len(), 1);
    let delivery = &log[0];
    assert_eq!(delivery.event_id, submitted.id);
    assert_eq!(delivery.event, "media.created");
    assert_eq!(delivery.webhook_id, subscribed.id);
    assert_eq!(delivery.site_id, site.id);
    assert_eq!(delivery.media_id, submitted.media_id);
    assert_eq!(delivery.status, DeliveryStatus::Pending);
    assert_eq!(delivery.attempt_count, 0);
    assert_eq!(delivery.next_attempt_at, Some(t(500)));
    assert_eq!(delivery.created_at, T0);
    assert!(delivery.attempts.is_empty());
    for nobody in [&inactive, &unsubscribed, &foreign] {
        assert!(
            deliveries(&store, &nobody.id).await.is_empty(),
            "{}",
            nobody.url
        );
    }
    assert!(
        store
            .list_events(&other_site.id, &all_events())
            .await
            .unwrap()
            .is_empty()
    );
    // Without `analyze`, no moderation job.
    let jobs = store
        .claim_moderation_jobs(&LeaseToken::from("mod"), t(DAY), t(DAY + LEASE), 10)
        .await
        .unwrap();
    assert!(jobs.is_empty());
}

async fn a_submission_whose_event_cannot_be_written_leaves_nothing_behind(backend: Backend) {
    let (_db, store) = open(backend).await;
    let site = site(&store).await;
    let subscribed = endpoint(&store, &site, false).await;
    let first = submit(&store, &site, T0).await;

    // The event's id is taken: its insert fails, and with it the media row
    // and the deliveries written in the same transaction.
    let second = media(&site, t(1));
    let mut clash = event(&site.id, EventType::MediaCreated, &second.id, t(1), t(1));
    clash.id = first.id.clone();
    assert!(store.create_media(&second, &clash, true).await.is_err());

    assert!(store.get_media(&second.id).await.unwrap().is_none());
    let log = deliveries(&store, &subscribed.id).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].media_id, first.media_id);
    assert_eq!(
        store
            .list_events(&site.id, &all_events())
            .await
            .unwrap()
            .len(),
        1
    );
    let jobs = store
        .claim_moderation_jobs(&LeaseToken::from("mod"), t(DAY), t(DAY + LEASE), 10)
        .await
        .unwrap();
    assert!(jobs.is_empty());
}

async fn a_claim_takes_only_lane_heads_and_different_lanes_go_together(backend: Backend) {
    let (_db, store) = open(backend).await;
    let site = site(&store).await;
    endpoint(&store, &site, false).await;
    let first = submit(&store, &site, T0).await;
    let second = review(&store, &site, &media_of(&first), t(1)).await;
    let third = review(&store, &site, &media_of(&first), t(2)).await;
    let other = submit(&store, &site, t(3)).await;

    let claimed = claim(&store, t(10)).await;
    assert_eq!(event_ids(&claimed), [first.id.clone(), other.id.clone()]);
    assert_eq!(claimed[0].previous_attempts, 0);
    assert_eq!(claimed[0].payload, first.payload);
    assert_eq!(claimed[0].event_type, "media.created");
    assert_eq!(claimed[0].event_created_at, T0);
    // The rest of the lane waits for its head, however due it is.
    assert!(claim(&store, t(20)).await.is_empty());

    record(&store, &[ok(&claimed[0], t(30))]).await;
    let next = claim(&store, t(40)).await;
    assert_eq!(event_ids(&next), vec![second.id.clone()]);
    // A failed attempt that will be retried keeps its place at the head.
    record(
        &store,
        &[failed(&next[0], t(50), 500, NextStep::RetryAt(t(5_000)))],
    )
    .await;
    assert!(claim(&store, t(60)).await.is_empty());
    let retried = claim(&store, t(5_000)).await;
    assert_eq!(event_ids(&retried), vec![second.id.clone()]);
    record(&store, &[ok(&retried[0], t(5_010))]).await;
    assert_eq!(
        event_ids(&claim(&store, t(5_020)).await),
        vec![third.id.clone()]
    );
}

async fn a_strict_ordering_endpoint_is_claimed_one_delivery_at_a_time_in_creation_order(
    backend: Backend,
) {
    let (_db, store) = open(backend).await;
    let site = site(&store).await;
    endpoint(&store, &site, true).await;
    let first = submit(&store, &site, T0).await;
    let second = submit(&store, &site, t(1)).await;
    let third = submit(&store, &site, t(2)).await;

    let claimed = claim(&store, t(10)).await;
    assert_eq!(event_ids(&claimed), vec![first.id.clone()]);
    assert!(claim(&store, t(11)).await.is_empty());
    record(&store, &[ok(&claimed[0], t(12))]).await;

    let claimed = claim(&store, t(20)).await;
    assert_eq!(event_ids(&claimed), vec![second.id.clone()]);
    // The head retries later: the endpoint's later deliveries, though due
    // and about other items, wait behind it.
    record(
        &store,
        &[failed(&claimed[0], t(21), 500, NextStep::RetryAt(t(5_000)))],
    )
    .await;
    assert!(claim(&store, t(30)).await.is_empty());

    let claimed = claim(&store, t(5_000)).await;
    assert_eq!(event_ids(&claimed), vec![second.id.clone()]);
    assert_eq!(claimed[0].previous_attempts, 1);
    // A dead head no longer holds the line.
    record(
        &store,
        &[failed(&claimed[0], t(5_001), 500, NextStep::Dead)],
    )
    .await;
    assert_eq!(
        event_ids(&claim(&store, t(5_002)).await),
        vec![third.id.clone()]
    );
}

async fn a_live_lease_is_not_claimed_again_and_a_lost_lease_only_logs_its_attempt(
    backend: Backend,
) {
    let (_db, store) = open(backend).await;
    let site = site(&store).await;
    let endpoint = endpoint(&store, &site, false).await;
    let submitted = submit(&store, &site, T0).await;

    let first = store
        .claim_deliveries(request(&LeaseToken::from("lease_first"), T0))
        .await
        .unwrap();
    assert_eq!(event_ids(&first), vec![submitted.id.clone()]);
    assert_eq!(first[0].lease_token, "lease_first");
    assert!(claim(&store, t(1)).await.is_empty());
    // The lease is live up to and including its last millisecond.
    assert!(claim(&store, t(LEASE)).await.is_empty());

    let second = store
        .claim_deliveries(request(&LeaseToken::from("lease_second"), t(LEASE + 1)))
        .await
        .unwrap();
    assert_eq!(event_ids(&second), vec![submitted.id.clone()]);
    assert_eq!(second[0].id, first[0].id);
    assert_eq!(second[0].lease_token, "lease_second");
    assert_eq!(second[0].previous_attempts, 0);

    // The first worker's late success: logged, but the delivery belongs to
    // the second lease.
    record(&store, &[ok(&first[0], t(LEASE + 2))]).await;
    let after_lost = delivery(&store, &endpoint.id, &first[0].id).await;
    assert_eq!(after_lost.status, DeliveryStatus::Pending);
    assert_eq!(after_lost.attempt_count, 0);
    assert_eq!(after_lost.last_status_code, None);
    assert_eq!(after_lost.attempts.len(), 1);
    assert_eq!(after_lost.attempts[0].status_code, Some(200));
    assert!(
        claim(&store, t(LEASE + 3)).await.is_empty(),
        "the second lease still holds"
    );

    record(
        &store,
        &[failed(
            &second[0],
            t(LEASE + 4),
            500,
            NextStep::RetryAt(t(LEASE + 5_000)),
        )],
    )
    .await;
    let after = delivery(&store, &endpoint.id, &first[0].id).await;
    assert_eq!(after.status, DeliveryStatus::Pending);
    assert_eq!(after.attempt_count, 1);
    assert_eq!(after.next_attempt_at, Some(t(LEASE + 5_000)));
    assert_eq!(after.last_status_code, Some(500));
    let logged: Vec<(i64, Option<i64>)> = after
        .attempts
        .iter()
        .map(|attempt| (attempt.attempt, attempt.status_code))
        .collect();
    assert_eq!(logged, [(1, Some(200)), (1, Some(500))]);
}

async fn a_retry_waits_for_its_time_a_dead_delivery_fails_and_a_manual_retry_requeues_it(
    backend: Backend,
) {
    let (_db, store) = open(backend).await;
    let site = site(&store).await;
    let endpoint = endpoint(&store, &site, false).await;
    let submitted = submit(&store, &site, T0).await;

    let claimed = claim(&store, T0).await;
    let id = claimed[0].id.clone();
    record(
        &store,
        &[failed(&claimed[0], t(10), 500, NextStep::RetryAt(t(5_000)))],
    )
    .await;
    let waiting = delivery(&store, &endpoint.id, &id).await;
    assert_eq!(waiting.status, DeliveryStatus::Pending);
    assert_eq!(waiting.attempt_count, 1);
    assert_eq!(waiting.next_attempt_at, Some(t(5_000)));
    assert_eq!(waiting.last_status_code, Some(500));
    assert_eq!(waiting.last_error.as_deref(), Some("http_status: HTTP 500"));
    assert_eq!(waiting.attempts.len(), 1);
    assert_eq!(waiting.attempts[0].attempt, 1);
    assert_eq!(waiting.attempts[0].started_at, t(10));
    assert_eq!(waiting.attempts[0].next_attempt_at, Some(t(5_000)));

    assert!(claim(&store, t(4_999)).await.is_empty());
    let claimed = claim(&store, t(5_000)).await;
    assert_eq!(event_ids(&claimed), vec![submitted.id.clone()]);
    assert_eq!(claimed[0].previous_attempts, 1);
    record(
        &store,
        &[failed(&claimed[0], t(5_010), 503, NextStep::Dead)],
    )
    .await;
    let dead = delivery(&store, &endpoint.id, &id).await;
    assert_eq!(dead.status, DeliveryStatus::Failed);
    assert_eq!(dead.attempt_count, 2);
    assert_eq!(dead.next_attempt_at, None);
    assert_eq!(dead.last_status_code, Some(503));

    // A dead delivery does not hold its lane; while the lane's next
    // delivery is in flight, the dead one cannot be retried.
    let later = review(&store, &site, &media_of(&submitted), t(6_000)).await;
    let in_flight = claim(&store, t(6_000)).await;
    assert_eq!(event_ids(&in_flight), vec![later.id.clone()]);
    let busy = store
        .retry_delivery(&endpoint.id, &id, t(6_001), None)
        .await
        .unwrap();
    assert!(matches!(busy, RetryOutcome::InFlight), "{busy:?}");
    let elsewhere = store
        .retry_delivery(&EndpointId::from("wh_elsewhere"), &id, t(6_001), None)
        .await
        .unwrap();
    assert!(matches!(elsewhere, RetryOutcome::NotFound), "{elsewhere:?}");
    record(&store, &[ok(&in_flight[0], t(6_010))]).await;

    let RetryOutcome::Queued(queued) = store
        .retry_delivery(&endpoint.id, &id, t(7_000), None)
        .await
        .unwrap()
    else {
        panic!("the retry was not queued");
    };
    assert_eq!(queued.id, id);
    assert_eq!(queued.status, DeliveryStatus::Pending);
    assert_eq!(queued.next_attempt_at, Some(t(7_000)));
    assert_eq!(queued.attempt_count, 2);
    assert_eq!(queued.attempts.len(), 2);
    let claimed = claim(&store, t(7_000)).await;
    assert_eq!(event_ids(&claimed), vec![submitted.id.clone()]);
    assert_eq!(claimed[0].previous_attempts, 2);
}

async fn released_leases_are_claimable_again_at_once(backend: Backend) {
    let (_db, store) = open(backend).await;
    let site = site(&store).await;
    let endpoint = endpoint(&store, &site, false).await;
    // `release_leases` takes no time: it makes the delivery due at the wall
    // clock's now, so this test runs on the wall clock.
    let now = Timestamp::now();
    let submitted = submit(&store, &site, now).await;
    let claimed = claim(&store, now).await;
    assert_eq!(event_ids(&claimed), vec![submitted.id.clone()]);
    let id = claimed[0].id.clone();

    // Only the lease holder's token releases it.
    store
        .release_leases(&[(id.clone(), LeaseToken::from("lease_other"))])
        .await
        .unwrap();
    // Claimed at the wall clock's now, after the release: a release that
    // took effect would have made it due by then.
    assert!(claim(&store, Timestamp::now()).await.is_empty());

    store
        .release_leases(&[(id.clone(), claimed[0].lease_token.clone())])
        .await
        .unwrap();
    // Long before the first lease would have run out.
    let again = claim(&store, Timestamp::now()).await;
    assert_eq!(event_ids(&again), vec![submitted.id.clone()]);
    assert_eq!(again[0].previous_attempts, 0);
    let released = delivery(&store, &endpoint.id, &id).await;
    assert_eq!(released.attempt_count, 0);
    assert!(released.attempts.is_empty());
}

/// Workers claiming at the same moment (several processes on one
/// PostgreSQL; on SQLite they queue for the one writer) never lease one
/// delivery twice, and what they leave is claimed afterwards: none is lost.
async fn workers_claiming_at_once_never_lease_one_delivery_twice(backend: Backend) {
    let (_db, store) = open(backend).await;
    let site = site(&store).await;
    for n in 0..4 {
        add_endpoint(&store, &site, &[EventType::MediaCreated], true, false, t(n)).await;
    }
    // 50 items to 4 endpoints: 200 deliveries, each the head of its lane.
    for n in 0..50 {
        submit(&store, &site, t(n)).await;
    }
    let now = t(1_000);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        workers.spawn(async move {
            let token = LeaseToken::generate();
            let request = ClaimRequest {
                limit: 20,
                ..request(&token, now)
            };
            store.claim_deliveries(request).await.unwrap()
        });
    }
    let mut leased = BTreeSet::new();
    while let Some(claimed) = workers.join_next().await {
        for delivery in claimed.unwrap() {
            assert!(
                leased.insert(delivery.id.clone()),
                "{} was leased twice",
                delivery.id
            );
        }
    }
    assert!(!leased.is_empty());
    // Whatever the workers left is still due: claimed afterwards, once.
    for _ in 0..5 {
        let left = claim(&store, now).await;
        if left.is_empty() {
            break;
        }
        for delivery in left {
            assert!(
                leased.insert(delivery.id.clone()),
                "{} was leased twice",
                delivery.id
            );
        }
    }
    assert_eq!(leased.len(), 200, "every delivery leased exactly once");
}

async fn claims_honour_the_limit_the_per_endpoint_cap_skipped_endpoints_and_endpoint_room(
    backend: Backend,
) {
    let (_db, store) = open(backend).await;
    let site = site(&store).await;
    let events = [EventType::MediaCreated];
    let a = add_endpoint(&store, &site, &events, true, false, T0).await;
    let b = add_endpoint(&store, &site, &events, true, false, t(1)).await;
    let e1 = submit(&store, &site, T0).await;
    let e2 = submit(&store, &site, t(1)).await;
    let e3 = submit(&store, &site, t(2)).await;
    let pair = |endpoint: &Endpoint, event: &NewEvent| (endpoint.id.clone(), event.id.clone());
    let token = LeaseToken::generate();
    let now = t(10);

    // Six lane heads are due (three items, two endpoints); the limit takes
    // the earliest.
    let claimed = store
        .claim_deliveries(ClaimRequest {
            limit: 1,
            ..request(&token, now)
        })
        .await
        .unwrap();
    assert_eq!(pairs(&claimed), [pair(&a, &e1)]);
    record(&store, &[ok(&claimed[0], now)]).await;

    let claimed = store
        .claim_deliveries(ClaimRequest {
            max_per_endpoint: 1,
            ..request(&token, now)
        })
        .await
        .unwrap();
    assert_eq!(pairs(&claimed), [pair(&b, &e1), pair(&a, &e2)]);
    let records: Vec<AttemptRecord> = claimed.iter().map(|delivery| ok(delivery, now)).collect();
    record(&store, &records).await;

    let skip = [b.id.clone()];
    let claimed = store
        .claim_deliveries(ClaimRequest {
            skip_endpoints: &skip,
            ..request(&token, now)
        })
        .await
        .unwrap();
    assert_eq!(pairs(&claimed), [pair(&a, &e3)]);
    record(&store, &[ok(&claimed[0], now)]).await;

    // Room for one more at b (it has attempts in flight elsewhere), then none.
    let room = [(b.id.clone(), 1_i64)];
    let claimed = store
        .claim_deliveries(ClaimRequest {
            endpoint_room: &room,
            ..request(&token, now)
        })
        .await
        .unwrap();
    assert_eq!(pairs(&claimed), [pair(&b, &e2)]);
    record(&store, &[ok(&claimed[0], now)]).await;
    let full = [(b.id.clone(), 0_i64)];
    let claimed = store
        .claim_deliveries(ClaimRequest {
            endpoint_room: &full,
            ..request(&token, now)
        })
        .await
        .unwrap();
    assert!(claimed.is_empty());

    assert_eq!(pairs(&claim(&store, now).await), [pair(&b, &e3)]);
}

async fn an_inactive_endpoint_is_not_claimed_and_reactivating_it_makes_its_backlog_due_now(
    backend: Backend,
) {
    let (_db, store) = open(backend).await;
    let site = site(&store).await;
    let endpoint = endpoint(&store, &site, false).await;
    let submitted = submit(&store, &site, T0).await;
    let claimed = claim(&store, T0).await;
    let id = claimed[0].id.clone();
    record(
        &store,
        &[failed(&claimed[0], t(10), 500, NextStep::RetryAt(t(HOUR)))],
    )
    .await;

    let mut off = endpoint.clone();
    off.active = false;
    off.updated_at = t(20);
    assert!(
        store
            .update_endpoint(&off, true, t(20), None)
            .await
            .unwrap()
    );
    assert!(!get_endpoint(&store, &endpoint).await.active);
    // An inactive endpoint gets no new deliveries, and its backlog waits.
    submit(&store, &site, t(30)).await;
    assert_eq!(deliveries(&store, &endpoint.id).await.len(), 1);
    assert!(claim(&store, t(HOUR)).await.is_empty());

    // An edit that does not set `active` leaves it off.
    let mut edited = endpoint.clone();
    edited.active = true;
    edited.description = Some("edited".into());
    assert!(
        store
            .update_endpoint(&edited, false, t(40), None)
            .await
            .unwrap()
    );
    let stored = get_endpoint(&store, &endpoint).await;
    assert!(!stored.active);
    assert_eq!(stored.description.as_deref(), Some("edited"));
    assert!(claim(&store, t(HOUR)).await.is_empty());

    // Turned back on, its pending deliveries are due at once.
    assert!(
        store
            .update_endpoint(&edited, true, t(100), None)
            .await
            .unwrap()
    );
    assert!(get_endpoint(&store, &endpoint).await.active);
    assert_eq!(
        delivery(&store, &endpoint.id, &id).await.next_attempt_at,
        Some(t(100))
    );
    let claimed = claim(&store, t(100)).await;
    assert_eq!(event_ids(&claimed), vec![submitted.id.clone()]);
    assert_eq!(claimed[0].previous_attempts, 1);
}

/// Folds the run given by `statuses` (one attempt each 10 ms from `t(10)`)
/// into `at_once` in one call and into `one_by_one` an attempt per call;
/// returns the changes each reported.
async fn fold_both_ways(
    store: &DynStore,
    at_once: &Endpoint,
    one_by_one: &Endpoint,
    statuses: &[i64],
) -> (Vec<(HealthChangeKind, i64)>, Vec<(HealthChangeKind, i64)>) {
    let run = |endpoint: &Endpoint| -> Vec<AttemptRecord> {
        statuses
            .iter()
            .enumerate()
            .map(|(index, status)| attempt_on(&endpoint.id, t(10 * (index as i64 + 1)), *status))
            .collect()
    };
    let folded = kinds(&fold(store, &run(at_once), &policy()).await);
    let mut stepped = Vec::new();
    for attempt in run(one_by_one) {
        stepped.extend(kinds(
            &fold(store, std::slice::from_ref(&attempt), &policy()).await,
        ));
    }
    (folded, stepped)
}

async fn a_run_folded_at_once_ends_where_it_ends_folded_attempt_by_attempt(backend: Backend) {
    use HealthChangeKind::{Failing, Recovered};
    let (_db, store) = open(backend).await;
    let site = site(&store).await;
    let a = endpoint(&store, &site, false).await;
    let b = endpoint(&store, &site, false).await;

    let (at_once, one_by_one) = fold_both_ways(&store, &a, &b, &[500, 500, 500]).await;
    assert_eq!(at_once, [(Failing, 3)]);
    assert_eq!(one_by_one, [(Failing, 3)]);
    let expected: Health = (
        3,
        Some(t(10)),
        None,
        Some(t(30)),
        Some("http_status".to_string()),
        Some(500),
    );
    assert_eq!(health(&get_endpoint(&store, &a).await), expected);
    assert_eq!(health(&get_endpoint(&store, &b).await), expected);

    let recovered = fold(&store, &[attempt_on(&a.id, t(40), 200)], &policy()).await;
    assert_eq!(kinds(&recovered), [(Recovered, 0)]);
    assert_eq!(recovered[0].endpoint_id, a.id);
    assert_eq!(recovered[0].site_id, site.id);
    assert_eq!(recovered[0].url, a.url);
    assert_eq!(
        recovered[0].last_failure.as_ref().map(|failure| failure.at),
        Some(t(30))
    );
    assert_eq!(
        health(&get_endpoint(&store, &a).await),
        (
            0,
            None,
            Some(t(40)),
            Some(t(30)),
            Some("http_status".to_string()),
            Some(500)
        )
    );
    // Healthy and succeeding: nothing to report.
    assert!(
        fold(&store, &[attempt_on(&a.id, t(50), 200)], &policy())
            .await
            .is_empty()
    );

    // Failing, recovered and failing again within one run.
    let c = endpoint(&store, &site, false).await;
    let d = endpoint(&store, &site, false).await;
    let (at_once, one_by_one) = fold_both_ways(&store, &c, &d, &[500, 500, 500, 200, 500]).await;
    assert_eq!(at_once, [(Failing, 3), (Recovered, 0)]);
    assert_eq!(one_by_one, at_once);
    let expected: Health = (
        1,
        Some(t(50)),
        Some(t(40)),
        Some(t(50)),
        Some("http_status".to_string()),
        Some(500),
    );
    assert_eq!(health(&get_endpoint(&store, &c).await), expected);
    assert_eq!(health(&get_endpoint(&store, &d).await), expected);
}

async fn a_410_gone_disables_the_endpoint_and_reactivation_starts_its_health_afresh(
    backend: Backend,
) {
    let (_db, store) = open(backend).await;
    let site = site(&store).await;
    let endpoint = endpoint(&store, &site, false).await;
    submit(&store, &site, T0).await;
    let claimed = claim(&store, T0).await;
    let gone = failed(&claimed[0], t(10), 410, NextStep::Dead);
    record(&store, std::slice::from_ref(&gone)).await;
    let waiting = submit(&store, &site, t(20)).await;

    let changes = fold(&store, std::slice::from_ref(&gone), &policy()).await;
    assert_eq!(kinds(&changes), [(HealthChangeKind::Disabled, 1)]);
    let reason = "the receiver answered 410 Gone";
    assert_eq!(changes[0].endpoint_id, endpoint.id);
    assert_eq!(changes[0].reason.as_deref(), Some(reason));
    // The time of the fold: when its last attempt finished.
    assert_eq!(changes[0].at, t(11));
    let disabled = get_endpoint(&store, &endpoint).await;
    assert!(!disabled.active);
    assert_eq!(disabled.disabled_reason.as_deref(), Some(reason));
    assert_eq!(disabled.disabled_at, Some(t(11)));
    assert_eq!(disabled.health.consecutive_failures, 1);
    assert_eq!(disabled.health.last_failure_status, Some(410));

    // Its pending deliveries stay, unclaimed.
    assert!(claim(&store, t(30)).await.is_empty());
    let pending = DeliveryFilter {
        status: Some(DeliveryStatus::Pending),
        limit: 100,
        ..DeliveryFilter::default()
    };
    assert_eq!(
        store
            .list_deliveries(&endpoint.id, &pending)
            .await
            .unwrap()
            .len(),
        1
    );

    let mut on = disabled.clone();
    on.active = true;
    assert!(store.update_endpoint(&on, true, t(40), None).await.unwrap());
    let enabled = get_endpoint(&store, &endpoint).await;
    assert!(enabled.active);
    assert_eq!(enabled.disabled_reason, None);
    assert_eq!(enabled.disabled_at, None);
    assert_eq!(enabled.health.consecutive_failures, 0);
    assert_eq!(enabled.health.failing_since, None);
    assert_eq!(
        event_ids(&claim(&store, t(40)).await),
        vec![waiting.id.clone()]
    );
}

async fn health_changes_write_their_alerts_to_the_alert_endpoint(backend: Backend) {
    let (_db, store) = open(backend).await;
    let site = site(&store).await;
    let endpoint = endpoint(&store, &site, false).await;
    store
        .configure_alert_endpoint(Some((ALERT_URL, ALERT_SECRET)), T0)
        .await
        .unwrap();
    let alerting = HealthPolicy {
        alert_endpoint_id: Some(ALERT_ENDPOINT_ID.into()),
        alert_first_delay_ms: 250,
        ..policy()
    };

    let failures: Vec<AttemptRecord> = [t(10), t(20), t(30)]
        .into_iter()
        .map(|at| attempt_on(&endpoint.id, at, 500))
        .collect();
    let changes = fold(&store, &failures, &alerting).await;
    assert_eq!(kinds(&changes), [(HealthChangeKind::Failing, 3)]);
    let alerts = deliveries(&store, &alert_endpoint_id()).await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].event, "endpoint.failing");
    assert_eq!(alerts[0].site_id, OPERATOR_SITE_ID);
    // Alerts about one endpoint are one lane.
    assert_eq!(alerts[0].media_id, endpoint.id);
    assert_eq!(alerts[0].status, DeliveryStatus::Pending);
    assert_eq!(alerts[0].next_attempt_at, Some(t(31 + 250)));

    assert!(claim(&store, t(280)).await.is_empty());
    let claimed = claim(&store, t(281)).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].endpoint_id, ALERT_ENDPOINT_ID);
    assert_eq!(claimed[0].url, ALERT_URL);
    assert_eq!(claimed[0].secret, ALERT_SECRET);
    let payload: Value = serde_json::from_str(&claimed[0].payload).unwrap();
    assert_eq!(payload["event"], "endpoint.failing");
    assert_eq!(payload["data"]["webhook_id"], endpoint.id.as_str());
    assert_eq!(payload["data"]["state"], "failing");
    assert_eq!(payload["data"]["consecutive_failures"], 3);
    record(&store, &[ok(&claimed[0], t(290))]).await;

    let changes = fold(&store, &[attempt_on(&endpoint.id, t(40), 200)], &alerting).await;
    assert_eq!(kinds(&changes), [(HealthChangeKind::Recovered, 0)]);
    let alerts = deliveries(&store, &alert_endpoint_id()).await;
    let logged: Vec<(&str, DeliveryStatus)> = alerts
        .iter()
        .map(|alert| (alert.event.as_str(), alert.status))
        .collect();
    assert_eq!(
        logged,
        [
            ("endpoint.recovered", DeliveryStatus::Pending),
            ("endpoint.failing", DeliveryStatus::Succeeded)
        ]
    );

    // The alert endpoint is never alerted about, though its streak is kept.
    let own: Vec<AttemptRecord> = [t(50), t(60), t(70)]
        .into_iter()
        .map(|at| attempt_on(&alert_endpoint_id(), at, 500))
        .collect();
    assert!(fold(&store, &own, &alerting).await.is_empty());
    assert_eq!(deliveries(&store, &alert_endpoint_id()).await.len(), 2);
    let alert_endpoint = store
        .get_endpoint(&SiteId::from(OPERATOR_SITE_ID), &alert_endpoint_id())
        .await
        .unwrap()
        .expect("the alert endpoint");
    assert_eq!(alert_endpoint.health.consecutive_failures, 3);

    // Alerts turned off: the endpoint is off and its undelivered alerts go.
    store.configure_alert_endpoint(None, t(100)).await.unwrap();
    let alerts = deliveries(&store, &alert_endpoint_id()).await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].event, "endpoint.failing");
    let other = self::endpoint(&store, &site, false).await;
    let failures: Vec<AttemptRecord> = [t(110), t(120), t(130)]
        .into_iter()
        .map(|at| attempt_on(&other.id, at, 500))
        .collect();
    let changes = fold(&store, &failures, &alerting).await;
    assert_eq!(kinds(&changes), [(HealthChangeKind::Failing, 3)]);
    assert_eq!(deliveries(&store, &alert_endpoint_id()).await.len(), 1);
}

async fn an_endpoint_failing_long_enough_with_enough_dead_deliveries_is_disabled(backend: Backend) {
    let (_db, store) = open(backend).await;
    let site = site(&store).await;
    let events = [EventType::MediaCreated];
    let dying = add_endpoint(&store, &site, &events, true, false, T0).await;
    let limping = add_endpoint(&store, &site, &events, true, false, t(1)).await;
    let first = submit(&store, &site, T0).await;
    submit(&store, &site, t(1)).await;

    // `dying`: both deliveries dead. `limping`: one dead, one to be retried.
    let claimed = claim(&store, t(5)).await;
    assert_eq!(claimed.len(), 4);
    let records: Vec<AttemptRecord> = claimed
        .iter()
        .map(|delivery| {
            let at = if delivery.event_id == first.id {
                t(10)
            } else {
                t(20)
            };
            let next = if delivery.endpoint_id == limping.id && delivery.event_id != first.id {
                NextStep::RetryAt(t(DAY))
            } else {
                NextStep::Dead
            };
            failed(delivery, at, 500, next)
        })
        .collect();
    record(&store, &records).await;
    assert!(fold(&store, &records, &policy()).await.is_empty());
    assert_eq!(
        get_endpoint(&store, &dying).await.health.failing_since,
        Some(t(10))
    );
    assert_eq!(
        get_endpoint(&store, &limping).await.health.failing_since,
        Some(t(10))
    );
    let waiting = submit(&store, &site, t(30)).await;

    let now = t(10 + HOUR);
    // Failing since after the bound: kept.
    let changes = store
        .disable_failing_endpoints(now, t(9), 2, &policy())
        .await
        .unwrap();
    assert!(changes.is_empty());

    let changes = store
        .disable_failing_endpoints(now, t(10), 2, &policy())
        .await
        .unwrap();
    let reason = "every delivery failed for 1h with 2 or more dead deliveries";
    assert_eq!(kinds(&changes), [(HealthChangeKind::Disabled, 2)]);
    assert_eq!(changes[0].endpoint_id, dying.id);
    assert_eq!(changes[0].reason.as_deref(), Some(reason));
    assert_eq!(changes[0].at, now);
    let disabled = get_endpoint(&store, &dying).await;
    assert!(!disabled.active);
    assert_eq!(disabled.disabled_reason.as_deref(), Some(reason));
    assert_eq!(disabled.disabled_at, Some(now));
    assert!(get_endpoint(&store, &limping).await.active);

    // Its pending delivery stays for recovery; the other endpoint's goes on.
    let pending = DeliveryFilter {
        status: Some(DeliveryStatus::Pending),
        limit: 100,
        ..DeliveryFilter::default()
    };
    let kept = store.list_deliveries(&dying.id, &pending).await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].event_id, waiting.id);
    assert_eq!(
        pairs(&claim(&store, now).await),
        [(limping.id.clone(), waiting.id.clone())]
    );
    assert!(
        store
            .disable_failing_endpoints(now, t(10), 2, &policy())
            .await
            .unwrap()
            .is_empty()
    );
}

async fn recover_requeues_dead_deliveries_in_lane_order_and_skips_lanes_in_flight(
    backend: Backend,
) {
    let (_db, store) = open(backend).await;
    let site = site(&store).await;
    let endpoint = endpoint(&store, &site, false).await;
    let before = submit(&store, &site, t(-10_000)).await;
    let one = submit(&store, &site, T0).await;
    let one_reviewed = review(&store, &site, &media_of(&one), t(1)).await;
    let two = submit(&store, &site, t(2)).await;
    assert_eq!(fail_all(&store, t(100)).await, 4);

    // The second item's lane has a delivery in flight.
    let two_reviewed = review(&store, &site, &media_of(&two), t(200)).await;
    let in_flight = claim(&store, t(200)).await;
    assert_eq!(event_ids(&in_flight), vec![two_reviewed.id.clone()]);

    let outcome = store
        .recover_deliveries(&endpoint.id, T0, None, t(300), None)
        .await
        .unwrap();
    assert_eq!((outcome.requeued, outcome.skipped_in_flight), (2, 1));
    // The lane replays in its original order.
    let claimed = claim(&store, t(300)).await;
    assert_eq!(event_ids(&claimed), vec![one.id.clone()]);
    assert_eq!(claimed[0].previous_attempts, 1);
    record(&store, &[ok(&claimed[0], t(301))]).await;
    let claimed = claim(&store, t(302)).await;
    assert_eq!(event_ids(&claimed), vec![one_reviewed.id.clone()]);
    record(&store, &[ok(&claimed[0], t(303))]).await;

    // The lane is free again: asking again takes what was skipped.
    record(&store, &[ok(&in_flight[0], t(310))]).await;
    let outcome = store
        .recover_deliveries(&endpoint.id, T0, None, t(400), None)
        .await
        .unwrap();
    assert_eq!((outcome.requeued, outcome.skipped_in_flight), (1, 0));
    assert_eq!(
        event_ids(&claim(&store, t(400)).await),
        vec![two.id.clone()]
    );

    // The window's end is exclusive; what was before it is still dead.
    let outcome = store
        .recover_deliveries(&endpoint.id, t(-20_000), Some(T0), t(500), None)
        .await
        .unwrap();
    assert_eq!((outcome.requeued, outcome.skipped_in_flight), (1, 0));
    assert_eq!(
        event_ids(&claim(&store, t(500)).await),
        vec![before.id.clone()]
    );
    let outcome = store
        .recover_deliveries(&endpoint.id, t(-20_000), None, t(600), None)
        .await
        .unwrap();
    assert_eq!((outcome.requeued, outcome.skipped_in_flight), (0, 0));
}

async fn purge_removes_old_finished_data_in_batches_and_never_pending_or_recent_data(
    backend: Backend,
) {
    let (_db, store) = open(backend).await;
    let site = site(&store).await;
    let endpoint = endpoint(&store, &site, false).await;
    let cutoff = t(DAY);

    // Old and delivered (twice), old and still pending after an old
    // attempt, old but delivered after the cutoff, and new.
    let mut delivered = Vec::new();
    for at in [T0, t(1_000)] {
        let old = submit(&store, &site, at).await;
        let claimed = claim(&store, at).await;
        assert_eq!(event_ids(&claimed), vec![old.id.clone()]);
        record(&store, &[ok(&claimed[0], at.plus_ms(10))]).await;
        delivered.push(claimed[0].id.clone());
    }
    let pending = submit(&store, &site, t(2_000)).await;
    let claimed = claim(&store, t(2_000)).await;
    assert_eq!(event_ids(&claimed), vec![pending.id.clone()]);
    record(
        &store,
        &[failed(
            &claimed[0],
            t(2_010),
            500,
            NextStep::RetryAt(cutoff.plus_ms(DAY)),
        )],
    )
    .await;
    let pending_delivery = claimed[0].id.clone();
    let late = submit_with(&store, &site, t(3_000), cutoff.plus_ms(10), false).await;
    let claimed = claim(&store, cutoff.plus_ms(10)).await;
    assert_eq!(event_ids(&claimed), vec![late.id.clone()]);
    record(&store, &[ok(&claimed[0], cutoff.plus_ms(10))]).await;
    let late_delivery = claimed[0].id.clone();
    let new = submit(&store, &site, cutoff.plus_ms(100)).await;
    let claimed = claim(&store, cutoff.plus_ms(100)).await;
    assert_eq!(event_ids(&claimed), vec![new.id.clone()]);
    record(&store, &[ok(&claimed[0], cutoff.plus_ms(110))]).await;
    let new_delivery = claimed[0].id.clone();

    // Oldest first, `batch` of each at a time.
    for _ in 0..2 {
        let purged = store.purge_step(cutoff, 1).await.unwrap();
        assert_eq!((purged.attempts, purged.events), (1, 1));
    }
    let purged = store.purge_step(cutoff, 100).await.unwrap();
    assert_eq!((purged.attempts, purged.events), (0, 0));

    let kept: BTreeSet<EventId> = store
        .list_events(&site.id, &all_events())
        .await
        .unwrap()
        .into_iter()
        .map(|event| event.id)
        .collect();
    assert_eq!(kept, BTreeSet::from([pending.id, late.id, new.id]));
    for id in &delivered {
        assert!(
            store
                .get_delivery(&endpoint.id, id)
                .await
                .unwrap()
                .is_none()
        );
    }
    for id in [&pending_delivery, &late_delivery, &new_delivery] {
        assert_eq!(
            delivery(&store, &endpoint.id, id).await.attempts.len(),
            1,
            "{id}"
        );
    }
}

async fn every_lookup_is_scoped_to_its_site_or_endpoint_and_deleting_a_site_cascades(
    backend: Backend,
) {
    let (_db, store) = open(backend).await;
    let site = site(&store).await;
    let other_site = self::site(&store).await;
    let first = add_endpoint(&store, &site, &[EventType::MediaCreated], true, false, T0).await;
    let second = add_endpoint(
        &store,
        &site,
        &[EventType::MediaModerated],
        true,
        false,
        t(1),
    )
    .await;
    let foreign = add_endpoint(
        &store,
        &other_site,
        &[EventType::MediaCreated],
        true,
        false,
        T0,
    )
    .await;
    let submitted = submit(&store, &site, T0).await;
    let delivery_id = deliveries(&store, &first.id).await[0].id.clone();

    assert!(
        store
            .get_endpoint(&other_site.id, &first.id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(get_endpoint(&store, &first).await.id, first.id);
    let listed: Vec<EndpointId> = store
        .list_endpoints(&site.id)
        .await
        .unwrap()
        .into_iter()
        .map(|endpoint| endpoint.id)
        .collect();
    assert_eq!(listed, [first.id.clone(), second.id.clone()]);
    assert!(
        store
            .get_delivery(&foreign.id, &delivery_id)
            .await
            .unwrap()
            .is_none()
    );
    let elsewhere = store
        .retry_delivery(&foreign.id, &delivery_id, t(1), None)
        .await
        .unwrap();
    assert!(matches!(elsewhere, RetryOutcome::NotFound), "{elsewhere:?}");
    let mut moved = first.clone();
    moved.site_id = other_site.id.clone();
    moved.description = Some("moved".into());
    assert!(
        !store
            .update_endpoint(&moved, true, t(1), None)
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_endpoint(&other_site.id, &first.id, None)
            .await
            .unwrap()
    );
    assert_eq!(get_endpoint(&store, &first).await.description, None);

    let resent = store
        .resend_event(&other_site.id, &submitted.id, None, t(100))
        .await
        .unwrap();
    assert!(matches!(resent, ResendOutcome::EventNotFound), "{resent:?}");
    let resent = store
        .resend_event(&site.id, &submitted.id, Some(&foreign.id), t(100))
        .await
        .unwrap();
    assert!(
        matches!(resent, ResendOutcome::EndpointNotFound),
        "{resent:?}"
    );
    // To every subscribed endpoint of the site, or to the one named
    // whatever it subscribes to.
    let ResendOutcome::Queued(ids) = store
        .resend_event(&site.id, &submitted.id, None, t(100))
        .await
        .unwrap()
    else {
        panic!("the resend was not queued");
    };
    let log = deliveries(&store, &first.id).await;
    assert_eq!(ids, [log[0].id.clone()]);
    assert_eq!(log[0].event_id, submitted.id);
    assert_eq!(log[0].created_at, t(100));
    assert_eq!(log[0].status, DeliveryStatus::Pending);
    let ResendOutcome::Queued(ids) = store
        .resend_event(&site.id, &submitted.id, Some(&second.id), t(200))
        .await
        .unwrap()
    else {
        panic!("the resend to the named endpoint was not queued");
    };
    assert_eq!(ids, [deliveries(&store, &second.id).await[0].id.clone()]);

    assert!(store.delete_site(&site.id).await.unwrap());
    assert!(!store.delete_site(&site.id).await.unwrap());
    assert!(store.get_site(&site.id).await.unwrap().is_none());
    assert!(
        store
            .get_endpoint(&site.id, &first.id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.list_endpoints(&site.id).await.unwrap().is_empty());
    assert!(
        store
            .get_delivery(&first.id, &delivery_id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(deliveries(&store, &first.id).await.is_empty());
    assert!(deliveries(&store, &second.id).await.is_empty());
    assert!(
        store
            .list_events(&site.id, &all_events())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .get_media(&media_of(&submitted))
            .await
            .unwrap()
            .is_none()
    );
    assert!(claim(&store, t(1_000)).await.is_empty());
    assert_eq!(get_endpoint(&store, &foreign).await.id, foreign.id);
}

fn moderated_events_of(events: &[EventSummary], media_id: &str) -> usize {
    events
        .iter()
        .filter(|event| event.event == "media.moderated" && event.media_id == media_id)
        .count()
}

async fn a_moderation_job_is_leased_once_and_only_its_lease_holder_decides(backend: Backend) {
    let (_db, store) = open(backend).await;
    let site = site(&store).await;
    endpoint(&store, &site, false).await;
    submit(&store, &site, T0).await;
    let analyzed = submit_with(&store, &site, T0, T0, true).await;
    let media_id = media_of(&analyzed);

    let first = store
        .claim_moderation_jobs(&LeaseToken::from("mod_first"), t(1), t(1 + LEASE), 10)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].media.id, media_id);
    assert_eq!(first[0].lease_token, "mod_first");
    assert_eq!(first[0].attempts, 1);
    assert_eq!(first[0].requested_at, T0);
    assert!(
        store
            .claim_moderation_jobs(&LeaseToken::from("mod_x"), t(2), t(2 + LEASE), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .claim_moderation_jobs(
                &LeaseToken::from("mod_x"),
                t(1 + LEASE),
                t(1 + 2 * LEASE),
                10
            )
            .await
            .unwrap()
            .is_empty()
    );

    // The lease ran out and another worker took the job.
    let now = t(2 + LEASE);
    let second = store
        .claim_moderation_jobs(&LeaseToken::from("mod_second"), now, now.plus_ms(LEASE), 10)
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].attempts, 2);
    let moderated = event(&site.id, EventType::MediaModerated, &media_id, now, now);
    let lost = store
        .decide_media(
            &media_id,
            &automatic(Verdict::Rejected, now),
            &moderated,
            Some(&first[0]),
            None,
        )
        .await
        .unwrap();
    assert!(matches!(lost, DecideOutcome::LeaseLost), "{lost:?}");
    assert_eq!(
        store.get_media(&media_id).await.unwrap().unwrap().status,
        MediaStatus::Pending
    );

    let moderated = event(
        &site.id,
        EventType::MediaModerated,
        &media_id,
        now.plus_ms(1),
        now.plus_ms(1),
    );
    let DecideOutcome::Decided(decided) = store
        .decide_media(
            &media_id,
            &automatic(Verdict::Approved, now.plus_ms(1)),
            &moderated,
            Some(&second[0]),
            None,
        )
        .await
        .unwrap()
    else {
        panic!("the lease holder's decision was not stored");
    };
    assert_eq!(decided.status, MediaStatus::Approved);
    assert_eq!(decided.decided_by, Some(DecidedBy::Automatic));
    assert_eq!(decided.processing_ms, Some(42));
    assert_eq!(decided.moderated_at, Some(now.plus_ms(1)));
    let events = store.list_events(&site.id, &all_events()).await.unwrap();
    assert_eq!(moderated_events_of(&events, media_id.as_str()), 1);
    // The job is gone.
    let later = now.plus_ms(10 * LEASE);
    assert!(
        store
            .claim_moderation_jobs(&LeaseToken::from("mod_x"), later, later.plus_ms(LEASE), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Re-moderation asked for while a job is leased: that lease's result is dropped.
    let t1 = later.plus_ms(1_000);
    let again = submit_with(&store, &site, t1, t1, true).await;
    let leased = store
        .claim_moderation_jobs(&LeaseToken::from("mod_third"), t1, t1.plus_ms(LEASE), 10)
        .await
        .unwrap();
    assert_eq!(leased.len(), 1);
    store
        .enqueue_moderation(&media_of(&again), t1.plus_ms(5), None)
        .await
        .unwrap();
    let moderated = event(
        &site.id,
        EventType::MediaModerated,
        &media_of(&again),
        t1.plus_ms(6),
        t1.plus_ms(6),
    );
    let lost = store
        .decide_media(
            &media_of(&again),
            &automatic(Verdict::Approved, t1.plus_ms(6)),
            &moderated,
            Some(&leased[0]),
            None,
        )
        .await
        .unwrap();
    assert!(matches!(lost, DecideOutcome::LeaseLost), "{lost:?}");
    let requeued = store
        .claim_moderation_jobs(
            &LeaseToken::from("mod_fourth"),
            t1.plus_ms(7),
            t1.plus_ms(7 + LEASE),
            10,
        )
        .await
        .unwrap();
    assert_eq!(requeued.len(), 1);
    assert_eq!(requeued[0].media.id, again.media_id);
    assert_eq!(requeued[0].attempts, 1);
    assert_eq!(requeued[0].requested_at, t1.plus_ms(5));

    let unknown = event(&site.id, EventType::MediaModerated, "media_unknown", t1, t1);
    let outcome = store
        .decide_media(
            &MediaId::from("media_unknown"),
            &manual(Verdict::Approved, t1),
            &unknown,
            None,
            None,
        )
        .await
        .unwrap();
    assert!(matches!(outcome, DecideOutcome::NotFound), "{outcome:?}");
}

async fn a_manual_decision_is_never_replaced_by_an_automatic_one(backend: Backend) {
    let (_db, store) = open(backend).await;
    let site = site(&store).await;
    endpoint(&store, &site, false).await;
    let analyzed = submit_with(&store, &site, T0, T0, true).await;
    let media_id = media_of(&analyzed);
    let job = store
        .claim_moderation_jobs(&LeaseToken::from("mod_first"), T0, t(LEASE), 10)
        .await
        .unwrap();
    assert_eq!(job.len(), 1);

    let moderated = event(&site.id, EventType::MediaModerated, &media_id, t(1), t(1));
    let DecideOutcome::Decided(decided) = store
        .decide_media(
            &media_id,
            &manual(Verdict::Rejected, t(1)),
            &moderated,
            None,
            None,
        )
        .await
        .unwrap()
    else {
        panic!("the manual decision was not stored");
    };
    assert_eq!(decided.status, MediaStatus::Rejected);
    assert_eq!(decided.decided_by, Some(DecidedBy::Person));
    assert_eq!(
        decided.reviewer,
        Some(reviewer()),
        "the person who decided is kept"
    );
    assert_eq!(decided.review_note.as_deref(), Some("checked by hand"));

    // The manual decision removed the job, so the running analysis has lost it.
    let moderated = event(&site.id, EventType::MediaModerated, &media_id, t(2), t(2));
    let outcome = store
        .decide_media(
            &media_id,
            &automatic(Verdict::Approved, t(2)),
            &moderated,
            Some(&job[0]),
            None,
        )
        .await
        .unwrap();
    assert!(matches!(outcome, DecideOutcome::LeaseLost), "{outcome:?}");

    // Analysis queued again after it: its result is not stored, its job is done.
    store
        .enqueue_moderation(&media_id, t(10), None)
        .await
        .unwrap();
    let job = store
        .claim_moderation_jobs(&LeaseToken::from("mod_second"), t(10), t(10 + LEASE), 10)
        .await
        .unwrap();
    assert_eq!(job.len(), 1);
    let moderated = event(&site.id, EventType::MediaModerated, &media_id, t(11), t(11));
    let outcome = store
        .decide_media(
            &media_id,
            &automatic(Verdict::Approved, t(11)),
            &moderated,
            Some(&job[0]),
            None,
        )
        .await
        .unwrap();
    assert!(
        matches!(outcome, DecideOutcome::ManuallyReviewed),
        "{outcome:?}"
    );
    let later = t(10 * LEASE);
    assert!(
        store
            .claim_moderation_jobs(&LeaseToken::from("mod_x"), later, later.plus_ms(LEASE), 10)
            .await
            .unwrap()
            .is_empty()
    );

    let stored = store.get_media(&media_id).await.unwrap().unwrap();
    assert_eq!(stored.status, MediaStatus::Rejected);
    assert_eq!(stored.decided_by, Some(DecidedBy::Person));
    assert_eq!(
        stored.reviewer,
        Some(reviewer()),
        "an automatic result does not erase the reviewer"
    );
    assert_eq!(stored.moderated_at, Some(t(1)));
    let events = store.list_events(&site.id, &all_events()).await.unwrap();
    assert_eq!(moderated_events_of(&events, media_id.as_str()), 1);
}

async fn a_test_delivery_is_written_already_leased(backend: Backend) {
    let (_db, store) = open(backend).await;
    let site = site(&store).await;
    // Not subscribed to test.webhook: a test goes to the endpoint named.
    let endpoint = endpoint(&store, &site, false).await;
    let test = event(&site.id, EventType::TestWebhook, &new_id("test"), T0, T0);
    let delivery_id = DeliveryId::generate();

    let claimed = store
        .create_leased_delivery(
            &endpoint,
            &test,
            &delivery_id,
            &LeaseToken::from("lease_test"),
            t(LEASE),
        )
        .await
        .unwrap();
    assert_eq!(claimed.id, delivery_id);
    assert_eq!(claimed.lease_token, "lease_test");
    assert_eq!(claimed.event_id, test.id);
    assert_eq!(claimed.event_type, "test.webhook");
    assert_eq!(claimed.endpoint_id, endpoint.id);
    assert_eq!(claimed.url, endpoint.url);
    assert_eq!(claimed.secret, endpoint.secret);
    assert_eq!(claimed.payload, test.payload);
    assert_eq!(claimed.event_created_at, T0);
    assert_eq!(claimed.previous_attempts, 0);
    assert!(claim(&store, t(1)).await.is_empty());

    record(&store, &[ok(&claimed, t(2))]).await;
    let sent = delivery(&store, &endpoint.id, &delivery_id).await;
    assert_eq!(sent.status, DeliveryStatus::Succeeded);
    assert_eq!(sent.attempt_count, 1);
    assert_eq!(sent.event, "test.webhook");
    let events = store.list_events(&site.id, &all_events()).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, "test.webhook");
}

async fn queue_figures_count_pending_in_flight_and_recent_attempts(backend: Backend) {
    let (_db, store) = open(backend).await;
    let site = site(&store).await;
    let endpoint = endpoint(&store, &site, false).await;
    submit(&store, &site, T0).await;
    let later = submit(&store, &site, t(5)).await;
    assert_eq!(store.queue_stats().await.unwrap(), (2, Some(T0)));

    let claimed = claim(&store, t(10)).await;
    assert_eq!(claimed.len(), 2);
    let figures = store.endpoint_health(&endpoint.id, t(10)).await.unwrap();
    assert_eq!(
        (
            figures.pending,
            figures.in_flight,
            figures.oldest_pending_at
        ),
        (2, 2, Some(T0))
    );

    let retried = if claimed[0].event_id == later.id {
        &claimed[0]
    } else {
        &claimed[1]
    };
    let delivered = if claimed[0].event_id == later.id {
        &claimed[1]
    } else {
        &claimed[0]
    };
    let mut failure = failed(retried, t(30), 500, NextStep::RetryAt(t(HOUR)));
    failure.duration_ms = 3;
    record(&store, &[ok(delivered, t(20)), failure]).await;

    let figures = store.endpoint_health(&endpoint.id, t(100)).await.unwrap();
    assert_eq!(
        (
            figures.pending,
            figures.in_flight,
            figures.oldest_pending_at
        ),
        (1, 0, Some(t(5)))
    );
    for window in [&figures.last_hour, &figures.last_day] {
        assert_eq!((window.attempts, window.successes), (2, 1));
        assert_eq!(window.success_rate, Some(0.5));
        assert_eq!(window.avg_response_ms, Some(2.0));
        assert_eq!(window.p95_response_ms, Some(3));
    }
    // Per hour: both attempts fell in the hour that began before T0.
    let hour_start = Timestamp::from_millis(T0.millis() / HOUR * HOUR);
    assert_eq!(
        store
            .attempts_per_hour(&endpoint.id, t(-DAY))
            .await
            .unwrap(),
        [(hour_start, 2, 1)]
    );
    assert!(
        store
            .attempts_per_hour(&endpoint.id, t(31))
            .await
            .unwrap()
            .is_empty()
    );
    // An hour and a bit later, the attempts have left the last hour.
    let figures = store
        .endpoint_health(&endpoint.id, t(31 + HOUR))
        .await
        .unwrap();
    assert_eq!(figures.last_hour.attempts, 0);
    assert_eq!(figures.last_hour.success_rate, None);
    assert_eq!(figures.last_day.attempts, 2);
    assert_eq!(store.queue_stats().await.unwrap(), (1, Some(t(5))));

    // A disabled endpoint's backlog is not the queue.
    let mut off = endpoint.clone();
    off.active = false;
    assert!(
        store
            .update_endpoint(&off, true, t(200), None)
            .await
            .unwrap()
    );
    assert_eq!(store.queue_stats().await.unwrap(), (0, None));
}

async fn a_setting_keeps_the_first_value_put(backend: Backend) {
    let (_db, store) = open(backend).await;
    assert_eq!(store.get_setting("answer").await.unwrap(), None);
    assert_eq!(
        store.put_setting_if_absent("answer", "42").await.unwrap(),
        "42"
    );
    assert_eq!(
        store.put_setting_if_absent("answer", "43").await.unwrap(),
        "42"
    );
    assert_eq!(
        store.get_setting("answer").await.unwrap().as_deref(),
        Some("42")
    );
}

async fn media_figures_count_statuses_and_days_per_site(backend: Backend) {
    let (_db, store) = open(backend).await;
    let site_a = site(&store).await;
    let site_b = site(&store).await;
    let first = submit(&store, &site_a, T0).await;
    submit(&store, &site_a, t(DAY)).await;
    submit(&store, &site_b, T0).await;
    review(&store, &site_a, &media_of(&first), t(DAY + 5)).await;

    let mut counts = store.media_status_counts(&site_a.id).await.unwrap();
    counts.sort_by_key(|(status, _)| status.as_str());
    assert_eq!(
        counts,
        [(MediaStatus::Approved, 1), (MediaStatus::Pending, 1)]
    );
    let day = |at: Timestamp| Timestamp::from_millis(at.millis() / DAY * DAY);
    assert_eq!(
        store.media_per_day(&site_a.id, t(-DAY)).await.unwrap(),
        [(day(T0), 1, 0), (day(t(DAY)), 1, 1)],
        "submitted on the first day, submitted and decided on the second"
    );
    assert_eq!(
        store.media_per_day(&site_a.id, t(DAY)).await.unwrap(),
        [(day(t(DAY)), 1, 1)]
    );
    assert_eq!(
        store.media_status_counts(&site_b.id).await.unwrap(),
        [(MediaStatus::Pending, 1)]
    );
}

async fn an_endpoint_change_writes_its_audit_entry_with_it_and_a_refused_one_none(
    backend: Backend,
) {
    let (_db, store) = open(backend).await;
    let site_a = site(&store).await;
    let site_b = site(&store).await;
    let entry = |site: &Site, action: &str| pixelpatrol::model::AuditEntry {
        id: pixelpatrol::model::AuditId::generate(),
        site_id: Some(site.id.clone()),
        actor: None,
        action: action.into(),
        target: None,
        detail: json!({}),
        created_at: T0,
    };
    let actions = async |site: &Site| -> Vec<String> {
        store
            .list_audit(&site.id, None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|entry| entry.action)
            .collect()
    };
    let endpoint = Endpoint {
        id: EndpointId::generate(),
        site_id: site_a.id.clone(),
        url: "http://127.0.0.1:9/hook".into(),
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        events: vec![EventType::MediaCreated],
        active: true,
        description: None,
        strict_ordering: false,
        disabled_reason: None,
        disabled_at: None,
        health: Default::default(),
        created_at: T0,
        updated_at: T0,
    };
    store
        .create_endpoint(&endpoint, Some(&entry(&site_a, "endpoint.created")))
        .await
        .unwrap();
    let edited = Endpoint {
        url: "http://127.0.0.1:9/other".into(),
        ..endpoint.clone()
    };
    assert!(
        store
            .update_endpoint(
                &edited,
                false,
                t(1),
                Some(&entry(&site_a, "endpoint.updated"))
            )
            .await
            .unwrap()
    );
    // Another site's id: nothing changes, and nothing is logged.
    let foreign = Endpoint {
        site_id: site_b.id.clone(),
        ..edited.clone()
    };
    assert!(
        !store
            .update_endpoint(
                &foreign,
                false,
                t(2),
                Some(&entry(&site_b, "endpoint.updated"))
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_endpoint(
                &site_b.id,
                &endpoint.id,
                Some(&entry(&site_b, "endpoint.deleted"))
            )
            .await
            .unwrap()
    );
    assert!(actions(&site_b).await.is_empty());
    assert!(
        store
            .delete_endpoint(
                &site_a.id,
                &endpoint.id,
                Some(&entry(&site_a, "endpoint.deleted"))
            )
            .await
            .unwrap()
    );
    assert_eq!(
        actions(&site_a).await,
        ["endpoint.deleted", "endpoint.updated", "endpoint.created"]
    );
    // An endpoint whose insert fails (its id is taken) leaves no entry.
    assert!(
        store
            .create_endpoint(
                &Endpoint {
                    id: EndpointId::from(ALERT_ENDPOINT_ID),
                    ..endpoint.clone()
                },
                None
            )
            .await
            .is_ok()
    );
    assert!(
        store
            .create_endpoint(
                &Endpoint {
                    id: EndpointId::from(ALERT_ENDPOINT_ID),
                    ..endpoint.clone()
                },
                Some(&entry(&site_b, "endpoint.created")),
            )
            .await
            .is_err()
    );
    assert!(
        actions(&site_b).await.is_empty(),
        "the failed insert took its entry with it"
    );
}

/// Rows of the queue tables left for one endpoint (read directly: the
/// store's reads go through the endpoint, which may be gone).
async fn queue_rows(db: &TestDb, endpoint_id: &EndpointId) -> (i64, i64) {
    let id = endpoint_id.as_str();
    (
        db.count(&format!(
            "SELECT COUNT(*) FROM deliveries WHERE endpoint_id = '{id}'"
        ))
        .await,
        db.count(&format!(
            "SELECT COUNT(*) FROM delivery_attempts WHERE endpoint_id = '{id}'"
        ))
        .await,
    )
}

/// What the foreign keys' cascades did on both backends, and the store does
/// itself where the queue has none (PostgreSQL): no row of a deleted
/// endpoint's, site's or expired event's deliveries stays behind, and the
/// others' stay.
async fn deleting_an_endpoint_a_site_or_expired_events_leaves_no_delivery_or_attempt_behind(
    backend: Backend,
) {
    let (db, store) = open(backend).await;
    let site = site(&store).await;
    let kept_site = self::site(&store).await;
    let first = endpoint(&store, &site, false).await;
    let second = endpoint(&store, &site, false).await;
    let kept = endpoint(&store, &kept_site, false).await;
    // Each endpoint: one delivery delivered, one pending after a failure.
    for at in [T0, t(10)] {
        submit(&store, &site, at).await;
        submit(&store, &kept_site, at).await;
    }
    let claimed = claim(&store, t(20)).await;
    assert_eq!(claimed.len(), 6);
    let mut records = Vec::new();
    for endpoint in [&first, &second, &kept] {
        let mine: Vec<&ClaimedDelivery> = claimed
            .iter()
            .filter(|delivery| delivery.endpoint_id == endpoint.id)
            .collect();
        if endpoint.id == kept.id {
            // Delivered at the second attempt: two attempts to purge.
            records.push(failed(mine[0], t(21), 500, NextStep::RetryAt(t(22))));
        } else {
            records.push(ok(mine[0], t(30)));
        }
        records.push(failed(mine[1], t(30), 500, NextStep::RetryAt(t(DAY))));
    }
    record(&store, &records).await;
    let again = claim(&store, t(22)).await;
    assert_eq!(again.len(), 1);
    record(&store, &[ok(&again[0], t(23))]).await;
    for endpoint in [&first, &second] {
        assert_eq!(queue_rows(&db, &endpoint.id).await, (2, 2));
    }
    assert_eq!(queue_rows(&db, &kept.id).await, (2, 3));

    assert!(
        store
            .delete_endpoint(&site.id, &first.id, None)
            .await
            .unwrap()
    );
    assert_eq!(queue_rows(&db, &first.id).await, (0, 0));
    assert_eq!(queue_rows(&db, &second.id).await, (2, 2));

    assert!(store.delete_site(&site.id).await.unwrap());
    assert_eq!(queue_rows(&db, &second.id).await, (0, 0));
    assert_eq!(queue_rows(&db, &kept.id).await, (2, 3));

    // Retention, one of each at a time: the oldest finished attempt goes by
    // age; the delivered event goes with its delivery and its other attempt;
    // the pending one's stay.
    let purged = store.purge_step(t(DAY), 1).await.unwrap();
    assert_eq!((purged.attempts, purged.events), (1, 1));
    assert_eq!(queue_rows(&db, &kept.id).await, (1, 1));
    assert_eq!(
        db.count("SELECT COUNT(*) FROM deliveries WHERE status = 'pending'")
            .await,
        1
    );
    assert_eq!(
        store.sweep_orphaned_deliveries().await.unwrap(),
        0,
        "nothing orphaned is left to sweep"
    );
}

/// PostgreSQL's queue has no foreign keys (its migration 0009): a delivery
/// whose endpoint or event went in a race is possible there, never sent,
/// and swept with its attempts; nothing else is.
async fn the_sweep_removes_deliveries_whose_endpoint_or_event_is_gone_and_only_those() {
    let (db, store) = open(Backend::Postgres).await;
    let site = site(&store).await;
    let endpoint = endpoint(&store, &site, false).await;
    let event = submit(&store, &site, T0).await;
    let claimed = claim(&store, t(10)).await;
    let real = claimed[0].id.clone();
    record(
        &store,
        &[failed(&claimed[0], t(10), 500, NextStep::RetryAt(t(20)))],
    )
    .await;
    // As a submission racing the endpoint's deletion, and a resend racing
    // the event's retention, would leave them.
    let (endpoint_id, event_id) = (endpoint.id.as_str(), event.id.as_str());
    db.execute(&format!(
        "INSERT INTO deliveries (id, event_id, endpoint_id, site_id, event_type, ordering_key, \
            status, attempts, next_attempt_at, created_at, updated_at) VALUES \
         ('dl_no_endpoint', '{event_id}', 'wh_deleted', '{}', 'media.created', 'm', 'pending', 1, 0, 0, 0), \
         ('dl_no_event', 'ev_purged', '{endpoint_id}', '{}', 'media.created', 'm', 'pending', 0, 0, 0, 0); \
         INSERT INTO delivery_attempts (delivery_id, endpoint_id, attempt, started_at, duration_ms) \
         VALUES ('dl_no_endpoint', 'wh_deleted', 1, 0, 1)",
        site.id.as_str(),
        site.id.as_str()
    ))
    .await;
    let claimed = claim(&store, t(30)).await;
    assert_eq!(
        claimed
            .iter()
            .map(|delivery| delivery.id.clone())
            .collect::<Vec<_>>(),
        [real],
        "an orphan is never claimed"
    );

    assert_eq!(store.sweep_orphaned_deliveries().await.unwrap(), 2);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM deliveries WHERE id LIKE 'dl_no_%'")
            .await,
        0
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM delivery_attempts WHERE delivery_id = 'dl_no_endpoint'")
            .await,
        0
    );
    assert_eq!(queue_rows(&db, &endpoint.id).await, (1, 1));
    assert_eq!(store.sweep_orphaned_deliveries().await.unwrap(), 0);
}

/// A `pixelpatrol` command writing to the file `serve` is using (here: a
/// second store on the same SQLite file) while another connection holds the
/// write lock: the store's transaction, which reads before it writes, waits
/// for the lock and then succeeds. Begun deferred, it would have read an
/// older snapshot and failed busy at its first write.
async fn a_write_from_another_process_on_the_same_file_waits_its_turn() {
    use pixelpatrol::model::{AuditEntry, AuditId, Role};
    use sqlx::Connection as _;

    let (db, store) = open(Backend::Sqlite).await;
    let site = site(&store).await;
    let user =
        pixelpatrol::people::create_account(&store, "a@example.com", "a long password here", false)
            .await
            .unwrap()
            .unwrap();

    let mut other = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE; INSERT INTO settings (key, value) VALUES ('other', 'process')")
        .execute(&mut other)
        .await
        .unwrap();

    let audit = AuditEntry {
        id: AuditId::generate(),
        site_id: Some(site.id.clone()),
        actor: None,
        action: "member.added".into(),
        target: Some(user.id.to_string()),
        detail: json!({}),
        created_at: T0,
    };
    let change = tokio::spawn({
        let (store, site_id, user_id) = (store.clone(), site.id.clone(), user.id.clone());
        async move {
            store
                .set_member(&site_id, &user_id, Role::Owner, T0, &audit)
                .await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!change.is_finished(), "the change waits for the write lock");
    sqlx::raw_sql("COMMIT").execute(&mut other).await.unwrap();

    change
        .await
        .unwrap()
        .expect("the change, once it has the lock");
    assert_eq!(
        db.count("SELECT COUNT(*) FROM site_members WHERE role = 'owner'")
            .await,
        1
    );
    assert_eq!(
        store.get_setting("other").await.unwrap().as_deref(),
        Some("process")
    );
}
