//! PostgreSQL: what a digest stands for, and where its message is.

use async_trait::async_trait;

use super::*;
use crate::store::rows;

#[async_trait]
impl Digests for PostgresStore {
    async fn digest_summary(&self, key: &str) -> StoreResult<DigestSummary> {
        let by_rule: Vec<(String, String, i64)> = sqlx::query_as(rows::DIGEST_BY_RULE)
            .bind(key)
            .fetch_all(&self.pool)
            .await?;
        let by_requester: Vec<(Option<String>, i64)> = sqlx::query_as(rows::DIGEST_BY_REQUESTER)
            .bind(key)
            .fetch_all(&self.pool)
            .await?;
        let recent: Vec<DigestEntry> = sqlx::query_as(rows::DIGEST_RECENT)
            .bind(key)
            .fetch_all(&self.pool)
            .await?;
        Ok(DigestSummary {
            total: by_rule.iter().map(|(_, _, n)| n).sum(),
            by_rule,
            by_requester,
            recent,
        })
    }

    async fn digest_message(&self, key: &str) -> StoreResult<Option<SlackMessageRef>> {
        let row: Option<(String, String)> = sqlx::query_as(rows::DIGEST_MESSAGE)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(channel, ts)| SlackMessageRef { channel, ts }))
    }

    async fn set_digest_message(
        &self,
        digest: &DigestWindow,
        channel: &str,
        ts: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO digests (key, channel, window_start, window_end, slack_channel, slack_ts) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key) DO UPDATE SET \
             slack_channel = EXCLUDED.slack_channel, slack_ts = EXCLUDED.slack_ts",
        )
        .bind(&digest.key)
        .bind(&digest.channel)
        .bind(digest.start)
        .bind(digest.end)
        .bind(channel)
        .bind(ts)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
