//! Socket Mode server: one-time connection tickets, hello, envelopes (`interactive`,
//! `events_api`, `slash_commands`) to one random connection, acks, pings and disconnect requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::model::SandboxEvent;
use crate::state::{Shared, lock, random_hex};

/// A ticket from apps.connections.open stays usable this long.
const TICKET_TTL: Duration = Duration::from_secs(60);
/// The sandbox pings each connection this often, so idle clients see traffic.
const PING_EVERY: Duration = Duration::from_secs(10);
/// After a disconnect request the socket stays open this long so the app can reconnect first.
const DISCONNECT_GRACE: Duration = Duration::from_secs(5);

#[derive(Default)]
pub(crate) struct SocketHub {
    inner: Mutex<Hub>,
}

#[derive(Default)]
struct Hub {
    tickets: HashMap<String, Instant>,
    conns: HashMap<u64, Conn>,
    next_id: u64,
    pending: HashMap<String, oneshot::Sender<Option<Value>>>,
}

struct Conn {
    tx: mpsc::UnboundedSender<Outbound>,
    /// Asked to disconnect: takes no new envelopes.
    draining: bool,
}

enum Outbound {
    Text(String),
    Disconnect(String),
}

pub(crate) enum SocketAck {
    Acked {
        latency: Duration,
        payload: Option<Value>,
    },
    TimedOut {
        latency: Duration,
    },
}

impl Hub {
    fn active(&self) -> usize {
        self.conns.values().filter(|c| !c.draining).count()
    }
}

impl SocketHub {
    pub fn open_url(&self, shared: &Shared) -> String {
        let ticket = random_hex(16);
        let mut hub = lock(&self.inner);
        hub.tickets.retain(|_, at| at.elapsed() < TICKET_TTL);
        hub.tickets.insert(ticket.clone(), Instant::now());
        format!("ws://{}/socket?ticket={ticket}", shared.addr)
    }

    /// Connections that can take payloads (not asked to disconnect).
    pub fn open_connections(&self) -> usize {
        lock(&self.inner).active()
    }

    pub fn connection_ids(&self) -> Vec<u64> {
        let hub = lock(&self.inner);
        let mut ids: Vec<u64> = hub
            .conns
            .iter()
            .filter(|(_, c)| !c.draining)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Sends a disconnect request to one connection or all; returns how many got it.
    pub fn disconnect(&self, shared: &Shared, reason: &str, only: Option<u64>) -> usize {
        let mut hub = lock(&self.inner);
        let mut sent = 0;
        for (id, conn) in hub.conns.iter_mut() {
            if only.is_some_and(|o| o != *id) || conn.draining {
                continue;
            }
            if conn
                .tx
                .send(Outbound::Disconnect(reason.to_owned()))
                .is_ok()
            {
                conn.draining = true;
                sent += 1;
            }
        }
        let open = hub.active();
        drop(hub);
        shared.emit(SandboxEvent::ConnectionsChanged { open });
        sent
    }

    /// Sends the payload in an `envelope_type` envelope to one random active connection and
    /// waits for its ack. `None` when no connection is open.
    pub async fn deliver(
        &self,
        envelope_type: &str,
        payload: Value,
        accepts_response_payload: bool,
        timeout: Duration,
    ) -> Option<SocketAck> {
        let envelope_id = format!(
            "{}-{}-{}-{}-{}",
            random_hex(4),
            random_hex(2),
            random_hex(2),
            random_hex(2),
            random_hex(6)
        );
        let mut envelope = json!({
            "envelope_id": envelope_id,
            "type": envelope_type,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
        });
        // Events API envelopes say whether this is a retry; the sandbox sends each event once.
        if envelope_type == "events_api" {
            envelope["retry_attempt"] = json!(0);
            envelope["retry_reason"] = json!("");
        }
        let envelope = envelope.to_string();
        let (tx, rx) = oneshot::channel();
        {
            let mut hub = lock(&self.inner);
            let candidates: Vec<&Conn> = hub.conns.values().filter(|c| !c.draining).collect();
            if candidates.is_empty() {
                return None;
            }
            let pick = rand::rng().random_range(0..candidates.len());
            // A send error means the connection just closed; the ack then times out, as on Slack.
            let _ = candidates[pick].tx.send(Outbound::Text(envelope));
            hub.pending.insert(envelope_id.clone(), tx);
        }
        let started = Instant::now();
        let acked = tokio::time::timeout(timeout, rx).await;
        let latency = started.elapsed();
        match acked {
            Ok(Ok(payload)) => Some(SocketAck::Acked { latency, payload }),
            _ => {
                lock(&self.inner).pending.remove(&envelope_id);
                Some(SocketAck::TimedOut { latency })
            }
        }
    }

    fn ack(&self, envelope_id: &str, payload: Option<Value>) {
        if let Some(tx) = lock(&self.inner).pending.remove(envelope_id) {
            let _ = tx.send(payload);
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct TicketQuery {
    ticket: Option<String>,
}

pub(crate) async fn upgrade(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<TicketQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let valid = q.ticket.is_some_and(|t| {
        lock(&shared.sockets.inner)
            .tickets
            .remove(&t)
            .is_some_and(|at| at.elapsed() < TICKET_TTL)
    });
    if !valid {
        return (StatusCode::UNAUTHORIZED, "invalid or used ticket").into_response();
    }
    ws.on_upgrade(move |socket| serve(shared, socket))
}

fn host(shared: &Shared) -> String {
    format!("sandbox-{}", shared.addr.port())
}

async fn serve(shared: Arc<Shared>, mut ws: WebSocket) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (id, open) = {
        let mut hub = lock(&shared.sockets.inner);
        hub.next_id += 1;
        let id = hub.next_id;
        hub.conns.insert(
            id,
            Conn {
                tx,
                draining: false,
            },
        );
        (id, hub.active())
    };
    shared.emit(SandboxEvent::ConnectionsChanged { open });
    let hello = json!({
        "type": "hello",
        "num_connections": open,
        "connection_info": {"app_id": shared.config.app_id},
        "debug_info": {"host": host(&shared), "build_number": 1, "approximate_connection_time": 3600},
    });
    if ws
        .send(WsMessage::Text(hello.to_string().into()))
        .await
        .is_ok()
    {
        run(&shared, &mut ws, &mut rx).await;
    }
    let open = {
        let mut hub = lock(&shared.sockets.inner);
        hub.conns.remove(&id);
        hub.active()
    };
    shared.emit(SandboxEvent::ConnectionsChanged { open });
}

async fn run(shared: &Shared, ws: &mut WebSocket, rx: &mut mpsc::UnboundedReceiver<Outbound>) {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    let mut close_at: Option<tokio::time::Instant> = None;
    loop {
        let deadline = close_at;
        tokio::select! {
            _ = shared.cancel.cancelled() => break,
            _ = async { if let Some(d) = deadline { tokio::time::sleep_until(d).await } else { std::future::pending().await } } => break,
            out = rx.recv() => {
                let text = match out {
                    Some(Outbound::Text(t)) => t,
                    Some(Outbound::Disconnect(reason)) => {
                        close_at = Some(tokio::time::Instant::now() + DISCONNECT_GRACE);
                        json!({"type": "disconnect", "reason": reason,
                            "debug_info": {"host": host(shared)}}).to_string()
                    }
                    None => break,
                };
                if ws.send(WsMessage::Text(text.into())).await.is_err() {
                    return;
                }
            }
            _ = ping.tick() => {
                if ws.send(WsMessage::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
            incoming = ws.recv() => match incoming {
                Some(Ok(WsMessage::Text(t))) => on_text(shared, t.as_str()),
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                // Pings are answered by the WebSocket layer itself.
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = ws.send(WsMessage::Close(None)).await;
}

/// An ack is `{"envelope_id": "...", "payload": {...}?}`; anything else is ignored.
fn on_text(shared: &Shared, text: &str) {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        tracing::debug!("sandbox socket: ignoring non-JSON frame");
        return;
    };
    if let Some(id) = v.get("envelope_id").and_then(Value::as_str) {
        let payload = v.get("payload").filter(|p| !p.is_null()).cloned();
        shared.sockets.ack(id, payload);
    }
}
