//! `POST /slack/interactions`, `/slack/events` and `/slack/commands`: verify, drop replays,
//! decide, ack. Nothing here calls Slack: message updates, notices and Home tabs go through
//! the outbox after the 200.

use std::collections::BTreeSet;
use std::sync::{Mutex, OnceLock};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::{ApiBytes, ApiError};
use crate::service::commands::{self, CommandError};
use crate::service::home::{self, EventError};
use crate::service::interactions::{self, InteractionError};
use crate::slack::commands::SlashCommand;
use crate::slack::interaction::{Inbound, decode};
use crate::slack::signature::{self, Signed};

/// How many signed requests the replay cache remembers at most (a few MB).
const REPLAY_CAPACITY: usize = 100_000;

/// Signed requests seen inside the 5-minute window, so that a replay (same timestamp, same
/// signature) is answered 200 and does nothing: no second vote attempt, ephemeral note or Slack
/// call. Only requests whose signature verified are remembered, so forged junk cannot fill it.
///
/// Memory is bounded: entries leave once their timestamp falls out of the window (they could
/// not verify any more), and past `capacity` the oldest timestamp is dropped to make room. That
/// choice keeps the endpoint available under a burst of real traffic (only Slack can sign new
/// requests); a replay of a dropped entry is handled like a first delivery, and the
/// compare-and-set on the request still keeps its decision exactly-once.
///
/// Per process: with several replicas, a replay sent to another replica gets through this cache
/// (and is again harmless beyond one more ephemeral note, for the same reason).
struct ReplayCache {
    seen: Mutex<BTreeSet<(i64, [u8; 32])>>,
    capacity: usize,
}

impl ReplayCache {
    fn new(capacity: usize) -> Self {
        Self {
            seen: Mutex::new(BTreeSet::new()),
            capacity,
        }
    }

    /// Remembers `signed`; false if it was already there (a replay).
    fn first_time(&self, signed: Signed, now: i64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let oldest_valid = now.saturating_sub(signature::MAX_AGE_SECS);
        while seen.first().is_some_and(|(ts, _)| *ts < oldest_valid) {
            seen.pop_first();
        }
        if !seen.insert((signed.timestamp, signed.mac)) {
            return false;
        }
        while seen.len() > self.capacity {
            seen.pop_first();
        }
        true
    }
}

/// One cache per process: entries are keyed by HMACs under the app's secret, so servers with
/// other secrets in the same process (tests) never collide.
fn replays() -> &'static ReplayCache {
    static CACHE: OnceLock<ReplayCache> = OnceLock::new();
    CACHE.get_or_init(|| ReplayCache::new(REPLAY_CAPACITY))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Response {
    let started = std::time::Instant::now();
    let response = handle(&state, &headers, &body)
        .await
        .unwrap_or_else(|e| e.into_response());
    metrics::histogram!("greenlight_slack_ack_seconds").record(started.elapsed().as_secs_f64());
    response
}

/// `POST /slack/commands`: a slash command, form-encoded and signed like every Slack request;
/// answered in the ack with an ephemeral message.
pub async fn command(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Response {
    let started = std::time::Instant::now();
    let response = handle_command(&state, &headers, &body)
        .await
        .unwrap_or_else(|e| e.into_response());
    metrics::histogram!("greenlight_slack_ack_seconds").record(started.elapsed().as_secs_f64());
    response
}

/// Whether a request is Slack's and new: the signature verified, and it is not a replay.
enum Verified {
    Fresh,
    Replay,
}

/// The v0 signature check and the replay cache, for every Slack endpoint.
fn verify(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Verified, ApiError> {
    let Some(secret) = &state.signing_secret else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_configured",
            "HTTP interactivity is off: SLACK_SIGNING_SECRET is not set",
        ));
    };
    let now = state.service.clock().now().as_second();
    let signed = signature::verify(
        secret.expose().as_bytes(),
        header(headers, "x-slack-request-timestamp"),
        header(headers, "x-slack-signature"),
        body,
        now,
    )
    .map_err(|e| {
        metrics::counter!("greenlight_slack_rejected_total", "reason" => e.code()).increment(1);
        tracing::warn!(reason = e.code(), "rejected a Slack request");
        ApiError::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string())
    })?;
    if !replays().first_time(signed, now) {
        metrics::counter!("greenlight_slack_replays_total").increment(1);
        tracing::warn!("dropped a replayed Slack request");
        return Ok(Verified::Replay);
    }
    Ok(Verified::Fresh)
}

async fn handle(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Response, ApiError> {
    if let Verified::Replay = verify(state, headers, body)? {
        // 200, not an error: Slack retries non-200 answers, and a replay is not worth a retry.
        return Ok(StatusCode::OK.into_response());
    }
    let inbound = decode(header(headers, header::CONTENT_TYPE.as_str()), body)
        .map_err(|e| ApiError::bad_request("invalid_payload", e.to_string()))?;
    match inbound {
        Inbound::UrlVerification { challenge } => {
            Ok(Json(serde_json::json!({ "challenge": challenge })).into_response())
        }
        // One durable write (the opening and the tab's refresh, in the outbox), then the 200:
        // views.publish runs after the ack. A retried event (X-Slack-Retry-Num) collapses into
        // the refresh still waiting.
        Inbound::Event(callback) => {
            home::on_event(&state.service, &callback)
                .await
                .map_err(|e| match e {
                    EventError::User => {
                        metrics::counter!("greenlight_slack_rejected_total", "reason" => "invalid_user_id")
                            .increment(1);
                        ApiError::bad_request("invalid_user_id", e.to_string())
                    }
                    EventError::Service(e) => e.into(),
                })?;
            Ok(StatusCode::OK.into_response())
        }
        Inbound::Other(kind) => {
            tracing::debug!(kind, "ignored a Slack payload");
            Ok(StatusCode::OK.into_response())
        }
        Inbound::Interaction(i) => {
            let handled = async { interactions::handle(&state.service, i.gesture()?).await }
                .await
                .map_err(|e| match e {
                    InteractionError::Malformed(_) => {
                        ApiError::bad_request("invalid_payload", e.to_string())
                    }
                    InteractionError::Identity(id) => {
                        metrics::counter!("greenlight_slack_rejected_total", "reason" => id.code())
                            .increment(1);
                        ApiError::bad_request(id.code(), e.to_string())
                    }
                    InteractionError::Service(e) => e.into(),
                })?;
            metrics::counter!("greenlight_interactions_total", "outcome" => handled.outcome())
                .increment(1);
            Ok(match handled.ack_payload() {
                Some(body) => Json(body).into_response(),
                None => StatusCode::OK.into_response(),
            })
        }
    }
}

async fn handle_command(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    if let Verified::Replay = verify(state, headers, body)? {
        return Ok(StatusCode::OK.into_response());
    }
    let cmd: SlashCommand = serde_urlencoded::from_bytes(body).map_err(|e| {
        ApiError::bad_request("invalid_payload", format!("not a slash command form: {e}"))
    })?;
    let reply = commands::handle(&state.service, &cmd)
        .await
        .map_err(|e| match e {
            CommandError::User => {
                metrics::counter!("greenlight_slack_rejected_total", "reason" => "invalid_user_id")
                    .increment(1);
                ApiError::bad_request("invalid_user_id", e.to_string())
            }
            CommandError::Service(e) => e.into(),
        })?;
    Ok(Json(reply).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(timestamp: i64, n: u8) -> Signed {
        Signed {
            timestamp,
            mac: [n; 32],
        }
    }

    #[test]
    fn a_replay_inside_the_window_is_caught_once_seen() {
        let cache = ReplayCache::new(10);
        let now = 1_800_000_000;
        assert!(cache.first_time(signed(now, 1), now));
        assert!(!cache.first_time(signed(now, 1), now));
        assert!(!cache.first_time(signed(now, 1), now + 300));
        // Same timestamp, other signature: another request.
        assert!(cache.first_time(signed(now, 2), now));
        assert!(cache.first_time(signed(now - 1, 1), now));
    }

    #[test]
    fn entries_leave_with_the_window_and_the_cap_drops_the_oldest() {
        let cache = ReplayCache::new(3);
        let now = 1_800_000_000;
        for (i, ts) in [now - 200, now - 100, now, now + 100]
            .into_iter()
            .enumerate()
        {
            assert!(cache.first_time(signed(ts, i as u8), now));
        }
        // The cap of 3 dropped the oldest timestamp.
        assert_eq!(cache.seen.lock().unwrap().len(), 3);
        assert!(cache.first_time(signed(now - 200, 0), now));
        // Time passes: everything older than the window is gone on the next call.
        cache.first_time(signed(now + 400, 9), now + 400);
        let left: Vec<i64> = cache.seen.lock().unwrap().iter().map(|(t, _)| *t).collect();
        assert_eq!(left, [now + 100, now + 400]);
    }
}
