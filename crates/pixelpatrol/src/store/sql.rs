//! The SQL behind [`Store`] for SQLite and PostgreSQL.
//!
//! Both backends run the same statements: the schema uses only types the two
//! share (TEXT, integer milliseconds, BOOLEAN) and `$n` placeholders, which
//! both understand. The one macro below is expanded once per backend so that
//! each gets native, statically typed sqlx code; the differences (SQLite's
//! single writer connection, PostgreSQL's `FOR UPDATE SKIP LOCKED` and
//! advisory locks) are switched on `IS_POSTGRES`, a constant per expansion.
//!
//! Statements built at run time (multi-row VALUES, id lists) are not kept as
//! prepared statements: their text changes with every row count, so a
//! connection's statement cache filled up with big one-off statements (a
//! fifth of a gigabyte of server memory under load).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use pixelpatrol_webhooks::EventType;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row};
use tokio::sync::{mpsc, oneshot};

use super::{
    AiLabels, Attempt, AttemptRecord, ClaimRequest, ClaimedDelivery, DecideOutcome, DecisionRecord,
    Delivery, DeliveryFilter, DeliveryStatus, Endpoint, EndpointHealthState, EventDelivery,
    EventFilter, EventSummary, FailureInfo, HealthChange, HealthChangeKind, HealthFigures,
    HealthPolicy, HealthSummary, Media, MediaFilter, ModerationJob, NewEvent, NextStep, Purged,
    RecoverOutcome, ResendOutcome, RetryOutcome, RuleGroup, Site, Store, WindowFigures,
};
use crate::alerts::{ALERT_ENDPOINT_ID, OPERATOR_SITE_ID, alert_event};

/// SQLite in WAL mode. Writes go through a pool of exactly one connection, so
/// writers queue in the process instead of failing with `SQLITE_BUSY`; reads
/// use their own pool and run beside the writer.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    write: SqlitePool,
    read: SqlitePool,
    media_batcher: MediaBatcher,
}

impl SqliteStore {
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
            // Statement journals and sorts stay in memory instead of temporary
            // files; a larger page cache keeps the hot indexes resident.
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-65536")
            // After a burst, the emptied WAL file does not keep its size.
            .pragma("journal_size_limit", WAL_SIZE_LIMIT);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            // The writer never checkpoints itself (see `checkpoint_wal`).
            .connect_with(options.clone().pragma("wal_autocheckpoint", "0"))
            .await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&write)
            .await
            .context("migrating the SQLite database")?;
        let read = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            // Readers share the file's pages through the OS cache; a large
            // private cache per reader would multiply memory.
            .connect_with(
                options
                    .clone()
                    .read_only(true)
                    .pragma("cache_size", "-8192"),
            )
            .await?;
        let media_batcher = MediaBatcher::start(
            {
                let pool = write.clone();
                Arc::new(move |items| {
                    let pool = pool.clone();
                    Box::pin(async move { Self::write_media_batch(&pool, &items).await })
                })
            },
            1,
        );
        let checkpointer = SqlitePoolOptions::new()
            .max_connections(1)
            // Checkpoints read the WAL and write the file: no cache needed.
            .connect_with(options.pragma("cache_size", "-1024"))
            .await?;
        tokio::spawn(checkpoint_wal(checkpointer, write.clone()));
        Ok(Self {
            write,
            read,
            media_batcher,
        })
    }

    fn media_batcher(&self) -> Option<&MediaBatcher> {
        Some(&self.media_batcher)
    }
}

/// The WAL file is cut back to this size (bytes) after it has been emptied.
const WAL_SIZE_LIMIT: &str = "67108864";
/// How often the checkpointer copies what the WAL has gathered.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(50);
/// WAL frames (4 KiB pages) after which the checkpointer makes the writer
/// start the WAL over.
const WAL_RESTART_FRAMES: i64 = 4096;
/// How long the writer's RESTART checkpoint waits for readers.
const RESTART_READER_WAIT: Duration = Duration::from_millis(50);
/// How long a connection waits for a lock before answering busy.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Copies the WAL back into the database file from its own connection.
///
/// SQLite's automatic checkpoint runs on the connection that commits, that is
/// on the single writer, which is the throughput bottleneck: checkpoints and
/// their fsyncs took an eighth of the database threads' time in the
/// throughput benchmark. Passive checkpoints beside it never block the
/// writer or the readers. But the writer only starts the WAL over when it
/// finds everything copied as it begins a transaction, which a busy writer
/// never does: the WAL grew by gigabytes. So once the WAL is long, the
/// writer itself runs a RESTART checkpoint, which copies the few frames the
/// passive ones left and waits for readers, and its next transaction starts
/// the WAL from the beginning.
async fn checkpoint_wal(checkpointer: SqlitePool, writer: SqlitePool) {
    // The WAL length at the last RESTART: an idle WAL is restarted once.
    let mut restarted_at = None;
    while !writer.is_closed() {
        let passive = sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&checkpointer)
            .await;
        let result = match passive {
            Ok((_, frames, _)) if frames >= WAL_RESTART_FRAMES && restarted_at != Some(frames) => {
                restarted_at = Some(frames);
                restart_wal(&writer).await
            }
            Ok(_) => Ok(()),
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            tracing::warn!(error = ?error, "checkpointing the SQLite WAL failed");
            tokio::time::sleep(CHECKPOINT_INTERVAL * 20).await;
        }
        tokio::time::sleep(CHECKPOINT_INTERVAL).await;
    }
    checkpointer.close().await;
}

/// A RESTART checkpoint on the writer's own connection, between its
/// transactions: from another connection, holding writers back would make a
/// writer transaction that began with a read fail as busy. It waits for
/// readers at most `RESTART_READER_WAIT` (a long API read must not stall
/// every write); if they are still there, the next try comes soon.
async fn restart_wal(writer: &SqlitePool) -> Result<(), sqlx::Error> {
    let mut connection = writer.acquire().await?;
    sqlx::query(&format!(
        "PRAGMA busy_timeout = {}",
        RESTART_READER_WAIT.as_millis()
    ))
    .execute(&mut *connection)
    .await?;
    let restart = sqlx::query("PRAGMA wal_checkpoint(RESTART)")
        .execute(&mut *connection)
        .await;
    sqlx::query(&format!(
        "PRAGMA busy_timeout = {}",
        SQLITE_BUSY_TIMEOUT.as_millis()
    ))
    .execute(&mut *connection)
    .await?;
    restart.map(|_| ())
}

/// PostgreSQL, possibly shared by several `pixelpatrol serve` processes, which
/// coordinate through row locks (`FOR UPDATE SKIP LOCKED`) and leases.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    write: PgPool,
    read: PgPool,
    media_batcher: MediaBatcher,
}

impl PostgresStore {
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        // The outbox tables grow from empty to millions of rows within
        // minutes. A plan cached for prepared statements while they were
        // small (a generic plan) would be kept for good, so every execution
        // is planned with the current statistics. JIT compilation would cost
        // more than these short queries themselves.
        let options = PgConnectOptions::from_str(url)?
            .options([("plan_cache_mode", "force_custom_plan"), ("jit", "off")]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .context("migrating the PostgreSQL database")?;
        let media_batcher = MediaBatcher::start(
            {
                let pool = pool.clone();
                Arc::new(move |items| {
                    let pool = pool.clone();
                    Box::pin(async move { Self::write_media_batch(&pool, &items).await })
                })
            },
            PG_MEDIA_WRITERS,
        );
        Ok(Self {
            write: pool.clone(),
            read: pool,
            media_batcher,
        })
    }

    /// Group commit helps here too: a transaction per submission cost the
    /// database a commit (and its WAL flush) and four statements each.
    fn media_batcher(&self) -> Option<&MediaBatcher> {
        Some(&self.media_batcher)
    }
}

/// A submission: the item, its `media.created` event, whether to queue analysis.
type NewMedia = (Media, NewEvent, bool);
type MediaRequest = (NewMedia, oneshot::Sender<Result<(), String>>);

/// Writes a group of submissions in one transaction.
type WriteMedia = Arc<
    dyn Fn(Vec<NewMedia>) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> + Send + Sync,
>;

/// Group commit for submissions: a commit costs far more than the rows in
/// it (SQLite has one writer; PostgreSQL flushes its WAL per commit), so
/// submissions that arrive while the previous group commits are written
/// together in the next transaction.
#[derive(Clone)]
pub struct MediaBatcher {
    requests: mpsc::Sender<MediaRequest>,
}

impl std::fmt::Debug for MediaBatcher {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("MediaBatcher")
            .finish_non_exhaustive()
    }
}

/// Endpoints folded into health per statement (11 parameters each).
const HEALTH_FOLD_CHUNK: usize = 500;
/// Submission groups written at once on PostgreSQL.
const PG_MEDIA_WRITERS: usize = 3;
/// Submissions written in one transaction at most.
const MEDIA_BATCH: usize = 128;

impl MediaBatcher {
    /// `writers` groups are written at once at most: SQLite has one writer,
    /// PostgreSQL commits several transactions in parallel.
    fn start(write: WriteMedia, writers: usize) -> Self {
        let (requests, queue) = mpsc::channel::<MediaRequest>(MEDIA_BATCH * 8);
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        for _ in 0..writers.max(1) {
            let (queue, write) = (queue.clone(), write.clone());
            tokio::spawn(async move {
                let mut batch = Vec::with_capacity(MEDIA_BATCH);
                loop {
                    // The next writer takes what gathered while this one waited.
                    if queue.lock().await.recv_many(&mut batch, MEDIA_BATCH).await == 0 {
                        return;
                    }
                    let items: Vec<NewMedia> = batch.iter().map(|(item, _)| item.clone()).collect();
                    match write(items).await {
                        Ok(()) => {
                            for (_, reply) in batch.drain(..) {
                                let _ = reply.send(Ok(()));
                            }
                        }
                        // One bad item must not fail the others: alone, each
                        // gets its own answer.
                        Err(_) => {
                            for (item, reply) in batch.drain(..) {
                                let result = write(vec![item]).await;
                                let _ = reply.send(result.map_err(|error| format!("{error:#}")));
                            }
                        }
                    }
                }
            });
        }
        MediaBatcher { requests }
    }

    async fn submit(&self, item: NewMedia) -> anyhow::Result<()> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send((item, reply))
            .await
            .map_err(|_| anyhow::anyhow!("the submission writer has stopped"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the submission writer has stopped"))?
            .map_err(|error| anyhow::anyhow!(error))
    }
}

fn parse_events(text: &str) -> anyhow::Result<Vec<EventType>> {
    text.split(',')
        .filter(|part| !part.is_empty())
        .map(|part| part.parse().map_err(anyhow::Error::from))
        .collect()
}

fn join_events(events: &[EventType]) -> String {
    events
        .iter()
        .map(|event| event.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads an optional JSON column; absent means empty.
fn json_column<T: serde::de::DeserializeOwned + Default>(
    text: Option<String>,
) -> anyhow::Result<T> {
    match text {
        Some(text) => Ok(serde_json::from_str(&text)?),
        None => Ok(T::default()),
    }
}

fn next_step_columns(next: NextStep) -> (&'static str, Option<i64>) {
    match next {
        NextStep::Succeeded => (DeliveryStatus::Succeeded.as_str(), None),
        NextStep::RetryAt(at) => (DeliveryStatus::Pending.as_str(), Some(at)),
        NextStep::Dead => (DeliveryStatus::Failed.as_str(), None),
    }
}

const SITE_COLUMNS: &str = "id, name, url, description, key_hash, confidence_threshold, external_analyzer_url, external_analyzer_secret, created_at, updated_at";
const RULE_GROUP_COLUMNS: &str =
    "id, site_id, name, description, is_default, rules, created_at, updated_at";
const ENDPOINT_COLUMNS: &str = "id, site_id, url, secret, events, active, description, strict_ordering, \
     disabled_reason, disabled_at, consecutive_failures, failing_since, last_success_at, last_failure_at, \
     last_failure_class, last_failure_status, last_failure_message, created_at, updated_at";
/// What a health change reports of its endpoint.
const CHANGE_COLUMNS: &str = "id, site_id, url, consecutive_failures, disabled_reason, last_failure_at, \
     last_failure_class, last_failure_status, last_failure_message";
const MEDIA_COLUMNS: &str = "id, site_id, app_media_id, content_type, content_url, body, metadata, status, review_note, decided_by, rule_group_id, ai_labels, applied_rules, processing_ms, created_at, updated_at, moderated_at";
/// On PostgreSQL, the condition that picks endpoint `e`'s first pending
/// delivery (as `p`). Written as `p.endpoint_id = e.id ... ORDER BY p.seq`,
/// the planner may read the primary key (seq order) from the oldest delivery
/// of all, filtering, until it meets the endpoint's head: it assumes pending
/// rows are spread evenly over seq, where in a queue they are the newest
/// (33,000 buffer reads a claim in the ordering benchmark). Matched as a range
/// and ordered on, the endpoint needs an ascending (endpoint_id, seq) index to
/// be read without a sort, and the pending partial index is the only one
/// (migration 0005).
const PG_ENDPOINT_HEAD: &str = "p.endpoint_id >= e.id AND p.endpoint_id <= e.id \
    AND p.status = 'pending' ORDER BY p.endpoint_id, p.seq LIMIT 1";

const DELIVERY_COLUMNS: &str = "seq, id, event_id, event_type, endpoint_id, site_id, ordering_key, status, attempts, next_attempt_at, last_status_code, last_error, created_at, updated_at";
const ATTEMPT_COLUMNS: &str = "delivery_id, attempt, started_at, duration_ms, status_code, response_body, error_class, error_message, next_attempt_at";

macro_rules! impl_sql_store {
    ($store:ident, $db:ty, $row:ty, $backend:literal, $is_postgres:literal) => {
        impl $store {
            const IS_POSTGRES: bool = $is_postgres;

            fn site_from(row: &$row) -> anyhow::Result<Site> {
                Ok(Site {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    url: row.try_get("url")?,
                    description: row.try_get("description")?,
                    key_hash: row.try_get("key_hash")?,
                    confidence_threshold: row.try_get("confidence_threshold")?,
                    external_analyzer_url: row.try_get("external_analyzer_url")?,
                    external_analyzer_secret: row.try_get("external_analyzer_secret")?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                })
            }

            fn endpoint_from(row: &$row) -> anyhow::Result<Endpoint> {
                let events: String = row.try_get("events")?;
                Ok(Endpoint {
                    id: row.try_get("id")?,
                    site_id: row.try_get("site_id")?,
                    url: row.try_get("url")?,
                    secret: row.try_get("secret")?,
                    events: parse_events(&events)?,
                    active: row.try_get("active")?,
                    description: row.try_get("description")?,
                    strict_ordering: row.try_get("strict_ordering")?,
                    disabled_reason: row.try_get("disabled_reason")?,
                    disabled_at: row.try_get("disabled_at")?,
                    health: EndpointHealthState {
                        consecutive_failures: row.try_get("consecutive_failures")?,
                        failing_since: row.try_get("failing_since")?,
                        last_success_at: row.try_get("last_success_at")?,
                        last_failure_at: row.try_get("last_failure_at")?,
                        last_failure_class: row.try_get("last_failure_class")?,
                        last_failure_status: row.try_get("last_failure_status")?,
                        last_failure_message: row.try_get("last_failure_message")?,
                    },
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                })
            }

            fn media_from(row: &$row) -> anyhow::Result<Media> {
                let metadata: String = row.try_get("metadata")?;
                Ok(Media {
                    id: row.try_get("id")?,
                    site_id: row.try_get("site_id")?,
                    app_media_id: row.try_get("app_media_id")?,
                    content_type: row.try_get("content_type")?,
                    content_url: row.try_get("content_url")?,
                    body: row.try_get("body")?,
                    metadata: serde_json::from_str(&metadata)?,
                    status: row.try_get("status")?,
                    review_note: row.try_get("review_note")?,
                    decided_by: row.try_get("decided_by")?,
                    rule_group_id: row.try_get("rule_group_id")?,
                    ai_results: AiLabels {
                        labels: json_column(row.try_get("ai_labels")?)?,
                    },
                    applied_rules: json_column(row.try_get("applied_rules")?)?,
                    processing_ms: row.try_get("processing_ms")?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                    moderated_at: row.try_get("moderated_at")?,
                })
            }

            fn rule_group_from(row: &$row) -> anyhow::Result<RuleGroup> {
                let rules: String = row.try_get("rules")?;
                Ok(RuleGroup {
                    id: row.try_get("id")?,
                    site_id: row.try_get("site_id")?,
                    name: row.try_get("name")?,
                    description: row.try_get("description")?,
                    is_default: row.try_get("is_default")?,
                    rules: serde_json::from_str(&rules)?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                })
            }

            /// Writes a rule group; a default group first takes the flag
            /// from the site's previous default (one default per site is
            /// also a unique index).
            async fn write_rule_group(
                tx: &mut sqlx::Transaction<'_, $db>,
                group: &RuleGroup,
                insert: bool,
            ) -> anyhow::Result<bool> {
                let rules = serde_json::to_string(&group.rules)?;
                if group.is_default {
                    sqlx::query(
                        "UPDATE rule_groups SET is_default = FALSE WHERE site_id = $1 AND is_default AND id <> $2",
                    )
                    .bind(&group.site_id)
                    .bind(&group.id)
                    .execute(&mut **tx)
                    .await?;
                }
                let sql = if insert {
                    "INSERT INTO rule_groups (name, description, is_default, rules, updated_at, id, site_id, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                } else {
                    // Only ever turned on here (turning another group on turns
                    // this one off above), so a concurrent change is not undone.
                    "UPDATE rule_groups SET name = $1, description = $2, is_default = (is_default OR $3), rules = $4, updated_at = $5 \
                     WHERE id = $6 AND site_id = $7 AND $8 = $8"
                };
                let result = sqlx::query(sql)
                    .bind(&group.name)
                    .bind(&group.description)
                    .bind(group.is_default)
                    .bind(rules)
                    .bind(group.updated_at)
                    .bind(&group.id)
                    .bind(&group.site_id)
                    .bind(group.created_at)
                    .execute(&mut **tx)
                    .await?;
                Ok(result.rows_affected() == 1)
            }

            fn change_from(row: &$row, kind: HealthChangeKind, at: i64) -> anyhow::Result<HealthChange> {
                let last_failure_at: Option<i64> = row.try_get("last_failure_at")?;
                Ok(HealthChange {
                    kind,
                    endpoint_id: row.try_get("id")?,
                    site_id: row.try_get("site_id")?,
                    url: row.try_get("url")?,
                    consecutive_failures: row.try_get("consecutive_failures")?,
                    reason: row.try_get("disabled_reason")?,
                    last_failure: match last_failure_at {
                        Some(at) => Some(FailureInfo {
                            at,
                            class: row.try_get("last_failure_class")?,
                            status_code: row.try_get("last_failure_status")?,
                            message: row.try_get("last_failure_message")?,
                        }),
                        None => None,
                    },
                    at,
                })
            }

            /// Writes the alert events of `changes` to the operator's alert
            /// endpoint, inside the caller's transaction.
            async fn write_alerts(
                tx: &mut sqlx::Transaction<'static, $db>,
                changes: &[HealthChange],
                health: &HealthPolicy,
            ) -> anyhow::Result<()> {
                let Some(alert_endpoint) = health.alert_endpoint_id.as_deref() else {
                    return Ok(());
                };
                if changes.is_empty() {
                    return Ok(());
                }
                let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE id = $1 AND active");
                let Some(row) = sqlx::query(&sql).bind(alert_endpoint).fetch_optional(&mut **tx).await? else {
                    return Ok(());
                };
                let endpoint = Self::endpoint_from(&row)?;
                let events: Vec<NewEvent> = changes
                    .iter()
                    .map(|change| alert_event(change, health.alert_first_delay_ms))
                    .collect::<anyhow::Result<_>>()?;
                let targets = [&endpoint];
                let pairs: Vec<(&NewEvent, &[&Endpoint])> =
                    events.iter().map(|event| (event, &targets[..])).collect();
                Self::insert_events(tx, &pairs, None).await
            }

            /// Folds attempt summaries into their endpoints' health, and
            /// returns the endpoints whose state changed.
            async fn update_health(
                tx: &mut sqlx::Transaction<'static, $db>,
                summaries: &[HealthSummary],
                health: &HealthPolicy,
            ) -> anyhow::Result<Vec<HealthChange>> {
                let mut summaries: Vec<&HealthSummary> = summaries.iter().collect();
                // Several workers update the same endpoints: taking the row
                // locks in one order keeps them from deadlocking.
                summaries.sort_by(|a, b| a.endpoint_id.cmp(&b.endpoint_id));
                let now = summaries
                    .iter()
                    .map(|summary| summary.finished_at)
                    .max()
                    .unwrap_or_default();
                // The stored streaks and alert states (locked on PostgreSQL
                // until commit), so the transitions are worked out exactly.
                let mut read = QueryBuilder::<$db>::new(format!(
                    "SELECT {CHANGE_COLUMNS}, alert_state, active FROM endpoints WHERE id IN ("
                ));
                let mut ids = read.separated(", ");
                for summary in &summaries {
                    ids.push_bind(summary.endpoint_id.as_str());
                }
                // NO KEY UPDATE: a submission inserting deliveries holds a
                // key-share lock on each endpoint row (the foreign key);
                // FOR UPDATE would conflict with it, and the two, taking
                // many endpoints in different orders, deadlocked.
                read.push(if Self::IS_POSTGRES {
                    ") ORDER BY id FOR NO KEY UPDATE"
                } else {
                    ") ORDER BY id"
                });
                let mut stored = HashMap::new();
                for row in read.build().persistent(false).fetch_all(&mut **tx).await? {
                    let state: String = row.try_get("alert_state")?;
                    let active: bool = row.try_get("active")?;
                    let change = Self::change_from(&row, HealthChangeKind::Failing, now)?;
                    stored.insert(change.endpoint_id.clone(), (change, state == "failing", active));
                }
                let mut changes = Vec::new();
                let mut updates = Vec::new();
                for summary in &summaries {
                    // The endpoint was deleted meanwhile.
                    let Some((stored, failing, active)) = stored.remove(&summary.endpoint_id) else {
                        continue;
                    };
                    let (streak, mut now_failing, mut transitions) =
                        summary.apply(stored.consecutive_failures, failing, health.failing_after);
                    // Disabled endpoints and the operator's own endpoint keep
                    // their alert state.
                    if !active || stored.site_id == OPERATOR_SITE_ID {
                        transitions.clear();
                        now_failing = failing;
                    }
                    for (kind, consecutive_failures) in transitions {
                        changes.push(HealthChange {
                            kind,
                            consecutive_failures,
                            last_failure: summary.last_failure.clone().or(stored.last_failure.clone()),
                            ..stored.clone()
                        });
                    }
                    updates.push((*summary, streak, if now_failing { "failing" } else { "healthy" }));
                }
                if !updates.is_empty() {
                    // One statement folds the run into each endpoint's state.
                    let mut update = QueryBuilder::<$db>::new(
                        "UPDATE endpoints SET \
                         consecutive_failures = v.column10, \
                         failing_since = CASE WHEN v.column3 = 0 THEN (CASE WHEN v.column2 = 1 THEN NULL ELSE failing_since END) \
                            WHEN v.column2 = 1 OR failing_since IS NULL THEN v.column4 ELSE failing_since END, \
                         last_success_at = CASE WHEN last_success_at IS NULL OR v.column5 > last_success_at \
                            THEN COALESCE(v.column5, last_success_at) ELSE last_success_at END, \
                         last_failure_at = COALESCE(v.column6, last_failure_at), \
                         last_failure_class = CASE WHEN v.column6 IS NULL THEN last_failure_class ELSE v.column7 END, \
                         last_failure_status = CASE WHEN v.column6 IS NULL THEN last_failure_status ELSE v.column8 END, \
                         last_failure_message = CASE WHEN v.column6 IS NULL THEN last_failure_message ELSE v.column9 END, \
                         alert_state = v.column11 \
                         FROM (",
                    );
                    update.push_values(&updates, |mut values, (summary, streak, state)| {
                        let failure = summary.last_failure.as_ref();
                        values
                            .push_bind(summary.endpoint_id.as_str())
                            .push_bind(i64::from(summary.had_success))
                            .push_bind(summary.trailing_failures)
                            .push_bind(summary.first_trailing_failure)
                            .push_bind(summary.last_success)
                            .push_bind(failure.map(|failure| failure.at))
                            .push_bind(failure.and_then(|failure| failure.class.clone()))
                            .push_bind(failure.and_then(|failure| failure.status_code))
                            .push_bind(failure.and_then(|failure| failure.message.clone()))
                            .push_bind(*streak)
                            .push_bind(*state);
                    });
                    update.push(") AS v WHERE endpoints.id = v.column1");
                    update.build().persistent(false).execute(&mut **tx).await?;
                }

                // A receiver that answers 410 Gone asks to be forgotten.
                let gone: Vec<&str> = summaries
                    .iter()
                    .filter(|summary| summary.gone)
                    .map(|summary| summary.endpoint_id.as_str())
                    .collect();
                if !gone.is_empty() {
                    let mut disable = QueryBuilder::<$db>::new("UPDATE endpoints SET active = FALSE, disabled_at = ");
                    disable
                        .push_bind(now)
                        .push(", disabled_reason = 'the receiver answered 410 Gone' WHERE active AND id IN (");
                    let mut ids = disable.separated(", ");
                    for id in &gone {
                        ids.push_bind(*id);
                    }
                    disable.push(format!(") RETURNING {CHANGE_COLUMNS}"));
                    for row in disable.build().persistent(false).fetch_all(&mut **tx).await? {
                        changes.push(Self::change_from(&row, HealthChangeKind::Disabled, now)?);
                    }
                }
                // The alert endpoint is never alerted about (that could loop),
                // but losing it must not go unnoticed.
                for change in changes.iter().filter(|change| change.site_id == OPERATOR_SITE_ID) {
                    tracing::error!(
                        url = %change.url,
                        reason = change.reason.as_deref(),
                        "the operator alert webhook was disabled: alerts are no longer delivered"
                    );
                }
                changes.retain(|change| change.site_id != OPERATOR_SITE_ID);
                Ok(changes)
            }

            fn delivery_from(row: &$row) -> anyhow::Result<Delivery> {
                let status: String = row.try_get("status")?;
                Ok(Delivery {
                    seq: row.try_get("seq")?,
                    id: row.try_get("id")?,
                    event_id: row.try_get("event_id")?,
                    event: row.try_get("event_type")?,
                    webhook_id: row.try_get("endpoint_id")?,
                    site_id: row.try_get("site_id")?,
                    media_id: row.try_get("ordering_key")?,
                    status: DeliveryStatus::parse(&status)
                        .with_context(|| format!("unknown delivery status {status:?}"))?,
                    attempt_count: row.try_get("attempts")?,
                    next_attempt_at: row.try_get("next_attempt_at")?,
                    last_status_code: row.try_get("last_status_code")?,
                    last_error: row.try_get("last_error")?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                    attempts: Vec::new(),
                })
            }

            fn attempt_from(row: &$row) -> anyhow::Result<Attempt> {
                Ok(Attempt {
                    delivery_id: row.try_get("delivery_id")?,
                    attempt: row.try_get("attempt")?,
                    started_at: row.try_get("started_at")?,
                    duration_ms: row.try_get("duration_ms")?,
                    status_code: row.try_get("status_code")?,
                    response_body: row.try_get("response_body")?,
                    error_class: row.try_get("error_class")?,
                    error_message: row.try_get("error_message")?,
                    next_attempt_at: row.try_get("next_attempt_at")?,
                })
            }

            /// Writes an event and one pending delivery per given endpoint,
            /// inside the caller's transaction (the outbox write).
            async fn insert_event(
                tx: &mut sqlx::Transaction<'static, $db>,
                event: &NewEvent,
                endpoints: &[&Endpoint],
                leased: Option<(&str, &str, i64)>,
            ) -> anyhow::Result<()> {
                Self::insert_events(tx, &[(event, endpoints)], leased).await
            }

            /// Writes events and their deliveries with a few multi-row
            /// statements, inside the caller's transaction.
            async fn insert_events(
                tx: &mut sqlx::Transaction<'static, $db>,
                events: &[(&NewEvent, &[&Endpoint])],
                leased: Option<(&str, &str, i64)>,
            ) -> anyhow::Result<()> {
                Self::insert_events_with(tx, events, leased, true).await
            }

            /// As `insert_events`; without `write_event_rows` only the
            /// deliveries are written (the events exist: a resend).
            async fn insert_events_with(
                tx: &mut sqlx::Transaction<'static, $db>,
                events: &[(&NewEvent, &[&Endpoint])],
                leased: Option<(&str, &str, i64)>,
                write_event_rows: bool,
            ) -> anyhow::Result<()> {
                if Self::IS_POSTGRES {
                    // Sequence numbers are handed out before commit, so two
                    // concurrent transactions could commit in the opposite
                    // order of their numbers. For strict-order endpoints that
                    // would let a later event overtake an earlier one, so
                    // writers to such an endpoint take turns. Sorted ids keep
                    // two writers from waiting on each other.
                    let mut strict: Vec<&str> = events
                        .iter()
                        .flat_map(|(_, endpoints)| endpoints.iter())
                        .filter(|endpoint| endpoint.strict_ordering)
                        .map(|endpoint| endpoint.id.as_str())
                        .collect();
                    strict.sort_unstable();
                    strict.dedup();
                    for endpoint_id in strict {
                        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                            .bind(endpoint_id)
                            .execute(&mut **tx)
                            .await?;
                    }
                }
                // Chunks keep each statement under SQLite's bound-parameter limit.
                for chunk in events.chunks(1000).filter(|_| write_event_rows) {
                    let mut insert = QueryBuilder::<$db>::new(
                        "INSERT INTO events (id, site_id, event_type, media_id, payload, created_at) ",
                    );
                    insert.push_values(chunk, |mut values, (event, _)| {
                        values
                            .push_bind(&event.id)
                            .push_bind(&event.site_id)
                            .push_bind(event.event_type.as_str())
                            .push_bind(&event.media_id)
                            .push_bind(&event.payload)
                            .push_bind(event.created_at);
                    });
                    insert.build().persistent(false).execute(&mut **tx).await?;
                }
                let deliveries: Vec<(&NewEvent, &Endpoint)> = events
                    .iter()
                    .flat_map(|(event, endpoints)| endpoints.iter().map(move |endpoint| (*event, *endpoint)))
                    .collect();
                for chunk in deliveries.chunks(2000) {
                    let mut insert = QueryBuilder::<$db>::new(
                        "INSERT INTO deliveries (id, event_id, endpoint_id, site_id, event_type, \
                         ordering_key, status, attempts, next_attempt_at, lease_until, lease_token, \
                         created_at, updated_at) ",
                    );
                    insert.push_values(chunk, |mut values, (event, endpoint)| {
                        let id = match leased {
                            Some((delivery_id, _, _)) => delivery_id.to_string(),
                            None => crate::util::new_id("dlv"),
                        };
                        values
                            .push_bind(id)
                            .push_bind(&event.id)
                            .push_bind(&endpoint.id)
                            .push_bind(&event.site_id)
                            .push_bind(event.event_type.as_str())
                            .push_bind(&event.media_id)
                            .push_bind(DeliveryStatus::Pending.as_str())
                            .push_bind(0_i64)
                            .push_bind(event.deliver_at)
                            .push_bind(leased.map(|(_, _, until)| until))
                            .push_bind(leased.map(|(_, token, _)| token.to_string()))
                            .push_bind(event.created_at)
                            .push_bind(event.created_at);
                    });
                    insert.build().persistent(false).execute(&mut **tx).await?;
                }
                Ok(())
            }

            /// The site's active endpoints subscribed to the event, read inside
            /// the transaction that writes the event.
            async fn subscribed_endpoints(
                tx: &mut sqlx::Transaction<'static, $db>,
                site_id: &str,
                event: EventType,
            ) -> anyhow::Result<Vec<Endpoint>> {
                let sql = format!(
                    "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE site_id = $1 AND active ORDER BY created_at, id"
                );
                let rows = sqlx::query(&sql).bind(site_id).fetch_all(&mut **tx).await?;
                let mut endpoints = Vec::with_capacity(rows.len());
                for row in &rows {
                    let endpoint = Self::endpoint_from(row)?;
                    if endpoint.subscribes_to(event) {
                        endpoints.push(endpoint);
                    }
                }
                Ok(endpoints)
            }

            /// Writes media items with their `media.created` events and
            /// deliveries, all in one transaction.
            async fn write_media_batch(
                pool: &sqlx::Pool<$db>,
                items: &[NewMedia],
            ) -> anyhow::Result<()> {
                let mut tx = pool.begin().await?;
                for chunk in items.chunks(1000) {
                    let mut insert = QueryBuilder::<$db>::new(
                        "INSERT INTO media (id, site_id, app_media_id, content_type, content_url, body, \
                         metadata, status, review_note, decided_by, rule_group_id, created_at, updated_at, moderated_at) ",
                    );
                    insert.push_values(chunk, |mut values, (media, _, _)| {
                        values
                            .push_bind(&media.id)
                            .push_bind(&media.site_id)
                            .push_bind(&media.app_media_id)
                            .push_bind(&media.content_type)
                            .push_bind(&media.content_url)
                            .push_bind(&media.body)
                            .push_bind(media.metadata.to_string())
                            .push_bind(&media.status)
                            .push_bind(&media.review_note)
                            .push_bind(&media.decided_by)
                            .push_bind(&media.rule_group_id)
                            .push_bind(media.created_at)
                            .push_bind(media.updated_at)
                            .push_bind(media.moderated_at);
                    });
                    insert.build().persistent(false).execute(&mut *tx).await?;
                    let analyze: Vec<&Media> = chunk
                        .iter()
                        .filter(|(_, _, analyze)| *analyze)
                        .map(|(media, _, _)| media)
                        .collect();
                    if !analyze.is_empty() {
                        let mut jobs = QueryBuilder::<$db>::new(
                            "INSERT INTO moderation_jobs (media_id, attempts, due_at, created_at) ",
                        );
                        jobs.push_values(analyze, |mut values, media| {
                            values
                                .push_bind(&media.id)
                                .push_bind(0_i64)
                                .push_bind(media.created_at)
                                .push_bind(media.created_at);
                        });
                        jobs.build().persistent(false).execute(&mut *tx).await?;
                    }
                }
                // Each site's subscribers are read once per batch.
                let mut subscribers: HashMap<(String, EventType), Vec<Endpoint>> = HashMap::new();
                for (media, event, _) in items {
                    let key = (media.site_id.clone(), event.event_type);
                    if !subscribers.contains_key(&key) {
                        let endpoints =
                            Self::subscribed_endpoints(&mut tx, &media.site_id, event.event_type)
                                .await?;
                        subscribers.insert(key, endpoints);
                    }
                }
                let targets: Vec<Vec<&Endpoint>> = items
                    .iter()
                    .map(|(media, event, _)| {
                        subscribers[&(media.site_id.clone(), event.event_type)]
                            .iter()
                            .collect()
                    })
                    .collect();
                let events: Vec<(&NewEvent, &[&Endpoint])> = items
                    .iter()
                    .zip(&targets)
                    .map(|((_, event, _), endpoints)| (event, endpoints.as_slice()))
                    .collect();
                Self::insert_events(&mut tx, &events, None).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn attach_attempts(&self, deliveries: &mut [Delivery]) -> anyhow::Result<()> {
                if deliveries.is_empty() {
                    return Ok(());
                }
                let mut query = QueryBuilder::<$db>::new(format!(
                    "SELECT {ATTEMPT_COLUMNS} FROM delivery_attempts WHERE delivery_id IN ("
                ));
                let mut ids = query.separated(", ");
                for delivery in deliveries.iter() {
                    ids.push_bind(delivery.id.clone());
                }
                query.push(") ORDER BY delivery_id, attempt, seq");
                let rows = query.build().persistent(false).fetch_all(&self.read).await?;
                for row in &rows {
                    let attempt = Self::attempt_from(row)?;
                    if let Some(delivery) = deliveries
                        .iter_mut()
                        .find(|delivery| delivery.id == attempt.delivery_id)
                    {
                        delivery.attempts.push(attempt);
                    }
                }
                Ok(())
            }
        }

        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn get_setting(&self, key: &str) -> anyhow::Result<Option<String>> {
                let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
                    .bind(key)
                    .fetch_optional(&self.read)
                    .await?;
                Ok(row.map(|row| row.try_get("value")).transpose()?)
            }

            async fn put_setting_if_absent(&self, key: &str, value: &str) -> anyhow::Result<String> {
                sqlx::query(
                    "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                )
                .bind(key)
                .bind(value)
                .execute(&self.write)
                .await?;
                let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
                    .bind(key)
                    .fetch_one(&self.write)
                    .await?;
                Ok(row.try_get("value")?)
            }

            async fn create_site(&self, site: &Site, default_group: &RuleGroup) -> anyhow::Result<()> {
                let mut tx = self.write.begin().await?;
                sqlx::query(
                    "INSERT INTO sites (id, name, url, description, key_hash, confidence_threshold, \
                     external_analyzer_url, external_analyzer_secret, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(&site.id)
                .bind(&site.name)
                .bind(&site.url)
                .bind(&site.description)
                .bind(&site.key_hash)
                .bind(site.confidence_threshold)
                .bind(&site.external_analyzer_url)
                .bind(&site.external_analyzer_secret)
                .bind(site.created_at)
                .bind(site.updated_at)
                .execute(&mut *tx)
                .await?;
                Self::write_rule_group(&mut tx, default_group, true).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn list_sites(&self) -> anyhow::Result<Vec<Site>> {
                let sql = format!("SELECT {SITE_COLUMNS} FROM sites ORDER BY created_at, id");
                let rows = sqlx::query(&sql).fetch_all(&self.read).await?;
                rows.iter().map(Self::site_from).collect()
            }

            async fn get_site(&self, id: &str) -> anyhow::Result<Option<Site>> {
                let sql = format!("SELECT {SITE_COLUMNS} FROM sites WHERE id = $1");
                let row = sqlx::query(&sql).bind(id).fetch_optional(&self.read).await?;
                row.as_ref().map(Self::site_from).transpose()
            }

            async fn site_by_key_hash(&self, key_hash: &str) -> anyhow::Result<Option<Site>> {
                let sql = format!("SELECT {SITE_COLUMNS} FROM sites WHERE key_hash = $1");
                let row = sqlx::query(&sql)
                    .bind(key_hash)
                    .fetch_optional(&self.read)
                    .await?;
                row.as_ref().map(Self::site_from).transpose()
            }

            async fn update_site(&self, site: &Site) -> anyhow::Result<bool> {
                let result = sqlx::query(
                    "UPDATE sites SET name = $1, url = $2, description = $3, updated_at = $4, \
                     confidence_threshold = $6, external_analyzer_url = $7, external_analyzer_secret = $8 \
                     WHERE id = $5",
                )
                .bind(&site.name)
                .bind(&site.url)
                .bind(&site.description)
                .bind(site.updated_at)
                .bind(&site.id)
                .bind(site.confidence_threshold)
                .bind(&site.external_analyzer_url)
                .bind(&site.external_analyzer_secret)
                .execute(&self.write)
                .await?;
                Ok(result.rows_affected() == 1)
            }

            async fn list_rule_groups(&self, site_id: &str) -> anyhow::Result<Vec<RuleGroup>> {
                let sql = format!("SELECT {RULE_GROUP_COLUMNS} FROM rule_groups WHERE site_id = $1 ORDER BY id");
                let rows = sqlx::query(&sql).bind(site_id).fetch_all(&self.read).await?;
                rows.iter().map(Self::rule_group_from).collect()
            }

            async fn get_rule_group(&self, site_id: &str, id: &str) -> anyhow::Result<Option<RuleGroup>> {
                let sql = format!("SELECT {RULE_GROUP_COLUMNS} FROM rule_groups WHERE site_id = $1 AND id = $2");
                let row = sqlx::query(&sql).bind(site_id).bind(id).fetch_optional(&self.read).await?;
                row.as_ref().map(Self::rule_group_from).transpose()
            }

            async fn default_rule_group(&self, site_id: &str) -> anyhow::Result<Option<RuleGroup>> {
                let sql = format!("SELECT {RULE_GROUP_COLUMNS} FROM rule_groups WHERE site_id = $1 AND is_default");
                let row = sqlx::query(&sql).bind(site_id).fetch_optional(&self.read).await?;
                row.as_ref().map(Self::rule_group_from).transpose()
            }

            async fn create_rule_group(&self, group: &RuleGroup) -> anyhow::Result<()> {
                let mut tx = self.write.begin().await?;
                Self::write_rule_group(&mut tx, group, true).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn update_rule_group(&self, group: &RuleGroup) -> anyhow::Result<bool> {
                let mut tx = self.write.begin().await?;
                let updated = Self::write_rule_group(&mut tx, group, false).await?;
                if updated {
                    tx.commit().await?;
                }
                Ok(updated)
            }

            async fn delete_rule_group(&self, site_id: &str, id: &str) -> anyhow::Result<bool> {
                let result = sqlx::query(
                    "DELETE FROM rule_groups WHERE site_id = $1 AND id = $2 AND NOT is_default",
                )
                .bind(site_id)
                .bind(id)
                .execute(&self.write)
                .await?;
                Ok(result.rows_affected() == 1)
            }

            async fn delete_site(&self, id: &str) -> anyhow::Result<bool> {
                let result = sqlx::query("DELETE FROM sites WHERE id = $1")
                    .bind(id)
                    .execute(&self.write)
                    .await?;
                Ok(result.rows_affected() == 1)
            }

            async fn create_endpoint(&self, endpoint: &Endpoint) -> anyhow::Result<()> {
                sqlx::query(
                    "INSERT INTO endpoints (id, site_id, url, secret, events, active, description, \
                     strict_ordering, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(&endpoint.id)
                .bind(&endpoint.site_id)
                .bind(&endpoint.url)
                .bind(&endpoint.secret)
                .bind(join_events(&endpoint.events))
                .bind(endpoint.active)
                .bind(&endpoint.description)
                .bind(endpoint.strict_ordering)
                .bind(endpoint.created_at)
                .bind(endpoint.updated_at)
                .execute(&self.write)
                .await?;
                Ok(())
            }

            async fn list_endpoints(&self, site_id: &str) -> anyhow::Result<Vec<Endpoint>> {
                let sql = format!(
                    "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE site_id = $1 ORDER BY created_at, id"
                );
                let rows = sqlx::query(&sql).bind(site_id).fetch_all(&self.read).await?;
                rows.iter().map(Self::endpoint_from).collect()
            }

            async fn get_endpoint(&self, site_id: &str, id: &str) -> anyhow::Result<Option<Endpoint>> {
                let sql = format!(
                    "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE site_id = $1 AND id = $2"
                );
                let row = sqlx::query(&sql)
                    .bind(site_id)
                    .bind(id)
                    .fetch_optional(&self.read)
                    .await?;
                row.as_ref().map(Self::endpoint_from).transpose()
            }

            async fn update_endpoint(
                &self,
                endpoint: &Endpoint,
                set_active: bool,
                now_ms: i64,
            ) -> anyhow::Result<bool> {
                let mut tx = self.write.begin().await?;
                let reactivated = set_active && endpoint.active && {
                    let was: Option<bool> = sqlx::query_scalar(
                        "SELECT active FROM endpoints WHERE id = $1 AND site_id = $2",
                    )
                    .bind(&endpoint.id)
                    .bind(&endpoint.site_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    was == Some(false)
                };
                // The right-hand `active` is the value before the update.
                let result = sqlx::query(
                    "UPDATE endpoints SET url = $1, secret = $2, events = $3, \
                     description = $5, strict_ordering = $6, updated_at = $7, \
                     disabled_reason = CASE WHEN $10 AND $4 THEN NULL ELSE disabled_reason END, \
                     disabled_at = CASE WHEN $10 AND $4 THEN NULL ELSE disabled_at END, \
                     consecutive_failures = CASE WHEN $10 AND $4 AND NOT active THEN 0 ELSE consecutive_failures END, \
                     failing_since = CASE WHEN $10 AND $4 AND NOT active THEN NULL ELSE failing_since END, \
                     alert_state = CASE WHEN $10 AND $4 AND NOT active THEN 'healthy' ELSE alert_state END, \
                     active = CASE WHEN $10 THEN $4 ELSE active END \
                     WHERE id = $8 AND site_id = $9",
                )
                .bind(&endpoint.url)
                .bind(&endpoint.secret)
                .bind(join_events(&endpoint.events))
                .bind(endpoint.active)
                .bind(&endpoint.description)
                .bind(endpoint.strict_ordering)
                .bind(endpoint.updated_at)
                .bind(&endpoint.id)
                .bind(&endpoint.site_id)
                .bind(set_active)
                .execute(&mut *tx)
                .await?;
                if reactivated {
                    // What waited for the endpoint goes now, in its order.
                    sqlx::query(
                        "UPDATE deliveries SET next_attempt_at = $2 \
                         WHERE endpoint_id = $1 AND status = 'pending' AND next_attempt_at > $2",
                    )
                    .bind(&endpoint.id)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(result.rows_affected() == 1)
            }

            async fn delete_endpoint(&self, site_id: &str, id: &str) -> anyhow::Result<bool> {
                let result = sqlx::query("DELETE FROM endpoints WHERE id = $1 AND site_id = $2")
                    .bind(id)
                    .bind(site_id)
                    .execute(&self.write)
                    .await?;
                Ok(result.rows_affected() == 1)
            }

            async fn create_media(&self, media: &Media, event: &NewEvent, analyze: bool) -> anyhow::Result<()> {
                let item = (media.clone(), event.clone(), analyze);
                match self.media_batcher() {
                    Some(batcher) => batcher.submit(item).await,
                    None => Self::write_media_batch(&self.write, &[item]).await,
                }
            }

            async fn get_media(&self, id: &str) -> anyhow::Result<Option<Media>> {
                let sql = format!("SELECT {MEDIA_COLUMNS} FROM media WHERE id = $1");
                let row = sqlx::query(&sql).bind(id).fetch_optional(&self.read).await?;
                row.as_ref().map(Self::media_from).transpose()
            }

            async fn list_media(&self, site_id: &str, filter: &MediaFilter) -> anyhow::Result<Vec<Media>> {
                let mut query = QueryBuilder::<$db>::new(format!("SELECT {MEDIA_COLUMNS} FROM media WHERE site_id = "));
                query.push_bind(site_id);
                if let Some(status) = &filter.status {
                    query.push(" AND status = ").push_bind(status);
                }
                if let Some(before) = &filter.before_id {
                    query.push(" AND id < ").push_bind(before);
                }
                query.push(" ORDER BY id DESC LIMIT ").push_bind(filter.limit);
                let rows = query.build().persistent(false).fetch_all(&self.read).await?;
                rows.iter().map(Self::media_from).collect()
            }

            async fn decide_media(
                &self,
                media_id: &str,
                decision: &DecisionRecord,
                event: &NewEvent,
                job: Option<&ModerationJob>,
            ) -> anyhow::Result<DecideOutcome> {
                let mut tx = self.write.begin().await?;
                if job.is_none() {
                    // A person decided: any analysis still queued is moot.
                    sqlx::query("DELETE FROM moderation_jobs WHERE media_id = $1")
                        .bind(media_id)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some(job) = job {
                    let removed = sqlx::query(
                        "DELETE FROM moderation_jobs WHERE media_id = $1 AND lease_token = $2",
                    )
                    .bind(media_id)
                    .bind(&job.lease_token)
                    .execute(&mut *tx)
                    .await?;
                    if removed.rows_affected() != 1 {
                        return Ok(DecideOutcome::LeaseLost);
                    }
                }
                let (labels, rules, processing_ms) = match &decision.analysis {
                    Some((labels, rules, processing_ms)) => (
                        Some(serde_json::to_string(labels)?),
                        Some(serde_json::to_string(rules)?),
                        Some(*processing_ms),
                    ),
                    None => (None, None, None),
                };
                // Updating the row first also serialises concurrent decisions
                // about one item, so their events are numbered in commit order.
                // An automatic decision never replaces a person's.
                let sql = format!(
                    "UPDATE media SET status = $1, decided_by = $2, review_note = $3, \
                     moderated_at = $4, updated_at = $4, ai_labels = COALESCE($5, ai_labels), \
                     applied_rules = COALESCE($6, applied_rules), processing_ms = COALESCE($7, processing_ms) \
                     WHERE id = $8 AND ($9 OR decided_by IS NULL OR decided_by <> 'manual') \
                     RETURNING {MEDIA_COLUMNS}"
                );
                let row = sqlx::query(&sql)
                    .bind(&decision.status)
                    .bind(&decision.decided_by)
                    .bind(&decision.note)
                    .bind(decision.moderated_at)
                    .bind(labels)
                    .bind(rules)
                    .bind(processing_ms)
                    .bind(media_id)
                    .bind(job.is_none())
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(row) = row else {
                    if job.is_some() {
                        // The job is done all the same.
                        tx.commit().await?;
                        return Ok(DecideOutcome::ManuallyReviewed);
                    }
                    return Ok(DecideOutcome::NotFound);
                };
                let media = Self::media_from(&row)?;
                let endpoints =
                    Self::subscribed_endpoints(&mut tx, &media.site_id, event.event_type).await?;
                let targets: Vec<&Endpoint> = endpoints.iter().collect();
                Self::insert_event(&mut tx, event, &targets, None).await?;
                tx.commit().await?;
                Ok(DecideOutcome::Decided(Box::new(media)))
            }

            async fn enqueue_moderation(&self, media_id: &str, now_ms: i64) -> anyhow::Result<()> {
                sqlx::query(
                    "INSERT INTO moderation_jobs (media_id, attempts, due_at, created_at) VALUES ($1, 0, $2, $2) \
                     ON CONFLICT (media_id) DO UPDATE SET attempts = 0, due_at = $2, created_at = $2, \
                     lease_token = NULL, leased_until = NULL",
                )
                .bind(media_id)
                .bind(now_ms)
                .execute(&self.write)
                .await?;
                Ok(())
            }

            async fn claim_moderation_jobs(
                &self,
                lease_token: &str,
                now_ms: i64,
                lease_until_ms: i64,
                limit: i64,
            ) -> anyhow::Result<Vec<ModerationJob>> {
                let lock = if Self::IS_POSTGRES { "FOR UPDATE SKIP LOCKED" } else { "" };
                let sql = format!(
                    "UPDATE moderation_jobs SET lease_token = $1, leased_until = $2, attempts = attempts + 1 \
                     WHERE media_id IN (SELECT media_id FROM moderation_jobs \
                       WHERE due_at <= $3 AND (leased_until IS NULL OR leased_until < $3) \
                       ORDER BY due_at LIMIT $4 {lock}) \
                     RETURNING media_id, attempts, created_at"
                );
                let mut tx = self.write.begin().await?;
                let rows = sqlx::query(&sql)
                    .bind(lease_token)
                    .bind(lease_until_ms)
                    .bind(now_ms)
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await?;
                let mut leased: HashMap<String, (i64, i64)> = HashMap::new();
                for row in &rows {
                    leased.insert(row.try_get("media_id")?, (row.try_get("attempts")?, row.try_get("created_at")?));
                }
                let mut jobs = Vec::with_capacity(leased.len());
                if !leased.is_empty() {
                    let mut query = QueryBuilder::<$db>::new(format!("SELECT {MEDIA_COLUMNS} FROM media WHERE id IN ("));
                    let mut ids = query.separated(", ");
                    for id in leased.keys() {
                        ids.push_bind(id);
                    }
                    query.push(") ORDER BY id");
                    for row in query.build().persistent(false).fetch_all(&mut *tx).await? {
                        let media = Self::media_from(&row)?;
                        let (attempts, requested_at) = leased[&media.id];
                        jobs.push(ModerationJob {
                            media,
                            lease_token: lease_token.to_string(),
                            attempts,
                            requested_at,
                        });
                    }
                }
                tx.commit().await?;
                Ok(jobs)
            }

            async fn create_leased_delivery(
                &self,
                endpoint: &Endpoint,
                event: &NewEvent,
                delivery_id: &str,
                lease_token: &str,
                lease_until_ms: i64,
            ) -> anyhow::Result<ClaimedDelivery> {
                let mut tx = self.write.begin().await?;
                Self::insert_event(
                    &mut tx,
                    event,
                    &[endpoint],
                    Some((delivery_id, lease_token, lease_until_ms)),
                )
                .await?;
                tx.commit().await?;
                Ok(ClaimedDelivery {
                    id: delivery_id.to_string(),
                    lease_token: lease_token.to_string(),
                    event_id: event.id.clone(),
                    event_type: event.event_type.as_str().to_string(),
                    endpoint_id: endpoint.id.clone(),
                    url: endpoint.url.clone(),
                    secret: endpoint.secret.clone(),
                    payload: event.payload.clone(),
                    event_created_at: event.created_at,
                    previous_attempts: 0,
                })
            }

            async fn claim_deliveries(
                &self,
                request: ClaimRequest<'_>,
            ) -> anyhow::Result<Vec<ClaimedDelivery>> {
                // A delivery is due when its time has come, nobody holds a
                // live lease on it, its endpoint is active and nothing earlier
                // in its lane is still pending: per media item always, and for
                // the whole endpoint when it asks for strict ordering.
                //
                // The search runs per endpoint (at most its cap from each), so
                // an endpoint left out (at its cap, e.g. hanging) or with a
                // large backlog costs nothing to the others' claims.
                // PostgreSQL runs the per-endpoint search as a LATERAL join;
                // SQLite, which has no LATERAL, as a correlated IN.
                let push_skipped = |claim: &mut QueryBuilder<'_, $db>| {
                    if !request.skip_endpoints.is_empty() {
                        claim.push(" AND e.id NOT IN (");
                        let mut ids = claim.separated(", ");
                        for id in request.skip_endpoints {
                            ids.push_bind(id.clone());
                        }
                        claim.push(")");
                    }
                };
                let mut claim = QueryBuilder::<$db>::new(if Self::IS_POSTGRES {
                    "WITH candidates AS (SELECT d.seq, d.endpoint_id, d.next_attempt_at \
                     FROM endpoints e CROSS JOIN LATERAL (\
                        SELECT x.seq, x.endpoint_id, x.next_attempt_at FROM deliveries x "
                } else {
                    "WITH candidates AS (SELECT d.seq, d.endpoint_id, d.next_attempt_at \
                     FROM endpoints e JOIN deliveries d ON d.seq IN (\
                        SELECT x.seq FROM deliveries x "
                });
                claim
                    .push(
                        "WHERE x.endpoint_id = e.id AND x.status = 'pending' \
                         AND x.next_attempt_at <= ",
                    )
                    .push_bind(request.now_ms)
                    .push(" AND (x.lease_until IS NULL OR x.lease_until < ")
                    .push_bind(request.now_ms)
                    .push(if Self::IS_POSTGRES {
                        // Written as a per-row lookup of the lane's first
                        // pending delivery so that PostgreSQL seeks the lane
                        // index on (endpoint, key) for each candidate (as an
                        // anti-join it sometimes scanned the endpoint's whole
                        // lane index per candidate instead), evaluated only
                        // until the endpoint's cap is found. `<=` is `=` here
                        // (the candidate is itself pending in its lane) but
                        // lets the planner assume that many candidates pass,
                        // as they do; with `=` it assumed almost none would
                        // and read and sorted every due delivery first.
                        ") AND x.seq <= (SELECT MIN(p.seq) FROM deliveries p \
                            WHERE p.endpoint_id = x.endpoint_id AND p.ordering_key = x.ordering_key \
                            AND p.status = 'pending') \
                         ORDER BY x.next_attempt_at, x.seq LIMIT "
                    } else {
                        ") AND NOT EXISTS (SELECT 1 FROM deliveries p \
                            WHERE p.endpoint_id = x.endpoint_id AND p.ordering_key = x.ordering_key \
                            AND p.status = 'pending' AND p.seq < x.seq) \
                         ORDER BY x.next_attempt_at, x.seq LIMIT "
                    })
                    .push_bind(request.max_per_endpoint);
                claim.push(if Self::IS_POSTGRES {
                    ") d WHERE e.active AND NOT e.strict_ordering"
                } else {
                    ") WHERE e.active AND NOT e.strict_ordering"
                });
                push_skipped(&mut claim);
                // A strict-order endpoint can only ever send its first
                // pending delivery: it is looked up directly (the search
                // above would test every due delivery of its backlog against
                // the ones before it, at every claim).
                if Self::IS_POSTGRES {
                    // LIMIT keeps the subquery from being flattened into a
                    // join PostgreSQL may hash against a scan of the whole
                    // table. The head is looked up with `PG_ENDPOINT_HEAD`:
                    // see there why it is not `endpoint_id = e.id ORDER BY seq`.
                    claim
                        .push(
                            " UNION ALL SELECT h.seq, h.endpoint_id, h.next_attempt_at \
                             FROM endpoints e CROSS JOIN LATERAL (SELECT p.seq, p.endpoint_id, \
                                p.next_attempt_at, p.lease_until FROM deliveries p WHERE ",
                        )
                        .push(PG_ENDPOINT_HEAD)
                        .push(") h ");
                } else {
                    claim.push(
                        " UNION ALL SELECT h.seq, h.endpoint_id, h.next_attempt_at \
                         FROM endpoints e JOIN deliveries h ON h.seq = (SELECT MIN(p.seq) \
                            FROM deliveries p WHERE p.endpoint_id = e.id AND p.status = 'pending') ",
                    );
                }
                claim
                    .push("WHERE e.active AND e.strict_ordering AND h.next_attempt_at <= ")
                    .push_bind(request.now_ms)
                    .push(" AND (h.lease_until IS NULL OR h.lease_until < ")
                    .push_bind(request.now_ms)
                    .push(")");
                push_skipped(&mut claim);
                claim
                    .push(" ORDER BY next_attempt_at, seq LIMIT ")
                    .push_bind(request.limit.saturating_mul(4));
                claim.push(
                    "), ranked AS (SELECT seq, next_attempt_at, endpoint_id, ROW_NUMBER() OVER \
                     (PARTITION BY endpoint_id ORDER BY next_attempt_at, seq) AS place \
                     FROM candidates) ",
                );
                // Which ranked candidates are taken: each endpoint's room,
                // the earliest due first.
                let push_choice = |claim: &mut QueryBuilder<'_, $db>, limit: i64| {
                    claim.push("SELECT seq FROM ranked WHERE place <= ");
                    if request.endpoint_room.is_empty() {
                        claim.push_bind(request.max_per_endpoint);
                    } else {
                        claim.push("CASE endpoint_id");
                        for (endpoint_id, room) in request.endpoint_room {
                            claim
                                .push(" WHEN ")
                                .push_bind(endpoint_id.clone())
                                .push(" THEN ")
                                .push_bind(*room);
                        }
                        claim
                            .push(" ELSE ")
                            .push_bind(request.max_per_endpoint)
                            .push(" END");
                    }
                    claim
                        .push(" ORDER BY next_attempt_at, seq LIMIT ")
                        .push_bind(limit);
                };
                if Self::IS_POSTGRES {
                    // The search above locks nothing (locking every candidate
                    // it looked at took most of the database's time); only the
                    // chosen rows are locked, skipping those another process
                    // holds. A row another process changed and committed
                    // meanwhile (leased, recorded with a later retry, its
                    // endpoint disabled) is checked again here and left out.
                    // Processes searching at once find the same first rows:
                    // choosing among more than needed, the limit applied
                    // after skipping, leaves each of them a full batch. The
                    // choice is handed over as an array so that the rows are
                    // fetched by key whatever the statistics say (as `IN`,
                    // the planner joined it against every due delivery).
                    claim.push(
                        ", chosen AS (SELECT seq FROM deliveries WHERE status = 'pending' \
                         AND endpoint_id IN (SELECT id FROM endpoints WHERE active) \
                         AND next_attempt_at <= ",
                    );
                    claim
                        .push_bind(request.now_ms)
                        .push(" AND (lease_until IS NULL OR lease_until < ")
                        .push_bind(request.now_ms)
                        .push(") AND seq = ANY(ARRAY(");
                    push_choice(&mut claim, request.limit.saturating_mul(2));
                    claim
                        .push(")) ORDER BY next_attempt_at, seq LIMIT ")
                        .push_bind(request.limit)
                        .push(" FOR UPDATE SKIP LOCKED), claimed AS (");
                }
                claim
                    .push("UPDATE deliveries SET lease_until = ")
                    .push_bind(request.lease_until_ms);
                if !Self::IS_POSTGRES {
                    // On SQLite a leased delivery is next due when its lease
                    // ends: that keeps in-flight and not yet recorded
                    // deliveries out of the due index range the next claims
                    // scan, and an expired lease makes the delivery due again
                    // by itself. PostgreSQL would pay more for it: changing an
                    // indexed column makes the update write a new entry in
                    // every index of the table, where touching only unindexed
                    // columns is a heap-only (HOT) update.
                    claim
                        .push(", next_attempt_at = ")
                        .push_bind(request.lease_until_ms);
                }
                claim
                    .push(", lease_token = ")
                    .push_bind(request.lease_token)
                    .push(" WHERE seq IN (");
                if Self::IS_POSTGRES {
                    claim.push("SELECT seq FROM chosen");
                } else {
                    push_choice(&mut claim, request.limit);
                }
                claim.push(")");
                let detail_columns = "d.id, d.event_id, d.event_type, d.endpoint_id, d.attempts, \
                     e.url, e.secret, ev.payload, ev.created_at AS event_created_at";
                let rows = if Self::IS_POSTGRES {
                    // One round trip: the leased rows joined with their
                    // endpoints and events.
                    claim.push(format!(
                        " RETURNING seq, id, event_id, event_type, endpoint_id, attempts) \
                         SELECT {detail_columns} FROM claimed d \
                         JOIN endpoints e ON e.id = d.endpoint_id \
                         JOIN events ev ON ev.id = d.event_id ORDER BY d.seq"
                    ));
                    claim.build().persistent(false).fetch_all(&self.write).await?
                } else {
                    // SQLite cannot join in RETURNING: the writer returns the
                    // sequence numbers, and a reader (beside the writer, which
                    // is the bottleneck) fetches what sending needs.
                    claim.push(" RETURNING seq");
                    let seqs: Vec<i64> = claim
                        .build_query_scalar().persistent(false)
                        .fetch_all(&self.write)
                        .await?;
                    if seqs.is_empty() {
                        return Ok(Vec::new());
                    }
                    let mut details = QueryBuilder::<$db>::new(format!(
                        "SELECT {detail_columns} FROM deliveries d \
                         JOIN endpoints e ON e.id = d.endpoint_id \
                         JOIN events ev ON ev.id = d.event_id WHERE d.lease_token = "
                    ));
                    details.push_bind(request.lease_token).push(" AND d.seq IN (");
                    let mut list = details.separated(", ");
                    for seq in &seqs {
                        list.push_bind(*seq);
                    }
                    details.push(") ORDER BY d.seq");
                    match details.build().persistent(false).fetch_all(&self.read).await {
                        Ok(rows) => rows,
                        Err(error) => {
                            // Nobody will send these: due again at once
                            // rather than when the lease runs out.
                            let mut release = QueryBuilder::<$db>::new(
                                "UPDATE deliveries SET lease_until = NULL, lease_token = NULL, next_attempt_at = ",
                            );
                            release
                                .push_bind(request.now_ms)
                                .push(" WHERE lease_token = ")
                                .push_bind(request.lease_token)
                                .push(" AND seq IN (");
                            let mut list = release.separated(", ");
                            for seq in &seqs {
                                list.push_bind(*seq);
                            }
                            release.push(")");
                            if let Err(release_error) = release.build().persistent(false).execute(&self.write).await {
                                tracing::warn!(error = ?release_error, "releasing unread claims failed; they are retried when their lease ends");
                            }
                            return Err(error).context("reading the claimed deliveries");
                        }
                    }
                };
                rows.iter()
                    .map(|row| {
                        Ok(ClaimedDelivery {
                            id: row.try_get("id")?,
                            lease_token: request.lease_token.to_string(),
                            event_id: row.try_get("event_id")?,
                            event_type: row.try_get("event_type")?,
                            endpoint_id: row.try_get("endpoint_id")?,
                            url: row.try_get("url")?,
                            secret: row.try_get("secret")?,
                            payload: row.try_get("payload")?,
                            event_created_at: row.try_get("event_created_at")?,
                            previous_attempts: row.try_get("attempts")?,
                        })
                    })
                    .collect()
            }

            async fn record_attempts(&self, records: &[AttemptRecord]) -> anyhow::Result<()> {
                if records.is_empty() {
                    return Ok(());
                }
                let mut tx = self.write.begin().await?;
                // Attempts whose delivery was deleted meanwhile (its endpoint
                // or site was removed) are dropped, not an error.
                let mut insert = QueryBuilder::<$db>::new(format!(
                    "INSERT INTO delivery_attempts ({ATTEMPT_COLUMNS}, endpoint_id) \
                     SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, \
                     v.column7, v.column8, v.column9, v.column10 FROM ("
                ));
                insert.push_values(records, |mut values, record| {
                    let (_, next_attempt_at) = next_step_columns(record.next);
                    values
                        .push_bind(&record.delivery_id)
                        .push_bind(record.attempt)
                        .push_bind(record.started_at)
                        .push_bind(record.duration_ms)
                        .push_bind(record.status_code)
                        .push_bind(&record.response_body)
                        .push_bind(&record.error_class)
                        .push_bind(&record.error_message)
                        .push_bind(next_attempt_at)
                        .push_bind(&record.endpoint_id);
                });
                insert.push(
                    ") AS v WHERE EXISTS (SELECT 1 FROM deliveries d WHERE d.id = v.column1)",
                );
                insert.build().persistent(false).execute(&mut *tx).await?;
                // One statement moves every delivery on. Only the lease holder
                // does: if its lease expired and another worker took over,
                // that worker's outcome decides (the attempt is still logged).
                let mut update = QueryBuilder::<$db>::new(
                    "UPDATE deliveries SET status = v.column3, attempts = v.column4, \
                     next_attempt_at = v.column5, lease_until = NULL, lease_token = NULL, \
                     last_status_code = v.column6, last_error = v.column7, updated_at = v.column8 \
                     FROM (",
                );
                update.push_values(records, |mut values, record| {
                    let (status, next_attempt_at) = next_step_columns(record.next);
                    let last_error = match (&record.error_class, &record.error_message) {
                        (Some(class), Some(message)) => Some(format!("{class}: {message}")),
                        (Some(class), None) => Some(class.clone()),
                        _ => None,
                    };
                    values
                        .push_bind(&record.delivery_id)
                        .push_bind(&record.lease_token)
                        .push_bind(status)
                        .push_bind(record.attempt)
                        .push_bind(next_attempt_at)
                        .push_bind(record.status_code)
                        .push_bind(last_error)
                        .push_bind(record.started_at + record.duration_ms);
                });
                update.push(
                    ") AS v WHERE deliveries.id = v.column1 AND deliveries.lease_token = v.column2",
                );
                update.build().persistent(false).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn fold_health(
                &self,
                summaries: &[HealthSummary],
                health: &HealthPolicy,
            ) -> anyhow::Result<Vec<HealthChange>> {
                if summaries.is_empty() {
                    return Ok(Vec::new());
                }
                let mut tx = self.write.begin().await?;
                let mut changes = Vec::new();
                // Chunks keep each statement under the bound-parameter limits.
                for chunk in summaries.chunks(HEALTH_FOLD_CHUNK) {
                    changes.extend(Self::update_health(&mut tx, chunk, health).await?);
                }
                Self::write_alerts(&mut tx, &changes, health).await?;
                tx.commit().await?;
                Ok(changes)
            }

            async fn release_leases(&self, leases: &[(String, String)]) -> anyhow::Result<()> {
                let mut tx = self.write.begin().await?;
                for (delivery_id, token) in leases {
                    // Due at once again (on SQLite the claim had moved it to
                    // the lease's end).
                    sqlx::query(
                        "UPDATE deliveries SET lease_until = NULL, lease_token = NULL, next_attempt_at = $3 \
                         WHERE id = $1 AND lease_token = $2",
                    )
                    .bind(delivery_id)
                    .bind(token)
                    .bind(crate::util::now_ms())
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn maintain(&self) -> anyhow::Result<()> {
                if Self::IS_POSTGRES {
                    let stale: Vec<String> = sqlx::query_scalar(
                        "SELECT relname::text FROM pg_stat_user_tables \
                         WHERE relname IN ('deliveries', 'delivery_attempts', 'events') \
                         AND n_mod_since_analyze > GREATEST(1000, n_live_tup / 10)",
                    )
                    .fetch_all(&self.write)
                    .await?;
                    for table in stale {
                        // The names come from the fixed list above.
                        sqlx::query(&format!("ANALYZE {table}"))
                            .execute(&self.write)
                            .await?;
                    }
                } else {
                    sqlx::query("PRAGMA optimize").execute(&self.write).await?;
                }
                Ok(())
            }

            async fn list_deliveries(
                &self,
                endpoint_id: &str,
                filter: &DeliveryFilter,
            ) -> anyhow::Result<Vec<Delivery>> {
                let mut query = QueryBuilder::<$db>::new(format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE endpoint_id = "
                ));
                query.push_bind(endpoint_id);
                if let Some(status) = filter.status {
                    query.push(" AND status = ").push_bind(status.as_str());
                }
                if let Some(event) = filter.event {
                    query.push(" AND event_type = ").push_bind(event.as_str());
                }
                if let Some(since) = filter.since_ms {
                    query.push(" AND created_at >= ").push_bind(since);
                }
                if let Some(before) = filter.before_seq {
                    query.push(" AND seq < ").push_bind(before);
                }
                query
                    .push(" ORDER BY seq DESC LIMIT ")
                    .push_bind(filter.limit);
                let rows = query.build().persistent(false).fetch_all(&self.read).await?;
                let mut deliveries = rows
                    .iter()
                    .map(Self::delivery_from)
                    .collect::<anyhow::Result<Vec<_>>>()?;
                self.attach_attempts(&mut deliveries).await?;
                Ok(deliveries)
            }

            async fn get_delivery(
                &self,
                endpoint_id: &str,
                delivery_id: &str,
            ) -> anyhow::Result<Option<Delivery>> {
                let sql = format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE endpoint_id = $1 AND id = $2"
                );
                let row = sqlx::query(&sql)
                    .bind(endpoint_id)
                    .bind(delivery_id)
                    .fetch_optional(&self.read)
                    .await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let mut deliveries = vec![Self::delivery_from(&row)?];
                self.attach_attempts(&mut deliveries).await?;
                Ok(deliveries.pop())
            }

            async fn disable_failing_endpoints(
                &self,
                now_ms: i64,
                failing_since_before: i64,
                min_dead: i64,
                health: &HealthPolicy,
            ) -> anyhow::Result<Vec<HealthChange>> {
                let mut tx = self.write.begin().await?;
                let sql = format!(
                    "UPDATE endpoints SET active = FALSE, disabled_at = $1, \
                     disabled_reason = 'every delivery failed for ' || $4 || ' with ' || $3 || ' or more dead deliveries' \
                     WHERE active AND site_id <> $5 AND failing_since IS NOT NULL AND failing_since <= $2 \
                     AND (SELECT COUNT(*) FROM deliveries d WHERE d.endpoint_id = endpoints.id \
                          AND d.status = 'failed' AND d.updated_at >= endpoints.failing_since) >= $3 \
                     RETURNING {CHANGE_COLUMNS}"
                );
                let window = humantime::format_duration(std::time::Duration::from_millis(
                    (now_ms - failing_since_before).max(0) as u64,
                ))
                .to_string();
                let rows = sqlx::query(&sql)
                    .bind(now_ms)
                    .bind(failing_since_before)
                    .bind(min_dead)
                    .bind(window)
                    .bind(OPERATOR_SITE_ID)
                    .fetch_all(&mut *tx)
                    .await?;
                let changes = rows
                    .iter()
                    .map(|row| Self::change_from(row, HealthChangeKind::Disabled, now_ms))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Self::write_alerts(&mut tx, &changes, health).await?;
                tx.commit().await?;
                Ok(changes)
            }

            async fn configure_alert_endpoint(
                &self,
                target: Option<(&str, &str)>,
                now_ms: i64,
            ) -> anyhow::Result<()> {
                let mut tx = self.write.begin().await?;
                match target {
                    Some((url, secret)) => {
                        // The operator's own site: not listed, no usable key.
                        sqlx::query(
                            "INSERT INTO sites (id, name, description, key_hash, created_at, updated_at) \
                             VALUES ($1, 'PixelPatrol operator', 'operator alerts', $2, $3, $3) \
                             ON CONFLICT (id) DO NOTHING",
                        )
                        .bind(OPERATOR_SITE_ID)
                        .bind(crate::util::sha256_hex(&crate::util::new_webhook_secret()))
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await?;
                        sqlx::query(
                            "INSERT INTO endpoints (id, site_id, url, secret, events, active, description, \
                             strict_ordering, created_at, updated_at) \
                             VALUES ($1, $2, $3, $4, $5, TRUE, 'operator alerts', FALSE, $6, $6) \
                             ON CONFLICT (id) DO UPDATE SET url = $3, secret = $4, events = $5, active = TRUE, \
                             disabled_reason = NULL, disabled_at = NULL, updated_at = $6",
                        )
                        .bind(ALERT_ENDPOINT_ID)
                        .bind(OPERATOR_SITE_ID)
                        .bind(url)
                        .bind(secret)
                        .bind("endpoint.failing,endpoint.recovered,endpoint.disabled")
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await?;
                    }
                    None => {
                        sqlx::query("UPDATE endpoints SET active = FALSE WHERE id = $1")
                            .bind(ALERT_ENDPOINT_ID)
                            .execute(&mut *tx)
                            .await?;
                        // Alerts were turned off: undelivered ones would
                        // wait forever.
                        sqlx::query("DELETE FROM deliveries WHERE endpoint_id = $1 AND status = 'pending'")
                            .bind(ALERT_ENDPOINT_ID)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                tx.commit().await?;
                Ok(())
            }

            async fn endpoint_health(&self, endpoint_id: &str, now_ms: i64) -> anyhow::Result<HealthFigures> {
                let mut figures = HealthFigures::default();
                for (window, since) in [
                    (&mut figures.last_hour, now_ms - 3_600_000),
                    (&mut figures.last_day, now_ms - 86_400_000),
                ] {
                    let row = sqlx::query(
                        "SELECT COUNT(*) AS attempts, COUNT(*) FILTER (WHERE error_class IS NULL) AS successes, \
                         CAST(AVG(duration_ms) AS DOUBLE PRECISION) AS average \
                         FROM delivery_attempts WHERE endpoint_id = $1 AND started_at >= $2",
                    )
                    .bind(endpoint_id)
                    .bind(since)
                    .fetch_one(&self.read)
                    .await?;
                    let attempts: i64 = row.try_get("attempts")?;
                    let successes: i64 = row.try_get("successes")?;
                    let average: Option<f64> = row.try_get("average")?;
                    let p95 = if attempts > 0 {
                        // The nearest-rank 95th percentile.
                        let rank = ((attempts as f64) * 0.95).ceil() as i64;
                        sqlx::query_scalar::<_, i64>(
                            "SELECT duration_ms FROM delivery_attempts WHERE endpoint_id = $1 AND started_at >= $2 \
                             ORDER BY duration_ms LIMIT 1 OFFSET $3",
                        )
                        .bind(endpoint_id)
                        .bind(since)
                        .bind((rank - 1).max(0))
                        .fetch_optional(&self.read)
                        .await?
                    } else {
                        None
                    };
                    *window = WindowFigures {
                        attempts,
                        successes,
                        success_rate: (attempts > 0).then(|| successes as f64 / attempts as f64),
                        avg_response_ms: average.map(|ms| (ms * 10.0).round() / 10.0),
                        p95_response_ms: p95,
                    };
                }
                let row = sqlx::query(
                    "SELECT COUNT(*) AS pending, COUNT(*) FILTER (WHERE lease_until >= $2) AS in_flight, \
                     MIN(created_at) AS oldest FROM deliveries WHERE endpoint_id = $1 AND status = 'pending'",
                )
                .bind(endpoint_id)
                .bind(now_ms)
                .fetch_one(&self.read)
                .await?;
                figures.pending = row.try_get("pending")?;
                figures.in_flight = row.try_get("in_flight")?;
                figures.oldest_pending_at = row.try_get("oldest")?;
                Ok(figures)
            }

            async fn recover_deliveries(
                &self,
                endpoint_id: &str,
                since_ms: i64,
                until_ms: Option<i64>,
                now_ms: i64,
            ) -> anyhow::Result<RecoverOutcome> {
                let mut tx = self.write.begin().await?;
                // Dead deliveries keep their place (seq), so lanes replay in
                // their original order. A lane with an attempt in flight is
                // left for later: re-queuing under it could overlap it.
                let in_window = "d.endpoint_id = $1 AND d.status = 'failed' AND d.created_at >= $2 \
                                 AND ($3 IS NULL OR d.created_at < $3)";
                let busy_lane = "EXISTS (SELECT 1 FROM deliveries p JOIN endpoints e ON e.id = p.endpoint_id \
                                 WHERE p.endpoint_id = d.endpoint_id AND p.status = 'pending' AND p.lease_until >= $4 \
                                 AND (e.strict_ordering OR p.ordering_key = d.ordering_key))";
                if Self::IS_POSTGRES {
                    // A claim still in progress holds these rows; waiting for
                    // it makes its leases visible to the check below.
                    sqlx::query("SELECT seq FROM deliveries WHERE endpoint_id = $1 AND status = 'pending' FOR UPDATE")
                        .bind(endpoint_id)
                        .fetch_all(&mut *tx)
                        .await?;
                }
                let skipped: i64 = sqlx::query_scalar(&format!(
                    "SELECT COUNT(*) FROM deliveries d WHERE {in_window} AND {busy_lane}"
                ))
                .bind(endpoint_id)
                .bind(since_ms)
                .bind(until_ms)
                .bind(now_ms)
                .fetch_one(&mut *tx)
                .await?;
                let requeued = sqlx::query(&format!(
                    "UPDATE deliveries SET status = 'pending', next_attempt_at = $4, lease_until = NULL, \
                     lease_token = NULL, updated_at = $4 WHERE seq IN (SELECT d.seq FROM deliveries d \
                     WHERE {in_window} AND NOT {busy_lane})"
                ))
                .bind(endpoint_id)
                .bind(since_ms)
                .bind(until_ms)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok(RecoverOutcome {
                    requeued,
                    skipped_in_flight: skipped as u64,
                })
            }

            async fn resend_event(
                &self,
                site_id: &str,
                event_id: &str,
                endpoint_id: Option<&str>,
                now_ms: i64,
            ) -> anyhow::Result<ResendOutcome> {
                let mut tx = self.write.begin().await?;
                let row = sqlx::query(
                    "SELECT id, site_id, event_type, media_id, payload FROM events WHERE id = $1 AND site_id = $2",
                )
                .bind(event_id)
                .bind(site_id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    return Ok(ResendOutcome::EventNotFound);
                };
                let event_type: String = row.try_get("event_type")?;
                let event = NewEvent {
                    id: row.try_get("id")?,
                    site_id: row.try_get("site_id")?,
                    event_type: event_type.parse()?,
                    media_id: row.try_get("media_id")?,
                    payload: row.try_get("payload")?,
                    created_at: now_ms,
                    deliver_at: now_ms,
                };
                let endpoints = match endpoint_id {
                    Some(endpoint_id) => {
                        let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE id = $1 AND site_id = $2");
                        match sqlx::query(&sql).bind(endpoint_id).bind(site_id).fetch_optional(&mut *tx).await? {
                            Some(row) => vec![Self::endpoint_from(&row)?],
                            None => return Ok(ResendOutcome::EndpointNotFound),
                        }
                    }
                    None => Self::subscribed_endpoints(&mut tx, site_id, event.event_type).await?,
                };
                let targets: Vec<&Endpoint> = endpoints.iter().collect();
                Self::insert_events_with(&mut tx, &[(&event, &targets)], None, false).await?;
                let ids: Vec<String> = sqlx::query_scalar(
                    "SELECT id FROM deliveries WHERE event_id = $1 AND created_at = $2 AND status = 'pending' ORDER BY seq",
                )
                .bind(&event.id)
                .bind(now_ms)
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(ResendOutcome::Queued(ids))
            }

            async fn list_events(&self, site_id: &str, filter: &EventFilter) -> anyhow::Result<Vec<EventSummary>> {
                let mut query = QueryBuilder::<$db>::new(
                    "SELECT id, event_type, media_id, created_at FROM events WHERE site_id = ",
                );
                query.push_bind(site_id);
                if let Some(event) = filter.event {
                    query.push(" AND event_type = ").push_bind(event.as_str());
                }
                if let Some(since) = filter.since_ms {
                    query.push(" AND created_at >= ").push_bind(since);
                }
                if let Some(before) = &filter.before_id {
                    query.push(" AND id < ").push_bind(before);
                }
                query.push(" ORDER BY id DESC LIMIT ").push_bind(filter.limit);
                let rows = query.build().persistent(false).fetch_all(&self.read).await?;
                let mut events = rows
                    .iter()
                    .map(|row| {
                        Ok(EventSummary {
                            id: row.try_get("id")?,
                            event: row.try_get("event_type")?,
                            media_id: row.try_get("media_id")?,
                            created_at: row.try_get("created_at")?,
                            deliveries: Vec::new(),
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                if events.is_empty() {
                    return Ok(events);
                }
                let mut query = QueryBuilder::<$db>::new(
                    "SELECT id, event_id, endpoint_id, status, attempts, last_status_code FROM deliveries WHERE event_id IN (",
                );
                let mut ids = query.separated(", ");
                for event in &events {
                    ids.push_bind(event.id.clone());
                }
                query.push(") ORDER BY seq");
                let mut by_event: HashMap<String, Vec<EventDelivery>> = HashMap::new();
                for row in query.build().persistent(false).fetch_all(&self.read).await? {
                    by_event.entry(row.try_get("event_id")?).or_default().push(EventDelivery {
                        delivery_id: row.try_get("id")?,
                        webhook_id: row.try_get("endpoint_id")?,
                        status: row.try_get("status")?,
                        attempts: row.try_get("attempts")?,
                        last_status_code: row.try_get("last_status_code")?,
                    });
                }
                for event in &mut events {
                    event.deliveries = by_event.remove(&event.id).unwrap_or_default();
                }
                Ok(events)
            }

            async fn purge_step(&self, cutoff_ms: i64, batch: i64) -> anyhow::Result<Purged> {
                // Small statements, each its own transaction: nothing here
                // holds locks long enough to stall delivery.
                let attempts = sqlx::query(
                    "DELETE FROM delivery_attempts WHERE seq IN (SELECT a.seq FROM delivery_attempts a \
                     WHERE a.started_at < $1 AND NOT EXISTS (SELECT 1 FROM deliveries d \
                        WHERE d.id = a.delivery_id AND d.status = 'pending') \
                     ORDER BY a.started_at LIMIT $2)",
                )
                .bind(cutoff_ms)
                .bind(batch)
                .execute(&self.write)
                .await?
                .rows_affected();
                // An event goes with its deliveries (and their attempts) once
                // none of them is pending.
                let events = sqlx::query(
                    "DELETE FROM events WHERE id IN (SELECT e.id FROM events e WHERE e.created_at < $1 \
                     AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id \
                        AND (d.status = 'pending' OR d.updated_at >= $1)) \
                     ORDER BY e.created_at LIMIT $2)",
                )
                .bind(cutoff_ms)
                .bind(batch)
                .execute(&self.write)
                .await?
                .rows_affected();
                Ok(Purged { attempts, events })
            }

            async fn queue_stats(&self) -> anyhow::Result<(i64, Option<i64>)> {
                // Both read only the (endpoint, seq) index of pending
                // deliveries, endpoint by endpoint; disabled endpoints' kept
                // deliveries are not the queue.
                let pending: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM endpoints e JOIN deliveries d \
                     ON d.endpoint_id = e.id AND d.status = 'pending' WHERE e.active",
                )
                .fetch_one(&self.read)
                .await?;
                let head = if Self::IS_POSTGRES {
                    PG_ENDPOINT_HEAD
                } else {
                    "p.endpoint_id = e.id AND p.status = 'pending' ORDER BY p.seq LIMIT 1"
                };
                let oldest: Option<i64> = sqlx::query_scalar(&format!(
                    "SELECT MIN((SELECT p.created_at FROM deliveries p WHERE {head})) \
                     FROM endpoints e WHERE e.active"
                ))
                .fetch_one(&self.read)
                .await?;
                Ok((pending, oldest))
            }

            async fn migration_status(&self) -> anyhow::Result<(i64, i64)> {
                let known = if Self::IS_POSTGRES {
                    sqlx::migrate!("./migrations/postgres").migrations.len()
                } else {
                    sqlx::migrate!("./migrations/sqlite").migrations.len()
                } as i64;
                let applied: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM _sqlx_migrations WHERE success",
                )
                .fetch_one(&self.read)
                .await?;
                Ok((applied, known))
            }

            fn pool_stats(&self) -> (u32, u32) {
                if Self::IS_POSTGRES {
                    (self.write.size(), self.write.num_idle() as u32)
                } else {
                    (
                        self.write.size() + self.read.size(),
                        (self.write.num_idle() + self.read.num_idle()) as u32,
                    )
                }
            }

            async fn retry_delivery(
                &self,
                endpoint_id: &str,
                delivery_id: &str,
                now_ms: i64,
            ) -> anyhow::Result<RetryOutcome> {
                let mut tx = self.write.begin().await?;
                let sql = format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE endpoint_id = $1 AND id = $2{}",
                    if Self::IS_POSTGRES { " FOR UPDATE" } else { "" }
                );
                let row = sqlx::query(&sql)
                    .bind(endpoint_id)
                    .bind(delivery_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(row) = row else {
                    return Ok(RetryOutcome::NotFound);
                };
                let delivery = Self::delivery_from(&row)?;
                // Re-queuing while anything in its lane is being sent could
                // put two attempts of one lane in flight at once.
                let busy = sqlx::query(
                    "SELECT 1 FROM deliveries p JOIN endpoints e ON e.id = p.endpoint_id \
                     WHERE p.endpoint_id = $1 AND p.status = 'pending' AND p.lease_until >= $2 \
                     AND (e.strict_ordering OR p.ordering_key = $3) LIMIT 1",
                )
                .bind(endpoint_id)
                .bind(now_ms)
                .bind(&delivery.media_id)
                .fetch_optional(&mut *tx)
                .await?;
                if busy.is_some() {
                    return Ok(RetryOutcome::InFlight);
                }
                let sql = format!(
                    "UPDATE deliveries SET status = 'pending', next_attempt_at = $1, \
                     lease_until = NULL, lease_token = NULL, updated_at = $1 \
                     WHERE id = $2 RETURNING {DELIVERY_COLUMNS}"
                );
                let row = sqlx::query(&sql)
                    .bind(now_ms)
                    .bind(delivery_id)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                let mut deliveries = vec![Self::delivery_from(&row)?];
                self.attach_attempts(&mut deliveries).await?;
                Ok(RetryOutcome::Queued(Box::new(
                    deliveries.pop().context("the retried delivery vanished")?,
                )))
            }
        }
    };
}

impl_sql_store!(
    SqliteStore,
    sqlx::Sqlite,
    sqlx::sqlite::SqliteRow,
    "sqlite",
    false
);
impl_sql_store!(
    PostgresStore,
    sqlx::Postgres,
    sqlx::postgres::PgRow,
    "postgres",
    true
);
