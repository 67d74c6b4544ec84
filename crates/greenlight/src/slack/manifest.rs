//! The Slack app greenlight needs, as an app manifest: what `greenlight slack-manifest` prints
//! and the set-up in docs/slack.md follows. The bot scopes, events and the slash command are listed
//! here once, each with the reason greenlight needs it, so the manifest, docs/slack.md and the code
//! that calls Slack cannot drift apart.
//!
//! The fields follow Slack's app manifest reference (`display_information`, `features`,
//! `oauth_config`, `settings`); the YAML is written by hand because a serializer cannot carry
//! the comments that say why each scope is there.

use serde_json::{Value, json};

/// A bot scope and why greenlight asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BotScope {
    pub name: &'static str,
    pub why: &'static str,
}

/// Every bot scope greenlight uses, and nothing more. Publishing the App Home tab
/// (`views.publish`) and opening the deny-reason modal (`views.open`) need no scope.
pub const BOT_SCOPES: &[BotScope] = &[
    BotScope {
        name: "chat:write",
        why: "post approval messages, rewrite them with the outcome, ephemerals, thread reminders",
    },
    BotScope {
        name: "im:write",
        why: "open the app's direct message with a requester or an approver",
    },
    BotScope {
        name: "users:read",
        why: "look up approvers and requesters (needed with users:read.email)",
    },
    BotScope {
        name: "users:read.email",
        why: "find the Slack user behind an approver or requester given by email",
    },
    BotScope {
        name: "usergroups:read",
        why: "expand user groups (S...) named as approvers",
    },
    BotScope {
        name: "channels:read",
        why: "resolve a workflow's #channel name to its id (public channels)",
    },
    BotScope {
        name: "groups:read",
        why: "the same for private channels",
    },
    BotScope {
        name: "channels:history",
        why: "after a crash mid-post, find the message already posted instead of posting twice",
    },
    BotScope {
        name: "groups:history",
        why: "the same for private channels",
    },
    BotScope {
        name: "commands",
        why: "the /greenlight slash command",
    },
];

/// The bot events greenlight subscribes to, and why.
pub const BOT_EVENTS: &[(&str, &str)] = &[(
    "app_home_opened",
    "draw the App Home tab (pending approvals) when someone opens it",
)];

/// The slash command: `/greenlight pending | show ID | help`.
pub const SLASH_COMMAND: &str = "/greenlight";

/// The app's name in Slack (the reference allows at most 35 characters).
pub const APP_NAME: &str = "greenlight";

/// Where Slack's "create an app" page takes a manifest to fill in.
pub const CREATE_APP_URL: &str = "https://api.slack.com/apps?new_app=1&manifest_json=";

/// How Slack reaches greenlight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Clicks, events and commands over the WebSocket greenlight opens (SLACK_APP_TOKEN);
    /// no request URLs, nothing inbound.
    SocketMode,
    /// Signed HTTPS POSTs to greenlight's public base URL.
    RequestUrl(BaseUrl),
}

/// The public `https://` URL greenlight is reached at, without a trailing slash; a path
/// prefix is kept (`https://example.com/greenlight` behind a proxy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BaseUrlError {
    #[error("{0:?} is not a URL: {1}")]
    NotAUrl(String, String),
    #[error("{0:?} is not https: Slack sends requests only to https URLs")]
    NotHttps(String),
    #[error("{0:?} must be a base URL alone, without user, query or fragment")]
    NotABase(String),
}

impl std::str::FromStr for BaseUrl {
    type Err = BaseUrlError;

    fn from_str(s: &str) -> Result<Self, BaseUrlError> {
        let url =
            reqwest::Url::parse(s).map_err(|e| BaseUrlError::NotAUrl(s.into(), e.to_string()))?;
        if url.scheme() != "https" {
            return Err(BaseUrlError::NotHttps(s.into()));
        }
        if url.host_str().is_none_or(str::is_empty)
            || !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(BaseUrlError::NotABase(s.into()));
        }
        Ok(Self(url.as_str().trim_end_matches('/').to_owned()))
    }
}

impl BaseUrl {
    fn join(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }
}

/// The manifest for one way of reaching greenlight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    transport: Transport,
}

impl Manifest {
    pub fn new(transport: Transport) -> Self {
        Self { transport }
    }

    /// The manifest as Slack reads it (JSON; the YAML says the same).
    pub fn to_json(&self) -> Value {
        let url = |path: &str| match &self.transport {
            Transport::SocketMode => None,
            Transport::RequestUrl(base) => Some(base.join(path)),
        };
        let with_url = |mut v: Value, key: &str, path: &str| {
            if let Some(u) = url(path) {
                v[key] = u.into();
            }
            v
        };
        json!({
            "_metadata": {"major_version": 1, "minor_version": 1},
            "display_information": {
                "name": APP_NAME,
                "description": "Approval requests from machines, decided in Slack",
                "long_description": LONG_DESCRIPTION,
                "background_color": "#1d7a46",
            },
            "features": {
                "app_home": {
                    "home_tab_enabled": true,
                    "messages_tab_enabled": false,
                    "messages_tab_read_only_enabled": false,
                },
                "bot_user": {"display_name": APP_NAME, "always_online": true},
                "slash_commands": [with_url(json!({
                    "command": SLASH_COMMAND,
                    "description": "See pending approvals or one request",
                    "usage_hint": "pending | show ID | help",
                    "should_escape": false,
                }), "url", "/slack/commands")],
            },
            "oauth_config": {
                "scopes": {"bot": BOT_SCOPES.iter().map(|s| s.name).collect::<Vec<_>>()},
            },
            "settings": {
                "event_subscriptions": with_url(json!({
                    "bot_events": BOT_EVENTS.iter().map(|(e, _)| *e).collect::<Vec<_>>(),
                }), "request_url", "/slack/events"),
                "interactivity": with_url(json!({"is_enabled": true}), "request_url", "/slack/interactions"),
                "org_deploy_enabled": false,
                "socket_mode_enabled": self.transport == Transport::SocketMode,
                "token_rotation_enabled": false,
            },
        })
    }

    /// Slack's "create an app" page with this manifest filled in.
    pub fn create_app_link(&self) -> String {
        format!(
            "{CREATE_APP_URL}{}",
            urlencoding::encode(&self.to_json().to_string())
        )
    }

    /// The manifest as YAML, with a comment saying why each scope, event and setting is there.
    pub fn to_yaml(&self) -> String {
        let mut out = String::from(
            "# Slack app manifest for greenlight, made by `greenlight slack-manifest`.\n\
             # Paste it at https://api.slack.com/apps -> Create New App -> From an app manifest.\n",
        );
        match &self.transport {
            Transport::SocketMode => out.push_str(
                "# Socket Mode: greenlight opens the connection (SLACK_APP_TOKEN); no public URL.\n",
            ),
            Transport::RequestUrl(base) => out.push_str(&format!(
                "# HTTP: Slack POSTs signed requests to {} (SLACK_SIGNING_SECRET).\n",
                base.0
            )),
        }
        write_yaml(&mut out, &self.to_json(), 0, "");
        out
    }
}

const LONG_DESCRIPTION: &str = "greenlight is a self-hosted approval gateway. A pipeline, a \
deploy script, a payment system or an AI agent asks for approval over HTTP or the command line; \
greenlight posts the request here with Approve and Deny buttons, records exactly one decision, \
rewrites the message to show who decided, and tells the waiting machine.";

/// Why a key or an item is there, as the comment at the end of its line.
fn comment(path: &str, value: &Value) -> Option<&'static str> {
    match path {
        "oauth_config.scopes.bot[]" => BOT_SCOPES.iter().find(|s| value == s.name).map(|s| s.why),
        "settings.event_subscriptions.bot_events[]" => BOT_EVENTS
            .iter()
            .find(|(e, _)| value == *e)
            .map(|(_, why)| *why),
        "features.app_home.home_tab_enabled" => {
            Some("the Home tab lists what waits for a decision")
        }
        "features.app_home.messages_tab_enabled" => Some("greenlight reads no direct messages"),
        "settings.interactivity.request_url" => Some("button clicks and the deny-reason modal"),
        "settings.event_subscriptions.request_url" => {
            Some("events, and Slack's url_verification challenge")
        }
        "features.slash_commands[].url" => Some("/greenlight pending | show ID | help"),
        "settings.socket_mode_enabled" if value == true => {
            Some("clicks, events and commands arrive over greenlight's WebSocket")
        }
        "settings.socket_mode_enabled" => Some("Slack POSTs to the request URLs above"),
        "settings.token_rotation_enabled" => Some("greenlight keeps one long-lived bot token"),
        _ => None,
    }
}

/// Block-style YAML of `value` at `indent`, with [`comment`]s. Object keys are the manifest's
/// own (plain words); strings are quoted whenever a plain scalar could be misread.
fn write_yaml(out: &mut String, value: &Value, indent: usize, path: &str) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                if is_scalar(v) {
                    out.push_str(&format!("{pad}{key}: {}", scalar(v)));
                    end_line(out, comment(&child, v));
                } else {
                    out.push_str(&format!("{pad}{key}:\n"));
                    write_yaml(out, v, indent + 2, &child);
                }
            }
        }
        Value::Array(items) => {
            let child = format!("{path}[]");
            for item in items {
                if is_scalar(item) {
                    out.push_str(&format!("{pad}- {}", scalar(item)));
                    end_line(out, comment(&child, item));
                } else {
                    // An object item: its first key follows the dash, the rest line up under it.
                    let mut nested = String::new();
                    write_yaml(&mut nested, item, indent + 2, &child);
                    out.push_str(&pad);
                    out.push_str("- ");
                    out.push_str(&nested[indent + 2..]);
                }
            }
        }
        scalar_value => {
            out.push_str(&format!("{pad}{}", scalar(scalar_value)));
            end_line(out, None);
        }
    }
}

fn end_line(out: &mut String, comment: Option<&str>) {
    if let Some(c) = comment {
        out.push_str("  # ");
        out.push_str(c);
    }
    out.push('\n');
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Object(_) | Value::Array(_))
}

/// A scalar as YAML: numbers and booleans as they are; a string plain when it is made only of
/// characters that cannot start or end anything in YAML and does not read as another type,
/// else as a JSON string (which is a valid double-quoted YAML scalar).
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) if plain_is_safe(s) => s.clone(),
        other => other.to_string(),
    }
}

fn plain_is_safe(s: &str) -> bool {
    let first_ok = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '/');
    let all_ok = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_./:-".contains(c));
    let reads_as_other = matches!(
        s.to_ascii_lowercase().as_str(),
        "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null" | "~"
    ) || s.parse::<f64>().is_ok();
    first_ok && all_ok && !reads_as_other && !s.contains(": ") && !s.ends_with(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_urls_must_be_https_base_urls() {
        let ok: BaseUrl = "https://greenlight.example.com/".parse().unwrap();
        assert_eq!(
            ok.join("/slack/events"),
            "https://greenlight.example.com/slack/events"
        );
        let prefixed: BaseUrl = "https://example.com/approvals".parse().unwrap();
        assert_eq!(
            prefixed.join("/slack/commands"),
            "https://example.com/approvals/slack/commands"
        );
        for bad in [
            "http://greenlight.example.com",
            "greenlight.example.com",
            "https://user:pw@example.com",
            "https://example.com/?x=1",
            "https://example.com/#top",
            "ftp://example.com",
        ] {
            assert!(bad.parse::<BaseUrl>().is_err(), "{bad}");
        }
        assert!(matches!(
            "http://example.com".parse::<BaseUrl>(),
            Err(BaseUrlError::NotHttps(_))
        ));
    }

    #[test]
    fn strings_that_would_misread_are_quoted() {
        for plain in [
            "chat:write",
            "greenlight",
            "https://h.example/slack/events",
            "/greenlight",
        ] {
            assert_eq!(scalar(&json!(plain)), plain);
        }
        for quoted in [
            "yes",
            "no",
            "1.10",
            "#1d7a46",
            "a b",
            "pending | show ID | help",
            "",
            "x:",
        ] {
            assert_eq!(
                scalar(&json!(quoted)),
                json!(quoted).to_string(),
                "{quoted}"
            );
        }
    }

    #[test]
    fn every_scope_and_event_has_its_reason_in_the_yaml() {
        let yaml = Manifest::new(Transport::SocketMode).to_yaml();
        for s in BOT_SCOPES {
            assert!(
                yaml.contains(&format!("- {}  # {}\n", s.name, s.why)),
                "{yaml}"
            );
        }
        for (e, why) in BOT_EVENTS {
            assert!(yaml.contains(&format!("- {e}  # {why}\n")), "{yaml}");
        }
    }
}
