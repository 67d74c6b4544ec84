//! What the sandbox records: messages, ephemerals, views (modals and Home tabs), API calls,
//! deliveries, and the events announcing them.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

/// A message in a channel (top level or thread reply): posted by the bot, or typed by a
/// simulated person (`bot_id` empty, `user` their id).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub channel: String,
    pub ts: String,
    /// Set on thread replies (the parent's ts); `None` on top-level messages.
    pub thread_ts: Option<String>,
    pub text: String,
    /// Block Kit blocks as stored (Slack fills in missing `block_id`/`action_id`).
    pub blocks: Vec<Value>,
    pub user: String,
    pub bot_id: String,
    /// How many times chat.update (or a response_url replace) changed it.
    pub edits: u32,
    /// Set when deleted through a response_url `delete_original`.
    pub deleted: bool,
    /// Message metadata as posted (`{"event_type", "event_payload"}`); chat.update replaces it
    /// only when it passes `metadata` again.
    pub metadata: Option<Value>,
}

/// A message only one user can see (chat.postEphemeral).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EphemeralMessage {
    pub channel: String,
    pub user: String,
    pub ts: String,
    pub thread_ts: Option<String>,
    pub text: String,
    pub blocks: Vec<Value>,
}

/// A modal opened with views.open, or a user's Home tab published with views.publish
/// (`view["type"]` says which).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct View {
    /// A Home tab keeps its id across publishes; each publish gets a new `hash`.
    pub id: String,
    /// The user whose trigger opened it, or whose Home tab it is (who sees it).
    pub user: String,
    pub hash: String,
    pub callback_id: String,
    pub private_metadata: String,
    /// The `view` object as the app sent it.
    pub view: Value,
    /// False once submitted with an empty ack (or closed). Always true for a Home tab.
    pub open: bool,
    /// Errors from the last `response_action: errors` ack, block_id -> message.
    pub errors: Value,
}

/// One Web API call, whatever its outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiCall {
    pub method: String,
    #[serde(skip)]
    pub at: Instant,
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    pub http_status: u16,
    pub ok: bool,
    pub error: Option<String>,
    /// Arguments (JSON body, or form/query fields as strings), token removed.
    pub args: Value,
}

/// How an interaction payload reached the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    Http,
    SocketMode,
}

/// What happened when the sandbox delivered a click or a view submission.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClickOutcome {
    pub transport: Transport,
    /// HTTP status of the ack (200 for a Socket Mode ack); 0 when no ack came in time.
    pub status: u16,
    /// Time from sending the payload to the ack (serialized as `latency_ms`).
    #[serde(rename = "latency_ms", serialize_with = "as_millis")]
    pub latency: Duration,
    /// Ack body (HTTP response body, or the Socket Mode ack's `payload` as JSON text).
    pub body: String,
    /// No ack within the ack timeout (Slack would show the user an error).
    pub timed_out: bool,
}

impl ClickOutcome {
    /// True when Slack would be satisfied: a 200 within the ack timeout.
    pub fn acked(&self) -> bool {
        self.status == 200 && !self.timed_out
    }

    /// The ack body parsed as JSON, when it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// What the sandbox did with a slash command's ack body, as Slack would show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum CommandResponse {
    /// Shown only to the user who ran the command (the default `response_type`, a plain-text
    /// body, or Slack's error line when the app did not ack in time).
    Ephemeral(EphemeralMessage),
    /// Posted to the channel (`response_type: "in_channel"`).
    InChannel(Message),
}

/// What happened when the sandbox delivered a slash command.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandOutcome {
    /// The ack, exactly as for a click (serialized flat: transport, status, latency_ms, ...).
    #[serde(flatten)]
    pub ack: ClickOutcome,
    /// The `response_url` sent with the command (5 uses within 30 minutes).
    pub response_url: String,
    pub trigger_id: String,
    /// What the ack put on screen, if anything.
    pub response: Option<CommandResponse>,
}

impl CommandOutcome {
    /// A 200 within the ack timeout.
    pub fn acked(&self) -> bool {
        self.ack.acked()
    }
}

/// A record of one payload delivery (interaction, event or slash command).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    /// `block_actions`, `view_submission`, `app_home_opened` or `slash_command`.
    pub kind: String,
    pub user: String,
    pub outcome: ClickOutcome,
    /// Milliseconds since the Unix epoch when it was sent.
    pub at_unix_ms: u64,
    /// The payload as sent (the interaction, the event or the command).
    pub payload: Value,
}

/// Things that happened, for waiting in tests and live updates in the page.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum SandboxEvent {
    MessagePosted(Message),
    MessageUpdated(Message),
    EphemeralPosted(EphemeralMessage),
    ViewOpened(View),
    ViewUpdated(View),
    /// A user's Home tab was published (views.publish).
    HomeViewPublished(View),
    ApiCalled(ApiCall),
    InteractionDelivered(Delivery),
    /// Number of Socket Mode connections able to take payloads changed.
    ConnectionsChanged {
        open: usize,
    },
    FaultsChanged,
}
