//! Rules decide the easy cases machine-to-machine, and `greenlight check` catches a broken
//! config before it is deployed.

use std::process::Command;

use serde_json::{Value, json};

use greenlight::config::Config;
use greenlight::domain::Verdict;

use crate::helpers::*;

fn with_rules(rules: &'static [(&'static str, &'static str, Verdict)]) -> impl FnOnce(&mut Config) {
    move |c: &mut Config| {
        let mut w = c.workflows.remove(0);
        for (name, when, verdict) in rules {
            w = w.with_rule(name, when, *verdict);
        }
        c.workflows.push(w);
    }
}

fn events_of(audit: &[Value], id: &str) -> Vec<(String, String)> {
    audit
        .iter()
        .filter(|e| e["request_id"] == id)
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_approves_a_small_payment_at_once_and_still_posts_and_logs_it() {
    let app = spawn_app_with(with_rules(&[(
        "small-payment",
        "params.amount < 500 && params.currency == 'USD'",
        Verdict::Approve,
    )]))
    .await;
    let (status, req) = app
        .create(json!({"title": "Pay invoice 7", "params": {"amount": 120, "currency": "USD"}}))
        .await;
    assert_eq!(status, 201, "{req}");
    assert_eq!(req["status"], "approved", "final at once: {req}");
    assert_eq!(req["decided_by"], "small-payment");
    assert_eq!(req["decisions"][0]["kind"], "policy");
    let id = req["id"].as_str().unwrap();

    let msg = app.posted(id).await;
    assert!(!has_buttons(&msg), "nothing left to click");
    let text = text_of(&msg);
    assert!(
        text.contains("*Auto-approved* by rule *small-payment*"),
        "{text}"
    );
    assert!(text.contains("amount = 120"), "{text}");
    assert_eq!(
        events_of(&app.audit().await, id),
        [
            ("request.created".to_owned(), "ci".to_owned()),
            ("request.approved".to_owned(), "small-payment".to_owned())
        ]
    );

    // A large one goes to people.
    let (status, big) = app
        .create(json!({"title": "Pay invoice 8", "params": {"amount": 9000, "currency": "USD"}}))
        .await;
    assert_eq!((status, big["status"].as_str()), (201, Some("pending")));
    assert!(has_buttons(&app.posted(big["id"].as_str().unwrap()).await));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_rule_denies_and_beats_a_matching_approve_rule() {
    let app = spawn_app_with(with_rules(&[
        ("anything-small", "params.amount < 500", Verdict::Approve),
        (
            "prod-freeze",
            "params.env == 'prod' && workflow == 'deploy'",
            Verdict::Deny,
        ),
    ]))
    .await;
    let (status, req) = app
        .create(json!({"title": "Hotfix", "params": {"amount": 1, "env": "prod"}}))
        .await;
    assert_eq!(status, 201, "{req}");
    assert_eq!(req["status"], "denied");
    assert_eq!(req["decided_by"], "prod-freeze");
    let text = text_of(&app.posted(req["id"].as_str().unwrap()).await);
    assert!(
        text.contains("*Auto-denied* by rule *prod-freeze*"),
        "{text}"
    );

    let (_, req) = app
        .create(json!({"title": "Staging", "params": {"amount": 1, "env": "staging"}}))
        .await;
    assert_eq!(req["status"], "approved");
    assert_eq!(req["decided_by"], "anything-small");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_that_fails_counts_as_no_match_and_leaves_a_warning() {
    let app = spawn_app_with(with_rules(&[(
        "risky",
        "params.risk_score > 80",
        Verdict::Deny,
    )]))
    .await;
    let (status, req) = app
        .create(json!({"title": "No score", "params": {"amount": 3}}))
        .await;
    assert_eq!(status, 201, "{req}");
    assert_eq!(req["status"], "pending");
    let id = req["id"].as_str().unwrap();
    assert!(has_buttons(&app.posted(id).await));
    let audit = app.audit().await;
    let warning = audit
        .iter()
        .find(|e| e["request_id"] == id && e["event"] == "rule.failed")
        .expect("a rule.failed entry");
    assert_eq!(warning["actor"], "risky");
    assert!(!warning["data"]["error"].as_str().unwrap().is_empty());

    // A type mismatch is the same.
    let (_, req) = app
        .create(json!({"title": "Text score", "params": {"risk_score": "high"}}))
        .await;
    assert_eq!(req["status"], "pending");
    app.stop().await;
}

fn check(config: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("greenlight.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(bin())
        .arg("check")
        .arg("--config")
        .arg(&path)
        .env_remove("GREENLIGHT_CONFIG")
        .output()
        .expect("greenlight check runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const GOOD: &str = r##"
[[workflow]]
name = "payments"
channel = "#payments"
approvers = ["U0ALICE", "S0SRE"]
approvals_required = 2
allow_self_approval = false
require_deny_reason = true
confirm = true
expires_in = "1h"
on_expiry = "deny"
remind_after = "15m"
escalate_to = "U0ERIN"

[[workflow.rule]]
name = "small-payment"
when = "params.amount < 500 && params.currency == 'USD' && now > timestamp('2020-01-01T00:00:00Z')"
decision = "approve"

[[workflow.rule]]
name = "big-outside-hours"
when = "params.amount > 10000 && requester != 'U0ALICE'"
decision = "deny"
"##;

const BROKEN: &str = r##"
[[workflow]]
name = "payments"
channel = "payments"
on_expiry = "sometimes"
remind_after = "soon"
colour = "green"

[[workflow.rule]]
name = "small-payment"
when = "params.amount < 500 &&"
decision = "approve"

[[workflow]]
name = "deploy"
channel = "#deploy"

[[workflow.rule]]
name = "who"
when = "user == 'U0ALICE'"
decision = "approve"
"##;

#[test]
fn check_passes_a_good_file_and_lists_every_problem_of_a_broken_one() {
    let (code, out, err) = check(GOOD);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok"), "{out}");

    let (code, _, err) = check(BROKEN);
    assert_ne!(code, 0);
    for expected in [
        "invalid channel \"payments\"",
        "sometimes",
        "invalid duration \"soon\"",
        "unknown field `colour`",
        // The CEL syntax error, with its place and a caret.
        "greenlight.toml:11:",
        "rule \"small-payment\"",
        "  11 | when = \"params.amount < 500 &&\"",
        // A name CEL will not have.
        "greenlight.toml:20:9:",
        "unknown name `user`",
        "^",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn serve_refuses_a_config_that_check_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("greenlight.toml");
    std::fs::write(&path, BROKEN).unwrap();
    let out = Command::new(bin())
        .arg("serve")
        .env("GREENLIGHT_CONFIG", &path)
        .env(
            "GREENLIGHT_DATABASE_URL",
            format!("sqlite:{}", dir.path().join("db").display()),
        )
        .env("GREENLIGHT_LISTEN", "127.0.0.1:0")
        .env("SLACK_BOT_TOKEN", "xoxb-test")
        .env("SLACK_SIGNING_SECRET", "secret")
        .output()
        .expect("greenlight serve runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown name `user`"), "{err}");
}

/// Params are numbers as people mean them: a rule can add and multiply, and 120 and 120.5
/// both count as small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_does_arithmetic_on_whole_and_fractional_amounts() {
    let app = spawn_app_with(with_rules(&[(
        "small-with-fee",
        "params.amount + 1 > 100 && params.amount * 2 < 1000 && params.amount * 1.1 < 550.5",
        Verdict::Approve,
    )]))
    .await;
    for (amount, status) in [
        (json!(120), "approved"),
        (json!(120.5), "approved"),
        (json!(99), "pending"),
        (json!(-5), "pending"),
        (json!(900), "pending"),
    ] {
        let (code, req) = app
            .create(json!({"title": "Pay", "params": {"amount": amount}}))
            .await;
        assert_eq!(code, 201, "{req}");
        assert_eq!(req["status"], status, "amount {amount}: {req}");
    }
    app.stop().await;
}
