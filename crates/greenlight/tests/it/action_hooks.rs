//! Action hooks, with the real binary: "trigger the Jenkins job on approve", templated from the
//! request, with a token from the environment that never shows up anywhere it could leak.

use std::process::Command;

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;
use crate::receiver::Receiver;

fn config(jenkins: &Receiver, broken: &Receiver) -> String {
    format!(
        r##"
[delivery]
allow_private_targets = true
max_attempts = 3
backoff_base = "50ms"
backoff_max = "200ms"

[[workflow]]
name = "deploy"
channel = "#deploy"

[[workflow.on_approve]]
name = "Deployment"
method = "POST"
url = "{jenkins}/job/deploy/buildWithParameters?VERSION={{{{params.version}}}}"
headers = {{ Authorization = "Bearer ${{JENKINS_TOKEN}}" }}
body = '{{"version": "{{{{params.version}}}}", "request": "{{{{id}}}}", "by": "{{{{decided_by}}}}"}}'

[[workflow.on_deny]]
name = "Rollback"
url = "{broken}/job/rollback/build?token=${{JENKINS_TOKEN}}"
"##,
        jenkins = jenkins.url(""),
        broken = broken.url(""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_fill_templates_keep_the_token_secret_and_report_on_the_message() {
    init();
    let jenkins = Receiver::start(&[], 201).await;
    let broken = Receiver::start(&[], 502).await;
    let token = format!("jenkins-{}", random_secret());
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite:{}", dir.path().join("greenlight.db").display());
    let log = dir.path().join("server.log");
    let secret = random_secret();
    let sandbox = start_sandbox(&secret).await;
    let key = create_key(&db_url, "ci", &[greenlight::store::Scope::Admin]).await;
    let server = Process::start_with(
        &sandbox,
        dir.path(),
        &db_url,
        &secret,
        &ProcessOptions {
            config: Some(config(&jenkins, &broken)),
            env: vec![
                ("JENKINS_TOKEN".into(), token.clone()),
                ("RUST_LOG".into(), "debug".into()),
            ],
            log: Some(log.clone()),
            addr: None,
        },
    )
    .await;
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();
    let create = |title: &str, version: &str| {
        call(
            &http,
            &base,
            &key,
            Method::POST,
            "/v1/requests",
            // A requester who tries to read the token through a template gets the text back.
            Some(json!({"title": title, "params": {"version": version}})),
        )
    };
    let (_, approved) = create("Deploy api", "1.2 & ${JENKINS_TOKEN}").await;
    let approved_id = approved["id"].as_str().unwrap().to_owned();
    let (_, denied) = create("Deploy web", "7").await;
    let denied_id = denied["id"].as_str().unwrap().to_owned();

    let msg = posted(&sandbox, &approved_id).await;
    let click = greenlight_sandbox::Click::new(CHANNEL, &msg.ts, "greenlight.approve", "U0ALICE");
    assert!(sandbox.click(click).await.unwrap().acked());
    let got = jenkins.wait_for(WAIT, |r| !r.is_empty()).await;
    let build = &got[0];
    assert_eq!(build.method, Method::POST);
    assert_eq!(build.uri.path(), "/job/deploy/buildWithParameters");
    assert_eq!(
        build.uri.query(),
        Some("VERSION=1.2%20%26%20%24%7BJENKINS_TOKEN%7D")
    );
    assert_eq!(build.header("authorization"), format!("Bearer {token}"));
    assert_eq!(
        build.json(),
        json!({"version": "1.2 & ${JENKINS_TOKEN}", "request": approved_id, "by": "U0ALICE"})
    );
    let shown = sandbox
        .wait_for_message(
            CHANNEL,
            &msg.ts,
            |m| text_of(m).contains("Deployment triggered: HTTP 201"),
            WAIT,
        )
        .await
        .expect("the result is shown on the message");
    assert!(text_of(&shown).contains("*Approved* by <@U0ALICE>"));

    let msg = posted(&sandbox, &denied_id).await;
    let click = greenlight_sandbox::Click::new(CHANNEL, &msg.ts, "greenlight.deny", "U0BOB");
    assert!(sandbox.click(click).await.unwrap().acked());
    sandbox
        .wait_for_message(
            CHANNEL,
            &msg.ts,
            |m| text_of(m).contains("Rollback failed after 3 attempts: HTTP 502"),
            WAIT,
        )
        .await
        .expect("the failure is shown on the message");
    assert_eq!(broken.received().len(), 3);
    assert!(broken.received()[0].uri.query().unwrap().contains(&token));

    let (_, got) = call(
        &http,
        &base,
        &key,
        Method::GET,
        &format!("/v1/requests/{denied_id}"),
        None,
    )
    .await;
    assert_eq!(got["actions"][0]["name"], "Rollback");
    assert_eq!(got["actions"][0]["ok"], false);
    let hook = got["delivery"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "action_hook")
        .unwrap()
        .clone();
    assert_eq!(hook["state"], "dead");
    assert_eq!(hook["attempts"], 3);

    let (_, audit) = call(
        &http,
        &base,
        &key,
        Method::GET,
        "/v1/audit?limit=1000",
        None,
    )
    .await;
    let events: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(events.contains(&"action.succeeded") && events.contains(&"action.failed"));

    // The token is nowhere: not in the audit log, the API, or the server's own log.
    let mut seen = audit.to_string();
    for id in [&approved_id, &denied_id] {
        let (_, r) = get_request(&http, &base, &key, id).await;
        seen.push_str(&r.to_string());
    }
    let (_, list) = call(&http, &base, &key, Method::GET, "/v1/requests", None).await;
    seen.push_str(&list.to_string());
    assert!(!seen.contains(&token), "the token leaked into the API");
    drop(server);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("DEBUG"), "the log was captured");
    assert!(!logged.contains(&token), "the token leaked into the log");
}

#[test]
fn check_catches_unknown_placeholders_and_missing_variables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("greenlight.toml");
    std::fs::write(
        &path,
        r##"
[[workflow]]
name = "deploy"
channel = "#deploy"

[[workflow.on_approve]]
url = "https://ci.example.com/job?v={{params.version}}&who={{approver}}"
headers = { Authorization = "Bearer ${GREENLIGHT_TEST_UNSET_TOKEN}" }
"##,
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&path)
        .env_remove("GREENLIGHT_TEST_UNSET_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown placeholder {{approver}}"), "{err}");
    assert!(err.contains("${GREENLIGHT_TEST_UNSET_TOKEN}"), "{err}");
}
