//! The load generator: signed clicks and API calls, closed loop (N connections, each sends its
//! next request when the previous one is answered) and open loop (requests sent on a fixed
//! schedule whatever happens; latency counted from the scheduled time, so a stall is charged to
//! every request it delays, not hidden by sending fewer: no coordinated omission).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::{Error, Result};

/// How long a single request may take before it counts as failed. Slack itself gives up at 3 s.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Slack shows the user an error when the ack takes longer than this.
pub const SLACK_ACK_LIMIT: Duration = Duration::from_secs(3);
/// Open-loop safety valve: requests beyond this many in flight wait (and the wait is counted).
const MAX_IN_FLIGHT: usize = 4096;

/// One Slack click target: where the message is and what its button carries.
#[derive(Debug, Clone)]
pub struct Target {
    pub channel: String,
    pub ts: String,
    pub action_id: String,
    /// The button's value: the greenlight request id (the peer ignores it).
    pub value: String,
}

/// The block_actions payload Slack sends for a button click, form-encoded and signed.
pub fn click_body(target: &Target, user: &str) -> String {
    let payload = json!({
        "type": "block_actions",
        "team": {"id": "T0SANDBOX", "domain": "sandbox"},
        "user": {"id": user, "username": "bench", "name": "bench", "team_id": "T0SANDBOX"},
        "api_app_id": "A0GREENLIGHT",
        "token": "legacy",
        "container": {"type": "message", "message_ts": target.ts, "channel_id": target.channel, "is_ephemeral": false},
        "trigger_id": "1.2.3",
        "channel": {"id": target.channel, "name": "bench"},
        "message": {"type": "message", "ts": target.ts, "text": "approval"},
        "response_url": "http://127.0.0.1:9/response",
        "state": {"values": {}},
        "actions": [{"action_id": target.action_id, "block_id": "greenlight.actions", "value": target.value,
                      "type": "button", "text": {"type": "plain_text", "text": "Approve"}, "action_ts": "1.2"}]
    });
    serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap_or_default()
}

pub fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// What one load run sends: a click or an API call, built fresh for request number `i`.
/// Request `i` goes to `urls[i % urls.len()]`: the load spread round robin over the
/// replicas, as a load balancer would.
#[derive(Clone)]
pub enum Job {
    /// Signed clicks, each body once, POSTed to one of `urls`. The bodies are rendered before
    /// the run (`Job::clicks`), so the generator's share of the machine is signing and sending.
    Clicks {
        urls: Arc<Vec<String>>,
        secret: String,
        bodies: Arc<Vec<Bytes>>,
    },
    /// `POST` to one of `urls` with the JSON body `make(i)` and a bearer key.
    Create {
        urls: Arc<Vec<String>>,
        key: String,
        make: Arc<dyn Fn(usize) -> Value + Send + Sync>,
    },
}

/// Round robin by request index.
fn pick(urls: &[String], i: usize) -> &str {
    &urls[i % urls.len().max(1)]
}

impl Job {
    /// Clicks by `user` on each of `targets` once.
    pub fn clicks(urls: Arc<Vec<String>>, secret: String, user: &str, targets: &[Target]) -> Self {
        Job::Clicks {
            urls,
            secret,
            bodies: Arc::new(
                targets
                    .iter()
                    .map(|t| Bytes::from(click_body(t, user)))
                    .collect(),
            ),
        }
    }

    /// How many distinct requests this job can send (`None`: unbounded).
    fn limit(&self) -> Option<usize> {
        match self {
            Job::Clicks { bodies, .. } => Some(bodies.len()),
            Job::Create { .. } => None,
        }
    }

    fn request(&self, http: &reqwest::Client, i: usize) -> reqwest::RequestBuilder {
        match self {
            Job::Clicks {
                urls,
                secret,
                bodies,
            } => {
                let body = bodies[i].clone();
                let ts = unix_now();
                http.post(pick(urls, i))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("x-slack-request-timestamp", ts.to_string())
                    .header(
                        "x-slack-signature",
                        greenlight_sandbox::sign(secret, ts, &body),
                    )
                    .body(body)
            }
            Job::Create { urls, key, make } => {
                http.post(pick(urls, i)).bearer_auth(key).json(&make(i))
            }
        }
    }

    /// The same request as `request`, for a connection of its own to `urls[i % len]`, whose
    /// index comes with it: the path, the headers and the body, nothing parsed per request.
    fn raw(&self, targets: &[Endpoint], i: usize) -> (usize, http::Request<Full<Bytes>>) {
        let at = i % targets.len().max(1);
        let target = &targets[at];
        let builder = http::Request::post(target.path.as_str())
            .header(http::header::HOST, target.authority.as_str());
        let request = match self {
            Job::Clicks { secret, bodies, .. } => {
                let body = bodies[i].clone();
                let ts = unix_now();
                builder
                    .header(
                        http::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .header("x-slack-request-timestamp", ts)
                    .header(
                        "x-slack-signature",
                        greenlight_sandbox::sign(secret, ts, &body),
                    )
                    .body(Full::new(body))
            }
            Job::Create { key, make, .. } => builder
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(http::header::AUTHORIZATION, format!("Bearer {key}"))
                .body(Full::new(Bytes::from(make(i).to_string()))),
        };
        // Every part is valid by construction (a path, ASCII headers).
        (at, request.unwrap_or_default())
    }

    fn urls(&self) -> &[String] {
        match self {
            Job::Clicks { urls, .. } | Job::Create { urls, .. } => urls,
        }
    }
}

/// Where a closed loop's connection goes: `host:port` and the path, parsed once.
#[derive(Debug, Clone)]
struct Endpoint {
    authority: String,
    path: String,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Self> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| Error::msg(format!("bad URL {url}: {e}")))?;
        let authority = uri
            .authority()
            .ok_or_else(|| Error::msg(format!("no host in {url}")))?
            .to_string();
        let path = uri
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned());
        Ok(Self { authority, path })
    }
}

/// One keep-alive HTTP/1.1 connection (hyper's client connection: no pool to look up, no URL
/// to parse per request), so the generator takes as little of the machine as it can.
async fn connect(authority: &str) -> Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Error::msg(format!("HTTP handshake with {authority}: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// Sends `request` on the connection in `slot` (opening one when there is none, or when the
/// server closed it, as an HTTP/1.0 server does after each answer) and reads the whole answer.
/// A request the connection never sent is sent once more on a new one; a failure or a timeout
/// drops the connection, and the next request opens a new one, as a real client would.
async fn send_on(
    slot: &mut Option<SendRequest<Full<Bytes>>>,
    authority: &str,
    request: http::Request<Full<Bytes>>,
    keep_body: bool,
) -> (u16, Option<String>) {
    let exchange = async {
        let mut request = request;
        let mut fresh = false;
        let res = loop {
            if let Some(send) = slot.as_mut()
                && send.ready().await.is_err()
            {
                *slot = None;
            }
            let send = match slot {
                Some(send) => send,
                None => {
                    fresh = true;
                    slot.insert(connect(authority).await?)
                }
            };
            match send.try_send_request(request).await {
                Ok(res) => break res,
                Err(mut e) => match e.take_message() {
                    // Not sent: the connection closed under it. Once more, on a new one.
                    Some(unsent) if !fresh => {
                        *slot = None;
                        request = unsent;
                    }
                    _ => return Err(Error::msg(format!("request failed: {}", e.error()))),
                },
            }
        };
        let status = res.status().as_u16();
        // Read the whole body: the request is done when its answer is.
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::msg(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok::<_, Error>((
            status,
            keep_body.then(|| String::from_utf8_lossy(&body).into_owned()),
        ))
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(Ok(answer)) => answer,
        _ => {
            *slot = None;
            (0, None)
        }
    }
}

/// What came back for one request.
#[derive(Debug, Clone)]
pub struct Sample {
    /// HTTP status; 0 when the request failed or timed out.
    pub status: u16,
    pub latency: Duration,
    /// The response body when the caller asked to keep it (creates: to check the status).
    pub body: Option<String>,
}

/// The outcome of a run: every sample and the wall time it took.
#[derive(Debug, Default)]
pub struct RunResult {
    pub samples: Vec<Sample>,
    pub elapsed: Duration,
}

impl RunResult {
    pub fn ok(&self, status: u16) -> usize {
        self.samples.iter().filter(|s| s.status == status).count()
    }

    pub fn failed(&self, status: u16) -> usize {
        self.samples.len() - self.ok(status)
    }

    /// Successful requests per second over the whole run.
    pub fn throughput(&self, status: u16) -> f64 {
        self.ok(status) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn latencies(&self) -> Latencies {
        Latencies::new(self.samples.iter().map(|s| s.latency).collect())
    }

    /// Share of requests answered 200 within Slack's 3 s.
    pub fn within_slack_limit(&self) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        let n = self
            .samples
            .iter()
            .filter(|s| s.status == 200 && s.latency <= SLACK_ACK_LIMIT)
            .count();
        n as f64 / self.samples.len() as f64
    }
}

/// Sorted latencies; percentiles by nearest rank.
#[derive(Debug, Clone, Default)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn new(mut v: Vec<Duration>) -> Self {
        v.sort_unstable();
        Self(v)
    }

    /// The `p`th percentile (0..=100) in milliseconds; `None` without samples.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        if self.0.is_empty() {
            return None;
        }
        // The epsilon keeps float noise (0.999 * 1000 = 999.0000000000001) off the next rank.
        let rank = ((p / 100.0) * self.0.len() as f64 - 1e-9).ceil() as usize;
        let i = rank.clamp(1, self.0.len()) - 1;
        Some(self.0[i].as_secs_f64() * 1000.0)
    }
}

pub fn client(connections: usize) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(connections.max(1))
        .timeout(REQUEST_TIMEOUT)
        .tcp_nodelay(true)
        .build()?)
}

async fn send(http: &reqwest::Client, job: &Job, i: usize) -> u16 {
    match job.request(http, i).send().await {
        Ok(res) => {
            let status = res.status().as_u16();
            // Read the whole body: the request is done when its answer is.
            let _ = res.bytes().await;
            status
        }
        Err(_) => 0,
    }
}

/// `connections` workers send back to back until `duration` passes or the job runs out of
/// distinct requests (`count` caps it too).
pub async fn closed_loop(
    job: Job,
    connections: usize,
    duration: Duration,
    count: Option<usize>,
    keep_body: bool,
) -> Result<RunResult> {
    let targets: Arc<Vec<Endpoint>> = Arc::new(
        job.urls()
            .iter()
            .map(|u| Endpoint::parse(u))
            .collect::<Result<_>>()?,
    );
    let limit = match (job.limit(), count) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(usize::MAX),
    };
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let (targets, job, next) = (targets.clone(), job.clone(), next.clone());
        workers.spawn(async move {
            let mut samples = Vec::new();
            // This worker's connection to each URL, opened on first use.
            let mut conns: Vec<Option<SendRequest<Full<Bytes>>>> =
                targets.iter().map(|_| None).collect();
            loop {
                if Instant::now() >= deadline {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= limit {
                    break;
                }
                let (at, request) = job.raw(&targets, i);
                let sent = Instant::now();
                let (status, body) =
                    send_on(&mut conns[at], &targets[at].authority, request, keep_body).await;
                samples.push(Sample {
                    status,
                    latency: sent.elapsed(),
                    body,
                });
            }
            samples
        });
    }
    let mut samples = Vec::new();
    while let Some(done) = workers.join_next().await {
        samples.extend(done?);
    }
    Ok(RunResult {
        samples,
        elapsed: started.elapsed(),
    })
}

/// Sends `rate` requests a second for `duration` (capped by the job's distinct requests), each
/// on its own schedule; a request's latency runs from its scheduled send time to its answer.
/// `on_sent` hears each request's index and scheduled time (for click-to-update timing).
pub async fn open_loop(
    job: Job,
    rate: f64,
    duration: Duration,
    on_sent: Option<Arc<dyn Fn(usize, Instant) + Send + Sync>>,
) -> Result<RunResult> {
    let http = client(256)?;
    let wanted = (rate * duration.as_secs_f64()).round() as usize;
    let total = job.limit().map_or(wanted, |l| l.min(wanted));
    let interval = Duration::from_secs_f64(1.0 / rate.max(1e-9));
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let scheduled = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let (http, job, slots, on_sent) =
            (http.clone(), job.clone(), slots.clone(), on_sent.clone());
        tasks.spawn(async move {
            let _permit = slots.acquire_owned().await;
            if let Some(f) = &on_sent {
                f(i, scheduled);
            }
            let status = send(&http, &job, i).await;
            Sample {
                status,
                latency: scheduled.elapsed(),
                body: None,
            }
        });
    }
    let mut samples = Vec::with_capacity(total);
    while let Some(done) = tasks.join_next().await {
        samples.push(done?);
    }
    Ok(RunResult {
        samples,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_so_the_tail_is_a_real_sample() {
        let l = Latencies::new((1..=1000).rev().map(Duration::from_millis).collect());
        assert_eq!(l.percentile_ms(50.0), Some(500.0));
        assert_eq!(l.percentile_ms(99.0), Some(990.0));
        assert_eq!(l.percentile_ms(99.9), Some(999.0));
        assert_eq!(l.percentile_ms(100.0), Some(1000.0));
        assert_eq!(Latencies::default().percentile_ms(50.0), None);
    }

    #[test]
    fn requests_take_the_replicas_in_turn() {
        let urls: Vec<String> = ["http://a", "http://b"].map(String::from).to_vec();
        let picked: Vec<&str> = (0..5).map(|i| pick(&urls, i)).collect();
        assert_eq!(
            picked,
            ["http://a", "http://b", "http://a", "http://b", "http://a"]
        );
        assert_eq!(pick(&urls[..1], 7), "http://a");
    }

    #[test]
    fn a_closed_loop_request_names_its_host_path_and_signature() {
        let urls = Arc::new(vec![
            "http://127.0.0.1:8080/slack/interactions".to_owned(),
            "http://127.0.0.1:8081/slack/interactions?x=1".to_owned(),
        ]);
        let endpoints: Vec<Endpoint> = urls.iter().map(|u| Endpoint::parse(u).unwrap()).collect();
        assert_eq!(endpoints[1].authority, "127.0.0.1:8081");
        assert_eq!(endpoints[1].path, "/slack/interactions?x=1");
        let target = Target {
            channel: "C0DEPLOY".into(),
            ts: "1700000000.000100".into(),
            action_id: "greenlight.approve".into(),
            value: "req_01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
        };
        let job = Job::clicks(urls, "s3cret".into(), "U0ALICE", &[target.clone(), target]);
        let (at, request) = job.raw(&endpoints, 1);
        assert_eq!(at, 1);
        assert_eq!(request.uri(), "/slack/interactions?x=1");
        assert_eq!(request.headers()["host"], "127.0.0.1:8081");
        let ts: i64 = request.headers()["x-slack-request-timestamp"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let Job::Clicks { bodies, .. } = &job else {
            unreachable!()
        };
        assert_eq!(
            request.headers()["x-slack-signature"],
            greenlight_sandbox::sign("s3cret", ts, &bodies[1]).as_str()
        );
    }

    #[test]
    fn a_click_carries_what_both_systems_read() {
        let target = Target {
            channel: "C0DEPLOY".into(),
            ts: "1700000000.000100".into(),
            action_id: "greenlight.approve".into(),
            value: "req_01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
        };
        let body = click_body(&target, "U0ALICE");
        let form: Vec<(String, String)> = serde_urlencoded::from_str(&body).unwrap();
        let payload: Value = serde_json::from_str(&form[0].1).unwrap();
        assert_eq!(payload["type"], "block_actions");
        assert_eq!(payload["user"]["id"], "U0ALICE");
        assert_eq!(payload["channel"]["id"], "C0DEPLOY");
        assert_eq!(payload["message"]["ts"], "1700000000.000100");
        assert_eq!(payload["actions"][0]["action_id"], "greenlight.approve");
        assert_eq!(payload["actions"][0]["value"], target.value);
    }
}
