//! Events API payloads (`event_callback`) the sandbox sends: `app_home_opened` when a person
//! opens the app's Home tab. Delivered like every payload (see `interact::deliver`): an
//! `events_api` Socket Mode envelope, or a signed JSON POST to the events URL.

use serde_json::{Value, json};

use crate::b64;
use crate::error::SandboxError;
use crate::interact::{Outgoing, Route, VERIFICATION_TOKEN, deliver};
use crate::model::ClickOutcome;
use crate::state::{Shared, format_ts, lock, random_upper, unix_micros, unix_ms};
use crate::web_api::view_json;

/// The id of the app's direct-message channel with `user`: stable, `D` + the user id without
/// its `U` (U0ALICE -> D0ALICE), so tests can predict it.
pub(crate) fn dm_channel_id(user: &str) -> String {
    format!("D{}", user.strip_prefix('U').unwrap_or(user))
}

/// The outer `event_callback` envelope Slack wraps every event in.
fn event_callback(shared: &Shared, event: Value, channel: &str) -> Value {
    let c = &shared.config;
    let event_type = event.get("type").and_then(Value::as_str).unwrap_or("");
    // Slack's event_context is opaque; this one is shaped like Slack's (`4-` + base64 JSON).
    let context = json!({"et": event_type, "tid": c.team_id, "aid": c.app_id, "cid": channel});
    json!({
        "token": VERIFICATION_TOKEN,
        "team_id": c.team_id,
        "context_team_id": c.team_id,
        "context_enterprise_id": null,
        "api_app_id": c.app_id,
        "event": event,
        "type": "event_callback",
        "event_id": format!("Ev{}", random_upper(10)),
        "event_time": unix_ms() / 1000,
        "authorizations": [{
            "enterprise_id": null,
            "team_id": c.team_id,
            "user_id": c.bot_user_id,
            "is_bot": true,
            "is_enterprise_install": false,
        }],
        "is_ext_shared_channel": false,
        "event_context": format!("4-{}", b64::encode(context.to_string().as_bytes())),
    })
}

/// `app_home_opened` for `user` on the Home tab; `view` is present once a Home tab has been
/// published for them, as in Slack.
pub(crate) fn app_home_opened_payload(shared: &Shared, user: &str) -> Result<Value, SandboxError> {
    let user = shared
        .user(user)
        .ok_or_else(|| SandboxError::UnknownUser(user.to_owned()))?;
    let channel = dm_channel_id(&user.id);
    let mut event = json!({
        "type": "app_home_opened",
        "user": user.id,
        "channel": channel,
        "tab": "home",
        "event_ts": format_ts(unix_micros()),
    });
    let view = lock(&shared.store).home_views.get(&user.id).cloned();
    if let Some(view) = view {
        event["view"] = view_json(shared, &view, &json!({}));
    }
    Ok(event_callback(shared, event, &channel))
}

pub(crate) async fn open_home(shared: &Shared, user: &str) -> Result<ClickOutcome, SandboxError> {
    let payload = app_home_opened_payload(shared, user)?;
    let out = Outgoing {
        route: Route::Events,
        kind: "app_home_opened".into(),
        user: user.to_owned(),
        http_body: payload.to_string(),
        payload,
        accepts_response_payload: false,
    };
    deliver(shared, out).await
}
