//! Identifiers, parsed once at the edge so that an invalid one cannot exist inside.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {kind} {value:?}: {expected}")]
pub struct IdError {
    kind: &'static str,
    value: String,
    expected: &'static str,
}

pub(super) fn id_error(kind: &'static str, value: &str, expected: &'static str) -> IdError {
    let mut value = value.to_owned();
    value.truncate(80);
    IdError {
        kind,
        value,
        expected,
    }
}

macro_rules! string_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, utoipa::ToSchema)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// `req_` followed by a ULID: sortable by creation time, unguessable enough for buttons.
    RequestId
);

impl RequestId {
    pub fn generate() -> Self {
        Self(format!("req_{}", ulid::Ulid::new()))
    }

    /// A new id whose time part is `ms` (the service's clock), so that ids sort by creation
    /// time as that clock saw it, and history windows can be read by id.
    pub fn generate_at(ms: i64) -> Self {
        let ms = u64::try_from(ms.max(0)).unwrap_or(0);
        Self(format!(
            "req_{}",
            ulid::Ulid::from_parts(ms, rand::random::<u128>())
        ))
    }
}

impl FromStr for RequestId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let ok = s
            .strip_prefix("req_")
            .is_some_and(|rest| ulid::Ulid::from_string(rest).is_ok());
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(id_error("request id", s, "expected req_<ULID>"))
        }
    }
}

string_id!(
    /// `key_` followed by a ULID; the public half of an API key record (the secret is hashed).
    ApiKeyId
);

impl ApiKeyId {
    pub fn generate() -> Self {
        Self(format!("key_{}", ulid::Ulid::new()))
    }

    /// The key a workload acts as: the same for every token of one subject under one trust
    /// policy (so idempotency keys, rate limits and "only the creator sees" hold per workload),
    /// derived from both, never equal to a generated key's by chance.
    pub fn for_workload(trust: &str, subject: &str) -> Self {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(format!("{trust}\n{subject}").as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Self(format!("key_{}", ulid::Ulid::from_bytes(bytes)))
    }
}

impl FromStr for ApiKeyId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let ok = s
            .strip_prefix("key_")
            .is_some_and(|rest| ulid::Ulid::from_string(rest).is_ok());
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(id_error("API key id", s, "expected key_<ULID>"))
        }
    }
}

fn is_slack_id(s: &str, prefixes: &[u8]) -> bool {
    let b = s.as_bytes();
    b.len() >= 3
        && b.len() <= 32
        && prefixes.contains(&b[0])
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

string_id!(
    /// A Slack user id (`U…`, or `W…` on Enterprise Grid).
    SlackUserId
);

impl SlackUserId {
    pub fn looks_like(s: &str) -> bool {
        is_slack_id(s, b"UW")
    }

    /// The person `text` names, when it names one the way people write a Slack user: the id
    /// (`U0ALICE`), the id in another case with at least one digit (`u0alice`; without a digit
    /// `walter` stays a name), or a mention (`<@U0ALICE>`, `<@U0ALICE|alice>`), with spaces
    /// around any of them.
    pub fn named_by(text: &str) -> Option<SlackUserId> {
        let text = text.trim();
        let (id, mention) = match text.strip_prefix("<@").and_then(|t| t.strip_suffix('>')) {
            Some(inner) => (inner.split('|').next().unwrap_or_default().trim(), true),
            None => (text, false),
        };
        if Self::looks_like(id) {
            return Some(Self(id.to_owned()));
        }
        let upper = id.to_ascii_uppercase();
        let has_digit = id.bytes().any(|c| c.is_ascii_digit());
        (Self::looks_like(&upper) && (mention || has_digit)).then_some(Self(upper))
    }
}

/// A Slack workspace (`T…`) or Enterprise Grid organization (`E…`) id.
pub fn is_slack_team_id(s: &str) -> bool {
    is_slack_id(s, b"TE")
}

/// What a machine's vote and cancel are recorded as: `key:` and the API key's name, so that
/// no key can pass for a person (whose votes are their Slack user id).
pub fn key_actor(name: &str) -> String {
    format!("{KEY_ACTOR_PREFIX}{name}")
}

pub const KEY_ACTOR_PREFIX: &str = "key:";

/// Why `name` cannot name a new API key, if it cannot: 1-100 characters, and nothing Slack
/// would read as a person, a group or formatting (a Slack id, `<`, `>`, `*`, `@`, control
/// characters). Keys made before this rule keep their names.
pub fn key_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.chars().count() > 100 {
        return Some("must be 1-100 characters".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '<' | '>' | '*' | '@') || c.is_control())
    {
        return Some(format!(
            "must not contain {c:?}: <, >, *, @ and control characters are Slack formatting"
        ));
    }
    if is_slack_id(name, b"UWS") {
        return Some(
            "looks like a Slack user or group id (U…, W…, S…), so the key could pass for a person; \
             pick a name such as ci or deploy-bot"
                .into(),
        );
    }
    None
}

impl FromStr for SlackUserId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        if Self::looks_like(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(id_error(
                "Slack user id",
                s,
                "expected U or W followed by capital letters and digits",
            ))
        }
    }
}

string_id!(
    /// A Slack user group id (`S…`), mentioned as `<!subteam^S…>`.
    SlackGroupId
);

impl FromStr for SlackGroupId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        if is_slack_id(s, b"S") {
            Ok(Self(s.to_owned()))
        } else {
            Err(id_error(
                "Slack user group id",
                s,
                "expected S followed by capital letters and digits",
            ))
        }
    }
}

/// Who may approve: one person, or everyone in a user group (resolved by an adapter).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(untagged)]
pub enum Approver {
    User(SlackUserId),
    Group(SlackGroupId),
}

impl FromStr for Approver {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        if let Ok(u) = s.parse() {
            Ok(Approver::User(u))
        } else if let Ok(g) = s.parse() {
            Ok(Approver::Group(g))
        } else {
            Err(id_error(
                "approver",
                s,
                "expected a Slack user id (U…/W…) or user group id (S…)",
            ))
        }
    }
}

impl fmt::Display for Approver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Approver::User(u) => u.fmt(f),
            Approver::Group(g) => g.fmt(f),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Approver {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

string_id!(
    /// Where a workflow posts: a channel id (`C…`, `G…`, `D…`) or a `#name`.
    ChannelRef
);

impl FromStr for ChannelRef {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let by_name = s.strip_prefix('#').is_some_and(|name| {
            !name.is_empty()
                && name.len() <= 80
                && name
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
        });
        if by_name || is_slack_id(s, b"CGD") {
            Ok(Self(s.to_owned()))
        } else {
            Err(id_error(
                "channel",
                s,
                "expected a channel id like C0123ABCD or a name like #deploys",
            ))
        }
    }
}

string_id!(
    /// A workflow's name as configured: lowercase letters, digits, `-` and `_`.
    WorkflowName
);

impl FromStr for WorkflowName {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(id_error(
                "workflow name",
                s,
                "expected 1-64 lowercase letters, digits, '-' or '_'",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_round_trip_and_refuse_junk() {
        let id = RequestId::generate();
        assert_eq!(id.as_str().parse::<RequestId>(), Ok(id.clone()));
        for bad in [
            "",
            "req_",
            "req_xyz",
            "01JD0000000000000000000000",
            "key_01JD3K6Z7Q8R9S0T1V2W3X4Y5Z",
        ] {
            assert!(bad.parse::<RequestId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn slack_ids_and_channels() {
        assert!("U012ABC".parse::<SlackUserId>().is_ok());
        assert!("W012ABC".parse::<SlackUserId>().is_ok());
        assert!("u012abc".parse::<SlackUserId>().is_err());
        assert!("<!channel>".parse::<SlackUserId>().is_err());
        assert!("C0123DEPLOY".parse::<ChannelRef>().is_ok());
        assert!("#deploys".parse::<ChannelRef>().is_ok());
        assert!("#".parse::<ChannelRef>().is_err());
        assert!("deploys".parse::<ChannelRef>().is_err());
        assert!("#Deploys Now".parse::<ChannelRef>().is_err());
        assert!(matches!("S0SRE".parse(), Ok(Approver::Group(_))));
        assert!(matches!("U0ALICE".parse(), Ok(Approver::User(_))));
        assert!("C0DEPLOY".parse::<Approver>().is_err());
        assert!("@alice".parse::<Approver>().is_err());
    }

    #[test]
    fn a_requester_names_a_person_by_id_or_mention_in_any_case() {
        let named = |s: &str| SlackUserId::named_by(s).map(|u| u.to_string());
        for given in [
            "U0ALICE",
            " U0ALICE ",
            "u0alice",
            "<@U0ALICE>",
            "<@U0ALICE|alice>",
            " <@u0alice> ",
        ] {
            assert_eq!(named(given).as_deref(), Some("U0ALICE"), "{given:?}");
        }
        assert_eq!(named("w012a3cde").as_deref(), Some("W012A3CDE"));
        for name in [
            "walter",
            "deploy-bot",
            "alice@example.com",
            "<@alice>",
            "<@U0ALICE",
            "",
        ] {
            assert_eq!(named(name), None, "{name:?}");
        }
    }

    #[test]
    fn key_names_cannot_pass_for_a_person_or_format_a_message() {
        for ok in ["ci", "deploy-bot", "pipeline_a", "Uploader 2", "USA-east"] {
            assert_eq!(key_name_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "U0BOB",
            "W012A3CDE",
            "S0SRE",
            "<@U0BOB>",
            "*bold*",
            "ci@example",
            "a>b",
            "a\nb",
        ] {
            assert!(key_name_problem(bad).is_some(), "{bad:?}");
        }
        assert!(key_name_problem(&"x".repeat(101)).is_some());
        assert_eq!(key_actor("ci"), "key:ci");
    }

    #[test]
    fn workflow_names() {
        assert!("deploy".parse::<WorkflowName>().is_ok());
        assert!("db-migrate_2".parse::<WorkflowName>().is_ok());
        assert!("Deploy".parse::<WorkflowName>().is_err());
        assert!("-x".parse::<WorkflowName>().is_err());
        assert!("".parse::<WorkflowName>().is_err());
    }
}
