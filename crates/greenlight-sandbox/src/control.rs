//! `/_sandbox/...`: the JSON control API (for other processes and the page), the SSE event
//! stream and response_url targets. Thin handlers over the shared state.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::commands;
use crate::error::SandboxError;
use crate::events::{self, dm_channel_id};
use crate::faults::{Fault, FaultKind};
use crate::interact::{self, Click, HomeClick};
use crate::model::{ClickOutcome, EphemeralMessage, Message, SandboxEvent};
use crate::state::{Shared, lock, set_url};

/// A response_url works this many times...
const RESPONSE_URL_USES: u32 = 5;
/// ...within this long.
const RESPONSE_URL_TTL: Duration = Duration::from_secs(30 * 60);

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_sandbox/state", get(state))
        .route("/_sandbox/messages", get(messages).post(post_message))
        .route("/_sandbox/ephemerals", get(ephemerals))
        .route("/_sandbox/views", get(views))
        .route("/_sandbox/views/submit", post(submit_view))
        .route("/_sandbox/views/close", post(close_view))
        .route("/_sandbox/calls", get(calls))
        .route("/_sandbox/deliveries", get(deliveries))
        .route("/_sandbox/click", post(click))
        .route("/_sandbox/home", get(home))
        .route("/_sandbox/home/open", post(open_home))
        .route("/_sandbox/home/click", post(click_home))
        .route("/_sandbox/command", post(command))
        .route(
            "/_sandbox/faults",
            get(get_faults).post(add_fault).delete(clear_faults),
        )
        .route("/_sandbox/connections", get(connections))
        .route("/_sandbox/disconnect", post(disconnect))
        .route(
            "/_sandbox/interactivity_url",
            get(get_interactivity_url).put(set_interactivity_url),
        )
        .route("/_sandbox/urls", get(get_urls).put(set_urls))
        .route("/_sandbox/response/{id}", post(response_url))
        .route("/_sandbox/events", get(events))
}

struct ApiError(StatusCode, String, String);

impl From<SandboxError> for ApiError {
    fn from(e: SandboxError) -> Self {
        let status = match e {
            SandboxError::Delivery { .. } => StatusCode::BAD_GATEWAY,
            _ => StatusCode::BAD_REQUEST,
        };
        Self(status, e.code().to_owned(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.1, "message": self.2}});
        (self.0, Json(body)).into_response()
    }
}

fn bad_request(code: &str, message: &str) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, code.to_owned(), message.to_owned())
}

async fn state(State(s): State<Arc<Shared>>) -> Json<Value> {
    let c = &s.config;
    Json(json!({
        "team": {"id": c.team_id, "domain": c.team_domain},
        "app_id": c.app_id,
        "bot_user_id": c.bot_user_id,
        "bot_id": c.bot_id,
        "channels": c.channels,
        "dms": s.dms.iter().map(|d| json!({"id": d.id,
            "user": s.dm_user(&d.id).map(|u| u.id.clone())})).collect::<Vec<_>>(),
        "users": c.users,
        "usergroups": c.usergroups,
        "interactivity_url": s.interactivity_url(),
        "events_url": s.events_url(),
        "commands_url": s.commands_url(),
        "open_connections": s.sockets.open_connections(),
    }))
}

#[derive(Deserialize)]
struct MessagesQuery {
    channel: String,
    /// Only replies to this thread.
    thread_ts: Option<String>,
    /// Include thread replies (default: top level only).
    #[serde(default)]
    all: bool,
}

async fn messages(
    State(s): State<Arc<Shared>>,
    Query(q): Query<MessagesQuery>,
) -> Result<Json<Vec<Message>>, ApiError> {
    let channel = s
        .channel(&q.channel)
        .ok_or_else(|| bad_request("unknown_channel", &q.channel))?;
    let store = lock(&s.store);
    let list = store
        .messages
        .get(&channel.id)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let out = list
        .iter()
        .filter(|m| match (&q.thread_ts, q.all) {
            (Some(t), _) => m.thread_ts.as_ref() == Some(t),
            (None, true) => true,
            (None, false) => m.thread_ts.is_none(),
        })
        .cloned()
        .collect();
    Ok(Json(out))
}

#[derive(Deserialize)]
struct PostAsUser {
    channel: String,
    user: String,
    text: String,
}

/// A person types a message into a channel (no event reaches the app).
async fn post_message(
    State(s): State<Arc<Shared>>,
    Json(req): Json<PostAsUser>,
) -> Result<Json<Message>, ApiError> {
    Ok(Json(s.post_as_user(&req.channel, &req.user, &req.text)?))
}

#[derive(Deserialize)]
struct EphemeralsQuery {
    channel: Option<String>,
    user: Option<String>,
}

async fn ephemerals(
    State(s): State<Arc<Shared>>,
    Query(q): Query<EphemeralsQuery>,
) -> Json<Vec<EphemeralMessage>> {
    let channel = q
        .channel
        .as_deref()
        .map(|c| s.channel(c).map(|c| c.id.clone()).unwrap_or_default());
    let store = lock(&s.store);
    Json(
        store
            .ephemerals
            .iter()
            .filter(|e| channel.as_ref().is_none_or(|c| *c == e.channel))
            .filter(|e| q.user.as_ref().is_none_or(|u| *u == e.user))
            .cloned()
            .collect(),
    )
}

#[derive(Deserialize)]
struct ViewsQuery {
    user: Option<String>,
    #[serde(default)]
    open: bool,
}

async fn views(State(s): State<Arc<Shared>>, Query(q): Query<ViewsQuery>) -> Json<Value> {
    let store = lock(&s.store);
    let list: Vec<_> = store
        .views
        .iter()
        .filter(|v| q.user.as_ref().is_none_or(|u| *u == v.user))
        .filter(|v| !q.open || v.open)
        .collect();
    Json(json!(list))
}

#[derive(Deserialize)]
struct SubmitView {
    view_id: String,
    user: String,
    /// block_id -> a string (text, number, a select's option value) or a list of option
    /// values (checkboxes).
    #[serde(default)]
    values: BTreeMap<String, Value>,
}

async fn submit_view(
    State(s): State<Arc<Shared>>,
    Json(req): Json<SubmitView>,
) -> Result<Json<Value>, ApiError> {
    let values: Vec<(String, Value)> = req.values.into_iter().collect();
    let outcome = interact::submit_view(&s, &req.view_id, &req.user, &values).await?;
    let view = lock(&s.store)
        .views
        .iter()
        .find(|v| v.id == req.view_id)
        .cloned();
    Ok(Json(json!({
        "status": outcome.status,
        "latency_ms": outcome.latency.as_secs_f64() * 1000.0,
        "body": outcome.body,
        "transport": outcome.transport,
        "timed_out": outcome.timed_out,
        "view": view,
    })))
}

#[derive(Deserialize)]
struct CloseView {
    view_id: String,
}

async fn close_view(State(s): State<Arc<Shared>>, Json(req): Json<CloseView>) -> StatusCode {
    let mut store = lock(&s.store);
    match store.views.iter_mut().find(|v| v.id == req.view_id) {
        Some(v) => {
            v.open = false;
            s.emit(SandboxEvent::ViewUpdated(v.clone()));
            StatusCode::NO_CONTENT
        }
        None => StatusCode::NOT_FOUND,
    }
}

#[derive(Deserialize)]
struct CallsQuery {
    method: Option<String>,
    /// Only the newest `limit` matching calls.
    limit: Option<usize>,
}

async fn calls(State(s): State<Arc<Shared>>, Query(q): Query<CallsQuery>) -> Json<Value> {
    let store = lock(&s.store);
    let mut list: Vec<_> = store
        .calls
        .iter()
        .rev()
        .filter(|c| q.method.as_ref().is_none_or(|m| *m == c.method))
        .take(q.limit.unwrap_or(usize::MAX))
        .collect();
    list.reverse();
    Json(json!(list))
}

async fn deliveries(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(json!(lock(&s.store).deliveries))
}

async fn click(
    State(s): State<Arc<Shared>>,
    Json(req): Json<Click>,
) -> Result<Json<ClickOutcome>, ApiError> {
    Ok(Json(interact::click(&s, &req).await?))
}

#[derive(Deserialize)]
struct UserQuery {
    user: String,
}

/// A user's Home tab: `{user, channel, view}` (`view` null until one is published).
async fn home(State(s): State<Arc<Shared>>, Query(q): Query<UserQuery>) -> Json<Value> {
    let view = lock(&s.store).home_views.get(&q.user).cloned();
    Json(json!({"user": q.user, "channel": dm_channel_id(&q.user), "view": view}))
}

async fn open_home(
    State(s): State<Arc<Shared>>,
    Json(req): Json<UserQuery>,
) -> Result<Json<ClickOutcome>, ApiError> {
    Ok(Json(events::open_home(&s, &req.user).await?))
}

async fn click_home(
    State(s): State<Arc<Shared>>,
    Json(req): Json<HomeClick>,
) -> Result<Json<ClickOutcome>, ApiError> {
    Ok(Json(interact::click_home(&s, &req).await?))
}

#[derive(Deserialize)]
struct RunCommand {
    user: String,
    channel: String,
    command: String,
    #[serde(default)]
    text: String,
}

async fn command(
    State(s): State<Arc<Shared>>,
    Json(req): Json<RunCommand>,
) -> Result<Json<crate::CommandOutcome>, ApiError> {
    let outcome =
        commands::slash_command(&s, &req.user, &req.channel, &req.command, &req.text).await?;
    Ok(Json(outcome))
}

async fn get_faults(State(s): State<Arc<Shared>>) -> Json<Value> {
    let faults = lock(&s.faults);
    let latency: BTreeMap<&String, f64> = faults
        .latency
        .iter()
        .map(|(m, d)| (m, d.as_secs_f64() * 1000.0))
        .collect();
    Json(json!({"latency_ms": latency, "failures": faults.failures}))
}

#[derive(Deserialize)]
struct AddFault {
    method: String,
    latency_ms: Option<u64>,
    error: Option<String>,
    times: Option<u32>,
    rate_limit_retry_after: Option<u64>,
    http_status: Option<u16>,
}

/// One request may set latency and/or one failure rule for a method.
async fn add_fault(
    State(s): State<Arc<Shared>>,
    Json(req): Json<AddFault>,
) -> Result<StatusCode, ApiError> {
    let kind = match (req.error, req.rate_limit_retry_after, req.http_status) {
        (Some(error), None, None) => Some(FaultKind::Error { error }),
        (None, Some(retry_after_secs), None) => Some(FaultKind::RateLimit { retry_after_secs }),
        (None, None, Some(status)) if (100..=599).contains(&status) => {
            Some(FaultKind::Http { status })
        }
        (None, None, None) => None,
        _ => {
            return Err(bad_request(
                "invalid_fault",
                "give at most one of error, rate_limit_retry_after, http_status (100-599)",
            ));
        }
    };
    if kind.is_none() && req.latency_ms.is_none() {
        return Err(bad_request("invalid_fault", "nothing to inject"));
    }
    let mut faults = lock(&s.faults);
    if let Some(ms) = req.latency_ms {
        if ms == 0 {
            faults.latency.remove(&req.method);
        } else {
            faults
                .latency
                .insert(req.method.clone(), Duration::from_millis(ms));
        }
    }
    if let Some(kind) = kind {
        // Rate limits default to one use; other failures last until cleared.
        let times = match kind {
            FaultKind::RateLimit { .. } => Some(req.times.unwrap_or(1)),
            _ => req.times,
        };
        if times != Some(0) {
            faults.failures.push(Fault {
                method: req.method,
                kind,
                remaining: times,
            });
        }
    }
    drop(faults);
    s.emit(SandboxEvent::FaultsChanged);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct ClearFaults {
    method: Option<String>,
}

async fn clear_faults(State(s): State<Arc<Shared>>, Query(q): Query<ClearFaults>) -> StatusCode {
    let mut faults = lock(&s.faults);
    match q.method {
        Some(m) => {
            faults.latency.remove(&m);
            faults.failures.retain(|f| f.method != m);
        }
        None => *faults = Default::default(),
    }
    drop(faults);
    s.emit(SandboxEvent::FaultsChanged);
    StatusCode::NO_CONTENT
}

async fn connections(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({"open": s.sockets.open_connections(), "ids": s.sockets.connection_ids()}))
}

#[derive(Deserialize)]
struct Disconnect {
    #[serde(default = "default_reason")]
    reason: String,
    connection: Option<u64>,
}

fn default_reason() -> String {
    "refresh_requested".into()
}

async fn disconnect(State(s): State<Arc<Shared>>, Json(req): Json<Disconnect>) -> Json<Value> {
    let sent = s.sockets.disconnect(&s, &req.reason, req.connection);
    Json(json!({"disconnected": sent}))
}

async fn get_interactivity_url(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({"url": s.interactivity_url()}))
}

fn urls_json(s: &Shared) -> Value {
    let explicit = |l: &std::sync::RwLock<Option<String>>| {
        l.read().unwrap_or_else(|e| e.into_inner()).is_some()
    };
    json!({
        "interactivity_url": s.interactivity_url(),
        "events_url": s.events_url(),
        "commands_url": s.commands_url(),
        "events_url_derived": !explicit(&s.events_url),
        "commands_url_derived": !explicit(&s.commands_url),
    })
}

async fn get_urls(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(urls_json(&s))
}

/// Any of: `base` (sets all three to base + `/slack/interactions|events|commands`), then
/// `interactivity_url`, `events_url`, `commands_url`; `""` for the last two derives them again.
#[derive(Deserialize)]
struct SetUrls {
    base: Option<String>,
    interactivity_url: Option<String>,
    events_url: Option<String>,
    commands_url: Option<String>,
}

async fn set_urls(State(s): State<Arc<Shared>>, Json(req): Json<SetUrls>) -> Json<Value> {
    if let Some(base) = &req.base {
        s.set_app_base_url(base);
    }
    if let Some(url) = req.interactivity_url {
        *s.interactivity_url
            .write()
            .unwrap_or_else(|e| e.into_inner()) = url;
    }
    if let Some(url) = req.events_url {
        set_url(&s.events_url, Some(url).filter(|u| !u.is_empty()));
    }
    if let Some(url) = req.commands_url {
        set_url(&s.commands_url, Some(url).filter(|u| !u.is_empty()));
    }
    Json(urls_json(&s))
}

#[derive(Deserialize)]
struct SetUrl {
    url: String,
}

async fn set_interactivity_url(
    State(s): State<Arc<Shared>>,
    Json(req): Json<SetUrl>,
) -> StatusCode {
    *s.interactivity_url
        .write()
        .unwrap_or_else(|e| e.into_inner()) = req.url;
    StatusCode::NO_CONTENT
}

/// A response_url POST: replace or delete the clicked message, post in channel, or (default)
/// reply ephemerally to the clicker. A slash command's URL has no message to replace or
/// delete, so those flags are ignored there and the response is posted.
async fn response_url(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "invalid_payload").into_response();
    };
    let text = req.get("text").and_then(Value::as_str).map(str::to_owned);
    let blocks = match req.get("blocks") {
        None => None,
        Some(b) => match crate::blocks::validate(b, 50) {
            Ok(()) => b.as_array().cloned().map(|mut list| {
                crate::blocks::fill_ids(&mut list);
                list
            }),
            Err(_) => return (StatusCode::BAD_REQUEST, "invalid_blocks").into_response(),
        },
    };
    let flag = |k: &str| req.get(k).and_then(Value::as_bool).unwrap_or(false);
    let mut store = lock(&s.store);
    let Some(target) = store.response_urls.get_mut(&id) else {
        return (StatusCode::NOT_FOUND, "no_such_url").into_response();
    };
    if target.issued.elapsed() > RESPONSE_URL_TTL || target.uses >= RESPONSE_URL_USES {
        return (StatusCode::NOT_FOUND, "expired_url").into_response();
    }
    target.uses += 1;
    let (channel, message_ts, user) = (
        target.channel.clone(),
        target.message_ts.clone(),
        target.user.clone(),
    );
    if let Some(message_ts) = message_ts
        && (flag("delete_original") || flag("replace_original"))
    {
        let delete = flag("delete_original");
        let Some(m) = store.message_mut(&channel, &message_ts) else {
            return (StatusCode::NOT_FOUND, "message_not_found").into_response();
        };
        if delete {
            m.deleted = true;
        } else {
            if let Some(t) = text {
                m.text = t;
            }
            m.blocks = blocks.unwrap_or_default();
            m.edits += 1;
        }
        s.emit(SandboxEvent::MessageUpdated(m.clone()));
        return Json(json!({"ok": true})).into_response();
    }
    drop(store);
    let (text, blocks) = (text.unwrap_or_default(), blocks.unwrap_or_default());
    if req.get("response_type").and_then(Value::as_str) == Some("in_channel") {
        let thread_ts = req
            .get("thread_ts")
            .and_then(Value::as_str)
            .map(str::to_owned);
        s.post_bot_message(&channel, thread_ts, text, blocks);
    } else {
        s.post_ephemeral(&channel, &user, None, text, blocks);
    }
    Json(json!({"ok": true})).into_response()
}

/// Server-sent events: one `data:` JSON object per sandbox event (`{"type","data"}`); a
/// `resync` event tells a slow client it missed some and should reload.
async fn events(
    State(s): State<Arc<Shared>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = s.events.subscribe();
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let event = match rx.recv().await {
            Ok(e) => Event::default().data(serde_json::to_string(&e).unwrap_or_default()),
            Err(broadcast::error::RecvError::Lagged(_)) => {
                Event::default().data(r#"{"type":"resync"}"#)
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), rx))
    })
    .take_until(s.cancel.clone().cancelled_owned());
    Sse::new(stream).keep_alive(KeepAlive::default())
}
