//! The one config loader: built-in defaults, then `greenlight.toml`, then the environment (the
//! environment wins). Unknown keys are errors, not silently ignored.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::domain::{ChannelRef, WorkflowName};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATABASE_URL: &str = "sqlite:greenlight.db";
pub const DEFAULT_SLACK_API_URL: &str = "https://slack.com/api/";
pub const DEFAULT_CONFIG_FILE: &str = "greenlight.toml";

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
}

#[derive(Debug, Clone)]
pub struct SlackConfig {
    pub bot_token: Option<Secret>,
    pub signing_secret: Option<Secret>,
    pub app_token: Option<Secret>,
    pub api_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    pub name: WorkflowName,
    pub channel: ChannelRef,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    database_url: Option<String>,
    #[serde(default)]
    slack: FileSlack,
    #[serde(default, rename = "workflow")]
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
        let file = match &path {
            Some(p) => Self::read_file(p)?,
            None => FileConfig::default(),
        };
        let mut problems = Vec::new();
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
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        Ok(Config {
            listen,
            database_url,
            slack,
            workflows: file.workflows,
            source: path,
        })
    }

    fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
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
            "[[workflow]]\nname = \"deploy\"\nchannel = \"#deploys\"\napprovers = [\"U1\"]\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `approvers`"), "{err}");
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
    fn secrets_do_not_print() {
        let s = Secret::new("xoxb-very-secret");
        assert!(!format!("{s:?}").contains("very-secret"));
    }
}
