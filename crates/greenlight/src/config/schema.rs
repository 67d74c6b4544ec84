//! The configuration's tables as written (`[delivery]`, `[[workflow]]`, `[[alert]]`, ...), with
//! their defaults and the checks each makes of itself; `load.rs` reads them and places their
//! problems in the file.

use serde::Deserialize;

use super::Secret;
use std::borrow::Cow;
use std::collections::HashSet;

use crate::domain::{
    Approver, ChannelRef, DEFAULT_STAGE, DurationSpec, Notify, OnExpiry, Policy, StageRule,
    StagesOrder, Verdict, WorkflowName,
};
use crate::policy::hooks::ActionHook;
use crate::rules::Rule;

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
    pub(super) fn problems(&self, workflows: &[Workflow]) -> Vec<(&'static str, String)> {
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
    /// An agent's tool input may be edited before it is allowed: `permission_prompt` then
    /// answers with the edited input as `updatedInput`.
    pub permission_editable: bool,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            permission_workflow: None,
            permission_timeout: "10m".parse().unwrap_or_else(|_| unreachable!()),
            permission_editable: true,
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
    /// Longest time to answer a request other than a wait for a decision (a long-poll, an MCP
    /// call); every request body is read within it.
    pub request_timeout: DurationSpec,
    /// Signals stored at most; a report of a new name past it is refused with 429
    /// `too_many_signals` (setting an existing name still works).
    pub max_signals: u32,
    /// How long a signal past its ttl is kept before it is deleted (with an audit entry).
    pub signal_retention: DurationSpec,
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
            max_signals: 10_000,
            signal_retention: d("7d"),
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
    /// Workspaces (`T…`) and Enterprise Grid organizations (`E…`) whose people may vote,
    /// besides the one greenlight is installed in (`[slack] allowed_teams`).
    pub allowed_teams: Vec<String>,
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
    /// Slack user and user group ids; empty means anyone who can see the channel. Not with
    /// `[[workflow.stage]]`: each stage lists its own.
    #[serde(default)]
    pub approvers: Vec<Approver>,
    #[serde(default = "one")]
    pub approvals_required: u32,
    /// `[[workflow.stage]]`, in order; none: one stage, `approvers` / `approvals_required`.
    #[serde(default, rename = "stage")]
    pub stages: Vec<Stage>,
    #[serde(default)]
    pub stages_order: StagesOrder,
    /// Denials (from voters of open stages) that deny a request.
    #[serde(default = "one")]
    pub denials_required: u32,
    /// Where a stage's approvers are told it is their turn: the thread (always), and with
    /// `"dm"` also a copy of the message with its buttons in each one's direct message.
    #[serde(default)]
    pub notify_approvers: NotifyApprovers,
    /// The requester (a Slack user id, or an email Slack knows) gets a direct message with the
    /// outcome when a person, a machine or the clock decides. Unset: on for a workflow with
    /// stages, off for one without (which behaves as before stages existed).
    #[serde(default)]
    pub notify_requester: Option<bool>,
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
    /// Params an approver may edit before approving (`["params.replicas"]`): Approve opens a
    /// modal pre-filled with their values, and the request gains `approved_params`.
    #[serde(default)]
    pub editable: Vec<String>,
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
    /// How long an executor should act on a decision's signed receipt (its `exp`).
    #[serde(default = "default_receipt_ttl")]
    pub receipt_ttl: DurationSpec,
    /// The longest a person may grant a standing approval for ("Approve for…"); unset: no
    /// standing approvals in this workflow.
    pub allow_standing: Option<DurationSpec>,
    /// The params a later request must repeat to be approved by a standing approval; unset:
    /// every param, none added.
    pub standing_match: Option<Vec<String>>,
}

fn one() -> u32 {
    1
}

/// `notify_approvers`: how the approvers of a stage that opens are told.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyApprovers {
    /// A thread reply under the request's message mentioning them.
    #[default]
    Thread,
    /// The thread reply, and a copy of the message with its buttons in each one's direct
    /// message (user groups expanded).
    Dm,
}

/// The longest stage name (it is shown in Slack messages and ephemerals).
const STAGE_NAME_MAX: usize = 40;

/// One `[[workflow.stage]]`: a group of approvers and how many of them must approve.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub name: String,
    /// Slack user and user group ids.
    #[serde(default)]
    pub approvers: Vec<Approver>,
    #[serde(default = "one")]
    pub approvals_required: u32,
}

impl Stage {
    fn has_groups(&self) -> bool {
        self.approvers
            .iter()
            .any(|a| matches!(a, Approver::Group(_)))
    }

    /// Problems of this stage alone, each with its key.
    pub(super) fn problems(&self, workflow: &str) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let name = &self.name;
        if name.trim().is_empty() || name.chars().count() > STAGE_NAME_MAX {
            out.push((
                "name",
                format!(
                    "workflow {workflow:?}: a stage name must be 1-{STAGE_NAME_MAX} characters, not blank"
                ),
            ));
        }
        if self.approvers.is_empty() {
            out.push((
                "approvers",
                format!("workflow {workflow:?}: stage {name:?} lists no approvers"),
            ));
        }
        if self.approvals_required == 0 {
            out.push((
                "approvals_required",
                format!(
                    "workflow {workflow:?}: stage {name:?}: approvals_required must be at least 1"
                ),
            ));
        }
        let people = self.approvers.len();
        if people > 0 && !self.has_groups() && people < self.approvals_required as usize {
            out.push((
                "approvals_required",
                format!(
                    "workflow {workflow:?}: stage {name:?}: approvals_required = {} but only {people} approver(s) are listed, so it could never be met",
                    self.approvals_required
                ),
            ));
        }
        out
    }
}

pub const DEFAULT_DIGEST_INTERVAL: &str = "5m";

pub const DEFAULT_RECEIPT_TTL: &str = "1h";

pub fn default_receipt_ttl() -> DurationSpec {
    DEFAULT_RECEIPT_TTL
        .parse()
        .unwrap_or_else(|_| unreachable!())
}

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
            stages: Vec::new(),
            stages_order: StagesOrder::default(),
            denials_required: 1,
            notify_approvers: NotifyApprovers::default(),
            notify_requester: None,
            allow_self_approval: false,
            require_deny_reason: false,
            confirm: false,
            expires_in: None,
            on_expiry: OnExpiry::default(),
            remind_after: None,
            escalate_to: None,
            allow_channel_override: false,
            editable: Vec::new(),
            rule_specs: Vec::new(),
            rules: Vec::new(),
            webhooks: Vec::new(),
            on_approve: Vec::new(),
            on_deny: Vec::new(),
            notify: Notify::default(),
            digest_interval: default_digest_interval(),
            receipt_ttl: default_receipt_ttl(),
            allow_standing: None,
            standing_match: None,
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

    /// Whether its requesters are told the outcome in a direct message (`notify_requester`).
    pub fn tells_requester(&self) -> bool {
        self.notify_requester.unwrap_or_else(|| self.has_stages())
    }

    /// Whether the workflow is written with `[[workflow.stage]]`.
    pub fn has_stages(&self) -> bool {
        !self.stages.is_empty()
    }

    /// Its stages: those written, or the one a workflow without stages has (`approvers`).
    pub fn stages(&self) -> Cow<'_, [Stage]> {
        if self.has_stages() {
            Cow::Borrowed(&self.stages)
        } else {
            Cow::Owned(vec![Stage {
                name: DEFAULT_STAGE.to_owned(),
                approvers: self.approvers.clone(),
                approvals_required: self.approvals_required,
            }])
        }
    }

    /// Everyone named as an approver, in any stage.
    pub fn all_approvers(&self) -> impl Iterator<Item = &Approver> {
        self.approvers
            .iter()
            .chain(self.stages.iter().flat_map(|s| &s.approvers))
    }

    pub fn policy(&self) -> Policy {
        Policy {
            stages: self
                .stages()
                .iter()
                .map(|s| StageRule {
                    name: s.name.clone(),
                    approvals_required: s.approvals_required,
                })
                .collect(),
            stages_order: self.stages_order,
            denials_required: self.denials_required,
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
    pub(super) fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let name = self.name.as_str();
        for e in &self.editable {
            if crate::domain::editable_param(e).is_none() {
                out.push((
                    "editable",
                    format!("workflow {name:?}: editable entry {e:?} must name a param, as \"params.NAME\""),
                ));
            }
        }
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
        out.extend(self.stage_problems());
        let interval = self.digest_interval.as_millis();
        if !(10_000..=86_400_000).contains(&interval) {
            out.push((
                "digest_interval",
                format!("workflow {name:?}: digest_interval must be between 10s and 24h"),
            ));
        }
        if self.receipt_ttl.as_millis() < 1_000 {
            out.push((
                "receipt_ttl",
                format!(
                    "workflow {name:?}: receipt_ttl must be at least 1s (how long an executor may act on a decision's receipt)"
                ),
            ));
        }
        if let Some(bound) = self.allow_standing {
            if !(60_000..=7 * 86_400_000).contains(&bound.as_millis()) {
                out.push((
                    "allow_standing",
                    format!(
                        "workflow {name:?}: allow_standing must be between 1m and 7d (the longest a person may approve for)"
                    ),
                ));
            }
            let single = if self.stages.is_empty() {
                self.approvals_required == 1
            } else {
                self.stages.iter().all(|s| s.approvals_required == 1)
            };
            if !single {
                out.push((
                    "allow_standing",
                    format!(
                        "workflow {name:?}: allow_standing needs approvals_required = 1 (in every stage): a standing approval is one person's, and must not stand in for a quorum"
                    ),
                ));
            }
        }
        if self.standing_match.is_some() && self.allow_standing.is_none() {
            out.push((
                "standing_match",
                format!("workflow {name:?}: standing_match needs allow_standing"),
            ));
        }
        if let Some(keys) = &self.standing_match
            && (keys.is_empty() || keys.iter().any(|k| k.trim().is_empty()))
        {
            out.push((
                "standing_match",
                format!(
                    "workflow {name:?}: standing_match lists the params a later request must repeat, e.g. [\"tool_name\"]; leave it out for every param"
                ),
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

    /// Problems of the stages taken together (each stage's own are `Stage::problems`).
    fn stage_problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let name = self.name.as_str();
        if self.denials_required == 0 {
            out.push((
                "denials_required",
                format!("workflow {name:?}: denials_required must be at least 1"),
            ));
        }
        if !self.has_stages() {
            return out;
        }
        if !self.approvers.is_empty() {
            out.push((
                "approvers",
                format!(
                    "workflow {name:?}: approvers cannot be set beside [[workflow.stage]]; list them in the stages"
                ),
            ));
        }
        let mut names = HashSet::new();
        for stage in &self.stages {
            if !names.insert(stage.name.as_str()) {
                out.push((
                    "stage",
                    format!("workflow {name:?}: stage {:?} is defined twice", stage.name),
                ));
            }
        }
        if !self.stages.iter().any(Stage::has_groups) {
            let people: HashSet<&Approver> =
                self.stages.iter().flat_map(|s| &s.approvers).collect();
            let needed: u64 = self
                .stages
                .iter()
                .map(|s| u64::from(s.approvals_required))
                .sum();
            if (people.len() as u64) < needed {
                out.push((
                    "stage",
                    format!(
                        "workflow {name:?}: its stages need {needed} approvals from distinct people but list only {} people, so no request could ever be approved",
                        people.len()
                    ),
                ));
            }
        }
        out
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub(super) listen: Option<String>,
    pub(super) database_url: Option<String>,
    #[serde(default)]
    pub(super) database: DatabaseConfig,
    pub(super) shutdown_timeout: Option<DurationSpec>,
    #[serde(default)]
    pub(super) slack: FileSlack,
    #[serde(default)]
    pub(super) delivery: DeliveryConfig,
    #[serde(default)]
    pub(super) alerts: AlertsConfig,
    #[serde(default)]
    pub(super) limits: LimitsConfig,
    #[serde(default)]
    pub(super) mcp: McpConfig,
    pub(super) public_url: Option<String>,
    #[serde(default, rename = "workflow")]
    pub(super) workflows: Vec<Workflow>,
    #[serde(default, rename = "alert")]
    pub(super) alert_rules: Vec<Alert>,
    #[serde(default, rename = "trust")]
    pub(super) trust: Vec<TrustSpec>,
    pub(super) github: Option<FileGithub>,
}

/// A `[[trust]]` table as written; `Config::trust` holds it checked and compiled.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TrustSpec {
    pub(super) name: String,
    pub(super) issuer: String,
    pub(super) audience: Option<String>,
    pub(super) jwks_url: Option<String>,
    pub(super) scopes: Option<Vec<String>>,
    #[serde(default)]
    pub(super) workflows: Vec<String>,
    pub(super) when: Option<toml::Spanned<String>>,
    pub(super) requester: Option<String>,
    pub(super) max_token_lifetime: Option<DurationSpec>,
}

/// `[github]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileGithub {
    pub(super) app_id: Option<u64>,
    pub(super) private_key_path: Option<String>,
    pub(super) webhook_secret: Option<Secret>,
    pub(super) api_url: Option<String>,
    #[serde(default, rename = "environment")]
    pub(super) environments: Vec<GithubEnvironment>,
}

/// `[github]`: greenlight as a GitHub App's custom deployment protection rule.
#[derive(Debug, Clone)]
pub struct GithubConfig {
    pub app_id: u64,
    /// The App's private key (from `private_key_path`, or `GREENLIGHT_GITHUB_PRIVATE_KEY`).
    pub private_key: crate::policy::github::AppKey,
    /// Verifies `X-Hub-Signature-256` on `POST /github/webhook`.
    pub webhook_secret: Secret,
    /// `https://api.github.com`, or `https://HOST/api/v3` (GitHub Enterprise Server), without a
    /// trailing slash; reviews go only to callback URLs under it.
    pub api_url: String,
    pub environments: Vec<GithubEnvironment>,
}

pub const DEFAULT_GITHUB_API_URL: &str = "https://api.github.com";

impl GithubConfig {
    /// The first `[[github.environment]]` that maps this environment of this repository.
    pub fn mapping(&self, repository: &str, environment: &str) -> Option<&GithubEnvironment> {
        self.environments
            .iter()
            .find(|e| e.matches(repository, environment))
    }
}

/// One `[[github.environment]]`: which deployments a workflow decides.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubEnvironment {
    /// The GitHub environment: its exact name, or a glob (`prod-*`).
    pub name: String,
    /// `owner/name` globs (default: every repository the App is installed on).
    #[serde(default)]
    pub repositories: Vec<String>,
    /// The workflow whose people (and rules) decide.
    pub workflow: WorkflowName,
}

impl GithubEnvironment {
    pub fn matches(&self, repository: &str, environment: &str) -> bool {
        use crate::domain::github::glob_matches;
        glob_matches(&self.name, environment)
            && (self.repositories.is_empty()
                || self
                    .repositories
                    .iter()
                    .any(|r| glob_matches(r, repository)))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileSlack {
    pub(super) bot_token: Option<Secret>,
    pub(super) signing_secret: Option<Secret>,
    pub(super) app_token: Option<Secret>,
    pub(super) api_url: Option<String>,
    pub(super) socket_connections: Option<u32>,
    #[serde(default)]
    pub(super) allowed_teams: Vec<String>,
}

/// A `[[trust]]` policy: an OIDC issuer whose workload tokens are accepted wherever an API key
/// is, with what they may do. The loader checks and compiles them; the verifier
/// (`service::identity`) takes them.
#[derive(Debug, Clone)]
pub struct TrustPolicy {
    pub name: String,
    /// The tokens' `iss`, exactly: `https://...`, or `http://` on a loopback address.
    pub issuer: String,
    /// The tokens' `aud` must contain it.
    pub audience: String,
    /// Where the issuer's keys are (default: discovered from
    /// `{issuer}/.well-known/openid-configuration`).
    pub jwks_url: Option<String>,
    /// What an accepted token may do, as an API key's scopes.
    pub scopes: Vec<crate::store::Scope>,
    /// Where it may ask (empty: every workflow).
    pub workflows: Vec<WorkflowName>,
    /// CEL over `claims`: the token is accepted only when it holds.
    pub when: Option<crate::rules::Predicate>,
    /// How the request's `requester` is set, with `{{claims.NAME}}` placeholders (default:
    /// the token's `sub`).
    pub requester: Option<String>,
    /// The longest a token may live (`exp - iat`).
    pub max_token_lifetime: DurationSpec,
}

/// The names a trust policy's `when` may use.
pub const TRUST_NAMES: &[&str] = &["claims"];
