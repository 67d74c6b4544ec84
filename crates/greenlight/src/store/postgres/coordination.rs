//! What every replica must agree on about Slack, in shared tables: Slack's limits are per app,
//! so three replicas must not post three times as fast, nor ignore a 429 another one got.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use sqlx::postgres::PgPool;

use crate::domain::{Bucket, Millis, Pace};
use crate::store::{Coordination, StoreResult};

/// How long a replica trusts its copy of the pause table. A 429 seen by another replica holds
/// here within this long; this replica's own 429s hold at once.
const PAUSES_FRESH_MS: Millis = 500;

pub struct PgCoordination {
    pool: PgPool,
    /// (read at, method -> paused until)
    pauses: Mutex<(Millis, HashMap<String, Millis>)>,
}

impl PgCoordination {
    /// `pool` should not wait for the disk (`synchronous_commit = off`): nothing here is worth
    /// an fsync, and lock holders must not wait for one.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            pauses: Mutex::new((Millis::MIN, HashMap::new())),
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn cached_pause(&self, method: &str, now: Millis) -> Option<Option<Millis>> {
        let cache = self.pauses.lock().unwrap_or_else(|e| e.into_inner());
        (now.saturating_sub(cache.0) < PAUSES_FRESH_MS)
            .then(|| cache.1.get(method).copied().filter(|u| *u > now))
    }
}

#[async_trait]
impl Coordination for PgCoordination {
    async fn take_post_slot(
        &self,
        channel: &str,
        now: Millis,
        pace: Pace,
    ) -> StoreResult<Result<(), Millis>> {
        let full = Bucket::full(pace, now);
        // On the pool that does not wait for the disk, the row is locked only for the round
        // trips of this transaction, never through an fsync.
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO slack_pacing (channel, tokens, at, next_slot) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (channel) DO NOTHING",
        )
        .bind(channel)
        .bind(full.tokens)
        .bind(full.at)
        .bind(full.next_slot)
        .execute(&mut *tx)
        .await?;
        // The row lock makes take-and-write one step across replicas.
        let (tokens, at, next_slot): (f64, i64, i64) = sqlx::query_as(
            "SELECT tokens, at, next_slot FROM slack_pacing WHERE channel = $1 FOR UPDATE",
        )
        .bind(channel)
        .fetch_one(&mut *tx)
        .await?;
        let mut bucket = Bucket {
            tokens,
            at,
            next_slot,
        };
        let taken = bucket.take(now, pace);
        sqlx::query(
            "UPDATE slack_pacing SET tokens = $2, at = $3, next_slot = $4 WHERE channel = $1",
        )
        .bind(channel)
        .bind(bucket.tokens)
        .bind(bucket.at)
        .bind(bucket.next_slot)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(taken)
    }

    async fn pause(&self, method: &str, until: Millis) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO slack_pauses (method, until) VALUES ($1, $2) ON CONFLICT (method) \
             DO UPDATE SET until = GREATEST(slack_pauses.until, EXCLUDED.until)",
        )
        .bind(method)
        .bind(until)
        .execute(&self.pool)
        .await?;
        let mut cache = self.pauses.lock().unwrap_or_else(|e| e.into_inner());
        let entry = cache.1.entry(method.to_owned()).or_insert(until);
        *entry = (*entry).max(until);
        Ok(())
    }

    async fn paused_until(&self, method: &str, now: Millis) -> StoreResult<Option<Millis>> {
        if let Some(cached) = self.cached_pause(method, now) {
            return Ok(cached);
        }
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT method, until FROM slack_pauses WHERE until > $1")
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
        let fresh: HashMap<String, Millis> = rows.into_iter().collect();
        let found = fresh.get(method).copied();
        *self.pauses.lock().unwrap_or_else(|e| e.into_inner()) = (now, fresh);
        Ok(found)
    }

    async fn lease_message(
        &self,
        key: &str,
        owner: &str,
        until: Millis,
        now: Millis,
    ) -> StoreResult<bool> {
        let got: Option<i32> = sqlx::query_scalar(
            "INSERT INTO message_leases (request_id, owner, until) VALUES ($1, $2, $3) \
             ON CONFLICT (request_id) DO UPDATE SET owner = EXCLUDED.owner, until = EXCLUDED.until \
             WHERE message_leases.until < $4 RETURNING 1",
        )
        .bind(key)
        .bind(owner)
        .bind(until)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(got.is_some())
    }

    async fn release_message(&self, key: &str, owner: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM message_leases WHERE request_id = $1 AND owner = $2")
            .bind(key)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
