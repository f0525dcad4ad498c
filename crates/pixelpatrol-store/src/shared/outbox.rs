//! The outbox (shared by both backends: compiled into each): events and
//! their deliveries written inside the transaction of the change that caused
//! them, and the worker's record of each attempt. The claim differs per
//! backend and lives in the backend's `claim.rs`.

use async_trait::async_trait;
use sqlx::QueryBuilder;

use super::{BackendStore, Db, locks};
use pixelpatrol_core::model::{
    AttemptRecord, ClaimRequest, ClaimedDelivery, DeliveryId, DeliveryStatus, Endpoint, LeaseToken,
    NewEvent, NextStep, Timestamp,
};
use pixelpatrol_core::store::Outbox;
use pixelpatrol_store::rows::ATTEMPT_COLUMNS;

/// Events, and deliveries, written per statement (SQLite's bound-parameter
/// limit).
const EVENT_CHUNK: usize = 1000;
const DELIVERY_CHUNK: usize = 2000;

/// A delivery's status and due time after an attempt.
fn next_step_columns(next: NextStep) -> (&'static str, Option<i64>) {
    match next {
        NextStep::Succeeded => (DeliveryStatus::Succeeded.as_str(), None),
        NextStep::RetryAt(at) => (DeliveryStatus::Pending.as_str(), Some(at.millis())),
        NextStep::Dead => (DeliveryStatus::Failed.as_str(), None),
    }
}

impl BackendStore {
    /// Writes an event and one pending delivery per given endpoint, inside
    /// the caller's transaction (the outbox write).
    pub(super) async fn insert_event(
        tx: &mut sqlx::Transaction<'static, Db>,
        event: &NewEvent,
        endpoints: &[&Endpoint],
        leased: Option<(&str, &str, i64)>,
    ) -> anyhow::Result<()> {
        Self::insert_events(tx, &[(event, endpoints)], leased).await
    }

    /// Writes events and their deliveries with a few multi-row statements,
    /// inside the caller's transaction.
    pub(super) async fn insert_events(
        tx: &mut sqlx::Transaction<'static, Db>,
        events: &[(&NewEvent, &[&Endpoint])],
        leased: Option<(&str, &str, i64)>,
    ) -> anyhow::Result<()> {
        Self::insert_events_with(tx, events, leased, true).await
    }

    /// As `insert_events`; without `write_event_rows` only the deliveries
    /// are written (the events exist: a resend).
    pub(super) async fn insert_events_with(
        tx: &mut sqlx::Transaction<'static, Db>,
        events: &[(&NewEvent, &[&Endpoint])],
        leased: Option<(&str, &str, i64)>,
        write_event_rows: bool,
    ) -> anyhow::Result<()> {
        locks::lock_strict_endpoints(tx, events).await?;
        for chunk in events.chunks(EVENT_CHUNK).filter(|_| write_event_rows) {
            let mut insert = QueryBuilder::<Db>::new(
                "INSERT INTO events (id, site_id, event_type, media_id, payload, created_at) ",
            );
            insert.push_values(chunk, |mut values, (event, _)| {
                values
                    .push_bind(event.id.as_str())
                    .push_bind(event.site_id.as_str())
                    .push_bind(event.event_type.as_str())
                    .push_bind(&event.media_id)
                    .push_bind(&event.payload)
                    .push_bind(event.created_at.millis());
            });
            insert.build().persistent(false).execute(&mut **tx).await?;
        }
        let deliveries: Vec<(&NewEvent, &Endpoint)> = events
            .iter()
            .flat_map(|(event, endpoints)| {
                endpoints.iter().map(move |endpoint| (*event, *endpoint))
            })
            .collect();
        for chunk in deliveries.chunks(DELIVERY_CHUNK) {
            let mut insert = QueryBuilder::<Db>::new(
                "INSERT INTO deliveries (id, event_id, endpoint_id, site_id, event_type, \
                 ordering_key, status, attempts, next_attempt_at, lease_until, lease_token, \
                 created_at, updated_at) ",
            );
            insert.push_values(chunk, |mut values, (event, endpoint)| {
                let id = match leased {
                    Some((delivery_id, _, _)) => delivery_id.to_string(),
                    None => DeliveryId::generate().into_string(),
                };
                values
                    .push_bind(id)
                    .push_bind(event.id.as_str())
                    .push_bind(endpoint.id.as_str())
                    .push_bind(event.site_id.as_str())
                    .push_bind(event.event_type.as_str())
                    .push_bind(&event.media_id)
                    .push_bind(DeliveryStatus::Pending.as_str())
                    .push_bind(0_i64)
                    .push_bind(event.deliver_at.millis())
                    .push_bind(leased.map(|(_, _, until)| until))
                    .push_bind(leased.map(|(_, token, _)| token.to_string()))
                    .push_bind(event.created_at.millis())
                    .push_bind(event.created_at.millis());
            });
            insert.build().persistent(false).execute(&mut **tx).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Outbox for BackendStore {
    async fn create_leased_delivery(
        &self,
        endpoint: &Endpoint,
        event: &NewEvent,
        delivery_id: &DeliveryId,
        lease_token: &LeaseToken,
        lease_until: Timestamp,
    ) -> anyhow::Result<ClaimedDelivery> {
        let mut tx = locks::begin_write(&self.write).await?;
        Self::insert_event(
            &mut tx,
            event,
            &[endpoint],
            Some((
                delivery_id.as_str(),
                lease_token.as_str(),
                lease_until.millis(),
            )),
        )
        .await?;
        tx.commit().await?;
        Ok(ClaimedDelivery {
            id: delivery_id.clone(),
            lease_token: lease_token.clone(),
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
        self.claim(request).await
    }

    async fn record_attempts(&self, records: &[AttemptRecord]) -> anyhow::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut tx = locks::begin_write(&self.write).await?;
        // One statement moves every delivery on. Only the lease holder does:
        // if its lease expired and another worker took over, that worker's
        // outcome decides (the attempt is still logged).
        let mut update = QueryBuilder::<Db>::new(
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
                .push_bind(record.delivery_id.as_str())
                .push_bind(record.lease_token.as_str())
                .push_bind(status)
                .push_bind(record.attempt)
                .push_bind(next_attempt_at)
                .push_bind(record.status_code)
                .push_bind(last_error)
                .push_bind(record.started_at.plus_ms(record.duration_ms).millis());
        });
        update
            .push(") AS v WHERE deliveries.id = v.column1 AND deliveries.lease_token = v.column2");
        update.build().persistent(false).execute(&mut *tx).await?;
        // Attempts whose delivery was deleted meanwhile (its endpoint or site
        // was removed) are dropped, not an error. Written after the update,
        // which waits for a deletion holding the delivery (and then finds
        // nothing), so a deletion sees the attempts of the records it waited
        // for. A record whose lease was lost updates nothing and waits for
        // nobody: its attempt may outlive a deletion, until retention.
        let mut insert = QueryBuilder::<Db>::new(format!(
            "INSERT INTO delivery_attempts ({ATTEMPT_COLUMNS}, endpoint_id) \
             SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, \
             v.column7, v.column8, v.column9, v.column10 FROM ("
        ));
        insert.push_values(records, |mut values, record| {
            let (_, next_attempt_at) = next_step_columns(record.next);
            values
                .push_bind(record.delivery_id.as_str())
                .push_bind(record.attempt)
                .push_bind(record.started_at.millis())
                .push_bind(record.duration_ms)
                .push_bind(record.status_code)
                .push_bind(&record.response_body)
                .push_bind(&record.error_class)
                .push_bind(&record.error_message)
                .push_bind(next_attempt_at)
                .push_bind(record.endpoint_id.as_str());
        });
        insert.push(") AS v WHERE EXISTS (SELECT 1 FROM deliveries d WHERE d.id = v.column1)");
        insert.build().persistent(false).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn release_leases(&self, leases: &[(DeliveryId, LeaseToken)]) -> anyhow::Result<()> {
        let now = Timestamp::now().millis();
        let mut tx = locks::begin_write(&self.write).await?;
        for (delivery_id, token) in leases {
            // Due at once again (on SQLite the claim had moved it to the
            // lease's end).
            let (delivery_id, token) = (delivery_id.as_str(), token.as_str());
            sqlx::query!(
                "UPDATE deliveries SET lease_until = NULL, lease_token = NULL, next_attempt_at = $3 \
                 WHERE id = $1 AND lease_token = $2",
                delivery_id,
                token,
                now
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
