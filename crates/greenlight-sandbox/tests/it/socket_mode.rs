use std::time::Duration;

use futures::{SinkExt, StreamExt};
use greenlight_sandbox::{Click, SandboxConfig, SandboxHandle, Transport};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use crate::helpers::*;

const APP: &str = "xapp-1-sandbox-app-token";

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub async fn socket_url(sb: &SandboxHandle) -> String {
    let a = api_with_token(sb, "apps.connections.open", json!({}), Some(APP)).await;
    assert_eq!(a.body["ok"], true, "{}", a.body);
    a.body["url"].as_str().unwrap().to_owned()
}

/// Connects and reads the hello.
pub async fn connect(sb: &SandboxHandle) -> (Socket, Value) {
    let (mut ws, _) = connect_async(socket_url(sb).await)
        .await
        .expect("socket connects");
    let hello = next_json(&mut ws).await;
    (ws, hello)
}

/// The next text frame as JSON (pings are skipped).
pub async fn next_json(ws: &mut Socket) -> Value {
    loop {
        let frame = tokio::time::timeout(5 * SECOND, ws.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .expect("frame");
        if let Ws::Text(t) = frame {
            return serde_json::from_str(t.as_str()).expect("json frame");
        }
    }
}

pub async fn ack(ws: &mut Socket, envelope: &Value, payload: Option<Value>) {
    let mut a = json!({"envelope_id": envelope["envelope_id"]});
    if let Some(p) = payload {
        a["payload"] = p;
    }
    ws.send(Ws::Text(a.to_string().into())).await.unwrap();
}

#[tokio::test]
async fn hello_then_clicks_arrive_as_envelopes() {
    let sb = start().await;
    let (mut ws, hello) = connect(&sb).await;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["num_connections"], 1);
    assert_eq!(hello["connection_info"]["app_id"], "A0GREENLIGHT");
    assert!(hello["debug_info"]["host"].is_string());
    assert_eq!(sb.open_connections(), 1);

    let ts = post_approval(&sb).await;
    let clicking = {
        let sb = sb.clone();
        let ts = ts.clone();
        tokio::spawn(async move {
            sb.click(Click::new("C0DEPLOY", &ts, "approve", "U0ALICE"))
                .await
        })
    };
    let envelope = next_json(&mut ws).await;
    assert_eq!(envelope["type"], "interactive");
    assert_eq!(envelope["accepts_response_payload"], false);
    assert!(envelope["envelope_id"].is_string());
    // Socket Mode payloads are plain JSON objects, not form-encoded.
    assert_eq!(envelope["payload"]["type"], "block_actions");
    assert_eq!(envelope["payload"]["actions"][0]["action_id"], "approve");
    tokio::time::sleep(Duration::from_millis(80)).await;
    ack(&mut ws, &envelope, None).await;
    let outcome = clicking.await.unwrap().unwrap();
    assert_eq!(
        (outcome.transport, outcome.status),
        (Transport::SocketMode, 200)
    );
    assert!(outcome.latency >= Duration::from_millis(80));
    assert!(outcome.acked());

    // The ticket was single use.
    let url = socket_url(&sb).await;
    connect_async(url.clone()).await.expect("first use");
    assert!(connect_async(url).await.is_err());
}

#[tokio::test]
async fn missing_acks_time_out_and_view_acks_carry_errors() {
    let sb = start_with(SandboxConfig {
        ack_timeout: Duration::from_millis(300),
        ..SandboxConfig::for_tests()
    })
    .await;
    let (mut ws, _) = connect(&sb).await;
    let ts = post_approval(&sb).await;
    let outcome = sb
        .click(Click::new("C0DEPLOY", &ts, "deny", "U0BOB"))
        .await
        .unwrap();
    assert!(outcome.timed_out);
    assert_eq!(outcome.status, 0);
    let envelope = next_json(&mut ws).await;

    // Open a modal with the click's trigger, then submit it.
    let trigger = envelope["payload"]["trigger_id"].clone();
    let view = json!({"type": "modal", "callback_id": "deny", "title": {"type": "plain_text", "text": "Deny"},
        "blocks": [{"type": "input", "block_id": "reason", "label": {"type": "plain_text", "text": "Why"},
                    "element": {"type": "plain_text_input", "action_id": "text"}}]});
    let opened = api(
        &sb,
        "views.open",
        json!({"trigger_id": trigger, "view": view}),
    )
    .await;
    let view_id = opened.body["view"]["id"].as_str().unwrap().to_owned();
    let submitting = {
        let sb = sb.clone();
        let view_id = view_id.clone();
        tokio::spawn(async move { sb.submit_view(&view_id, "U0BOB", [("reason", "")]).await })
    };
    let envelope = next_json(&mut ws).await;
    assert_eq!(envelope["accepts_response_payload"], true);
    assert_eq!(envelope["payload"]["type"], "view_submission");
    ack(
        &mut ws,
        &envelope,
        Some(json!({"response_action": "errors", "errors": {"reason": "Required"}})),
    )
    .await;
    let outcome = submitting.await.unwrap().unwrap();
    assert_eq!(outcome.json().unwrap()["errors"]["reason"], "Required");
    assert_eq!(sb.views()[0].errors, json!({"reason": "Required"}));
    assert!(sb.views()[0].open);
}

#[tokio::test]
async fn each_payload_goes_to_one_of_several_connections() {
    let sb = start().await;
    let (a, _) = connect(&sb).await;
    let (b, hello_b) = connect(&sb).await;
    assert_eq!(hello_b["num_connections"], 2);
    assert_eq!(sb.open_connections(), 2);
    let ts = post_approval(&sb).await;

    // Both fake replicas ack whatever they get and count it.
    let (count_tx, mut count_rx) = tokio::sync::mpsc::unbounded_channel();
    for (name, mut ws) in [("a", a), ("b", b)] {
        let tx = count_tx.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = ws.next().await {
                if let Ws::Text(t) = frame {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    if v["envelope_id"].is_string() {
                        ack(&mut ws, &v, None).await;
                        let _ = tx.send(name);
                    }
                }
            }
        });
    }
    for _ in 0..24 {
        let o = sb
            .click(Click::new("C0DEPLOY", &ts, "approve", "U0ALICE"))
            .await
            .unwrap();
        assert!(o.acked());
    }
    let mut seen = (0, 0);
    for _ in 0..24 {
        match count_rx.recv().await.unwrap() {
            "a" => seen.0 += 1,
            _ => seen.1 += 1,
        }
    }
    assert_eq!(seen.0 + seen.1, 24, "each payload delivered exactly once");
    assert!(seen.0 > 0 && seen.1 > 0, "spread over both: {seen:?}");
}

#[tokio::test]
async fn disconnect_requests_and_pings() {
    let sb = start().await;
    let (mut ws, _) = connect(&sb).await;
    ws.send(Ws::Ping(b"hi".to_vec().into())).await.unwrap();
    let pong = loop {
        match tokio::time::timeout(5 * SECOND, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Ws::Pong(p) => break p,
            _ => continue,
        }
    };
    assert_eq!(pong.as_ref(), b"hi");

    let res: Value = client()
        .get(format!("{}/_sandbox/connections", sb.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(res["open"], 1);

    assert_eq!(sb.disconnect_all("refresh_requested"), 1);
    let d = next_json(&mut ws).await;
    assert_eq!(d["type"], "disconnect");
    assert_eq!(d["reason"], "refresh_requested");
    assert!(d["debug_info"]["host"].is_string());
    // A connection asked to leave takes no new payloads; clicks fall back to HTTP.
    assert_eq!(sb.open_connections(), 0);
    let (_ws2, hello) = connect(&sb).await;
    assert_eq!(hello["num_connections"], 1);
    assert_eq!(sb.open_connections(), 1);
}

#[tokio::test]
async fn page_and_live_events() {
    let sb = start().await;
    let http = client();
    let page = http.get(sb.url()).send().await.unwrap();
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("greenlight sandbox"));
    assert!(
        !html.contains("https://"),
        "the page must not load anything from the network"
    );

    let mut events = http
        .get(format!("{}/_sandbox/events", sb.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    post_approval(&sb).await;
    let mut seen = String::new();
    while !seen.contains("message_posted") {
        let chunk = tokio::time::timeout(5 * SECOND, events.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("\"channel\":\"C0DEPLOY\""));
}
