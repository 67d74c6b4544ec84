//! A local Slack emulator for greenlight: an independent implementation of the parts of Slack's
//! protocol the product uses (see `docs/slack-protocol.md`), for tests, benchmarks and
//! `greenlight dev`. It shares no code with the product or with slack-morphism on purpose, so a
//! misunderstanding of the protocol in one cannot hide in the other.
//!
//! # What it serves (one HTTP listener)
//! - `POST|GET /api/<method>`: the Web API (auth.test, chat.postMessage, chat.update,
//!   chat.postEphemeral, views.open, views.publish, users.info, users.lookupByEmail,
//!   users.list, usergroups.list, usergroups.users.list, conversations.info,
//!   conversations.list, conversations.history, conversations.replies, conversations.open
//!   (a 1:1 direct message with the app, `D` + the user id without its `U`),
//!   apps.connections.open).
//!   JSON or form bodies, Slack's error names, token checks (`not_authed`, `invalid_auth`,
//!   `not_allowed_token_type`). Messages keep `metadata`; history pages with `limit`,
//!   `cursor`, `oldest`, `latest`, `inclusive` and returns metadata only with
//!   `include_all_metadata`.
//! - `GET /socket?ticket=`: Socket Mode (hello, `interactive` / `events_api` /
//!   `slash_commands` envelopes, acks, pings, disconnect).
//! - `/_sandbox/...`: a JSON control API for other processes, SSE events, response_url targets.
//! - `GET /`: a browser page showing the channels and each person's Home tab, rendering Block
//!   Kit, letting you click and run slash commands as any simulated user and inject faults.
//!
//! # Use from a test
//! ```no_run
//! # async fn demo() -> Result<(), greenlight_sandbox::SandboxError> {
//! use std::time::Duration;
//! use greenlight_sandbox::{Click, Sandbox, SandboxConfig};
//!
//! let sandbox = Sandbox::start(SandboxConfig::for_tests()).await?;
//! // Give the product `sandbox.api_url()` as SLACK_API_URL, start it, then:
//! sandbox.set_interactivity_url("http://127.0.0.1:8080/slack/interactions");
//! let posted = sandbox
//!     .wait_for_message_in("C0DEPLOY", |m| !m.blocks.is_empty(), Duration::from_secs(5))
//!     .await
//!     .expect("approval message");
//! let outcome = sandbox.click(Click::new("C0DEPLOY", &posted.ts, "approve", "U0ALICE")).await?;
//! assert!(outcome.acked());
//! let updated = sandbox
//!     .wait_for_message("C0DEPLOY", &posted.ts, |m| m.edits > 0, Duration::from_secs(5))
//!     .await;
//! # let _ = updated; Ok(()) }
//! ```
//!
//! App Home and slash commands the same way:
//! ```no_run
//! # async fn demo(sandbox: greenlight_sandbox::SandboxHandle) -> Result<(), greenlight_sandbox::SandboxError> {
//! use std::time::Duration;
//! use greenlight_sandbox::{CommandResponse, HomeClick};
//!
//! // Events go to <interactivity origin>/slack/events, commands to .../slack/commands.
//! sandbox.open_home("U0ALICE").await?; // app_home_opened
//! let home = sandbox
//!     .wait_until(Duration::from_secs(5), |sb| sb.home_view("U0ALICE"))
//!     .await
//!     .expect("the app published a Home tab");
//! sandbox.click_home(HomeClick::new("U0ALICE", "approve").with_value("req_1")).await?;
//! let ran = sandbox.slash_command("U0ALICE", "#deploy", "/greenlight", "pending").await?;
//! if let Some(CommandResponse::Ephemeral(reply)) = &ran.response {
//!     println!("{} saw: {}", reply.user, reply.text);
//! }
//! # let _ = home; Ok(()) }
//! ```
//!
//! Every payload (clicks, view submissions, `app_home_opened`, slash commands) goes over
//! Socket Mode when a connection is open (to one random connection, as Slack does), otherwise
//! as a v0-signed HTTP POST: interactions form-encoded (`payload=`) to the interactivity URL,
//! events as JSON to the events URL, commands form-encoded to the commands URL. The events and
//! commands URLs default to the interactivity URL's origin + `/slack/events` and
//! `/slack/commands`, re-derived when it changes, unless set.
//! Faults (`set_latency`, `fail_with`, `rate_limit`, `http_error`) apply to Web API methods
//! before they run: latency first, then the first matching failure rule.

#![forbid(unsafe_code)]

mod b64;
mod blocks;
mod commands;
mod config;
mod control;
mod error;
mod events;
mod faults;
mod interact;
mod model;
mod page;
mod signing;
mod socket;
mod state;
mod web_api;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::routing::{any, get};
use serde_json::Value;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

pub use config::{Channel, Enterprise, SandboxConfig, User, UserGroup};
pub use error::SandboxError;
pub use faults::FaultKind;
pub use interact::{Click, HomeClick};
pub use model::{
    ApiCall, ClickOutcome, CommandOutcome, CommandResponse, Delivery, EphemeralMessage, Message,
    SandboxEvent, Transport, View,
};
pub use signing::sign;

use crate::faults::Fault;
use crate::state::{Shared, Store, lock, set_url};

/// Starts sandboxes.
pub struct Sandbox;

impl Sandbox {
    /// Binds `config.listen` and serves in a background task until `shutdown` or until every
    /// handle is dropped.
    pub async fn start(config: SandboxConfig) -> Result<SandboxHandle, SandboxError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| SandboxError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SandboxError::Bind {
            addr: config.listen,
            source,
        })?;
        let cancel = CancellationToken::new();
        let dms = config
            .users
            .iter()
            .map(|u| Channel::new(events::dm_channel_id(&u.id), format!("dm-{}", u.name)))
            .collect();
        let shared = Arc::new(Shared {
            dms,
            interactivity_url: RwLock::new(config.interactivity_url.clone()),
            events_url: RwLock::new(config.events_url.clone()),
            commands_url: RwLock::new(config.commands_url.clone()),
            config,
            addr,
            store: Mutex::new(Store::default()),
            faults: Mutex::new(Default::default()),
            events: broadcast::channel(4096).0,
            http: http_client()?,
            sockets: Default::default(),
            cancel: cancel.clone(),
        });
        let app = router(shared.clone());
        let stop = cancel.clone();
        let server = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "sandbox server stopped");
            }
        });
        tracing::info!(%addr, "sandbox listening");
        Ok(SandboxHandle {
            shared,
            server: Arc::new(Mutex::new(Some(server))),
            _guard: Arc::new(cancel.drop_guard()),
        })
    }
}

/// Every route, in one place.
fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/api/{method}", any(web_api::handle))
        .route("/socket", get(socket::upgrade))
        .merge(control::routes())
        .with_state(shared)
}

/// The interactivity URL is plain http on loopback, but reqwest still wants a TLS provider:
/// give it ring explicitly rather than relying on a process-wide default.
fn http_client() -> Result<reqwest::Client, SandboxError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SandboxError::Client(e.to_string()))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .build()
        .map_err(|e| SandboxError::Client(e.to_string()))
}

/// A running sandbox. Clones share it; it stops on `shutdown` or when the last clone drops.
#[derive(Clone)]
pub struct SandboxHandle {
    shared: Arc<Shared>,
    server: Arc<Mutex<Option<JoinHandle<()>>>>,
    _guard: Arc<DropGuard>,
}

impl SandboxHandle {
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://ADDR`
    pub fn url(&self) -> String {
        self.shared.base_url()
    }

    /// `http://ADDR/api/`, the value for `SLACK_API_URL`.
    pub fn api_url(&self) -> String {
        format!("{}/api/", self.shared.base_url())
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.shared.config
    }

    /// Tests usually start the sandbox before the server knows its own port.
    pub fn set_interactivity_url(&self, url: impl Into<String>) {
        *self
            .shared
            .interactivity_url
            .write()
            .unwrap_or_else(|e| e.into_inner()) = url.into();
    }

    pub fn interactivity_url(&self) -> String {
        self.shared.interactivity_url()
    }

    /// Where Events API payloads go without Socket Mode. Unless set, the interactivity URL's
    /// origin + `/slack/events` (so it follows `set_interactivity_url`).
    pub fn events_url(&self) -> String {
        self.shared.events_url()
    }

    /// Where slash commands go without Socket Mode. Unless set, the interactivity URL's origin
    /// + `/slack/commands`.
    pub fn commands_url(&self) -> String {
        self.shared.commands_url()
    }

    pub fn set_events_url(&self, url: impl Into<String>) {
        set_url(&self.shared.events_url, Some(url.into()));
    }

    pub fn set_commands_url(&self, url: impl Into<String>) {
        set_url(&self.shared.commands_url, Some(url.into()));
    }

    /// One app server for everything: interactivity, events and commands URLs become
    /// `base` + `/slack/interactions`, `/slack/events`, `/slack/commands`.
    pub fn set_app_base_url(&self, base: &str) {
        self.shared.set_app_base_url(base);
    }

    /// Top-level messages of a channel (id or name) in posting order, including deleted ones
    /// (`deleted: true`). Thread replies are in `thread_replies`.
    pub fn messages(&self, channel: &str) -> Vec<Message> {
        self.all_messages(channel)
            .into_iter()
            .filter(|m| m.thread_ts.is_none())
            .collect()
    }

    /// Every message of a channel, top level and replies, in ts order.
    pub fn all_messages(&self, channel: &str) -> Vec<Message> {
        let Some(id) = self.shared.channel(channel).map(|c| c.id.clone()) else {
            return Vec::new();
        };
        lock(&self.shared.store)
            .messages
            .get(&id)
            .cloned()
            .unwrap_or_default()
    }

    pub fn message(&self, channel: &str, ts: &str) -> Option<Message> {
        let id = self.shared.channel(channel)?.id.clone();
        lock(&self.shared.store).message(&id, ts).cloned()
    }

    pub fn thread_replies(&self, channel: &str, thread_ts: &str) -> Vec<Message> {
        self.all_messages(channel)
            .into_iter()
            .filter(|m| m.thread_ts.as_deref() == Some(thread_ts))
            .collect()
    }

    /// Ephemeral messages shown to `user` in `channel`, oldest first.
    pub fn ephemerals(&self, channel: &str, user: &str) -> Vec<EphemeralMessage> {
        let Some(id) = self.shared.channel(channel).map(|c| c.id.clone()) else {
            return Vec::new();
        };
        lock(&self.shared.store)
            .ephemerals
            .iter()
            .filter(|e| e.channel == id && e.user == user)
            .cloned()
            .collect()
    }

    /// Every Web API call so far, oldest first.
    pub fn calls(&self) -> Vec<ApiCall> {
        lock(&self.shared.store).calls.iter().cloned().collect()
    }

    /// Calls to one method, oldest first.
    pub fn calls_to(&self, method: &str) -> Vec<ApiCall> {
        lock(&self.shared.store)
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// Views opened with views.open, oldest first.
    pub fn views(&self) -> Vec<View> {
        lock(&self.shared.store).views.clone()
    }

    /// `user`'s Home tab as last published with views.publish (`view.view` is the app's view
    /// with Slack's block ids filled in).
    pub fn home_view(&self, user: &str) -> Option<View> {
        lock(&self.shared.store).home_views.get(user).cloned()
    }

    /// The id of the app's DM channel with `user`, as sent in `app_home_opened`
    /// (`D` + the user id without its `U`: U0ALICE -> D0ALICE).
    pub fn dm_channel(&self, user: &str) -> String {
        events::dm_channel_id(user)
    }

    /// Every payload delivered (clicks, view submissions, app_home_opened events, slash
    /// commands; see `Delivery::kind`), with its outcome.
    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.shared.store).deliveries.clone()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<SandboxEvent> {
        self.shared.events.subscribe()
    }

    /// Re-evaluates `check` now and after every sandbox event until it returns `Some` or
    /// `timeout` passes. No polling: it sleeps on the event channel.
    pub async fn wait_until<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&SandboxHandle) -> Option<T>,
    ) -> Option<T> {
        let mut events = self.subscribe();
        if let Some(v) = check(self) {
            return Some(v);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Err(_) => return None,
                Ok(Err(broadcast::error::RecvError::Closed)) => return check(self),
                // A lagged receiver only missed notifications; the state check below is complete.
                Ok(Ok(_) | Err(broadcast::error::RecvError::Lagged(_))) => {
                    if let Some(v) = check(self) {
                        return Some(v);
                    }
                }
            }
        }
    }

    /// Waits until the message `ts` in `channel` exists and satisfies `pred`.
    pub async fn wait_for_message(
        &self,
        channel: &str,
        ts: &str,
        pred: impl Fn(&Message) -> bool,
        timeout: Duration,
    ) -> Option<Message> {
        self.wait_until(timeout, |sb| sb.message(channel, ts).filter(|m| pred(m)))
            .await
    }

    /// Waits until some message in `channel` (top level or reply) satisfies `pred`; returns the
    /// oldest such message.
    pub async fn wait_for_message_in(
        &self,
        channel: &str,
        pred: impl Fn(&Message) -> bool,
        timeout: Duration,
    ) -> Option<Message> {
        self.wait_until(timeout, |sb| {
            sb.all_messages(channel).into_iter().find(|m| pred(m))
        })
        .await
    }

    /// Clicks a button as `click.user`: builds the block_actions payload and delivers it
    /// (Socket Mode if a connection is open, else signed HTTP). Errors when the channel,
    /// message, button or user does not exist, or the HTTP POST cannot be sent at all.
    pub async fn click(&self, click: Click) -> Result<ClickOutcome, SandboxError> {
        interact::click(&self.shared, &click).await
    }

    /// Submits an open modal as `user`. `values` maps input block_ids to typed text.
    /// The ack decides the view's fate (errors keep it open, see `View::errors`).
    pub async fn submit_view<K: Into<String>, V: Into<String>>(
        &self,
        view_id: &str,
        user: &str,
        values: impl IntoIterator<Item = (K, V)>,
    ) -> Result<ClickOutcome, SandboxError> {
        let values: Vec<(String, Value)> = values
            .into_iter()
            .map(|(k, v)| (k.into(), Value::String(v.into())))
            .collect();
        interact::submit_view(&self.shared, view_id, user, &values).await
    }

    /// Submits an open modal as `user` with typed values per input block_id: a string for a
    /// text or number input and for a static select (the option's value, `""` for none), a
    /// list of option values for checkboxes. Inputs left out keep their initial values.
    pub async fn submit_view_values<K: Into<String>>(
        &self,
        view_id: &str,
        user: &str,
        values: impl IntoIterator<Item = (K, Value)>,
    ) -> Result<ClickOutcome, SandboxError> {
        let values: Vec<(String, Value)> = values.into_iter().map(|(k, v)| (k.into(), v)).collect();
        interact::submit_view(&self.shared, view_id, user, &values).await
    }

    /// `user` opens the app's Home tab: delivers an `app_home_opened` event (an `events_api`
    /// envelope over Socket Mode, else a signed JSON POST to the events URL) carrying the
    /// published view if there is one. The app usually answers by calling views.publish.
    pub async fn open_home(&self, user: &str) -> Result<ClickOutcome, SandboxError> {
        events::open_home(&self.shared, user).await
    }

    /// Clicks a button in `click.user`'s Home tab: a block_actions payload with the view as
    /// container (no channel, message or response_url), delivered like a message click.
    pub async fn click_home(&self, click: HomeClick) -> Result<ClickOutcome, SandboxError> {
        interact::click_home(&self.shared, &click).await
    }

    /// `user` runs `/command text` in `channel`: a `slash_commands` envelope over Socket Mode,
    /// else a signed form POST to the commands URL. The ack body (JSON `{text, blocks,
    /// response_type}` or plain text) is shown as an ephemeral, or posted for `in_channel`;
    /// no ack in time shows Slack's error line as an ephemeral.
    pub async fn slash_command(
        &self,
        user: &str,
        channel: &str,
        command: &str,
        text: &str,
    ) -> Result<CommandOutcome, SandboxError> {
        commands::slash_command(&self.shared, user, channel, command, text).await
    }

    /// A person types `text` into `channel`: a plain user message (no event reaches the app).
    pub fn post_as_user(
        &self,
        channel: &str,
        user: &str,
        text: &str,
    ) -> Result<Message, SandboxError> {
        self.shared.post_as_user(channel, user, text)
    }

    /// `v0=<hex>` signature of `body` at `timestamp` with this sandbox's signing secret.
    pub fn sign(&self, timestamp: i64, body: &[u8]) -> String {
        sign(&self.shared.config.signing_secret, timestamp, body)
    }

    /// Delays every call to `method` (`*` = every method) by `d`.
    pub fn set_latency(&self, method: &str, d: Duration) {
        lock(&self.shared.faults)
            .latency
            .insert(method.to_owned(), d);
        self.shared.emit(SandboxEvent::FaultsChanged);
    }

    /// Answers `method` with `{"ok":false,"error":error}`, `times` times (`None`: until cleared).
    pub fn fail_with(&self, method: &str, error: &str, times: Option<u32>) {
        self.add_fault(
            method,
            FaultKind::Error {
                error: error.to_owned(),
            },
            times,
        );
    }

    /// Answers `method` with HTTP 429 and `Retry-After: retry_after_secs`, `times` times.
    pub fn rate_limit(&self, method: &str, retry_after_secs: u64, times: u32) {
        self.add_fault(
            method,
            FaultKind::RateLimit { retry_after_secs },
            Some(times),
        );
    }

    /// Answers `method` (`*` = all) with HTTP `status`, `times` times (`None`: until cleared).
    pub fn http_error(&self, method: &str, status: u16, times: Option<u32>) {
        self.add_fault(method, FaultKind::Http { status }, times);
    }

    /// Adds a failure rule; rules are tried oldest first.
    pub fn add_fault(&self, method: &str, kind: FaultKind, times: Option<u32>) {
        if times == Some(0) {
            return;
        }
        lock(&self.shared.faults).failures.push(Fault {
            method: method.to_owned(),
            kind,
            remaining: times,
        });
        self.shared.emit(SandboxEvent::FaultsChanged);
    }

    /// Removes every latency and failure rule.
    pub fn clear_faults(&self) {
        *lock(&self.shared.faults) = Default::default();
        self.shared.emit(SandboxEvent::FaultsChanged);
    }

    /// Socket Mode connections that can take payloads (ones asked to disconnect are excluded).
    pub fn open_connections(&self) -> usize {
        self.shared.sockets.open_connections()
    }

    /// Ids of the open Socket Mode connections, for `disconnect_one`.
    pub fn connection_ids(&self) -> Vec<u64> {
        self.shared.sockets.connection_ids()
    }

    /// Sends `{"type":"disconnect","reason":reason,...}` to every open connection; each closes
    /// a few seconds later. Returns how many were asked.
    pub fn disconnect_all(&self, reason: &str) -> usize {
        self.shared.sockets.disconnect(&self.shared, reason, None)
    }

    pub fn disconnect_one(&self, connection: u64, reason: &str) -> bool {
        self.shared
            .sockets
            .disconnect(&self.shared, reason, Some(connection))
            > 0
    }

    /// Stops the server and closes every socket and event stream.
    pub async fn shutdown(self) {
        self.shared.cancel.cancel();
        let server = lock(&self.server).take();
        if let Some(server) = server {
            let _ = server.await;
        }
    }
}
