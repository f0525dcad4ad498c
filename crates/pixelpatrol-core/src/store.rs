//! Storage: the roles the rest of the server asks of the database,
//! implemented for SQLite (the embedded default) and PostgreSQL (shared by
//! several processes for scale-out).
//!
//! The store owns the transactional outbox: every state change that emits an
//! event writes the event and one delivery per subscribed endpoint in the same
//! transaction, and workers claim due deliveries with leases, so a crash at
//! any moment loses nothing.
//!
//! Layout: this module holds the roles only. Each backend is a crate
//! (`pixelpatrol-store-sqlite`, `pixelpatrol-store-postgres`) holding what
//! only that backend does (its connection set-up, its claim, its locks, its
//! maintenance) in files of the same names, so that comparing the backends
//! means comparing two files. What is the same on both is written once in
//! `pixelpatrol-store/src/shared` and compiled into each backend crate,
//! against that backend's database, so that each checks its statements
//! against its own schema at compile time.

use std::sync::Arc;

use async_trait::async_trait;

use crate::model::{
    AcceptOutcome, AuditEntry, AuditId, DeliveryId, EndpointId, EventId, Invitation, InvitationId,
    LeaseToken, MemberChange, Membership, Role, Session, User, UserId,
};
use crate::model::{
    AttemptRecord, ClaimRequest, ClaimedDelivery, DecideOutcome, DecisionRecord, Delivery,
    DeliveryFilter, Endpoint, EventFilter, EventSummary, HealthChange, HealthFigures, HealthPolicy,
    HealthSummary, Media, MediaFilter, MediaId, MediaStatus, ModerationJob, NewEvent, Purged,
    RecoverOutcome, ResendOutcome, RetryOutcome, RuleGroup, RuleGroupId, Site, SiteId, Timestamp,
};

pub type DynStore = Arc<dyn Store>;

/// What the delivery worker asks of the store: claim, record and give back
/// deliveries, fold endpoint health, the periodic upkeep, and word of work
/// committed by other processes.
pub trait DeliveryStore:
    Outbox + EndpointHealth + Retention + Maintenance + Settings + WorkSignals
{
}

impl<T> DeliveryStore for T where
    T: Outbox + EndpointHealth + Retention + Maintenance + Settings + WorkSignals + ?Sized
{
}

/// How processes sharing one database tell each other that deliveries were
/// committed, so that a worker in another process sends them at once rather
/// than at its next poll. Best effort by design: a lost signal costs at most
/// a poll interval, never a delivery (the outbox is the truth).
#[async_trait]
pub trait WorkSignals: Send + Sync {
    /// Tells the other processes that work was committed; `sender` is this
    /// process's id, by which it knows its own signals.
    async fn announce_work(&self, sender: &str) -> anyhow::Result<()>;
    /// Calls `on_work` whenever another process announces work, and after
    /// the signal connection was lost and came back (signals may have been
    /// missed meanwhile). Runs until an error; where one process owns the
    /// database (SQLite) there is nobody to hear and it returns at once.
    async fn listen_for_work(
        &self,
        me: &str,
        on_work: Box<dyn Fn() + Send + Sync>,
    ) -> anyhow::Result<()>;
}

/// What the moderation worker asks of the store: the site and its rules,
/// the media item, and the analysis jobs.
pub trait ModerationStore: Sites + RuleGroups + MediaStore + ModerationQueue {}

impl<T> ModerationStore for T where T: Sites + RuleGroups + MediaStore + ModerationQueue + ?Sized {}

/// Every role at once: what `run` opens and the API holds. The workers get
/// their part only ([`DeliveryStore`], [`ModerationStore`]).
pub trait Store:
    DeliveryStore + ModerationStore + Endpoints + DeliveryLog + PeopleStore + Send + Sync + 'static
{
}

impl<T> Store for T where
    T: DeliveryStore
        + ModerationStore
        + Endpoints
        + DeliveryLog
        + PeopleStore
        + Send
        + Sync
        + 'static
{
}

/// What the dashboard asks of the store about people: accounts and roles,
/// sessions and sign-in throttling, invitations, the audit log.
pub trait PeopleStore: People + Sessions + Invitations + AuditLog {}

impl<T> PeopleStore for T where T: People + Sessions + Invitations + AuditLog + ?Sized {}

/// Dashboard accounts and their roles on sites. Changes to who may do what
/// write their audit entry in the same transaction.
#[async_trait]
pub trait People: Send + Sync {
    /// Creates the account; `false` when its email is taken.
    async fn create_user(&self, user: &User) -> anyhow::Result<bool>;
    async fn get_user(&self, id: &UserId) -> anyhow::Result<Option<User>>;
    /// By normalized email.
    async fn user_by_email(&self, email: &str) -> anyhow::Result<Option<User>>;
    /// Replaces the password and ends every session of the account.
    async fn set_password(
        &self,
        id: &UserId,
        password_hash: &str,
        now: Timestamp,
    ) -> anyhow::Result<bool>;
    /// Gives the person `role` on the site, or changes their role; refused
    /// ([`MemberChange::LastOwner`]) when that demotes the last owner.
    async fn set_member(
        &self,
        site_id: &SiteId,
        user_id: &UserId,
        role: Role,
        now: Timestamp,
        audit: &AuditEntry,
    ) -> anyhow::Result<MemberChange>;
    /// Refused when the person is the site's last owner.
    async fn remove_member(
        &self,
        site_id: &SiteId,
        user_id: &UserId,
        audit: &AuditEntry,
    ) -> anyhow::Result<MemberChange>;
    /// The site's members, by email.
    async fn list_members(&self, site_id: &SiteId) -> anyhow::Result<Vec<Membership>>;
    async fn member_role(&self, site_id: &SiteId, user_id: &UserId)
    -> anyhow::Result<Option<Role>>;
    /// The sites a person is a member of, with their role, by name.
    async fn sites_of_member(&self, user_id: &UserId) -> anyhow::Result<Vec<(Site, Role)>>;
    /// Flagged items waiting for a person, per site that has any: on the
    /// sites `user_id` is a member of, or (`None`, an operator) on every
    /// site but `except` (the operator's own).
    async fn waiting_for_review(
        &self,
        user_id: Option<&UserId>,
        except: &SiteId,
    ) -> anyhow::Result<Vec<(SiteId, i64)>>;
}

/// Signed-in browsers, and the back-off of failed sign-ins.
#[async_trait]
pub trait Sessions: Send + Sync {
    async fn create_session(&self, session: &Session) -> anyhow::Result<()>;
    /// The live session with this token hash and its account, its idle
    /// expiry moved to `now + idle_ms` but never past `lifetime_ms` after
    /// it began; `None` when unknown or expired.
    async fn touch_session(
        &self,
        token_hash: &str,
        now: Timestamp,
        idle_ms: i64,
        lifetime_ms: i64,
    ) -> anyhow::Result<Option<(Session, User)>>;
    async fn end_session(&self, token_hash: &str) -> anyhow::Result<()>;
    /// Removes sessions that expired before `now`; returns how many.
    async fn purge_expired_sessions(&self, now: Timestamp) -> anyhow::Result<u64>;
    /// Until when sign-ins under any of `keys` must wait, if they must.
    async fn sign_in_blocked_until(
        &self,
        keys: &[String],
        now: Timestamp,
    ) -> anyhow::Result<Option<Timestamp>>;
    /// Counts a failed sign-in against each key; returns until when the
    /// keys are blocked now (the back-off of
    /// [`crate::model::people::sign_in_back_off_ms`]).
    async fn record_sign_in_failure(
        &self,
        keys: &[String],
        now: Timestamp,
    ) -> anyhow::Result<Timestamp>;
    /// A successful sign-in forgets the failures under `keys`.
    async fn clear_sign_in_failures(&self, keys: &[String]) -> anyhow::Result<()>;
}

/// One-time links to join a site, or the operators.
#[async_trait]
pub trait Invitations: Send + Sync {
    async fn create_invitation(
        &self,
        invitation: &Invitation,
        audit: &AuditEntry,
    ) -> anyhow::Result<()>;
    /// Invitations not yet accepted nor expired at `now`, newest first: a
    /// site's, or (`None`) the operators'.
    async fn pending_invitations(
        &self,
        site_id: Option<&SiteId>,
        now: Timestamp,
    ) -> anyhow::Result<Vec<Invitation>>;
    /// The usable invitation with this token hash.
    async fn usable_invitation(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> anyhow::Result<Option<Invitation>>;
    async fn revoke_invitation(
        &self,
        site_id: Option<&SiteId>,
        id: &InvitationId,
        audit: &AuditEntry,
    ) -> anyhow::Result<bool>;
    /// Accepts a usable invitation in one transaction: the account of its
    /// email (created from `new_user` when there is none; an existing one
    /// keeps its password) gets the role, or becomes an operator, and the
    /// link is used up.
    async fn accept_invitation(
        &self,
        token_hash: &str,
        new_user: &User,
        now: Timestamp,
    ) -> anyhow::Result<AcceptOutcome>;
}

/// Who changed what.
#[async_trait]
pub trait AuditLog: Send + Sync {
    async fn record_audit(&self, entry: &AuditEntry) -> anyhow::Result<()>;
    /// A site's entries, newest first, older than `before` when given.
    async fn list_audit(
        &self,
        site_id: &SiteId,
        before: Option<&AuditId>,
        limit: i64,
    ) -> anyhow::Result<Vec<AuditEntry>>;
}

/// Server-wide values kept in the database (the admin token's hash).
#[async_trait]
pub trait Settings: Send + Sync {
    async fn get_setting(&self, key: &str) -> anyhow::Result<Option<String>>;
    /// Stores the value unless the key exists; returns the value in force.
    async fn put_setting_if_absent(&self, key: &str, value: &str) -> anyhow::Result<String>;
}

#[async_trait]
pub trait Sites: Send + Sync {
    /// Creates the site with its default rule group.
    async fn create_site(
        &self,
        site: &Site,
        default_group: &RuleGroup,
        audit: Option<&AuditEntry>,
    ) -> anyhow::Result<()>;
    async fn list_sites(&self) -> anyhow::Result<Vec<Site>>;
    async fn get_site(&self, id: &SiteId) -> anyhow::Result<Option<Site>>;
    async fn site_by_key_hash(&self, key_hash: &str) -> anyhow::Result<Option<Site>>;
    /// Updates name, url, description, threshold and external analyzer.
    /// `audit` (here and in every change below) commits with the change,
    /// and only when there was one.
    async fn update_site(&self, site: &Site, audit: Option<&AuditEntry>) -> anyhow::Result<bool>;
    /// Deletes the site with everything of it.
    async fn delete_site(&self, id: &SiteId) -> anyhow::Result<bool>;
}

#[async_trait]
pub trait Endpoints: Send + Sync {
    /// Creates the endpoint, writing `audit` (who did it) in the same
    /// transaction; so do the update and the delete.
    async fn create_endpoint(
        &self,
        endpoint: &Endpoint,
        audit: Option<&AuditEntry>,
    ) -> anyhow::Result<()>;
    async fn list_endpoints(&self, site_id: &SiteId) -> anyhow::Result<Vec<Endpoint>>;
    async fn get_endpoint(
        &self,
        site_id: &SiteId,
        id: &EndpointId,
    ) -> anyhow::Result<Option<Endpoint>>;
    /// Updates the endpoint; `active` is written only with `set_active` (so
    /// an unrelated edit cannot undo a concurrent disable). Turning it back
    /// on clears the disable, starts its health afresh and makes its
    /// pending deliveries due now.
    async fn update_endpoint(
        &self,
        endpoint: &Endpoint,
        set_active: bool,
        now: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> anyhow::Result<bool>;
    async fn delete_endpoint(
        &self,
        site_id: &SiteId,
        id: &EndpointId,
        audit: Option<&AuditEntry>,
    ) -> anyhow::Result<bool>;
}

#[async_trait]
pub trait RuleGroups: Send + Sync {
    async fn list_rule_groups(&self, site_id: &SiteId) -> anyhow::Result<Vec<RuleGroup>>;
    async fn get_rule_group(
        &self,
        site_id: &SiteId,
        id: &RuleGroupId,
    ) -> anyhow::Result<Option<RuleGroup>>;
    async fn default_rule_group(&self, site_id: &SiteId) -> anyhow::Result<Option<RuleGroup>>;
    /// Stores a new group; when it is the default, the previous default
    /// stops being one in the same transaction.
    async fn create_rule_group(
        &self,
        group: &RuleGroup,
        audit: Option<&AuditEntry>,
    ) -> anyhow::Result<()>;
    async fn update_rule_group(
        &self,
        group: &RuleGroup,
        audit: Option<&AuditEntry>,
    ) -> anyhow::Result<bool>;
    /// Deletes a group that is not the site's default.
    async fn delete_rule_group(
        &self,
        site_id: &SiteId,
        id: &RuleGroupId,
        audit: Option<&AuditEntry>,
    ) -> anyhow::Result<bool>;
}

#[async_trait]
pub trait MediaStore: Send + Sync {
    /// Writes the media item, its `media.created` event and the deliveries in
    /// one transaction, and its analysis job when `analyze` is set.
    async fn create_media(
        &self,
        media: &Media,
        event: &NewEvent,
        analyze: bool,
    ) -> anyhow::Result<()>;
    async fn get_media(&self, id: &MediaId) -> anyhow::Result<Option<Media>>;
    /// A site's media, newest first.
    async fn list_media(
        &self,
        site_id: &SiteId,
        filter: &MediaFilter,
    ) -> anyhow::Result<Vec<Media>>;
    /// How many of a site's items are in each status.
    async fn media_status_counts(
        &self,
        site_id: &SiteId,
    ) -> anyhow::Result<Vec<(MediaStatus, i64)>>;
    /// A site's submissions and decisions per UTC day since `since`
    /// (day start, submitted, decided), oldest first; days with neither are
    /// left out.
    async fn media_per_day(
        &self,
        site_id: &SiteId,
        since: Timestamp,
    ) -> anyhow::Result<Vec<(Timestamp, i64, i64)>>;
    /// Records a decision and its `media.moderated` event in one transaction.
    /// With `job`, the job is removed in the same transaction (only its
    /// lease holder can), and a manual decision already made is kept.
    async fn decide_media(
        &self,
        media_id: &MediaId,
        decision: &DecisionRecord,
        event: &NewEvent,
        job: Option<&ModerationJob>,
        audit: Option<&AuditEntry>,
    ) -> anyhow::Result<DecideOutcome>;
}

/// Durable analysis jobs, leased to moderation workers.
#[async_trait]
pub trait ModerationQueue: Send + Sync {
    /// Queues (or re-queues) analysis of an item; a lease held on it is
    /// voided, so the running analysis's result is dropped.
    async fn enqueue_moderation(
        &self,
        media_id: &MediaId,
        now: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> anyhow::Result<()>;
    /// Leases up to `limit` due moderation jobs.
    async fn claim_moderation_jobs(
        &self,
        lease_token: &LeaseToken,
        now: Timestamp,
        lease_until: Timestamp,
        limit: i64,
    ) -> anyhow::Result<Vec<ModerationJob>>;
}

/// The delivery worker's side of the outbox: claim, record, give back.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Writes a test event with one delivery to `endpoint`, already leased to
    /// the caller, who sends it at once.
    async fn create_leased_delivery(
        &self,
        endpoint: &Endpoint,
        event: &NewEvent,
        delivery_id: &DeliveryId,
        lease_token: &LeaseToken,
        lease_until: Timestamp,
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
    /// Gives leased deliveries back without an attempt (graceful shutdown).
    async fn release_leases(&self, leases: &[(DeliveryId, LeaseToken)]) -> anyhow::Result<()>;
}

#[async_trait]
pub trait EndpointHealth: Send + Sync {
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
        now: Timestamp,
        failing_since_before: Timestamp,
        min_dead: i64,
        health: &HealthPolicy,
    ) -> anyhow::Result<Vec<HealthChange>>;
    /// Creates or updates the operator's alert endpoint (`None`: deactivates it).
    async fn configure_alert_endpoint(
        &self,
        target: Option<(&str, &str)>,
        now: Timestamp,
    ) -> anyhow::Result<()>;
    async fn endpoint_health(
        &self,
        endpoint_id: &EndpointId,
        now: Timestamp,
    ) -> anyhow::Result<HealthFigures>;
    /// Attempts and failed attempts per hour since `since`, oldest first;
    /// hours without attempts are left out. Each hour is named by its start.
    async fn attempts_per_hour(
        &self,
        endpoint_id: &EndpointId,
        since: Timestamp,
    ) -> anyhow::Result<Vec<(Timestamp, i64, i64)>>;
}

/// What people read and redo of past deliveries.
#[async_trait]
pub trait DeliveryLog: Send + Sync {
    async fn list_deliveries(
        &self,
        endpoint_id: &EndpointId,
        filter: &DeliveryFilter,
    ) -> anyhow::Result<Vec<Delivery>>;
    async fn get_delivery(
        &self,
        endpoint_id: &EndpointId,
        delivery_id: &DeliveryId,
    ) -> anyhow::Result<Option<Delivery>>;
    async fn retry_delivery(
        &self,
        endpoint_id: &EndpointId,
        delivery_id: &DeliveryId,
        now: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> anyhow::Result<RetryOutcome>;
    /// Re-queues dead deliveries created in `[since, until)`, oldest first.
    async fn recover_deliveries(
        &self,
        endpoint_id: &EndpointId,
        since: Timestamp,
        until: Option<Timestamp>,
        now: Timestamp,
        // Written (with `requeued` added to its detail) when any was.
        audit: Option<&AuditEntry>,
    ) -> anyhow::Result<RecoverOutcome>;
    /// New deliveries of an existing event to the site's subscribed active
    /// endpoints, or to the one named.
    async fn resend_event(
        &self,
        site_id: &SiteId,
        event_id: &EventId,
        endpoint_id: Option<&EndpointId>,
        now: Timestamp,
    ) -> anyhow::Result<ResendOutcome>;
    async fn list_events(
        &self,
        site_id: &SiteId,
        filter: &EventFilter,
    ) -> anyhow::Result<Vec<EventSummary>>;
    /// The exact body every endpoint received for the event (`None` when
    /// unknown, or purged by retention).
    async fn event_payload(
        &self,
        site_id: &SiteId,
        event_id: &EventId,
    ) -> anyhow::Result<Option<String>>;
}

#[async_trait]
pub trait Retention: Send + Sync {
    /// One bounded step of retention: up to `batch` attempts and `batch`
    /// events (with their finished deliveries) older than `cutoff`; events
    /// with pending deliveries are kept.
    async fn purge_step(&self, cutoff: Timestamp, batch: i64) -> anyhow::Result<Purged>;
}

/// The database's own upkeep and what operations ask of it.
#[async_trait]
pub trait Maintenance: Send + Sync {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Pending deliveries in all and the oldest one's creation time.
    async fn queue_stats(&self) -> anyhow::Result<(i64, Option<Timestamp>)>;
    /// Applied migrations against those this build knows.
    async fn migration_status(&self) -> anyhow::Result<(i64, i64)>;
    /// Connections open and idle in the pools.
    fn pool_stats(&self) -> (u32, u32);
    /// Keeps the planner's statistics current. Queue tables grow from empty
    /// to millions of rows faster than autovacuum looks at them (once a
    /// minute), and a plan made from an empty table's numbers can turn a
    /// 10 ms claim into a 10 s one. Called by the worker every few seconds.
    async fn maintain(&self) -> anyhow::Result<()>;
    /// Deletes pending deliveries whose endpoint or event is gone, and their
    /// attempts; how many deliveries. Where the queue keeps no foreign keys
    /// (PostgreSQL), a submission that raced its endpoint's deletion, or a
    /// resend that raced its event's retention, leaves such a delivery: it is
    /// never sent (the claim joins both), but it would keep its event from
    /// retention. Where foreign keys hold (SQLite) there is none to find.
    async fn sweep_orphaned_deliveries(&self) -> anyhow::Result<u64>;
}
