//! Who is who in Slack: user group members and email -> user id, looked up through the Web API
//! and cached for a while, so a burst of clicks costs one lookup. The domain never sees this:
//! the service turns its answers into plain facts ("may vote", "is the requester").

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::{Approver, SlackUserId};
use crate::slack::{SlackApi, SlackCallError};

/// How long a lookup stays true enough: group changes show up within this.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
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

    fn get(&self, key: &str, ttl: Duration) -> Option<V> {
        let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|(at, _)| at.elapsed() < ttl)
            .map(|(_, v)| v.clone())
    }

    fn put(&self, key: &str, value: V) {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(key.to_owned(), (Instant::now(), value));
    }
}

pub struct Directory {
    slack: SlackApi,
    ttl: Duration,
    groups: Cache<Arc<HashSet<String>>>,
    emails: Cache<Option<String>>,
}

impl Directory {
    pub fn new(slack: SlackApi, ttl: Duration) -> Self {
        Self {
            slack,
            ttl,
            groups: Cache::new(),
            emails: Cache::new(),
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

    async fn group_members(&self, group: &str) -> Result<Arc<HashSet<String>>, LookupError> {
        if let Some(members) = self.groups.get(group, self.ttl) {
            return Ok(members);
        }
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
        if let Some(found) = self.emails.get(&key, self.ttl) {
            return Ok(found);
        }
        let found = self
            .slack
            .user_by_email(requester)
            .await
            .map_err(|error| LookupError {
                what: "the requester's email".to_owned(),
                error,
            })?;
        self.emails.put(&key, found.clone());
        Ok(found)
    }
}
