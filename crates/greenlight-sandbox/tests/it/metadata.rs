//! Message metadata and conversations.history paging, as Slack documents them.

use greenlight_sandbox::SandboxHandle;
use serde_json::{Value, json};

use crate::helpers::*;

fn meta(id: &str) -> Value {
    json!({"event_type": "approval_requested", "event_payload": {"request_id": id, "amount": 120}})
}

async fn history(sb: &SandboxHandle, args: Value) -> Value {
    let mut args = args;
    args["channel"] = json!("C0DEPLOY");
    let a = api(sb, "conversations.history", args).await;
    assert_eq!(a.body["ok"], true, "{}", a.body);
    a.body
}

fn tss(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["ts"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn metadata_is_stored_and_returned_by_history_only_when_asked() {
    let sb = start().await;
    let posted = api(
        &sb,
        "chat.postMessage",
        json!({"channel": "C0DEPLOY", "text": "Deploy?", "metadata": meta("req_1")}),
    )
    .await;
    assert_eq!(posted.body["ok"], true, "{}", posted.body);
    // Slack echoes metadata in the answer's message.
    assert_eq!(posted.body["message"]["metadata"], meta("req_1"));
    let ts = posted.body["ts"].as_str().unwrap().to_owned();
    assert_eq!(
        sb.message("C0DEPLOY", &ts).unwrap().metadata,
        Some(meta("req_1"))
    );

    let plain = history(&sb, json!({})).await;
    assert!(plain["messages"][0].get("metadata").is_none(), "{plain}");
    let full = history(&sb, json!({"include_all_metadata": true})).await;
    assert_eq!(full["messages"][0]["metadata"], meta("req_1"));

    // chat.update replaces metadata only when given; a text-only edit keeps it.
    let edited = api(
        &sb,
        "chat.update",
        json!({"channel": "C0DEPLOY", "ts": ts, "text": "Approved", "metadata": meta("req_2")}),
    )
    .await;
    assert_eq!(edited.body["message"]["metadata"], meta("req_2"));
    api(
        &sb,
        "chat.update",
        json!({"channel": "C0DEPLOY", "ts": ts, "text": "Approved!"}),
    )
    .await;
    assert_eq!(
        sb.message("C0DEPLOY", &ts).unwrap().metadata,
        Some(meta("req_2"))
    );
}

#[tokio::test]
async fn form_bodies_carry_metadata_as_a_json_string_and_bad_metadata_is_refused() {
    let sb = start().await;
    let form = [
        ("token", BOT.to_owned()),
        ("channel", "C0DEPLOY".to_owned()),
        ("text", "hi".to_owned()),
        ("metadata", meta("req_9").to_string()),
    ];
    let res: Value = client()
        .post(format!("{}chat.postMessage", sb.api_url()))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(res["ok"], true, "{res}");
    let ts = res["ts"].as_str().unwrap();
    assert_eq!(
        sb.message("C0DEPLOY", ts).unwrap().metadata,
        Some(meta("req_9"))
    );
    // Read back over a GET with a query string, as python-slack-sdk does.
    let got: Value = client()
        .get(format!(
            "{}conversations.history?channel=C0DEPLOY&include_all_metadata=1",
            sb.api_url()
        ))
        .bearer_auth(BOT)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["messages"][0]["metadata"], meta("req_9"));

    for (metadata, error) in [
        (json!("{not json"), "invalid_metadata_format"),
        (json!([1, 2]), "invalid_metadata_format"),
        (json!({"event_payload": {}}), "invalid_metadata_schema"),
        (
            json!({"event_type": "x", "event_payload": "nope"}),
            "invalid_metadata_schema",
        ),
    ] {
        let a = api(
            &sb,
            "chat.postMessage",
            json!({"channel": "C0DEPLOY", "text": "x", "metadata": metadata}),
        )
        .await;
        assert_eq!(a.body["error"], error, "{metadata}: {}", a.body);
    }
}

#[tokio::test]
async fn history_pages_newest_first_with_a_cursor_until_has_more_is_false() {
    let sb = start().await;
    let mut posted = Vec::new();
    for i in 0..5 {
        let a = api(
            &sb,
            "chat.postMessage",
            json!({"channel": "C0DEPLOY", "text": format!("m{i}")}),
        )
        .await;
        posted.push(a.body["ts"].as_str().unwrap().to_owned());
    }
    let newest_first: Vec<String> = posted.iter().rev().cloned().collect();

    let first = history(&sb, json!({"limit": 2})).await;
    assert_eq!(tss(&first), newest_first[..2]);
    assert_eq!(first["has_more"], true);
    let cursor = first["response_metadata"]["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = history(&sb, json!({"limit": 2, "cursor": cursor})).await;
    assert_eq!(tss(&second), newest_first[2..4]);
    let cursor = second["response_metadata"]["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let last = history(&sb, json!({"limit": 2, "cursor": cursor})).await;
    assert_eq!(tss(&last), newest_first[4..]);
    assert_eq!(last["has_more"], false);
    assert!(last.get("response_metadata").is_none(), "{last}");

    // A broken cursor is Slack's invalid_cursor.
    let bad = api(
        &sb,
        "conversations.history",
        json!({"channel": "C0DEPLOY", "cursor": "zzz"}),
    )
    .await;
    assert_eq!(bad.body["error"], "invalid_cursor");
}

#[tokio::test]
async fn oldest_and_latest_bound_the_range_exclusively_unless_inclusive() {
    let sb = start().await;
    let mut ts = Vec::new();
    for i in 0..4 {
        let a = api(
            &sb,
            "chat.postMessage",
            json!({"channel": "C0DEPLOY", "text": format!("m{i}")}),
        )
        .await;
        ts.push(a.body["ts"].as_str().unwrap().to_owned());
    }
    let between = history(&sb, json!({"oldest": ts[0], "latest": ts[3]})).await;
    assert_eq!(tss(&between), vec![ts[2].clone(), ts[1].clone()]);
    assert_eq!(between["latest"], ts[3].as_str());
    let inclusive = history(
        &sb,
        json!({"oldest": ts[0], "latest": ts[3], "inclusive": true}),
    )
    .await;
    assert_eq!(tss(&inclusive).len(), 4);

    // Slack's recipe for one message: latest = its ts, inclusive, limit 1.
    let one = history(
        &sb,
        json!({"latest": ts[1], "inclusive": "true", "limit": 1}),
    )
    .await;
    assert_eq!(tss(&one), vec![ts[1].clone()]);
    assert_eq!(one["has_more"], true);

    let bad = api(
        &sb,
        "conversations.history",
        json!({"channel": "C0DEPLOY", "latest": "soon"}),
    )
    .await;
    assert_eq!(bad.body["error"], "invalid_ts_latest");
    let bad = api(
        &sb,
        "conversations.history",
        json!({"channel": "C0DEPLOY", "oldest": "-1"}),
    )
    .await;
    assert_eq!(bad.body["error"], "invalid_ts_oldest");
}
