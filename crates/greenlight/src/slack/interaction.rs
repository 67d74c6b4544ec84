//! Interaction payloads, decoded leniently into the few fields greenlight uses: Slack adds
//! fields over time and differs between workspaces (null `team` on org installs), so unknown
//! and missing fields must not break a click.

use serde::Deserialize;

use super::render::{
    ANSWERS_CALLBACK, APPROVE_ACTION, APPROVE_FOR_ACTION, DENY_ACTION, DENY_REASON_CALLBACK,
    EDIT_BLOCK_PREFIX, FIELD_ACTION, FIELD_BLOCK_PREFIX, REASON_ACTION, REASON_BLOCK,
    REVOKE_STANDING_ACTION, STANDING_ACTION, STANDING_BLOCK, STANDING_CALLBACK,
};
use crate::domain::{RawAnswer, RequestId, Verdict};

#[derive(Debug, Clone, Deserialize)]
pub struct Interaction {
    #[serde(rename = "type")]
    pub kind: String,
    /// Null on org-wide installs, where `user.team_id` names the workspace.
    pub team: Option<Team>,
    pub user: Option<User>,
    pub channel: Option<Channel>,
    pub container: Option<Container>,
    pub message: Option<Message>,
    #[serde(default)]
    pub actions: Vec<Action>,
    pub trigger_id: Option<String>,
    pub response_url: Option<String>,
    /// The modal, on `view_submission`.
    pub view: Option<View>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct View {
    pub id: Option<String>,
    pub callback_id: Option<String>,
    pub private_metadata: Option<String>,
    pub state: Option<ViewState>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ViewState {
    /// block_id -> action_id -> the element's value.
    #[serde(default)]
    pub values: std::collections::HashMap<String, std::collections::HashMap<String, InputValue>>,
}

/// An input element's state: `value` for plain-text and number inputs, `selected_option`
/// for a static select, `selected_options` for checkboxes.
#[derive(Debug, Clone, Deserialize)]
pub struct InputValue {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub value: Option<String>,
    pub selected_option: Option<SelectedOption>,
    pub selected_options: Option<Vec<SelectedOption>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SelectedOption {
    pub value: Option<String>,
}

impl InputValue {
    /// What the element holds, as a field reads it.
    pub fn raw(&self) -> RawAnswer {
        match self.kind.as_deref() {
            Some("static_select") => {
                RawAnswer::Choice(self.selected_option.as_ref().and_then(|o| o.value.clone()))
            }
            Some("checkboxes") => RawAnswer::Checked(
                self.selected_options
                    .iter()
                    .flatten()
                    .filter_map(|o| o.value.clone())
                    .collect(),
            ),
            _ => RawAnswer::Text(self.value.clone()),
        }
    }
}

impl View {
    /// The text typed into a plain-text input.
    pub fn text(&self, block_id: &str, action_id: &str) -> Option<&str> {
        self.state
            .as_ref()?
            .values
            .get(block_id)?
            .get(action_id)?
            .value
            .as_deref()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub id: String,
    pub username: Option<String>,
    pub name: Option<String>,
    pub team_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Team {
    pub id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Channel {
    pub id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Container {
    /// `message`, or `view` for a button on the Home tab (no channel, no message).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub channel_id: Option<String>,
    pub message_ts: Option<String>,
    #[serde(default)]
    pub is_ephemeral: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub ts: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Action {
    pub action_id: String,
    pub value: Option<String>,
    pub block_id: Option<String>,
}

/// Why an interaction does not say who acted. A signed payload from Slack always does; one
/// that does not is refused before it can count as a vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the payload has no well-formed user.id (U or W, then capital letters and digits)")]
    User,
    #[error(
        "the payload has no well-formed team id (user.team_id: T or E, or team.id: T, then capital letters and digits)"
    )]
    Team,
}

impl IdentityError {
    /// A stable code for the error body and the logs.
    pub fn code(self) -> &'static str {
        match self {
            IdentityError::User => "invalid_user_id",
            IdentityError::Team => "invalid_team_id",
        }
    }
}

impl Interaction {
    /// Who acted: the user id, and the workspace they belong to, both well-formed Slack ids.
    /// The workspace is the person's own, `user.team_id`: another organization's for someone
    /// in a channel shared through Slack Connect, and on Enterprise Grid the organization's id
    /// (`E…`); only a payload without it (or with it empty) falls back to `team.id`, the
    /// workspace acted from.
    pub fn identity(&self) -> Result<(&str, &str), IdentityError> {
        let user = self
            .user
            .as_ref()
            .filter(|u| crate::domain::SlackUserId::looks_like(&u.id))
            .ok_or(IdentityError::User)?;
        let team = match user.team_id.as_deref().filter(|t| !t.is_empty()) {
            Some(own) => Some(own).filter(|t| crate::domain::is_slack_team_id(t)),
            None => self
                .team
                .as_ref()
                .map(|t| t.id.as_str())
                .filter(|t| t.starts_with('T') && crate::domain::is_slack_team_id(t)),
        }
        .ok_or(IdentityError::Team)?;
        Ok((&user.id, team))
    }

    /// A click on a view rather than a message: the Home tab (greenlight's modals have no
    /// buttons). Such a click has no channel to answer in.
    pub fn on_view(&self) -> bool {
        self.container
            .as_ref()
            .and_then(|c| c.kind.as_deref())
            .is_some_and(|k| k == "view")
            && self.channel_id().is_none()
    }

    /// The channel the interaction happened in.
    pub fn channel_id(&self) -> Option<&str> {
        self.container
            .as_ref()
            .and_then(|c| c.channel_id.as_deref())
            .or(self.channel.as_ref().map(|c| c.id.as_str()))
    }
}

/// What a person did, read from an interaction once, at the edge: the service acts on this
/// and never on Slack's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gesture {
    /// A click on an Approve or Deny button.
    Click(Click),
    /// The deny-reason modal was submitted.
    DenyReason(DenyReason),
    /// A click on "Approve for…": opens the modal asking how long.
    ApproveFor(Click),
    /// The "Approve for…" modal was submitted.
    StandingGrant(StandingGrant),
    /// The Revoke button of a standing approval, on the Home tab or on the message whose
    /// approval granted it.
    RevokeStanding {
        actor: Actor,
        standing: String,
        place: Place,
    },
    /// The answers modal was submitted.
    Answers(AnswersGiven),
    /// Anything else (another button, another modal, another kind): nothing to do.
    Other,
}

/// Who acted, as a signed payload says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// A well-formed Slack user id.
    pub user: String,
    /// A well-formed Slack team id: the workspace the user belongs to (`T…`), or their
    /// Enterprise Grid organization (`E…`). Only some workspaces' people may vote.
    pub team: String,
    /// Their handle, when the payload gives one (shown beside their vote).
    pub handle: Option<String>,
}

/// Where a click happened, which is where to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A message in this channel: answer with an ephemeral there.
    Channel(String),
    /// The Home tab: a click there has no channel.
    Home,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Click {
    pub actor: Actor,
    pub verdict: Verdict,
    pub place: Place,
    /// The request the button names; `None` when its value is not a request id.
    pub request: Option<RequestId>,
    /// Opens a modal within 3 seconds of the click.
    pub trigger_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyReason {
    pub actor: Actor,
    pub request: RequestId,
    /// As typed, trimmed (may be empty).
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandingGrant {
    pub actor: Actor,
    pub request: RequestId,
    /// As typed, trimmed (`2h`, `30m`).
    pub duration: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswersGiven {
    pub actor: Actor,
    pub request: RequestId,
    /// What each input held, by field name (an input missing from the state is absent).
    pub answers: std::collections::HashMap<String, RawAnswer>,
    /// What each editable param's input held, by param name.
    pub edits: std::collections::HashMap<String, RawAnswer>,
}

/// Why an interaction cannot be read as a gesture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GestureError {
    #[error("the payload is missing {0}")]
    Malformed(&'static str),
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

impl Interaction {
    /// The gesture this interaction is. Who acted is checked before anything else: a payload
    /// without a real user never counts as a vote.
    pub fn gesture(&self) -> Result<Gesture, GestureError> {
        let (user, team) = self.identity()?;
        let actor = Actor {
            user: user.to_owned(),
            team: team.to_owned(),
            handle: self.handle(),
        };
        match self.kind.as_str() {
            "block_actions" => self.click(actor),
            "view_submission" => self.submission(actor),
            _ => Ok(Gesture::Other),
        }
    }

    /// The clicker's Slack handle, as the payload gives it.
    fn handle(&self) -> Option<String> {
        let user = self.user.as_ref()?;
        user.username
            .clone()
            .or_else(|| user.name.clone())
            .filter(|n| !n.is_empty() && n.len() <= 80 && !n.chars().any(char::is_control))
    }

    fn click(&self, actor: Actor) -> Result<Gesture, GestureError> {
        let action = self
            .actions
            .first()
            .ok_or(GestureError::Malformed("actions"))?;
        if action.action_id == REVOKE_STANDING_ACTION {
            return Ok(Gesture::RevokeStanding {
                actor,
                standing: action.value.clone().unwrap_or_default(),
                place: self.place()?,
            });
        }
        let (verdict, approve_for) = match action.action_id.as_str() {
            APPROVE_ACTION => (Verdict::Approve, false),
            APPROVE_FOR_ACTION => (Verdict::Approve, true),
            DENY_ACTION => (Verdict::Deny, false),
            _ => return Ok(Gesture::Other),
        };
        let place = self.place()?;
        let click = Click {
            actor,
            verdict,
            place,
            request: action.value.as_deref().and_then(|v| v.parse().ok()),
            trigger_id: self.trigger_id.clone(),
        };
        Ok(if approve_for {
            Gesture::ApproveFor(click)
        } else {
            Gesture::Click(click)
        })
    }

    /// Where a click happened: a message in a channel, or the Home tab.
    fn place(&self) -> Result<Place, GestureError> {
        Ok(if self.on_view() {
            Place::Home
        } else {
            Place::Channel(
                self.channel_id()
                    .ok_or(GestureError::Malformed("channel"))?
                    .to_owned(),
            )
        })
    }

    /// The "Approve for…" modal was submitted.
    fn standing(&self, actor: Actor) -> Result<Gesture, GestureError> {
        let view = self.view.as_ref().ok_or(GestureError::Malformed("view"))?;
        let request = view
            .private_metadata
            .as_deref()
            .and_then(|m| m.parse().ok())
            .ok_or(GestureError::Malformed("view.private_metadata"))?;
        let duration = view
            .text(STANDING_BLOCK, STANDING_ACTION)
            .map(str::trim)
            .unwrap_or_default()
            .to_owned();
        Ok(Gesture::StandingGrant(StandingGrant {
            actor,
            request,
            duration,
        }))
    }

    fn submission(&self, actor: Actor) -> Result<Gesture, GestureError> {
        let view = self.view.as_ref().ok_or(GestureError::Malformed("view"))?;
        let callback = view.callback_id.as_deref();
        if callback == Some(STANDING_CALLBACK) {
            return self.standing(actor);
        }
        if callback != Some(DENY_REASON_CALLBACK) && callback != Some(ANSWERS_CALLBACK) {
            return Ok(Gesture::Other);
        }
        let request = view
            .private_metadata
            .as_deref()
            .and_then(|m| m.parse().ok())
            .ok_or(GestureError::Malformed("view.private_metadata"))?;
        if callback == Some(ANSWERS_CALLBACK) {
            let inputs = |prefix: &str| {
                view.state
                    .iter()
                    .flat_map(|s| &s.values)
                    .filter_map(|(block, actions)| {
                        let name = block.strip_prefix(prefix)?;
                        let input = actions.get(FIELD_ACTION)?;
                        Some((name.to_owned(), input.raw()))
                    })
                    .collect()
            };
            return Ok(Gesture::Answers(AnswersGiven {
                actor,
                request,
                answers: inputs(FIELD_BLOCK_PREFIX),
                edits: inputs(EDIT_BLOCK_PREFIX),
            }));
        }
        let reason = view
            .text(REASON_BLOCK, REASON_ACTION)
            .map(str::trim)
            .unwrap_or_default()
            .to_owned();
        Ok(Gesture::DenyReason(DenyReason {
            actor,
            request,
            reason,
        }))
    }
}

/// An Events API `event_callback` (HTTP body, or a Socket Mode `events_api` payload), read
/// leniently: only what `app_home_opened` needs.
#[derive(Debug, Clone, Deserialize)]
pub struct EventCallback {
    pub event_id: Option<String>,
    pub team_id: Option<String>,
    pub event: Option<Event>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: String,
    pub user: Option<String>,
    /// `home` or `messages` (app_home_opened).
    pub tab: Option<String>,
}

/// What a POST to the interactivity endpoint carried.
#[derive(Debug)]
pub enum Inbound {
    Interaction(Box<Interaction>),
    UrlVerification {
        challenge: String,
    },
    Event(Box<EventCallback>),
    /// A well-formed payload of a type greenlight ignores.
    Other(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("the form has no payload field")]
    NoPayload,
    #[error("the payload is not valid JSON: {0}")]
    BadJson(String),
    #[error("the body is neither a form nor JSON")]
    UnknownBody,
}

/// Decodes a body for `/slack/interactions` or `/slack/events`: a form with a `payload` (an
/// interaction), or JSON (`url_verification` or an event callback).
pub fn decode(content_type: Option<&str>, body: &[u8]) -> Result<Inbound, PayloadError> {
    let is_json = content_type.is_some_and(|ct| ct.trim_start().starts_with("application/json"))
        || body.first() == Some(&b'{');
    if is_json {
        #[derive(Deserialize)]
        struct Envelope {
            #[serde(rename = "type")]
            kind: String,
            challenge: Option<String>,
        }
        let env: Envelope =
            serde_json::from_slice(body).map_err(|e| PayloadError::BadJson(e.to_string()))?;
        if env.kind == "event_callback" {
            let callback: EventCallback =
                serde_json::from_slice(body).map_err(|e| PayloadError::BadJson(e.to_string()))?;
            return Ok(Inbound::Event(Box::new(callback)));
        }
        return Ok(match (env.kind.as_str(), env.challenge) {
            ("url_verification", Some(challenge)) => Inbound::UrlVerification { challenge },
            ("url_verification", None) => {
                return Err(PayloadError::BadJson(
                    "url_verification without challenge".into(),
                ));
            }
            (kind, _) => Inbound::Other(kind.to_owned()),
        });
    }
    let fields: Vec<(String, String)> =
        serde_urlencoded::from_bytes(body).map_err(|_| PayloadError::UnknownBody)?;
    let payload = fields
        .into_iter()
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v)
        .ok_or(PayloadError::NoPayload)?;
    let interaction: Interaction =
        serde_json::from_str(&payload).map_err(|e| PayloadError::BadJson(e.to_string()))?;
    Ok(Inbound::Interaction(Box::new(interaction)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_block_actions_click_with_extra_and_null_fields() {
        let payload = serde_json::json!({
            "type": "block_actions", "team": null, "token": "x", "api_app_id": "A1",
            "user": {"id": "U1", "username": "alice", "team_id": "T1"},
            "container": {"type": "message", "message_ts": "1.2", "channel_id": "C1", "is_ephemeral": false},
            "channel": {"id": "C1", "name": "deploys"},
            "trigger_id": "t", "response_url": "https://hooks.slack.com/x",
            "actions": [{"action_id": "greenlight.approve", "block_id": "b", "value": "req_1", "type": "button", "action_ts": "1"}],
            "state": {"values": {}}, "something_new": [1, 2, 3]
        });
        let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
        let Inbound::Interaction(i) =
            decode(Some("application/x-www-form-urlencoded"), body.as_bytes()).unwrap()
        else {
            panic!("not an interaction");
        };
        assert_eq!(i.kind, "block_actions");
        assert_eq!(i.channel_id(), Some("C1"));
        assert_eq!(i.actions[0].value.as_deref(), Some("req_1"));
    }

    fn interaction(v: serde_json::Value) -> Interaction {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_actor_must_be_a_well_formed_user_of_a_well_formed_team() {
        let ok = interaction(serde_json::json!({
            "type": "block_actions", "team": {"id": "T0SANDBOX"}, "user": {"id": "U0ALICE"}
        }));
        assert_eq!(ok.identity(), Ok(("U0ALICE", "T0SANDBOX")));
        // Org-wide installs: no team object, the workspace is on the user; Grid users are W...
        let org = interaction(serde_json::json!({
            "type": "block_actions", "team": null, "user": {"id": "W012A3CDE", "team_id": "T0001"}
        }));
        assert_eq!(org.identity(), Ok(("W012A3CDE", "T0001")));
        // Enterprise Grid: the person's team_id is the organization.
        let grid = interaction(serde_json::json!({
            "type": "block_actions", "team": {"id": "T0001", "enterprise_id": "E0ORG"},
            "user": {"id": "W012A3CDE", "team_id": "E0ORG"}
        }));
        assert_eq!(grid.identity(), Ok(("W012A3CDE", "E0ORG")));
        // Slack Connect: someone of another organization is of their own workspace, whatever
        // workspace the payload says they acted from.
        let partner = interaction(serde_json::json!({
            "type": "block_actions", "team": {"id": "T0SANDBOX"},
            "user": {"id": "U0XAVIER", "team_id": "T0PARTNER"}
        }));
        assert_eq!(partner.identity(), Ok(("U0XAVIER", "T0PARTNER")));
        for (user, team, err) in [
            (
                serde_json::json!({"id": ""}),
                serde_json::json!({"id": "T1"}),
                IdentityError::User,
            ),
            (
                serde_json::json!({"id": "U"}),
                serde_json::json!({"id": "T1"}),
                IdentityError::User,
            ),
            (
                serde_json::json!({"id": "u0alice"}),
                serde_json::json!({"id": "T1"}),
                IdentityError::User,
            ),
            (
                serde_json::json!({"id": "U0 ALICE"}),
                serde_json::json!({"id": "T1"}),
                IdentityError::User,
            ),
            (
                serde_json::json!({"id": "B0BOT"}),
                serde_json::json!({"id": "T1"}),
                IdentityError::User,
            ),
            (
                serde_json::json!({"id": "U0ALICE"}),
                serde_json::json!({"id": ""}),
                IdentityError::Team,
            ),
            (
                serde_json::json!({"id": "U0ALICE"}),
                serde_json::json!({"id": "E0ORG"}),
                IdentityError::Team,
            ),
            (
                serde_json::json!({"id": "U0ALICE"}),
                serde_json::Value::Null,
                IdentityError::Team,
            ),
            (
                serde_json::json!({"id": "U0ALICE", "team_id": "t0partner"}),
                serde_json::json!({"id": "T1"}),
                IdentityError::Team,
            ),
        ] {
            let i = interaction(
                serde_json::json!({"type": "block_actions", "team": team, "user": user}),
            );
            assert_eq!(i.identity(), Err(err), "{i:?}");
        }
        let no_user = interaction(serde_json::json!({"type": "block_actions"}));
        assert_eq!(no_user.identity(), Err(IdentityError::User));
    }

    #[test]
    fn an_event_callback_decodes_leniently() {
        let body = br#"{"token":"t","team_id":"T0SANDBOX","api_app_id":"A1","type":"event_callback",
            "event_id":"Ev1","event_time":1,"authorizations":[],"something_new":{},
            "event":{"type":"app_home_opened","user":"U0ALICE","channel":"D0ALICE","tab":"home",
                     "event_ts":"1.2","view":{"id":"V1","type":"home","blocks":[{"type":"odd"}]}}}"#;
        let Ok(Inbound::Event(callback)) = decode(Some("application/json"), body) else {
            panic!("not an event");
        };
        let event = callback.event.unwrap();
        assert_eq!(event.kind, "app_home_opened");
        assert_eq!(event.user.as_deref(), Some("U0ALICE"));
        assert_eq!(event.tab.as_deref(), Some("home"));
        // Other events, and ones without a body, decode too (and are ignored later).
        let other = br#"{"type":"event_callback","event":{"type":"message"}}"#;
        assert!(matches!(decode(None, other), Ok(Inbound::Event(_))));
        let bare = br#"{"type":"event_callback"}"#;
        assert!(matches!(decode(None, bare), Ok(Inbound::Event(e)) if e.event.is_none()));
    }

    #[test]
    fn a_click_on_the_home_tab_has_a_view_and_no_channel() {
        let home = interaction(serde_json::json!({
            "type": "block_actions", "user": {"id": "U0ALICE"}, "team": {"id": "T1"},
            "container": {"type": "view", "view_id": "V1"}, "view": {"id": "V1", "type": "home"}
        }));
        assert!(home.on_view());
        let message = interaction(serde_json::json!({
            "type": "block_actions", "user": {"id": "U0ALICE"}, "team": {"id": "T1"},
            "container": {"type": "message", "channel_id": "C1", "message_ts": "1.2"}
        }));
        assert!(!message.on_view());
    }

    #[test]
    fn url_verification_and_garbage() {
        let body = br#"{"token":"t","challenge":"abc","type":"url_verification"}"#;
        assert!(matches!(
            decode(Some("application/json"), body),
            Ok(Inbound::UrlVerification { challenge }) if challenge == "abc"
        ));
        assert_eq!(
            decode(Some("application/x-www-form-urlencoded"), b"foo=bar").unwrap_err(),
            PayloadError::NoPayload
        );
        assert!(matches!(
            decode(None, b"payload=%7Bnot-json"),
            Err(PayloadError::BadJson(_))
        ));
        assert!(matches!(
            decode(None, b"payload=%7B%7D"),
            Err(PayloadError::BadJson(_))
        ));
        assert!(matches!(
            decode(Some("application/json"), b"{"),
            Err(PayloadError::BadJson(_))
        ));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use serde_json::Value;

        /// Arbitrary JSON trees, with the keys a payload has among random ones.
        fn json() -> impl Strategy<Value = Value> {
            let key = prop_oneof![
                Just("type".to_owned()),
                Just("user".to_owned()),
                Just("id".to_owned()),
                Just("team".to_owned()),
                Just("actions".to_owned()),
                Just("container".to_owned()),
                Just("view".to_owned()),
                Just("challenge".to_owned()),
                ".{0,8}",
            ];
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                prop_oneof![
                    Just("block_actions".to_owned()),
                    Just("view_submission".to_owned()),
                    Just("url_verification".to_owned()),
                    Just("greenlight.approve".to_owned()),
                    Just("U0ALICE".to_owned()),
                    ".{0,12}",
                ]
                .prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 48, 6, move |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    proptest::collection::btree_map(key.clone(), inner, 0..6)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn valid() -> Value {
            serde_json::json!({
                "type": "block_actions", "team": {"id": "T0SANDBOX", "domain": "x"},
                "user": {"id": "U0ALICE", "username": "alice", "team_id": "T0SANDBOX"},
                "container": {"type": "message", "message_ts": "1.2", "channel_id": "C1", "is_ephemeral": false},
                "channel": {"id": "C1", "name": "deploys"}, "trigger_id": "t",
                "response_url": "https://hooks.slack.com/x",
                "message": {"ts": "1.2", "text": "x"},
                "actions": [{"action_id": "greenlight.approve", "block_id": "b", "value": "req_1"}],
                "view": {"id": "V1", "callback_id": "c", "private_metadata": "m",
                         "state": {"values": {"b": {"a": {"type": "plain_text_input", "value": "why"}}}}},
                "state": {"values": {}}
            })
        }

        /// Every path to a value in `v`, as keys and indexes.
        fn paths(v: &Value, at: Vec<String>, out: &mut Vec<Vec<String>>) {
            out.push(at.clone());
            match v {
                Value::Object(o) => o.iter().for_each(|(k, c)| {
                    let mut p = at.clone();
                    p.push(k.clone());
                    paths(c, p, out)
                }),
                Value::Array(a) => a.iter().enumerate().for_each(|(i, c)| {
                    let mut p = at.clone();
                    p.push(i.to_string());
                    paths(c, p, out)
                }),
                _ => {}
            }
        }

        fn at_mut<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
            path.iter().try_fold(v, |v, k| match v {
                Value::Object(o) => o.get_mut(k),
                Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
                _ => None,
            })
        }

        fn form(payload: &str) -> Vec<u8> {
            serde_urlencoded::to_string([("payload", payload)])
                .unwrap()
                .into_bytes()
        }

        /// Decoding, then reading everything the handler reads, must not panic.
        fn exercise(content_type: Option<&str>, body: &[u8]) -> Result<(), PayloadError> {
            if let Inbound::Interaction(i) = decode(content_type, body)? {
                let _ = i.identity();
                let _ = i.channel_id();
                if let Some(v) = &i.view {
                    let _ = v.text("b", "a");
                }
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn any_body_decodes_or_gives_a_typed_error(
                body in proptest::collection::vec(any::<u8>(), 0..300),
                text in ".{0,200}",
                ct in proptest::option::of(prop_oneof![
                    Just("application/x-www-form-urlencoded".to_owned()),
                    Just("application/json".to_owned()),
                    ".{0,30}",
                ]),
            ) {
                let _ = exercise(ct.as_deref(), &body);
                let _ = exercise(ct.as_deref(), text.as_bytes());
                let _ = exercise(ct.as_deref(), &form(&text));
            }

            #[test]
            fn any_json_payload_decodes_or_gives_a_typed_error(v in json()) {
                let text = v.to_string();
                let _ = exercise(Some("application/x-www-form-urlencoded"), &form(&text));
                let _ = exercise(Some("application/json"), text.as_bytes());
            }

            /// A real click with one part replaced or removed: still no panic, and the parts
            /// greenlight does not read never make it fail.
            #[test]
            fn a_mutated_click_decodes_or_gives_a_typed_error(
                pick in any::<proptest::sample::Index>(),
                replacement in proptest::option::of(json()),
            ) {
                let mut v = valid();
                let mut all = Vec::new();
                paths(&v, Vec::new(), &mut all);
                let path = pick.get(&all[1..]).clone();
                match &replacement {
                    Some(r) => *at_mut(&mut v, &path).unwrap() = r.clone(),
                    None => {
                        let (last, parent) = path.split_last().unwrap();
                        match at_mut(&mut v, parent).unwrap() {
                            Value::Object(o) => { o.remove(last); }
                            Value::Array(a) => { a.remove(last.parse::<usize>().unwrap()); }
                            _ => unreachable!(),
                        }
                    }
                }
                let res = exercise(None, &form(&v.to_string()));
                let unread = ["domain", "username", "name", "message", "state", "text", "is_ephemeral", "type"];
                if replacement.is_none() && path.len() > 1 && unread.contains(&path.last().unwrap().as_str()) && path[0] != "view" {
                    prop_assert!(res.is_ok(), "removing {:?} broke the click: {:?}", path, res);
                }
            }
        }
    }
}
