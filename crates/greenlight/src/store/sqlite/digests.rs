//! SQLite: what a digest stands for, and where its message is.

use async_trait::async_trait;

use super::rows::{all, first};
use super::*;
use crate::store::rows as shared;

shared_sql! {
    DIGEST_MESSAGE = shared::DIGEST_MESSAGE;
    DIGEST_BY_RULE = shared::DIGEST_BY_RULE;
    DIGEST_BY_REQUESTER = shared::DIGEST_BY_REQUESTER;
    DIGEST_RECENT = shared::DIGEST_RECENT;
}

#[async_trait]
impl Digests for SqliteStore {
    async fn digest_summary(&self, key: &str) -> StoreResult<DigestSummary> {
        let key = key.to_owned();
        self.readers
            .read(move |conn| {
                let by_rule: Vec<(String, String, i64)> = all(conn, &DIGEST_BY_RULE, [&key])?;
                let by_requester: Vec<(Option<String>, i64)> =
                    all(conn, &DIGEST_BY_REQUESTER, [&key])?;
                let recent: Vec<DigestEntry> = all(conn, &DIGEST_RECENT, [&key])?;
                Ok(DigestSummary {
                    total: by_rule.iter().map(|(_, _, n)| n).sum(),
                    by_rule,
                    by_requester,
                    recent,
                })
            })
            .await
    }

    async fn digest_message(&self, key: &str) -> StoreResult<Option<SlackMessageRef>> {
        let key = key.to_owned();
        self.readers
            .read(move |conn| {
                let row: Option<(String, String)> = first(conn, &DIGEST_MESSAGE, [key])?;
                Ok(row.map(|(channel, ts)| SlackMessageRef { channel, ts }))
            })
            .await
    }

    async fn set_digest_message(
        &self,
        digest: &DigestWindow,
        channel: &str,
        ts: &str,
    ) -> StoreResult<()> {
        self.writer
            .execute(
                "INSERT INTO digests (key, channel, window_start, window_end, slack_channel, slack_ts) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (key) DO UPDATE SET \
                 slack_channel = excluded.slack_channel, slack_ts = excluded.slack_ts",
                (
                    digest.key.clone(),
                    digest.channel.clone(),
                    digest.start,
                    digest.end,
                    channel.to_owned(),
                    ts.to_owned(),
                ),
            )
            .await
            .map(|_| ())
    }
}
