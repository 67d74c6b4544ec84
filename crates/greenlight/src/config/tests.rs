use super::*;
use std::collections::HashMap;

use crate::domain::{Notify, OnExpiry, Policy, Verdict};

fn load(file: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("greenlight.toml");
    std::fs::write(&path, file).unwrap();
    let mut vars: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    vars.insert("GREENLIGHT_CONFIG".into(), path.display().to_string());
    Config::load_with(|k| vars.get(k).cloned())
}

#[test]
fn environment_wins_over_file_over_defaults() {
    let c = load(
        "listen = \"127.0.0.1:9000\"\n[slack]\nbot_token = \"xoxb-file\"\n[[workflow]]\nname = \"deploy\"\nchannel = \"#deploys\"\n",
        &[("SLACK_BOT_TOKEN", "xoxb-env")],
    )
    .unwrap();
    assert_eq!(c.listen.port(), 9000);
    assert_eq!(c.slack.bot_token.unwrap().expose(), "xoxb-env");
    assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
    assert_eq!(c.workflows[0].name.as_str(), "deploy");
}

#[test]
fn unknown_keys_are_errors_with_a_location() {
    let err = load(
        "[[workflow]]\nname = \"deploy\"\nchannel = \"#deploys\"\napprover = [\"U1\"]\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("unknown field `approver`"), "{err}");
    assert!(err.contains("greenlight.toml:4:1: error:"), "{err}");
}

#[test]
fn bad_values_are_listed() {
    let err = load(
        "[[workflow]]\nname = \"Deploy!\"\nchannel = \"#deploys\"\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("invalid workflow name"), "{err}");
    let err = load(
        "[[workflow]]\nname = \"a\"\nchannel = \"#a\"\n[[workflow]]\nname = \"a\"\nchannel = \"#b\"\n",
        &[("GREENLIGHT_LISTEN", "nope")],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("defined twice") && err.contains("HOST:PORT"),
        "{err}"
    );
}

#[test]
fn notify_digests_and_alerts_load_and_are_checked() {
    let c = load(
        r##"
public_url = "https://greenlight.example.com/"
[alerts]
channel = "#ops"

[[workflow]]
name = "payments"
channel = "#payments"
notify = "digest"
digest_interval = "10m"

[[workflow.rule]]
name = "small"
when = "params.amount < 500"
decision = "approve"

[[workflow.rule]]
name = "tiny"
when = "params.amount < 5"
decision = "approve"
notify = "silent"

[[alert]]
name = "runaway"
kind = "auto_decisions"
rule = "small"
above = 1000
within = "10m"

[[alert]]
name = "one-bot"
kind = "requests"
workflow = "payments"
per_requester = true
above = 100
within = "1m"
"##,
        &[],
    )
    .unwrap();
    let w = c.workflow("payments").unwrap();
    assert_eq!(w.digest_interval.as_millis(), 600_000);
    assert_eq!(w.notify_for("small"), Notify::Digest);
    assert_eq!(w.notify_for("tiny"), Notify::Silent);
    assert_eq!(
        c.public_url.as_deref(),
        Some("https://greenlight.example.com")
    );
    assert_eq!(c.alert_rules.len(), 2);
    assert_eq!(c.alert_rules[1].kind, AlertKind::Requests);
    let d = load("[[workflow]]\nname = \"d\"\nchannel = \"#d\"\n", &[]).unwrap();
    assert_eq!(d.workflows[0].notify, Notify::Message);
    assert_eq!(d.workflows[0].digest_interval.as_millis(), 300_000);

    let err = load(
        r##"
public_url = "ftp://x"
[[workflow]]
name = "payments"
channel = "#payments"
notify = "loud"
digest_interval = "1s"

[[workflow.rule]]
name = "promoted"
when = "approved_in('stagin', 'version', params.version)"
decision = "approve"

[[alert]]
name = "a"
kind = "auto_decisions"
above = 1
within = "1m"

[[alert]]
name = "a"
kind = "denials"
workflow = "nope"
per_requester = true
above = 1
within = "1s"
"##,
        &[],
    )
    .unwrap_err()
    .to_string();
    for want in [
        "public_url \"ftp://x\" is not an http(s) URL",
        "unknown variant `loud`",
        "no workflow \"stagin\" to look back at",
        "needs rule = ",
        "alert \"a\" is defined twice",
        "workflow \"nope\" is not configured",
        "per_requester applies to kind = \"requests\" only",
        "within must be at least 10s",
        "[[alert]] needs somewhere to post",
    ] {
        assert!(err.contains(want), "{want}:\n{err}");
    }
}

#[test]
fn policies_load_with_their_defaults_and_rules_compile() {
    let c = load(
        r##"
[[workflow]]
name = "payments"
channel = "C0PAYMENTS"
approvers = ["U0ALICE", "S0SRE"]
approvals_required = 2
expires_in = "1h"
on_expiry = "deny"
remind_after = "15m"
escalate_to = "U0ERIN"

[[workflow.rule]]
name = "small-payment"
when = "params.amount < 500 && params.currency == 'USD'"
decision = "approve"

[[workflow]]
name = "deploy"
channel = "#deploy"
"##,
        &[],
    )
    .unwrap();
    let p = c.workflow("payments").unwrap();
    assert_eq!(p.approvers.len(), 2);
    assert_eq!(p.policy().stages[0].approvals_required, 2);
    assert_eq!(p.on_expiry, OnExpiry::Deny);
    assert_eq!(p.rules.len(), 1);
    assert_eq!(p.rules[0].verdict, Verdict::Approve);
    let d = c.workflow("deploy").unwrap();
    assert_eq!(d.policy(), Policy::default());
    assert!(d.rules.is_empty() && d.approvers.is_empty() && !d.confirm);
}

#[test]
fn every_problem_is_listed_with_its_place() {
    let err = load(
        r##"
[[workflow]]
name = "payments"
channel = "payments"
expires_in = "1x"

[[workflow.rule]]
name = "broken"
when = "params.amount <"
decision = "approve"

[[workflow]]
name = "deploy"
channel = "#deploy"
approvers = ["U0ALICE"]
approvals_required = 2
escalate_to = "S0SRE"

[[workflow.rule]]
name = "typo"
when = "param.amount < 5"
decision = "approve"
"##,
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("invalid channel"), "{err}");
    assert!(
        err.contains(":5:14: error: invalid duration \"1x\""),
        "{err}"
    );
    assert!(
        err.contains(":9:24: error: workflow \"payments\", rule \"broken\""),
        "{err}"
    );
    assert!(
        err.contains(
            ":16:1: error: workflow \"deploy\": approvals_required = 2 but only 1 approver"
        ),
        "{err}"
    );
    assert!(
        err.contains(":17:1: error: workflow \"deploy\": escalate_to needs remind_after"),
        "{err}"
    );
    assert!(err.contains("unknown name `param`"), "{err}");
    // The caret sits under `param`, column 9 of line 21.
    assert!(err.contains(":21:9:"), "{err}");
    assert!(
        err.contains("   21 | when = \"param.amount < 5\"\n      |         ^"),
        "{err}"
    );
    assert!(!err.contains("TOML parse error"), "{err}");
    assert!(err.ends_with("6 problems in the configuration"), "{err}");
}

/// Everything a newcomer hit one batch at a time, in one pass, sorted by line.
#[test]
fn one_pass_reports_everything_in_line_order() {
    let err = load(
        r##"
[delivery]
max_attempts = 0
colour = "green"

[[workflow]]
name = "deploy"
channel = "#deploy"
approvers = ["U0ALICE"]
approvals_required = 3
escalate_to = "U0BOSS"
mystery = 1

[[workflow.rule]]
name = "r"
when = "parms.x > 1"
decision = "approve"

[[workflow.on_approve]]
name = "Deploy"
url = "https://ci.example.com/job?token=${NOT_SET_ANYWHERE}&v={{nope}}"

[[workflow.on_deny]]
url = "https://ci.example.com/"
body = '{"v": {{params.v}}}'

[[workflow]]
channel = "#other"
expires_in = "soon"
"##,
        &[],
    )
    .unwrap_err();
    let problems = err.problems();
    let lines: Vec<usize> = problems.iter().map(|p| p.line).collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted, "{err}");
    let text = err.to_string();
    for (line, what) in [
        (3, "max_attempts must be at least 1"),
        (4, "unknown field `colour`"),
        (10, "approvals_required = 3 but only 1 approver"),
        (11, "escalate_to needs remind_after"),
        (12, "unknown field `mystery`"),
        (16, "unknown name `parms`"),
        (21, "unknown placeholder {{nope}}"),
        (25, "not valid JSON once filled in"),
        (27, "missing field `name`"),
        (29, "invalid duration \"soon\""),
    ] {
        assert!(
            problems
                .iter()
                .any(|p| p.line == line && p.message.contains(what)),
            "line {line}: {what}\n{text}"
        );
    }
    // Every problem names the file, line and column.
    for p in problems {
        assert!(p.place.contains("greenlight.toml:"), "{p}");
    }
}

#[test]
fn a_receipt_ttl_under_a_second_is_refused_and_the_default_is_an_hour() {
    let ok = load(
        "[[workflow]]\nname = \"deploy\"\nchannel = \"#deploy\"\n",
        &[],
    )
    .unwrap();
    assert_eq!(ok.workflows[0].receipt_ttl.as_millis(), 3_600_000);
    let err = load(
        "[[workflow]]\nname = \"deploy\"\nchannel = \"#deploy\"\nreceipt_ttl = \"500ms\"\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("receipt_ttl must be at least 1s"), "{err}");
}

#[test]
fn no_workflow_is_refused_with_a_pasteable_snippet() {
    let c = Config::load_with(|_| None).unwrap();
    let p = c.workflow_problem().expect("no workflows is a problem");
    assert!(p.message.contains(WORKFLOW_SNIPPET), "{p}");
    let snippet: toml::Table = toml::from_str(WORKFLOW_SNIPPET).unwrap();
    assert_eq!(snippet["workflow"][0]["channel"].as_str(), Some("#deploy"));
}

/// The commented example in the repository stays valid as the config grows.
#[test]
fn the_shipped_example_config_is_clean() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/greenlight.toml"
    );
    let c = Config::load_with(|k| (k == "GREENLIGHT_CONFIG").then(|| path.to_owned()))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(c.workflow_problem().is_none());
    let deploy = c.workflow("deploy").unwrap();
    assert_eq!(deploy.rules.len(), 2);
    assert_eq!(deploy.on_approve.len(), 1);
    assert_eq!(c.alert_rules.len(), 2);
}

#[test]
fn secrets_do_not_print() {
    let s = Secret::new("xoxb-very-secret");
    assert!(!format!("{s:?}").contains("very-secret"));
}

#[test]
fn allowed_teams_take_workspace_and_organization_ids_only() {
    let workflow = "[[workflow]]\nname = \"deploy\"\nchannel = \"#deploys\"\n";
    let c = load(workflow, &[]).unwrap();
    assert!(c.slack.allowed_teams.is_empty());
    let c = load(
        &format!("[slack]\nallowed_teams = [\"T0PARTNER\", \"E0ORG\"]\n{workflow}"),
        &[],
    )
    .unwrap();
    assert_eq!(c.slack.allowed_teams, ["T0PARTNER", "E0ORG"]);
    let err = load(
        &format!("[slack]\nallowed_teams = [\"T0PARTNER\", \"U0BOB\"]\n{workflow}"),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("greenlight.toml:2:1: error:"), "{err}");
    assert!(
        err.contains(
            "\"U0BOB\" is not a Slack workspace id (T…) or Enterprise Grid organization id (E…)"
        ),
        "{err}"
    );
}

#[test]
fn signal_limits_load_with_their_defaults_and_are_checked() {
    let workflow = "[[workflow]]\nname = \"deploy\"\nchannel = \"#deploy\"\n";
    let c = load(workflow, &[]).unwrap();
    assert_eq!(c.limits.max_signals, 10_000);
    assert_eq!(c.limits.signal_retention.to_string(), "7d");
    let c = load(
        &format!("[limits]\nmax_signals = 50\nsignal_retention = \"36h\"\n{workflow}"),
        &[],
    )
    .unwrap();
    assert_eq!(c.limits.max_signals, 50);
    assert_eq!(c.limits.signal_retention.as_millis(), 36 * 3_600_000);
    let err = load(
        &format!("[limits]\nmax_signals = 0\nsignal_retention = \"0s\"\n{workflow}"),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("greenlight.toml:2:1: error: [limits] max_signals must be at least 1"),
        "{err}"
    );
    assert!(
        err.contains("signal_retention") && err.contains("greater than zero"),
        "{err}"
    );
}

#[test]
fn stages_load_in_order_with_their_defaults() {
    let c = load(
        r##"
[[workflow]]
name = "prod"
channel = "#deploy"
stages_order = "parallel"
denials_required = 2
notify_approvers = "dm"
notify_requester = false

[[workflow.stage]]
name = "owners"
approvers = ["S0SRE"]

[[workflow.stage]]
name = "security"
approvers = ["S0SEC", "U0CISO"]
approvals_required = 2
"##,
        &[],
    )
    .unwrap();
    let w = c.workflow("prod").unwrap();
    let p = w.policy();
    assert_eq!(p.stages_order, crate::domain::StagesOrder::Parallel);
    assert_eq!(p.denials_required, 2);
    let names: Vec<(&str, u32)> = p
        .stages
        .iter()
        .map(|s| (s.name.as_str(), s.approvals_required))
        .collect();
    assert_eq!(names, [("owners", 1), ("security", 2)]);
    assert_eq!(w.stages()[1].approvers.len(), 2);
    assert_eq!(w.all_approvers().count(), 3);
    assert_eq!(w.notify_approvers, NotifyApprovers::Dm);
    assert!(!w.tells_requester());
    let plain = Workflow::new("plain".parse().unwrap(), "#d".parse().unwrap());
    assert_eq!(plain.notify_approvers, NotifyApprovers::Thread);
    assert!(
        !plain.tells_requester(),
        "a workflow without stages keeps today's behaviour"
    );
    let err = load(
        "[[workflow]]\nname = \"w\"\nchannel = \"#d\"\nnotify_approvers = \"email\"\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("unknown variant `email`"), "{err}");
}

#[test]
fn check_refuses_stages_that_could_never_be_met() {
    let err = load(
        r##"
[[workflow]]
name = "prod"
channel = "#deploy"
approvers = ["U0ALICE"]
denials_required = 0

[[workflow.stage]]
name = "owners"
approvers = ["U0ALICE", "U0BOB"]
approvals_required = 3

[[workflow.stage]]
name = "owners"
approvers = []

[[workflow]]
name = "impossible"
channel = "#deploy"

[[workflow.stage]]
name = "a"
approvers = ["U0ALICE", "U0BOB"]
approvals_required = 2

[[workflow.stage]]
name = "b"
approvers = ["U0ALICE", "U0BOB"]

[[workflow]]
name = "order"
channel = "#deploy"
stages_order = "random"
"##,
        &[],
    )
    .unwrap_err()
    .to_string();
    for (line, what) in [
        (5, "approvers cannot be set beside [[workflow.stage]]"),
        (6, "denials_required must be at least 1"),
        (
            11,
            "stage \"owners\": approvals_required = 3 but only 2 approver(s)",
        ),
        (8, "stage \"owners\" is defined twice"),
        (15, "stage \"owners\" lists no approvers"),
        (
            21,
            "its stages need 3 approvals from distinct people but list only 2 people",
        ),
        (33, "unknown variant `random`"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("greenlight.toml:{line}:")) && l.contains(what)),
            "line {line}: {what}\n{err}"
        );
    }
    assert!(err.ends_with("8 problems in the configuration"), "{err}");
    // A group in any stage makes the count unknowable: no impossibility is claimed.
    let ok = load(
        "[[workflow]]\nname = \"g\"\nchannel = \"#d\"\n[[workflow.stage]]\nname = \"a\"\napprovers = [\"U0A\"]\n[[workflow.stage]]\nname = \"b\"\napprovers = [\"S0SEC\", \"U0A\"]\napprovals_required = 2\n",
        &[],
    );
    assert!(ok.is_ok(), "{:?}", ok.err().map(|e| e.to_string()));
}

#[test]
fn trust_policies_load_and_their_problems_are_named() {
    let ok = load(
        r##"
[[workflow]]
name = "deploy"
channel = "#deploy"

[[trust]]
name = "github-acme"
issuer = "https://token.actions.githubusercontent.com"
audience = "greenlight"
workflows = ["deploy"]
when = 'claims.repository_owner_id == "1234" && claims.ref.startsWith("refs/tags/")'
requester = "{{claims.repository}}@{{claims.ref}}"

[[trust]]
name = "local"
issuer = "http://127.0.0.1:8999"
audience = "greenlight"
scopes = ["request"]
max_token_lifetime = "10m"
"##,
        &[],
    )
    .unwrap();
    assert_eq!(ok.trust.len(), 2);
    let gh = &ok.trust[0];
    assert_eq!(gh.name, "github-acme");
    assert_eq!(
        gh.scopes,
        [crate::store::Scope::Request, crate::store::Scope::Read]
    );
    assert_eq!(gh.workflows.len(), 1);
    assert_eq!(gh.max_token_lifetime.as_millis(), 3_600_000);
    assert!(gh.when.is_some());
    assert_eq!(ok.trust[1].scopes, [crate::store::Scope::Request]);
    assert_eq!(ok.trust[1].max_token_lifetime.as_millis(), 600_000);

    let err = load(
        r##"
[[workflow]]
name = "deploy"
channel = "#deploy"

[[trust]]
name = "bad one"
issuer = "http://issuer.example.com"
scopes = ["request", "fly"]
workflows = ["nope"]
when = 'token.sub == "x"'
requester = "{{params.x}}"
max_token_lifetime = "2d"

[[trust]]
name = "dup"
issuer = "https://a.example.com"
audience = "g"
scopes = []

[[trust]]
name = "dup"
issuer = "https://a.example.com"
audience = "g"
"##,
        &[],
    )
    .unwrap_err()
    .to_string();
    for needle in [
        "trust name \"bad one\" must be 1 to 64 letters",
        "issuer \"http://issuer.example.com\" must be an https:// URL",
        "needs an audience",
        "unknown scope \"fly\"",
        "workflow \"nope\" is not a configured workflow",
        "token",
        "requester may only use {{claims.NAME}} placeholders, not {{params.x}}",
        "max_token_lifetime 2d is out of range",
        "scopes is empty",
        "trust \"dup\" is defined twice",
        "another [[trust]] already has issuer",
    ] {
        assert!(err.contains(needle), "{needle:?} not in:\n{err}");
    }
}

#[test]
fn allow_standing_is_bounded_and_needs_a_single_approval() {
    let ok = load(
        "[[workflow]]\nname = \"agents\"\nchannel = \"#agents\"\nallow_standing = \"8h\"\nstanding_match = [\"tool_name\"]\n",
        &[],
    )
    .unwrap();
    assert_eq!(
        ok.workflows[0].allow_standing.map(|d| d.as_millis()),
        Some(8 * 3_600_000)
    );
    let err = load(
        "[[workflow]]\nname = \"agents\"\nchannel = \"#agents\"\nallow_standing = \"8d\"\n\n\
         [[workflow]]\nname = \"pay\"\nchannel = \"#pay\"\napprovals_required = 2\nallow_standing = \"1h\"\n\n\
         [[workflow]]\nname = \"ops\"\nchannel = \"#ops\"\nstanding_match = []\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    for needle in [
        "allow_standing must be between 1m and 7d",
        "allow_standing needs approvals_required = 1",
        "standing_match needs allow_standing",
        "standing_match lists the params",
    ] {
        assert!(err.contains(needle), "{needle:?} not in:\n{err}");
    }
}

const GITHUB_TEST_KEY: &str = include_str!("../../tests/it/fixtures/github/app.pem");

#[test]
fn github_loads_with_the_key_from_a_file_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("app.pem");
    std::fs::write(&key, GITHUB_TEST_KEY).unwrap();
    let file = format!(
        r##"
[github]
app_id = 123456
private_key_path = "{}"
webhook_secret = "${{GITHUB_WEBHOOK_SECRET}}"

[[github.environment]]
name = "prod-*"
repositories = ["acme/*"]
workflow = "deploy"

[[github.environment]]
name = "staging"
workflow = "deploy"

[[workflow]]
name = "deploy"
channel = "#deploy"
"##,
        key.display()
    );
    let c = load(&file, &[("GITHUB_WEBHOOK_SECRET", "s3cret")]).unwrap();
    let gh = c.github.unwrap();
    assert_eq!(gh.app_id, 123456);
    assert_eq!(gh.webhook_secret.expose(), "s3cret");
    assert_eq!(gh.api_url, DEFAULT_GITHUB_API_URL);
    assert_eq!(
        gh.mapping("acme/api", "prod-eu")
            .map(|e| e.workflow.as_str()),
        Some("deploy")
    );
    assert!(gh.mapping("other/api", "prod-eu").is_none());
    assert!(gh.mapping("other/api", "staging").is_some());
    assert!(gh.mapping("acme/api", "dev").is_none());

    // The PEM text in the environment instead of a file; a literal secret; GHES.
    let file = "[github]\napp_id = 1\nwebhook_secret = \"literal\"\napi_url = \"https://ghe.example.com/api/v3/\"\n[[github.environment]]\nname = \"production\"\nworkflow = \"deploy\"\n[[workflow]]\nname = \"deploy\"\nchannel = \"#deploy\"\n";
    let c = load(file, &[("GREENLIGHT_GITHUB_PRIVATE_KEY", GITHUB_TEST_KEY)]).unwrap();
    let gh = c.github.unwrap();
    assert_eq!(gh.webhook_secret.expose(), "literal");
    assert_eq!(gh.api_url, "https://ghe.example.com/api/v3");
    // No [github]: none.
    let c = load(
        "[[workflow]]\nname = \"deploy\"\nchannel = \"#deploy\"\n",
        &[],
    )
    .unwrap();
    assert!(c.github.is_none());
}

#[test]
fn github_problems_are_listed_with_their_place() {
    let file = r##"[github]
app_id = 0
private_key_path = "/nonexistent/app.pem"
webhook_secret = "${UNSET_SECRET}"
api_url = "ftp://github"

[[github.environment]]
name = "prod"
repositories = ["acme"]
workflow = "nope"

[[workflow]]
name = "deploy"
channel = "#deploy"
"##;
    let err = load(file, &[]).unwrap_err();
    let problems = err.problems();
    let text = err.to_string();
    for (line, what) in [
        (2, "app_id is required"),
        (3, "cannot be read"),
        (4, "webhook_secret is empty"),
        (5, "not an http(s) URL"),
        (9, "is not owner/name"),
        (10, "workflow \"nope\" is not configured"),
    ] {
        assert!(
            problems
                .iter()
                .any(|p| p.line == line && p.message.contains(what)),
            "line {line}: {what}\n{text}"
        );
    }
    // A key that is not an RSA PEM.
    let file = "[github]\napp_id = 1\nwebhook_secret = \"s\"\n[[github.environment]]\nname = \"p\"\nworkflow = \"deploy\"\n[[workflow]]\nname = \"deploy\"\nchannel = \"#deploy\"\n";
    let err = load(file, &[("GREENLIGHT_GITHUB_PRIVATE_KEY", "not a key")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("GREENLIGHT_GITHUB_PRIVATE_KEY") && err.contains("not an RSA key"),
        "{err}"
    );
    // Without environments or a secret.
    let file = "[github]\napp_id = 1\n[[workflow]]\nname = \"deploy\"\nchannel = \"#deploy\"\n";
    let err = load(file, &[("GREENLIGHT_GITHUB_PRIVATE_KEY", GITHUB_TEST_KEY)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("webhook_secret is required"), "{err}");
    assert!(err.contains("maps no environment"), "{err}");
}
