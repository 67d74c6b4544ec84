//! Digests: one Slack message per channel and window standing for the auto-decisions in it;
//! what each stands for and where its message is.

use async_trait::async_trait;

use super::StoreResult;
use crate::domain::Millis;

/// What a digest message stands for, and where it is.
#[async_trait]
pub trait Digests: Send + Sync {
    /// What the digest `key` stands for, from its requests.
    async fn digest_summary(&self, key: &str) -> StoreResult<DigestSummary>;

    /// Where the digest's message is, once posted.
    async fn digest_message(&self, key: &str) -> StoreResult<Option<SlackMessageRef>>;

    async fn set_digest_message(
        &self,
        digest: &DigestWindow,
        channel: &str,
        ts: &str,
    ) -> StoreResult<()>;
}

/// A digest: one message per channel and window standing for the auto-decisions in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestWindow {
    pub key: String,
    pub channel: String,
    pub start: Millis,
    pub end: Millis,
}

impl DigestWindow {
    /// The window of `interval_ms` that `now` falls in, for `channel`: windows are aligned to
    /// the interval, so every replica puts an auto-decision in the same one.
    pub fn at(channel: &str, now: Millis, interval_ms: Millis) -> Self {
        let interval = interval_ms.max(1);
        let start = now - now.rem_euclid(interval);
        Self {
            key: format!("{channel}@{start}+{interval}"),
            channel: channel.to_owned(),
            start,
            end: start + interval,
        }
    }

    /// The window a key names (`channel@start+interval`).
    pub fn parse(key: &str) -> Option<Self> {
        let (channel, when) = key.rsplit_once('@')?;
        let (start, interval) = when.split_once('+')?;
        let (start, interval): (Millis, Millis) = (start.parse().ok()?, interval.parse().ok()?);
        Some(Self {
            key: key.to_owned(),
            channel: channel.to_owned(),
            start,
            end: start + interval.max(1),
        })
    }
}

/// Where a posted message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackMessageRef {
    pub channel: String,
    pub ts: String,
}

/// A digest's content: how many auto-decisions, by rule and outcome, for whom, the latest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DigestSummary {
    pub total: i64,
    /// (rule, status, count), most first.
    pub by_rule: Vec<(String, String, i64)>,
    /// (requester, count), most first, at most a few.
    pub by_requester: Vec<(Option<String>, i64)>,
    /// The latest few: (id, title, status, rule, requester).
    pub recent: Vec<DigestEntry>,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DigestEntry {
    pub id: String,
    pub title: String,
    pub status: String,
    pub decided_by: Option<String>,
    pub requester: Option<String>,
}
