//! The one config loader: built-in defaults, then `greenlight.toml`, then the environment (the
//! environment wins). Unknown keys are errors, not silently ignored.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::domain::{Approver, ChannelRef, DurationSpec, OnExpiry, Policy, Verdict, WorkflowName};
use crate::hooks::ActionHook;
use crate::rules::Rule;

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
    pub slack: SlackConfig,
    pub workflows: Vec<Workflow>,
    /// The file the workflows came from, if any.
    pub source: Option<PathBuf>,
    pub delivery: DeliveryConfig,
    pub alerts: AlertsConfig,
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
            slack_posts_per_second: 1.0,
            slack_post_burst: 5,
        }
    }
}

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
}

fn one() -> u32 {
    1
}

/// A `[[workflow.rule]]` as written; `Workflow::rules` holds it compiled.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: String,
    /// CEL over `params`, `requester`, `workflow`, `title` and `now`.
    pub when: toml::Spanned<String>,
    pub decision: Verdict,
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
        }
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

    /// Problems that need no file to find (the loader adds their locations).
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let name = self.name.as_str();
        if self.approvals_required == 0 {
            out.push(format!(
                "workflow {name:?}: approvals_required must be at least 1"
            ));
        }
        let has_groups = self
            .approvers
            .iter()
            .any(|a| matches!(a, Approver::Group(_)));
        let people = self.approvers.len();
        if !self.approvers.is_empty() && !has_groups && people < self.approvals_required as usize {
            out.push(format!(
                "workflow {name:?}: approvals_required = {} but only {people} approver(s) are listed, so no request could ever be approved",
                self.approvals_required
            ));
        }
        if self.escalate_to.is_some() && self.remind_after.is_none() {
            out.push(format!(
                "workflow {name:?}: escalate_to needs remind_after (escalation happens on the second reminder)"
            ));
        }
        let mut seen = HashSet::new();
        for r in &self.rule_specs {
            if r.name.trim().is_empty() {
                out.push(format!("workflow {name:?}: a rule has an empty name"));
            } else if !seen.insert(r.name.as_str()) {
                out.push(format!(
                    "workflow {name:?}: rule {:?} is defined twice",
                    r.name
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
    slack: FileSlack,
    #[serde(default)]
    delivery: DeliveryConfig,
    #[serde(default)]
    alerts: AlertsConfig,
    /// Read one by one (see `read_file`), so that every workflow's problems are listed.
    #[serde(skip)]
    workflows: Vec<Workflow>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSlack {
    bot_token: Option<Secret>,
    signing_secret: Option<Secret>,
    app_token: Option<Secret>,
    api_url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// What is wrong with `[delivery]` and the workflows' webhooks and action hooks.
fn delivery_problems(
    d: &DeliveryConfig,
    workflows: &[Workflow],
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(s) = &d.webhook_secret
        && crate::webhook::WebhookSecret::parse(s.expose()).is_err()
    {
        out.push(format!(
            "GREENLIGHT_WEBHOOK_SECRET / [delivery] webhook_secret: {}",
            crate::webhook::BadSecret
        ));
    }
    if d.max_attempts == 0 {
        out.push("[delivery] max_attempts must be at least 1".to_owned());
    }
    if d.backoff_base > d.backoff_max {
        out.push("[delivery] backoff_base must not exceed backoff_max".to_owned());
    }
    if !(d.slack_posts_per_second.is_finite() && d.slack_posts_per_second > 0.0) {
        out.push("[delivery] slack_posts_per_second must be above 0".to_owned());
    }
    if d.slack_post_burst == 0 {
        out.push("[delivery] slack_post_burst must be at least 1".to_owned());
    }
    for w in workflows {
        let name = w.name.as_str();
        for url in &w.webhooks {
            let ok = reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !ok {
                out.push(format!(
                    "workflow {name:?}: webhook {url:?} is not an http(s) URL"
                ));
            }
        }
        for hook in w.on_approve.iter().chain(&w.on_deny) {
            out.extend(
                hook.problems(env)
                    .into_iter()
                    .map(|p| format!("workflow {name:?}: {p}")),
            );
        }
    }
    out
}

impl Config {
    /// Loads from the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        Self::load_with(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// Loads with `env` standing in for the environment (tests pass a map).
    pub fn load_with(env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let path = match env("GREENLIGHT_CONFIG") {
            Some(p) => Some(PathBuf::from(p)),
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()),
        };
        let mut problems = Vec::new();
        let file = match &path {
            Some(p) => Self::read_file(p, &mut problems)?,
            None => FileConfig::default(),
        };
        let listen_raw = env("GREENLIGHT_LISTEN")
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = listen_raw.parse().unwrap_or_else(|_| {
            problems.push(format!(
                "listen address {listen_raw:?} is not HOST:PORT (e.g. 127.0.0.1:8080)"
            ));
            SocketAddr::from(([127, 0, 0, 1], 8080))
        });
        let database_url = env("GREENLIGHT_DATABASE_URL")
            .or(file.database_url)
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        if !database_url.starts_with("sqlite:") {
            problems.push(format!(
                "database URL {database_url:?} is not supported yet: use sqlite:PATH"
            ));
        }
        let slack = SlackConfig {
            bot_token: env("SLACK_BOT_TOKEN").map(Secret).or(file.slack.bot_token),
            signing_secret: env("SLACK_SIGNING_SECRET")
                .map(Secret)
                .or(file.slack.signing_secret),
            app_token: env("SLACK_APP_TOKEN").map(Secret).or(file.slack.app_token),
            api_url: env("SLACK_API_URL")
                .or(file.slack.api_url)
                .unwrap_or_else(|| DEFAULT_SLACK_API_URL.to_owned()),
        };
        if !(slack.api_url.starts_with("https://") || slack.api_url.starts_with("http://")) {
            problems.push(format!(
                "SLACK_API_URL {:?} is not an http(s) URL",
                slack.api_url
            ));
        }
        let mut seen = HashSet::new();
        for w in &file.workflows {
            if !seen.insert(w.name.clone()) {
                problems.push(format!("workflow {:?} is defined twice", w.name.as_str()));
            }
        }
        let mut delivery = file.delivery;
        if let Some(s) = env("GREENLIGHT_WEBHOOK_SECRET") {
            delivery.webhook_secret = Some(Secret(s));
        }
        problems.extend(delivery_problems(&delivery, &file.workflows, &env));
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        Ok(Config {
            listen,
            database_url,
            slack,
            workflows: file.workflows,
            source: path,
            delivery,
            alerts: file.alerts,
        })
    }

    /// Reads the file. A TOML syntax error stops here; anything else wrong is added to
    /// `problems` with its line and column, each workflow and rule checked on its own so that
    /// one mistake does not hide the next.
    fn read_file(path: &Path, problems: &mut Vec<String>) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let shown = path.display().to_string();
        let render = |mut e: toml::de::Error| {
            e.set_input(Some(&text));
            e.to_string().trim_end().to_owned()
        };
        let located = |e| format!("{shown}: {}", render(e));
        let root = toml::de::DeTable::parse(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: render(e),
        })?;
        let span = root.span();
        let mut table = root.into_inner();
        let workflows = table.remove("workflow");
        let mut file: FileConfig = match FileConfig::deserialize(toml::de::Deserializer::from(
            toml::Spanned::new(span, table),
        )) {
            Ok(f) => f,
            Err(e) => {
                problems.push(located(e));
                FileConfig::default()
            }
        };
        let items = match workflows.map(|w| (w.span(), w.into_inner())) {
            None => Vec::new(),
            Some((_, toml::de::DeValue::Array(items))) => items.into_iter().collect(),
            Some((span, _)) => {
                problems.push(format!(
                    "{shown}:{}: `workflow` must be an array of tables: write [[workflow]]",
                    line_col(&text, span.start).0
                ));
                Vec::new()
            }
        };
        for item in items {
            let name = item
                .get_ref()
                .get("name")
                .and_then(|n| n.get_ref().as_str())
                .unwrap_or("?")
                .to_owned();
            let rule_items: Vec<_> = item
                .get_ref()
                .get("rule")
                .and_then(|r| r.get_ref().as_array())
                .map(|a| a.iter().cloned().collect())
                .unwrap_or_default();
            let (workflow, errors) = deserialize_workflow(item);
            let broken = !errors.is_empty();
            problems.extend(errors.into_iter().map(&located));
            match workflow {
                Some(mut w) => {
                    problems.extend(w.problems().into_iter().map(|p| format!("{shown}: {p}")));
                    w.rules = compile_rules(&name, &w.rule_specs, &text, &shown, problems);
                    if !broken {
                        file.workflows.push(w);
                    }
                }
                None => {
                    // The workflow is broken, but its rules may have problems of their own.
                    let specs: Vec<RuleSpec> = rule_items
                        .into_iter()
                        .filter_map(|r| {
                            RuleSpec::deserialize(toml::de::ValueDeserializer::from(r)).ok()
                        })
                        .collect();
                    compile_rules(&name, &specs, &text, &shown, problems);
                }
            }
        }
        Ok(file)
    }

    /// The workflow called `name`.
    pub fn workflow(&self, name: &str) -> Option<&Workflow> {
        self.workflows.iter().find(|w| w.name.as_str() == name)
    }

    /// What `serve` needs beyond a valid file: a bot token, and a signing secret unless
    /// Socket Mode is on.
    pub fn check_serve(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.slack.bot_token.is_none() {
            problems.push("SLACK_BOT_TOKEN is required (xoxb-...)".to_owned());
        }
        if self.slack.signing_secret.is_none() && self.slack.app_token.is_none() {
            problems.push(
                "SLACK_SIGNING_SECRET is required to verify Slack's requests (or set SLACK_APP_TOKEN for Socket Mode)"
                    .to_owned(),
            );
        }
        if self.workflows.is_empty() {
            problems.push(format!(
                "no workflows configured: add [[workflow]] name = \"deploy\", channel = \"#deploys\" to {}",
                self.source
                    .as_deref()
                    .unwrap_or(Path::new(DEFAULT_CONFIG_FILE))
                    .display()
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
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
            ConfigError::Invalid(vec![format!(
                "GREENLIGHT_SANDBOX_LISTEN {raw:?} is not HOST:PORT (e.g. {DEFAULT_SANDBOX_LISTEN})"
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

/// Deserializes one `[[workflow]]`. serde stops at the first bad key, so each error's key is
/// taken out and the rest tried again: every bad key is reported, and what is left is still
/// checked (rules, limits). Returns the workflow only as far as it could be read.
fn deserialize_workflow(
    item: toml::Spanned<toml::de::DeValue<'_>>,
) -> (Option<Workflow>, Vec<toml::de::Error>) {
    let span = item.span();
    let toml::de::DeValue::Table(mut table) = item.into_inner() else {
        let e = <toml::de::Error as serde::de::Error>::custom(
            "`workflow` must be an array of tables: write [[workflow]]",
        );
        return (None, vec![e]);
    };
    let mut errors = Vec::new();
    for _ in 0..32 {
        let value = toml::Spanned::new(span.clone(), toml::de::DeValue::Table(table.clone()));
        match Workflow::deserialize(toml::de::ValueDeserializer::from(value)) {
            Ok(w) => return (Some(w), errors),
            // Only because a bad required key was taken out: already reported.
            Err(e) if !errors.is_empty() && e.message().starts_with("missing field") => break,
            Err(e) => {
                let at = e.span().map(|s| s.start);
                errors.push(e);
                let culprit = at.and_then(|at| {
                    table
                        .iter()
                        .find(|(k, v)| {
                            k.span().contains(&at) || v.span().contains(&at) || v.span().start == at
                        })
                        .map(|(k, _)| k.get_ref().to_string())
                });
                match culprit {
                    Some(key) => {
                        table.remove(key.as_str());
                    }
                    None => break,
                }
            }
        }
    }
    (None, errors)
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Compiles a workflow's rules; each problem is reported at its place in the file, with the
/// line and a caret under the spot.
fn compile_rules(
    workflow: &str,
    specs: &[RuleSpec],
    text: &str,
    shown: &str,
    problems: &mut Vec<String>,
) -> Vec<Rule> {
    let mut compiled = Vec::new();
    for spec in specs {
        match Rule::compile(&spec.name, spec.when.get_ref(), spec.decision) {
            Ok(rule) => compiled.push(rule),
            Err(found) => {
                let start = expression_start(text, spec.when.span());
                for p in found {
                    let at = (start + p.offset).min(text.len());
                    let (line, col) = line_col(text, at);
                    let source_line = text.lines().nth(line - 1).unwrap_or_default();
                    problems.push(format!(
                        "{shown}:{line}:{col}: workflow {:?}, rule {:?}: {}\n    {line:>4} | {source_line}\n         | {}^",
                        workflow,
                        spec.name,
                        p.message,
                        " ".repeat(col - 1),
                    ));
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
        assert!(err.contains("line 4"), "{err}");
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
            err.contains("line 5") && err.contains("invalid duration \"1x\""),
            "{err}"
        );
        assert!(err.contains(":9:"), "{err}");
        assert!(err.contains("rule \"broken\""), "{err}");
        assert!(err.contains("only 1 approver"), "{err}");
        assert!(err.contains("escalate_to needs remind_after"), "{err}");
        assert!(err.contains("unknown name `param`"), "{err}");
        // The caret sits under `param`, column 9 of line 21.
        assert!(err.contains(":21:9:"), "{err}");
        assert!(
            err.contains("  21 | when = \"param.amount < 5\"\n         |         ^"),
            "{err}"
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("xoxb-very-secret");
        assert!(!format!("{s:?}").contains("very-secret"));
    }
}
