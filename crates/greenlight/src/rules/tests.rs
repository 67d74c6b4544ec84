use super::*;
use serde_json::json;

fn params(json: serde_json::Value) -> Params {
    json.as_object().cloned().unwrap_or_default()
}

fn input(p: &Params) -> RuleInput<'_> {
    RuleInput {
        params: p,
        requester: Some("U0FRANK"),
        identity: None,
        workflow: "payments",
        title: "Pay invoice 7",
        now: Timestamp::from_second(1_800_000_000).unwrap(),
        signals: &[],
        history: &NO_HISTORY,
    }
}

static NO_HISTORY: std::sync::LazyLock<History> = std::sync::LazyLock::new(History::default);

fn rule(name: &str, when: &str, verdict: Verdict) -> Rule {
    Rule::compile(name, when, verdict).unwrap()
}

#[test]
fn approves_small_payments_and_says_why() {
    let rules = [rule(
        "small-payment",
        "params.amount < 500 && params.currency == 'USD'",
        Verdict::Approve,
    )];
    let p = params(serde_json::json!({"amount": 120, "currency": "USD"}));
    let out = evaluate(&rules, &input(&p));
    let m = out.decision.unwrap();
    assert_eq!(m.rule, "small-payment");
    assert_eq!(m.verdict, Verdict::Approve);
    assert!(m.summary.contains("amount = 120"), "{}", m.summary);
    let p = params(serde_json::json!({"amount": 900, "currency": "USD"}));
    assert_eq!(evaluate(&rules, &input(&p)), Evaluation::default());
}

#[test]
fn deny_beats_approve_whatever_the_order() {
    let rules = [
        rule("any", "true", Verdict::Approve),
        rule("weekend-freeze", "title.startsWith('Pay')", Verdict::Deny),
    ];
    let p = Params::new();
    let m = evaluate(&rules, &input(&p)).decision.unwrap();
    assert_eq!(
        (m.rule.as_str(), m.verdict),
        ("weekend-freeze", Verdict::Deny)
    );
}

#[test]
fn a_failing_rule_is_no_match_and_is_reported() {
    let rules = [
        rule("missing", "params.nope > 1", Verdict::Deny),
        rule("not-bool", "params.amount", Verdict::Approve),
    ];
    let p = params(serde_json::json!({"amount": 1}));
    let out = evaluate(&rules, &input(&p));
    assert_eq!(out.decision, None);
    assert_eq!(out.failures.len(), 2, "{out:?}");
    assert_eq!(out.failures[0].rule, "missing");
}

#[test]
fn names_and_time_are_there() {
    let p = Params::new();
    for when in [
        "requester == 'U0FRANK' && workflow == 'payments'",
        "now > timestamp('2020-01-01T00:00:00Z')",
        "[1, 2].all(x, x > 0) && [3].exists(y, y == 3)",
    ] {
        let out = evaluate(&[rule("r", when, Verdict::Approve)], &input(&p));
        assert!(out.decision.is_some(), "{when}: {out:?}");
    }
}

fn matches(when: &str, params_json: serde_json::Value) -> Result<bool, String> {
    let p = params(params_json);
    match rule("r", when, Verdict::Approve).run(&input(&p), &Arc::new(History::default())) {
        Run::Done(b) => Ok(b),
        Run::Failed(e) => Err(e),
        Run::Needs(calls) => Err(format!("needs {calls:?}")),
    }
}

fn signal(name: &str, value: serde_json::Value, held_secs: i64) -> Signal {
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let since = Timestamp::from_second(1_800_000_000 - held_secs).unwrap();
    Signal {
        name: name.parse().unwrap(),
        value,
        since,
        updated_at: now,
        set_by: "ci".into(),
        expires_at: None,
    }
}

/// The seed's example, written as is: green in staging for 24 hours.
#[test]
fn signals_have_a_value_and_how_long_it_held() {
    let when = r#"signals["staging/api"].value == "green" && signals["staging/api"].unchanged_for > duration("24h")"#;
    let r = rule("staging-green", when, Verdict::Approve);
    assert_eq!(
        r.signals_read(),
        &SignalsRead::Named(vec!["staging/api".parse().unwrap()])
    );
    let p = Params::new();
    let run = |signals: &[Signal]| {
        let input = RuleInput {
            signals,
            ..input(&p)
        };
        evaluate(std::slice::from_ref(&r), &input)
    };
    let day = 24 * 3600;
    assert!(
        run(&[signal("staging/api", json!("green"), day + 1)])
            .decision
            .is_some()
    );
    assert!(
        run(&[signal("staging/api", json!("green"), day - 60)])
            .decision
            .is_none()
    );
    let red = run(&[signal("staging/api", json!("red"), 2 * day)]);
    assert_eq!(
        (red.decision.clone(), red.failures.len()),
        (None, 0),
        "{red:?}"
    );
    // Unknown (never set, or past its ttl, so not among the live ones): no match, and why.
    let unknown = run(&[signal("prod/api", json!("green"), 2 * day)]);
    assert_eq!(unknown.decision, None);
    assert!(
        unknown.failures[0]
            .error
            .contains("signal \"staging/api\" is unknown"),
        "{unknown:?}"
    );
    let since = rule(
        "s",
        r#"signals["error_rate/api"].value < 0.01 && signals["error_rate/api"].since < now"#,
        Verdict::Approve,
    );
    let input = RuleInput {
        signals: &[signal("error_rate/api", json!(0.002), 60)],
        ..input(&p)
    };
    assert!(evaluate(&[since], &input).decision.is_some());
}

/// A rule that names every signal it reads literally needs only those loaded; one that uses
/// `signals` in any other way needs every live one; a workflow loads what its rules need
/// together.
#[test]
fn a_rule_needs_only_the_signals_it_names() {
    let read = |when: &str| rule("r", when, Verdict::Approve).signals_read().clone();
    let named =
        |names: &[&str]| SignalsRead::Named(names.iter().map(|n| n.parse().unwrap()).collect());
    for (when, expected) in [
        ("params.amount < 5", SignalsRead::Nothing),
        (
            r#"signals["b/x"].value == 1 && signals["a/y"].since < now"#,
            named(&["a/y", "b/x"]),
        ),
        ("signals.flag.value == true", named(&["flag"])),
        (
            "has(signals.flag) && signals['flag'].value",
            named(&["flag"]),
        ),
        (r#""staging/api" in signals"#, named(&["staging/api"])),
        (
            r#""Never A Name" in signals || signals["a"].value"#,
            named(&["a"]),
        ),
        // `signals` as a whole: every live signal.
        ("size(signals) > 2", SignalsRead::All),
        (
            r#"signals.exists(n, n.startsWith("freeze/") && signals[n].value == true)"#,
            SignalsRead::All,
        ),
        ("signals[params.name].value == 1", SignalsRead::All),
        ("params.name in signals", SignalsRead::All),
        (
            r#"signals["a"].value == 1 || size(signals) == 0"#,
            SignalsRead::All,
        ),
        // A comprehension's own variable named `signals` reads no signal.
        ("[1, 2].all(signals, signals > 0)", SignalsRead::Nothing),
    ] {
        assert_eq!(read(when), expected, "{when}");
    }

    let rules = |whens: &[&str]| -> Vec<Rule> {
        whens
            .iter()
            .map(|w| rule("r", w, Verdict::Approve))
            .collect()
    };
    assert_eq!(SignalsRead::of(&rules(&[])), SignalsRead::Nothing);
    assert_eq!(
        SignalsRead::of(&rules(&[
            "params.x == 1",
            r#"signals["b"].value == 1"#,
            r#"signals["a"].value == 1 && signals["b"].value == 2"#,
        ])),
        named(&["a", "b"])
    );
    assert_eq!(
        SignalsRead::of(&rules(&[r#"signals["a"].value == 1"#, "size(signals) > 0"])),
        SignalsRead::All
    );
}

/// History calls run in passes: the first asks, the second has the answer.
#[test]
fn history_functions_ask_then_decide() {
    let r = rule(
        "promoted",
        r#"approved_in("staging", "version", params.version) && count_denials("prod", "1h") < 3 && count_requests("prod", duration("10m")) < 100"#,
        Verdict::Approve,
    );
    let p = params(json!({"version": "1.4.2"}));
    let first = evaluate(std::slice::from_ref(&r), &input(&p));
    assert_eq!(first.decision, None);
    // CEL looks at both sides of && when one fails: every call is asked in one pass.
    assert_eq!(
        first.wanted,
        vec![
            HistoryCall::ApprovedIn {
                workflow: "staging".into(),
                param: "version".into(),
                value: json!("1.4.2"),
            },
            HistoryCall::CountDenials {
                workflow: "prod".into(),
                within_ms: 3_600_000
            },
            HistoryCall::CountRequests {
                workflow: "prod".into(),
                within_ms: 600_000,
            },
        ]
    );
    let mut history = History::default();
    for (call, answer) in first.wanted.iter().zip([
        HistoryAnswer::Bool(true),
        HistoryAnswer::Count(0),
        HistoryAnswer::Count(5),
    ]) {
        history.insert(call.clone(), answer);
    }
    let second = evaluate(
        std::slice::from_ref(&r),
        &RuleInput {
            history: &history,
            ..input(&p)
        },
    );
    assert!(
        second.wanted.is_empty() && second.decision.is_some(),
        "{second:?}"
    );
    history.insert(
        HistoryCall::ApprovedIn {
            workflow: "staging".into(),
            param: "version".into(),
            value: json!("1.4.2"),
        },
        HistoryAnswer::Bool(false),
    );
    let never = evaluate(
        &[r],
        &RuleInput {
            history: &history,
            ..input(&p)
        },
    );
    assert_eq!((never.decision, never.wanted.len()), (None, 0));
}

#[test]
fn functions_and_signal_names_are_checked_when_compiled() {
    let err = Rule::compile("r", "aproved_in('a', 'b', 1)", Verdict::Approve).unwrap_err();
    assert!(
        err[0].message.contains("unknown function `aproved_in`"),
        "{err:?}"
    );
    let err = Rule::compile("r", "count_requests('a')", Verdict::Approve).unwrap_err();
    assert!(err[0].message.contains("takes 2 arguments"), "{err:?}");
    let err = Rule::compile("r", "count_denials(1, 'soon') < 3", Verdict::Approve).unwrap_err();
    assert_eq!(err.len(), 2, "{err:?}");
    assert!(
        err[0].message.contains("workflow must be a string"),
        "{err:?}"
    );
    assert!(
        err[1].message.contains("\"soon\" is not a duration"),
        "{err:?}"
    );
    let ok = Rule::compile(
        "r",
        "approved_in('staging', 'version', params.v)",
        Verdict::Approve,
    )
    .unwrap();
    assert_eq!(ok.history_workflows, ["staging"]);
    let err =
        Rule::compile("r", "signals['Staging API'].value == 1", Verdict::Approve).unwrap_err();
    assert!(err[0].message.contains("can never be set"), "{err:?}");
    for fine in [
        "size(title) > 2 && title.startsWith('P') && int('3') == 3",
        "timestamp('2020-01-01T00:00:00Z') < now && duration('1h') > duration('1m')",
        "string(1) == '1' && double(1) == 1.0 && type(1) == int && has(params.x) == false",
    ] {
        assert!(Rule::compile("r", fine, Verdict::Approve).is_ok(), "{fine}");
    }
    let err = matches("count_requests('prod', params.w) > 1", json!({"w": "soon"})).unwrap_err();
    assert!(
        err.contains("count_requests") && err.contains("soon"),
        "{err}"
    );
}

/// Arithmetic and comparisons on params as people write them: whole numbers are `int`,
/// others `double`, and the two mix.
#[test]
fn numbers_in_params_do_ordinary_arithmetic() {
    for (amount, when, want) in [
        (json!(120), "params.amount + 1 > 100", true),
        (json!(120), "params.amount + 1 == 121", true),
        (json!(120), "params.amount - 200 == -80", true),
        (json!(120), "params.amount * 2 < 1000", true),
        (json!(120), "params.amount * 2 == 240", true),
        (json!(120), "params.amount < 500", true),
        (json!(120), "params.amount < 500.5", true),
        (json!(120), "params.amount * 1.1 > 100", true),
        (json!(120), "params.amount * 1.1 > 132.5", false),
        (json!(120), "params.amount / 7 == 17", true), // int / int stays int
        (json!(120), "params.amount / 7.0 > 17.1", true),
        (json!(120), "params.amount % 7 == 1", true),
        (json!(120), "params.amount == 120.0", true),
        (json!(120), "1.5 + params.amount == 121.5", true),
        (json!(120.5), "params.amount < 500", true),
        (json!(120.5), "params.amount + 1 > 100", true),
        (json!(120.5), "params.amount + 1 == 121.5", true),
        (json!(120.5), "params.amount * 2 == 241", true),
        (json!(120.5), "params.amount - 0.5 == 120", true),
        (json!(900), "params.amount < 500", false),
        (json!(-5), "params.amount < 0", true),
        (json!(-5), "params.amount + 10 == 5", true),
        (json!(-5), "params.amount * -2 == 10", true),
        (json!(-5.5), "params.amount * 2 == -11", true),
        (json!(-5), "-params.amount == 5", true),
        (json!(0), "params.amount + 0.0 == 0", true),
        (json!(120), "params.amount + 1u == 121", true),
        (json!(120), "type(params.amount) == int", true),
        (json!(120.5), "type(params.amount) == double", true),
    ] {
        let got = matches(when, json!({"amount": amount}));
        assert_eq!(got, Ok(want), "{when} with amount {amount}");
    }
}

/// Above i64::MAX a JSON integer becomes a `double`: it compares and computes, with
/// double precision (about 15 significant digits).
#[test]
fn integers_beyond_i64_are_doubles_and_int_overflow_is_no_match() {
    let huge = json!({"amount": u64::MAX});
    assert_eq!(
        matches("params.amount > 9223372036854775807", huge.clone()),
        Ok(true)
    );
    assert_eq!(matches("params.amount + 1 > 0", huge.clone()), Ok(true));
    assert_eq!(matches("params.amount < 500", huge.clone()), Ok(false));
    assert_eq!(matches("type(params.amount) == double", huge), Ok(true));
    let max = json!({"amount": i64::MAX});
    assert_eq!(matches("type(params.amount) == int", max.clone()), Ok(true));
    // Overflowing int arithmetic is an error: the rule does not match, and says why.
    let err = matches("params.amount + 1 > 0", max).unwrap_err();
    assert!(err.to_lowercase().contains("overflow"), "{err}");
}

/// What is not numeric keeps CEL's own meaning.
#[test]
fn other_operands_keep_their_meaning() {
    let p = json!({"tags": ["a"], "name": "api", "n": 2});
    for when in [
        "params.name + '-v2' == 'api-v2'",
        "params.tags + ['b'] == ['a', 'b']",
        "b'x' + b'y' == b'xy'",
        "[1, 2, 3].map(x, x * 1.5)[1] == 3.0",
        "[1, 2, 3].exists_one(x, x + params.n == 4)",
        "now - duration('1h') < now",
    ] {
        assert_eq!(matches(when, p.clone()), Ok(true), "{when}");
    }
    let err = matches("params.name + 1 > 0", p.clone()).unwrap_err();
    assert!(!err.is_empty());
    assert!(matches("params.name * 2.0 > 0", p).is_err());
}

#[test]
fn compile_errors_point_into_the_expression() {
    let err = Rule::compile("r", "params.amount < ", Verdict::Approve).unwrap_err();
    assert!(!err.is_empty());
    assert!(err[0].offset <= 16, "{err:?}");
    let err = Rule::compile("r", "param.amount < 5 || amount > 2", Verdict::Approve).unwrap_err();
    assert_eq!(err.len(), 2, "{err:?}");
    assert_eq!(err[0].offset, 0);
    assert!(err[0].message.contains("`param`"));
    assert_eq!(err[1].offset, 20, "{err:?}");
}

#[test]
fn rules_see_the_verified_identity_and_null_for_api_keys() {
    let p = Params::new();
    let prod = rule(
        "prod-from-ci",
        r#"identity != null && identity.trust == "github-acme" && identity.claims.environment == "production""#,
        Verdict::Approve,
    );
    let anonymous = rule("api-keys", "identity == null", Verdict::Deny);
    assert!(
        evaluate(std::slice::from_ref(&prod), &input(&p))
            .decision
            .is_none()
    );
    assert!(
        evaluate(std::slice::from_ref(&anonymous), &input(&p))
            .decision
            .is_some()
    );
    let identity = json!({
        "trust": "github-acme",
        "issuer": "https://token.actions.githubusercontent.com",
        "subject": "repo:acme/api:environment:production",
        "claims": {"environment": "production", "run_id": "8812"},
    });
    let with = RuleInput {
        identity: Some(&identity),
        ..input(&p)
    };
    let m = evaluate(&[anonymous, prod], &with).decision.unwrap();
    assert_eq!(m.rule, "prod-from-ci");
    assert!(Rule::compile("x", "identity.subject == 'a'", Verdict::Approve).is_ok());
}
