//! Several replicas on one PostgreSQL database, as real processes: any replica takes any click,
//! exactly once; a long-poll on one hears of a click on another; a replica killed with SIGKILL
//! loses nothing; three schedulers expire a request once; Socket Mode works from two replicas;
//! a SIGTERM drains and exits 0. Each test has a fresh database of its own.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use greenlight::store::Scope;
use greenlight_sandbox::{Click, SandboxHandle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::receiver::Receiver;

const PATIENCE: Duration = Duration::from_secs(60);

/// Short leases, so that a dead replica's jobs are taken over within seconds; a small pool
/// per replica, since tests run side by side on one server.
fn config(extra: &str) -> String {
    paced_config(1000.0, 1000, extra)
}

fn paced_config(posts_per_second: f64, burst: u32, extra: &str) -> String {
    format!(
        r##"
shutdown_timeout = "5s"

[database]
max_connections = 4

[delivery]
allow_private_targets = true
max_attempts = 1000
backoff_base = "50ms"
backoff_max = "500ms"
timeout = "2s"
lease = "4s"
slack_posts_per_second = {posts_per_second}
slack_post_burst = {burst}

[[workflow]]
name = "deploy"
channel = "#deploy"
{extra}
"##
    )
}

struct Cluster {
    db: TestDb,
    sandbox: SandboxHandle,
    secret: String,
    key: String,
    dir: tempfile::TempDir,
    options: ProcessOptions,
    replicas: Vec<Option<Process>>,
    http: reqwest::Client,
}

impl Cluster {
    async fn start(n: usize, config: String, env: &[(&str, String)]) -> Self {
        init();
        let db = TestDb::postgres().await;
        let secret = random_secret();
        let sandbox = start_sandbox(&secret).await;
        let key = create_key(&db.url, "ci", &[Scope::Admin]).await;
        let dir = tempfile::tempdir().unwrap();
        let options = ProcessOptions {
            config: Some(config),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            ..Default::default()
        };
        let mut cluster = Self {
            db,
            sandbox,
            secret,
            key,
            dir,
            options,
            replicas: Vec::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        };
        for _ in 0..n {
            let p = Process::start_with(
                &cluster.sandbox,
                cluster.dir.path(),
                &cluster.db.url,
                &cluster.secret,
                &cluster.options,
            )
            .await;
            cluster.replicas.push(Some(p));
        }
        cluster
    }

    fn base(&self, i: usize) -> String {
        let p = self.replicas[i].as_ref().expect("replica is running");
        format!("http://{}", p.addr)
    }

    fn alive(&self) -> Vec<usize> {
        (0..self.replicas.len())
            .filter(|i| self.replicas[*i].is_some())
            .collect()
    }

    async fn call(
        &self,
        i: usize,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        call(&self.http, &self.base(i), &self.key, method, path, body).await
    }

    async fn create(&self, i: usize, body: Value) -> String {
        let (status, created) = self.call(i, Method::POST, "/v1/requests", Some(body)).await;
        assert_eq!(status, 201, "{created}");
        created["id"].as_str().unwrap().to_owned()
    }

    /// A signed click sent straight to replica `i`, as a load balancer would route it.
    async fn click_on(
        &self,
        i: usize,
        ts: &str,
        action: &str,
        user: &str,
        id: &str,
    ) -> Option<u16> {
        let body = block_actions(user, ts, action, id);
        let now = now_unix();
        let res = self
            .http
            .post(format!("{}/slack/interactions", self.base(i)))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", now.to_string())
            .header("x-slack-signature", self.sandbox.sign(now, body.as_bytes()))
            .body(body)
            .send()
            .await;
        res.ok().map(|r| r.status().as_u16())
    }

    /// The whole audit log, through replica `i`.
    async fn audit(&self, i: usize) -> Vec<Value> {
        let mut all: Vec<Value> = Vec::new();
        loop {
            let after = all.last().map_or(0, |e| e["id"].as_i64().unwrap());
            let path = format!("/v1/audit?limit=1000&after={after}");
            let (status, page) = self.call(i, Method::GET, &path, None).await;
            assert_eq!(status, 200, "{page}");
            let events = page["events"].as_array().unwrap().clone();
            if events.is_empty() {
                return all;
            }
            all.extend(events);
        }
    }
}

fn decisions_of(audit: &[Value], id: &str) -> usize {
    audit
        .iter()
        .filter(|e| {
            e["request_id"] == id
                && matches!(
                    e["event"].as_str(),
                    Some("request.approved" | "request.denied" | "request.expired")
                )
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_clicks_spread_over_three_replicas_make_one_decision() {
    let cluster = Cluster::start(3, config(""), &[]).await;
    let id = cluster
        .create(0, json!({"title": "Deploy api v2", "requester": "U0FRANK"}))
        .await;
    let msg = posted(&cluster.sandbox, &id).await;
    let users: Vec<String> = cluster
        .sandbox
        .config()
        .users
        .iter()
        .map(|u| u.id.clone())
        .filter(|u| u != "U0FRANK")
        .take(30)
        .collect();
    assert_eq!(users.len(), 30);
    let clicks = users.iter().enumerate().map(|(n, user)| {
        let (cluster, msg, id) = (&cluster, &msg, &id);
        async move {
            cluster
                .click_on(n % 3, &msg.ts, "greenlight.approve", user, id)
                .await
        }
    });
    let acks = futures::future::join_all(clicks).await;
    assert!(acks.iter().all(|a| *a == Some(200)), "{acks:?}");

    let (_, got) = cluster
        .call(1, Method::GET, &format!("/v1/requests/{id}"), None)
        .await;
    assert_eq!(got["status"], "approved");
    assert_eq!(got["decisions"].as_array().unwrap().len(), 1, "{got}");
    // Everyone else is told, whichever replica they reached.
    let told = cluster
        .sandbox
        .wait_until(PATIENCE, |sb| {
            let n: usize = users.iter().map(|u| sb.ephemerals(CHANNEL, u).len()).sum();
            (n >= 29).then_some(n)
        })
        .await;
    assert_eq!(told, Some(29));
    // One message, posted once, ending without buttons.
    let decided = cluster
        .sandbox
        .wait_for_message(CHANNEL, &msg.ts, |m| !has_buttons(m), PATIENCE)
        .await
        .expect("the message shows the decision");
    assert!(text_of(&decided).contains("Approved"));
    let copies = cluster
        .sandbox
        .messages(CHANNEL)
        .iter()
        .filter(|m| text_of(m).contains(&id))
        .count();
    assert_eq!(copies, 1, "one Slack post per request, not one per replica");
    assert_eq!(decisions_of(&cluster.audit(2).await, &id), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_on_one_replica_wakes_within_a_second_of_a_click_on_another() {
    let cluster = Cluster::start(2, config(""), &[]).await;
    let id = cluster.create(0, json!({"title": "Migrate billing"})).await;
    let msg = posted(&cluster.sandbox, &id).await;
    let poll = {
        let (http, base, key, id) = (
            cluster.http.clone(),
            cluster.base(0),
            cluster.key.clone(),
            id.clone(),
        );
        tokio::spawn(async move {
            let got = call(
                &http,
                &base,
                &key,
                Method::GET,
                &format!("/v1/requests/{id}?wait=30"),
                None,
            )
            .await;
            (got, Instant::now())
        })
    };
    // Let the long-poll park before the click.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let clicked = Instant::now();
    assert_eq!(
        cluster
            .click_on(1, &msg.ts, "greenlight.deny", "U0BOB", &id)
            .await,
        Some(200)
    );
    let ((status, got), answered) = poll.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(got["status"], "denied", "{got}");
    let took = answered.duration_since(clicked);
    assert!(took < Duration::from_secs(1), "the long-poll took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_with_sigkill_under_load_loses_nothing() {
    const REQUESTS: usize = 200;
    const SEED: u64 = 0x9e1f;
    let machine = Receiver::start(&[], 200).await;
    let mut cluster = Cluster::start(3, config(""), &[]).await;
    let mut rng = StdRng::seed_from_u64(SEED);
    let victim = rng.random_range(0..3);
    let kill_after = rng.random_range(40..120);
    let callback = machine.url("/done");
    let bases: Vec<String> = (0..3).map(|i| cluster.base(i)).collect();
    let dead = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Held here, not in the cluster, so that it can be killed while the load runs.
    let mut doomed = cluster.replicas[victim].take();

    // Each request: created on one replica, clicked on another, both retried elsewhere when
    // the replica they reached is gone (as a load balancer would).
    let run = futures::stream::iter(0..REQUESTS)
        .map(|i| {
            let (cluster, callback, bases, dead) = (&cluster, &callback, &bases, dead.clone());
            async move {
                let pick = |n: usize| {
                    let mut r = n % 3;
                    if r == victim && dead.load(std::sync::atomic::Ordering::SeqCst) {
                        r = (r + 1) % 3;
                    }
                    r
                };
                let body = json!({"title": format!("Payout #{i}"), "callback_url": callback,
                                   "idempotency_key": format!("payout-{i}")});
                let deadline = Instant::now() + PATIENCE;
                let id = loop {
                    let r = pick(i + rng_offset(i));
                    let res = cluster
                        .http
                        .post(format!("{}/v1/requests", bases[r]))
                        .bearer_auth(&cluster.key)
                        .json(&body)
                        .send()
                        .await;
                    if let Ok(res) = res
                        && res.status().as_u16() < 300
                    {
                        let v: Value = res.json().await.unwrap();
                        break v["id"].as_str().unwrap().to_owned();
                    }
                    assert!(Instant::now() < deadline, "create {i} never answered");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                };
                let msg = cluster
                    .sandbox
                    .wait_for_message_in(CHANNEL, |m| text_of(m).contains(&id), PATIENCE)
                    .await
                    .unwrap_or_else(|| panic!("message for {id} posted"));
                let mut n = i + 1;
                loop {
                    if cluster.click_on_base(&bases[pick(n)], &msg.ts, &id).await == Some(200) {
                        break;
                    }
                    assert!(Instant::now() < deadline, "click on {id} never acked");
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                id
            }
        })
        .buffer_unordered(12);
    tokio::pin!(run);
    let mut ids = Vec::new();
    while let Some(id) = run.next().await {
        ids.push(id);
        if ids.len() == kill_after {
            dead.store(true, std::sync::atomic::Ordering::SeqCst);
            doomed.take().unwrap().kill9();
        }
    }
    assert_eq!(ids.len(), REQUESTS);
    let survivor = cluster.alive()[0];

    // Every request decided exactly once, shown on its message, told to its machine.
    // A replica killed between Slack's answer to its post and the commit of that answer leaves
    // the ts unrecorded until the survivor takes the post over, after the dead one's lease: wait
    // for it rather than reading it at once.
    for id in &ids {
        let deadline = Instant::now() + PATIENCE;
        let got = loop {
            let (_, got) = cluster
                .call(survivor, Method::GET, &format!("/v1/requests/{id}"), None)
                .await;
            if got["slack"]["ts"].is_string() {
                break got;
            }
            assert!(
                Instant::now() < deadline,
                "{id}'s post never recorded: {got}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(got["status"], "approved", "{got}");
        assert_eq!(got["decisions"].as_array().unwrap().len(), 1, "{got}");
        let ts = got["slack"]["ts"].as_str().unwrap().to_owned();
        let shown = cluster
            .sandbox
            .wait_for_message(CHANNEL, &ts, |m| !has_buttons(m), PATIENCE)
            .await;
        assert!(
            shown.is_some(),
            "the message of {id} never showed its outcome"
        );
    }
    let calls = machine
        .wait_for(PATIENCE, |got| {
            let told: std::collections::HashSet<String> = got
                .iter()
                .filter(|c| c.json()["type"] == "request.approved")
                .map(|c| c.json()["data"]["id"].as_str().unwrap_or("").to_owned())
                .collect();
            ids.iter().all(|id| told.contains(id))
        })
        .await;
    let audit = cluster.audit(survivor).await;
    for id in &ids {
        assert_eq!(decisions_of(&audit, id), 1, "{id}");
    }
    let posts: HashMap<String, usize> =
        cluster
            .sandbox
            .messages(CHANNEL)
            .iter()
            .fold(HashMap::new(), |mut seen, m| {
                if let Some(id) = ids.iter().find(|id| text_of(m).contains(id.as_str())) {
                    *seen.entry(id.clone()).or_default() += 1;
                }
                seen
            });
    eprintln!(
        "killed replica {victim} after {kill_after} requests: {} callbacks for {REQUESTS} requests, {} messages",
        calls.len(),
        posts.values().sum::<usize>()
    );
}

/// Spreads the first pick of each request over the replicas without a shared rng.
fn rng_offset(i: usize) -> usize {
    (i * 7) % 3
}

impl Cluster {
    async fn click_on_base(&self, base: &str, ts: &str, id: &str) -> Option<u16> {
        let body = block_actions("U0ALICE", ts, "greenlight.approve", id);
        let now = now_unix();
        self.http
            .post(format!("{base}/slack/interactions"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", now.to_string())
            .header("x-slack-signature", self.sandbox.sign(now, body.as_bytes()))
            .body(body)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }
}

/// Slack's pace is per app: three replicas posting to one channel share one bucket, so they
/// post no faster than one would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_posting_pace() {
    let cluster = Cluster::start(3, paced_config(4.0, 1, ""), &[]).await;
    let mut ids = Vec::new();
    for n in 0..12 {
        ids.push(
            cluster
                .create(n % 3, json!({"title": format!("Paced #{n}")}))
                .await,
        );
    }
    for id in &ids {
        posted(&cluster.sandbox, id).await;
    }
    // The sandbox logs a call as it answers it, just after the message appears.
    let mut at: Vec<u64> = cluster
        .sandbox
        .wait_until(PATIENCE, |sb| {
            let at: Vec<u64> = sb
                .calls_to("chat.postMessage")
                .iter()
                .filter(|c| c.ok)
                .map(|c| c.at_unix_ms)
                .collect();
            (at.len() >= 12).then_some(at)
        })
        .await
        .expect("12 posts logged");
    at.sort();
    assert_eq!(at.len(), 12);
    // 4 a second for the fleet: the 12th post comes about 2.75 s after the first. Three
    // buckets of their own would have posted all 12 within about a second.
    let spread = at[11] - at[0];
    assert!(
        spread >= 2_400,
        "12 posts in {spread} ms: the replicas did not share the pace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_schedulers_expire_a_request_once() {
    let cluster = Cluster::start(3, config(""), &[]).await;
    let id = cluster
        .create(1, json!({"title": "Rotate keys", "expires_in": "2s"}))
        .await;
    let msg = posted(&cluster.sandbox, &id).await;
    let expired = cluster
        .sandbox
        .wait_for_message(CHANNEL, &msg.ts, |m| !has_buttons(m), PATIENCE)
        .await
        .expect("the expiry shows on the message");
    assert!(
        text_of(&expired).contains("Expired"),
        "{}",
        text_of(&expired)
    );
    // Give the other schedulers time to (wrongly) act too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let audit = cluster.audit(0).await;
    let expiries = audit
        .iter()
        .filter(|e| e["request_id"] == id.as_str() && e["event"] == "request.expired")
        .count();
    assert_eq!(expiries, 1, "expired once");
    let updates = cluster
        .sandbox
        .calls_to("chat.update")
        .iter()
        .filter(|c| c.ok && c.args["ts"] == msg.ts.as_str())
        .count();
    assert_eq!(updates, 1, "one message update");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_socket_mode_take_clicks_whichever_socket_slack_picks() {
    let app_token = start_sandbox_app_token();
    let mut cluster = Cluster::start(2, config(""), &[("SLACK_APP_TOKEN", app_token)]).await;
    let sockets = cluster
        .sandbox
        .wait_until(PATIENCE, |sb| (sb.open_connections() >= 4).then_some(()))
        .await;
    assert!(sockets.is_some(), "each replica opens its two connections");
    let decide = |cluster: &Cluster, n: usize| {
        let sandbox = cluster.sandbox.clone();
        let base = cluster.base(cluster.alive()[0]);
        let (http, key) = (cluster.http.clone(), cluster.key.clone());
        async move {
            let (_, created) = call(
                &http,
                &base,
                &key,
                Method::POST,
                "/v1/requests",
                Some(json!({"title": format!("Socket #{n}")})),
            )
            .await;
            let id = created["id"].as_str().unwrap().to_owned();
            let msg = posted(&sandbox, &id).await;
            let ack = sandbox
                .click(Click::new(
                    CHANNEL,
                    &msg.ts,
                    "greenlight.approve",
                    "U0CAROL",
                ))
                .await
                .unwrap();
            assert!(ack.acked(), "{ack:?}");
            let (_, got) = get_request(&http, &base, &key, &id).await;
            assert_eq!(got["status"], "approved", "{got}");
        }
    };
    for n in 0..8 {
        decide(&cluster, n).await;
    }
    // Slack's payloads went over both replicas' sockets.
    let transports: Vec<String> = cluster
        .sandbox
        .deliveries()
        .iter()
        .map(|d| serde_json::to_value(&d.outcome).unwrap()["transport"].to_string())
        .collect();
    assert!(
        transports.iter().all(|t| t.contains("socket")),
        "{transports:?}"
    );
    cluster.replicas[0].take().unwrap().kill9();
    let fewer = cluster
        .sandbox
        .wait_until(PATIENCE, |sb| (sb.open_connections() <= 2).then_some(()))
        .await;
    assert!(fewer.is_some(), "the dead replica's sockets close");
    for n in 8..12 {
        decide(&cluster, n).await;
    }
}

fn start_sandbox_app_token() -> String {
    greenlight_sandbox::SandboxConfig::for_tests()
        .app_token
        .expect("the test sandbox takes Socket Mode")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_replica_and_exits_zero_while_another_takes_over() {
    let mut cluster = Cluster::start(2, config(""), &[]).await;
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(
            cluster
                .create(n % 2, json!({"title": format!("Job #{n}")}))
                .await,
        );
    }
    let mut msgs = Vec::new();
    for id in &ids {
        msgs.push(posted(&cluster.sandbox, id).await);
    }
    // Clicks keep arriving at replica 0 while it is told to stop.
    let clicks = futures::stream::iter(ids.iter().zip(&msgs).enumerate())
        .map(|(n, (id, msg))| {
            let cluster = &cluster;
            async move {
                if n == 5 {
                    let pid = cluster.replicas[0].as_ref().unwrap().child.id();
                    let sent = std::process::Command::new("kill")
                        .args(["-TERM", &pid.to_string()])
                        .status()
                        .unwrap();
                    assert!(sent.success());
                }
                let base0 = cluster.base(0);
                let base1 = cluster.base(1);
                match cluster.click_on_base(&base0, &msg.ts, id).await {
                    Some(200) => (id.clone(), true),
                    _ => (
                        id.clone(),
                        cluster.click_on_base(&base1, &msg.ts, id).await == Some(200),
                    ),
                }
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await;
    let started = Instant::now();
    let exit = loop {
        let child = &mut cluster.replicas[0].as_mut().unwrap().child;
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "replica 0 did not exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "a SIGTERM ends with exit 0, got {exit}");
    // Every click answered 200 was committed, whichever replica answered it.
    for (id, acked) in &clicks {
        assert!(
            acked,
            "the click on {id} was answered by one of the replicas"
        );
        let (_, got) = cluster
            .call(1, Method::GET, &format!("/v1/requests/{id}"), None)
            .await;
        assert_eq!(got["status"], "approved", "{got}");
        let ts = got["slack"]["ts"].as_str().unwrap().to_owned();
        assert!(
            cluster
                .sandbox
                .wait_for_message(CHANNEL, &ts, |m| !has_buttons(m), PATIENCE)
                .await
                .is_some(),
            "{id}'s message shows its outcome"
        );
    }
}

/// PostgreSQL itself restarts under a running server: `/readyz` goes red, then green again,
/// and the server keeps running and loses nothing. It restarts the machine's PostgreSQL, so it
/// runs alone (`scripts/test` runs it after the rest, with `--ignored`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the machine's PostgreSQL: scripts/test runs it alone"]
async fn postgres_restarting_under_a_running_server_turns_readyz_red_then_green() {
    let cluster = Cluster::start(1, config(""), &[]).await;
    let before = cluster
        .create(0, json!({"title": "Before the restart"}))
        .await;
    posted(&cluster.sandbox, &before).await;
    let ready = |cluster: &Cluster| {
        let (http, base) = (cluster.http.clone(), cluster.base(0));
        async move {
            http.get(format!("{base}/readyz"))
                .timeout(Duration::from_secs(3))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    assert_eq!(ready(&cluster).await, 200);
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("a Debian PostgreSQL cluster")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .unwrap();
    let ctl = |action: &str| {
        let status = std::process::Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &version, "main", action])
            .status()
            .expect("pg_ctlcluster runs");
        assert!(status.success(), "pg_ctlcluster {action}");
    };
    ctl("stop");
    let red = async {
        for _ in 0..50 {
            if ready(&cluster).await == 503 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }
    .await;
    ctl("start");
    assert!(red, "/readyz turns red while the database is down");
    let deadline = Instant::now() + PATIENCE;
    while ready(&cluster).await != 200 {
        assert!(
            Instant::now() < deadline,
            "/readyz never turned green again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Still the same process, and nothing lost.
    let after = cluster
        .create(0, json!({"title": "After the restart"}))
        .await;
    let msg = posted(&cluster.sandbox, &after).await;
    assert_eq!(
        cluster
            .click_on(0, &msg.ts, "greenlight.approve", "U0ALICE", &after)
            .await,
        Some(200)
    );
    let (_, got) = cluster
        .call(0, Method::GET, &format!("/v1/requests/{before}"), None)
        .await;
    assert_eq!(got["status"], "pending");
    let (_, got) = cluster
        .call(
            0,
            Method::GET,
            &format!("/v1/requests/{after}?wait=5"),
            None,
        )
        .await;
    assert_eq!(got["status"], "approved");
}
