//! Block Kit checks (the limits Slack enforces with `invalid_blocks`) and button lookup.

use std::collections::HashSet;

use rand::Rng;
use serde_json::{Map, Value};

const KNOWN_BLOCKS: &[&str] = &[
    "section",
    "header",
    "divider",
    "actions",
    "context",
    "image",
    "input",
    "rich_text",
    "file",
    "video",
    "markdown",
];

/// Checks `blocks` against Slack's limits. On failure returns Slack-style messages such as
/// `[ERROR] must be less than 76 characters [json-pointer:/blocks/0/elements/0/text/text]`.
pub fn validate(blocks: &Value, max_blocks: usize) -> Result<(), Vec<String>> {
    let mut errs = Errors::default();
    let Some(list) = blocks.as_array() else {
        errs.push("/blocks", "must be an array");
        return errs.finish();
    };
    if list.len() > max_blocks {
        errs.push("/blocks", &format!("must have at most {max_blocks} items"));
    }
    let mut block_ids = HashSet::new();
    for (i, block) in list.iter().enumerate() {
        let at = format!("/blocks/{i}");
        let Some(obj) = block.as_object() else {
            errs.push(&at, "must be an object");
            continue;
        };
        if let Some(id) = obj.get("block_id") {
            match id.as_str() {
                Some(s) if s.chars().count() > 255 => errs.push(
                    &format!("{at}/block_id"),
                    "must be less than 256 characters",
                ),
                Some(s) if !block_ids.insert(s.to_owned()) => {
                    errs.push(&format!("{at}/block_id"), "duplicate block_id")
                }
                Some(_) => {}
                None => errs.push(&format!("{at}/block_id"), "must be a string"),
            }
        }
        match obj.get("type").and_then(Value::as_str) {
            Some("section") => section(obj, &at, &mut errs),
            Some("header") => {
                text_object(obj.get("text"), &format!("{at}/text"), 150, true, &mut errs)
            }
            Some("actions") => actions(obj, &at, &mut errs),
            Some("context") => match obj.get("elements").and_then(Value::as_array) {
                Some(els) if !els.is_empty() && els.len() <= 10 => {}
                _ => errs.push(&format!("{at}/elements"), "must have 1 to 10 items"),
            },
            Some(t) if KNOWN_BLOCKS.contains(&t) => {}
            Some(_) => errs.push(&format!("{at}/type"), "unknown block type"),
            None => errs.push(&format!("{at}/type"), "missing required field: type"),
        }
    }
    errs.finish()
}

fn section(obj: &Map<String, Value>, at: &str, errs: &mut Errors) {
    let text = obj.get("text");
    let fields = obj.get("fields");
    if text.is_none() && fields.is_none() {
        errs.push(at, "must provide either text or fields");
    }
    if text.is_some() {
        text_object(text, &format!("{at}/text"), 3000, false, errs);
    }
    if let Some(fields) = fields {
        match fields.as_array() {
            Some(list) if list.len() <= 10 => {
                for (j, f) in list.iter().enumerate() {
                    text_object(Some(f), &format!("{at}/fields/{j}"), 2000, false, errs);
                }
            }
            _ => errs.push(
                &format!("{at}/fields"),
                "must be an array of at most 10 items",
            ),
        }
    }
    if let Some(acc) = obj.get("accessory")
        && acc.get("type").and_then(Value::as_str) == Some("button")
    {
        button(acc, &format!("{at}/accessory"), errs);
    }
}

fn actions(obj: &Map<String, Value>, at: &str, errs: &mut Errors) {
    let Some(els) = obj.get("elements").and_then(Value::as_array) else {
        errs.push(
            &format!("{at}/elements"),
            "missing required field: elements",
        );
        return;
    };
    if els.is_empty() || els.len() > 25 {
        errs.push(&format!("{at}/elements"), "must have 1 to 25 items");
    }
    let mut action_ids = HashSet::new();
    for (j, el) in els.iter().enumerate() {
        let el_at = format!("{at}/elements/{j}");
        if let Some(id) = el.get("action_id").and_then(Value::as_str)
            && !action_ids.insert(id.to_owned())
        {
            errs.push(&format!("{el_at}/action_id"), "duplicate action_id");
        }
        match el.get("type").and_then(Value::as_str) {
            Some("button") => button(el, &el_at, errs),
            Some(_) => {}
            None => errs.push(&format!("{el_at}/type"), "missing required field: type"),
        }
    }
}

fn button(el: &Value, at: &str, errs: &mut Errors) {
    text_object(el.get("text"), &format!("{at}/text"), 75, true, errs);
    if let Some(v) = el.get("value") {
        match v.as_str() {
            Some(s) if s.chars().count() > 2000 => {
                errs.push(&format!("{at}/value"), "must be less than 2001 characters")
            }
            Some(_) => {}
            None => errs.push(&format!("{at}/value"), "must be a string"),
        }
    }
    if let Some(id) = el.get("action_id").and_then(Value::as_str)
        && id.chars().count() > 255
    {
        errs.push(
            &format!("{at}/action_id"),
            "must be less than 256 characters",
        );
    }
    match el.get("style").map(Value::as_str) {
        None | Some(Some("primary" | "danger")) => {}
        Some(_) => errs.push(&format!("{at}/style"), "must be one of: primary, danger"),
    }
    if let Some(confirm) = el.get("confirm") {
        let c = format!("{at}/confirm");
        text_object(confirm.get("title"), &format!("{c}/title"), 100, true, errs);
        text_object(confirm.get("text"), &format!("{c}/text"), 300, false, errs);
        text_object(
            confirm.get("confirm"),
            &format!("{c}/confirm"),
            30,
            true,
            errs,
        );
        text_object(confirm.get("deny"), &format!("{c}/deny"), 30, true, errs);
    }
}

fn text_object(v: Option<&Value>, at: &str, max: usize, plain_only: bool, errs: &mut Errors) {
    let Some(obj) = v.and_then(Value::as_object) else {
        errs.push(at, "must be a text object");
        return;
    };
    match obj.get("type").and_then(Value::as_str) {
        Some("plain_text") => {}
        Some("mrkdwn") if !plain_only => {}
        _ if plain_only => errs.push(&format!("{at}/type"), "must be plain_text"),
        _ => errs.push(&format!("{at}/type"), "must be plain_text or mrkdwn"),
    }
    match obj.get("text").and_then(Value::as_str) {
        Some("") => errs.push(&format!("{at}/text"), "must be more than 0 characters"),
        Some(s) if s.chars().count() > max => errs.push(
            &format!("{at}/text"),
            &format!("must be less than {} characters", max + 1),
        ),
        Some(_) => {}
        None => errs.push(&format!("{at}/text"), "missing required field: text"),
    }
}

#[derive(Default)]
struct Errors(Vec<String>);

impl Errors {
    fn push(&mut self, pointer: &str, msg: &str) {
        self.0
            .push(format!("[ERROR] {msg} [json-pointer:{pointer}]"));
    }

    fn finish(self) -> Result<(), Vec<String>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

/// Fills in the `block_id`s and button `action_id`s the app left out, as Slack does when it
/// stores a message (so clicks always carry both).
pub fn fill_ids(blocks: &mut [Value]) {
    for block in blocks {
        let Some(obj) = block.as_object_mut() else {
            continue;
        };
        if !obj.contains_key("block_id") {
            obj.insert("block_id".into(), Value::String(random_id(5)));
        }
        if let Some(Value::Array(els)) = obj.get_mut("elements") {
            els.iter_mut().for_each(fill_action_id);
        }
        if let Some(acc) = obj.get_mut("accessory") {
            fill_action_id(acc);
        }
    }
}

/// Interactive elements get an action_id; text and image elements are not interactive.
fn fill_action_id(el: &mut Value) {
    let Some(el) = el.as_object_mut() else { return };
    let interactive = match el.get("type").and_then(Value::as_str) {
        Some("mrkdwn" | "plain_text" | "image") | None => false,
        Some(_) => true,
    };
    if interactive && !el.contains_key("action_id") {
        el.insert("action_id".into(), Value::String(random_id(5)));
    }
}

fn random_id(n: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect()
}

/// A button found in a message: its block and the element itself.
pub struct FoundButton<'a> {
    pub block_id: &'a str,
    pub element: &'a Value,
}

/// Finds the button with `action_id` in actions blocks or section accessories, optionally
/// only in the block `block_id` and only one whose `value` is `value` (a Home tab lists many
/// requests, each with the same action_ids).
pub fn find_button<'a>(
    blocks: &'a [Value],
    action_id: &str,
    block_id: Option<&str>,
    value: Option<&str>,
) -> Option<FoundButton<'a>> {
    blocks.iter().find_map(|block| {
        let bid = block.get("block_id").and_then(Value::as_str).unwrap_or("");
        if block_id.is_some_and(|want| want != bid) {
            return None;
        }
        let mut candidates: Vec<&Value> = Vec::new();
        if let Some(els) = block.get("elements").and_then(Value::as_array) {
            candidates.extend(els);
        }
        if let Some(acc) = block.get("accessory") {
            candidates.push(acc);
        }
        candidates
            .into_iter()
            .find(|el| {
                el.get("type").and_then(Value::as_str) == Some("button")
                    && el.get("action_id").and_then(Value::as_str) == Some(action_id)
                    && value.is_none_or(|v| el.get("value").and_then(Value::as_str) == Some(v))
            })
            .map(|element| FoundButton {
                block_id: bid,
                element,
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn btn(text: &str) -> Value {
        json!({"type":"button","action_id":"approve","text":{"type":"plain_text","text":text},"value":"x"})
    }

    #[test]
    fn accepts_an_approval_message() {
        let blocks = json!([
            {"type":"header","text":{"type":"plain_text","text":"Deploy"}},
            {"type":"section","text":{"type":"mrkdwn","text":"*hi*"},"fields":[{"type":"mrkdwn","text":"a"}]},
            {"type":"divider"},
            {"type":"actions","elements":[btn("Approve")]},
        ]);
        assert_eq!(validate(&blocks, 50), Ok(()));
    }

    #[test]
    fn rejects_limits_with_json_pointers() {
        let long = "x".repeat(76);
        let blocks = json!([{"type":"actions","elements":[btn(&long)]}, {"type":"nope"}]);
        let errs = validate(&blocks, 50).unwrap_err();
        assert!(
            errs[0].contains("/blocks/0/elements/0/text/text"),
            "{errs:?}"
        );
        assert!(errs[1].contains("/blocks/1/type"), "{errs:?}");
        let too_many: Vec<Value> = (0..51).map(|_| json!({"type":"divider"})).collect();
        assert!(validate(&Value::Array(too_many), 50).is_err());
        assert!(validate(&json!({"type":"divider"}), 50).is_err());
        let section = json!([{"type":"section","text":{"type":"mrkdwn","text":"y".repeat(3001)}}]);
        assert!(validate(&section, 50).is_err());
    }

    #[test]
    fn fills_missing_ids_so_buttons_can_be_found() {
        let mut blocks = vec![json!({"type":"actions","elements":[
            {"type":"button","text":{"type":"plain_text","text":"Go"}}]})];
        fill_ids(&mut blocks);
        let bid = blocks[0]["block_id"].as_str().unwrap().to_owned();
        let aid = blocks[0]["elements"][0]["action_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let found = find_button(&blocks, &aid, Some(&bid), None).unwrap();
        assert_eq!(found.block_id, bid);
        assert!(find_button(&blocks, &aid, Some("other"), None).is_none());
    }

    #[test]
    fn picks_a_button_by_value_among_same_action_ids() {
        let row = |v: &str| {
            json!({"type":"section","text":{"type":"mrkdwn","text":v},
            "accessory":{"type":"button","action_id":"approve","value":v,
            "text":{"type":"plain_text","text":"Approve"}}})
        };
        let blocks = vec![row("req_1"), row("req_2")];
        let found = find_button(&blocks, "approve", None, Some("req_2")).unwrap();
        assert_eq!(found.element["value"], "req_2");
        assert!(find_button(&blocks, "approve", None, Some("req_3")).is_none());
    }
}
