//! Who is who in Slack: user group members and email -> user id, looked up through the Web API
//! and cached for a while, so a burst of clicks costs one lookup. Lookups sit on the click path,
//! before the ack, so an answer past its TTL is still used while a background task refreshes it,
//! and a lookup with nothing cached is bounded by `LOOKUP_TIMEOUT` (well inside Slack's 3 s). The domain never sees this:
//! the service turns its answers into plain facts ("may vote", "is the requester").

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::{Approver, SlackUserId};
use crate::slack::{SlackApi, SlackCallError};

/// How long a lookup stays true enough: group changes show up within this.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// Longest a click waits for a lookup with nothing cached; past it the vote is refused with
/// "try again" (fail closed) and the lookup goes on to fill the cache.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a stale answer may still be served while it is being refreshed.
const MAX_STALE: Duration = Duration::from_secs(24 * 3600);

/// Entries kept at most per cache; past it, the cache starts over.
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot look up {what} in Slack: {error}")]
pub struct LookupError {
    what: String,
    error: SlackCallError,
}

struct Cache<V> {
    entries: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> Cache<V> {
    fn new() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The cached value and whether it is still fresh.
    fn get(&self, key: &str, ttl: Duration) -> Option<(V, bool)> {
        let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|(at, _)| at.elapsed() < MAX_STALE)
            .map(|(at, v)| (v.clone(), at.elapsed() < ttl))
    }

    fn put(&self, key: &str, value: V) {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(key.to_owned(), (Instant::now(), value));
    }
}

#[derive(Clone)]
pub struct Directory {
    slack: SlackApi,
    ttl: Duration,
    groups: Arc<Cache<Arc<HashSet<String>>>>,
    emails: Arc<Cache<Option<String>>>,
    /// Keys being refreshed in the background, so a burst starts one refresh.
    refreshing: Arc<Mutex<HashSet<String>>>,
}

impl Directory {
    pub fn new(slack: SlackApi, ttl: Duration) -> Self {
        Self {
            slack,
            ttl,
            groups: Arc::new(Cache::new()),
            emails: Arc::new(Cache::new()),
            refreshing: Arc::default(),
        }
    }

    /// Whether `user` is one of `approvers` (directly or through a group). An empty list
    /// means anyone.
    pub async fn is_approver(
        &self,
        approvers: &[Approver],
        user: &str,
    ) -> Result<bool, LookupError> {
        if approvers.is_empty() {
            return Ok(true);
        }
        if approvers
            .iter()
            .any(|a| matches!(a, Approver::User(u) if u.as_str() == user))
        {
            return Ok(true);
        }
        for a in approvers {
            if let Approver::Group(g) = a
                && self.group_members(g.as_str()).await?.contains(user)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `is_approver` from what is cached, without asking Slack (for the write path, where a
    /// change decides whose Home tab it concerns): `None` when a group is not known yet.
    pub fn is_approver_cached(&self, approvers: &[Approver], user: &str) -> Option<bool> {
        if approvers.is_empty()
            || approvers
                .iter()
                .any(|a| matches!(a, Approver::User(u) if u.as_str() == user))
        {
            return Some(true);
        }
        let mut unknown = false;
        for a in approvers {
            if let Approver::Group(g) = a {
                match self.groups.get(g.as_str(), MAX_STALE) {
                    Some((members, _)) if members.contains(user) => return Some(true),
                    Some(_) => {}
                    None => unknown = true,
                }
            }
        }
        (!unknown).then_some(false)
    }

    async fn group_members(&self, group: &str) -> Result<Arc<HashSet<String>>, LookupError> {
        let key = format!("group:{group}");
        match self.groups.get(group, self.ttl) {
            Some((members, true)) => Ok(members),
            Some((members, false)) => {
                let me = self.clone();
                let group = group.to_owned();
                self.refresh(key, async move { me.fetch_group(&group).await.map(|_| ()) });
                Ok(members)
            }
            None => {
                let (me, g) = (self.clone(), group.to_owned());
                bounded(format!("user group {group}"), async move {
                    me.fetch_group(&g).await
                })
                .await
            }
        }
    }

    async fn fetch_group(&self, group: &str) -> Result<Arc<HashSet<String>>, LookupError> {
        let members: Arc<HashSet<String>> = Arc::new(
            self.slack
                .usergroup_members(group)
                .await
                .map_err(|error| LookupError {
                    what: format!("user group {group}"),
                    error,
                })?
                .into_iter()
                .collect(),
        );
        self.groups.put(group, members.clone());
        Ok(members)
    }

    async fn fetch_email(&self, email: &str) -> Result<Option<String>, LookupError> {
        let found = self
            .slack
            .user_by_email(email)
            .await
            .map_err(|error| LookupError {
                what: "the requester's email".to_owned(),
                error,
            })?;
        self.emails.put(&email.to_ascii_lowercase(), found.clone());
        Ok(found)
    }

    /// Looks the configured approver groups up now, so the first click finds them cached.
    pub fn warm(&self, groups: impl IntoIterator<Item = String>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for group in groups {
            let me = self.clone();
            runtime.spawn(async move {
                if let Err(e) = me.fetch_group(&group).await {
                    tracing::warn!(error = %e, "cannot preload an approver group");
                }
            });
        }
    }

    /// Runs `task` in the background unless a refresh of `key` is already running.
    fn refresh(
        &self,
        key: String,
        task: impl std::future::Future<Output = Result<(), LookupError>> + Send + 'static,
    ) {
        let started = self
            .refreshing
            .lock()
            .map(|mut r| r.insert(key.clone()))
            .unwrap_or(false);
        if !started {
            return;
        }
        let refreshing = self.refreshing.clone();
        tokio::spawn(async move {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "refresh failed; serving the previous answer");
            }
            if let Ok(mut r) = refreshing.lock() {
                r.remove(&key);
            }
        });
    }

    /// The Slack user a requester names: a user id is itself, an email is looked up, anything
    /// else (a service name) is nobody in Slack.
    pub async fn user_id(&self, requester: &str) -> Result<Option<String>, LookupError> {
        if SlackUserId::looks_like(requester) {
            return Ok(Some(requester.to_owned()));
        }
        if !requester.contains('@') {
            return Ok(None);
        }
        let key = requester.to_ascii_lowercase();
        match self.emails.get(&key, self.ttl) {
            Some((found, true)) => Ok(found),
            Some((found, false)) => {
                let me = self.clone();
                let email = requester.to_owned();
                self.refresh(format!("email:{key}"), async move {
                    me.fetch_email(&email).await.map(|_| ())
                });
                Ok(found)
            }
            None => {
                let (me, email) = (self.clone(), requester.to_owned());
                bounded("the requester's email".to_owned(), async move {
                    me.fetch_email(&email).await
                })
                .await
            }
        }
    }
}

/// Waits at most `LOOKUP_TIMEOUT` for a lookup. On time-out the lookup keeps running in the
/// background (it fills the cache for the next click) and the caller gets an error now.
async fn bounded<T: Send + 'static>(
    what: String,
    lookup: impl std::future::Future<Output = Result<T, LookupError>> + Send + 'static,
) -> Result<T, LookupError> {
    let mut task = tokio::spawn(lookup);
    match tokio::time::timeout(LOOKUP_TIMEOUT, &mut task).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(LookupError {
            what,
            error: SlackCallError::Transient(format!("lookup task failed: {join}")),
        }),
        Err(_) => Err(LookupError {
            what,
            error: SlackCallError::Transient(format!(
                "Slack did not answer within {} ms",
                LOOKUP_TIMEOUT.as_millis()
            )),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_cold_lookup_gives_up_within_the_bound_and_keeps_filling_in_the_background() {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let slow = async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let _ = done_tx.send(());
            Ok::<_, LookupError>(42)
        };
        let started = tokio::time::Instant::now();
        let err = bounded("a group".into(), slow).await.unwrap_err();
        assert_eq!(started.elapsed(), LOOKUP_TIMEOUT);
        assert!(err.to_string().contains("did not answer"), "{err}");
        // The lookup was not cancelled: it finishes later and would fill the cache.
        done_rx.await.unwrap();
    }
}
