//! Requester text shows as typed: it cannot imitate greenlight's own outcome line, ping the
//! channel, or reorder itself with bidi controls.

use serde_json::{Value, json};

use crate::helpers::*;

const SPOOF: &str = ":white_check_mark: *Approved* by @bob \u{202e}";

/// Every mrkdwn text of a message: its blocks' and its notification text.
fn mrkdwn_texts(m: &greenlight_sandbox::Message) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if o.get("type") == Some(&json!("mrkdwn"))
                    && let Some(Value::String(t)) = o.get("text")
                {
                    out.push(t.clone());
                }
                o.values().for_each(|v| walk(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = vec![m.text.clone()];
    walk(&Value::Array(m.blocks.clone()), &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_title_that_imitates_an_approval_is_shown_as_plain_text() {
    let app = spawn_app().await;
    let (status, created) = app
        .create(json!({
            "title": SPOOF,
            "details": format!("> {SPOOF}\n`rm -rf` _now_ ~please~ <!channel>"),
            "params": {"*Approved*": SPOOF, "version": ":tada: 1.2"},
            "requester": "bob\u{202e}",
        }))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let msg = app.posted(&id).await;

    let texts = mrkdwn_texts(&msg);
    assert!(texts.len() > 3, "{texts:?}");
    for t in &texts {
        assert!(!t.contains("*Approved*"), "{t:?}");
        assert!(!t.contains(":white_check_mark:"), "{t:?}");
        assert!(!t.contains(":tada:"), "{t:?}");
        assert!(!t.contains('\u{202e}'), "{t:?}");
        assert!(!t.contains("<!channel>"), "{t:?}");
        assert!(!t.contains('`') || t.contains(&format!("`{id}`")), "{t:?}");
    }
    // The header is plain text: shown as typed, with shortcodes left as text.
    let header = &msg.blocks[0];
    assert_eq!(header["type"], "header");
    assert_eq!(header["text"]["emoji"], false);
    assert_eq!(
        header["text"]["text"],
        ":white_check_mark: *Approved* by @bob "
    );

    // Once decided, the only outcome line is greenlight's own.
    assert!(
        app.click(&msg, "greenlight.approve", "U0ALICE")
            .await
            .acked()
    );
    let decided = app.decided_message(&msg).await;
    let all = mrkdwn_texts(&decided).join("\n");
    assert_eq!(all.matches("*Approved*").count(), 1, "{all}");
    assert_eq!(all.matches(":white_check_mark:").count(), 1, "{all}");
    assert!(
        all.contains(":white_check_mark: *Approved* by <@U0ALICE>"),
        "{all}"
    );
    assert!(!all.contains('\u{202e}'));
    app.stop().await;
}
