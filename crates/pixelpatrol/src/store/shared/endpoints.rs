//! Webhook endpoints (shared by both backends: compiled into each).

use async_trait::async_trait;

use super::BackendStore;
use crate::model::Endpoint;
use crate::store::Endpoints;
use crate::store::rows::{ENDPOINT_COLUMNS, EndpointRow, join_events};

#[async_trait]
impl Endpoints for BackendStore {
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
        let rows: Vec<EndpointRow> = sqlx::query_as(&sql)
            .bind(site_id)
            .fetch_all(&self.read)
            .await?;
        rows.into_iter().map(Endpoint::try_from).collect()
    }

    async fn get_endpoint(&self, site_id: &str, id: &str) -> anyhow::Result<Option<Endpoint>> {
        let sql =
            format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE site_id = $1 AND id = $2");
        let row: Option<EndpointRow> = sqlx::query_as(&sql)
            .bind(site_id)
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        row.map(Endpoint::try_from).transpose()
    }

    async fn update_endpoint(
        &self,
        endpoint: &Endpoint,
        set_active: bool,
        now_ms: i64,
    ) -> anyhow::Result<bool> {
        let mut tx = self.write.begin().await?;
        let reactivated = set_active && endpoint.active && {
            let was: Option<bool> =
                sqlx::query_scalar("SELECT active FROM endpoints WHERE id = $1 AND site_id = $2")
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
}
