//! Interaction payloads (block_actions on messages and Home tabs, view_submission) and the one
//! delivery path every payload takes: Socket Mode when a connection is open, otherwise a
//! v0-signed HTTP POST to the interactivity, events or commands URL.

use std::time::Instant;

use axum::http::header;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::blocks::{FoundButton, find_button};
use crate::error::SandboxError;
use crate::model::{ClickOutcome, Delivery, SandboxEvent, Transport, View};
use crate::signing::sign;
use crate::socket::SocketAck;
use crate::state::{Shared, format_ts, lock, unix_micros, unix_ms};
use crate::web_api::view_json;

/// A button click as a simulated user.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Click {
    /// Channel id (or `#name`).
    pub channel: String,
    pub message_ts: String,
    pub action_id: String,
    /// User id of the person clicking.
    pub user: String,
    /// Only needed when several blocks hold a button with the same action_id.
    #[serde(default)]
    pub block_id: Option<String>,
}

impl Click {
    pub fn new(
        channel: impl Into<String>,
        message_ts: impl Into<String>,
        action_id: impl Into<String>,
        user: impl Into<String>,
    ) -> Self {
        Self {
            channel: channel.into(),
            message_ts: message_ts.into(),
            action_id: action_id.into(),
            user: user.into(),
            block_id: None,
        }
    }
}

/// A click on a button in a user's Home tab.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HomeClick {
    /// User id of the person clicking (whose Home tab it is).
    pub user: String,
    pub action_id: String,
    /// Picks among buttons sharing the action_id (e.g. one Approve per listed request).
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub block_id: Option<String>,
}

impl HomeClick {
    pub fn new(user: impl Into<String>, action_id: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            action_id: action_id.into(),
            value: None,
            block_id: None,
        }
    }

    pub fn with_value(mut self, value: impl Into<String>) -> Self {
        self.value = Some(value.into());
        self
    }

    pub fn with_block_id(mut self, block_id: impl Into<String>) -> Self {
        self.block_id = Some(block_id.into());
        self
    }
}

/// The `user` of an interaction payload. Its `team_id` is the person's own workspace: another
/// organization's for someone in through Slack Connect, and on Enterprise Grid the
/// organization's id (`E…`) for the workspace's own people, as Slack documents.
pub(crate) fn user_json(shared: &Shared, user: &crate::config::User) -> Value {
    let c = &shared.config;
    let team_id = match (&user.team_id, &c.enterprise) {
        (Some(theirs), _) => theirs,
        (None, Some(org)) => &org.id,
        (None, None) => &c.team_id,
    };
    json!({"id": user.id, "username": user.name, "name": user.name, "team_id": team_id})
}

/// The `team` of an interaction payload: the workspace the person acted from (theirs, for
/// someone of another organization), with the organization on Enterprise Grid.
fn team_json(shared: &Shared, user: &crate::config::User) -> Value {
    let c = &shared.config;
    match (&user.team_id, &c.enterprise) {
        (Some(theirs), _) => json!({"id": theirs, "domain": theirs.to_lowercase()}),
        (None, Some(org)) => json!({"id": c.team_id, "domain": c.team_domain,
                                    "enterprise_id": org.id, "enterprise_name": org.name}),
        (None, None) => json!({"id": c.team_id, "domain": c.team_domain}),
    }
}

/// The `enterprise` of an interaction payload: the workspace's organization for its own
/// people on Enterprise Grid, else null.
fn enterprise_json(shared: &Shared, user: &crate::config::User) -> Value {
    match (&user.team_id, &shared.config.enterprise) {
        (None, Some(org)) => json!({"id": org.id, "name": org.name}),
        _ => Value::Null,
    }
}

/// Verification token Slack still sends in payloads (deprecated, never a secret).
pub(crate) const VERIFICATION_TOKEN: &str = "sandboxVerificationToken";

/// The `actions[0]` entry for a clicked button.
fn action_json(found: &FoundButton<'_>, action_id: &str) -> Value {
    let el = found.element;
    let mut action = json!({
        "action_id": action_id,
        "block_id": found.block_id,
        "type": "button",
        "text": el.get("text").cloned().unwrap_or(Value::Null),
        "action_ts": format_ts(unix_micros()),
    });
    for key in ["value", "style"] {
        if let Some(v) = el.get(key) {
            action[key] = v.clone();
        }
    }
    action
}

/// The block_actions payload for a click, as Slack builds it.
pub(crate) fn block_actions_payload(shared: &Shared, click: &Click) -> Result<Value, SandboxError> {
    let channel = shared
        .channel(&click.channel)
        .ok_or_else(|| SandboxError::UnknownChannel(click.channel.clone()))?;
    let user = shared
        .user(&click.user)
        .ok_or_else(|| SandboxError::UnknownUser(click.user.clone()))?;
    let message = lock(&shared.store)
        .message(&channel.id, &click.message_ts)
        .filter(|m| !m.deleted)
        .cloned()
        .ok_or_else(|| SandboxError::MessageNotFound {
            channel: channel.id.clone(),
            ts: click.message_ts.clone(),
        })?;
    let found = find_button(
        &message.blocks,
        &click.action_id,
        click.block_id.as_deref(),
        None,
    )
    .ok_or_else(|| SandboxError::ButtonNotFound {
        ts: message.ts.clone(),
        action_id: click.action_id.clone(),
    })?;
    let action = action_json(&found, &click.action_id);
    let mut container = json!({
        "type": "message",
        "message_ts": message.ts,
        "channel_id": channel.id,
        "is_ephemeral": false,
    });
    if let Some(t) = &message.thread_ts {
        container["thread_ts"] = json!(t);
    }
    Ok(json!({
        "type": "block_actions",
        "token": VERIFICATION_TOKEN,
        "api_app_id": shared.config.app_id,
        "trigger_id": shared.issue_trigger(&user.id),
        "response_url": shared.issue_response_url(&channel.id, Some(&message.ts), &user.id),
        "team": team_json(shared, user),
        "enterprise": enterprise_json(shared, user),
        "is_enterprise_install": false,
        "user": user_json(shared, user),
        // Slack names a direct message's channel "directmessage" in payloads.
        "channel": {"id": channel.id, "name": match shared.dm_user(&channel.id) {
            Some(_) => "directmessage",
            None => channel.name.as_str(),
        }},
        "container": container,
        "message": shared.message_json(&message, false),
        "state": {"values": {}},
        "actions": [action],
    }))
}

/// The block_actions payload for a click in a Home tab, as Slack builds it for views: the
/// container is the view, the whole view comes along, and there is no channel, message or
/// response_url.
pub(crate) fn home_block_actions_payload(
    shared: &Shared,
    click: &HomeClick,
) -> Result<Value, SandboxError> {
    let user = shared
        .user(&click.user)
        .ok_or_else(|| SandboxError::UnknownUser(click.user.clone()))?;
    let view: View = lock(&shared.store)
        .home_views
        .get(&user.id)
        .cloned()
        .ok_or_else(|| SandboxError::NoHomeView(user.id.clone()))?;
    let blocks = view
        .view
        .get("blocks")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let found = find_button(
        blocks,
        &click.action_id,
        click.block_id.as_deref(),
        click.value.as_deref(),
    )
    .ok_or_else(|| SandboxError::HomeButtonNotFound {
        user: user.id.clone(),
        action_id: click.action_id.clone(),
    })?;
    let action = action_json(&found, &click.action_id);
    Ok(json!({
        "type": "block_actions",
        "token": VERIFICATION_TOKEN,
        "api_app_id": shared.config.app_id,
        "trigger_id": shared.issue_trigger(&user.id),
        "team": team_json(shared, user),
        "enterprise": enterprise_json(shared, user),
        "is_enterprise_install": false,
        "user": user_json(shared, user),
        "container": {"type": "view", "view_id": view.id},
        "view": view_json(shared, &view, &json!({})),
        "actions": [action],
    }))
}

/// The options an element offers (`options`, or those of its `option_groups`).
fn element_options(element: &Value) -> Vec<Value> {
    let mut out: Vec<Value> = element
        .get("options")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for group in element
        .get("option_groups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.extend(
            group
                .get("options")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        );
    }
    out
}

/// The state of one input element as Slack reports it in `view.state.values`: what the
/// person entered (`given`: a JSON string, or for checkboxes an array of option values), or
/// else what the element started with (`initial_value`, `initial_option`, `initial_options`).
/// Text and number inputs give `value` (a string, or null when empty); a static select gives
/// `selected_option` (the whole option object, or null); checkboxes give `selected_options`.
fn element_state(element: &Value, given: Option<&Value>) -> Result<Value, String> {
    let kind = element
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("plain_text_input");
    let find = |v: &str| {
        element_options(element)
            .into_iter()
            .find(|o| o.get("value").and_then(Value::as_str) == Some(v))
            .ok_or_else(|| format!("no option has the value {v:?}"))
    };
    match kind {
        "static_select" => {
            let selected = match given {
                None => element
                    .get("initial_option")
                    .cloned()
                    .unwrap_or(Value::Null),
                Some(Value::Null) => Value::Null,
                Some(Value::String(v)) if v.is_empty() => Value::Null,
                Some(Value::String(v)) => find(v)?,
                Some(_) => return Err("a static_select takes one option value".into()),
            };
            Ok(json!({"type": kind, "selected_option": selected}))
        }
        "checkboxes" => {
            let selected = match given {
                None => element
                    .get("initial_options")
                    .cloned()
                    .unwrap_or_else(|| json!([])),
                Some(Value::String(v)) if v.is_empty() => json!([]),
                Some(Value::String(v)) => json!([find(v)?]),
                Some(Value::Array(vs)) => Value::Array(
                    vs.iter()
                        .map(|v| find(v.as_str().unwrap_or_default()))
                        .collect::<Result<_, _>>()?,
                ),
                Some(_) => return Err("checkboxes take an option value or a list of them".into()),
            };
            Ok(json!({"type": kind, "selected_options": selected}))
        }
        _ => {
            // plain_text_input, number_input, and any other text-like element. Slack's client
            // checks a number input's text before it submits; the sandbox passes it as typed,
            // so that an app's own check can be seen working.
            let value = match given {
                None => element.get("initial_value").cloned().unwrap_or(Value::Null),
                Some(Value::String(v)) => json!(v),
                Some(Value::Number(n)) => json!(n.to_string()),
                Some(Value::Null) => Value::Null,
                Some(_) => return Err(format!("a {kind} takes text")),
            };
            Ok(json!({"type": kind, "value": value}))
        }
    }
}

/// The view_submission payload; `values` maps an input block's block_id to the typed text.
pub(crate) fn view_submission_payload(
    shared: &Shared,
    view_id: &str,
    user: &str,
    values: &[(String, Value)],
) -> Result<Value, SandboxError> {
    let user = shared
        .user(user)
        .ok_or_else(|| SandboxError::UnknownUser(user.to_owned()))?;
    let view = lock(&shared.store)
        .views
        .iter()
        .find(|v| v.id == view_id && v.open)
        .cloned()
        .ok_or_else(|| SandboxError::ViewNotFound(view_id.to_owned()))?;
    let mut state = serde_json::Map::new();
    let blocks = view.view.get("blocks").and_then(Value::as_array);
    for block in blocks.into_iter().flatten() {
        if block.get("type").and_then(Value::as_str) != Some("input") {
            continue;
        }
        let Some(block_id) = block.get("block_id").and_then(Value::as_str) else {
            continue;
        };
        let element = block.get("element").cloned().unwrap_or(Value::Null);
        let action_id = element
            .get("action_id")
            .and_then(Value::as_str)
            .unwrap_or(block_id);
        // Inputs nobody filled in are present with their initial value, or null, as in Slack.
        let given = values.iter().find(|(b, _)| b == block_id).map(|(_, v)| v);
        let input = element_state(&element, given).map_err(|why| SandboxError::InvalidInput {
            view_id: view_id.to_owned(),
            block_id: block_id.to_owned(),
            value: given.map(Value::to_string).unwrap_or_default(),
            why,
        })?;
        state.insert(block_id.to_owned(), json!({ action_id: input }));
    }
    if let Some((missing, _)) = values.iter().find(|(b, _)| !state.contains_key(b)) {
        return Err(SandboxError::InputNotFound {
            view_id: view_id.to_owned(),
            block_id: missing.clone(),
        });
    }
    Ok(json!({
        "type": "view_submission",
        "token": VERIFICATION_TOKEN,
        "api_app_id": shared.config.app_id,
        "trigger_id": shared.issue_trigger(&user.id),
        "team": team_json(shared, user),
        "enterprise": enterprise_json(shared, user),
        "is_enterprise_install": false,
        "user": user_json(shared, user),
        "view": view_json(shared, &view, &Value::Object(state)),
        "response_urls": [],
    }))
}

/// Where a payload goes when no socket is open, and as which Socket Mode envelope otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Interactivity,
    Events,
    Commands,
}

impl Route {
    fn envelope_type(self) -> &'static str {
        match self {
            Self::Interactivity => "interactive",
            Self::Events => "events_api",
            Self::Commands => "slash_commands",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Events => "application/json",
            Self::Interactivity | Self::Commands => "application/x-www-form-urlencoded",
        }
    }

    fn url(self, shared: &Shared) -> String {
        match self {
            Self::Interactivity => shared.interactivity_url(),
            Self::Events => shared.events_url(),
            Self::Commands => shared.commands_url(),
        }
    }
}

/// One payload on its way to the app.
pub(crate) struct Outgoing {
    pub route: Route,
    /// Recorded as `Delivery::kind`.
    pub kind: String,
    pub user: String,
    /// The Socket Mode envelope's `payload`.
    pub payload: Value,
    /// The HTTP body: `payload=<json>` for interactions, the JSON itself for events, the
    /// command's fields form-encoded for slash commands.
    pub http_body: String,
    pub accepts_response_payload: bool,
}

impl Outgoing {
    /// An interaction payload (block_actions, view_submission).
    pub fn interaction(payload: Value) -> Self {
        let kind = payload
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let user = payload
            .pointer("/user/id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        Self {
            route: Route::Interactivity,
            // Only modal submissions can answer with a payload (response_action).
            accepts_response_payload: kind == "view_submission",
            http_body: format!("payload={}", urlencoding::encode(&payload.to_string())),
            kind,
            user,
            payload,
        }
    }
}

/// Sends a payload and waits for the ack (at most `ack_timeout`). Records and announces it.
pub(crate) async fn deliver(shared: &Shared, out: Outgoing) -> Result<ClickOutcome, SandboxError> {
    let at_unix_ms = unix_ms();
    let timeout = shared.config.ack_timeout;
    let sent = out.payload.clone();
    let socket = shared
        .sockets
        .deliver(
            out.route.envelope_type(),
            out.payload,
            out.accepts_response_payload,
            timeout,
        )
        .await;
    let outcome = match socket {
        Some(SocketAck::Acked { latency, payload }) => ClickOutcome {
            transport: Transport::SocketMode,
            status: 200,
            latency,
            body: payload.map(|p| p.to_string()).unwrap_or_default(),
            timed_out: false,
        },
        Some(SocketAck::TimedOut { latency }) => ClickOutcome {
            transport: Transport::SocketMode,
            status: 0,
            latency,
            body: String::new(),
            timed_out: true,
        },
        None => post_http(shared, out.route, out.http_body).await?,
    };
    let delivery = Delivery {
        kind: out.kind,
        user: out.user,
        outcome: outcome.clone(),
        at_unix_ms,
        payload: sent,
    };
    lock(&shared.store).deliveries.push(delivery.clone());
    shared.emit(SandboxEvent::InteractionDelivered(delivery));
    Ok(outcome)
}

async fn post_http(
    shared: &Shared,
    route: Route,
    body: String,
) -> Result<ClickOutcome, SandboxError> {
    let url = route.url(shared);
    let timestamp = (unix_ms() / 1000) as i64;
    let signature = sign(&shared.config.signing_secret, timestamp, body.as_bytes());
    let request = shared
        .http
        .post(&url)
        .header(header::CONTENT_TYPE, route.content_type())
        .header(
            header::USER_AGENT,
            "Slackbot 1.0 (+https://api.slack.com/robots)",
        )
        .header("X-Slack-Request-Timestamp", timestamp.to_string())
        .header("X-Slack-Signature", signature)
        .body(body);
    let started = Instant::now();
    let sent = tokio::time::timeout(shared.config.ack_timeout, async {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok::<_, reqwest::Error>((status, text))
    })
    .await;
    let latency = started.elapsed();
    match sent {
        Ok(Ok((status, body))) => Ok(ClickOutcome {
            transport: Transport::Http,
            status,
            latency,
            body,
            timed_out: false,
        }),
        Ok(Err(e)) => Err(SandboxError::Delivery {
            url,
            reason: e.to_string(),
        }),
        Err(_) => Ok(ClickOutcome {
            transport: Transport::Http,
            status: 0,
            latency,
            body: String::new(),
            timed_out: true,
        }),
    }
}

pub(crate) async fn click(shared: &Shared, click: &Click) -> Result<ClickOutcome, SandboxError> {
    let payload = block_actions_payload(shared, click)?;
    deliver(shared, Outgoing::interaction(payload)).await
}

pub(crate) async fn click_home(
    shared: &Shared,
    click: &HomeClick,
) -> Result<ClickOutcome, SandboxError> {
    let payload = home_block_actions_payload(shared, click)?;
    deliver(shared, Outgoing::interaction(payload)).await
}

/// Submits a modal and applies the ack: `response_action: errors` keeps it open with the
/// errors, `update` replaces it, anything else closes it.
pub(crate) async fn submit_view(
    shared: &Shared,
    view_id: &str,
    user: &str,
    values: &[(String, Value)],
) -> Result<ClickOutcome, SandboxError> {
    let payload = view_submission_payload(shared, view_id, user, values)?;
    let outcome = deliver(shared, Outgoing::interaction(payload)).await?;
    if !outcome.acked() {
        return Ok(outcome);
    }
    let ack = outcome.json().unwrap_or(Value::Null);
    let mut store = lock(&shared.store);
    if let Some(view) = store.views.iter_mut().find(|v| v.id == view_id) {
        match ack.get("response_action").and_then(Value::as_str) {
            Some("errors") => {
                view.errors = ack.get("errors").cloned().unwrap_or_else(|| json!({}));
            }
            Some("update" | "push") if ack.get("view").is_some_and(Value::is_object) => {
                view.view = ack.get("view").cloned().unwrap_or(Value::Null);
                view.errors = json!({});
            }
            _ => view.open = false,
        }
        shared.emit(SandboxEvent::ViewUpdated(view.clone()));
    }
    Ok(outcome)
}
