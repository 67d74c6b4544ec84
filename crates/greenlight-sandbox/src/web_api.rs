//! The Web API: `POST|GET /api/<method>`, Slack's argument rules, errors and faults.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::b64;
use crate::blocks;
use crate::faults::FaultKind;
use crate::model::{ApiCall, EphemeralMessage, Message, SandboxEvent, View};
use crate::state::{Shared, format_ts, lock, random_hex, unix_ms};

/// An `ok:false` answer: Slack's error name plus optional `response_metadata.messages`.
#[derive(Debug)]
pub(crate) struct SlackError {
    pub error: String,
    pub messages: Vec<String>,
}

impl From<&str> for SlackError {
    fn from(error: &str) -> Self {
        Self {
            error: error.to_owned(),
            messages: Vec::new(),
        }
    }
}

type Args = Map<String, Value>;

struct Reply {
    status: StatusCode,
    body: Value,
    retry_after: Option<u64>,
}

impl Reply {
    fn ok(body: Value) -> Self {
        Self {
            status: StatusCode::OK,
            body,
            retry_after: None,
        }
    }

    fn error(e: SlackError) -> Self {
        let mut body = json!({"ok": false, "error": e.error});
        if !e.messages.is_empty() {
            body["response_metadata"] = json!({"messages": e.messages});
        }
        Self {
            status: StatusCode::OK,
            body,
            retry_after: None,
        }
    }
}

pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    Path(method): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let parsed = parse_args(&headers, query.as_deref(), &body);
    let (mut args, token) = match parsed {
        Ok(v) => v,
        Err(e) => (Map::new(), Err(e)),
    };
    let reply = run(&shared, &method, &args, token).await;
    args.remove("token");
    let ok = reply
        .body
        .get("ok")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let call = ApiCall {
        method: method.clone(),
        at: started,
        at_unix_ms: unix_ms(),
        http_status: reply.status.as_u16(),
        ok,
        error: reply
            .body
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_owned),
        args: Value::Object(args),
    };
    // In the log before it is announced, so that a listener finds it there.
    let announced = shared.listened().then(|| call.clone());
    lock(&shared.store).push_call(call);
    if let Some(call) = announced {
        shared.emit(SandboxEvent::ApiCalled(call));
    }

    let mut response = (reply.status, axum::Json(reply.body)).into_response();
    if let Some(secs) = reply.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// Latency first, then injected failures, then authentication, then the method itself.
async fn run(
    shared: &Shared,
    method: &str,
    args: &Args,
    token: Result<Option<String>, SlackError>,
) -> Reply {
    let latency = lock(&shared.faults).latency_for(method);
    if let Some(d) = latency {
        tokio::time::sleep(d).await;
    }
    let failure = lock(&shared.faults).take_failure(method);
    match failure {
        Some(FaultKind::RateLimit { retry_after_secs }) => {
            return Reply {
                status: StatusCode::TOO_MANY_REQUESTS,
                body: json!({"ok": false, "error": "ratelimited"}),
                retry_after: Some(retry_after_secs),
            };
        }
        Some(FaultKind::Http { status }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Reply {
                status,
                body: json!({"ok": false, "error": "fatal_error"}),
                retry_after: None,
            };
        }
        Some(FaultKind::Error { error }) => return Reply::error(error.as_str().into()),
        Some(FaultKind::AnswerLost { status }) => {
            if token_ok(shared, method, &token) {
                let _ = dispatch(shared, method, args);
            }
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            return Reply {
                status,
                body: json!({"ok": false, "error": "fatal_error"}),
                retry_after: None,
            };
        }
        None => {}
    }
    let token = match token {
        Ok(Some(t)) => t,
        Ok(None) => return Reply::error("not_authed".into()),
        Err(e) => return Reply::error(e),
    };
    let cfg = &shared.config;
    let is_app_token = cfg.app_token.as_deref() == Some(token.as_str());
    if token != cfg.bot_token && !is_app_token {
        return Reply::error("invalid_auth".into());
    }
    if (method == "apps.connections.open") != is_app_token {
        return Reply::error("not_allowed_token_type".into());
    }
    match dispatch(shared, method, args) {
        Ok(body) => Reply::ok(body),
        Err(e) => Reply::error(e),
    }
}

/// Whether `token` may call `method` (the checks of `run`, for a call whose answer is lost).
fn token_ok(shared: &Shared, method: &str, token: &Result<Option<String>, SlackError>) -> bool {
    let Ok(Some(token)) = token else {
        return false;
    };
    let cfg = &shared.config;
    let is_app_token = cfg.app_token.as_deref() == Some(token.as_str());
    (*token == cfg.bot_token || is_app_token) && (method == "apps.connections.open") == is_app_token
}

fn dispatch(shared: &Shared, method: &str, args: &Args) -> Result<Value, SlackError> {
    match method {
        "api.test" => Ok(json!({"ok": true, "args": args})),
        "auth.test" => Ok(auth_test(shared)),
        "chat.postMessage" => post_message(shared, args),
        "chat.update" => update(shared, args),
        "chat.postEphemeral" => post_ephemeral(shared, args),
        "views.open" => views_open(shared, args),
        "views.publish" => views_publish(shared, args),
        "users.info" => users_info(shared, args),
        "users.lookupByEmail" => lookup_by_email(shared, args),
        "users.list" => Ok(json!({"ok": true, "members":
            shared.config.users.iter().map(|u| shared.user_json(u)).collect::<Vec<_>>()})),
        "usergroups.users.list" => usergroup_users(shared, args),
        "usergroups.list" => Ok(json!({"ok": true, "usergroups":
            shared.config.usergroups.iter().map(|g| json!({"id": g.id, "handle": g.handle,
                "team_id": shared.config.team_id, "users": g.users})).collect::<Vec<_>>()})),
        "conversations.info" => {
            let ch = channel_arg(shared, args)?;
            let channel = match shared.dm_user(&ch.id) {
                Some(user) => dm_json(&ch.id, &user.id),
                None => channel_json(ch),
            };
            Ok(json!({"ok": true, "channel": channel}))
        }
        "conversations.list" => Ok(json!({"ok": true,
            "channels": shared.config.channels.iter().map(channel_json).collect::<Vec<_>>(),
            "response_metadata": {"next_cursor": ""}})),
        "conversations.history" => history(shared, args),
        "conversations.open" => conversations_open(shared, args),
        "conversations.replies" => replies(shared, args),
        "apps.connections.open" => Ok(json!({"ok": true, "url": shared.sockets.open_url(shared)})),
        _ => Err("unknown_method".into()),
    }
}

/// Reads arguments from the query string and the body (JSON or form) and the token from
/// `Authorization: Bearer` or, for form/query requests, the `token` field.
fn parse_args(
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
) -> Result<(Args, Result<Option<String>, SlackError>), SlackError> {
    let mut args = Args::new();
    if let Some(q) = query {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(q).map_err(|_| SlackError::from("invalid_form_data"))?;
        for (k, v) in pairs {
            args.insert(k, Value::String(v));
        }
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let is_json = content_type.starts_with("application/json");
    if !body.is_empty() {
        if is_json {
            let v: Value =
                serde_json::from_slice(body).map_err(|_| SlackError::from("invalid_json"))?;
            let Value::Object(obj) = v else {
                return Err("invalid_json".into());
            };
            args.extend(obj);
        } else if content_type.starts_with("application/x-www-form-urlencoded")
            || content_type.is_empty()
        {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
                .map_err(|_| SlackError::from("invalid_form_data"))?;
            for (k, v) in pairs {
                args.insert(k, Value::String(v));
            }
        } else {
            return Err("invalid_post_type".into());
        }
    }
    let bearer = match headers.get(header::AUTHORIZATION) {
        Some(v) => {
            let s = v.to_str().map_err(|_| SlackError::from("invalid_auth"))?;
            match s.strip_prefix("Bearer ") {
                Some(t) => Some(t.trim().to_owned()),
                None => return Ok((args, Err("invalid_auth".into()))),
            }
        }
        None => None,
    };
    // Slack ignores a `token` field in JSON bodies: JSON needs the header.
    let field = if is_json {
        None
    } else {
        args.get("token").and_then(Value::as_str).map(str::to_owned)
    };
    Ok((args, Ok(bearer.or(field).filter(|t| !t.is_empty()))))
}

fn str_arg(args: &Args, key: &str) -> Option<String> {
    match args.get(key)? {
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A JSON argument: form bodies carry it as a JSON string, JSON bodies as a value.
fn json_arg(args: &Args, key: &str) -> Result<Option<Value>, ()> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => serde_json::from_str(s).map(Some).map_err(|_| ()),
        Some(v) => Ok(Some(v.clone())),
    }
}

/// Slack's booleans: `true`/`1` in forms and queries, `true` (or 1) in JSON.
fn bool_arg(args: &Args, key: &str) -> bool {
    match args.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_u64() == Some(1),
        Some(Value::String(s)) => s == "1" || s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// Message metadata: `{"event_type": "...", "event_payload": {...}}`, a JSON object in JSON
/// bodies or a JSON string in form bodies.
fn metadata_arg(args: &Args) -> Result<Option<Value>, SlackError> {
    let Some(meta) = json_arg(args, "metadata").map_err(|_| "invalid_metadata_format")? else {
        return Ok(None);
    };
    let Some(obj) = meta.as_object() else {
        return Err("invalid_metadata_format".into());
    };
    let event_type_ok = obj
        .get("event_type")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.trim().is_empty());
    if !event_type_ok || !obj.get("event_payload").is_some_and(Value::is_object) {
        return Err("invalid_metadata_schema".into());
    }
    // Slack caps metadata at a few kilobytes; 8 KB keeps a runaway payload out.
    if meta.to_string().len() > 8_000 {
        return Err("metadata_too_large".into());
    }
    Ok(Some(meta))
}

fn channel_arg<'a>(
    shared: &'a Shared,
    args: &Args,
) -> Result<&'a crate::config::Channel, SlackError> {
    str_arg(args, "channel")
        .and_then(|c| shared.channel(&c))
        .ok_or_else(|| "channel_not_found".into())
}

/// Opens (or resumes) the app's 1:1 direct message with one user, as Slack's
/// conversations.open does with `users` (or `channel`, an im's id); a multi-person direct
/// message is not emulated.
fn conversations_open(shared: &Shared, args: &Args) -> Result<Value, SlackError> {
    // A comma-separated string, as documented; JSON bodies may carry an array.
    let users = match args.get("users") {
        Some(Value::Array(list)) => Some(
            list.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","),
        ),
        _ => str_arg(args, "users"),
    };
    let user = match (users.filter(|u| !u.is_empty()), str_arg(args, "channel")) {
        (Some(users), _) => {
            let ids: Vec<&str> = users.split(',').map(str::trim).collect();
            if ids.len() > 8 {
                return Err("too_many_users".into());
            }
            if ids.len() > 1 {
                return Err("method_not_supported_for_channel_type".into());
            }
            shared
                .user(ids[0])
                .ok_or_else(|| SlackError::from("user_not_found"))?
        }
        (None, Some(channel)) => shared
            .dm_user(&channel)
            .ok_or_else(|| SlackError::from("channel_not_found"))?,
        (None, None) => return Err("users_list_not_supplied".into()),
    };
    let id = crate::events::dm_channel_id(&user.id);
    let already_open = !lock(&shared.store).opened_dms.insert(id.clone());
    let channel = if bool_arg(args, "return_im") {
        dm_json(&id, &user.id)
    } else {
        json!({"id": id})
    };
    Ok(
        json!({"ok": true, "no_op": already_open, "already_open": already_open,
        "channel": channel}),
    )
}

fn dm_json(id: &str, user: &str) -> Value {
    json!({"id": id, "is_im": true, "is_channel": false, "is_private": true, "user": user,
        "is_archived": false, "is_open": true, "created": 1_700_000_000})
}

fn channel_json(c: &crate::config::Channel) -> Value {
    json!({"id": c.id, "name": c.name, "is_channel": true, "is_private": false,
        "is_archived": false, "is_member": true, "created": 1_700_000_000})
}

/// Blocks from `args`, validated and with Slack's missing ids filled in.
fn blocks_arg(args: &Args) -> Result<Option<Vec<Value>>, SlackError> {
    let Some(v) =
        json_arg(args, "blocks").map_err(|_| SlackError::from("invalid_blocks_format"))?
    else {
        return Ok(None);
    };
    blocks::validate(&v, 50).map_err(|messages| SlackError {
        error: "invalid_blocks".into(),
        messages,
    })?;
    let mut list = match v {
        Value::Array(list) => list,
        _ => return Err("invalid_blocks_format".into()),
    };
    blocks::fill_ids(&mut list);
    Ok(Some(list))
}

/// Who the token is; on Enterprise Grid also the organization (`enterprise_id`).
fn auth_test(shared: &Shared) -> Value {
    let c = &shared.config;
    let mut answer = json!({
        "ok": true,
        "url": format!("https://{}.slack.com/", c.team_domain),
        "team": c.team_domain,
        "user": "greenlight",
        "team_id": c.team_id,
        "user_id": c.bot_user_id,
        "bot_id": c.bot_id,
        "is_enterprise_install": false,
    });
    if let Some(org) = &c.enterprise {
        answer["enterprise_id"] = json!(org.id);
    }
    answer
}

fn post_message(shared: &Shared, args: &Args) -> Result<Value, SlackError> {
    let channel = channel_arg(shared, args)?;
    let blocks = blocks_arg(args)?.unwrap_or_default();
    let text = str_arg(args, "text").unwrap_or_default();
    if text.is_empty() && blocks.is_empty() && str_arg(args, "attachments").is_none() {
        return Err("no_text".into());
    }
    if text.chars().count() > 40_000 {
        return Err("msg_too_long".into());
    }
    let metadata = metadata_arg(args)?;
    let mut store = lock(&shared.store);
    // A reply to a reply joins the parent's thread, as in Slack.
    let thread_ts = str_arg(args, "thread_ts").map(|t| {
        store
            .message(&channel.id, &t)
            .and_then(|m| m.thread_ts.clone())
            .unwrap_or(t)
    });
    let ts = store.next_ts();
    let message = Message {
        channel: channel.id.clone(),
        ts: ts.clone(),
        thread_ts,
        text,
        blocks,
        user: shared.config.bot_user_id.clone(),
        bot_id: shared.config.bot_id.clone(),
        edits: 0,
        deleted: false,
        metadata,
    };
    let answer = json!({"ok": true, "channel": channel.id, "ts": ts,
        "message": shared.message_json(&message, true)});
    shared.emit_with(|| SandboxEvent::MessagePosted(message.clone()));
    store
        .messages
        .entry(channel.id.clone())
        .or_default()
        .push(message);
    Ok(answer)
}

fn update(shared: &Shared, args: &Args) -> Result<Value, SlackError> {
    let channel = channel_arg(shared, args)?;
    let ts = str_arg(args, "ts").ok_or_else(|| SlackError::from("message_not_found"))?;
    let blocks = blocks_arg(args)?;
    let text = str_arg(args, "text");
    if text.is_none() && blocks.is_none() && str_arg(args, "attachments").is_none() {
        return Err("no_text".into());
    }
    if text.as_ref().is_some_and(|t| t.chars().count() > 4000) {
        return Err("msg_too_long".into());
    }
    let metadata = metadata_arg(args)?;
    let mut store = lock(&shared.store);
    let message = store
        .message_mut(&channel.id, &ts)
        .filter(|m| !m.deleted)
        .ok_or_else(|| SlackError::from("message_not_found"))?;
    if message.user != shared.config.bot_user_id {
        return Err("cant_update_message".into());
    }
    // Absent fields keep their old value; `blocks: []` removes the blocks.
    if let Some(t) = text {
        message.text = t;
    }
    if let Some(b) = blocks {
        message.blocks = b;
    }
    if let Some(m) = metadata {
        message.metadata = Some(m);
    }
    message.edits += 1;
    let message = &*message;
    shared.emit_with(|| SandboxEvent::MessageUpdated(message.clone()));
    Ok(
        json!({"ok": true, "channel": channel.id, "ts": ts, "text": message.text,
        "message": shared.message_json(message, true)}),
    )
}

fn post_ephemeral(shared: &Shared, args: &Args) -> Result<Value, SlackError> {
    let channel = channel_arg(shared, args)?;
    let user = str_arg(args, "user")
        .filter(|u| shared.user(u).is_some())
        .ok_or_else(|| SlackError::from("user_not_in_channel"))?;
    let blocks = blocks_arg(args)?.unwrap_or_default();
    let text = str_arg(args, "text").unwrap_or_default();
    if text.is_empty() && blocks.is_empty() {
        return Err("no_text".into());
    }
    let mut store = lock(&shared.store);
    let ts = store.next_ts();
    let eph = EphemeralMessage {
        channel: channel.id.clone(),
        user,
        ts: ts.clone(),
        thread_ts: str_arg(args, "thread_ts"),
        text,
        blocks,
    };
    store.ephemerals.push(eph.clone());
    shared.emit(SandboxEvent::EphemeralPosted(eph));
    Ok(json!({"ok": true, "message_ts": ts}))
}

fn views_open(shared: &Shared, args: &Args) -> Result<Value, SlackError> {
    let trigger_id =
        str_arg(args, "trigger_id").ok_or_else(|| SlackError::from("invalid_arguments"))?;
    let view = json_arg(args, "view")
        .map_err(|_| SlackError::from("invalid_arguments"))?
        .ok_or_else(|| SlackError::from("invalid_arguments"))?;
    validate_view(&view, "modal")?;
    let mut store = lock(&shared.store);
    let trigger = store
        .triggers
        .get_mut(&trigger_id)
        .ok_or_else(|| SlackError::from("invalid_trigger_id"))?;
    if trigger.used {
        return Err("exchanged_trigger_id".into());
    }
    if trigger.issued.elapsed() > shared.config.trigger_ttl {
        return Err("expired_trigger_id".into());
    }
    trigger.used = true;
    let user = trigger.user.clone();
    let record = View {
        id: format!("V{}", random_hex(5).to_uppercase()),
        user,
        hash: format!("{}.{}", unix_ms() / 1000, random_hex(4)),
        callback_id: view
            .get("callback_id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        private_metadata: view
            .get("private_metadata")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        view,
        open: true,
        errors: json!({}),
    };
    store.views.push(record.clone());
    shared.emit(SandboxEvent::ViewOpened(record.clone()));
    Ok(json!({"ok": true, "view": view_json(shared, &record, &json!({}))}))
}

/// Checks a view against Slack's limits; `kind` is `modal` (views.open) or `home`
/// (views.publish). Home tabs have no title, submit or close.
fn validate_view(view: &Value, kind: &str) -> Result<(), SlackError> {
    let mut messages = Vec::new();
    if !view.is_object() {
        return Err(SlackError {
            error: "invalid_arguments".into(),
            messages: vec!["[ERROR] must provide an object [json-pointer:/view]".into()],
        });
    }
    if view.to_string().len() > 250_000 {
        return Err("view_too_large".into());
    }
    if view.get("type").and_then(Value::as_str) != Some(kind) {
        messages.push(format!("[ERROR] must be {kind} [json-pointer:/view/type]"));
    }
    if kind == "modal" {
        match view.pointer("/title/text").and_then(Value::as_str) {
            Some(t) if !t.is_empty() && t.chars().count() <= 24 => {}
            _ => messages
                .push("[ERROR] must be 1 to 24 characters [json-pointer:/view/title/text]".into()),
        }
    }
    if view
        .get("callback_id")
        .and_then(Value::as_str)
        .is_some_and(|s| s.chars().count() > 255)
    {
        messages.push(
            "[ERROR] must be less than 256 characters [json-pointer:/view/callback_id]".into(),
        );
    }
    for key in ["submit", "close"] {
        if let Some(t) = view.get(key)
            && t.get("text")
                .and_then(Value::as_str)
                .is_none_or(|s| s.chars().count() > 24)
        {
            messages.push(format!(
                "[ERROR] must be 1 to 24 characters [json-pointer:/view/{key}/text]"
            ));
        }
    }
    if view
        .get("private_metadata")
        .and_then(Value::as_str)
        .is_some_and(|s| s.len() > 3000)
    {
        messages.push(
            "[ERROR] must be less than 3001 characters [json-pointer:/view/private_metadata]"
                .into(),
        );
    }
    if let Err(errs) = blocks::validate(view.get("blocks").unwrap_or(&Value::Null), 100) {
        messages.extend(
            errs.into_iter()
                .map(|e| e.replace("json-pointer:/blocks", "json-pointer:/view/blocks")),
        );
    }
    if messages.is_empty() {
        Ok(())
    } else {
        Err(SlackError {
            error: "invalid_arguments".into(),
            messages,
        })
    }
}

/// Publishes `user_id`'s Home tab. The view keeps its id across publishes; `hash`, when
/// given, must match the current one (Slack's guard against a stale overwrite).
fn views_publish(shared: &Shared, args: &Args) -> Result<Value, SlackError> {
    let user = str_arg(args, "user_id")
        .filter(|u| shared.user(u).is_some())
        .ok_or_else(|| SlackError {
            error: "invalid_arguments".into(),
            messages: vec!["invalid `user_id`".into()],
        })?;
    let mut view = json_arg(args, "view")
        .map_err(|_| SlackError {
            error: "invalid_arguments".into(),
            messages: vec!["[ERROR] must provide an object [json-pointer:/view]".into()],
        })?
        .ok_or_else(|| SlackError {
            error: "invalid_arguments".into(),
            messages: vec!["[ERROR] must provide an object [json-pointer:/view]".into()],
        })?;
    validate_view(&view, "home")?;
    if let Some(Value::Array(list)) = view.get_mut("blocks") {
        blocks::fill_ids(list);
    }
    let hash = str_arg(args, "hash");
    let mut store = lock(&shared.store);
    let current = store.home_views.get(&user);
    if let (Some(want), Some(current)) = (&hash, current)
        && *want != current.hash
    {
        return Err("hash_conflict".into());
    }
    let id = current
        .map(|v| v.id.clone())
        .unwrap_or_else(|| format!("V{}", random_hex(5).to_uppercase()));
    let text_field = |key: &str| {
        view.get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let record = View {
        id,
        user: user.clone(),
        hash: format!("{}.{}", unix_ms() / 1000, random_hex(4)),
        callback_id: text_field("callback_id"),
        private_metadata: text_field("private_metadata"),
        view,
        open: true,
        errors: json!({}),
    };
    store.home_views.insert(user, record.clone());
    drop(store);
    shared.emit(SandboxEvent::HomeViewPublished(record.clone()));
    Ok(json!({"ok": true, "view": view_json(shared, &record, &json!({}))}))
}

/// The view object as Slack echoes it (views.open and views.publish answers, view_submission
/// and block_actions payloads, app_home_opened events).
pub(crate) fn view_json(shared: &Shared, v: &View, state_values: &Value) -> Value {
    let c = &shared.config;
    let mut out = v.view.clone();
    if let Some(obj) = out.as_object_mut() {
        obj.insert("id".into(), json!(v.id));
        obj.insert("team_id".into(), json!(c.team_id));
        obj.insert("app_id".into(), json!(c.app_id));
        obj.insert("bot_id".into(), json!(c.bot_id));
        obj.insert("hash".into(), json!(v.hash));
        obj.insert("callback_id".into(), json!(v.callback_id));
        obj.insert("private_metadata".into(), json!(v.private_metadata));
        obj.insert("state".into(), json!({"values": state_values}));
        obj.insert("root_view_id".into(), json!(v.id));
        obj.insert("previous_view_id".into(), Value::Null);
        obj.entry("external_id").or_insert_with(|| json!(""));
        obj.insert("app_installed_team_id".into(), json!(c.team_id));
        obj.entry("blocks").or_insert_with(|| json!([]));
        for key in ["close", "submit"] {
            obj.entry(key).or_insert(Value::Null);
        }
        for key in ["clear_on_close", "notify_on_close"] {
            obj.entry(key).or_insert(Value::Bool(false));
        }
    }
    out
}

fn users_info(shared: &Shared, args: &Args) -> Result<Value, SlackError> {
    let user = str_arg(args, "user")
        .and_then(|u| shared.user(&u))
        .ok_or_else(|| SlackError::from("user_not_found"))?;
    Ok(json!({"ok": true, "user": shared.user_json(user)}))
}

fn lookup_by_email(shared: &Shared, args: &Args) -> Result<Value, SlackError> {
    let email = str_arg(args, "email").ok_or_else(|| SlackError::from("users_not_found"))?;
    let user = shared
        .config
        .users
        .iter()
        .find(|u| u.email.eq_ignore_ascii_case(&email))
        .ok_or_else(|| SlackError::from("users_not_found"))?;
    Ok(json!({"ok": true, "user": shared.user_json(user)}))
}

fn usergroup_users(shared: &Shared, args: &Args) -> Result<Value, SlackError> {
    let id = str_arg(args, "usergroup").ok_or_else(|| SlackError::from("no_such_subteam"))?;
    let group = shared
        .config
        .usergroups
        .iter()
        .find(|g| g.id == id)
        .ok_or_else(|| SlackError::from("no_such_subteam"))?;
    Ok(json!({"ok": true, "users": group.users}))
}

/// A ts as micros since the epoch (`1512085950.000216`, `1512085950`, `1512085950.5`).
fn ts_micros(ts: &str) -> Option<u64> {
    let (secs, frac) = ts.split_once('.').unwrap_or((ts, ""));
    if secs.is_empty()
        || frac.len() > 6
        || !secs.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let micros: u64 = format!("{frac:0<6}").parse().ok()?;
    secs.parse::<u64>()
        .ok()?
        .checked_mul(1_000_000)?
        .checked_add(micros)
}

/// A timestamp bound (`oldest`, `latest`): absent, or micros; `error` when unparsable.
fn ts_bound(args: &Args, key: &str, error: &str) -> Result<Option<u64>, SlackError> {
    match str_arg(args, key) {
        None => Ok(None),
        Some(t) => ts_micros(&t).map(Some).ok_or_else(|| error.into()),
    }
}

/// Slack's history cursor: base64 of `next_ts:<ts digits>`, the newest message of the next page.
fn history_cursor(ts_micros: u64) -> String {
    b64::encode(format!("next_ts:{ts_micros}").as_bytes())
}

fn cursor_arg(args: &Args) -> Result<Option<u64>, SlackError> {
    let Some(cursor) = str_arg(args, "cursor") else {
        return Ok(None);
    };
    b64::decode(&cursor)
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix("next_ts:")?.parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| "invalid_cursor".into())
}

/// `limit`: default 100, at most 999 (Slack's documented maximum); 0 means the default.
fn limit_arg(args: &Args) -> Result<usize, SlackError> {
    match str_arg(args, "limit") {
        None => Ok(100),
        Some(l) => match l.parse::<usize>() {
            Ok(0) => Ok(100),
            Ok(n) => Ok(n.min(999)),
            Err(_) => Err("invalid_limit".into()),
        },
    }
}

/// Newest first, top level only (thread parents included), paged by `limit` and `cursor`
/// within `oldest`..`latest` (exclusive unless `inclusive`), metadata only when asked.
fn history(shared: &Shared, args: &Args) -> Result<Value, SlackError> {
    let channel = channel_arg(shared, args)?;
    let oldest = ts_bound(args, "oldest", "invalid_ts_oldest")?;
    let latest = ts_bound(args, "latest", "invalid_ts_latest")?;
    let cursor = cursor_arg(args)?;
    let limit = limit_arg(args)?;
    let inclusive = bool_arg(args, "inclusive");
    let with_metadata = bool_arg(args, "include_all_metadata");
    let store = lock(&shared.store);
    let in_range = |ts: u64| {
        let after_oldest = oldest.is_none_or(|o| if inclusive { ts >= o } else { ts > o });
        let before_latest = latest.is_none_or(|l| if inclusive { ts <= l } else { ts < l });
        // The cursor names the first message of this page, so it is inclusive.
        after_oldest && before_latest && cursor.is_none_or(|c| ts <= c)
    };
    let mut page: Vec<(u64, &Message)> = store
        .messages
        .get(&channel.id)
        .into_iter()
        .flatten()
        .rev()
        .filter(|m| !m.deleted && m.thread_ts.is_none())
        .filter_map(|m| ts_micros(&m.ts).map(|t| (t, m)))
        .filter(|(t, _)| in_range(*t))
        .take(limit + 1)
        .collect();
    let next = (page.len() > limit).then(|| page[limit].0);
    page.truncate(limit);
    let messages: Vec<Value> = page
        .iter()
        .map(|(_, m)| shared.message_json(m, with_metadata))
        .collect();
    let mut out = json!({"ok": true, "messages": messages, "has_more": next.is_some(),
        "pin_count": 0});
    if let Some(next) = next {
        out["response_metadata"] = json!({"next_cursor": history_cursor(next)});
    }
    for (key, bound) in [("oldest", oldest), ("latest", latest)] {
        if let Some(b) = bound {
            out[key] = json!(format_ts(b));
        }
    }
    Ok(out)
}

fn replies(shared: &Shared, args: &Args) -> Result<Value, SlackError> {
    let channel = channel_arg(shared, args)?;
    let ts = str_arg(args, "ts").ok_or_else(|| SlackError::from("thread_not_found"))?;
    let store = lock(&shared.store);
    let list = store.messages.get(&channel.id);
    let parent = list
        .and_then(|l| l.iter().find(|m| m.ts == ts))
        .ok_or_else(|| SlackError::from("thread_not_found"))?;
    let with_metadata = bool_arg(args, "include_all_metadata");
    let mut messages = vec![shared.message_json(parent, with_metadata)];
    messages.extend(
        list.into_iter()
            .flatten()
            .filter(|m| m.thread_ts.as_deref() == Some(ts.as_str()) && !m.deleted)
            .map(|m| shared.message_json(m, with_metadata)),
    );
    Ok(json!({"ok": true, "messages": messages, "has_more": false}))
}
