//! Workload identity end to end: a server with a `[[trust]]` policy takes OIDC tokens from an
//! issuer on loopback wherever it takes an API key (the HTTP API and `POST /mcp`), records who
//! asked, shows it in Slack, lets rules decide on it, and refuses every bad token with 401
//! `invalid_token` naming the failed check, changing nothing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use greenlight::config::{Config, TrustPolicy};
use greenlight::domain::Verdict;
use greenlight::store::Scope;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

use crate::helpers::oidc::{Issuer, TestKey, now};
use crate::helpers::*;

async fn with_trust(
    customize: impl FnOnce(&mut TrustPolicy, &mut Config),
) -> (TestApp, Issuer, TestKey) {
    init();
    let key = TestKey::ec();
    let issuer = Issuer::start(vec![key.clone(), TestKey::rsa()]).await;
    let mut p = issuer.policy();
    let app = spawn_app_with(|c| {
        customize(&mut p, c);
        c.trust = vec![p];
    })
    .await;
    (app, issuer, key)
}

async fn as_token(
    app: &TestApp,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    call(&app.http, &app.base, token, method, path, body).await
}

fn claims_of(jws: &str) -> Value {
    let payload = jws.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_asks_and_greenlight_records_who_it_proved_to_be() {
    let (app, issuer, key) = with_trust(|_, _| {}).await;
    let token = key.sign(&issuer.github_claims("greenlight", now(), 300));
    let (status, created) = as_token(
        &app,
        &token,
        reqwest::Method::POST,
        "/v1/requests",
        Some(json!({"title": "Deploy api v1.2", "requester": "U0MALLORY", "params": {"version": "1.2"}})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    // The body's requester is ignored: the policy's template says who asked.
    assert_eq!(created["requester"], "acme/api@refs/tags/v1.2");
    assert_eq!(created["identity"]["trust"], "github-acme");
    assert_eq!(created["identity"]["issuer"], issuer.url.as_str());
    assert_eq!(
        created["identity"]["subject"],
        "repo:acme/api:ref:refs/tags/v1.2"
    );
    assert_eq!(created["identity"]["claims"]["run_id"], "8812");
    assert!(
        created["identity"]["claims"].get("jti").is_none(),
        "{created}"
    );

    // The same token reads it back (read scope), and an admin key sees the identity too.
    let (status, mine) = as_token(
        &app,
        &token,
        reqwest::Method::GET,
        &format!("/v1/requests/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(
        mine["identity"]["subject"],
        "repo:acme/api:ref:refs/tags/v1.2"
    );
    assert_eq!(app.get(&id).await["identity"]["trust"], "github-acme");

    // Slack shows the verified line under the title.
    let msg = app.posted(&id).await;
    let shown = serde_json::to_string(&msg.blocks).unwrap();
    assert!(
        shown.contains(
            "\u{1f510} acme/api@refs/tags/v1.2 · workflow deploy.yml · run 8812 (verified by github-acme)"
        ),
        "{shown}"
    );

    // The audit log's request.created names the trust and the subject.
    let entries = app.audit().await;
    let created_entry = entries
        .iter()
        .find(|e| e["request_id"] == id.as_str() && e["event"] == "request.created")
        .expect("request.created");
    assert_eq!(created_entry["data"]["trust"], "github-acme");
    assert_eq!(
        created_entry["data"]["subject"],
        "repo:acme/api:ref:refs/tags/v1.2"
    );
    assert_eq!(
        created_entry["actor"],
        "oidc:github-acme/repo:acme/api:ref:refs/tags/v1.2"
    );

    // The receipt names the verified subject.
    assert!(
        app.click(&msg, "greenlight.approve", "U0ALICE")
            .await
            .acked()
    );
    let decided = app.get(&id).await;
    assert_eq!(decided["status"], "approved", "{decided}");
    let receipt = decided["receipt"].as_str().expect("a receipt");
    assert_eq!(
        claims_of(receipt)["identity_sub"],
        "repo:acme/api:ref:refs/tags/v1.2"
    );
    assert_eq!(claims_of(receipt)["requester"], "acme/api@refs/tags/v1.2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_401_invalid_token_naming_the_check_and_changes_nothing() {
    let (app, issuer, key) = with_trust(|_, _| {}).await;
    let t = now();
    let claims = |f: &dyn Fn(&mut Value)| {
        let mut c = issuer.github_claims("greenlight", t, 300);
        f(&mut c);
        c
    };
    let cases: Vec<(String, &str)> = vec![
        (
            key.sign(&claims(&|c| {
                c["iat"] = json!(t - 1000);
                c["nbf"] = json!(t - 1000);
                c["exp"] = json!(t - 100);
            })),
            "expired",
        ),
        (
            key.sign(&claims(&|c| c["aud"] = json!("someone-else"))),
            "audience",
        ),
        (
            key.sign(&claims(&|c| c["iss"] = json!("https://evil.example.com"))),
            "not trusted",
        ),
        (
            key.sign(&claims(&|c| c["ref"] = json!("refs/heads/main"))),
            "its when is false",
        ),
        (
            key.sign(&claims(&|c| c["exp"] = json!(t + 7200))),
            "max_token_lifetime",
        ),
        (
            {
                let mut forged = TestKey::ec_next();
                forged.kid = "ec-1".into();
                forged.sign(&claims(&|_| {}))
            },
            "signature",
        ),
        (
            {
                let mut unknown = TestKey::ec_next();
                unknown.kid = "nobody".into();
                unknown.sign(&claims(&|_| {}))
            },
            "unknown key",
        ),
        (
            format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
                URL_SAFE_NO_PAD.encode(claims(&|_| {}).to_string())
            ),
            "algorithm",
        ),
    ];
    for (token, reason) in cases {
        let (status, body) = as_token(
            &app,
            &token,
            reqwest::Method::POST,
            "/v1/requests",
            Some(json!({"title": "Deploy"})),
        )
        .await;
        assert_eq!(status, 401, "{reason}: {body}");
        assert_eq!(body["error"]["code"], "invalid_token", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{reason:?} not in {message:?}");
    }
    let (_, list) = app.call(reqwest::Method::GET, "/v1/requests", None).await;
    assert_eq!(list["requests"].as_array().unwrap().len(), 0, "{list}");
    // API keys still work beside trust policies; a random bearer is still an unknown key.
    app.create_ok("with a key").await;
    let (status, body) =
        as_token(&app, "gl_0000", reqwest::Method::GET, "/v1/requests", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_bounds_the_workflows_and_scopes_of_its_tokens() {
    let (app, issuer, key) = with_trust(|p, c| {
        let prod =
            greenlight::config::Workflow::new("prod".parse().unwrap(), "#prod".parse().unwrap());
        c.workflows.push(prod);
        p.workflows = vec!["deploy".parse().unwrap()];
        p.scopes = vec![Scope::Request];
    })
    .await;
    let token = key.sign(&issuer.github_claims("greenlight", now(), 300));
    let (status, body) = as_token(
        &app,
        &token,
        reqwest::Method::POST,
        "/v1/requests",
        Some(json!({"title": "Deploy", "workflow": "prod"})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("workflow \"prod\""),
        "{body}"
    );
    let (status, created) = as_token(
        &app,
        &token,
        reqwest::Method::POST,
        "/v1/requests",
        Some(json!({"title": "Deploy", "workflow": "deploy"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    // No read scope: reading is refused as for a key without it.
    let (status, body) = as_token(
        &app,
        &token,
        reqwest::Method::GET,
        &format!("/v1/requests/{}", created["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("trust \"github-acme\" does not grant the \"read\" scope"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_decide_on_the_identity_and_api_keys_are_null() {
    let (app, issuer, key) = with_trust(|_, c| {
        let w = c.workflows.remove(0).with_rule(
            "tagged-ci-to-production",
            r#"identity != null && identity.claims.environment == "production""#,
            Verdict::Approve,
        );
        c.workflows.push(w);
    })
    .await;
    let token = key.sign(&issuer.github_claims("greenlight", now(), 300));
    let (status, created) = as_token(
        &app,
        &token,
        reqwest::Method::POST,
        "/v1/requests",
        Some(json!({"title": "Deploy"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "approved", "{created}");
    assert_eq!(created["decided_by"], "tagged-ci-to-production");
    // An API key's request has no identity: the rule does not match.
    let by_key = app.create_ok("Deploy by hand").await;
    assert_eq!(by_key["status"], "pending");
    assert!(by_key.get("identity").is_none(), "{by_key}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_takes_a_token_and_its_requests_carry_the_identity() {
    let (app, issuer, key) = with_trust(|_, _| {}).await;
    let token = key.sign(&issuer.github_claims("greenlight", now(), 300));
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", app.base))
        .auth_header(token.clone());
    let client =
        ().serve(StreamableHttpClientTransport::from_config(config))
            .await
            .expect("MCP client connects with a workload token");
    let params = CallToolRequestParams::new("request_approval".to_owned()).with_arguments(
        json!({"title": "Run the migration", "requester": "someone-else"})
            .as_object()
            .cloned()
            .unwrap(),
    );
    let result = client.call_tool(params).await.expect("the tool answers");
    let request = result.structured_content.clone().unwrap_or(Value::Null);
    assert_eq!(request["requester"], "acme/api@refs/tags/v1.2", "{request}");
    assert_eq!(request["identity"]["trust"], "github-acme", "{request}");
    // A refused token is refused before any MCP message is read.
    let res = app
        .http
        .post(format!("{}/mcp", app.base))
        .bearer_auth(key.sign(&issuer.github_claims("someone-else", now(), 300)))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_token", "{body}");
}

/// `greenlight ask` with a workload token and no GREENLIGHT_TOKEN.
fn ask_with(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin());
    cmd.arg("ask")
        .args(args)
        .env("GREENLIGHT_URL", &app.base)
        .env_remove("GREENLIGHT_TOKEN")
        .env_remove("GREENLIGHT_CONFIG")
        .env_remove("ACTIONS_ID_TOKEN_REQUEST_URL")
        .env_remove("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

async fn output(mut cmd: tokio::process::Command) -> (i32, String, String) {
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), cmd.output())
        .await
        .expect("ask finishes")
        .expect("ask runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_gets_its_token_from_github_actions_on_every_call_and_waits() {
    let (app, issuer, _) = with_trust(|_, _| {}).await;
    let request_url = issuer.actions_request_url();
    let child = ask_with(
        &app,
        &[
            "--oidc",
            "github",
            "--audience",
            "greenlight",
            "--title",
            "Deploy from Actions",
            "--requester",
            "ignored",
            "--wait",
            "--timeout",
            "30s",
            "--json",
        ],
        &[
            ("ACTIONS_ID_TOKEN_REQUEST_URL", request_url.as_str()),
            (
                "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
                crate::helpers::oidc::ACTIONS_REQUEST_TOKEN,
            ),
        ],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let msg = app
        .sandbox
        .wait_for_message_in(
            CHANNEL,
            |m| text_of(m).contains("Deploy from Actions"),
            WAIT,
        )
        .await
        .expect("posted");
    assert!(
        serde_json::to_string(&msg.blocks)
            .unwrap()
            .contains("(verified by github-acme)")
    );
    assert!(
        app.click(&msg, "greenlight.approve", "U0ALICE")
            .await
            .acked()
    );
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let request: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(request["status"], "approved");
    assert_eq!(request["requester"], "acme/api@refs/tags/v1.2");
    assert_eq!(request["identity"]["trust"], "github-acme");
    // One token for the create and one for each read after it: never kept past its call.
    assert!(
        issuer
            .actions_tokens
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 2
    );

    // Outside Actions (no request URL) it says what the job lacks, and asks nothing.
    let (code, _, stderr) = output(ask_with(
        &app,
        &["--oidc", "github", "--title", "Nope"],
        &[],
    ))
    .await;
    assert_eq!(code, 5, "{stderr}");
    assert!(stderr.contains("id-token: write"), "{stderr}");
    // The wrong audience is refused by the server with the check that failed.
    let (code, _, stderr) = output(ask_with(
        &app,
        &["--oidc", "github", "--audience", "other", "--title", "Nope"],
        &[
            ("ACTIONS_ID_TOKEN_REQUEST_URL", request_url.as_str()),
            (
                "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
                crate::helpers::oidc::ACTIONS_REQUEST_TOKEN,
            ),
        ],
    ))
    .await;
    assert_eq!(code, 5, "{stderr}");
    assert!(
        stderr.contains("invalid_token") && stderr.contains("audience"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_reads_a_gitlab_variable_or_a_token_file() {
    let (app, issuer, key) = with_trust(|p, _| {
        p.when = None;
        p.requester = None;
    })
    .await;
    // GitLab CI: the id_tokens variable.
    let token = key.sign(&issuer.github_claims("greenlight", now(), 300));
    let (code, stdout, stderr) = output(ask_with(
        &app,
        &[
            "--oidc",
            "gitlab:GREENLIGHT_ID_TOKEN",
            "--title",
            "From GitLab",
        ],
        &[("GREENLIGHT_ID_TOKEN", token.as_str())],
    ))
    .await;
    assert_eq!(code, 0, "{stderr}");
    let id = stdout.trim().to_owned();
    assert_eq!(app.get(&id).await["identity"]["trust"], "github-acme");

    // Kubernetes: a projected service-account token in a file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(
        &path,
        format!(
            "{}\n",
            key.sign(&issuer.kubernetes_claims("greenlight", now()))
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = output(ask_with(
        &app,
        &[
            "--oidc-token-file",
            path.to_str().unwrap(),
            "--title",
            "From a pod",
        ],
        &[],
    ))
    .await;
    assert_eq!(code, 0, "{stderr}");
    let got = app.get(stdout.trim()).await;
    assert_eq!(got["requester"], "system:serviceaccount:payments:worker");

    // Usage errors: --audience with GitLab, an unknown source, a file that is not there.
    let (code, _, stderr) = output(ask_with(
        &app,
        &["--oidc", "gitlab:X", "--audience", "a", "--title", "t"],
        &[],
    ))
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("aud:"), "{stderr}");
    let (code, _, stderr) =
        output(ask_with(&app, &["--oidc", "circleci", "--title", "t"], &[])).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("github or gitlab:VAR"), "{stderr}");
    let (code, _, stderr) = output(ask_with(
        &app,
        &["--oidc-token-file", "/nonexistent/token", "--title", "t"],
        &[],
    ))
    .await;
    assert_eq!(code, 5, "{stderr}");
    assert!(stderr.contains("cannot read the token file"), "{stderr}");
}
