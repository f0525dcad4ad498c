//! Endpoint health (shared by both backends: compiled into each): attempts
//! folded into each endpoint's streak and alert state, the transitions
//! worked out by the domain's state machine ([`HealthSummary::apply`]), and
//! the alerts written in the same transaction.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::QueryBuilder;

use super::{BackendStore, Db, locks};
use pixelpatrol_core::model::{
    ALERT_ENDPOINT_ID, Endpoint, EndpointId, HealthChange, HealthChangeKind, HealthFigures,
    HealthPolicy, HealthSummary, NewEvent, OPERATOR_SITE_ID, SiteId, Timestamp, WindowFigures,
};
use pixelpatrol_core::store::EndpointHealth;
use pixelpatrol_store::rows::{CHANGE_COLUMNS, ChangeRow, QueueRow, StoredHealthRow, WindowRow};

/// Endpoints folded into health per statement (11 parameters each).
const HEALTH_FOLD_CHUNK: usize = 500;

impl BackendStore {
    /// Writes the alert events of `changes` to the operator's alert
    /// endpoint, inside the caller's transaction.
    async fn write_alerts(
        tx: &mut sqlx::Transaction<'static, Db>,
        changes: &[HealthChange],
        health: &HealthPolicy,
    ) -> anyhow::Result<()> {
        let Some(alert_endpoint) = health.alert_endpoint_id.as_ref() else {
            return Ok(());
        };
        if changes.is_empty() {
            return Ok(());
        }
        // The alert endpoint, unless it was turned off.
        let endpoint =
            Self::endpoint_of_site(&mut **tx, &SiteId::from(OPERATOR_SITE_ID), alert_endpoint)
                .await?
                .filter(|endpoint| endpoint.active);
        let Some(endpoint) = endpoint else {
            return Ok(());
        };
        let events: Vec<NewEvent> = changes
            .iter()
            .map(|change| change.alert_event(health.alert_first_delay_ms))
            .collect::<anyhow::Result<_>>()?;
        let targets = [&endpoint];
        let pairs: Vec<(&NewEvent, &[&Endpoint])> =
            events.iter().map(|event| (event, &targets[..])).collect();
        Self::insert_events(tx, &pairs, None).await
    }

    /// Folds attempt summaries into their endpoints' health, and returns the
    /// endpoints whose state changed.
    async fn update_health(
        tx: &mut sqlx::Transaction<'static, Db>,
        summaries: &[HealthSummary],
        health: &HealthPolicy,
    ) -> anyhow::Result<Vec<HealthChange>> {
        let mut summaries: Vec<&HealthSummary> = summaries.iter().collect();
        // Several workers update the same endpoints: taking the row locks in
        // one order keeps them from deadlocking.
        summaries.sort_by(|a, b| a.endpoint_id.cmp(&b.endpoint_id));
        let now = summaries
            .iter()
            .map(|summary| summary.finished_at)
            .max()
            .unwrap_or_default();
        // The stored streaks and alert states (locked where the backend has
        // concurrent writers), so the transitions are worked out exactly.
        let mut read = QueryBuilder::<Db>::new(format!(
            "SELECT {CHANGE_COLUMNS}, alert_state, active FROM endpoints WHERE id IN ("
        ));
        let mut ids = read.separated(", ");
        for summary in &summaries {
            ids.push_bind(summary.endpoint_id.as_str());
        }
        read.push(locks::FOLD_READ_ORDER);
        let rows: Vec<StoredHealthRow> = read
            .build_query_as()
            .persistent(false)
            .fetch_all(&mut **tx)
            .await?;
        let mut stored = HashMap::new();
        for row in rows {
            let change = row.endpoint.into_change(HealthChangeKind::Failing, now);
            stored.insert(
                change.endpoint_id.clone(),
                (change, row.alert_state == "failing", row.active),
            );
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
            // Disabled endpoints and the operator's own endpoint keep their
            // alert state.
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
            updates.push((
                *summary,
                streak,
                if now_failing { "failing" } else { "healthy" },
            ));
        }
        if !updates.is_empty() {
            // One statement folds the run into each endpoint's state.
            let mut update = QueryBuilder::<Db>::new(
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
                    .push_bind(summary.first_trailing_failure.map(Timestamp::millis))
                    .push_bind(summary.last_success.map(Timestamp::millis))
                    .push_bind(failure.map(|failure| failure.at.millis()))
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
            let mut disable =
                QueryBuilder::<Db>::new("UPDATE endpoints SET active = FALSE, disabled_at = ");
            disable.push_bind(now.millis()).push(
                ", disabled_reason = 'the receiver answered 410 Gone' WHERE active AND id IN (",
            );
            let mut ids = disable.separated(", ");
            for id in &gone {
                ids.push_bind(*id);
            }
            disable.push(format!(") RETURNING {CHANGE_COLUMNS}"));
            let rows: Vec<ChangeRow> = disable
                .build_query_as()
                .persistent(false)
                .fetch_all(&mut **tx)
                .await?;
            changes.extend(
                rows.into_iter()
                    .map(|row| row.into_change(HealthChangeKind::Disabled, now)),
            );
        }
        // The alert endpoint is never alerted about (that could loop), but
        // losing it must not go unnoticed.
        for change in changes
            .iter()
            .filter(|change| change.site_id == OPERATOR_SITE_ID)
        {
            tracing::error!(
                url = %change.url,
                reason = change.reason.as_deref(),
                "the operator alert webhook was disabled: alerts are no longer delivered"
            );
        }
        changes.retain(|change| change.site_id != OPERATOR_SITE_ID);
        Ok(changes)
    }
}

#[async_trait]
impl EndpointHealth for BackendStore {
    async fn fold_health(
        &self,
        summaries: &[HealthSummary],
        health: &HealthPolicy,
    ) -> anyhow::Result<Vec<HealthChange>> {
        if summaries.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = locks::begin_write(&self.write).await?;
        let mut changes = Vec::new();
        // Chunks keep each statement under the bound-parameter limits.
        for chunk in summaries.chunks(HEALTH_FOLD_CHUNK) {
            changes.extend(Self::update_health(&mut tx, chunk, health).await?);
        }
        Self::write_alerts(&mut tx, &changes, health).await?;
        tx.commit().await?;
        Ok(changes)
    }

    async fn disable_failing_endpoints(
        &self,
        now: Timestamp,
        failing_since_before: Timestamp,
        min_dead: i64,
        health: &HealthPolicy,
    ) -> anyhow::Result<Vec<HealthChange>> {
        let mut tx = locks::begin_write(&self.write).await?;
        let window = humantime::format_duration(std::time::Duration::from_millis(
            now.ms_since(failing_since_before).max(0) as u64,
        ))
        .to_string();
        let (now_ms, failing_since_ms) = (now.millis(), failing_since_before.millis());
        let rows = sqlx::query_as!(
            ChangeRow,
            "UPDATE endpoints SET active = FALSE, disabled_at = $1, \
             disabled_reason = 'every delivery failed for ' || CAST($4 AS TEXT) || ' with ' \
                || CAST($3 AS TEXT) || ' or more dead deliveries' \
             WHERE active AND site_id <> $5 AND failing_since IS NOT NULL AND failing_since <= $2 \
             AND (SELECT COUNT(*) FROM deliveries d WHERE d.endpoint_id = endpoints.id \
                  AND d.status = 'failed' AND d.updated_at >= endpoints.failing_since) >= CAST($3 AS BIGINT) \
             RETURNING id, site_id, url, consecutive_failures, disabled_reason, last_failure_at, \
             last_failure_class, last_failure_status, last_failure_message",
            now_ms,
            failing_since_ms,
            min_dead,
            window,
            OPERATOR_SITE_ID
        )
        .fetch_all(&mut *tx)
        .await?;
        let changes: Vec<HealthChange> = rows
            .into_iter()
            .map(|row| row.into_change(HealthChangeKind::Disabled, now))
            .collect();
        Self::write_alerts(&mut tx, &changes, health).await?;
        tx.commit().await?;
        Ok(changes)
    }

    async fn configure_alert_endpoint(
        &self,
        target: Option<(&str, &str)>,
        now: Timestamp,
    ) -> anyhow::Result<()> {
        let mut tx = locks::begin_write(&self.write).await?;
        match target {
            Some((url, secret)) => {
                // The operator's own site: not listed, no usable key.
                let key_hash = pixelpatrol_core::util::sha256_hex(
                    &pixelpatrol_core::util::new_webhook_secret(),
                );
                let now = now.millis();
                sqlx::query!(
                    "INSERT INTO sites (id, name, description, key_hash, created_at, updated_at) \
                     VALUES ($1, 'PixelPatrol operator', 'operator alerts', $2, $3, $3) \
                     ON CONFLICT (id) DO NOTHING",
                    OPERATOR_SITE_ID,
                    key_hash,
                    now
                )
                .execute(&mut *tx)
                .await?;
                sqlx::query!(
                    "INSERT INTO endpoints (id, site_id, url, secret, events, active, description, \
                     strict_ordering, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, TRUE, 'operator alerts', FALSE, $6, $6) \
                     ON CONFLICT (id) DO UPDATE SET url = $3, secret = $4, events = $5, active = TRUE, \
                     disabled_reason = NULL, disabled_at = NULL, updated_at = $6",
                    ALERT_ENDPOINT_ID,
                    OPERATOR_SITE_ID,
                    url,
                    secret,
                    "endpoint.failing,endpoint.recovered,endpoint.disabled",
                    now
                )
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query!(
                    "UPDATE endpoints SET active = FALSE WHERE id = $1",
                    ALERT_ENDPOINT_ID
                )
                .execute(&mut *tx)
                .await?;
                // Alerts were turned off: undelivered ones would wait forever.
                // Their attempts go with them (no foreign key cascades on
                // PostgreSQL, `delete_queue_of_endpoint` says why).
                sqlx::query!(
                    "DELETE FROM deliveries WHERE endpoint_id = $1 AND status = 'pending'",
                    ALERT_ENDPOINT_ID
                )
                .execute(&mut *tx)
                .await?;
                sqlx::query!(
                    "DELETE FROM delivery_attempts WHERE endpoint_id = $1 AND NOT EXISTS \
                     (SELECT 1 FROM deliveries d WHERE d.id = delivery_attempts.delivery_id)",
                    ALERT_ENDPOINT_ID
                )
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn endpoint_health(
        &self,
        endpoint_id: &EndpointId,
        now: Timestamp,
    ) -> anyhow::Result<HealthFigures> {
        let mut figures = HealthFigures::default();
        for (window, since) in [
            (&mut figures.last_hour, now.plus_ms(-3_600_000)),
            (&mut figures.last_day, now.plus_ms(-86_400_000)),
        ] {
            let (endpoint_id, since) = (endpoint_id.as_str(), since.millis());
            let row = sqlx::query_as!(
                WindowRow,
                r#"SELECT COUNT(*) AS "attempts!: i64",
                   COUNT(*) FILTER (WHERE error_class IS NULL) AS "successes!: i64",
                   CAST(AVG(duration_ms) AS DOUBLE PRECISION) AS "average: f64"
                   FROM delivery_attempts WHERE endpoint_id = $1 AND started_at >= $2"#,
                endpoint_id,
                since
            )
            .fetch_one(&self.read)
            .await?;
            let p95 = if row.attempts > 0 {
                // The nearest-rank 95th percentile.
                let rank = ((row.attempts as f64) * 0.95).ceil() as i64;
                let offset = (rank - 1).max(0);
                sqlx::query_scalar!(
                    "SELECT duration_ms FROM delivery_attempts WHERE endpoint_id = $1 AND started_at >= $2 \
                     ORDER BY duration_ms LIMIT 1 OFFSET $3",
                    endpoint_id,
                    since,
                    offset
                )
                .fetch_optional(&self.read)
                .await?
            } else {
                None
            };
            *window = WindowFigures {
                attempts: row.attempts,
                successes: row.successes,
                success_rate: (row.attempts > 0)
                    .then(|| row.successes as f64 / row.attempts as f64),
                avg_response_ms: row.average.map(|ms| (ms * 10.0).round() / 10.0),
                p95_response_ms: p95,
            };
        }
        let endpoint_id = endpoint_id.as_str();
        let now = now.millis();
        let queue = sqlx::query_as!(
            QueueRow,
            r#"SELECT COUNT(*) AS "pending!: i64",
               COUNT(*) FILTER (WHERE lease_until >= $2) AS "in_flight!: i64",
               MIN(created_at) AS "oldest: i64"
               FROM deliveries WHERE endpoint_id = $1 AND status = 'pending'"#,
            endpoint_id,
            now
        )
        .fetch_one(&self.read)
        .await?;
        figures.pending = queue.pending;
        figures.in_flight = queue.in_flight;
        figures.oldest_pending_at = queue.oldest.map(Timestamp::from_millis);
        Ok(figures)
    }

    async fn attempts_per_hour(
        &self,
        endpoint_id: &EndpointId,
        since: Timestamp,
    ) -> anyhow::Result<Vec<(Timestamp, i64, i64)>> {
        let (endpoint_id, since) = (endpoint_id.as_str(), since.millis());
        let rows = sqlx::query!(
            r#"SELECT started_at / 3600000 AS "hour!: i64", COUNT(*) AS "attempts!: i64",
               COUNT(*) FILTER (WHERE error_class IS NOT NULL) AS "failures!: i64"
               FROM delivery_attempts WHERE endpoint_id = $1 AND started_at >= $2
               GROUP BY started_at / 3600000 ORDER BY 1"#,
            endpoint_id,
            since
        )
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                (
                    Timestamp::from_millis(row.hour * 3_600_000),
                    row.attempts,
                    row.failures,
                )
            })
            .collect())
    }
}
