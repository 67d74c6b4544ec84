//! The store's promises, checked on every backend: one set of tests, run on a SQLite file and
//! on a fresh PostgreSQL database each (see `store_tests!` at the bottom). Races included:
//! concurrent creates, transitions carrying audit entries, votes and idempotent retries.

use std::collections::HashSet;
use std::sync::Arc;

use greenlight::config::Workflow;
use greenlight::domain::{
    ApiKeyId, Decision, DecisionKind, NewRequest, Pace, Params, Request, RequestId, SlackRef,
    Status, SystemClock, Verdict, Vote, WorkflowName,
};
use greenlight::service::{CreateInput, Service, ServiceError, VoteResult};
use greenlight::store::{
    self, ApiKey, CreateOutcome, Effect, Idempotency, JobReport, JobResult, JobState, Lane,
    ListFilter, NewAudit, Scope, Store, VotableFilter,
};

use crate::helpers::{Backend, TestDb, init};

fn request(i: usize) -> Request {
    Request::new(
        RequestId::generate(),
        NewRequest {
            workflow: "deploy".parse().unwrap(),
            title: format!("Deploy #{i}"),
            details: None,
            params: Params::new(),
            requester: None,
            channel: "#deploy".parse().unwrap(),
            expires_at: None,
            callback_url: None,
            remind_at: None,
        },
        jiff::Timestamp::now(),
    )
}

fn new_request(i: usize) -> NewRequest {
    NewRequest {
        workflow: "deploy".parse().unwrap(),
        title: format!("Deploy #{i}"),
        details: None,
        params: Params::new(),
        requester: None,
        channel: "#deploy".parse().unwrap(),
        expires_at: None,
        callback_url: None,
        remind_at: None,
    }
}

fn audit(r: &Request) -> Vec<NewAudit> {
    vec![NewAudit {
        request_id: Some(r.id.clone()),
        event: "request.created",
        actor: "test".into(),
        data: serde_json::json!({}),
    }]
}

/// Every lane, `n` jobs each.
fn lanes(n: u32) -> [(greenlight::store::Lane, u32); 3] {
    greenlight::store::Lane::ALL.map(|lane| (lane, n))
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

async fn open(db: &TestDb) -> Arc<dyn Store> {
    init();
    store::connect(&db.url).await.expect("store opens")
}

fn key(name: &str) -> ApiKey {
    ApiKey {
        id: ApiKeyId::generate(),
        name: name.into(),
        scopes: vec![Scope::Request, Scope::Read],
        created_at: jiff::Timestamp::now(),
        revoked_at: None,
    }
}

fn service(store: Arc<dyn Store>) -> Service {
    let workflow = Workflow::new("deploy".parse().unwrap(), "#deploy".parse().unwrap());
    Service::new(
        store,
        Arc::new(SystemClock),
        vec![workflow],
        Arc::new(tokio::sync::Notify::new()),
    )
}

fn input(title: &str, idempotency_key: Option<&str>) -> CreateInput {
    CreateInput {
        title: title.into(),
        idempotency_key: idempotency_key.map(str::to_owned),
        ..Default::default()
    }
}

/// A request's fields and buttons are kept as asked, and each vote's answers with it; the
/// answers of the approving vote come back as `response`, typed.
async fn fields_and_answers_are_kept_typed(db: TestDb) {
    let store = open(&db).await;
    let now = now_ms();
    let mut r = request(3);
    r.fields = greenlight::domain::check_fields(
        serde_json::from_value(serde_json::json!([
            {"name": "env", "type": "select", "options": ["a", "b"], "default": "a"},
            {"name": "n", "type": "number", "min": 1}
        ]))
        .unwrap(),
    )
    .unwrap();
    r.buttons = greenlight::domain::Buttons::Answer;
    store
        .create_request(&r, None, &audit(&r), &[], now)
        .await
        .unwrap();
    let mut stored = store.get_request(&r.id).await.unwrap().unwrap();
    assert_eq!(stored.fields, r.fields);
    assert_eq!(stored.buttons, greenlight::domain::Buttons::Answer);
    assert_eq!(stored.response, None);
    let expected = stored.version;
    let answers = serde_json::json!({"env": "b", "n": 2.5});
    stored
        .cast(
            Vote {
                by: "U0ALICE".into(),
                name: None,
                kind: DecisionKind::User,
                verdict: Verdict::Approve,
                reason: None,
                stage: None,
                response: answers.as_object().cloned(),
                edits: None,
            },
            &greenlight::domain::Policy::default(),
            jiff::Timestamp::now(),
        )
        .unwrap();
    assert!(
        store
            .save_transition(&stored, expected, &audit(&stored), &[], now)
            .await
            .unwrap()
    );
    let after = store.get_request(&r.id).await.unwrap().unwrap();
    assert_eq!(after.status, Status::Approved);
    assert_eq!(after.response.as_ref(), answers.as_object());
    assert_eq!(after.decisions[0].response.as_ref(), answers.as_object());
    // A request asking nothing more keeps no form.
    let plain = request(4);
    store
        .create_request(&plain, None, &audit(&plain), &[], now)
        .await
        .unwrap();
    let plain = store.get_request(&plain.id).await.unwrap().unwrap();
    assert!(plain.fields.is_empty());
    assert_eq!(plain.buttons, greenlight::domain::Buttons::ApproveDeny);
}

/// Creates every request at once, each with its audit entry and a post job.
async fn create_at_once(
    store: &Arc<dyn Store>,
    requests: &[Request],
    now: i64,
) -> Vec<greenlight::store::StoreResult<CreateOutcome>> {
    let writes = requests.iter().map(|r| {
        let store = store.clone();
        let r = r.clone();
        async move {
            let effects = [Effect::SlackPost {
                request_id: r.id.clone(),
            }];
            store
                .create_request(&r, None, &audit(&r), &effects, now)
                .await
        }
    });
    futures::future::join_all(writes).await
}

/// Group commit (both stores): 300 writes at once all land,
/// and a failing one fails alone, leaking nothing.
async fn concurrent_writes_all_land_and_a_failing_one_fails_alone(db: TestDb) {
    let store = open(&db).await;
    let now = now_ms();
    let first = request(0);
    store
        .create_request(&first, None, &audit(&first), &[], now)
        .await
        .unwrap();

    // 300 creates at once, one of them a duplicate id that must fail on its own.
    let requests: Vec<Request> = (1..=300).map(request).collect();
    let mut sent = requests.clone();
    sent[150] = first.clone();
    let results = create_at_once(&store, &sent, now).await;
    let failed: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_err())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(failed, [150], "only the duplicate fails");
    assert!(
        results
            .iter()
            .enumerate()
            .all(|(i, r)| i == 150 || matches!(r, Ok(CreateOutcome::Created(_))))
    );
    // Everything acknowledged is there, with its audit entry and its outbox job, and nothing
    // of the failed write leaked in.
    let entries = store.list_audit(0, 1000).await.unwrap();
    assert_eq!(entries.len(), 300);
    for (i, r) in requests.iter().enumerate() {
        let stored = store.get_request(&r.id).await.unwrap();
        assert_eq!(stored.is_some(), i != 150, "request {i}");
        if i != 150 {
            assert_eq!(store.deliveries(&r.id).await.unwrap().len(), 1);
        }
    }
    assert_eq!(
        store.deliveries(&first.id).await.unwrap().len(),
        0,
        "the failed duplicate queued nothing"
    );
}

/// A statement the database refuses (PostgreSQL refuses NUL in text) among 100 concurrent
/// creates: on PostgreSQL it fails alone (its batch runs again, each statement in a savepoint)
/// and every other create lands with its audit entry and job; SQLite stores it.
async fn a_statement_refused_in_a_batch_fails_alone(db: TestDb) {
    let store = open(&db).await;
    let now = now_ms();
    let mut requests: Vec<Request> = (0..100).map(request).collect();
    requests[50].title = "Deploy \u{0} #50".into();
    let results = create_at_once(&store, &requests, now).await;
    for (i, (r, result)) in requests.iter().zip(&results).enumerate() {
        let stored = store.get_request(&r.id).await.unwrap();
        let jobs = store.deliveries(&r.id).await.unwrap().len();
        match result {
            Ok(CreateOutcome::Created(_)) => {
                assert!(stored.is_some(), "request {i}");
                assert_eq!(jobs, 1, "request {i}");
            }
            Err(e) => {
                assert_eq!(i, 50, "only the refused one fails: {e}");
                assert!(stored.is_none() && jobs == 0, "nothing of it leaked");
            }
            Ok(other) => panic!("request {i}: {other:?}"),
        }
    }
    let failed = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(store.list_audit(0, 1000).await.unwrap().len(), 100 - failed);
}

/// Who a workload token proved the requester to be is kept with the request as written,
/// through a transition.
async fn a_verified_identity_is_kept_with_its_request(db: TestDb) {
    let store = open(&db).await;
    let now = now_ms();
    let mut r = request(3);
    let identity = greenlight::domain::Identity {
        trust: "github-acme".into(),
        issuer: "https://token.actions.githubusercontent.com".into(),
        subject: "repo:acme/api:ref:refs/tags/v1.2".into(),
        claims: serde_json::json!({"run_id": "8812", "nested": {"a": [1, 2.5, true]}})
            .as_object()
            .unwrap()
            .clone(),
    };
    r.identity = Some(identity.clone());
    store
        .create_request(&r, None, &audit(&r), &[], now)
        .await
        .unwrap();
    let mut stored = store.get_request(&r.id).await.unwrap().unwrap();
    assert_eq!(stored.identity.as_ref(), Some(&identity));
    let expected = stored.version;
    stored.cancel("ci", None, jiff::Timestamp::now()).unwrap();
    assert!(
        store
            .save_transition(&stored, expected, &audit(&stored), &[], now)
            .await
            .unwrap()
    );
    let after = store.get_request(&r.id).await.unwrap().unwrap();
    assert_eq!(after.identity, Some(identity));
    let plain = request(4);
    store
        .create_request(&plain, None, &audit(&plain), &[], now)
        .await
        .unwrap();
    assert_eq!(
        store
            .get_request(&plain.id)
            .await
            .unwrap()
            .unwrap()
            .identity,
        None
    );
}

/// Standing approvals: stored with their audit entry, found by workflow and caller while
/// live, listed, revoked once (the second revoke changes nothing).
async fn standing_approvals_are_found_listed_and_revoked_once(db: TestDb) {
    use greenlight::domain::{StandingApproval, StandingId};
    let store = open(&db).await;
    let now = now_ms();
    let at = |ms: i64| jiff::Timestamp::from_millisecond(ms).unwrap();
    let caller = ApiKeyId::generate();
    let s = StandingApproval {
        id: StandingId::generate(),
        workflow: "deploy".parse().unwrap(),
        granted_by: "U0ALICE".into(),
        caller: caller.clone(),
        caller_name: "claude".into(),
        r#match: serde_json::json!({"tool_name": "Bash"})
            .as_object()
            .unwrap()
            .clone(),
        request_id: RequestId::generate(),
        created_at: at(now),
        expires_at: at(now + 3_600_000),
        revoked_at: None,
        revoked_by: None,
    };
    let granted = NewAudit {
        request_id: Some(s.request_id.clone()),
        event: "standing.granted",
        actor: "U0ALICE".into(),
        data: serde_json::json!({"standing": s.id}),
    };
    // Its message is rewritten at once and again when it runs out.
    let effects = [
        Effect::SlackUpdate {
            request_id: s.request_id.clone(),
        },
        Effect::SlackUpdateAt {
            request_id: s.request_id.clone(),
            at: now + 3_600_000,
        },
    ];
    store
        .add_standing(&s, &[granted], &effects, now)
        .await
        .unwrap();
    let slack = [(Lane::Slack, 10)];
    // Leased past the expiry, so that the later claim finds only the later job.
    let claimed = store
        .claim_jobs("w", &slack, now, 2 * 3_600_000)
        .await
        .unwrap();
    assert_eq!(
        claimed.len(),
        1,
        "only the immediate update is due: {:?}",
        claimed.iter().map(|j| &j.effect).collect::<Vec<_>>()
    );
    assert_eq!(claimed[0].effect, effects[0]);
    assert_eq!(
        store.next_job_due(&[Lane::Slack], now).await.unwrap(),
        Some(now + 3_600_000)
    );
    let later = store
        .claim_jobs("w", &slack, now + 3_600_000, 60_000)
        .await
        .unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].effect, effects[1]);
    assert_eq!(
        store.standing_of_request(&s.request_id).await.unwrap(),
        std::slice::from_ref(&s)
    );
    assert!(
        store
            .standing_of_request(&RequestId::generate())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .live_standing_granted_by("U0ALICE", now)
            .await
            .unwrap(),
        std::slice::from_ref(&s)
    );
    assert!(
        store
            .live_standing_granted_by("U0BOB", now)
            .await
            .unwrap()
            .is_empty()
    );
    let deploy: WorkflowName = "deploy".parse().unwrap();
    assert_eq!(
        store.standing_for(&deploy, &caller, now).await.unwrap(),
        std::slice::from_ref(&s)
    );
    assert!(
        store
            .standing_for(&deploy, &ApiKeyId::generate(), now)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .standing_for(&deploy, &caller, now + 3_600_000)
            .await
            .unwrap()
            .is_empty(),
        "expired"
    );
    assert_eq!(store.live_standing(now).await.unwrap().len(), 1);
    let revoked = NewAudit {
        request_id: Some(s.request_id.clone()),
        event: "standing.revoked",
        actor: "key:ops".into(),
        data: serde_json::json!({"standing": s.id}),
    };
    assert!(
        store
            .revoke_standing(
                &s.id,
                "key:ops",
                now + 1,
                std::slice::from_ref(&revoked),
                &effects[..1]
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_standing(&s.id, "key:ops", now + 2, &[revoked], &effects[..1])
            .await
            .unwrap()
    );
    assert!(
        store
            .standing_for(&deploy, &caller, now + 3)
            .await
            .unwrap()
            .is_empty()
    );
    let stored = store.get_standing(&s.id).await.unwrap().unwrap();
    assert_eq!(stored.revoked_by.as_deref(), Some("key:ops"));
    assert!(
        store
            .live_standing_granted_by("U0ALICE", now + 3)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.standing_of_request(&s.request_id).await.unwrap()[0].revoked_at,
        stored.revoked_at,
        "a revoked one is still found by its request"
    );
    let events: Vec<String> = store
        .list_audit(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(events, ["standing.granted", "standing.revoked"]);
}

/// 20 concurrent transitions of one request, each with its audit entry and outbox job: one
/// wins, and only the winner's entry and job are written.
/// Copies of a message in direct messages are kept on the request, in order, and a state change
/// (which writes the request) neither drops them nor is stopped by them.
async fn direct_message_copies_are_kept_through_transitions(db: TestDb) {
    let store = open(&db).await;
    let now = now_ms();
    let r = request(2);
    store
        .create_request(&r, None, &audit(&r), &[], now)
        .await
        .unwrap();
    assert!(
        store
            .get_request(&r.id)
            .await
            .unwrap()
            .unwrap()
            .slack_copies
            .is_empty()
    );
    for (channel, ts) in [
        ("D0CAROL", "1700000000.000200"),
        ("D0DAVE", "1700000000.000300"),
    ] {
        store.add_slack_copy(&r.id, channel, ts).await.unwrap();
    }
    let mut stored = store.get_request(&r.id).await.unwrap().unwrap();
    let expected = stored.version;
    stored.cancel("ci", None, jiff::Timestamp::now()).unwrap();
    assert!(
        store
            .save_transition(&stored, expected, &audit(&stored), &[], now)
            .await
            .unwrap()
    );
    let after = store.get_request(&r.id).await.unwrap().unwrap();
    assert_eq!(after.status, Status::Cancelled);
    let copies: Vec<(&str, &str)> = after
        .slack_copies
        .iter()
        .map(|c| (c.channel.as_str(), c.ts.as_str()))
        .collect();
    assert_eq!(
        copies,
        [
            ("D0CAROL", "1700000000.000200"),
            ("D0DAVE", "1700000000.000300")
        ]
    );
}

async fn racing_transitions_write_only_the_winner(db: TestDb) {
    let store = open(&db).await;
    let now = now_ms();
    let target = request(1);
    store
        .create_request(&target, None, &audit(&target), &[], now)
        .await
        .unwrap();
    let audit_before = store.list_audit(0, 1000).await.unwrap().len();
    let racers = (0..20).map(|i| {
        let store = store.clone();
        let mut r = target.clone();
        async move {
            let expected = r.version;
            r.cancel(&format!("racer-{i}"), None, jiff::Timestamp::now())
                .unwrap();
            let entries = [NewAudit {
                request_id: Some(r.id.clone()),
                event: "request.cancelled",
                actor: format!("racer-{i}"),
                data: serde_json::json!({}),
            }];
            let effects = [Effect::SlackPost {
                request_id: r.id.clone(),
            }];
            store
                .save_transition(&r, expected, &entries, &effects, now)
                .await
                .unwrap()
        }
    });
    let won = futures::future::join_all(racers)
        .await
        .into_iter()
        .filter(|w| *w)
        .count();
    assert_eq!(won, 1);
    let entries = store.list_audit(0, 1000).await.unwrap();
    assert_eq!(
        entries.len(),
        audit_before + 1,
        "only the winner is audited"
    );
    let stored = store.get_request(&target.id).await.unwrap().unwrap();
    assert_eq!(stored.status, Status::Cancelled);
    assert_eq!(entries.last().unwrap().actor, stored.decided_by.unwrap());
    assert_eq!(
        store.deliveries(&target.id).await.unwrap().len(),
        1,
        "only the winner's job is queued"
    );
}

/// 20 people click at once through the service: exactly one decision, 19 told it is decided.
async fn twenty_concurrent_votes_make_one_decision(db: TestDb) {
    let store = open(&db).await;
    let service = Arc::new(service(store.clone()));
    let (created, _) = service
        .create(input("Deploy", None), &key("ci"))
        .await
        .unwrap();
    let votes = (0..20).map(|i| {
        let service = service.clone();
        let id = created.id.clone();
        async move {
            let vote = Vote {
                by: format!("U0VOTER{i:02}"),
                name: None,
                kind: DecisionKind::User,
                verdict: if i % 2 == 0 {
                    Verdict::Approve
                } else {
                    Verdict::Deny
                },
                reason: None,
                stage: None,
                response: None,
                edits: None,
            };
            service.vote(&id, vote).await
        }
    });
    let results = futures::future::join_all(votes).await;
    let decided = results
        .iter()
        .filter(|r| matches!(r, Ok(VoteResult::Decided(_))))
        .count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(ServiceError::Rejected(_))))
        .count();
    assert_eq!((decided, refused), (1, 19), "{results:?}");
    let stored = store.get_request(&created.id).await.unwrap().unwrap();
    assert!(stored.status.is_final());
    assert_eq!(stored.decisions.len(), 1);
    let decisions: Vec<_> = store
        .list_audit(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event == "request.approved" || e.event == "request.denied")
        .collect();
    assert_eq!(decisions.len(), 1, "one decision in the audit log");
}

/// A client retrying one create eight times at once gets one request; the same key with
/// another body is refused.
async fn idempotent_retries_under_concurrency_make_one_request(db: TestDb) {
    let store = open(&db).await;
    let service = Arc::new(service(store.clone()));
    let caller = key("ci");
    let tries = (0..8).map(|_| {
        let service = service.clone();
        let caller = caller.clone();
        async move {
            service
                .create(input("Deploy api", Some("build-1234")), &caller)
                .await
        }
    });
    let results = futures::future::join_all(tries).await;
    let ids: std::collections::HashSet<String> = results
        .iter()
        .map(|r| r.as_ref().expect("every try succeeds").0.id.to_string())
        .collect();
    assert_eq!(ids.len(), 1, "one request for one key");
    let new = results
        .iter()
        .filter(|r| r.as_ref().unwrap().1.is_some())
        .count();
    assert_eq!(new, 1, "one try created it, the others found it");
    let reused = service
        .create(input("Something else", Some("build-1234")), &caller)
        .await;
    assert!(matches!(reused, Err(ServiceError::IdempotencyKeyReused)));
    // Another caller's key of the same name is another request.
    let other = service
        .create(input("Deploy api", Some("build-1234")), &key("other"))
        .await
        .unwrap();
    assert!(!ids.contains(&other.0.id.to_string()));
    let all = store
        .list_requests(&ListFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
}

/// Jobs are claimed once, come back when a lease runs out, and record their attempts.
async fn outbox_claims_leases_and_attempts(db: TestDb) {
    let store = open(&db).await;
    let now = now_ms();
    let r = request(2);
    let effects: Vec<Effect> = (0..10)
        .map(|i| Effect::SlackEphemeral {
            channel: "C0DEPLOY".into(),
            user: format!("U{i}"),
            text: "hi".into(),
        })
        .chain([Effect::SlackPost {
            request_id: r.id.clone(),
        }])
        .collect();
    store
        .create_request(&r, None, &audit(&r), &effects, now)
        .await
        .unwrap();
    // Two workers claiming at once never get the same job.
    let six = lanes(6);
    let (a, b) = tokio::join!(
        store.claim_jobs("worker-a", &six, now, 60_000),
        store.claim_jobs("worker-b", &six, now, 60_000)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len() + b.len(), 11);
    let mut ids: Vec<i64> = a.iter().chain(&b).map(|j| j.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 11, "no job claimed twice");
    assert!(
        store
            .claim_jobs("worker-c", &lanes(10), now, 60_000)
            .await
            .unwrap()
            .is_empty()
    );
    // Jobs under a live lease are not waited for; once the leases run out they are due.
    assert_eq!(store.next_job_due(&Lane::ALL, now).await.unwrap(), None);
    assert_eq!(
        store.next_job_due(&Lane::ALL, now + 61_000).await.unwrap(),
        Some(now)
    );
    // Only the lanes asked about count: these jobs are all Slack's.
    assert_eq!(
        store
            .next_job_due(&[Lane::Hooks, Lane::Callbacks], now + 61_000)
            .await
            .unwrap(),
        None
    );
    // A lease that ran out (a dead worker) lets another worker take the job.
    let later = now + 61_000;
    let again = store
        .claim_jobs("worker-c", &lanes(20), later, 60_000)
        .await
        .unwrap();
    assert_eq!(again.len(), 11);
    let post = again
        .iter()
        .find(|j| matches!(j.effect, Effect::SlackPost { .. }))
        .unwrap();
    let retry = JobReport::new(
        JobResult::Retry {
            at: later + 5_000,
            error: "Slack answered 500".into(),
            counts: true,
        },
        true,
    );
    store.finish_job(post.id, later, &retry).await.unwrap();
    let shown = store.deliveries(&r.id).await.unwrap();
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].state, JobState::Pending);
    assert_eq!(shown[0].attempts, 1);
    assert_eq!(shown[0].last_error.as_deref(), Some("Slack answered 500"));
    assert_eq!(shown[0].recent_attempts[0].outcome, "failed");
    // Not due before its retry time, due after.
    assert!(
        store
            .claim_jobs("worker-c", &lanes(20), later + 1_000, 60_000)
            .await
            .unwrap()
            .iter()
            .all(|j| j.id != post.id)
    );
    let due = store
        .next_job_due(&Lane::ALL, later)
        .await
        .unwrap()
        .unwrap();
    assert!(due >= later, "{due} < {later}");
    let done = store
        .claim_jobs("worker-c", &lanes(20), later + 5_000, 60_000)
        .await
        .unwrap();
    assert!(done.iter().any(|j| j.id == post.id));
    assert_eq!(store.get_request(&r.id).await.unwrap().unwrap().slack, None);
    // The message a post made is recorded on its request with the job's result.
    let posted = SlackRef {
        channel: "C0DEPLOY".into(),
        ts: "1700000000.000100".into(),
    };
    let mut sent = JobReport::new(JobResult::Done, true);
    sent.posted = Some(posted.clone());
    store
        .finish_job(post.id, later + 5_000, &sent)
        .await
        .unwrap();
    let shown = store.deliveries(&r.id).await.unwrap();
    assert_eq!((shown[0].state, shown[0].attempts), (JobState::Done, 2));
    assert_eq!(
        store.get_request(&r.id).await.unwrap().unwrap().slack,
        Some(posted)
    );
    // A clean stop frees the leases a worker holds.
    store.release_leases("worker-c").await.unwrap();
}

/// Pending updates of one message collapse into one; a post and its update queue in order.
async fn message_updates_collapse(db: TestDb) {
    let store = open(&db).await;
    let now = now_ms();
    let mut r = request(3);
    store
        .create_request(&r, None, &audit(&r), &[], now)
        .await
        .unwrap();
    for i in 0..3 {
        let expected = r.version;
        r.reminders = i + 1;
        r.version += 1;
        let update = [Effect::SlackUpdate {
            request_id: r.id.clone(),
        }];
        assert!(
            store
                .save_transition(&r, expected, &[], &update, now)
                .await
                .unwrap()
        );
    }
    let jobs = store.deliveries(&r.id).await.unwrap();
    assert_eq!(jobs.len(), 1, "three updates, one waiting job");
}

async fn due_requests_are_found(db: TestDb) {
    let store = open(&db).await;
    let now = now_ms();
    let mut due = request(4);
    due.expires_at = Some(jiff::Timestamp::from_millisecond(now - 1_000).unwrap());
    let mut later = request(5);
    later.expires_at = Some(jiff::Timestamp::from_millisecond(now + 60_000).unwrap());
    for r in [&due, &later] {
        store
            .create_request(r, None, &audit(r), &[], now)
            .await
            .unwrap();
    }
    assert_eq!(store.due_requests(now, 10).await.unwrap(), [due.id.clone()]);
}

async fn the_first_secret_stored_wins(db: TestDb) {
    let store = open(&db).await;
    let tries = (0..10).map(|i| {
        let store = store.clone();
        async move {
            store
                .meta_get_or_insert("secret", &format!("value-{i}"))
                .await
        }
    });
    let values: std::collections::HashSet<String> = futures::future::join_all(tries)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(values.len(), 1, "{values:?}");
}

async fn api_keys_are_found_by_hash_and_revoked(db: TestDb) {
    let store = open(&db).await;
    let k = key("deployer");
    store.insert_api_key(&k, "hash-1").await.unwrap();
    let found = store.find_api_key("hash-1").await.unwrap().unwrap();
    assert_eq!(
        (found.id.clone(), found.scopes.clone()),
        (k.id.clone(), k.scopes)
    );
    assert!(store.find_api_key("hash-2").await.unwrap().is_none());
    assert!(
        store
            .revoke_api_key(&k.id, jiff::Timestamp::now())
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_api_key(&k.id, jiff::Timestamp::now())
            .await
            .unwrap()
    );
    let listed = store.list_api_keys().await.unwrap();
    assert!(listed[0].revoked_at.is_some());
}

async fn lists_filter_and_page(db: TestDb) {
    let store = open(&db).await;
    let now = now_ms();
    let mut made = Vec::new();
    for i in 0..5 {
        let mut r = request(10 + i);
        if i % 2 == 1 {
            r.cancel("ops", None, jiff::Timestamp::now()).unwrap();
        }
        store
            .create_request(&r, None, &audit(&r), &[], now)
            .await
            .unwrap();
        made.push(r);
    }
    let page = |status, before, limit| ListFilter {
        status,
        workflow: None,
        before,
        limit,
    };
    let first = store.list_requests(&page(None, None, 3)).await.unwrap();
    assert_eq!(first.len(), 3);
    assert!(first.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let rest = store
        .list_requests(&page(None, Some(first[2].id.clone()), 3))
        .await
        .unwrap();
    assert_eq!(rest.len(), 2);
    let cancelled = store
        .list_requests(&page(Some(Status::Cancelled), None, 10))
        .await
        .unwrap();
    assert_eq!(cancelled.len(), 2);
    let entries = store.list_audit(0, 2).await.unwrap();
    let next = store.list_audit(entries[1].id, 10).await.unwrap();
    assert_eq!(entries.len() + next.len(), 5);
    assert!(next.iter().all(|e| e.id > entries[1].id));
}

async fn slack_refs_and_action_results_are_kept(db: TestDb) {
    let store = open(&db).await;
    let now = now_ms();
    let r = request(20);
    let hook: greenlight::policy::hooks::ActionHook =
        toml::from_str("name = \"Deploy\"\nurl = \"https://ci.example.com/\"").unwrap();
    let effects = [Effect::ActionHook {
        request_id: r.id.clone(),
        hook,
    }];
    store
        .create_request(&r, None, &audit(&r), &effects, now)
        .await
        .unwrap();
    store
        .set_slack_message(&r.id, "C0DEPLOY", "1700000000.000100")
        .await
        .unwrap();
    let stored = store.get_request(&r.id).await.unwrap().unwrap();
    assert_eq!(stored.slack.unwrap().ts, "1700000000.000100");
    let job = store
        .claim_jobs("w", &lanes(10), now, 60_000)
        .await
        .unwrap()
        .remove(0);
    let mut report = JobReport::new(JobResult::Done, true);
    report.action = Some(greenlight::store::ActionResult {
        name: "Deploy".into(),
        ok: true,
        summary: "HTTP 201".into(),
        attempts: 1,
        at: jiff::Timestamp::now(),
    });
    report.audit.push(NewAudit {
        request_id: Some(r.id.clone()),
        event: "action.succeeded",
        actor: "greenlight".into(),
        data: serde_json::json!({"name": "Deploy"}),
    });
    report.effects.push(Effect::SlackUpdate {
        request_id: r.id.clone(),
    });
    store.finish_job(job.id, now, &report).await.unwrap();
    let actions = store.action_results(&r.id).await.unwrap();
    assert_eq!((actions.len(), actions[0].ok), (1, true));
    assert_eq!(store.deliveries(&r.id).await.unwrap().len(), 2);
    assert!(
        store
            .list_audit(0, 10)
            .await
            .unwrap()
            .iter()
            .any(|e| e.event == "action.succeeded")
    );
}

/// Pacing, pauses and message leases: one writer per message, posts paced, pauses seen.
async fn coordination_is_exclusive_and_paced(db: TestDb) {
    let store = open(&db).await;
    let shared = store.coordination();
    let now = now_ms();
    let id = RequestId::generate().to_string();
    let tries = (0..10).map(|i| {
        let shared = shared.clone();
        let id = id.clone();
        async move {
            shared
                .lease_message(id.as_str(), &format!("task-{i}"), now + 60_000, now)
                .await
                .unwrap()
        }
    });
    let won = futures::future::join_all(tries)
        .await
        .into_iter()
        .filter(|w| *w)
        .count();
    assert_eq!(won, 1, "one task holds a message at a time");
    // A lease that ran out is taken over; a released one is free at once.
    assert!(
        shared
            .lease_message(id.as_str(), "late", now + 120_000, now + 61_000)
            .await
            .unwrap()
    );
    shared.release_message(id.as_str(), "late").await.unwrap();
    assert!(
        shared
            .lease_message(id.as_str(), "next", now + 60_000, now)
            .await
            .unwrap()
    );

    let pace = Pace {
        per_second: 1.0,
        burst: 2,
    };
    let mut results = Vec::new();
    for _ in 0..4 {
        results.push(shared.take_post_slot("C0DEPLOY", now, pace).await.unwrap());
    }
    assert_eq!(results[..2], [Ok(()), Ok(())]);
    assert_eq!(results[2..], [Err(now + 1000), Err(now + 2000)]);
    assert_eq!(
        shared.take_post_slot("C0OTHER", now, pace).await.unwrap(),
        Ok(()),
        "each channel has its own pace"
    );

    shared.pause("chat.update", now + 5_000).await.unwrap();
    assert_eq!(
        shared.paused_until("chat.update", now).await.unwrap(),
        Some(now + 5_000)
    );
    assert_eq!(
        shared.paused_until("chat.postMessage", now).await.unwrap(),
        None
    );
    assert_eq!(
        shared
            .paused_until("chat.update", now + 6_000)
            .await
            .unwrap(),
        None
    );
}

/// Notices to one person change no request and are still queued durably.
async fn records_without_a_request(db: TestDb) {
    let store = open(&db).await;
    let notice = Effect::SlackEphemeral {
        channel: "C0DEPLOY".into(),
        user: "U0ALICE".into(),
        text: "already approved".into(),
    };
    store.record(&[], &[notice], now_ms()).await.unwrap();
    let jobs = store
        .claim_jobs("w", &lanes(10), now_ms(), 60_000)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    assert!(matches!(jobs[0].effect, Effect::SlackEphemeral { .. }));
}

/// A create gives back the jobs it wrote for its request, as a read of its deliveries shows
/// them: not the ones for others, not one that collapsed into a job already waiting.
async fn a_create_shows_the_jobs_it_wrote(db: TestDb) {
    let store = open(&db).await;
    let now = now_ms();
    let home = Effect::SlackHomeRefresh {
        user: "U0ALICE".into(),
        notice: None,
    };
    store
        .record(&[], std::slice::from_ref(&home), now)
        .await
        .unwrap();
    let r = request(40);
    let effects = [
        Effect::SlackPost {
            request_id: r.id.clone(),
        },
        home,
        Effect::SlackThreadReply {
            request_id: r.id.clone(),
            text: "first".into(),
        },
        Effect::SlackUpdate {
            request_id: r.id.clone(),
        },
    ];
    let outcome = store
        .create_request(&r, None, &audit(&r), &effects, now)
        .await
        .unwrap();
    let CreateOutcome::Created(written) = outcome else {
        panic!("not created: {outcome:?}");
    };
    let kinds: Vec<&str> = written.iter().map(|d| d.kind.as_str()).collect();
    assert_eq!(kinds, ["slack_post", "slack_thread_reply", "slack_update"]);
    assert!(
        written
            .iter()
            .all(|d| d.state == JobState::Pending && d.attempts == 0)
    );
    let read = store.deliveries(&r.id).await.unwrap();
    assert_eq!(
        serde_json::to_value(&written).unwrap(),
        serde_json::to_value(&read).unwrap(),
        "what the create gave back is what a read finds"
    );
}

/// Idempotency records its key with the creating API key.
async fn idempotency_is_per_api_key(db: TestDb) {
    let store = open(&db).await;
    let r = request(30);
    let idem = Idempotency {
        api_key: ApiKeyId::generate(),
        key: "k".into(),
        fingerprint: "f1".into(),
    };
    let now = now_ms();
    assert!(matches!(
        store
            .create_request(&r, Some(&idem), &[], &[], now)
            .await
            .unwrap(),
        CreateOutcome::Created(_)
    ));
    let retry = request(31);
    assert!(matches!(
        store.create_request(&retry, Some(&idem), &[], &[], now).await.unwrap(),
        CreateOutcome::Existing(found) if found.id == r.id
    ));
    let other_body = Idempotency {
        fingerprint: "f2".into(),
        ..idem.clone()
    };
    assert!(matches!(
        store
            .create_request(&request(32), Some(&other_body), &[], &[], now)
            .await
            .unwrap(),
        CreateOutcome::KeyReused
    ));
}

/// Runs SQL on the database behind the store's back, as someone with database access would.
async fn tamper(db: &TestDb, sqlite: &str, postgres: &str) {
    use sqlx::Connection;
    if let Some(path) = db.url.strip_prefix("sqlite:") {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        conn.execute_batch(sqlite).unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(postgres.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

async fn chained_log(db: &TestDb, n: usize) -> Arc<dyn Store> {
    let store = open(db).await;
    for i in 0..n {
        let r = request(100 + i);
        store
            .create_request(&r, None, &audit(&r), &[], now_ms())
            .await
            .unwrap();
    }
    // SQLite chains each entry as it writes it; PostgreSQL queues it for the chainer.
    let chained = greenlight::service::audit::chain_all(store.as_ref())
        .await
        .unwrap();
    assert_eq!(
        chained,
        if db.url.starts_with("sqlite:") {
            0
        } else {
            n as u64
        }
    );
    let listed = store.list_audit(0, 1000).await.unwrap();
    assert_eq!(listed.len(), n);
    assert!(
        listed.iter().all(|e| e.seq.is_some()),
        "every entry is chained"
    );
    store
}

/// A fresh database of the same kind as `db`.
async fn another(db: &TestDb) -> TestDb {
    TestDb::of(if db.url.starts_with("sqlite:") {
        Backend::Sqlite
    } else {
        Backend::Postgres
    })
    .await
}

async fn verdict(
    store: &dyn Store,
) -> Result<greenlight::service::audit::Intact, greenlight::service::audit::Broken> {
    greenlight::service::audit::verify(store, now_ms() + 120_000)
        .await
        .unwrap()
        .map_err(|(broken, _)| broken)
}

const SQLITE_UNGUARDED: &str = "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete; \
     DROP TRIGGER audit_chain_no_delete;";
const PG_UNGUARDED: &str =
    "ALTER TABLE audit DISABLE TRIGGER USER; ALTER TABLE audit_chain DISABLE TRIGGER USER;";

/// The chain proves the log: intact as written, and each kind of tampering named at the first
/// entry it touched.
async fn the_audit_chain_names_the_first_tampered_entry(db: TestDb) {
    let store = chained_log(&db, 6).await;
    let intact = verdict(store.as_ref()).await.unwrap();
    assert_eq!(intact.entries, 6);
    let listed = store.list_audit(0, 10).await.unwrap();
    assert!(listed.iter().all(|e| e.hash.is_some() && e.seq.is_some()));
    assert_eq!(
        listed[1].prev_hash, listed[0].hash,
        "each entry links to the one before"
    );
    assert_eq!(
        listed[0].prev_hash.as_deref(),
        Some(greenlight::domain::GENESIS)
    );
    // A second chainer pass finds nothing to do.
    assert_eq!(store.chain_audit(100).await.unwrap(), 0);

    // Edited.
    let third = listed[2].id;
    tamper(
        &db,
        &format!("{SQLITE_UNGUARDED} UPDATE audit SET actor = 'mallory' WHERE id = {third}"),
        &format!("{PG_UNGUARDED} UPDATE audit SET actor = 'mallory' WHERE id = {third}"),
    )
    .await;
    assert_eq!(
        verdict(store.as_ref()).await,
        Err(greenlight::service::audit::Broken::Edited { id: third, seq: 3 })
    );
}

async fn a_deleted_or_reordered_audit_entry_is_found(db: TestDb) {
    let store = chained_log(&db, 5).await;
    let listed = store.list_audit(0, 10).await.unwrap();
    let (second, fourth) = (listed[1].id, listed[3].id);
    // Swapping two entries' places in the chain.
    tamper(
        &db,
        &format!(
            "{SQLITE_UNGUARDED} DROP TRIGGER audit_chain_no_update; \
             UPDATE audit_chain SET audit_id = -1 WHERE audit_id = {second}; \
             UPDATE audit_chain SET audit_id = {second} WHERE audit_id = {fourth}; \
             UPDATE audit_chain SET audit_id = {fourth} WHERE audit_id = -1;"
        ),
        &format!(
            "{PG_UNGUARDED} UPDATE audit_chain SET audit_id = -1 WHERE audit_id = {second}; \
             UPDATE audit_chain SET audit_id = {second} WHERE audit_id = {fourth}; \
             UPDATE audit_chain SET audit_id = {fourth} WHERE audit_id = -1;"
        ),
    )
    .await;
    assert_eq!(
        verdict(store.as_ref()).await,
        Err(greenlight::service::audit::Broken::Edited { id: fourth, seq: 2 }),
        "the entry now at position 2 is not the one hashed there"
    );
    // Deleted outright.
    let db2 = another(&db).await;
    let store = chained_log(&db2, 5).await;
    let listed = store.list_audit(0, 10).await.unwrap();
    let third = listed[2].id;
    tamper(
        &db2,
        &format!("{SQLITE_UNGUARDED} DELETE FROM audit WHERE id = {third}"),
        &format!("{PG_UNGUARDED} DELETE FROM audit WHERE id = {third}"),
    )
    .await;
    assert_eq!(
        verdict(store.as_ref()).await,
        Err(greenlight::service::audit::Broken::Deleted { id: third, seq: 3 })
    );
    // An entry and its place both removed leave a gap.
    tamper(
        &db2,
        "DELETE FROM audit_chain WHERE seq = 3",
        "DELETE FROM audit_chain WHERE seq = 3",
    )
    .await;
    assert_eq!(
        verdict(store.as_ref()).await,
        Err(greenlight::service::audit::Broken::Gap { seq: 3 })
    );
}

/// An entry written behind greenlight's back is reported as inserted at once, however old or
/// new, and the chainer never chains it; an entry greenlight queued but has not chained yet
/// is only pending.
async fn an_inserted_audit_entry_is_found(db: TestDb) {
    use greenlight::service::audit::{Broken, chain_all, verify};
    for at in [now_ms() - 3_600_000, now_ms()] {
        let db = another(&db).await;
        let store = chained_log(&db, 3).await;
        let insert = format!(
            "INSERT INTO audit (at, request_id, event, actor, data) VALUES ({at}, NULL, 'request.approved', 'mallory', '{{}}')"
        );
        tamper(&db, &insert, &insert).await;
        let forged = store.list_audit(0, 100).await.unwrap().last().unwrap().id;
        for _ in 0..2 {
            let found = verify(store.as_ref(), now_ms()).await.unwrap();
            assert_eq!(
                found.map_err(|(broken, _)| broken),
                Err(Broken::Inserted { id: forged }),
                "dated {at}"
            );
            // What a start does: the chainer leaves it alone.
            assert_eq!(chain_all(store.as_ref()).await.unwrap(), 0);
        }
        let unchained = store.unchained_audit(10).await.unwrap();
        assert_eq!(unchained.len(), 1);
        assert!(!unchained[0].pending);
    }
    // Queued by greenlight (as PostgreSQL's writes do) but not chained yet: pending, and
    // chained by the next pass.
    let db = another(&db).await;
    let store = chained_log(&db, 2).await;
    let insert = format!(
        "INSERT INTO audit (at, request_id, event, actor, data) VALUES ({}, NULL, 'request.created', 'U0BOB', '{{}}'); \
         INSERT INTO audit_pending (audit_id) SELECT MAX(id) FROM audit;",
        now_ms()
    );
    tamper(&db, &insert, &insert).await;
    let intact = verify(store.as_ref(), now_ms()).await.unwrap().unwrap();
    assert_eq!((intact.entries, intact.pending), (2, 1));
    assert_eq!(chain_all(store.as_ref()).await.unwrap(), 1);
    let intact = verify(store.as_ref(), now_ms()).await.unwrap().unwrap();
    assert_eq!((intact.entries, intact.pending), (3, 0));
}

/// An entry whose columns cannot be read (data that is not JSON, a time out of any calendar)
/// is named, not a failure to read the log.
async fn an_unreadable_audit_entry_is_named(db: TestDb) {
    use greenlight::service::audit::Broken;
    for edit in ["data = '{not json'", "at = 9000000000000000000"] {
        let db = another(&db).await;
        let store = chained_log(&db, 3).await;
        let second = store.list_audit(0, 10).await.unwrap()[1].id;
        tamper(
            &db,
            &format!("{SQLITE_UNGUARDED} UPDATE audit SET {edit} WHERE id = {second}"),
            &format!("{PG_UNGUARDED} UPDATE audit SET {edit} WHERE id = {second}"),
        )
        .await;
        match verdict(store.as_ref()).await {
            Err(Broken::Unreadable { id, seq, .. }) => assert_eq!((id, seq), (second, 2), "{edit}"),
            other => panic!("{edit}: {other:?}"),
        }
    }
}

/// Signals: the compare-and-set on `updated_at` lets one of two racing writers win, and a
/// change carries its audit entry.
async fn signals_are_set_by_compare_and_set(db: TestDb) {
    use greenlight::domain::{Signal, SignalName};
    use greenlight::store::SignalWrite::{Conflict, Written};
    let store = open(&db).await;
    let name: SignalName = "staging/api".parse().unwrap();
    assert_eq!(store.signal(&name).await.unwrap(), None);
    let t = |ms: i64| jiff::Timestamp::from_millisecond(ms).unwrap();
    let now = now_ms();
    let (first, _) = Signal::set(
        None,
        name.clone(),
        serde_json::json!("green"),
        Some(60_000),
        "ci",
        t(now),
    );
    let changed = [NewAudit {
        request_id: None,
        event: "signal.changed",
        actor: "ci".into(),
        data: serde_json::json!({"name": "staging/api"}),
    }];
    let put = |s: &Signal, expected: Option<i64>, audit: &[NewAudit], at: i64| {
        let (store, s, audit) = (store.clone(), s.clone(), audit.to_vec());
        async move {
            store
                .put_signal(&s, expected, 100, &audit, at)
                .await
                .unwrap()
        }
    };
    assert_eq!(put(&first, None, &changed, now).await, Written);
    assert_eq!(
        put(&first, None, &[], now).await,
        Conflict,
        "a second insert of a new signal loses"
    );
    let (red, _) = Signal::set(
        Some(&first),
        name.clone(),
        serde_json::json!("red"),
        None,
        "ops",
        t(now + 5),
    );
    let (blue, _) = Signal::set(
        Some(&first),
        name.clone(),
        serde_json::json!("blue"),
        None,
        "ops",
        t(now + 6),
    );
    assert_eq!(put(&red, Some(now), &changed, now + 5).await, Written);
    assert_eq!(
        put(&blue, Some(now), &changed, now + 6).await,
        Conflict,
        "set on a stale read: refused"
    );
    let stored = store.signal(&name).await.unwrap().unwrap();
    assert_eq!(stored, red);
    assert_eq!(store.list_signals(None, 10).await.unwrap(), vec![red]);
    let audit = store.list_audit(0, 100).await.unwrap();
    assert_eq!(
        audit.iter().filter(|e| e.event == "signal.changed").count(),
        2,
        "the refused write wrote no audit"
    );
}

/// A signal named `name`, set at `at` (ms) with an optional ttl.
fn signal_at(name: &str, at: i64, ttl_ms: Option<i64>) -> greenlight::domain::Signal {
    greenlight::domain::Signal::set(
        None,
        name.parse().unwrap(),
        serde_json::json!({"name": name, "pad": "x".repeat(64)}),
        ttl_ms,
        "ci",
        jiff::Timestamp::from_millisecond(at).unwrap(),
    )
    .0
}

/// `max` signals at most: of many inserts of new names racing for the last place exactly one
/// wins, the rest are told the store is full (not that they lost a race), and nothing of theirs
/// is written; an existing name is still set, and a delete frees a place.
async fn the_signal_cap_holds_under_concurrency(db: TestDb) {
    use greenlight::store::SignalWrite::{Conflict, Full, Written};
    const MAX: u32 = 10;
    let store = open(&db).await;
    let now = now_ms();
    for i in 0..MAX - 1 {
        let s = signal_at(&format!("base/{i}"), now, None);
        assert_eq!(
            store.put_signal(&s, None, MAX, &[], now).await.unwrap(),
            Written
        );
    }
    let changed = |name: &str| NewAudit {
        request_id: None,
        event: "signal.changed",
        actor: "ci".into(),
        data: serde_json::json!({ "name": name }),
    };
    for round in 0..3 {
        let racers: Vec<_> = (0..16)
            .map(|i| {
                let store = store.clone();
                let name = format!("race{round}/{i}");
                tokio::spawn(async move {
                    let s = signal_at(&name, now, None);
                    let audit = [changed(&name)];
                    store.put_signal(&s, None, MAX, &audit, now).await.unwrap()
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for r in racers {
            outcomes.push(r.await.unwrap());
        }
        let won = outcomes.iter().filter(|w| **w == Written).count();
        assert_eq!(won, 1, "round {round}: {outcomes:?}");
        assert!(
            outcomes.iter().all(|w| *w == Written || *w == Full),
            "{outcomes:?}"
        );
        let all = store.list_signals(None, 200).await.unwrap();
        assert_eq!(all.len(), MAX as usize, "round {round}");
        let audit = store.list_audit(0, 1000).await.unwrap();
        assert_eq!(audit.len(), round + 1, "only the winner's audit entry");
        // Free the place the winner took, for the next round.
        let winner = all
            .iter()
            .find(|s| s.name.as_str().starts_with("race"))
            .unwrap();
        let at = winner.updated_at.as_millisecond();
        assert!(
            store
                .delete_signal(&winner.name, at, &[], now)
                .await
                .unwrap()
        );
    }

    // Full again: a new name is refused; an existing name is still set, and inserting it
    // again is a lost race (set it instead), not "full".
    let last = signal_at("last", now, None);
    assert_eq!(
        store.put_signal(&last, None, MAX, &[], now).await.unwrap(),
        Written
    );
    let refused = signal_at("refused", now, None);
    assert_eq!(
        store
            .put_signal(&refused, None, MAX, &[], now)
            .await
            .unwrap(),
        Full
    );
    assert_eq!(store.signal(&refused.name).await.unwrap(), None);
    let existing = signal_at("base/0", now + 1, None);
    assert_eq!(
        store
            .put_signal(&existing, Some(now), MAX, &[], now + 1)
            .await
            .unwrap(),
        Written
    );
    assert_eq!(
        store
            .put_signal(&existing, None, MAX, &[], now + 1)
            .await
            .unwrap(),
        Conflict
    );
    assert_eq!(
        store.list_signals(None, 200).await.unwrap().len(),
        MAX as usize
    );
}

/// The list pages by name; rules read the live signals, all of them or only those named.
async fn signals_page_by_name_and_live_ones_are_read_by_name(db: TestDb) {
    use greenlight::domain::SignalName;
    let store = open(&db).await;
    let now = now_ms();
    let names = ["a", "a/b", "a:c", "a_d", "a.e", "b-1", "b0", "z"];
    for (i, name) in names.iter().enumerate() {
        // Every other one lapsed a second ago.
        let s = if i % 2 == 0 {
            signal_at(name, now, None)
        } else {
            signal_at(name, now - 61_000, Some(60_000))
        };
        assert_eq!(
            store.put_signal(&s, None, 100, &[], now).await.unwrap(),
            greenlight::store::SignalWrite::Written
        );
    }
    let mut seen = Vec::new();
    let mut after: Option<SignalName> = None;
    loop {
        let page = store.list_signals(after.as_ref(), 3).await.unwrap();
        assert!(page.len() <= 3);
        if page.is_empty() {
            break;
        }
        after = page.last().map(|s| s.name.clone());
        seen.extend(page.into_iter().map(|s| s.name.to_string()));
    }
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "each once: {seen:?}");
    assert_eq!(
        store.list_signals(None, 200).await.unwrap().len(),
        names.len()
    );

    let live = |found: Vec<greenlight::domain::Signal>| {
        let mut n: Vec<String> = found.into_iter().map(|s| s.name.to_string()).collect();
        n.sort_unstable();
        n
    };
    let all = store.live_signals(None, now).await.unwrap();
    let mut expected: Vec<&str> = names.iter().step_by(2).copied().collect();
    expected.sort_unstable();
    assert_eq!(live(all), expected);
    let asked: Vec<SignalName> = ["a", "a/b", "b0", "never"]
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
    let named = store.live_signals(Some(&asked), now).await.unwrap();
    assert_eq!(live(named), ["a", "b0"], "named, and live");
    assert!(store.live_signals(Some(&[]), now).await.unwrap().is_empty());
}

/// Lapsed signals are found longest lapsed first; a delete is a compare-and-set on when the
/// signal was last set, and writes its audit entry only when it deletes.
async fn lapsed_signals_are_found_and_deleted_by_compare_and_set(db: TestDb) {
    use greenlight::store::SignalWrite::Written;
    let store = open(&db).await;
    let now = now_ms();
    let hour = 3_600_000;
    for (name, set_at, ttl) in [
        ("old", now - 10 * hour, Some(hour)),
        ("older", now - 20 * hour, Some(hour)),
        ("recent", now - 2 * hour, Some(hour)),
        ("live", now, Some(hour)),
        ("forever", now - 30 * hour, None),
    ] {
        let s = signal_at(name, set_at, ttl);
        assert_eq!(
            store.put_signal(&s, None, 100, &[], set_at).await.unwrap(),
            Written
        );
    }
    let names = |found: Vec<greenlight::domain::Signal>| {
        found
            .into_iter()
            .map(|s| s.name.to_string())
            .collect::<Vec<_>>()
    };
    // Lapsed more than 5 hours ago: the two old ones, the longest lapsed first.
    let before = now - 5 * hour;
    assert_eq!(
        names(store.lapsed_signals(before, 10).await.unwrap()),
        ["older", "old"]
    );
    assert_eq!(
        names(store.lapsed_signals(before, 1).await.unwrap()),
        ["older"]
    );
    assert_eq!(
        names(store.lapsed_signals(now, 10).await.unwrap()),
        ["older", "old", "recent"]
    );

    let deleted = [NewAudit {
        request_id: None,
        event: "signal.deleted",
        actor: "greenlight".into(),
        data: serde_json::json!({"name": "old"}),
    }];
    let old = store
        .signal(&"old".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let at = old.updated_at.as_millisecond();
    assert!(
        !store
            .delete_signal(&old.name, at + 1, &deleted, now)
            .await
            .unwrap(),
        "set since it was read: kept"
    );
    assert!(
        store
            .delete_signal(&old.name, at, &deleted, now)
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_signal(&old.name, at, &deleted, now)
            .await
            .unwrap(),
        "gone"
    );
    assert_eq!(store.signal(&old.name).await.unwrap(), None);
    let audit = store.list_audit(0, 100).await.unwrap();
    assert_eq!(
        audit.iter().filter(|e| e.event == "signal.deleted").count(),
        1,
        "only the delete that deleted is audited"
    );
    assert_eq!(
        names(store.lapsed_signals(before, 10).await.unwrap()),
        ["older"]
    );
}

/// History for rules and alerts: approvals by a param's value, counts over a window.
async fn history_is_counted(db: TestDb) {
    let store = open(&db).await;
    let now = jiff::Timestamp::now();
    let ms = now.as_millisecond();
    let mut made = Vec::new();
    for (i, (version, verdict)) in [
        ("1.4.2", Some(Verdict::Approve)),
        ("1.5.0", Some(Verdict::Deny)),
        ("2", None),
        ("7", Some(Verdict::Approve)),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = Request::new(
            RequestId::generate_at(ms - 1000 + i as i64),
            NewRequest {
                params: serde_json::json!({"version": version, "n": i})
                    .as_object()
                    .cloned()
                    .unwrap(),
                requester: Some(if i % 2 == 0 { "U0FRANK" } else { "bot" }.into()),
                ..new_request(i)
            },
            now,
        );
        if let Some(v) = verdict {
            r.decide_by_rule("auto", v, "because".into(), now).unwrap();
        }
        store
            .create_request(&r, None, &audit(&r), &[], ms)
            .await
            .unwrap();
        made.push(r);
    }
    let v = |x: serde_json::Value| x;
    assert!(
        store
            .approved_with("deploy", "version", &v("1.4.2".into()))
            .await
            .unwrap()
    );
    assert!(
        !store
            .approved_with("deploy", "version", &v("1.5.0".into()))
            .await
            .unwrap(),
        "denied"
    );
    assert!(
        !store
            .approved_with("deploy", "version", &v("2".into()))
            .await
            .unwrap(),
        "pending"
    );
    assert!(
        !store
            .approved_with("staging", "version", &v("1.4.2".into()))
            .await
            .unwrap()
    );
    assert!(
        store
            .approved_with("deploy", "n", &serde_json::json!(3))
            .await
            .unwrap(),
        "numbers"
    );
    assert!(
        store
            .approved_with("deploy", "n", &serde_json::json!(3.0))
            .await
            .unwrap(),
        "3 is 3.0"
    );
    assert!(
        !store
            .approved_with("deploy", "version", &serde_json::json!(7))
            .await
            .unwrap(),
        "\"7\" is not 7"
    );
    assert!(
        !store
            .approved_with("deploy", "we\"ird", &v("x".into()))
            .await
            .unwrap()
    );
    assert_eq!(store.count_created("deploy", ms - 5000).await.unwrap(), 4);
    assert_eq!(
        store.count_created("deploy", ms - 998).await.unwrap(),
        2,
        "by creation time"
    );
    assert_eq!(store.count_created("other", ms - 5000).await.unwrap(), 0);
    let mut by = store
        .count_created_by_requester("deploy", ms - 5000)
        .await
        .unwrap();
    by.sort();
    assert_eq!(by, [(Some("U0FRANK".into()), 2), (Some("bot".into()), 2)]);
    assert_eq!(store.count_denied("deploy", ms - 5000).await.unwrap(), 1);
    assert_eq!(store.count_denied("deploy", ms + 1).await.unwrap(), 0);
    assert_eq!(store.count_decided_by("auto", ms - 5000).await.unwrap(), 3);
}

/// A digest: its summary from the requests that name it, its message once posted.
async fn digests_sum_up_their_requests(db: TestDb) {
    use greenlight::store::DigestWindow;
    let store = open(&db).await;
    let now = jiff::Timestamp::now();
    let window = DigestWindow::at("#deploy", now.as_millisecond(), 300_000);
    assert_eq!(DigestWindow::parse(&window.key), Some(window.clone()));
    for i in 0..7 {
        let mut r = request(i);
        // Ids order by their millisecond, and randomly within one: a millisecond each, so
        // "newest first" is well defined however fast the store is.
        r.id = RequestId::generate_at(now.as_millisecond() + i as i64);
        r.requester = Some(if i < 5 { "U0FRANK" } else { "bot" }.into());
        let verdict = if i == 6 {
            Verdict::Deny
        } else {
            Verdict::Approve
        };
        r.decide_by_rule(
            if i == 6 { "no" } else { "small" },
            verdict,
            "x".into(),
            now,
        )
        .unwrap();
        r.digest_key = Some(window.key.clone());
        let effect = [Effect::SlackDigest {
            key: window.key.clone(),
            channel: window.channel.clone(),
        }];
        store
            .create_request(&r, None, &audit(&r), &effect, now.as_millisecond())
            .await
            .unwrap();
    }
    let summary = store.digest_summary(&window.key).await.unwrap();
    assert_eq!(summary.total, 7);
    assert_eq!(
        summary.by_rule,
        [
            ("small".into(), "approved".into(), 6),
            ("no".into(), "denied".into(), 1)
        ]
    );
    assert_eq!(summary.by_requester[0], (Some("U0FRANK".into()), 5));
    assert_eq!(summary.recent.len(), 5);
    assert_eq!(summary.recent[0].title, "Deploy #6", "newest first");
    assert_eq!(store.digest_message(&window.key).await.unwrap(), None);
    store
        .set_digest_message(&window, "C0DEPLOY", "1.000")
        .await
        .unwrap();
    let at = store.digest_message(&window.key).await.unwrap().unwrap();
    assert_eq!((at.channel.as_str(), at.ts.as_str()), ("C0DEPLOY", "1.000"));
    let jobs = store
        .claim_jobs("worker", &lanes(100), now.as_millisecond() + 10_000, 60_000)
        .await
        .unwrap();
    assert_eq!(
        jobs.iter()
            .filter(|j| j.effect.kind() == "slack_digest")
            .count(),
        1,
        "seven auto-decisions, one waiting digest update"
    );
}

/// An alert fires once per window, with its audit and effect, across racing checkers.
async fn alerts_fire_once_per_window(db: TestDb) {
    let store = open(&db).await;
    let now = now_ms();
    let fired = || NewAudit {
        request_id: None,
        event: "alert.fired",
        actor: "greenlight".into(),
        data: serde_json::json!({}),
    };
    let tries = (0..8).map(|_| {
        let store = store.clone();
        let audit = [fired()];
        async move {
            store
                .claim_alert("flood", now, 60_000, &audit, &[])
                .await
                .unwrap()
        }
    });
    let won = futures::future::join_all(tries).await;
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    assert!(
        !store
            .claim_alert("flood", now + 59_000, 60_000, &[fired()], &[])
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_alert("other", now + 59_000, 60_000, &[fired()], &[])
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_alert("flood", now + 60_000, 60_000, &[fired()], &[])
            .await
            .unwrap()
    );
    let audit = store.list_audit(0, 100).await.unwrap();
    assert_eq!(audit.iter().filter(|e| e.event == "alert.fired").count(), 3);
}

fn workflow(name: &str) -> WorkflowName {
    name.parse().unwrap()
}

/// A pending request of `wf` asked for by `requester`, with votes by `voters`.
async fn stored(
    store: &Arc<dyn Store>,
    wf: &str,
    requester: Option<&str>,
    voters: &[&str],
) -> Request {
    let mut r = request(0);
    r.workflow = workflow(wf);
    r.requester = requester.map(str::to_owned);
    for by in voters {
        r.decisions.push(Decision {
            by: (*by).to_owned(),
            kind: DecisionKind::User,
            verdict: Verdict::Approve,
            reason: None,
            name: None,
            at: jiff::Timestamp::now(),
            stage: None,
            response: None,
            edits: None,
        });
    }
    store
        .create_request(&r, None, &audit(&r), &[], now_ms())
        .await
        .unwrap();
    r
}

/// "May vote on", in the store: pending requests of the voter's workflows, not their own where
/// self-approval is off, not ones they voted on; newest first, bounded, with the full count.
async fn votable_requests_leave_out_own_voted_and_foreign(db: TestDb) {
    let store = open(&db).await;
    let mut plain = Vec::new();
    for _ in 0..3 {
        plain.push(stored(&store, "deploy", Some("U0FRANK"), &[]).await.id);
    }
    let own_deploy = stored(&store, "deploy", Some("U0ALICE"), &[]).await.id;
    let own_payments = stored(&store, "payments", Some("U0ALICE"), &[]).await.id;
    let voted = stored(&store, "deploy", None, &["U0ALICE"]).await.id;
    let others_vote = stored(&store, "deploy", None, &["U0BOB"]).await.id;
    // A machine vote by a key named like Alice (made before keys were refused such names, and
    // recorded under the bare name then): it is not her vote, so she may still vote.
    let mut keys_vote = request(0);
    keys_vote.decisions.push(Decision {
        by: "U0ALICE".into(),
        kind: DecisionKind::Machine,
        verdict: Verdict::Approve,
        reason: None,
        name: None,
        at: jiff::Timestamp::now(),
        stage: None,
        response: None,
        edits: None,
    });
    store
        .create_request(&keys_vote, None, &audit(&keys_vote), &[], now_ms())
        .await
        .unwrap();
    let foreign = stored(&store, "ops", None, &[]).await.id;
    let mut decided = request(0);
    decided.cancel("ops", None, jiff::Timestamp::now()).unwrap();
    store
        .create_request(&decided, None, &audit(&decided), &[], now_ms())
        .await
        .unwrap();

    let filter = |limit| VotableFilter {
        workflows: vec![workflow("deploy"), workflow("payments")],
        voter: "U0ALICE".into(),
        not_own_in: vec![workflow("deploy")],
        limit,
    };
    let page = store.votable_requests(&filter(20)).await.unwrap();
    let ids: HashSet<RequestId> = page.requests.iter().map(|r| r.id.clone()).collect();
    let mut expected: HashSet<RequestId> = plain.iter().cloned().collect();
    // Self-approval is allowed in payments; someone else's vote does not hide it.
    expected.extend([own_payments, others_vote, keys_vote.id]);
    assert_eq!(ids, expected);
    assert!(!ids.contains(&own_deploy) && !ids.contains(&voted) && !ids.contains(&foreign));
    assert_eq!(page.total, 6);
    assert!(
        page.requests.windows(2).all(|w| w[0].id > w[1].id),
        "newest first"
    );

    let bounded = store.votable_requests(&filter(2)).await.unwrap();
    assert_eq!((bounded.requests.len(), bounded.total), (2, 6));
    let none = store
        .votable_requests(&VotableFilter {
            workflows: vec![],
            ..filter(20)
        })
        .await
        .unwrap();
    assert_eq!((none.requests.len(), none.total), (0, 0));
}

/// "Your requests" and "Recently decided": by requester, and decided lately in the person's
/// workflows or asked for by them.
async fn requests_by_requester_and_recently_decided(db: TestDb) {
    let store = open(&db).await;
    let mine = stored(&store, "ops", Some("U0ALICE"), &[]).await;
    stored(&store, "deploy", Some("U0FRANK"), &[]).await;
    let by = store.requests_by("U0ALICE", 10).await.unwrap();
    assert_eq!(by.iter().map(|r| &r.id).collect::<Vec<_>>(), [&mine.id]);

    let now = jiff::Timestamp::now();
    let decide = |wf: &str, requester: Option<&str>, at_ms: i64| {
        let mut r = request(0);
        r.workflow = workflow(wf);
        r.requester = requester.map(str::to_owned);
        r.cancel(
            "ops",
            None,
            jiff::Timestamp::from_millisecond(at_ms).unwrap(),
        )
        .unwrap();
        r
    };
    let old = decide("deploy", None, now.as_millisecond() - 10 * 86_400_000);
    let earlier = decide("deploy", None, now.as_millisecond() - 60_000);
    let later = decide("deploy", None, now.as_millisecond() - 1_000);
    let asked = decide("ops", Some("U0ALICE"), now.as_millisecond() - 30_000);
    let foreign = decide("ops", None, now.as_millisecond());
    for r in [&old, &earlier, &later, &asked, &foreign] {
        store
            .create_request(r, None, &audit(r), &[], now_ms())
            .await
            .unwrap();
    }
    let week_ago = now.as_millisecond() - 7 * 86_400_000;
    let recent = store
        .recently_decided(&[workflow("deploy")], "U0ALICE", week_ago, 10)
        .await
        .unwrap();
    let ids: Vec<&RequestId> = recent.iter().map(|r| &r.id).collect();
    assert_eq!(
        ids,
        [&later.id, &asked.id, &earlier.id],
        "most recently decided first"
    );
    let one = store
        .recently_decided(&[workflow("deploy")], "U0ALICE", week_ago, 1)
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
}

fn home_refresh(user: &str) -> Effect {
    Effect::SlackHomeRefresh {
        user: user.into(),
        notice: None,
    }
}

/// Home openings: the latest per person, forgotten past the horizon; refreshes of one person's
/// tab collapse while one waits, but not once it is being delivered.
async fn home_openings_are_bounded_and_refreshes_collapse(db: TestDb) {
    let store = open(&db).await;
    let now = now_ms();
    let hour = 3_600_000;
    store
        .record_home_opened("U0OLD", now - 30 * hour, now - 30 * hour - 24 * hour, &[])
        .await
        .unwrap();
    store
        .record_home_opened("U0BOB", now - 2 * hour, now - 26 * hour, &[])
        .await
        .unwrap();
    for _ in 0..3 {
        store
            .record_home_opened("U0ALICE", now, now - 24 * hour, &[home_refresh("U0ALICE")])
            .await
            .unwrap();
    }
    // Refreshes written with other changes collapse into the waiting one too.
    let r = request(0);
    store
        .create_request(
            &r,
            None,
            &audit(&r),
            &[home_refresh("U0ALICE"), home_refresh("U0BOB")],
            now,
        )
        .await
        .unwrap();
    assert_eq!(
        store.home_viewers(now - hour, 10).await.unwrap(),
        ["U0ALICE"]
    );
    assert_eq!(
        store.home_viewers(now - 3 * hour, 10).await.unwrap(),
        ["U0ALICE", "U0BOB"],
        "most recent first; U0OLD was forgotten"
    );
    assert_eq!(
        store.home_viewers(now - 100 * hour, 1).await.unwrap(),
        ["U0ALICE"]
    );

    let claim = |at| {
        let store = store.clone();
        async move {
            let jobs = store
                .claim_jobs("w", &lanes(100), at, 60_000)
                .await
                .unwrap();
            let mut users: Vec<String> = jobs
                .into_iter()
                .filter_map(|j| match j.effect {
                    Effect::SlackHomeRefresh { user, .. } => Some(user),
                    _ => None,
                })
                .collect();
            users.sort();
            users
        }
    };
    assert_eq!(claim(now).await, ["U0ALICE", "U0BOB"], "one job per person");
    // Alice's job is being delivered: a new change needs a new rendering, and gets one.
    store
        .record_home_opened(
            "U0ALICE",
            now + 1,
            now - 24 * hour,
            &[home_refresh("U0ALICE")],
        )
        .await
        .unwrap();
    assert_eq!(claim(now + 1).await, ["U0ALICE"]);
    // A notice is its own job.
    let notice = Effect::SlackHomeRefresh {
        user: "U0BOB".into(),
        notice: Some("This request was already approved.".into()),
    };
    store
        .record(&[], std::slice::from_ref(&notice), now + 2)
        .await
        .unwrap();
    let jobs = store
        .claim_jobs("w", &lanes(100), now + 2, 60_000)
        .await
        .unwrap();
    assert_eq!(
        jobs.into_iter().map(|j| j.effect).collect::<Vec<_>>(),
        [notice]
    );
}

/// Each test, once per backend: `store::sqlite::<name>` and `store::postgres::<name>`.
macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(TestDb::of(Backend::Sqlite).await).await
                }
            )*
            use super::{Backend, TestDb};
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(TestDb::of(Backend::Postgres).await).await
                }
            )*
            use super::{Backend, TestDb};
        }
    };
}

store_tests!(
    concurrent_writes_all_land_and_a_failing_one_fails_alone,
    a_statement_refused_in_a_batch_fails_alone,
    racing_transitions_write_only_the_winner,
    twenty_concurrent_votes_make_one_decision,
    idempotent_retries_under_concurrency_make_one_request,
    outbox_claims_leases_and_attempts,
    direct_message_copies_are_kept_through_transitions,
    a_verified_identity_is_kept_with_its_request,
    standing_approvals_are_found_listed_and_revoked_once,
    fields_and_answers_are_kept_typed,
    message_updates_collapse,
    due_requests_are_found,
    the_first_secret_stored_wins,
    api_keys_are_found_by_hash_and_revoked,
    lists_filter_and_page,
    slack_refs_and_action_results_are_kept,
    coordination_is_exclusive_and_paced,
    records_without_a_request,
    idempotency_is_per_api_key,
    a_create_shows_the_jobs_it_wrote,
    the_audit_chain_names_the_first_tampered_entry,
    a_deleted_or_reordered_audit_entry_is_found,
    an_inserted_audit_entry_is_found,
    an_unreadable_audit_entry_is_named,
    signals_are_set_by_compare_and_set,
    the_signal_cap_holds_under_concurrency,
    signals_page_by_name_and_live_ones_are_read_by_name,
    lapsed_signals_are_found_and_deleted_by_compare_and_set,
    history_is_counted,
    digests_sum_up_their_requests,
    alerts_fire_once_per_window,
    votable_requests_leave_out_own_voted_and_foreign,
    requests_by_requester_and_recently_decided,
    home_openings_are_bounded_and_refreshes_collapse,
);
