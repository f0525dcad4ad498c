//! The delivery log (shared by both backends: compiled into each): what was
//! sent where, with every attempt, and what a person can redo: retry one
//! delivery, recover dead ones, resend an event.

use std::collections::HashMap;

use anyhow::Context as _;
use async_trait::async_trait;
use sqlx::QueryBuilder;

use super::{BackendStore, Db, locks};
use pixelpatrol_core::model::{
    Attempt, AuditEntry, Delivery, DeliveryFilter, DeliveryId, Endpoint, EndpointId, EventDelivery,
    EventFilter, EventId, EventSummary, NewEvent, RecoverOutcome, ResendOutcome, RetryOutcome,
    SiteId, Timestamp,
};
use pixelpatrol_core::store::DeliveryLog;
use pixelpatrol_store::rows::{
    ATTEMPT_COLUMNS, AttemptRow, DELIVERY_COLUMNS, DeliveryRow, EventDeliveryRow, EventRow,
    StoredEventRow,
};

impl BackendStore {
    async fn attach_attempts(&self, deliveries: &mut [Delivery]) -> anyhow::Result<()> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let mut query = QueryBuilder::<Db>::new(format!(
            "SELECT {ATTEMPT_COLUMNS} FROM delivery_attempts WHERE delivery_id IN ("
        ));
        let mut ids = query.separated(", ");
        for delivery in deliveries.iter() {
            ids.push_bind(delivery.id.to_string());
        }
        query.push(") ORDER BY delivery_id, attempt, seq");
        let rows: Vec<AttemptRow> = query
            .build_query_as()
            .persistent(false)
            .fetch_all(&self.read)
            .await?;
        for row in rows {
            let attempt = Attempt::from(row);
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
impl DeliveryLog for BackendStore {
    async fn list_deliveries(
        &self,
        endpoint_id: &EndpointId,
        filter: &DeliveryFilter,
    ) -> anyhow::Result<Vec<Delivery>> {
        let mut query = QueryBuilder::<Db>::new(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE endpoint_id = "
        ));
        query.push_bind(endpoint_id.as_str());
        if let Some(status) = filter.status {
            query.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(event) = filter.event {
            query.push(" AND event_type = ").push_bind(event.as_str());
        }
        if let Some(since) = filter.since {
            query.push(" AND created_at >= ").push_bind(since.millis());
        }
        if let Some(before) = filter.before_seq {
            query.push(" AND seq < ").push_bind(before);
        }
        query
            .push(" ORDER BY seq DESC LIMIT ")
            .push_bind(filter.limit);
        let rows: Vec<DeliveryRow> = query
            .build_query_as()
            .persistent(false)
            .fetch_all(&self.read)
            .await?;
        let mut deliveries = rows
            .into_iter()
            .map(Delivery::try_from)
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.attach_attempts(&mut deliveries).await?;
        Ok(deliveries)
    }

    async fn get_delivery(
        &self,
        endpoint_id: &EndpointId,
        delivery_id: &DeliveryId,
    ) -> anyhow::Result<Option<Delivery>> {
        let endpoint_id = endpoint_id.as_str();
        let delivery_id = delivery_id.as_str();
        let row = sqlx::query_as!(
            DeliveryRow,
            r#"SELECT seq AS "seq!", id, event_id, event_type, endpoint_id, site_id, ordering_key, status,
             attempts, next_attempt_at, last_status_code, last_error, created_at, updated_at
             FROM deliveries WHERE endpoint_id = $1 AND id = $2"#,
            endpoint_id,
            delivery_id
        )
        .fetch_optional(&self.read)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut deliveries = vec![Delivery::try_from(row)?];
        self.attach_attempts(&mut deliveries).await?;
        Ok(deliveries.pop())
    }

    async fn retry_delivery(
        &self,
        endpoint_id: &EndpointId,
        delivery_id: &DeliveryId,
        now: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> anyhow::Result<RetryOutcome> {
        let mut tx = locks::begin_write(&self.write).await?;
        let row = locks::delivery_for_retry(&mut tx, endpoint_id, delivery_id).await?;
        let Some(row) = row else {
            return Ok(RetryOutcome::NotFound);
        };
        let delivery = Delivery::try_from(row)?;
        // Re-queuing while anything in its lane is being sent could put two
        // attempts of one lane in flight at once.
        let endpoint_id = endpoint_id.as_str();
        let now = now.millis();
        let media_id = delivery.media_id.as_str();
        let busy = sqlx::query_scalar!(
            r#"SELECT p.seq AS "busy!" FROM deliveries p JOIN endpoints e ON e.id = p.endpoint_id
             WHERE p.endpoint_id = $1 AND p.status = 'pending' AND p.lease_until >= $2
             AND (e.strict_ordering OR p.ordering_key = $3) LIMIT 1"#,
            endpoint_id,
            now,
            media_id
        )
        .fetch_optional(&mut *tx)
        .await?;
        if busy.is_some() {
            return Ok(RetryOutcome::InFlight);
        }
        let delivery_id = delivery_id.as_str();
        let row = sqlx::query_as!(
            DeliveryRow,
            r#"UPDATE deliveries SET status = 'pending', next_attempt_at = $1,
             lease_until = NULL, lease_token = NULL, updated_at = $1
             WHERE id = $2 RETURNING seq AS "seq!", id, event_id, event_type, endpoint_id, site_id, ordering_key, status,
             attempts, next_attempt_at, last_status_code, last_error, created_at, updated_at"#,
            now,
            delivery_id
        )
        .fetch_one(&mut *tx)
        .await?;
        Self::insert_audit_if(&mut tx, audit).await?;
        tx.commit().await?;
        let mut deliveries = vec![Delivery::try_from(row)?];
        self.attach_attempts(&mut deliveries).await?;
        Ok(RetryOutcome::Queued(Box::new(
            deliveries.pop().context("the retried delivery vanished")?,
        )))
    }

    async fn recover_deliveries(
        &self,
        endpoint_id: &EndpointId,
        since: Timestamp,
        until: Option<Timestamp>,
        now: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> anyhow::Result<RecoverOutcome> {
        let mut tx = locks::begin_write(&self.write).await?;
        // Dead deliveries keep their place (seq), so lanes replay in their
        // original order. A lane with an attempt in flight is left for
        // later: re-queuing under it could overlap it.
        locks::wait_for_claims(&mut tx, endpoint_id).await?;
        // In the window: `d.endpoint_id = $1 AND d.status = 'failed' AND
        // d.created_at >= $2 AND (CAST($3 AS BIGINT) IS NULL OR d.created_at < $3)`; a busy
        // lane: an attempt in flight (`lease_until >= $4`) in the same lane.
        let endpoint_id = endpoint_id.as_str();
        let (since, until, now) = (since.millis(), until.map(Timestamp::millis), now.millis());
        let skipped = sqlx::query_scalar!(
            r#"SELECT COUNT(*) AS "skipped!" FROM deliveries d
             WHERE d.endpoint_id = $1 AND d.status = 'failed' AND d.created_at >= $2
             AND (CAST($3 AS BIGINT) IS NULL OR d.created_at < $3)
             AND EXISTS (SELECT 1 FROM deliveries p JOIN endpoints e ON e.id = p.endpoint_id
                 WHERE p.endpoint_id = d.endpoint_id AND p.status = 'pending' AND p.lease_until >= $4
                 AND (e.strict_ordering OR p.ordering_key = d.ordering_key))"#,
            endpoint_id,
            since,
            until,
            now
        )
        .fetch_one(&mut *tx)
        .await?;
        let requeued = sqlx::query!(
            "UPDATE deliveries SET status = 'pending', next_attempt_at = $4, lease_until = NULL, \
             lease_token = NULL, updated_at = $4 WHERE seq IN (SELECT d.seq FROM deliveries d \
             WHERE d.endpoint_id = $1 AND d.status = 'failed' AND d.created_at >= $2 \
             AND (CAST($3 AS BIGINT) IS NULL OR d.created_at < $3) \
             AND NOT EXISTS (SELECT 1 FROM deliveries p JOIN endpoints e ON e.id = p.endpoint_id \
                 WHERE p.endpoint_id = d.endpoint_id AND p.status = 'pending' AND p.lease_until >= $4 \
                 AND (e.strict_ordering OR p.ordering_key = d.ordering_key)))",
            endpoint_id,
            since,
            until,
            now
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if let (true, Some(audit)) = (requeued > 0, audit) {
            // The entry records what the recovery did.
            let mut entry = audit.clone();
            entry.detail["requeued"] = requeued.into();
            Self::insert_audit(&mut tx, &entry).await?;
        }
        tx.commit().await?;
        Ok(RecoverOutcome {
            requeued,
            skipped_in_flight: skipped as u64,
        })
    }

    async fn resend_event(
        &self,
        site_id: &SiteId,
        event_id: &EventId,
        endpoint_id: Option<&EndpointId>,
        now: Timestamp,
    ) -> anyhow::Result<ResendOutcome> {
        let mut tx = locks::begin_write(&self.write).await?;
        let (event_text, site_text) = (event_id.as_str(), site_id.as_str());
        let row = sqlx::query_as!(
            StoredEventRow,
            "SELECT id, site_id, event_type, media_id, payload FROM events WHERE id = $1 AND site_id = $2",
            event_text,
            site_text
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(ResendOutcome::EventNotFound);
        };
        let event = NewEvent {
            event_type: row.event_type.parse()?,
            id: row.id.into(),
            site_id: row.site_id.into(),
            media_id: row.media_id,
            payload: row.payload,
            created_at: now,
            deliver_at: now,
        };
        let endpoints = match endpoint_id {
            Some(endpoint_id) => {
                match Self::endpoint_of_site(&mut *tx, site_id, endpoint_id).await? {
                    Some(endpoint) => vec![endpoint],
                    None => return Ok(ResendOutcome::EndpointNotFound),
                }
            }
            None => Self::subscribed_endpoints(&mut tx, site_id, event.event_type).await?,
        };
        let targets: Vec<&Endpoint> = endpoints.iter().collect();
        Self::insert_events_with(&mut tx, &[(&event, &targets)], None, false).await?;
        let (id, now) = (event.id.as_str(), now.millis());
        let ids = sqlx::query_scalar!(
            "SELECT id FROM deliveries WHERE event_id = $1 AND created_at = $2 AND status = 'pending' ORDER BY seq",
            id,
            now
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ResendOutcome::Queued(
            ids.into_iter().map(DeliveryId::from).collect(),
        ))
    }

    async fn list_events(
        &self,
        site_id: &SiteId,
        filter: &EventFilter,
    ) -> anyhow::Result<Vec<EventSummary>> {
        let mut query = QueryBuilder::<Db>::new(
            "SELECT id, event_type, media_id, created_at FROM events WHERE site_id = ",
        );
        query.push_bind(site_id.as_str());
        if let Some(event) = filter.event {
            query.push(" AND event_type = ").push_bind(event.as_str());
        }
        if let Some(since) = filter.since {
            query.push(" AND created_at >= ").push_bind(since.millis());
        }
        if let Some(before) = &filter.before_id {
            query.push(" AND id < ").push_bind(before.as_str());
        }
        query
            .push(" ORDER BY id DESC LIMIT ")
            .push_bind(filter.limit);
        let rows: Vec<EventRow> = query
            .build_query_as()
            .persistent(false)
            .fetch_all(&self.read)
            .await?;
        let mut events: Vec<EventSummary> = rows.into_iter().map(EventSummary::from).collect();
        if events.is_empty() {
            return Ok(events);
        }
        let mut query = QueryBuilder::<Db>::new(
            "SELECT id, event_id, endpoint_id, status, attempts, last_status_code FROM deliveries WHERE event_id IN (",
        );
        let mut ids = query.separated(", ");
        for event in &events {
            ids.push_bind(event.id.to_string());
        }
        query.push(") ORDER BY seq");
        let rows: Vec<EventDeliveryRow> = query
            .build_query_as()
            .persistent(false)
            .fetch_all(&self.read)
            .await?;
        let mut by_event: HashMap<EventId, Vec<EventDelivery>> = HashMap::new();
        for row in rows {
            by_event
                .entry(EventId::from(row.event_id.as_str()))
                .or_default()
                .push(EventDelivery::from(row));
        }
        for event in &mut events {
            event.deliveries = by_event.remove(&event.id).unwrap_or_default();
        }
        Ok(events)
    }

    async fn event_payload(
        &self,
        site_id: &SiteId,
        event_id: &EventId,
    ) -> anyhow::Result<Option<String>> {
        let (site_id, event_id) = (site_id.as_str(), event_id.as_str());
        let payload = sqlx::query_scalar!(
            "SELECT payload FROM events WHERE id = $1 AND site_id = $2",
            event_id,
            site_id
        )
        .fetch_optional(&self.read)
        .await?;
        Ok(payload)
    }
}
