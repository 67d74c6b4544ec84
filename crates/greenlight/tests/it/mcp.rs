//! AI agents over MCP, with rmcp's own client against the real server's `POST /mcp`: a request
//! asked and decided in Slack, waits that stay bounded, rules that answer at once, a coding
//! agent's permission prompt allowed, denied and expired, domain failures as tool errors, and
//! no MCP at all without an API key.

use std::time::{Duration, Instant};

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

use crate::helpers::*;
use greenlight::domain::Verdict;

type Client = RunningService<rmcp::RoleClient, ()>;

async fn connect(app: &TestApp, key: &str) -> Client {
    let config =
        StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", app.base)).auth_header(key);
    let transport = StreamableHttpClientTransport::from_config(config);
    ().serve(transport).await.expect("MCP client connects")
}

async fn call(client: &rmcp::Peer<rmcp::RoleClient>, tool: &str, args: Value) -> CallToolResult {
    let params = CallToolRequestParams::new(tool.to_owned())
        .with_arguments(args.as_object().cloned().unwrap_or_default());
    client.call_tool(params).await.expect("the tool answers")
}

fn structured(result: &CallToolResult) -> Value {
    result.structured_content.clone().unwrap_or(Value::Null)
}

fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_are_listed_with_descriptions_and_schemas() {
    let app = spawn_app().await;
    let client = connect(&app, &app.key).await;
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    for expected in [
        "request_approval",
        "get_approval",
        "cancel_approval",
        "list_pending_approvals",
        "permission_prompt",
    ] {
        assert!(names.contains(&expected), "{names:?}");
    }
    let request = tools.iter().find(|t| t.name == "request_approval").unwrap();
    assert!(request.description.as_deref().unwrap_or("").len() > 80);
    let schema = serde_json::to_value(&request.input_schema).unwrap();
    assert_eq!(schema["required"], json!(["title"]), "{schema}");
    assert!(schema["properties"]["wait_seconds"].is_object());
    assert!(schema["properties"]["metadata"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_asks_a_person_decides_in_slack_and_the_agent_hears_it() {
    let app = spawn_app().await;
    let client = connect(&app, &app.key).await;
    let asked = call(
        &client,
        "request_approval",
        json!({"title": "Send the invoice email to ACME", "params": {"amount": 1200},
               "metadata": {"run_id": "run-7"}}),
    )
    .await;
    assert_eq!(asked.is_error, Some(false), "{asked:?}");
    let created = structured(&asked);
    assert_eq!(created["status"], "pending");
    let id = created["request_id"].as_str().unwrap().to_owned();
    // The same JSON as text, for clients that read only text.
    assert_eq!(
        serde_json::from_str::<Value>(&text(&asked)).unwrap(),
        created
    );

    let msg = app.posted(&id).await;
    let waiting = {
        let peer = client.peer().clone();
        let args = json!({"request_id": id, "wait_seconds": 20});
        tokio::spawn(async move { call(&peer, "get_approval", args).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        app.click(&msg, "greenlight.approve", "U0ALICE")
            .await
            .acked()
    );
    let got = structured(&waiting.await.unwrap());
    assert_eq!(got["status"], "approved", "{got}");
    assert_eq!(got["decided_by"], "U0ALICE");
    assert_eq!(got["metadata"]["run_id"], "run-7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_are_bounded_and_rules_answer_at_once() {
    let app = spawn_app_with(|c| {
        c.workflows[0] =
            c.workflows[0]
                .clone()
                .with_rule("small", "params.amount < 500", Verdict::Approve);
    })
    .await;
    let client = connect(&app, &app.key).await;
    let started = Instant::now();
    let auto = call(
        &client,
        "request_approval",
        json!({"title": "Refund 20 USD", "params": {"amount": 20}, "wait_seconds": 30}),
    )
    .await;
    assert_eq!(structured(&auto)["status"], "approved");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a rule's answer does not wait"
    );

    let started = Instant::now();
    let pending = call(
        &client,
        "request_approval",
        json!({"title": "Refund 900 USD", "params": {"amount": 900}, "wait_seconds": 2}),
    )
    .await;
    assert_eq!(structured(&pending)["status"], "pending");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_tool_errors_and_lists_and_cancels_work() {
    let app = spawn_app().await;
    let client = connect(&app, &app.key).await;
    let unknown = call(
        &client,
        "request_approval",
        json!({"title": "x", "workflow": "nope"}),
    )
    .await;
    assert_eq!(unknown.is_error, Some(true));
    assert_eq!(structured(&unknown)["error"]["code"], "unknown_workflow");
    let missing = call(&client, "get_approval", json!({"request_id": "req_nope"})).await;
    assert_eq!(structured(&missing)["error"]["code"], "not_found");

    let first = structured(&call(&client, "request_approval", json!({"title": "First"})).await);
    let second = structured(&call(&client, "request_approval", json!({"title": "Second"})).await);
    let listed = structured(&call(&client, "list_pending_approvals", json!({})).await);
    let ids: Vec<&str> = listed["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            second["request_id"].as_str().unwrap(),
            first["request_id"].as_str().unwrap()
        ]
    );
    let cancelled = call(
        &client,
        "cancel_approval",
        json!({"request_id": first["request_id"], "reason": "no longer needed"}),
    )
    .await;
    assert_eq!(structured(&cancelled)["status"], "cancelled");
    let again = call(
        &client,
        "cancel_approval",
        json!({"request_id": first["request_id"]}),
    )
    .await;
    assert_eq!(structured(&again)["error"]["code"], "not_pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permission_prompt_is_allowed_with_its_input_or_denied_with_why() {
    let app = spawn_app().await;
    let client = connect(&app, &app.key).await;
    let input =
        json!({"command": "terraform apply -auto-approve", "description": "apply <prod> & go"});
    let prompt = {
        let peer = client.peer().clone();
        let args = json!({"tool_name": "Bash", "input": input, "tool_use_id": "toolu_01"});
        tokio::spawn(async move { call(&peer, "permission_prompt", args).await })
    };
    let msg = app
        .sandbox
        .wait_for_message_in(CHANNEL, |m| text_of(m).contains("terraform apply"), WAIT)
        .await
        .expect("the prompt is posted");
    // The tool and its input as a code block, escaped.
    let shown = text_of(&msg);
    assert!(shown.contains("*Tool* Bash"), "{shown}");
    assert!(shown.contains("```"), "{shown}");
    assert!(shown.contains("&lt;prod&gt; &amp; go"), "{shown}");
    // Approve opens the input for editing ([mcp] permission_editable, on by default);
    // approved as it is, the input comes back as it was.
    assert!(app.click(&msg, "greenlight.approve", "U0BOB").await.acked());
    let view = app
        .sandbox
        .wait_until(WAIT, |sb| sb.views().into_iter().find(|v| v.open))
        .await
        .expect("the edit modal opened");
    let command = view.view["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["block_id"] == "greenlight.edit.tool_call.input.command")
        .unwrap_or_else(|| panic!("{}", view.view));
    assert_eq!(
        command["element"]["initial_value"],
        "terraform apply -auto-approve"
    );
    assert_eq!(command["label"]["text"], "command");
    let ack = app
        .sandbox
        .submit_view(&view.id, "U0BOB", Vec::<(String, String)>::new())
        .await
        .unwrap();
    assert!(ack.body.is_empty(), "{}", ack.body);
    let answer: Value = serde_json::from_str(&text(&prompt.await.unwrap())).unwrap();
    assert_eq!(answer, json!({"behavior": "allow", "updatedInput": input}));

    // Edited: the agent runs what the person approved.
    let prompt = {
        let peer = client.peer().clone();
        let args = json!({"tool_name": "Bash", "input": {"command": "kubectl scale --replicas=10", "timeout": 60}});
        tokio::spawn(async move { call(&peer, "permission_prompt", args).await })
    };
    let msg = app
        .sandbox
        .wait_for_message_in(
            CHANNEL,
            |m| text_of(m).contains("kubectl scale") && has_buttons(m),
            WAIT,
        )
        .await
        .expect("the prompt is posted");
    assert!(app.click(&msg, "greenlight.approve", "U0BOB").await.acked());
    let view = app
        .sandbox
        .wait_until(WAIT, |sb| sb.views().into_iter().find(|v| v.open))
        .await
        .expect("the edit modal opened");
    let bad = app
        .sandbox
        .submit_view(
            &view.id,
            "U0BOB",
            [("greenlight.edit.tool_call.input.timeout", "soon")],
        )
        .await
        .unwrap();
    assert!(
        bad.json().unwrap()["errors"]["greenlight.edit.tool_call.input.timeout"].is_string(),
        "{}",
        bad.body
    );
    let ack = app
        .sandbox
        .submit_view(
            &view.id,
            "U0BOB",
            [
                (
                    "greenlight.edit.tool_call.input.command",
                    "kubectl scale --replicas=3",
                ),
                ("greenlight.edit.tool_call.input.timeout", "30"),
            ],
        )
        .await
        .unwrap();
    assert!(ack.body.is_empty(), "{}", ack.body);
    let answer: Value = serde_json::from_str(&text(&prompt.await.unwrap())).unwrap();
    assert_eq!(
        answer,
        json!({"behavior": "allow", "updatedInput": {"command": "kubectl scale --replicas=3", "timeout": 30}})
    );
    let done = text_of(&app.decided_message(&msg).await);
    assert!(
        done.contains("*Edited:* command: kubectl scale --replicas=10 → kubectl scale --replicas=3, timeout: 60 → 30"),
        "{done}"
    );

    let prompt = {
        let peer = client.peer().clone();
        let args = json!({"tool_name": "Bash", "input": {"command": "rm -rf /"}});
        tokio::spawn(async move { call(&peer, "permission_prompt", args).await })
    };
    let msg = app
        .sandbox
        .wait_for_message_in(
            CHANNEL,
            |m| text_of(m).contains("rm -rf") && has_buttons(m),
            WAIT,
        )
        .await
        .expect("the second prompt is posted");
    assert!(app.click(&msg, "greenlight.deny", "U0BOB").await.acked());
    let answer: Value = serde_json::from_str(&text(&prompt.await.unwrap())).unwrap();
    assert_eq!(answer["behavior"], "deny");
    let message = answer["message"].as_str().unwrap();
    assert!(message.starts_with("Denied by @"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permission_prompt_nobody_answers_is_denied_when_it_expires() {
    let app = spawn_app_with(|c| c.mcp.permission_timeout = "2s".parse().unwrap()).await;
    let client = connect(&app, &app.key).await;
    let started = Instant::now();
    let result = call(
        &client,
        "permission_prompt",
        json!({"tool_name": "Write", "input": {"file_path": "/etc/passwd"}}),
    )
    .await;
    let answer: Value = serde_json::from_str(&text(&result)).unwrap();
    assert_eq!(answer["behavior"], "deny", "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("expired"),
        "{answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_valid_key_mcp_is_refused_before_any_message() {
    let app = spawn_app().await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "probe", "version": "1"}}});
    for auth in [None, Some("Bearer gl_wrong")] {
        let mut req = app
            .http
            .post(format!("{}/mcp", app.base))
            .header("accept", "application/json, text/event-stream")
            .json(&body);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status().as_u16(), 401);
        let error: Value = res.json().await.unwrap();
        assert_eq!(error["error"]["code"], "unauthorized");
    }
    // A key without the scope gets a tool error, not data.
    let reader = create_key(&app.db_url, "reader", &[greenlight::store::Scope::Read]).await;
    let client = connect(&app, &reader).await;
    let refused = call(&client, "request_approval", json!({"title": "x"})).await;
    assert_eq!(structured(&refused)["error"]["code"], "forbidden");
}

/// The probe's inputs that rmcp answered with 415 in plain text: whatever is not one JSON-RPC
/// message is HTTP 400 with a JSON-RPC parse error (-32700, no id), and nothing runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_input_is_http_400_with_a_json_rpc_parse_error() {
    let app = spawn_app().await;
    let ping = br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#.to_vec();
    let deep = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"x":{}{}}}}}"#,
        "[".repeat(300),
        "]".repeat(300)
    );
    let mut invalid_utf8 = br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":""#.to_vec();
    invalid_utf8.extend_from_slice(b"\xff\xfe\"}}");
    let cases: [(&str, Vec<u8>); 6] = [
        ("not JSON", br#"{"jsonrpc":"2.0","#.to_vec()),
        ("too deep", deep.into_bytes()),
        ("invalid UTF-8", invalid_utf8),
        (
            "1e400",
            br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":1e400}}"#.to_vec(),
        ),
        ("a batch", [b"[".as_slice(), &ping, b"]"].concat()),
        ("not a message", br#"{"hello":"world"}"#.to_vec()),
    ];
    let before = app.audit().await.len();
    for (what, body) in cases {
        let res = app
            .http
            .post(format!("{}/mcp", app.base))
            .bearer_auth(&app.key)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 400, "{what}");
        assert_eq!(res.headers()["content-type"], "application/json", "{what}");
        let answer: Value = res.json().await.unwrap();
        assert_eq!(answer["jsonrpc"], "2.0", "{what}: {answer}");
        assert_eq!(answer["error"]["code"], -32700, "{what}: {answer}");
        assert!(answer["error"]["message"].is_string(), "{what}: {answer}");
        assert!(
            answer.get("id").is_none_or(Value::is_null),
            "{what}: {answer}"
        );
    }
    assert_eq!(app.audit().await.len(), before);
    // The same message, whole, is answered.
    let res = app
        .http
        .post(format!("{}/mcp", app.base))
        .bearer_auth(&app.key)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(ping)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
}

/// Only the body is bounded by `request_timeout`: a tool's wait for a decision may be longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_may_wait_for_a_decision_longer_than_request_timeout() {
    let app = spawn_app_with(|c| c.limits.request_timeout = "1s".parse().unwrap()).await;
    let client = connect(&app, &app.key).await;
    let asked = call(&client, "request_approval", json!({"title": "Wait for me"})).await;
    let id = structured(&asked)["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let started = Instant::now();
    let got = call(
        &client,
        "get_approval",
        json!({"request_id": id, "wait_seconds": 2}),
    )
    .await;
    assert_eq!(structured(&got)["status"], "pending", "{got:?}");
    assert!(started.elapsed() >= Duration::from_secs(2));
}

/// `[mcp]` governs every transport: a request carrying a tool call (a permission prompt, here
/// over the plain API as `greenlight mcp` sends it) that names no workflow lands in
/// `permission_workflow` and expires after `permission_timeout`; one without a tool call is
/// unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_with_no_workflow_follows_the_mcp_settings() {
    let app = spawn_app_with(|c| {
        c.workflows.push(greenlight::config::Workflow::new(
            "agents".parse().unwrap(),
            "#ops".parse().unwrap(),
        ));
        c.mcp.permission_workflow = Some("agents".parse().unwrap());
        c.mcp.permission_timeout = "2m".parse().unwrap();
    })
    .await;
    let (status, body) = app
        .create(json!({
            "title": "Allow claude to run Bash",
            "tool_call": {"name": "Bash", "input": {"command": "ls"}},
        }))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["workflow"], "agents");
    let at = |k: &str| {
        body[k]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap()
    };
    assert_eq!(
        at("expires_at").as_millisecond() - at("created_at").as_millisecond(),
        120_000
    );
    let (status, body) = app.create(json!({"title": "Deploy api"})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "workflow_required");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_question_is_answered_in_slack_and_returns_typed_answers() {
    let app = spawn_app().await;
    let client = connect(&app, &app.key).await;
    let tools = client.list_all_tools().await.unwrap();
    let tool = tools
        .iter()
        .find(|t| t.name == "ask_question")
        .expect("listed");
    let schema = serde_json::to_value(&tool.input_schema).unwrap();
    assert_eq!(schema["required"], json!(["question"]), "{schema}");

    // No fields: one free-text answer.
    let asked = call(
        &client,
        "ask_question",
        json!({"question": "What should the commit message say?"}),
    )
    .await;
    assert_eq!(asked.is_error, Some(false), "{asked:?}");
    let created = structured(&asked);
    assert_eq!(created["buttons"], "answer");
    assert_eq!(created["fields"][0]["name"], "answer");
    assert_eq!(created["fields"][0]["type"], "textarea");
    let free = created["request_id"].as_str().unwrap().to_owned();

    // Fields: which environment, how many replicas; answered while the agent waits.
    let ask = {
        let client = client.clone();
        tokio::spawn(async move {
            call(
                &client,
                "ask_question",
                json!({"question": "Which environment should I use?", "wait_seconds": 30,
                "fields": [
                    {"name": "env", "type": "select", "options": ["staging", "production"]},
                    {"name": "replicas", "type": "number", "min": 1, "max": 5}
                ]}),
            )
            .await
        })
    };
    let msg = app
        .sandbox
        .wait_for_message_in(
            CHANNEL,
            |m| text_of(m).contains("Which environment should I use?"),
            WAIT,
        )
        .await
        .expect("the question is posted");
    assert!(
        app.click(&msg, "greenlight.approve", "U0ALICE")
            .await
            .acked()
    );
    let view = app
        .sandbox
        .wait_until(WAIT, |sb| sb.views().into_iter().find(|v| v.open))
        .await
        .expect("the modal opened");
    let ack = app
        .sandbox
        .submit_view_values(
            &view.id,
            "U0ALICE",
            [
                ("greenlight.field.env", json!("staging")),
                ("greenlight.field.replicas", json!("2")),
            ],
        )
        .await
        .unwrap();
    assert!(ack.body.is_empty(), "{}", ack.body);
    let answered = structured(&ask.await.unwrap());
    assert_eq!(answered["status"], "approved", "{answered}");
    assert_eq!(
        answered["response"],
        json!({"env": "staging", "replicas": 2})
    );

    // Bad fields are a tool error with the API's code.
    let bad = call(
        &client,
        "ask_question",
        json!({"question": "?", "fields": [{"name": "x", "type": "colour"}]}),
    )
    .await;
    assert_eq!(bad.is_error, Some(true));
    assert_eq!(structured(&bad)["error"]["code"], "invalid_field_type");
    let got = call(&client, "get_approval", json!({"request_id": free})).await;
    assert_eq!(structured(&got)["status"], "pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_with_no_workflow_lands_in_the_mcp_workflow() {
    let app = spawn_app_with(|c| {
        c.workflows.push(greenlight::config::Workflow::new(
            "agents".parse().unwrap(),
            "#ops".parse().unwrap(),
        ));
        c.mcp.permission_workflow = Some("agents".parse().unwrap());
    })
    .await;
    let client = connect(&app, &app.key).await;
    let asked = call(
        &client,
        "ask_question",
        json!({"question": "Which region?"}),
    )
    .await;
    assert_eq!(structured(&asked)["workflow"], "agents", "{asked:?}");
    let named = call(
        &client,
        "ask_question",
        json!({"question": "Which region?", "workflow": "deploy"}),
    )
    .await;
    assert_eq!(structured(&named)["workflow"], "deploy", "{named:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_permission_editable_off_approve_allows_the_input_as_asked() {
    let app = spawn_app_with(|c| c.mcp.permission_editable = false).await;
    let client = connect(&app, &app.key).await;
    let input = json!({"command": "ls"});
    let prompt = {
        let peer = client.peer().clone();
        let args = json!({"tool_name": "Bash", "input": input});
        tokio::spawn(async move { call(&peer, "permission_prompt", args).await })
    };
    let msg = app
        .sandbox
        .wait_for_message_in(CHANNEL, |m| text_of(m).contains("*Tool* Bash"), WAIT)
        .await
        .expect("the prompt is posted");
    assert!(app.click(&msg, "greenlight.approve", "U0BOB").await.acked());
    let answer: Value = serde_json::from_str(&text(&prompt.await.unwrap())).unwrap();
    assert_eq!(answer, json!({"behavior": "allow", "updatedInput": input}));
    assert!(app.sandbox.views().is_empty(), "no modal");
}
