//! The CI recipes of docs/ci.md ("Resuming other CI systems"): each config block is taken from
//! the document as written, accepted by `greenlight check`, and run by the real binary against a
//! small fake of that system's documented API (Argo Workflows' `PUT
//! /api/v1/workflows/{namespace}/{name}/resume|stop`, Jenkins' `POST
//! {build}/input/{id}/proceedEmpty|abort` with a user's API token, GitLab's `POST
//! /api/v4/projects/{id}/jobs/{job_id}/play` with a `PRIVATE-TOKEN`).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

const ARGO_TOKEN: &str = "argo-sa-token";
const JENKINS_USER: &str = "deployer";
const JENKINS_TOKEN: &str = "11aa22bb33cc";
const GITLAB_TOKEN: &str = "glpat-recipe";

/// The config block after `<!-- recipe: NAME -->` in docs/ci.md.
fn recipe(name: &str) -> String {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/ci.md")).unwrap();
    let marker = format!("<!-- recipe: {name} -->");
    let after = &doc[doc.find(&marker).expect("the recipe is in docs/ci.md") + marker.len()..];
    let start = after.find("```toml\n").unwrap() + "```toml\n".len();
    let end = after[start..].find("```").unwrap();
    after[start..start + end].to_owned()
}

/// A call one of the fakes took.
#[derive(Debug, Clone, PartialEq)]
struct Call {
    what: String,
    body: Value,
}

#[derive(Clone, Default)]
struct Fake {
    calls: Arc<Mutex<Vec<Call>>>,
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

impl Fake {
    async fn start() -> (Self, String) {
        let fake = Fake::default();
        let app = Router::new()
            .route("/api/v1/workflows/{namespace}/{name}/{verb}", put(argo))
            .route("/job/{job}/{build}/input/{id}/{verb}", post(jenkins))
            .route("/api/v4/projects/{project}/jobs/{job}/play", post(gitlab))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (fake, url)
    }

    fn record(&self, what: String, body: Value) {
        self.calls.lock().unwrap().push(Call { what, body });
    }

    async fn calls_until(&self, n: usize) -> Vec<Call> {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let calls = self.calls.lock().unwrap().clone();
            if calls.len() >= n {
                return calls;
            }
            assert!(std::time::Instant::now() < deadline, "{calls:?}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// Argo Server: a bearer token; the body is a Workflow{Resume,Stop}Request naming the workflow.
async fn argo(
    State(fake): State<Fake>,
    Path((namespace, name, verb)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if header(&headers, "authorization") != format!("Bearer {ARGO_TOKEN}") {
        return (StatusCode::UNAUTHORIZED, "token not valid").into_response();
    }
    if !matches!(verb.as_str(), "resume" | "stop") {
        return StatusCode::NOT_FOUND.into_response();
    }
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    if body["name"] != name.as_str() || body["namespace"] != namespace.as_str() {
        return (
            StatusCode::BAD_REQUEST,
            "name and namespace must match the path",
        )
            .into_response();
    }
    fake.record(format!("argo {verb} {namespace}/{name}"), body);
    axum::Json(json!({"metadata": {"name": name, "namespace": namespace}})).into_response()
}

/// Jenkins: HTTP basic auth with a user's API token (no crumb needed then).
async fn jenkins(
    State(fake): State<Fake>,
    Path((job, build, id, verb)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{JENKINS_USER}:{JENKINS_TOKEN}"));
    if header(&headers, "authorization") != format!("Basic {basic}") {
        return StatusCode::FORBIDDEN.into_response();
    }
    if !matches!(verb.as_str(), "proceedEmpty" | "abort") || build.parse::<u64>().is_err() {
        return StatusCode::NOT_FOUND.into_response();
    }
    fake.record(format!("jenkins {verb} {job}#{build} {id}"), Value::Null);
    StatusCode::OK.into_response()
}

/// GitLab: a `PRIVATE-TOKEN` header; answers the job, now pending.
async fn gitlab(
    State(fake): State<Fake>,
    Path((project, job)): Path<(String, u64)>,
    headers: HeaderMap,
) -> Response {
    if header(&headers, "private-token") != GITLAB_TOKEN {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"message": "401 Unauthorized"})),
        )
            .into_response();
    }
    fake.record(format!("gitlab play {project}/{job}"), Value::Null);
    axum::Json(json!({"id": job, "status": "pending", "name": "deploy"})).into_response()
}

fn env() -> Vec<(String, String)> {
    vec![
        ("ARGO_TOKEN".into(), ARGO_TOKEN.into()),
        (
            "JENKINS_AUTH".into(),
            base64::engine::general_purpose::STANDARD
                .encode(format!("{JENKINS_USER}:{JENKINS_TOKEN}")),
        ),
        ("GITLAB_TOKEN".into(), GITLAB_TOKEN.into()),
    ]
}

/// The recipes with their hosts pointed at the fake, as one config file.
fn config(fake_url: &str) -> String {
    let mut text = String::from("[delivery]\nmax_attempts = 2\nbackoff_base = \"50ms\"\n");
    for (name, host) in [
        ("argo", "https://argo.example.com"),
        ("jenkins", "https://jenkins.example.com"),
        ("gitlab", "https://gitlab.example.com"),
    ] {
        text.push_str(&recipe(name).replace(host, fake_url));
        text.push('\n');
    }
    text
}

#[test]
fn each_recipe_passes_greenlight_check_as_written() {
    let dir = tempfile::tempdir().unwrap();
    // The [github] block too (its key from the environment instead of the file it names).
    for name in ["argo", "jenkins", "gitlab", "github"] {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, recipe(name)).unwrap();
        let out = std::process::Command::new(bin())
            .arg("check")
            .arg("--config")
            .arg(&path)
            .env_remove("GREENLIGHT_CONFIG")
            .envs(env())
            .env(
                "GREENLIGHT_GITHUB_PRIVATE_KEY",
                include_str!("fixtures/github/app.pem"),
            )
            .env("GITHUB_WEBHOOK_SECRET", "a webhook secret")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recipes_resume_argo_jenkins_and_gitlab() {
    init();
    let (fake, fake_url) = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite:{}", dir.path().join("greenlight.db").display());
    let secret = random_secret();
    let sandbox = start_sandbox(&secret).await;
    let key = create_key(&db_url, "ci", &[greenlight::store::Scope::Admin]).await;
    let server = Process::start_with(
        &sandbox,
        dir.path(),
        &db_url,
        &secret,
        &ProcessOptions {
            config: Some(config(&fake_url)),
            env: env(),
            log: None,
            addr: None,
        },
    )
    .await;
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();
    let ask = |workflow: &str, params: Value| {
        let body = json!({"workflow": workflow, "title": format!("Release via {workflow}"), "params": params});
        let (http, base, key) = (http.clone(), base.clone(), key.clone());
        async move {
            let (status, created) =
                call(&http, &base, &key, Method::POST, "/v1/requests", Some(body)).await;
            assert_eq!(status, 201, "{created}");
            created["id"].as_str().unwrap().to_owned()
        }
    };
    let decide = |id: String, verdict: &'static str| {
        let (http, base, key) = (http.clone(), base.clone(), key.clone());
        async move {
            let (status, body) = call(
                &http,
                &base,
                &key,
                Method::POST,
                &format!("/v1/requests/{id}/decisions"),
                Some(json!({"verdict": verdict, "reason": "not today"})),
            )
            .await;
            assert_eq!(status, 200, "{body}");
        }
    };

    let argo = json!({"namespace": "releases", "workflow_name": "release-x7k2p"});
    decide(ask("argo-release", argo.clone()).await, "approve").await;
    let calls = fake.calls_until(1).await;
    assert_eq!(calls[0].what, "argo resume releases/release-x7k2p");
    decide(ask("argo-release", argo).await, "deny").await;
    let calls = fake.calls_until(2).await;
    assert_eq!(calls[1].what, "argo stop releases/release-x7k2p");
    assert_eq!(calls[1].body["message"], "denied in Slack: not today");

    let jenkins = json!({"job": "app", "build": "42", "input_id": "Release"});
    decide(ask("jenkins-release", jenkins.clone()).await, "approve").await;
    let calls = fake.calls_until(3).await;
    assert_eq!(calls[2].what, "jenkins proceedEmpty app#42 Release");
    decide(ask("jenkins-release", jenkins).await, "deny").await;
    let calls = fake.calls_until(4).await;
    assert_eq!(calls[3].what, "jenkins abort app#42 Release");

    let gitlab = json!({"project_id": "1234", "job_id": "98765"});
    let played = ask("gitlab-release", gitlab.clone()).await;
    decide(played.clone(), "approve").await;
    let calls = fake.calls_until(5).await;
    assert_eq!(calls[4].what, "gitlab play 1234/98765");
    decide(ask("gitlab-release", gitlab).await, "deny").await;
    // Each hook's result is on its request.
    let (_, request) = get_request(&http, &base, &key, &played).await;
    let deadline = std::time::Instant::now() + WAIT;
    let mut request = request;
    while request["actions"].as_array().is_none_or(Vec::is_empty) {
        assert!(std::time::Instant::now() < deadline, "{request}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        request = get_request(&http, &base, &key, &played).await.1;
    }
    assert_eq!(request["actions"][0]["name"], "GitLab play");
    assert_eq!(request["actions"][0]["ok"], true);
    // A denied GitLab release calls nothing.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(fake.calls.lock().unwrap().len(), 5);
}
