//! greenlight as a GitHub App's custom deployment protection rule (issue 28), against a fake of
//! GitHub's API (tests/it/helpers/github.rs): webhooks signed as GitHub signs them become one
//! request each, and the decision reaches GitHub as a review with an installation token bought
//! with the App JWT.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use greenlight::config::{Config, GithubConfig, GithubEnvironment, Secret};
use greenlight::domain::{Clock, SystemClock};
use greenlight::policy::github::AppKey;

use crate::helpers::github::*;
use crate::helpers::*;

fn github(fake: &FakeGithub) -> GithubConfig {
    GithubConfig {
        app_id: APP_ID,
        private_key: AppKey::from_pem(APP_KEY).unwrap(),
        webhook_secret: Secret::new(WEBHOOK_SECRET),
        api_url: fake.url.clone(),
        environments: vec![GithubEnvironment {
            name: "prod-*".into(),
            repositories: vec!["acme/*".into()],
            workflow: "deploy".parse().unwrap(),
        }],
    }
}

fn with_github(fake: &FakeGithub) -> impl FnOnce(&mut Config) + use<> {
    let gh = github(fake);
    move |cfg: &mut Config| {
        cfg.github = Some(gh);
        cfg.delivery.backoff_base = "50ms".parse().unwrap();
        cfg.delivery.backoff_max = "200ms".parse().unwrap();
    }
}

/// Delivers a `deployment_protection_rule` webhook; the request it made (or found).
async fn deploy(app: &TestApp, fake: &FakeGithub, repo: &str, env: &str, run: u64) -> String {
    let body = fake.protection_rule_payload(repo, env, run, "octocat");
    let res = deliver_webhook(
        &app.http,
        &app.base,
        "deployment_protection_rule",
        &body,
        WEBHOOK_SECRET,
    )
    .await;
    assert_eq!(res.status().as_u16(), 200);
    let answer: Value = res.json().await.unwrap();
    answer["request"].as_str().expect("a request").to_owned()
}

/// Polls until `pred` holds of the fake's reviews.
async fn reviews_until(
    fake: &FakeGithub,
    pred: impl Fn(&[ReceivedReview]) -> bool,
) -> Vec<ReceivedReview> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let reviews = fake.reviews();
        if pred(&reviews) {
            return reviews;
        }
        assert!(std::time::Instant::now() < deadline, "reviews: {reviews:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn review_state(app: &TestApp, id: &str, want: &str) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let request = app.get(id).await;
        if request["github"]["review"] == want {
            return request;
        }
        assert!(std::time::Instant::now() < deadline, "{request}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_deployment_makes_one_request_and_the_approval_reaches_github() {
    let fake = FakeGithub::start().await;
    let app = spawn_app_with(with_github(&fake)).await;

    let id = deploy(&app, &fake, "acme/api", "prod-eu", 4242).await;
    // GitHub redelivers: the same request, no second message.
    let again = deploy(&app, &fake, "acme/api", "prod-eu", 4242).await;
    assert_eq!(id, again);
    let msg = app.posted(&id).await;
    let request = app.get(&id).await;
    assert_eq!(
        request["title"],
        "Deploy acme/api refs/heads/main to prod-eu"
    );
    assert_eq!(request["requester"], "octocat");
    assert_eq!(
        request["params"],
        json!({
            "repository": "acme/api", "environment": "prod-eu", "ref": "refs/heads/main",
            "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e", "run_id": 4242,
            "run_url": "https://github.com/acme/api/actions/runs/4242", "event": "push",
        })
    );
    assert_eq!(
        request["github"],
        json!({"repository": "acme/api", "run_id": 4242, "environment": "prod-eu", "review": "pending"})
    );

    // One status report while it waits, linking the Slack message.
    let reports = reviews_until(&fake, |r| !r.is_empty()).await;
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(
        reports[0].path,
        "/repos/acme/api/actions/runs/4242/deployment_protection_rule"
    );
    assert!(
        reports[0].body.get("state").is_none(),
        "{:?}",
        reports[0].body
    );
    assert_eq!(reports[0].body["environment_name"], "prod-eu");
    let link = format!("/archives/{}/p{}", CHANNEL, msg.ts.replace('.', ""));
    assert!(
        reports[0].body["comment"].as_str().unwrap().contains(&link),
        "{:?}",
        reports[0].body
    );

    assert!(
        app.click(&msg, "greenlight.approve", "U0ALICE")
            .await
            .acked()
    );
    let reviews = reviews_until(&fake, |r| r.len() >= 2).await;
    let review = &reviews[1].body;
    assert_eq!(review["state"], "approved");
    assert_eq!(review["environment_name"], "prod-eu");
    let comment = review["comment"].as_str().unwrap();
    assert!(comment.starts_with("Approved by "), "{comment}");
    assert!(comment.contains("#deploy"), "{comment}");
    assert!(comment.chars().count() <= 1024);
    let request = review_state(&app, &id, "approved").await;
    assert_eq!(request["status"], "approved");
    // Both calls used one installation token.
    assert_eq!(fake.tokens_issued(), 1);
    assert!(fake.bad_jwts().is_empty(), "{:?}", fake.bad_jwts());
    assert_eq!(app.sandbox.messages(CHANNEL).len(), 1);
    let metrics = app.metrics().await;
    // The recorder is shared by every test of the process: counts only grow.
    for series in [
        "greenlight_github_webhooks_total{event=\"deployment_protection_rule\",outcome=\"created\"}",
        "greenlight_github_webhooks_total{event=\"deployment_protection_rule\",outcome=\"redelivered\"}",
        "greenlight_github_reviews_total{state=\"approved\",outcome=\"done\"}",
        "greenlight_github_reviews_total{state=\"status\",outcome=\"done\"}",
    ] {
        let value = metrics
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse::<f64>().ok());
        assert!(value.is_some_and(|v| v >= 1.0), "{series} in {metrics}");
    }
    // Nothing more goes to GitHub.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.reviews().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_signature_changes_nothing_ping_answers_and_other_events_are_left_alone() {
    let fake = FakeGithub::start().await;
    let app = spawn_app_with(with_github(&fake)).await;
    let body = fake.protection_rule_payload("acme/api", "prod-eu", 1, "octocat");
    let bytes = serde_json::to_vec(&body).unwrap();
    let post = |signature: Option<String>, event: &'static str, bytes: Vec<u8>| {
        let mut req = app
            .http
            .post(format!("{}/github/webhook", app.base))
            .header("x-github-event", event)
            .body(bytes);
        if let Some(s) = signature {
            req = req.header("x-hub-signature-256", s);
        }
        req.send()
    };
    for signature in [
        None,
        Some("sha256=00".to_owned()),
        Some(github_signature("another secret", &bytes)),
        Some(github_signature(WEBHOOK_SECRET, b"another body")),
        Some(github_signature(WEBHOOK_SECRET, &bytes).replace("sha256=", "sha1=")),
    ] {
        let res = post(signature, "deployment_protection_rule", bytes.clone())
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 401);
        let err: Value = res.json().await.unwrap();
        assert_eq!(err["error"]["code"], "invalid_signature", "{err}");
    }
    let (_, list) = app.call(reqwest::Method::GET, "/v1/requests", None).await;
    assert_eq!(list["requests"].as_array().map(Vec::len), Some(0), "{list}");

    let ping = json!({"zen": "Keep it logically awesome.", "hook_id": 1});
    let res = deliver_webhook(&app.http, &app.base, "ping", &ping, WEBHOOK_SECRET).await;
    assert_eq!(res.status().as_u16(), 200);
    let push = json!({"ref": "refs/heads/main"});
    let res = deliver_webhook(&app.http, &app.base, "push", &push, WEBHOOK_SECRET).await;
    assert_eq!(res.status().as_u16(), 202);
    // An environment no [[github.environment]] maps: 200, and nothing happens.
    let unmapped = fake.protection_rule_payload("acme/api", "staging", 2, "octocat");
    let res = deliver_webhook(
        &app.http,
        &app.base,
        "deployment_protection_rule",
        &unmapped,
        WEBHOOK_SECRET,
    )
    .await;
    assert_eq!(res.status().as_u16(), 200);
    let other_repo = fake.protection_rule_payload("other/api", "prod-eu", 3, "octocat");
    let res = deliver_webhook(
        &app.http,
        &app.base,
        "deployment_protection_rule",
        &other_repo,
        WEBHOOK_SECRET,
    )
    .await;
    assert_eq!(res.status().as_u16(), 200);
    let (_, list) = app.call(reqwest::Method::GET, "/v1/requests", None).await;
    assert_eq!(list["requests"].as_array().map(Vec::len), Some(0), "{list}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(fake.reviews().is_empty());
    assert_eq!(fake.tokens_issued(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_url_outside_api_url_is_refused_and_audited() {
    let fake = FakeGithub::start().await;
    let elsewhere = FakeGithub::start().await;
    let app = spawn_app_with(with_github(&fake)).await;
    let mut body = fake.protection_rule_payload("acme/api", "prod-eu", 9, "octocat");
    body["deployment_callback_url"] = elsewhere.callback_url("acme/api", 9).into();
    let res = deliver_webhook(
        &app.http,
        &app.base,
        "deployment_protection_rule",
        &body,
        WEBHOOK_SECRET,
    )
    .await;
    assert_eq!(res.status().as_u16(), 422);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["error"]["code"], "callback_url_not_allowed", "{err}");
    let (_, list) = app.call(reqwest::Method::GET, "/v1/requests", None).await;
    assert_eq!(list["requests"].as_array().map(Vec::len), Some(0), "{list}");
    let audit = app.audit().await;
    assert!(
        audit
            .iter()
            .any(|e| e["event"] == "github.callback_refused"),
        "{audit:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(elsewhere.tokens_issued() + fake.tokens_issued(), 0);
    assert!(elsewhere.reviews().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_carries_the_reason_and_a_422_ends_the_job_without_retries() {
    let fake = FakeGithub::start().await;
    let app = spawn_app_with(with_github(&fake)).await;
    let id = deploy(&app, &fake, "acme/web", "prod-us", 51).await;
    let msg = app.posted(&id).await;
    reviews_until(&fake, |r| r.len() == 1).await;
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            &format!("/v1/requests/{id}/decisions"),
            Some(json!({"verdict": "deny", "reason": "freeze until Monday"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let reviews = reviews_until(&fake, |r| r.len() == 2).await;
    assert_eq!(reviews[1].body["state"], "rejected");
    let comment = reviews[1].body["comment"].as_str().unwrap();
    assert!(comment.starts_with("Rejected by "), "{comment}");
    assert!(comment.contains("freeze until Monday"), "{comment}");
    review_state(&app, &id, "rejected").await;
    let _ = msg;

    // The run finished before the decision: GitHub answers 422, and the job ends.
    fake.refuse_reviews(true);
    let id = deploy(&app, &fake, "acme/web", "prod-us", 52).await;
    app.posted(&id).await;
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            &format!("/v1/requests/{id}/decisions"),
            Some(json!({"verdict": "approve"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let request = review_state(&app, &id, "failed").await;
    let reviews: Vec<&Value> = request["delivery"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"] == "github_review")
        .collect();
    let review = reviews
        .iter()
        .find(|d| d["target"] == "GitHub deployment review: approved")
        .unwrap();
    assert_eq!(review["state"], "done", "{reviews:?}");
    let failed = request["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "GitHub review")
        .cloned()
        .unwrap();
    assert_eq!(failed["ok"], false);
    assert!(
        failed["summary"].as_str().unwrap().contains("422"),
        "{failed}"
    );
    let audit = app.audit().await;
    assert!(
        audit.iter().any(|e| e["event"] == "github.review_failed"),
        "{audit:?}"
    );
    // No retry loop: the review job was tried once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = app.get(&id).await;
    let attempts: Vec<Value> = again["delivery"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| {
            d["kind"] == "github_review" && d["target"] == "GitHub deployment review: approved"
        })
        .map(|d| d["attempts"].clone())
        .collect();
    assert_eq!(attempts, vec![json!(1)], "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_installation_token_is_reused_until_near_expiry_then_refreshed() {
    let fake = FakeGithub::start().await;
    // Tokens that live 5 minutes and 4 seconds: usable for 4 seconds before the margin.
    fake.set_token_lifetime(304);
    let app = spawn_app_with(with_github(&fake)).await;
    let first = deploy(&app, &fake, "acme/api", "prod-eu", 100).await;
    reviews_until(&fake, |r| r.len() == 1).await;
    let second = deploy(&app, &fake, "acme/api", "prod-eu", 101).await;
    let reviews = reviews_until(&fake, |r| r.len() == 2).await;
    assert_eq!(fake.tokens_issued(), 1);
    assert_eq!(reviews[0].token, reviews[1].token);
    tokio::time::sleep(Duration::from_secs(5)).await;
    app.call(
        reqwest::Method::POST,
        &format!("/v1/requests/{first}/decisions"),
        Some(json!({"verdict": "approve"})),
    )
    .await;
    let reviews = reviews_until(&fake, |r| r.len() == 3).await;
    assert_eq!(fake.tokens_issued(), 2);
    assert_ne!(reviews[2].token, reviews[0].token);
    app.call(
        reqwest::Method::POST,
        &format!("/v1/requests/{second}/decisions"),
        Some(json!({"verdict": "approve"})),
    )
    .await;
    let reviews = reviews_until(&fake, |r| r.len() == 4).await;
    assert_eq!(fake.tokens_issued(), 2);
    assert_eq!(reviews[3].token, reviews[2].token);
    assert!(fake.bad_jwts().is_empty(), "{:?}", fake.bad_jwts());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_request_rejects_the_deployment_saying_so() {
    let fake = FakeGithub::start().await;
    let clock = TestClock::new();
    let customize = with_github(&fake);
    let app = spawn_app_clocked(
        move |cfg| {
            customize(cfg);
            cfg.workflows[0].expires_in = Some("1m".parse().unwrap());
        },
        clock.clone(),
    )
    .await;
    let id = deploy(&app, &fake, "acme/api", "prod-eu", 7).await;
    app.posted(&id).await;
    reviews_until(&fake, |r| r.len() == 1).await;
    clock.advance(Duration::from_secs(61));
    let reviews = reviews_until(&fake, |r| r.len() == 2).await;
    assert_eq!(reviews[1].body["state"], "rejected");
    let comment = reviews[1].body["comment"].as_str().unwrap();
    assert!(comment.contains("expired"), "{comment}");
    let request = review_state(&app, &id, "rejected").await;
    assert_eq!(request["status"], "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_request_rejects_the_deployment() {
    let fake = FakeGithub::start().await;
    let app = spawn_app_with(with_github(&fake)).await;
    let id = deploy(&app, &fake, "acme/api", "prod-eu", 8).await;
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            &format!("/v1/requests/{id}/cancel"),
            Some(json!({"reason": "superseded"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let reviews = reviews_until(&fake, |r| r.iter().any(|r| r.body.get("state").is_some())).await;
    let review = reviews
        .iter()
        .find(|r| r.body.get("state").is_some())
        .unwrap();
    assert_eq!(review.body["state"], "rejected");
    assert!(
        review.body["comment"]
            .as_str()
            .unwrap()
            .contains("cancelled"),
        "{:?}",
        review.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_between_decision_and_review_still_reviews_once() {
    let fake = FakeGithub::start().await;
    let app = spawn_app_with(with_github(&fake)).await;
    let id = deploy(&app, &fake, "acme/api", "prod-eu", 300).await;
    reviews_until(&fake, |r| r.len() == 1).await;
    // GitHub is down when the decision is made: the review waits in the outbox.
    fake.fail_reviews(1_000);
    app.call(
        reqwest::Method::POST,
        &format!("/v1/requests/{id}/decisions"),
        Some(json!({"verdict": "approve"})),
    )
    .await;
    wait_delivery(&app, &id, "github_review", |d| {
        d.iter()
            .any(|j| j["attempts"].as_u64().unwrap_or(0) >= 1 && j["state"] == "pending")
    })
    .await;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let app = app.restart(with_github(&fake), clock).await;
    fake.fail_reviews(0);
    let reviews = reviews_until(&fake, |r| r.len() == 2).await;
    assert_eq!(reviews[1].body["state"], "approved");
    review_state(&app, &id, "approved").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.decisions().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_caller_cannot_make_greenlight_review_a_deployment() {
    let fake = FakeGithub::start().await;
    let app = spawn_app_with(with_github(&fake)).await;
    // The same metadata the webhook keeps, given through the API: it stays plain metadata.
    let link = json!({
        "installation_id": INSTALLATION, "repository": "acme/api", "environment": "prod-eu",
        "run_id": 5, "deployment_callback_url": fake.callback_url("acme/api", 5),
    });
    let (status, created) = app
        .create(json!({"title": "Deploy", "metadata": {"github": link}}))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    assert!(created.get("github").is_none(), "{created}");
    app.call(
        reqwest::Method::POST,
        &format!("/v1/requests/{id}/decisions"),
        Some(json!({"verdict": "approve"})),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(fake.reviews().is_empty());
    assert_eq!(fake.tokens_issued(), 0);
    assert!(delivery_of(&app, id, "github_review").await.is_empty());
}

/// GitHub delivering the same webhook several times at once (a retry racing the first): one
/// request and one message, on both stores.
async fn concurrent_redeliveries_make_one_request(backend: Backend) {
    init();
    let fake = FakeGithub::start().await;
    let sandbox = start_sandbox(&random_secret()).await;
    let app = boot(
        sandbox,
        TestDb::of(backend).await,
        None,
        with_github(&fake),
        Arc::new(SystemClock),
    )
    .await;
    let body = fake.protection_rule_payload("acme/api", "prod-eu", 555, "octocat");
    let deliveries = (0..5).map(|_| {
        let (http, base, body) = (app.http.clone(), app.base.clone(), body.clone());
        tokio::spawn(async move {
            let res = deliver_webhook(
                &http,
                &base,
                "deployment_protection_rule",
                &body,
                WEBHOOK_SECRET,
            )
            .await;
            assert_eq!(res.status().as_u16(), 200);
            let answer: Value = res.json().await.unwrap();
            answer["request"].as_str().unwrap().to_owned()
        })
    });
    let mut ids = Vec::new();
    for d in deliveries {
        ids.push(d.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    app.posted(&ids[0]).await;
    reviews_until(&fake, |r| !r.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.sandbox.messages(CHANNEL).len(), 1);
    assert_eq!(fake.reviews().len(), 1, "one status report");
    let (_, list) = app.call(reqwest::Method::GET, "/v1/requests", None).await;
    assert_eq!(list["requests"].as_array().map(Vec::len), Some(1), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redeliveries_make_one_request_on_sqlite() {
    concurrent_redeliveries_make_one_request(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redeliveries_make_one_request_on_postgresql() {
    concurrent_redeliveries_make_one_request(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_reads_the_deployments_params_and_its_decision_reviews_it() {
    let fake = FakeGithub::start().await;
    let customize = with_github(&fake);
    let app = spawn_app_with(move |cfg| {
        customize(cfg);
        cfg.workflows[0].rules = vec![
            greenlight::rules::Rule::compile(
                "docs-ship-themselves",
                r#"params.repository == "acme/docs" && params.environment.startsWith("prod-") && params.event == "push""#,
                greenlight::domain::Verdict::Approve,
            )
            .unwrap(),
        ];
    })
    .await;
    let id = deploy(&app, &fake, "acme/docs", "prod-eu", 600).await;
    let reviews = reviews_until(&fake, |r| !r.is_empty()).await;
    // Decided at once: no status report, the review straight away.
    assert_eq!(
        reviews[0].body["state"], "approved",
        "{:?}",
        reviews[0].body
    );
    let comment = reviews[0].body["comment"].as_str().unwrap();
    assert!(
        comment.starts_with("Approved by greenlight rule docs-ship-themselves"),
        "{comment}"
    );
    review_state(&app, &id, "approved").await;
    // Another repository still waits for people.
    let other = deploy(&app, &fake, "acme/api", "prod-eu", 601).await;
    assert_eq!(app.get(&other).await["status"], "pending");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.decisions().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_is_refused_when_its_callback_is_no_longer_under_api_url() {
    let fake = FakeGithub::start().await;
    let moved = FakeGithub::start().await;
    let app = spawn_app_with(with_github(&fake)).await;
    let id = deploy(&app, &fake, "acme/api", "prod-eu", 700).await;
    reviews_until(&fake, |r| !r.is_empty()).await;
    // Restarted with another api_url: the stored callback URL is not under it any more.
    let customize = with_github(&moved);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let app = app.restart(customize, clock).await;
    app.call(
        reqwest::Method::POST,
        &format!("/v1/requests/{id}/decisions"),
        Some(json!({"verdict": "approve"})),
    )
    .await;
    let request = review_state(&app, &id, "failed").await;
    let review = request["delivery"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["target"] == "GitHub deployment review: approved")
        .cloned()
        .unwrap();
    assert_eq!(review["state"], "dead", "{review}");
    assert!(
        review["last_error"]
            .as_str()
            .unwrap()
            .contains("not under [github] api_url"),
        "{review}"
    );
    let audit = app.audit().await;
    assert!(
        audit.iter().any(|e| e["event"] == "github.review_failed"),
        "{audit:?}"
    );
    assert_eq!(fake.decisions().len() + moved.decisions().len(), 0);
    assert_eq!(moved.tokens_issued(), 0);
}
