//! Standing approvals: "approve, and allow the same for a while". A person approving a request
//! may grant, for up to the workflow's `allow_standing`, that later requests in the same
//! workflow from the same caller whose params match are approved at creation in their name.

use serde::Serialize;

use super::{ApiKeyId, Params, RequestId, WorkflowName};
use jiff::Timestamp;

/// A standing approval as stored.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StandingApproval {
    pub id: StandingId,
    pub workflow: WorkflowName,
    /// The Slack user id of the person who granted it; requests it approves are decided by them.
    pub granted_by: String,
    /// The caller it covers: the API key (for a workload token, the key derived from its trust
    /// policy and subject).
    #[schema(value_type = String)]
    pub caller: ApiKeyId,
    /// How the caller is shown: the key's name, or `oidc:{trust}/{subject}`.
    pub caller_name: String,
    /// The params a request must carry, each with this value, to be approved by it.
    #[schema(value_type = Object)]
    pub r#match: Params,
    /// The request whose approval granted it.
    #[schema(value_type = String)]
    pub request_id: RequestId,
    #[schema(value_type = String)]
    pub created_at: Timestamp,
    #[schema(value_type = String)]
    pub expires_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub revoked_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
}

impl StandingApproval {
    /// The params of `granted_from` that a later request must repeat: the `standing_match`
    /// keys, or every param when the workflow names none.
    pub fn match_of(params: &Params, keys: Option<&[String]>) -> Params {
        match keys {
            None => params.clone(),
            Some(keys) => keys
                .iter()
                .map(|k| {
                    (
                        k.clone(),
                        params.get(k).cloned().unwrap_or(serde_json::Value::Null),
                    )
                })
                .collect(),
        }
    }

    /// Whether it approves a request from `caller` in `workflow` with `params` at `now`. With
    /// `exact`, the params must be the matched ones and no others (the workflow names no
    /// `standing_match` keys, so every param counts, added ones too).
    pub fn covers(
        &self,
        workflow: &WorkflowName,
        caller: &ApiKeyId,
        params: &Params,
        exact: bool,
        now: Timestamp,
    ) -> bool {
        let live = self.revoked_at.is_none() && now < self.expires_at;
        let same = if exact {
            *params == self.r#match
        } else {
            self.r#match
                .iter()
                .all(|(k, v)| params.get(k).unwrap_or(&serde_json::Value::Null) == v)
        };
        live && &self.workflow == workflow && &self.caller == caller && same
    }
}

/// `std_` followed by a ULID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct StandingId(String);

impl StandingId {
    pub fn generate() -> Self {
        Self(format!("std_{}", ulid::Ulid::new()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for StandingId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for StandingId {
    type Err = super::IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = s
            .strip_prefix("std_")
            .is_some_and(|rest| ulid::Ulid::from_string(rest).is_ok());
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(super::ids::id_error(
                "standing approval id",
                s,
                "expected std_<ULID>",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: serde_json::Value) -> Params {
        v.as_object().cloned().unwrap()
    }

    fn standing(keys: Option<&[String]>) -> StandingApproval {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        StandingApproval {
            id: StandingId::generate(),
            workflow: "agents".parse().unwrap(),
            granted_by: "U0ALICE".into(),
            caller: ApiKeyId::generate(),
            caller_name: "claude".into(),
            r#match: StandingApproval::match_of(
                &params(json!({"tool_name": "Bash", "command": "ls"})),
                keys,
            ),
            request_id: RequestId::generate(),
            created_at: now,
            expires_at: Timestamp::from_second(1_800_003_600).unwrap(),
            revoked_at: None,
            revoked_by: None,
        }
    }

    #[test]
    fn it_covers_the_same_caller_workflow_and_matched_params_while_live() {
        let keys = ["tool_name".to_owned()];
        let s = standing(Some(&keys));
        let w: WorkflowName = "agents".parse().unwrap();
        let at = Timestamp::from_second(1_800_000_100).unwrap();
        let later = params(json!({"tool_name": "Bash", "command": "rm -rf /tmp/x"}));
        assert!(s.covers(&w, &s.caller, &later, false, at));
        assert!(!s.covers(
            &w,
            &s.caller,
            &params(json!({"tool_name": "Edit"})),
            false,
            at
        ));
        assert!(!s.covers(&w, &ApiKeyId::generate(), &later, false, at));
        assert!(!s.covers(&"other".parse().unwrap(), &s.caller, &later, false, at));
        let after = Timestamp::from_second(1_800_003_600).unwrap();
        assert!(!s.covers(&w, &s.caller, &later, false, after), "expired");
        let mut revoked = s.clone();
        revoked.revoked_at = Some(at);
        assert!(!revoked.covers(&w, &s.caller, &later, false, at));
    }

    #[test]
    fn without_match_keys_every_param_counts_and_none_may_be_added() {
        let s = standing(None);
        let w: WorkflowName = "agents".parse().unwrap();
        let at = Timestamp::from_second(1_800_000_100).unwrap();
        let same = params(json!({"command": "ls", "tool_name": "Bash"}));
        assert!(s.covers(&w, &s.caller, &same, true, at));
        let added = params(json!({"command": "ls", "tool_name": "Bash", "force": true}));
        assert!(!s.covers(&w, &s.caller, &added, true, at));
        let changed = params(json!({"command": "ls -la", "tool_name": "Bash"}));
        assert!(!s.covers(&w, &s.caller, &changed, true, at));
    }
}
