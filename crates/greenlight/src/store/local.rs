//! Coordination for one process (SQLite: one server per database file): post pacing, 429
//! pauses and message leases live in memory, which is exactly as shared as they need to be.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Coordination, StoreResult};
use crate::domain::{Bucket, Millis, Pace};

#[derive(Default)]
pub struct LocalCoordination {
    buckets: Mutex<HashMap<String, Bucket>>,
    paused: Mutex<HashMap<String, Millis>>,
    /// Message and Home tab leases: key -> (owner, until).
    messages: Mutex<HashMap<String, (String, Millis)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl Coordination for LocalCoordination {
    async fn take_post_slot(
        &self,
        channel: &str,
        now: Millis,
        pace: Pace,
    ) -> StoreResult<Result<(), Millis>> {
        Ok(lock(&self.buckets)
            .entry(channel.to_owned())
            .or_insert_with(|| Bucket::full(pace, now))
            .take(now, pace))
    }

    async fn pause(&self, method: &str, until: Millis) -> StoreResult<()> {
        let mut paused = lock(&self.paused);
        let entry = paused.entry(method.to_owned()).or_insert(until);
        *entry = (*entry).max(until);
        Ok(())
    }

    async fn paused_until(&self, method: &str, now: Millis) -> StoreResult<Option<Millis>> {
        Ok(lock(&self.paused)
            .get(method)
            .copied()
            .filter(|until| *until > now))
    }

    async fn lease_message(
        &self,
        key: &str,
        owner: &str,
        until: Millis,
        now: Millis,
    ) -> StoreResult<bool> {
        let mut leases = lock(&self.messages);
        match leases.get(key) {
            Some((_, held_until)) if *held_until >= now => Ok(false),
            _ => {
                leases.insert(key.to_owned(), (owner.to_owned(), until));
                Ok(true)
            }
        }
    }

    async fn release_message(&self, key: &str, owner: &str) -> StoreResult<()> {
        let mut leases = lock(&self.messages);
        if leases.get(key).is_some_and(|(o, _)| o == owner) {
            leases.remove(key);
        }
        Ok(())
    }
}
