//! The one config loader: built-in defaults, then `greenlight.toml`, then the environment (the
//! environment wins). Unknown keys are errors, not silently ignored.
//!
//! Files: `schema.rs` (the tables as written, with their defaults and own checks), `load.rs`
//! (reading the file and the environment, one function per section), `problems.rs` (where in
//! the file a problem is), `sandbox.rs` (the local Slack's settings). It imports the domain,
//! the pure policy below it (`rules`, `policy`) and the store's URL check, nothing above.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::domain::DurationSpec;

mod load;
mod problems;
mod sandbox;
mod schema;
#[cfg(test)]
mod tests;

pub use problems::Problem;
pub use sandbox::SandboxSettings;
pub use schema::{
    Alert, AlertKind, AlertsConfig, DEFAULT_DIGEST_INTERVAL, DEFAULT_GITHUB_API_URL,
    DEFAULT_SHUTDOWN_TIMEOUT, DatabaseConfig, DeliveryConfig, GithubConfig, GithubEnvironment,
    LimitsConfig, McpConfig, NotifyApprovers, RuleSpec, SLACK_MAX_SOCKET_CONNECTIONS, SlackConfig,
    Stage, TRUST_NAMES, TrustPolicy, Workflow, default_receipt_ttl,
};

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
    /// The `[[trust]]` policies: OIDC issuers whose workload tokens are accepted as API keys are.
    pub trust: Vec<TrustPolicy>,
    /// `[github]`: the GitHub App whose deployment protection rule greenlight is.
    pub github: Option<GithubConfig>,
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

impl Config {
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
