//! PostgreSQL: who opened the Home tab lately.

use async_trait::async_trait;

use super::*;
use crate::domain::Millis;

#[async_trait]
impl Home for PostgresStore {
    async fn record_home_opened(
        &self,
        user: &str,
        now: Millis,
        forget_before: Millis,
        effects: &[Effect],
    ) -> StoreResult<()> {
        let mut qb =
            Statement::new("WITH src AS (INSERT INTO home_opened (user_id, opened_at) VALUES (");
        qb.push_bind(user.to_owned())
            .push(", ")
            .push_bind(now)
            .push(
                ") ON CONFLICT (user_id) DO UPDATE SET opened_at = GREATEST(home_opened.opened_at, EXCLUDED.opened_at) \
                 RETURNING 1), forgotten AS (DELETE FROM home_opened WHERE opened_at < ",
            )
            .push_bind(forget_before)
            .push(")");
        push_audit_and_effects(&mut qb, "src", now, &[], effects)?;
        qb.push(" SELECT count(*) FROM src");
        count_of(&mut qb, &self.pool).await.map(|_| ())
    }

    async fn home_viewers(&self, since: Millis, limit: u32) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT user_id FROM home_opened WHERE opened_at >= $1 \
             ORDER BY opened_at DESC, user_id LIMIT $2",
        )
        .bind(since)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }
}
