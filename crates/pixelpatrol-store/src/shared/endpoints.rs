//! Webhook endpoints (shared by both backends: compiled into each).

use async_trait::async_trait;
use pixelpatrol_core::model::{
    AuditEntry, Endpoint, EndpointHealthState, EndpointId, SiteId, Timestamp,
};
use pixelpatrol_core::store::Endpoints;
use pixelpatrol_webhooks::EventType;

use super::{BackendStore, Db};

/// An endpoint as stored. Its statements are all in this file: a column
/// added to `endpoints` is added here, and the compiler (`query_as!`) names
/// every statement that does not return it.
#[derive(Debug)]
pub(super) struct EndpointRow {
    id: String,
    site_id: String,
    url: String,
    secret: String,
    /// Event types, comma-separated.
    events: String,
    active: bool,
    description: Option<String>,
    strict_ordering: bool,
    disabled_reason: Option<String>,
    disabled_at: Option<i64>,
    consecutive_failures: i64,
    failing_since: Option<i64>,
    last_success_at: Option<i64>,
    last_failure_at: Option<i64>,
    last_failure_class: Option<String>,
    last_failure_status: Option<i64>,
    last_failure_message: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<EndpointRow> for Endpoint {
    type Error = anyhow::Error;

    fn try_from(row: EndpointRow) -> anyhow::Result<Self> {
        Ok(Endpoint {
            events: parse_events(&row.events)?,
            id: row.id.into(),
            site_id: row.site_id.into(),
            url: row.url,
            secret: row.secret,
            active: row.active,
            description: row.description,
            strict_ordering: row.strict_ordering,
            disabled_reason: row.disabled_reason,
            disabled_at: row.disabled_at.map(Timestamp::from_millis),
            health: EndpointHealthState {
                consecutive_failures: row.consecutive_failures,
                failing_since: row.failing_since.map(Timestamp::from_millis),
                last_success_at: row.last_success_at.map(Timestamp::from_millis),
                last_failure_at: row.last_failure_at.map(Timestamp::from_millis),
                last_failure_class: row.last_failure_class,
                last_failure_status: row.last_failure_status,
                last_failure_message: row.last_failure_message,
            },
            created_at: Timestamp::from_millis(row.created_at),
            updated_at: Timestamp::from_millis(row.updated_at),
        })
    }
}

/// Endpoint columns as stored: event types comma-separated.
fn join_events(events: &[EventType]) -> String {
    events
        .iter()
        .map(|event| event.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_events(text: &str) -> anyhow::Result<Vec<EventType>> {
    text.split(',')
        .filter(|part| !part.is_empty())
        .map(|part| part.parse().map_err(anyhow::Error::from))
        .collect()
}

impl BackendStore {
    /// Endpoint `id` of site `site_id`, on the pool or inside a transaction.
    pub(super) async fn endpoint_of_site<'e>(
        executor: impl sqlx::Executor<'e, Database = Db>,
        site_id: &SiteId,
        id: &EndpointId,
    ) -> anyhow::Result<Option<Endpoint>> {
        let site_id = site_id.as_str();
        let id = id.as_str();
        let row = sqlx::query_as!(
            EndpointRow,
            "SELECT id, site_id, url, secret, events, active, description, strict_ordering, \
             disabled_reason, disabled_at, consecutive_failures, failing_since, last_success_at, \
             last_failure_at, last_failure_class, last_failure_status, last_failure_message, \
             created_at, updated_at \
             FROM endpoints WHERE site_id = $1 AND id = $2",
            site_id,
            id
        )
        .fetch_optional(executor)
        .await?;
        row.map(Endpoint::try_from).transpose()
    }

    /// The site's active endpoints subscribed to `event`, read inside the
    /// transaction that writes the event (the outbox write).
    pub(super) async fn subscribed_endpoints(
        tx: &mut sqlx::Transaction<'static, Db>,
        site_id: &SiteId,
        event: EventType,
    ) -> anyhow::Result<Vec<Endpoint>> {
        let site_id = site_id.as_str();
        let rows = sqlx::query_as!(
            EndpointRow,
            "SELECT id, site_id, url, secret, events, active, description, strict_ordering, \
             disabled_reason, disabled_at, consecutive_failures, failing_since, last_success_at, \
             last_failure_at, last_failure_class, last_failure_status, last_failure_message, \
             created_at, updated_at \
             FROM endpoints WHERE site_id = $1 AND active ORDER BY created_at, id",
            site_id
        )
        .fetch_all(&mut **tx)
        .await?;
        let mut endpoints = Vec::with_capacity(rows.len());
        for row in rows {
            let endpoint = Endpoint::try_from(row)?;
            if endpoint.subscribes_to(event) {
                endpoints.push(endpoint);
            }
        }
        Ok(endpoints)
    }
}

#[async_trait]
impl Endpoints for BackendStore {
    async fn create_endpoint(
        &self,
        endpoint: &Endpoint,
        audit: Option<&AuditEntry>,
    ) -> anyhow::Result<()> {
        let mut tx = super::locks::begin_write(&self.write).await?;
        let events = join_events(&endpoint.events);
        let id = endpoint.id.as_str();
        let site_id = endpoint.site_id.as_str();
        let created_at = endpoint.created_at.millis();
        let updated_at = endpoint.updated_at.millis();
        sqlx::query!(
            "INSERT INTO endpoints (id, site_id, url, secret, events, active, description, \
             strict_ordering, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            id,
            site_id,
            endpoint.url,
            endpoint.secret,
            events,
            endpoint.active,
            endpoint.description,
            endpoint.strict_ordering,
            created_at,
            updated_at,
        )
        .execute(&mut *tx)
        .await?;
        if let Some(audit) = audit {
            Self::insert_audit(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_endpoints(&self, site_id: &SiteId) -> anyhow::Result<Vec<Endpoint>> {
        let site_id = site_id.as_str();
        let rows = sqlx::query_as!(
            EndpointRow,
            "SELECT id, site_id, url, secret, events, active, description, strict_ordering, \
             disabled_reason, disabled_at, consecutive_failures, failing_since, last_success_at, \
             last_failure_at, last_failure_class, last_failure_status, last_failure_message, \
             created_at, updated_at \
             FROM endpoints WHERE site_id = $1 ORDER BY created_at, id",
            site_id
        )
        .fetch_all(&self.read)
        .await?;
        rows.into_iter().map(Endpoint::try_from).collect()
    }

    async fn get_endpoint(
        &self,
        site_id: &SiteId,
        id: &EndpointId,
    ) -> anyhow::Result<Option<Endpoint>> {
        Self::endpoint_of_site(&self.read, site_id, id).await
    }

    async fn update_endpoint(
        &self,
        endpoint: &Endpoint,
        set_active: bool,
        now: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> anyhow::Result<bool> {
        let mut tx = super::locks::begin_write(&self.write).await?;
        let reactivated = set_active && endpoint.active && {
            let id = endpoint.id.as_str();
            let site_id = endpoint.site_id.as_str();
            let was = sqlx::query_scalar!(
                "SELECT active FROM endpoints WHERE id = $1 AND site_id = $2",
                id,
                site_id
            )
            .fetch_optional(&mut *tx)
            .await?;
            was == Some(false)
        };
        let events = join_events(&endpoint.events);
        // The right-hand `active` is the value before the update.
        let updated_at = endpoint.updated_at.millis();
        let id = endpoint.id.as_str();
        let site_id = endpoint.site_id.as_str();
        let result = sqlx::query!(
            "UPDATE endpoints SET url = $1, secret = $2, events = $3, \
             description = $5, strict_ordering = $6, updated_at = $7, \
             disabled_reason = CASE WHEN $10 AND $4 THEN NULL ELSE disabled_reason END, \
             disabled_at = CASE WHEN $10 AND $4 THEN NULL ELSE disabled_at END, \
             consecutive_failures = CASE WHEN $10 AND $4 AND NOT active THEN 0 ELSE consecutive_failures END, \
             failing_since = CASE WHEN $10 AND $4 AND NOT active THEN NULL ELSE failing_since END, \
             alert_state = CASE WHEN $10 AND $4 AND NOT active THEN 'healthy' ELSE alert_state END, \
             active = CASE WHEN $10 THEN $4 ELSE active END \
             WHERE id = $8 AND site_id = $9",
            endpoint.url,
            endpoint.secret,
            events,
            endpoint.active,
            endpoint.description,
            endpoint.strict_ordering,
            updated_at,
            id,
            site_id,
            set_active,
        )
        .execute(&mut *tx)
        .await?;
        if reactivated {
            // What waited for the endpoint goes now, in its order.
            let now = now.millis();
            sqlx::query!(
                "UPDATE deliveries SET next_attempt_at = $2 \
                 WHERE endpoint_id = $1 AND status = 'pending' AND next_attempt_at > $2",
                id,
                now
            )
            .execute(&mut *tx)
            .await?;
        }
        let updated = result.rows_affected() == 1;
        if let (true, Some(audit)) = (updated, audit) {
            Self::insert_audit(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(updated)
    }

    async fn delete_endpoint(
        &self,
        site_id: &SiteId,
        id: &EndpointId,
        audit: Option<&AuditEntry>,
    ) -> anyhow::Result<bool> {
        let mut tx = super::locks::begin_write(&self.write).await?;
        let id = id.as_str();
        let site_id = site_id.as_str();
        let result = sqlx::query!(
            "DELETE FROM endpoints WHERE id = $1 AND site_id = $2",
            id,
            site_id
        )
        .execute(&mut *tx)
        .await?;
        let deleted = result.rows_affected() == 1;
        if deleted {
            Self::delete_queue_of_endpoint(&mut tx, id).await?;
        }
        if let (true, Some(audit)) = (deleted, audit) {
            Self::insert_audit(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }
}

impl BackendStore {
    /// Deletes an endpoint's deliveries and attempts, inside the caller's
    /// transaction, once the endpoint row is gone (no new claim can take
    /// them). PostgreSQL's queue tables have no foreign keys to cascade
    /// (its migration 0009 says why); SQLite's cascade has already done it.
    ///
    /// Deliveries go first: the statement waits for an attempt being
    /// recorded on one of them (the record updates its delivery before it
    /// writes the attempt), so that the attempts statement after it, which
    /// reads afresh, sees that attempt too.
    pub(super) async fn delete_queue_of_endpoint(
        tx: &mut sqlx::Transaction<'static, Db>,
        endpoint_id: &str,
    ) -> anyhow::Result<()> {
        sqlx::query!("DELETE FROM deliveries WHERE endpoint_id = $1", endpoint_id)
            .execute(&mut **tx)
            .await?;
        sqlx::query!(
            "DELETE FROM delivery_attempts WHERE endpoint_id = $1",
            endpoint_id
        )
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}
