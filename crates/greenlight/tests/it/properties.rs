//! Property tests against the edges that take outside input: the config loader, the API's
//! request bodies and queries, and the MCP endpoint's bodies. Bad input is never a panic or a
//! 5xx; it is a 4xx with a stable code, and it changes nothing.

use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config as Cases, TestCaseError, TestRunner};
use reqwest::Method;
use serde_json::{Value, json};

use greenlight::config::Config;
use greenlight::domain::SystemClock;

use crate::helpers::*;

const EXAMPLE: &str = include_str!("../../../../examples/greenlight.toml");

/// Every code the API answers a 4xx with.
const KNOWN_CODES: &[&str] = &[
    "invalid_request",
    "invalid_json",
    "invalid_query",
    "invalid_path",
    "unsupported_media_type",
    "payload_too_large",
    "unknown_workflow",
    "workflow_required",
    "idempotency_key_reused",
    "not_pending",
    "already_voted",
    "not_an_approver",
    "self_approval",
    "channel_override_not_allowed",
    "callback_url_not_allowed",
    "not_found",
    "unauthorized",
    "forbidden",
    "method_not_allowed",
    "not_request_owner",
    "rate_limited",
    "too_many_waiters",
    "too_many_signals",
    "timeout",
];

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Cases {
        cases,
        failure_persistence: None,
        ..Cases::default()
    })
}

// ---------------------------------------------------------------------------------------------
// The config loader

/// Lines a config is made of: known sections and keys with values of every TOML shape, and
/// noise.
fn toml_line() -> impl Strategy<Value = String> {
    let section = prop_oneof![
        Just("[slack]"),
        Just("[delivery]"),
        Just("[alerts]"),
        Just("[[workflow]]"),
        Just("[[workflow.rule]]"),
        Just("[[workflow.on_approve]]"),
        Just("[[workflow.on_deny]]"),
        Just("[workflow]"),
        Just("[[slack]]"),
    ]
    .prop_map(str::to_owned);
    let key = prop_oneof![
        Just("listen"),
        Just("database_url"),
        Just("api_url"),
        Just("allow_private_targets"),
        Just("max_attempts"),
        Just("max_age"),
        Just("backoff_base"),
        Just("backoff_max"),
        Just("timeout"),
        Just("slack_posts_per_second"),
        Just("slack_post_burst"),
        Just("webhook_secret"),
        Just("channel"),
        Just("name"),
        Just("approvers"),
        Just("approvals_required"),
        Just("allow_self_approval"),
        Just("require_deny_reason"),
        Just("confirm"),
        Just("expires_in"),
        Just("on_expiry"),
        Just("remind_after"),
        Just("escalate_to"),
        Just("allow_channel_override"),
        Just("webhooks"),
        Just("when"),
        Just("decision"),
        Just("method"),
        Just("url"),
        Just("headers"),
        Just("body"),
        Just("nope"),
    ];
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        "\"[ -~]{0,20}\"",
        "'.{0,20}'",
        Just("\"1h\"".to_owned()),
        Just("\"0s\"".to_owned()),
        Just("\"99999999999999999999h\"".to_owned()),
        Just("\"#deploy\"".to_owned()),
        Just("\"U0ALICE\"".to_owned()),
        Just("\"params.amount < 500\"".to_owned()),
        Just("\"https://ci.example.com/{{params.x}}/${TOKEN}\"".to_owned()),
        Just("[\"U0ALICE\", \"S0SRE\", 3]".to_owned()),
        Just("{ A = \"b\", \"c d\" = 1 }".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        "\\[[0-9a-z\", ]{0,20}\\]",
    ];
    prop_oneof![
        3 => (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => section,
        1 => ".{0,30}",
        1 => Just(String::new()),
    ]
}

fn toml_ish() -> impl Strategy<Value = String> {
    proptest::collection::vec(toml_line(), 0..30).prop_map(|lines| lines.join("\n"))
}

/// The example config with a few lines removed, repeated, swapped, replaced or cut.
fn mutated_example() -> impl Strategy<Value = String> {
    let lines: Vec<String> = EXAMPLE.lines().map(str::to_owned).collect();
    let n = lines.len();
    proptest::collection::vec(
        (
            0..n,
            0..n,
            0..5u8,
            toml_line(),
            any::<proptest::sample::Index>(),
        ),
        1..6,
    )
    .prop_map(move |edits| {
        let mut lines = lines.clone();
        for (i, j, kind, line, cut) in edits {
            let (i, j) = (i % lines.len().max(1), j % lines.len().max(1));
            if lines.is_empty() {
                lines.push(line);
                continue;
            }
            match kind {
                0 => {
                    lines.remove(i);
                }
                1 => {
                    let l = lines[i].clone();
                    lines.insert(j, l);
                }
                2 => lines.swap(i, j),
                3 => lines[i] = line,
                _ => {
                    let l = &lines[i];
                    let at = cut.index(l.len() + 1);
                    let at = (0..=at).rev().find(|a| l.is_char_boundary(*a)).unwrap_or(0);
                    lines[i] = l[..at].to_owned();
                }
            }
        }
        lines.join("\n")
    })
}

fn load(path: &std::path::Path, text: &str) -> Result<(), TestCaseError> {
    std::fs::write(path, text).unwrap();
    let p = path.display().to_string();
    // Ok or a typed error; a panic fails the case.
    let _ = Config::load_with(|k| (k == "GREENLIGHT_CONFIG").then(|| p.clone()));
    Ok(())
}

#[test]
fn the_config_loader_never_panics_on_any_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("greenlight.toml");
    // The example itself loads.
    std::fs::write(&path, EXAMPLE).unwrap();
    let p = path.display().to_string();
    Config::load_with(|k| (k == "GREENLIGHT_CONFIG").then(|| p.clone()))
        .expect("the example config loads");
    runner(256)
        .run(&toml_ish(), |text| load(&path, &text))
        .unwrap();
    runner(256)
        .run(&mutated_example(), |text| load(&path, &text))
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// The API

/// Arbitrary JSON, with the API's own field names among random keys. A `callback_url` is only
/// ever one that is refused or is no URL, so no case sends a callback off this machine.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("title".to_owned()),
        Just("details".to_owned()),
        Just("params".to_owned()),
        Just("requester".to_owned()),
        Just("workflow".to_owned()),
        Just("channel".to_owned()),
        Just("expires_in".to_owned()),
        Just("idempotency_key".to_owned()),
        Just("verdict".to_owned()),
        Just("reason".to_owned()),
        Just("by".to_owned()),
        "[a-z_]{1,10}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![
            Just("approve".to_owned()),
            Just("deny".to_owned()),
            Just("deploy".to_owned()),
            Just("1h".to_owned()),
            Just("#deploy".to_owned()),
            Just("U0ALICE".to_owned()),
            "\\PC{0,20}",
            // NUL, which PostgreSQL cannot store (the second probe's finding 2).
            "\\PC{0,5}\\x00\\PC{0,5}",
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 5, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn safe_callback() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("http://127.0.0.1:9/hook")),
        Just(json!("http://[::1]/")),
        Just(json!("http://192.0.2.1/")),
        Just(json!("not a url")),
        Just(json!("ftp://127.0.0.1/")),
        Just(json!(42)),
        Just(Value::Null),
    ]
}

/// Bodies for POST /v1/requests: anything, and near-valid requests with odd fields.
fn create_body() -> impl Strategy<Value = Value> {
    let text = || {
        prop_oneof![
            4 => "\\PC{1,150}".prop_map(Value::String),
            1 => "\\PC{150,300}".prop_map(Value::String),
            1 => "\\PC{0,20}\\x00\\PC{0,20}".prop_map(Value::String),
            1 => json_value(),
        ]
    };
    let near_valid = (
        text(),
        proptest::option::of(prop_oneof![
            3 => proptest::collection::btree_map("\\PC{0,12}", json_value(), 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            1 => json_value(),
        ]),
        proptest::option::of(text()),
        proptest::option::of(prop_oneof![
            4 => Just(json!("1h")),
            1 => Just(json!("0s")),
            1 => Just(json!("-1h")),
            1 => Just(json!("99999999999999999999d")),
            1 => json_value()
        ]),
        proptest::option::of(prop_oneof![3 => Just(json!("deploy")), 1 => json_value()]),
        prop_oneof![3 => Just(None), 1 => safe_callback().prop_map(Some)],
    )
        .prop_map(|(title, params, details, expires, workflow, callback)| {
            let mut o = serde_json::Map::new();
            o.insert("title".into(), title);
            for (k, v) in [
                ("params", params),
                ("details", details),
                ("expires_in", expires),
                ("workflow", workflow),
                ("callback_url", callback),
            ] {
                if let Some(v) = v {
                    o.insert(k.into(), v);
                }
            }
            Value::Object(o)
        });
    prop_oneof![
        1 => json_value().prop_map(|v| match v {
            // Top-level objects never carry a callback here (see `json_value`).
            Value::Object(mut o) => {
                o.remove("callback_url");
                Value::Object(o)
            }
            other => other,
        }),
        2 => near_valid,
    ]
}

/// A raw body: JSON, or text that is not.
#[derive(Debug, Clone)]
enum Body {
    Json(Value),
    Raw(String, &'static str),
}

fn body(json: impl Strategy<Value = Value>) -> impl Strategy<Value = Body> {
    prop_oneof![
        4 => json.prop_map(Body::Json),
        1 => ("\\PC{0,50}", prop_oneof![Just("application/json"), Just("text/plain")])
            .prop_map(|(t, ct)| Body::Raw(t, ct)),
    ]
}

struct Api {
    app: TestApp,
}

impl Api {
    async fn send(&self, method: Method, path: &str, body: Option<&Body>) -> (u16, String) {
        let mut req = self
            .app
            .http
            .request(method, format!("{}{path}", self.app.base))
            .bearer_auth(&self.app.key);
        match body {
            Some(Body::Json(v)) => req = req.json(v),
            Some(Body::Raw(t, ct)) => req = req.header("content-type", *ct).body(t.clone()),
            None => {}
        }
        let res = req.send().await.expect("the server answers");
        let status = res.status().as_u16();
        (status, res.text().await.unwrap())
    }

    async fn audit_len(&self) -> usize {
        self.app.audit().await.len()
    }

    /// Sends and checks the contract: no 5xx; a 4xx is `{"error":{"code","message"}}` with a
    /// known code, and the audit log did not grow.
    async fn check(
        &self,
        method: Method,
        path: &str,
        body: Option<&Body>,
    ) -> Result<u16, TestCaseError> {
        let before = self.audit_len().await;
        let (status, text) = self.send(method.clone(), path, body).await;
        prop_assert!(status < 500, "{method} {path} {body:?}: {status} {text}");
        if (400..500).contains(&status) {
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| TestCaseError::fail(format!("{path}: {status} {text}: {e}")))?;
            let code = v["error"]["code"].as_str().unwrap_or_default();
            prop_assert!(
                KNOWN_CODES.contains(&code),
                "{method} {path} {body:?}: unknown code in {text}"
            );
            prop_assert!(v["error"]["message"].is_string(), "{text}");
            prop_assert_eq!(
                self.audit_len().await,
                before,
                "{} {} {:?} changed the audit log",
                method,
                path,
                body
            );
        }
        Ok(status)
    }
}

fn start() -> (tokio::runtime::Runtime, Arc<Api>) {
    start_on(Backend::Sqlite, |_| {})
}

fn start_with(customize: impl FnOnce(&mut Config)) -> (tokio::runtime::Runtime, Arc<Api>) {
    start_on(Backend::Sqlite, customize)
}

fn start_on(
    backend: Backend,
    customize: impl FnOnce(&mut Config),
) -> (tokio::runtime::Runtime, Arc<Api>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = rt.block_on(async {
        init();
        let sandbox = start_sandbox(&random_secret()).await;
        let db = TestDb::of(backend).await;
        boot(sandbox, db, None, customize, Arc::new(SystemClock)).await
    });
    (rt, Arc::new(Api { app }))
}

/// On both stores: text PostgreSQL cannot hold was a 500 there and a 201 on SQLite.
#[test]
fn request_bodies_never_break_the_api_or_change_anything_when_refused() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        request_bodies_on(backend);
    }
}

fn request_bodies_on(backend: Backend) {
    let (rt, api) = start_on(backend, |_| {});
    let pending = rt.block_on(api.app.create_ok("Deploy"))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let decided = rt.block_on(api.app.create_ok("Rotate"))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    rt.block_on(api.app.call(
        Method::POST,
        &format!("/v1/requests/{decided}/decisions"),
        Some(json!({"verdict": "deny"})),
    ));

    runner(128)
        .run(&body(create_body()), |b| {
            rt.block_on(api.check(Method::POST, "/v1/requests", Some(&b)))
                .map(|_| ())
        })
        .unwrap();

    let id = prop_oneof![
        Just(pending.clone()),
        Just(decided.clone()),
        Just("req_01JD3K6Z7Q8R9S0T1V2W3X4Y5Z".to_owned()),
        "[A-Za-z0-9_%.-]{0,30}",
    ];
    let reason = || {
        proptest::option::of(prop_oneof![
            3 => "\\PC{0,1100}".prop_map(Value::String),
            1 => json_value(),
        ])
    };
    let decision = prop_oneof![
        1 => json_value(),
        3 => (
            prop_oneof![Just(json!("approve")), Just(json!("deny")), json_value()],
            reason(),
        )
            .prop_map(|(verdict, reason)| json!({"verdict": verdict, "reason": reason})),
    ]
    .boxed();
    let cancel = prop_oneof![
        1 => json_value(),
        3 => reason().prop_map(|reason| json!({"reason": reason})),
    ]
    .boxed();
    for (action, bodies) in [("decisions", decision), ("cancel", cancel)] {
        runner(64)
            .run(&(id.clone(), body(bodies)), |(id, b)| {
                let path = format!("/v1/requests/{id}/{action}");
                rt.block_on(api.check(Method::POST, &path, Some(&b)))
                    .map(|_| ())
            })
            .unwrap();
    }
    rt.block_on(Arc::try_unwrap(api).ok().unwrap().app.stop());
}

/// Signal names: a few valid ones (so that sets, updates and deletes meet), near misses, and
/// noise, as a path segment.
fn signal_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "(staging|prod)/(api|db)[0-9]?",
        1 => "[a-z0-9_./:-]{1,100}",
        1 => Just("x".repeat(101)),
        1 => "[A-Za-z0-9 _%./:-]{0,12}",
    ]
}

/// Bodies for POST /v1/signals: anything, and near-valid reports with values up to past 4 KB
/// and odd ttls.
fn signal_body() -> impl Strategy<Value = Value> {
    let value = prop_oneof![
        3 => json_value(),
        1 => (4070usize..4110).prop_map(|n| Value::String("v".repeat(n))),
    ];
    let ttl = prop_oneof![
        Just(Value::Null),
        Just(json!("10m")),
        Just(json!("0s")),
        Just(json!("999d")),
        Just(json!(-1)),
        Just(json!(30)),
        "\\PC{0,8}".prop_map(Value::String),
    ];
    prop_oneof![
        1 => json_value(),
        4 => (signal_name(), value, ttl)
            .prop_map(|(name, value, ttl)| json!({"name": name, "value": value, "ttl": ttl})),
    ]
}

/// Reports past `[limits] max_signals`, deletes of known, unknown and invalid names, and odd
/// bodies: never a 5xx, and a refusal (a full store's 429 `too_many_signals` included) changes
/// nothing.
#[test]
fn signal_reports_and_deletes_never_break_the_api_or_change_anything_when_refused() {
    let (rt, api) = start_with(|c| {
        c.limits.max_signals = 4;
        c.limits.requests_per_minute_per_key = 1_000_000;
    });
    let op = prop_oneof![
        3 => body(signal_body()).prop_map(|b| (Method::POST, "/v1/signals".to_owned(), Some(b))),
        1 => signal_name().prop_map(|n| (Method::DELETE, format!("/v1/signals/{n}"), None)),
        1 => signal_name().prop_map(|n| (Method::GET, format!("/v1/signals/{n}"), None)),
    ];
    let full = std::sync::atomic::AtomicUsize::new(0);
    runner(256)
        .run(&op, |(method, path, b)| {
            let status = rt.block_on(api.check(method, &path, b.as_ref()))?;
            if status == 429 {
                full.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(())
        })
        .unwrap();
    assert!(full.into_inner() > 0, "the cap was never reached");
    let (_, list) = rt.block_on(api.app.call(Method::GET, "/v1/signals?limit=200", None));
    assert!(list["signals"].as_array().unwrap().len() <= 4, "{list}");
    rt.block_on(Arc::try_unwrap(api).ok().unwrap().app.stop());
}

/// Query strings: the known parameters with odd values, and noise.
fn query() -> impl Strategy<Value = String> {
    let pair = (
        prop_oneof![
            Just("limit"),
            Just("after"),
            Just("cursor"),
            Just("status"),
            Just("workflow"),
            Just("before"),
            Just("wait"),
            // `wait`, percent-encoded: the handler and the time limit must read it alike.
            Just("wai%74"),
            Just("x"),
        ],
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            Just("pending".to_owned()),
            Just("req_01JD3K6Z7Q8R9S0T1V2W3X4Y5Z".to_owned()),
            Just("staging/api".to_owned()),
            "[ -~]{0,12}",
        ],
    )
        .prop_map(|(k, v)| format!("{k}={}", urlencoding::encode(&v)));
    prop_oneof![
        3 => proptest::collection::vec(pair, 0..4).prop_map(|p| p.join("&")),
        1 => "[!-~]{0,40}",
    ]
}

#[test]
fn query_strings_never_break_the_lists_or_the_long_poll() {
    let (rt, api) = start();
    rt.block_on(api.app.create_ok("Deploy"));
    // A decided request: its long-poll answers at once, whatever the wait.
    let decided = rt.block_on(api.app.create_ok("Rotate"))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    rt.block_on(api.app.call(
        Method::POST,
        &format!("/v1/requests/{decided}/decisions"),
        Some(json!({"verdict": "deny"})),
    ));
    let long_poll = format!("/v1/requests/{decided}");
    for path in ["/v1/requests", "/v1/audit", "/v1/signals", &long_poll] {
        runner(96)
            .run(&query(), |q| {
                let status = rt.block_on(api.check(Method::GET, &format!("{path}?{q}"), None))?;
                prop_assert!(status == 200 || status == 400, "{path}?{q}: {status}");
                Ok(())
            })
            .unwrap();
    }
    rt.block_on(Arc::try_unwrap(api).ok().unwrap().app.stop());
}

// ---------------------------------------------------------------------------------------------
// The MCP endpoint

/// What a body sent to `POST /mcp` must get.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// It is not one JSON-RPC message: HTTP 400 with a JSON-RPC parse error.
    ParseError,
    /// A message, or something shaped like one: anything but a 5xx.
    Answer,
}

/// A JSON-RPC call with odd parts. No tool that waits: no `wait_seconds` (`json_value`'s keys
/// cannot spell it) and no `permission_prompt`.
fn mcp_message() -> impl Strategy<Value = Value> {
    (
        prop_oneof![3 => Just(json!(1)), 1 => Just(json!("a")), 1 => json_value()],
        prop_oneof![
            Just("tools/call"),
            Just("tools/list"),
            Just("ping"),
            Just("initialize"),
            Just("nope"),
        ],
        prop_oneof![
            Just("request_approval"),
            Just("get_approval"),
            Just("cancel_approval"),
            Just("list_pending_approvals"),
            Just("nope"),
        ],
        json_value(),
    )
        .prop_map(|(id, method, tool, arguments)| {
            json!({"jsonrpc": "2.0", "id": id, "method": method,
                   "params": {"name": tool, "arguments": arguments}})
        })
}

/// Bodies for `POST /mcp`: calls with odd parts, JSON that is no message, text that is not JSON,
/// and the probe's cases: a batch, `1e400`, invalid UTF-8, nesting too deep, a message cut short.
fn mcp_body() -> impl Strategy<Value = (Vec<u8>, Expect)> {
    let parse_error = |bytes: Vec<u8>| (bytes, Expect::ParseError);
    let message_with = |inner: &[u8]| {
        let inner = inner.to_vec();
        mcp_message().prop_map(move |m| {
            let text = m.to_string();
            // The message with `"x":<inner>` as its first parameter.
            let at = text.find("\"params\":{").unwrap() + "\"params\":{".len();
            let mut bytes = text.as_bytes()[..at].to_vec();
            bytes.extend_from_slice(b"\"x\":");
            bytes.extend_from_slice(&inner);
            bytes.push(b',');
            bytes.extend_from_slice(&text.as_bytes()[at..]);
            (bytes, Expect::ParseError)
        })
    };
    let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
    prop_oneof![
        4 => mcp_message().prop_map(|m| (m.to_string().into_bytes(), Expect::Answer)),
        1 => json_value().prop_map(|v| {
            let expect = if v.is_object() { Expect::Answer } else { Expect::ParseError };
            (v.to_string().into_bytes(), expect)
        }),
        1 => "\\PC{0,50}".prop_map(|t| {
            let expect = match serde_json::from_str::<Value>(&t) {
                Ok(Value::Object(_)) => Expect::Answer,
                _ => Expect::ParseError,
            };
            (t.into_bytes(), expect)
        }),
        1 => proptest::collection::vec(mcp_message(), 0..3)
            .prop_map(move |batch| parse_error(Value::Array(batch).to_string().into_bytes())),
        1 => message_with(b"1e400"),
        1 => message_with(b"\"\xff\xfe\""),
        1 => message_with(deep.as_bytes()),
        1 => (mcp_message(), any::<proptest::sample::Index>()).prop_map(|(m, cut)| {
            let text = m.to_string();
            (text.as_bytes()[..cut.index(text.len())].to_vec(), Expect::ParseError)
        }),
    ]
}

impl Api {
    /// POSTs `body` to `/mcp` as an MCP client would, and checks the contract: no 5xx; a 4xx is
    /// the API's error body or a JSON-RPC error, and changes nothing; input that is not one
    /// JSON-RPC message is HTTP 400 with a parse error (-32700).
    async fn check_mcp(&self, body: Vec<u8>, expect: Expect) -> Result<(), TestCaseError> {
        let shown = String::from_utf8_lossy(&body)
            .chars()
            .take(300)
            .collect::<String>();
        let before = self.audit_len().await;
        let res = self
            .app
            .http
            .post(format!("{}/mcp", self.app.base))
            .bearer_auth(&self.app.key)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body)
            .send()
            .await
            .expect("the server answers");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        prop_assert!(status < 500, "{shown}: {status} {text}");
        if expect == Expect::ParseError {
            prop_assert_eq!(status, 400, "{}: {}", shown, text);
        }
        if (400..500).contains(&status) {
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| TestCaseError::fail(format!("{shown}: {status} {text}: {e}")))?;
            let api_error = v["error"]["code"]
                .as_str()
                .is_some_and(|c| KNOWN_CODES.contains(&c));
            let rpc_error = v["jsonrpc"] == "2.0" && v["error"]["code"].is_i64();
            prop_assert!(api_error || rpc_error, "{shown}: {status} {text}");
            prop_assert!(v["error"]["message"].is_string(), "{text}");
            if expect == Expect::ParseError {
                prop_assert_eq!(
                    v["error"]["code"].as_i64(),
                    Some(-32700),
                    "{}: {}",
                    shown,
                    text
                );
            }
            prop_assert_eq!(
                self.audit_len().await,
                before,
                "{} changed the audit log",
                shown
            );
        }
        Ok(())
    }
}

#[test]
fn mcp_bodies_never_break_the_endpoint_and_unparsable_ones_are_parse_errors() {
    let (rt, api) = start();
    rt.block_on(api.app.create_ok("Deploy"));
    runner(128)
        .run(&mcp_body(), |(body, expect)| {
            rt.block_on(api.check_mcp(body, expect))
        })
        .unwrap();
    rt.block_on(Arc::try_unwrap(api).ok().unwrap().app.stop());
}
