//! Settings of the local Slack (`greenlight sandbox`, `greenlight dev`), read from the
//! environment alone.

use std::net::SocketAddr;

use super::{ConfigError, DEFAULT_SANDBOX_LISTEN, Problem, Secret};

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
