//! The simulated workspace: tokens, ids, channels, people and groups.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything the sandbox pretends to be. `Default` gives a small ready-to-use workspace.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Address to bind; use `127.0.0.1:0` in tests.
    pub listen: SocketAddr,
    /// Bot token (`xoxb-...`) accepted by every Web API method.
    pub bot_token: String,
    /// App-level token (`xapp-...`) accepted by `apps.connections.open`; `None` disables Socket Mode.
    pub app_token: Option<String>,
    /// Secret used to sign interactivity POSTs (v0).
    pub signing_secret: String,
    /// Where clicks and view submissions are POSTed when no Socket Mode connection is open.
    pub interactivity_url: String,
    /// Where Events API payloads (`app_home_opened`) are POSTed when no Socket Mode connection
    /// is open. `None`: the interactivity URL's origin + `/slack/events`, re-derived whenever
    /// the interactivity URL changes.
    pub events_url: Option<String>,
    /// Where slash commands are POSTed when no Socket Mode connection is open. `None`: the
    /// interactivity URL's origin + `/slack/commands`.
    pub commands_url: Option<String>,
    pub team_id: String,
    pub team_domain: String,
    /// The Enterprise Grid organization the workspace belongs to (`None`: a workspace on its
    /// own). Then auth.test names it (`enterprise_id`), and payloads carry it as Slack
    /// documents: `enterprise`, `team.enterprise_id`, and the organization's id as the
    /// workspace's people's `user.team_id`.
    pub enterprise: Option<Enterprise>,
    pub app_id: String,
    /// User id of the bot (`user` on its messages, `user_id` in auth.test).
    pub bot_user_id: String,
    /// Bot id (`bot_id` on its messages).
    pub bot_id: String,
    pub channels: Vec<Channel>,
    pub users: Vec<User>,
    pub usergroups: Vec<UserGroup>,
    /// How long Slack waits for an ack (HTTP 200 or Socket Mode ack) before giving up.
    pub ack_timeout: Duration,
    /// How long a `trigger_id` stays usable for views.open.
    pub trigger_ttl: Duration,
}

/// A public channel every user is a member of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    pub id: String,
    pub name: String,
}

/// An Enterprise Grid organization (`E…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enterprise {
    pub id: String,
    pub name: String,
}

/// A simulated person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub name: String,
    pub real_name: String,
    pub email: String,
    /// The workspace of a person from another organization, in the workspace's channels
    /// through Slack Connect (`None`: one of the workspace's own people).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
}

/// A user group (`<!subteam^S...>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserGroup {
    pub id: String,
    pub handle: String,
    pub users: Vec<String>,
}

impl Channel {
    pub fn new(id: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
        }
    }
}

impl User {
    /// A user whose email is `<name>@example.com`.
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        real_name: impl Into<String>,
    ) -> Self {
        let name = name.into();
        Self {
            id: id.into(),
            email: format!("{name}@example.com"),
            name,
            real_name: real_name.into(),
            team_id: None,
        }
    }

    /// The same person, from the workspace `team_id` of another organization (Slack Connect).
    pub fn of_team(mut self, team_id: impl Into<String>) -> Self {
        self.team_id = Some(team_id.into());
        self
    }
}

impl Default for SandboxConfig {
    fn default() -> Self {
        let people = [
            ("U0ALICE", "alice", "Alice Archer"),
            ("U0BOB", "bob", "Bob Baker"),
            ("U0CAROL", "carol", "Carol Chen"),
            ("U0DAVE", "dave", "Dave Diaz"),
            ("U0ERIN", "erin", "Erin Evans"),
            ("U0FRANK", "frank", "Frank Fischer"),
        ];
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8090)),
            bot_token: "xoxb-sandbox-bot-token".into(),
            app_token: Some("xapp-1-sandbox-app-token".into()),
            signing_secret: "sandbox-signing-secret".into(),
            interactivity_url: "http://127.0.0.1:8080/slack/interactions".into(),
            events_url: None,
            commands_url: None,
            team_id: "T0SANDBOX".into(),
            team_domain: "sandbox".into(),
            enterprise: None,
            app_id: "A0GREENLIGHT".into(),
            bot_user_id: "U0GREENBOT".into(),
            bot_id: "B0GREENBOT".into(),
            channels: vec![
                Channel::new("C0GENERAL", "general"),
                Channel::new("C0DEPLOY", "deploy"),
                Channel::new("C0PAYMENTS", "payments"),
                Channel::new("C0OPS", "ops"),
            ],
            users: people
                .iter()
                .map(|(id, name, real)| User::new(*id, *name, *real))
                .collect(),
            usergroups: vec![UserGroup {
                id: "S0SRE".into(),
                handle: "sre".into(),
                users: vec!["U0CAROL".into(), "U0DAVE".into()],
            }],
            ack_timeout: Duration::from_secs(3),
            trigger_ttl: Duration::from_secs(3),
        }
    }
}

impl SandboxConfig {
    /// Defaults bound to `127.0.0.1:0`, the usual start for a test.
    pub fn for_tests() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            ..Self::default()
        }
    }

    /// Replaces the users with `n` generated ones (`U0USER001`, name `user001`, ...).
    /// The `sre` group keeps only ids that still exist.
    pub fn with_users(mut self, n: usize) -> Self {
        self.users = (1..=n)
            .map(|i| {
                User::new(
                    format!("U0USER{i:03}"),
                    format!("user{i:03}"),
                    format!("User {i:03}"),
                )
            })
            .collect();
        let ids: Vec<String> = self.users.iter().map(|u| u.id.clone()).collect();
        for group in &mut self.usergroups {
            group.users.retain(|u| ids.contains(u));
        }
        self
    }

    pub fn with_listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }

    pub fn with_signing_secret(mut self, secret: impl Into<String>) -> Self {
        self.signing_secret = secret.into();
        self
    }

    pub fn with_interactivity_url(mut self, url: impl Into<String>) -> Self {
        self.interactivity_url = url.into();
        self
    }

    pub fn with_events_url(mut self, url: impl Into<String>) -> Self {
        self.events_url = Some(url.into());
        self
    }

    pub fn with_commands_url(mut self, url: impl Into<String>) -> Self {
        self.commands_url = Some(url.into());
        self
    }

    pub fn with_channel(mut self, channel: Channel) -> Self {
        self.channels.push(channel);
        self
    }

    /// Adds a person (`User::new(...).of_team("T0PARTNER")` for one of another organization).
    pub fn with_user(mut self, user: User) -> Self {
        self.users.push(user);
        self
    }

    /// Makes the workspace part of the Enterprise Grid organization `id`.
    pub fn with_enterprise(mut self, id: impl Into<String>, name: impl Into<String>) -> Self {
        self.enterprise = Some(Enterprise {
            id: id.into(),
            name: name.into(),
        });
        self
    }

    pub fn with_usergroup(mut self, group: UserGroup) -> Self {
        self.usergroups.push(group);
        self
    }
}
