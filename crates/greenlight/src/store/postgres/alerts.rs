//! PostgreSQL: when each alert last fired, shared by the replicas.

use async_trait::async_trait;

use super::*;
use crate::domain::Millis;

#[async_trait]
impl Alerts for PostgresStore {
    async fn claim_alert(
        &self,
        key: &str,
        now: Millis,
        window_ms: Millis,
        audit: &[NewAudit],
        effects: &[Effect],
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "INSERT INTO alert_state (key, fired_at) VALUES ($1, $2) ON CONFLICT (key) \
             DO UPDATE SET fired_at = EXCLUDED.fired_at WHERE alert_state.fired_at <= $3",
        )
        .bind(key)
        .bind(now)
        .bind(now - window_ms)
        .execute(&mut *tx)
        .await?;
        let fired = done.rows_affected() == 1;
        if fired && !(audit.is_empty() && effects.is_empty()) {
            let mut qb = Statement::new("WITH src AS (SELECT 1 AS one)");
            push_audit_and_effects(&mut qb, "src", now, audit, effects)?;
            qb.push(" SELECT count(*) FROM src");
            qb.build_query_scalar::<i64>().fetch_one(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(fired)
    }
}
