//! The one config loader: built-in defaults, then `greenlight.toml`, then the environment (the
//! environment wins). Unknown keys are errors, not silently ignored.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::delivery::hooks::ActionHook;
use crate::domain::{
    Approver, ChannelRef, DurationSpec, Notify, OnExpiry, Policy, Verdict, WorkflowName,
};
use crate::service::rules::Rule;

mod problems;

pub use problems::Problem;
use problems::{KeyOffsets, Source};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATABASE_URL: &str = "sqlite:greenlight.db";
pub const DEFAULT_SLACK_API_URL: &str = "https://slack.com/api/";
pub const DEFAULT_CONFIG_FILE: &str = "greenlight.toml";
pub const DEFAULT_SANDBOX_LISTEN: &str = "127.0.0.1:8090";
pub const DEFAULT_SANDBOX_INTERACTIVITY_URL: &str = "http://127.0.0.1:8080/slack/interactions";

/// A secret string that never shows itself in logs or debug output.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub database: DatabaseConfig,
    /// How long a SIGTERM gives requests, deliveries and sockets in flight before exiting.
    pub shutdown_timeout: DurationSpec,
    pub slack: SlackConfig,
    pub workflows: Vec<Workflow>,
    /// The file the workflows came from, if any.
    pub source: Option<PathBuf>,
    pub delivery: DeliveryConfig,
    pub alerts: AlertsConfig,
    pub limits: LimitsConfig,
    pub mcp: McpConfig,
    /// Where people reach the API (`public_url`, `GREENLIGHT_PUBLIC_URL`): digests link each
    /// request to `{public_url}/v1/requests/{id}`.
    pub public_url: Option<String>,
    /// The `[[alert]]` tables: anomalies announced in `[alerts] channel`.
    pub alert_rules: Vec<Alert>,
}

/// What an `[[alert]]` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Requests one rule decided (`rule`).
    AutoDecisions,
    /// Requests of a workflow that were denied, by anyone (`workflow`).
    Denials,
    /// Requests of a workflow created (`workflow`), in all or per requester.
    Requests,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::AutoDecisions => "auto_decisions",
            AlertKind::Denials => "denials",
            AlertKind::Requests => "requests",
        }
    }
}

/// One `[[alert]]`: fires when more than `above` happened `within` the window, then stays
/// quiet for a window from when it fired.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    pub name: String,
    pub kind: AlertKind,
    pub above: u32,
    pub within: DurationSpec,
    pub rule: Option<String>,
    pub workflow: Option<WorkflowName>,
    /// `kind = "requests"`: count each requester apart (one requester flooding).
    #[serde(default)]
    pub per_requester: bool,
}

impl Alert {
    /// What is wrong with it, each with its key, given the workflows it may name.
    fn problems(&self, workflows: &[Workflow]) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let name = &self.name;
        if name.trim().is_empty() {
            out.push(("name", "an [[alert]] has an empty name".to_owned()));
        }
        let kind = self.kind.as_str();
        match (self.kind, &self.rule, &self.workflow) {
            (AlertKind::AutoDecisions, None, _) => out.push((
                "kind",
                format!("alert {name:?}: kind = \"auto_decisions\" needs rule = \"...\" (the rule whose decisions it counts)"),
            )),
            (AlertKind::AutoDecisions, Some(rule), _) => {
                if !workflows.iter().any(|w| w.rule_specs.iter().any(|r| &r.name == rule)) {
                    out.push((
                        "rule",
                        format!("alert {name:?}: no workflow has a rule {rule:?}"),
                    ));
                }
            }
            (AlertKind::Denials | AlertKind::Requests, _, None) => out.push((
                "kind",
                format!("alert {name:?}: kind = \"{kind}\" needs workflow = \"...\""),
            )),
            (AlertKind::Denials | AlertKind::Requests, _, Some(w)) => {
                if !workflows.iter().any(|x| &x.name == w) {
                    out.push((
                        "workflow",
                        format!("alert {name:?}: workflow {:?} is not configured", w.as_str()),
                    ));
                }
            }
        }
        if self.kind != AlertKind::AutoDecisions && self.rule.is_some() {
            out.push((
                "rule",
                format!("alert {name:?}: rule applies to kind = \"auto_decisions\" only"),
            ));
        }
        if self.kind == AlertKind::AutoDecisions && self.workflow.is_some() {
            out.push((
                "workflow",
                format!(
                    "alert {name:?}: kind = \"auto_decisions\" counts by rule; leave out workflow"
                ),
            ));
        }
        if self.per_requester && self.kind != AlertKind::Requests {
            out.push((
                "per_requester",
                format!("alert {name:?}: per_requester applies to kind = \"requests\" only"),
            ));
        }
        if self.within.as_millis() < 10_000 {
            out.push((
                "within",
                format!("alert {name:?}: within must be at least 10s"),
            ));
        }
        out
    }
}

/// `[mcp]`: what AI agents get over MCP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    /// The workflow `permission_prompt` asks in (default: the default workflow).
    pub permission_workflow: Option<WorkflowName>,
    /// How long `permission_prompt` waits for a person before it answers deny.
    pub permission_timeout: DurationSpec,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            permission_workflow: None,
            permission_timeout: "10m".parse().unwrap_or_else(|_| unreachable!()),
        }
    }
}

/// `[limits]`: what no caller may exceed, so that nobody can flood, starve or stall the
/// server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Creates per API key per minute (on each replica), in bursts of up to that many; over it
    /// the answer is 429 `rate_limited` with `Retry-After`.
    pub requests_per_minute_per_key: u32,
    /// Open HTTP connections at once; more wait in the kernel's queue.
    pub max_connections: u32,
    /// Long-polls waiting at once; more are answered 429 `too_many_waiters`.
    pub max_waiters: u32,
    /// A connection must send its request headers within this long, or it is closed.
    pub header_timeout: DurationSpec,
    /// Longest time to answer a request other than a long-poll.
    pub request_timeout: DurationSpec,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = |s: &str| s.parse().unwrap_or_else(|_| unreachable!());
        Self {
            requests_per_minute_per_key: 600,
            max_connections: 1024,
            max_waiters: 1000,
            header_timeout: d("10s"),
            request_timeout: d("30s"),
        }
    }
}

/// `[delivery]`: how the outbox retries, paces Slack and calls out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Let `callback_url` reach loopback and private addresses (tests, local setups).
    pub allow_private_targets: bool,
    /// `whsec_...`; `GREENLIGHT_WEBHOOK_SECRET` wins. Unset: generated once and stored.
    pub webhook_secret: Option<Secret>,
    /// Failed attempts before a job is dead.
    pub max_attempts: u32,
    /// A job older than this is dead at its next failure.
    pub max_age: DurationSpec,
    /// First retry delay; doubles each time (with jitter) up to `backoff_max`.
    pub backoff_base: DurationSpec,
    pub backoff_max: DurationSpec,
    /// Time limit of one callback or action hook call.
    pub timeout: DurationSpec,
    /// Requester-given callbacks in flight at once: their own share of the worker, apart from
    /// Slack's and the operators' hooks, so a slow callback URL cannot hold up Slack.
    pub callback_concurrency: u32,
    /// Callbacks in flight at once to any one host.
    pub callback_host_concurrency: u32,
    /// How long a claimed delivery is one worker's alone; a worker that dies loses its jobs
    /// to the others after this long.
    pub lease: DurationSpec,
    /// chat.postMessage pace per channel (Slack allows about one a second, with bursts).
    pub slack_posts_per_second: f64,
    pub slack_post_burst: u32,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        let d = |s: &str| s.parse().unwrap_or_else(|_| unreachable!());
        Self {
            allow_private_targets: false,
            webhook_secret: None,
            max_attempts: 15,
            max_age: d("24h"),
            backoff_base: d("500ms"),
            backoff_max: d("5m"),
            timeout: d("10s"),
            callback_concurrency: 16,
            callback_host_concurrency: 4,
            lease: d("60s"),
            slack_posts_per_second: 1.0,
            slack_post_burst: 5,
        }
    }
}

/// `[database]`: the connection pool (PostgreSQL; SQLite has one writer and a few readers).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Connections per replica.
    pub max_connections: u32,
    /// A statement running longer than this is cancelled (and its write rolled back).
    pub statement_timeout: DurationSpec,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        let defaults = crate::store::DatabaseOptions::default();
        Self {
            max_connections: defaults.max_connections,
            statement_timeout: DurationSpec::from_secs(defaults.statement_timeout.as_secs())
                .unwrap_or_else(|_| unreachable!()),
        }
    }
}

impl DatabaseConfig {
    pub fn options(&self) -> crate::store::DatabaseOptions {
        crate::store::DatabaseOptions {
            max_connections: self.max_connections,
            statement_timeout: self.statement_timeout.as_duration(),
        }
    }
}

pub const DEFAULT_SHUTDOWN_TIMEOUT: &str = "10s";
/// Slack allows at most 10 Socket Mode connections per app, across all replicas.
pub const SLACK_MAX_SOCKET_CONNECTIONS: u32 = 10;

/// `[alerts]`: where deliveries that failed for good are announced.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    pub channel: Option<ChannelRef>,
}

#[derive(Debug, Clone)]
pub struct SlackConfig {
    pub bot_token: Option<Secret>,
    pub signing_secret: Option<Secret>,
    pub app_token: Option<Secret>,
    pub api_url: String,
    /// Socket Mode connections this replica opens (Slack allows 10 per app in all).
    pub socket_connections: u32,
}

impl SlackConfig {
    pub const DEFAULT_SOCKET_CONNECTIONS: u32 = 2;
}

/// One `[[workflow]]`: where requests go, who decides them and how.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    pub name: WorkflowName,
    pub channel: ChannelRef,
    /// Slack user and user group ids; empty means anyone who can see the channel.
    #[serde(default)]
    pub approvers: Vec<Approver>,
    #[serde(default = "one")]
    pub approvals_required: u32,
    #[serde(default)]
    pub allow_self_approval: bool,
    /// Deny opens a modal asking why.
    #[serde(default)]
    pub require_deny_reason: bool,
    /// Buttons ask "are you sure?" before they count.
    #[serde(default)]
    pub confirm: bool,
    /// Default expiry; a request's own `expires_in` wins.
    pub expires_in: Option<DurationSpec>,
    #[serde(default)]
    pub on_expiry: OnExpiry,
    pub remind_after: Option<DurationSpec>,
    /// Mentioned from the second reminder on.
    pub escalate_to: Option<Approver>,
    /// Lets a request name its own channel.
    #[serde(default)]
    pub allow_channel_override: bool,
    #[serde(default, rename = "rule")]
    pub rule_specs: Vec<RuleSpec>,
    /// `rule_specs`, compiled once by the loader.
    #[serde(skip)]
    pub rules: Vec<Rule>,
    /// URLs that get a signed callback on every state change of this workflow's requests.
    #[serde(default)]
    pub webhooks: Vec<String>,
    #[serde(default)]
    pub on_approve: Vec<ActionHook>,
    #[serde(default)]
    pub on_deny: Vec<ActionHook>,
    /// How Slack hears of this workflow's auto-decisions; a rule's own `notify` wins.
    #[serde(default)]
    pub notify: Notify,
    /// How long one digest message stands for (`notify = "digest"`).
    #[serde(default = "default_digest_interval")]
    pub digest_interval: DurationSpec,
}

fn one() -> u32 {
    1
}

pub const DEFAULT_DIGEST_INTERVAL: &str = "5m";

fn default_digest_interval() -> DurationSpec {
    DEFAULT_DIGEST_INTERVAL
        .parse()
        .unwrap_or_else(|_| unreachable!())
}

/// A `[[workflow.rule]]` as written; `Workflow::rules` holds it compiled.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: String,
    /// CEL over `params`, `requester`, `workflow`, `title` and `now`.
    pub when: toml::Spanned<String>,
    pub decision: Verdict,
    /// How Slack hears of this rule's decisions (default: the workflow's `notify`).
    pub notify: Option<Notify>,
}

impl Workflow {
    /// A workflow with every policy at its default: one approval from anyone in the channel.
    pub fn new(name: WorkflowName, channel: ChannelRef) -> Self {
        Self {
            name,
            channel,
            approvers: Vec::new(),
            approvals_required: 1,
            allow_self_approval: false,
            require_deny_reason: false,
            confirm: false,
            expires_in: None,
            on_expiry: OnExpiry::default(),
            remind_after: None,
            escalate_to: None,
            allow_channel_override: false,
            rule_specs: Vec::new(),
            rules: Vec::new(),
            webhooks: Vec::new(),
            on_approve: Vec::new(),
            on_deny: Vec::new(),
            notify: Notify::default(),
            digest_interval: default_digest_interval(),
        }
    }

    /// How Slack hears of a decision by the rule `rule`.
    pub fn notify_for(&self, rule: &str) -> Notify {
        self.rules
            .iter()
            .find(|r| r.name == rule)
            .and_then(|r| r.notify)
            .unwrap_or(self.notify)
    }

    pub fn policy(&self) -> Policy {
        Policy {
            approvals_required: self.approvals_required,
            allow_self_approval: self.allow_self_approval,
        }
    }

    /// Adds a rule (for tests and programmatic configs); the loader compiles `[[workflow.rule]]`.
    pub fn with_rule(mut self, name: &str, when: &str, decision: Verdict) -> Self {
        let rule = Rule::compile(name, when, decision)
            .unwrap_or_else(|p| panic!("rule {name} does not compile: {p:?}"));
        self.rules.push(rule);
        self
    }

    /// Problems that need no file to find, each with the key it is about (the loader places
    /// them in the file).
    fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let name = self.name.as_str();
        if self.approvals_required == 0 {
            out.push((
                "approvals_required",
                format!("workflow {name:?}: approvals_required must be at least 1"),
            ));
        }
        let has_groups = self
            .approvers
            .iter()
            .any(|a| matches!(a, Approver::Group(_)));
        let people = self.approvers.len();
        if !self.approvers.is_empty() && !has_groups && people < self.approvals_required as usize {
            out.push((
                "approvals_required",
                format!(
                    "workflow {name:?}: approvals_required = {} but only {people} approver(s) are listed, so no request could ever be approved",
                    self.approvals_required
                ),
            ));
        }
        let interval = self.digest_interval.as_millis();
        if !(10_000..=86_400_000).contains(&interval) {
            out.push((
                "digest_interval",
                format!("workflow {name:?}: digest_interval must be between 10s and 24h"),
            ));
        }
        if self.escalate_to.is_some() && self.remind_after.is_none() {
            out.push((
                "escalate_to",
                format!(
                    "workflow {name:?}: escalate_to needs remind_after (escalation happens on the second reminder)"
                ),
            ));
        }
        for url in &self.webhooks {
            let ok = reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !ok {
                out.push((
                    "webhooks",
                    format!("workflow {name:?}: webhook {url:?} is not an http(s) URL"),
                ));
            }
        }
        out
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    database_url: Option<String>,
    #[serde(default)]
    database: DatabaseConfig,
    shutdown_timeout: Option<DurationSpec>,
    #[serde(default)]
    slack: FileSlack,
    #[serde(default)]
    delivery: DeliveryConfig,
    #[serde(default)]
    alerts: AlertsConfig,
    #[serde(default)]
    limits: LimitsConfig,
    #[serde(default)]
    mcp: McpConfig,
    public_url: Option<String>,
    #[serde(default, rename = "workflow")]
    workflows: Vec<Workflow>,
    #[serde(default, rename = "alert")]
    alert_rules: Vec<Alert>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSlack {
    bot_token: Option<Secret>,
    signing_secret: Option<Secret>,
    app_token: Option<Secret>,
    api_url: Option<String>,
    socket_connections: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", show_problems(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// The problems found, each with its place (empty for a file that cannot be read).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(p) => p,
            ConfigError::Read { .. } => &[],
        }
    }
}

fn show_problems(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    let count = match problems.len() {
        1 => "1 problem".to_owned(),
        n => format!("{n} problems"),
    };
    format!("{}\n{count} in the configuration", lines.join("\n"))
}

/// The smallest working `[[workflow]]`, printed where one is missing.
pub const WORKFLOW_SNIPPET: &str = "[[workflow]]\nname = \"deploy\"\nchannel = \"#deploy\"";

/// Where a value came from: the environment (named) or a key of the file.
enum Origin<'a> {
    Env(&'static str),
    File(&'a KeyOffsets, &'static str),
    Default,
}

struct Checker<'a> {
    source: Option<Source<'a>>,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn push(&mut self, origin: Origin<'_>, message: String) {
        let problem = match (origin, &self.source) {
            (Origin::Env(var), _) => Problem::general(var, message),
            (Origin::File(keys, key), Some(src)) => src.at(keys.of(key), message),
            (_, Some(src)) => src.at(None, message),
            (_, None) => Problem::general("configuration", message),
        };
        self.problems.push(problem);
    }

    fn at(&mut self, offset: Option<usize>, message: String) {
        match &self.source {
            Some(src) => self.problems.push(src.at(offset, message)),
            None => self
                .problems
                .push(Problem::general("configuration", message)),
        }
    }
}

/// A setting read from the environment, else the file, remembering which.
fn setting<'k>(
    env: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
    file: Option<String>,
    keys: &'k KeyOffsets,
    key: &'static str,
) -> (Option<String>, Origin<'k>) {
    match env(var) {
        Some(v) => (Some(v), Origin::Env(var)),
        None => match file {
            Some(v) => (Some(v), Origin::File(keys, key)),
            None => (None, Origin::Default),
        },
    }
}

/// What is wrong with `[delivery]`, each with its key.
fn delivery_problems(d: &DeliveryConfig) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if d.max_attempts == 0 {
        out.push((
            "max_attempts",
            "[delivery] max_attempts must be at least 1".to_owned(),
        ));
    }
    if d.backoff_base > d.backoff_max {
        out.push((
            "backoff_base",
            "[delivery] backoff_base must not exceed backoff_max".to_owned(),
        ));
    }
    if !(d.slack_posts_per_second.is_finite() && d.slack_posts_per_second > 0.0) {
        out.push((
            "slack_posts_per_second",
            "[delivery] slack_posts_per_second must be above 0".to_owned(),
        ));
    }
    if d.callback_concurrency == 0 || d.callback_host_concurrency == 0 {
        out.push((
            "callback_concurrency",
            "[delivery] callback_concurrency and callback_host_concurrency must be at least 1"
                .to_owned(),
        ));
    }
    if d.lease <= d.timeout {
        out.push((
            "lease",
            "[delivery] lease must be longer than timeout: a lease that runs out during a call lets another worker make the same call".to_owned(),
        ));
    }
    if d.slack_post_burst == 0 {
        out.push((
            "slack_post_burst",
            "[delivery] slack_post_burst must be at least 1".to_owned(),
        ));
    }
    out
}

/// The file as read, with the table values it came from (to place problems).
struct ReadFile<'t> {
    config: FileConfig,
    root: Option<toml::Spanned<toml::de::DeValue<'t>>>,
}

impl Config {
    /// Loads from the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        Self::load_with(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// Loads with `env` standing in for the environment (tests pass a map). Every problem is
    /// reported at once, sorted by line.
    pub fn load_with(env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let path = match env("GREENLIGHT_CONFIG") {
            Some(p) => Some(PathBuf::from(p)),
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()),
        };
        let text = match &path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_owned(),
                source,
            })?,
            None => String::new(),
        };
        let mut check = Checker {
            source: path.as_ref().map(|p| Source {
                shown: p.display().to_string(),
                text: &text,
            }),
            problems: Vec::new(),
        };
        let read = match &check.source {
            Some(src) => read_file(src, &mut check.problems),
            None => Some(ReadFile {
                config: FileConfig::default(),
                root: None,
            }),
        };
        let Some(read) = read else {
            // A syntax error: nothing else can be trusted until it is fixed.
            problems::sort(&mut check.problems);
            return Err(ConfigError::Invalid(check.problems));
        };
        let root = read.root.as_ref();
        let top = problems::key_offsets(root);
        let file = read.config;

        let (listen_raw, origin) = setting(&env, "GREENLIGHT_LISTEN", file.listen, &top, "listen");
        let listen_raw = listen_raw.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = listen_raw.parse().unwrap_or_else(|_| {
            check.push(
                origin,
                format!("listen address {listen_raw:?} is not HOST:PORT (e.g. 127.0.0.1:8080)"),
            );
            SocketAddr::from(([127, 0, 0, 1], 8080))
        });
        let (database_url, origin) = setting(
            &env,
            "GREENLIGHT_DATABASE_URL",
            file.database_url,
            &top,
            "database_url",
        );
        let database_url = database_url.unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        if !database_url.starts_with("sqlite:") && !crate::store::is_postgres(&database_url) {
            check.push(
                origin,
                format!(
                    "database URL {database_url:?} is not supported: use sqlite:PATH or postgres://USER@HOST:5432/DB"
                ),
            );
        }
        let database_keys = problems::key_offsets(root.and_then(|r| r.get_ref().get("database")));
        if !(1..=1000).contains(&file.database.max_connections) {
            check.push(
                Origin::File(&database_keys, "max_connections"),
                "[database] max_connections must be 1-1000".to_owned(),
            );
        }
        if file.database.statement_timeout.as_millis() < 100 {
            check.push(
                Origin::File(&database_keys, "statement_timeout"),
                "[database] statement_timeout must be at least 100ms".to_owned(),
            );
        }
        let slack_keys = problems::key_offsets(root.and_then(|r| r.get_ref().get("slack")));
        let (api_url, origin) = setting(
            &env,
            "SLACK_API_URL",
            file.slack.api_url,
            &slack_keys,
            "api_url",
        );
        let socket_connections = file
            .slack
            .socket_connections
            .unwrap_or(SlackConfig::DEFAULT_SOCKET_CONNECTIONS);
        if !(1..=SLACK_MAX_SOCKET_CONNECTIONS).contains(&socket_connections) {
            check.push(
                Origin::File(&slack_keys, "socket_connections"),
                format!(
                    "[slack] socket_connections must be 1-{SLACK_MAX_SOCKET_CONNECTIONS} (Slack allows {SLACK_MAX_SOCKET_CONNECTIONS} per app, across all replicas)"
                ),
            );
        }
        let slack = SlackConfig {
            socket_connections,
            bot_token: env("SLACK_BOT_TOKEN").map(Secret).or(file.slack.bot_token),
            signing_secret: env("SLACK_SIGNING_SECRET")
                .map(Secret)
                .or(file.slack.signing_secret),
            app_token: env("SLACK_APP_TOKEN").map(Secret).or(file.slack.app_token),
            api_url: api_url.unwrap_or_else(|| DEFAULT_SLACK_API_URL.to_owned()),
        };
        if !(slack.api_url.starts_with("https://") || slack.api_url.starts_with("http://")) {
            check.push(
                origin,
                format!("SLACK_API_URL {:?} is not an http(s) URL", slack.api_url),
            );
        }

        let mut delivery = file.delivery;
        let delivery_keys = problems::key_offsets(root.and_then(|r| r.get_ref().get("delivery")));
        let secret_origin = match env("GREENLIGHT_WEBHOOK_SECRET") {
            Some(s) => {
                delivery.webhook_secret = Some(Secret(s));
                Origin::Env("GREENLIGHT_WEBHOOK_SECRET")
            }
            None => Origin::File(&delivery_keys, "webhook_secret"),
        };
        if let Some(s) = &delivery.webhook_secret
            && crate::delivery::webhook::WebhookSecret::parse(s.expose()).is_err()
        {
            check.push(
                secret_origin,
                format!("webhook secret: {}", crate::delivery::webhook::BadSecret),
            );
        }
        for (key, message) in delivery_problems(&delivery) {
            check.push(Origin::File(&delivery_keys, key), message);
        }
        let limits_keys = problems::key_offsets(root.and_then(|r| r.get_ref().get("limits")));
        for (key, value) in [
            (
                "requests_per_minute_per_key",
                file.limits.requests_per_minute_per_key,
            ),
            ("max_connections", file.limits.max_connections),
            ("max_waiters", file.limits.max_waiters),
        ] {
            if value == 0 {
                check.push(
                    Origin::File(&limits_keys, key),
                    format!("[limits] {key} must be at least 1"),
                );
            }
        }

        let mut seen = HashSet::new();
        for (i, w) in file.workflows.iter().enumerate() {
            let item = problems::element(root, "workflow", i);
            let keys = problems::key_offsets(item);
            if w.name.as_str() != problems::MISSING_NAME && !seen.insert(w.name.clone()) {
                check.push(
                    Origin::File(&keys, "name"),
                    format!("workflow {:?} is defined twice", w.name.as_str()),
                );
            }
            for (key, message) in w.problems() {
                check.push(Origin::File(&keys, key), message);
            }
            let mut rule_names = HashSet::new();
            for (j, spec) in w.rule_specs.iter().enumerate() {
                let rule_keys = problems::key_offsets(problems::element(item, "rule", j));
                if spec.name.trim().is_empty() {
                    check.push(
                        Origin::File(&rule_keys, "name"),
                        format!("workflow {:?}: a rule has an empty name", w.name.as_str()),
                    );
                } else if !rule_names.insert(spec.name.as_str()) {
                    check.push(
                        Origin::File(&rule_keys, "name"),
                        format!(
                            "workflow {:?}: rule {:?} is defined twice",
                            w.name.as_str(),
                            spec.name
                        ),
                    );
                }
            }
            for (list, hooks) in [("on_approve", &w.on_approve), ("on_deny", &w.on_deny)] {
                for (j, hook) in hooks.iter().enumerate() {
                    let hook_keys = problems::key_offsets(problems::element(item, list, j));
                    for (part, message) in hook.problems(&env) {
                        check.push(
                            Origin::File(&hook_keys, part),
                            format!("workflow {:?}: {message}", w.name.as_str()),
                        );
                    }
                }
            }
        }
        if let Some(name) = &file.mcp.permission_workflow
            && !file.workflows.iter().any(|w| &w.name == name)
        {
            let mcp_keys = problems::key_offsets(root.and_then(|r| r.get_ref().get("mcp")));
            check.push(
                Origin::File(&mcp_keys, "permission_workflow"),
                format!(
                    "[mcp] permission_workflow {:?} is not a configured workflow",
                    name.as_str()
                ),
            );
        }
        let (public_url, origin) = setting(
            &env,
            "GREENLIGHT_PUBLIC_URL",
            file.public_url,
            &top,
            "public_url",
        );
        if let Some(url) = &public_url {
            let ok = reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !ok {
                check.push(
                    origin,
                    format!("public_url {url:?} is not an http(s) URL (e.g. https://greenlight.example.com)"),
                );
            }
        }
        let mut alert_names = HashSet::new();
        for (i, alert) in file.alert_rules.iter().enumerate() {
            let keys = problems::key_offsets(problems::element(root, "alert", i));
            if !alert.name.trim().is_empty() && !alert_names.insert(alert.name.as_str()) {
                check.push(
                    Origin::File(&keys, "name"),
                    format!("alert {:?} is defined twice", alert.name),
                );
            }
            for (key, message) in alert.problems(&file.workflows) {
                check.push(Origin::File(&keys, key), message);
            }
        }
        if !file.alert_rules.is_empty() && file.alerts.channel.is_none() {
            let keys = problems::key_offsets(problems::element(root, "alert", 0));
            check.push(
                Origin::File(&keys, "name"),
                "[[alert]] needs somewhere to post: set [alerts] channel = \"#ops\"".to_owned(),
            );
        }
        let mut workflows = file.workflows;
        for w in &mut workflows {
            w.rules = compile_rules(w.name.as_str(), &w.rule_specs, &mut check);
        }
        let names: HashSet<String> = workflows.iter().map(|w| w.name.to_string()).collect();
        for (i, w) in workflows.iter().enumerate() {
            let item = problems::element(root, "workflow", i);
            for (j, rule) in w.rules.iter().enumerate() {
                for unknown in rule
                    .history_workflows
                    .iter()
                    .filter(|n| !names.contains(*n))
                {
                    let rule_keys = problems::key_offsets(problems::element(item, "rule", j));
                    check.push(
                        Origin::File(&rule_keys, "when"),
                        format!(
                            "workflow {:?}, rule {:?}: no workflow {unknown:?} to look back at (history functions name a configured workflow)",
                            w.name.as_str(),
                            rule.name
                        ),
                    );
                }
            }
        }
        if !check.problems.is_empty() {
            problems::sort(&mut check.problems);
            return Err(ConfigError::Invalid(check.problems));
        }
        Ok(Config {
            listen,
            database_url,
            database: file.database,
            shutdown_timeout: file.shutdown_timeout.unwrap_or_else(|| {
                DEFAULT_SHUTDOWN_TIMEOUT
                    .parse()
                    .unwrap_or_else(|_| unreachable!())
            }),
            slack,
            workflows,
            source: path,
            delivery,
            alerts: file.alerts,
            limits: file.limits,
            mcp: file.mcp,
            public_url: public_url.map(|u| u.trim_end_matches('/').to_owned()),
            alert_rules: file.alert_rules,
        })
    }

    /// The workflow called `name`.
    pub fn workflow(&self, name: &str) -> Option<&Workflow> {
        self.workflows.iter().find(|w| w.name.as_str() == name)
    }

    /// What `serve` needs beyond a valid file: a bot token, a signing secret unless Socket
    /// Mode is on, and at least one workflow.
    pub fn check_serve(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.slack.bot_token.is_none() {
            problems.push(Problem::general(
                "SLACK_BOT_TOKEN",
                "is required (the bot token, xoxb-...)",
            ));
        }
        if self.slack.signing_secret.is_none() && self.slack.app_token.is_none() {
            problems.push(Problem::general(
                "SLACK_SIGNING_SECRET",
                "is required to verify Slack's requests (or set SLACK_APP_TOKEN for Socket Mode)",
            ));
        }
        problems.extend(self.workflow_problem());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// A config without workflows can take no request: `check` and `serve` both refuse it.
    pub fn workflow_problem(&self) -> Option<Problem> {
        if !self.workflows.is_empty() {
            return None;
        }
        let file = self
            .source
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_CONFIG_FILE))
            .display()
            .to_string();
        let how = match &self.source {
            Some(_) => format!("add a workflow to {file}"),
            None => format!(
                "no config file found (looked for GREENLIGHT_CONFIG, then ./{DEFAULT_CONFIG_FILE}); create {file}"
            ),
        };
        Some(Problem::general(
            file.clone(),
            format!("no workflows configured: {how} with, for example:\n\n{WORKFLOW_SNIPPET}\n"),
        ))
    }
}

/// Reads the file: a TOML syntax error is reported and ends the reading (`None`); anything
/// else wrong is added to `problems` with its place, and the rest is still read and checked.
fn read_file<'t>(src: &Source<'t>, problems: &mut Vec<Problem>) -> Option<ReadFile<'t>> {
    let (root, syntax) = toml::de::DeTable::parse_recoverable(src.text);
    if !syntax.is_empty() {
        problems.extend(syntax.iter().map(|e| src.toml(e)));
        return None;
    }
    let span = root.span();
    let root = toml::Spanned::new(span, toml::de::DeValue::Table(root.into_inner()));
    let (file, errors) = problems::lenient::<FileConfig>(root.clone());
    problems.extend(errors.iter().map(|e| src.toml(e)));
    Some(ReadFile {
        config: file.unwrap_or_default(),
        root: Some(root),
    })
}

/// Settings of the local Slack (`greenlight sandbox`, `greenlight dev`): where it listens, where
/// it sends clicks when no Socket Mode connection is open, and the credentials it accepts
/// (the same variables the server reads; unset ones keep the sandbox's defaults).
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    pub listen: SocketAddr,
    pub interactivity_url: Option<String>,
    pub bot_token: Option<Secret>,
    pub app_token: Option<Secret>,
    pub signing_secret: Option<Secret>,
}

impl SandboxSettings {
    pub fn load() -> Result<Self, ConfigError> {
        Self::load_with(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    pub fn load_with(env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let raw =
            env("GREENLIGHT_SANDBOX_LISTEN").unwrap_or_else(|| DEFAULT_SANDBOX_LISTEN.to_owned());
        let listen = raw.parse().map_err(|_| {
            ConfigError::Invalid(vec![Problem::general(
                "GREENLIGHT_SANDBOX_LISTEN",
                format!("{raw:?} is not HOST:PORT (e.g. {DEFAULT_SANDBOX_LISTEN})"),
            )])
        })?;
        Ok(Self {
            listen,
            interactivity_url: env("GREENLIGHT_SANDBOX_INTERACTIVITY_URL"),
            bot_token: env("SLACK_BOT_TOKEN").map(Secret),
            app_token: env("SLACK_APP_TOKEN").map(Secret),
            signing_secret: env("SLACK_SIGNING_SECRET").map(Secret),
        })
    }
}

/// Compiles a workflow's rules; each problem is reported at its place in the file, with the
/// line and a caret under the spot.
fn compile_rules(workflow: &str, specs: &[RuleSpec], check: &mut Checker<'_>) -> Vec<Rule> {
    let mut compiled = Vec::new();
    for spec in specs {
        match Rule::compile(&spec.name, spec.when.get_ref(), spec.decision) {
            Ok(rule) => compiled.push(rule.with_notify(spec.notify)),
            Err(found) => {
                let start = check
                    .source
                    .as_ref()
                    .map(|src| expression_start(src.text, spec.when.span()));
                for p in found {
                    check.at(
                        start.map(|s| s + p.offset),
                        format!("workflow {workflow:?}, rule {:?}: {}", spec.name, p.message),
                    );
                }
            }
        }
    }
    compiled
}

/// Where a TOML string's contents begin, after its opening quote(s). Escapes inside basic
/// strings can shift later columns; expressions rarely have any.
fn expression_start(text: &str, span: std::ops::Range<usize>) -> usize {
    let raw = text.get(span.clone()).unwrap_or_default();
    let quote = if raw.starts_with("\"\"\"") || raw.starts_with("'''") {
        let after = &raw[3..];
        3 + if after.starts_with("\r\n") {
            2
        } else {
            usize::from(after.starts_with('\n'))
        }
    } else {
        1
    };
    span.start + quote
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

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
        assert_eq!(p.policy().approvals_required, 2);
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
}
