//! The one shared state behind the Web API, the control API, the page and `SandboxHandle`.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::config::{Channel, SandboxConfig, User};
use crate::error::SandboxError;
use crate::faults::Faults;
use crate::model::{ApiCall, Delivery, EphemeralMessage, Message, SandboxEvent, View};
use crate::socket::SocketHub;

/// Oldest calls are dropped past this, so long benchmarks do not grow without bound.
const MAX_CALLS: usize = 200_000;

pub(crate) struct Shared {
    pub config: SandboxConfig,
    pub addr: SocketAddr,
    pub interactivity_url: RwLock<String>,
    /// `None` derives it from the interactivity URL (see `events_url()`).
    pub events_url: RwLock<Option<String>>,
    pub commands_url: RwLock<Option<String>>,
    pub store: Mutex<Store>,
    pub faults: Mutex<Faults>,
    pub events: broadcast::Sender<SandboxEvent>,
    pub http: reqwest::Client,
    pub sockets: SocketHub,
    pub cancel: CancellationToken,
    /// The app's direct-message channel with each user (`D…`, see `events::dm_channel_id`):
    /// found by id only, opened with conversations.open.
    pub dms: Vec<Channel>,
}

#[derive(Default)]
pub(crate) struct Store {
    /// Per channel id, every message (top level and replies) in ts order.
    pub messages: HashMap<String, Vec<Message>>,
    /// Direct-message channels conversations.open has opened.
    pub opened_dms: std::collections::HashSet<String>,
    pub ephemerals: Vec<EphemeralMessage>,
    pub views: Vec<View>,
    /// Each user's published Home tab (views.publish), by user id.
    pub home_views: HashMap<String, View>,
    pub triggers: HashMap<String, Trigger>,
    pub response_urls: HashMap<String, ResponseUrl>,
    pub calls: VecDeque<ApiCall>,
    pub deliveries: Vec<Delivery>,
    last_ts_micros: u64,
}

pub(crate) struct Trigger {
    pub issued: Instant,
    pub used: bool,
    pub user: String,
}

/// A `response_url` handed out with a click or a slash command: where it points and how
/// often it was used.
pub(crate) struct ResponseUrl {
    pub channel: String,
    /// The clicked message; `None` for slash commands (nothing to replace or delete).
    pub message_ts: Option<String>,
    pub user: String,
    pub issued: Instant,
    pub uses: u32,
}

/// Locks, ignoring poisoning: a panicked holder cannot leave these maps half-written in a way
/// that matters more than stopping the whole sandbox.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Where message `ts` is. Messages are pushed in ts order and same-width ts strings sort like
/// numbers, so a binary search finds it; a benchmark keeps tens of thousands per channel. The
/// scan is the fallback for a ts that is not in canonical form.
fn find_ts(messages: &[Message], ts: &str) -> Option<usize> {
    messages
        .binary_search_by(|m| m.ts.as_str().cmp(ts))
        .ok()
        .or_else(|| messages.iter().position(|m| m.ts == ts))
}

/// Slack-style `seconds.micros` string.
pub(crate) fn format_ts(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// Random upper-case letters and digits, the alphabet of Slack's event ids.
pub(crate) fn random_upper(n: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect()
}

/// Replaces an optional URL (`None`: derive it from the interactivity URL).
pub(crate) fn set_url(slot: &RwLock<Option<String>>, url: Option<String>) {
    *slot.write().unwrap_or_else(|e| e.into_inner()) = url;
}

/// `scheme://host[:port]` + `path`, or `None` when `url` is not an absolute URL.
fn sibling_url(url: &str, path: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let origin = parsed.origin();
    origin
        .is_tuple()
        .then(|| format!("{}{path}", origin.ascii_serialization()))
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut rng = rand::rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

impl Store {
    /// A message ts: wall-clock micros, bumped so every ts is unique and strictly increasing.
    pub fn next_ts(&mut self) -> String {
        let now = unix_micros().max(self.last_ts_micros + 1);
        self.last_ts_micros = now;
        format_ts(now)
    }

    pub fn message(&self, channel: &str, ts: &str) -> Option<&Message> {
        let messages = self.messages.get(channel)?;
        find_ts(messages, ts).map(|i| &messages[i])
    }

    pub fn message_mut(&mut self, channel: &str, ts: &str) -> Option<&mut Message> {
        let messages = self.messages.get_mut(channel)?;
        find_ts(messages, ts).map(|i| &mut messages[i])
    }

    pub fn push_call(&mut self, call: ApiCall) {
        if self.calls.len() >= MAX_CALLS {
            self.calls.pop_front();
        }
        self.calls.push_back(call);
    }
}

impl Shared {
    pub fn emit(&self, event: SandboxEvent) {
        // No subscribers is normal.
        let _ = self.events.send(event);
    }

    /// `emit`, building the event only when someone listens: the events of every Web API call
    /// carry copies of its arguments and messages, which a load test pays for on each call.
    pub fn emit_with(&self, event: impl FnOnce() -> SandboxEvent) {
        if self.listened() {
            self.emit(event());
        }
    }

    /// Whether anyone subscribes to the events.
    pub fn listened(&self) -> bool {
        self.events.receiver_count() > 0
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A channel by id, `#name` or `name`; or the app's direct message with a user, by id.
    pub fn channel(&self, key: &str) -> Option<&Channel> {
        let name = key.strip_prefix('#').unwrap_or(key);
        self.config
            .channels
            .iter()
            .find(|c| c.id == key || c.name == name)
            .or_else(|| self.dms.iter().find(|d| d.id == key))
    }

    /// The user a direct-message channel is with, if `channel` is one.
    pub fn dm_user(&self, channel: &str) -> Option<&User> {
        self.config
            .users
            .iter()
            .find(|u| crate::events::dm_channel_id(&u.id) == channel)
    }

    pub fn user(&self, id: &str) -> Option<&User> {
        self.config.users.iter().find(|u| u.id == id)
    }

    /// A fresh trigger id usable once, for `trigger_ttl`, by views.open.
    pub fn issue_trigger(&self, user: &str) -> String {
        let mut rng = rand::rng();
        let id = format!(
            "{}.{}.{}",
            rng.random_range(100_000_000_000u64..999_999_999_999),
            rng.random_range(10_000_000_000u64..99_999_999_999),
            random_hex(16)
        );
        let mut store = lock(&self.store);
        let ttl = self.config.trigger_ttl;
        // Forget long-dead triggers so they do not pile up.
        store
            .triggers
            .retain(|_, t| t.issued.elapsed() < ttl + Duration::from_secs(600));
        store.triggers.insert(
            id.clone(),
            Trigger {
                issued: Instant::now(),
                used: false,
                user: user.to_owned(),
            },
        );
        id
    }

    pub fn interactivity_url(&self) -> String {
        self.interactivity_url
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The events URL: set explicitly, or the interactivity URL's origin + `/slack/events`.
    pub fn events_url(&self) -> String {
        let set = self
            .events_url
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        set.unwrap_or_else(|| self.derived_url("/slack/events"))
    }

    /// The commands URL: set explicitly, or the interactivity URL's origin + `/slack/commands`.
    pub fn commands_url(&self) -> String {
        let set = self
            .commands_url
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        set.unwrap_or_else(|| self.derived_url("/slack/commands"))
    }

    /// Points all three app URLs at one server: base + `/slack/interactions|events|commands`.
    pub fn set_app_base_url(&self, base: &str) {
        let base = base.trim_end_matches('/');
        *self
            .interactivity_url
            .write()
            .unwrap_or_else(|e| e.into_inner()) = format!("{base}/slack/interactions");
        set_url(&self.events_url, Some(format!("{base}/slack/events")));
        set_url(&self.commands_url, Some(format!("{base}/slack/commands")));
    }

    /// A person types `text` into `channel` (by id or name).
    pub fn post_as_user(
        &self,
        channel: &str,
        user: &str,
        text: &str,
    ) -> Result<Message, SandboxError> {
        let found = self
            .channel(channel)
            // Only its own person writes in a direct message with the app.
            .filter(|c| self.dm_user(&c.id).is_none_or(|u| u.id == user));
        let channel = found
            .ok_or_else(|| SandboxError::UnknownChannel(channel.to_owned()))?
            .id
            .clone();
        if self.user(user).is_none() {
            return Err(SandboxError::UnknownUser(user.to_owned()));
        }
        Ok(self.post_user_message(&channel, user, text.to_owned()))
    }

    /// A relative or odd interactivity URL still yields something to POST to (and to fail on
    /// visibly): the URL itself with the path appended.
    fn derived_url(&self, path: &str) -> String {
        let base = self.interactivity_url();
        sibling_url(&base, path).unwrap_or_else(|| format!("{}{path}", base.trim_end_matches('/')))
    }

    pub fn issue_response_url(
        &self,
        channel: &str,
        message_ts: Option<&str>,
        user: &str,
    ) -> String {
        let id = random_hex(16);
        lock(&self.store).response_urls.insert(
            id.clone(),
            ResponseUrl {
                channel: channel.to_owned(),
                message_ts: message_ts.map(str::to_owned),
                user: user.to_owned(),
                issued: Instant::now(),
                uses: 0,
            },
        );
        format!("{}/_sandbox/response/{id}", self.base_url())
    }

    pub fn user_json(&self, user: &User) -> Value {
        serde_json::json!({
            "id": user.id,
            "team_id": user.team_id.as_ref().unwrap_or(&self.config.team_id),
            "name": user.name,
            "real_name": user.real_name,
            "deleted": false,
            "is_bot": false,
            "tz": "Europe/London",
            "profile": {
                "email": user.email,
                "real_name": user.real_name,
                "display_name": user.name,
            },
        })
    }

    /// A message as the Web API shows it. Slack returns `metadata` from chat.postMessage and
    /// chat.update, but from history only when asked (`include_all_metadata`).
    pub fn message_json(&self, m: &Message, with_metadata: bool) -> Value {
        let mut v = serde_json::json!({
            "type": "message",
            "ts": m.ts,
            "text": m.text,
            "blocks": m.blocks,
            "user": m.user,
            "team": self.config.team_id,
        });
        // People's messages carry no bot or app id.
        if !m.bot_id.is_empty() {
            v["bot_id"] = Value::String(m.bot_id.clone());
            v["app_id"] = Value::String(self.config.app_id.clone());
        }
        if let Some(t) = &m.thread_ts {
            v["thread_ts"] = Value::String(t.clone());
        }
        if with_metadata && let Some(meta) = &m.metadata {
            v["metadata"] = meta.clone();
        }
        v
    }

    /// Posts a bot message (no metadata) as a response would: records and announces it.
    pub fn post_bot_message(
        &self,
        channel: &str,
        thread_ts: Option<String>,
        text: String,
        blocks: Vec<Value>,
    ) -> Message {
        let mut store = lock(&self.store);
        let m = Message {
            channel: channel.to_owned(),
            ts: store.next_ts(),
            thread_ts,
            text,
            blocks,
            user: self.config.bot_user_id.clone(),
            bot_id: self.config.bot_id.clone(),
            edits: 0,
            deleted: false,
            metadata: None,
        };
        store
            .messages
            .entry(channel.to_owned())
            .or_default()
            .push(m.clone());
        self.emit(SandboxEvent::MessagePosted(m.clone()));
        m
    }

    /// A message typed by a simulated person (no blocks, no bot id).
    pub fn post_user_message(&self, channel: &str, user: &str, text: String) -> Message {
        let mut store = lock(&self.store);
        let m = Message {
            channel: channel.to_owned(),
            ts: store.next_ts(),
            thread_ts: None,
            text,
            blocks: Vec::new(),
            user: user.to_owned(),
            bot_id: String::new(),
            edits: 0,
            deleted: false,
            metadata: None,
        };
        store
            .messages
            .entry(channel.to_owned())
            .or_default()
            .push(m.clone());
        self.emit(SandboxEvent::MessagePosted(m.clone()));
        m
    }

    /// Shows `user` an ephemeral message in `channel`: records and announces it.
    pub fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        thread_ts: Option<String>,
        text: String,
        blocks: Vec<Value>,
    ) -> EphemeralMessage {
        let mut store = lock(&self.store);
        let e = EphemeralMessage {
            channel: channel.to_owned(),
            user: user.to_owned(),
            ts: store.next_ts(),
            thread_ts,
            text,
            blocks,
        };
        store.ephemerals.push(e.clone());
        self.emit(SandboxEvent::EphemeralPosted(e.clone()));
        e
    }
}
