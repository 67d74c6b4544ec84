//! The SQLite store under concurrency: group commit batches writes, and one failing write fails
//! alone.

use std::sync::Arc;

use greenlight::domain::{NewRequest, Params, Request, RequestId};
use greenlight::store::{self, CreateOutcome, Effect, NewAudit, Store};

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

fn audit(r: &Request) -> Vec<NewAudit> {
    vec![NewAudit {
        request_id: Some(r.id.clone()),
        event: "request.created",
        actor: "test".into(),
        data: serde_json::json!({}),
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_all_land_and_a_failing_one_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("store.db").display());
    let store: Arc<dyn Store> = store::connect(&url).await.unwrap();
    let now = jiff::Timestamp::now().as_millisecond();

    let first = request(0);
    store
        .create_request(&first, None, &audit(&first), &[], now)
        .await
        .unwrap();

    // 300 creates at once, one of them a duplicate id that must fail on its own.
    let requests: Vec<Request> = (1..=300).map(request).collect();
    let writes = requests.iter().enumerate().map(|(i, r)| {
        let store = store.clone();
        let r = if i == 150 { first.clone() } else { r.clone() };
        async move {
            let effects = [Effect::SlackPost {
                request_id: r.id.clone(),
            }];
            store
                .create_request(&r, None, &audit(&r), &effects, now)
                .await
        }
    });
    let results = futures::future::join_all(writes).await;
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
            .all(|(i, r)| i == 150 || matches!(r, Ok(CreateOutcome::Created)))
    );

    // Everything that was acknowledged is there, with its audit entry and its outbox job, and
    // nothing of the failed write leaked in.
    let audit = store.list_audit(0, 1000).await.unwrap();
    assert_eq!(audit.len(), 300);
    for (i, r) in requests.iter().enumerate() {
        let stored = store.get_request(&r.id).await.unwrap();
        assert_eq!(stored.is_some(), i != 150, "request {i}");
        if i != 150 {
            assert_eq!(store.deliveries(&r.id).await.unwrap().len(), 1);
        }
    }

    // Compare-and-set under one batch: 20 concurrent transitions of one request, each with its
    // audit entry and outbox job; one wins, and only the winner's entry and job are written.
    let target = store.get_request(&requests[0].id).await.unwrap().unwrap();
    let audit_before = store.list_audit(0, 1000).await.unwrap().len();
    let jobs_before = store.deliveries(&target.id).await.unwrap().len();
    let racers = (0..20).map(|i| {
        let store = store.clone();
        let mut r = target.clone();
        async move {
            let expected = r.version;
            r.cancel(&format!("racer-{i}"), None, jiff::Timestamp::now())
                .unwrap();
            let audit = [NewAudit {
                request_id: Some(r.id.clone()),
                event: "request.cancelled",
                actor: format!("racer-{i}"),
                data: serde_json::json!({}),
            }];
            let effects = [Effect::SlackPost {
                request_id: r.id.clone(),
            }];
            store
                .save_transition(&r, expected, &audit, &effects, now)
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
    let audit = store.list_audit(0, 1000).await.unwrap();
    assert_eq!(audit.len(), audit_before + 1, "only the winner is audited");
    let stored = store.get_request(&target.id).await.unwrap().unwrap();
    assert_eq!(audit.last().unwrap().actor, stored.decided_by.unwrap());
    assert_eq!(
        store.deliveries(&target.id).await.unwrap().len(),
        jobs_before + 1,
        "only the winner's job is queued"
    );
}
