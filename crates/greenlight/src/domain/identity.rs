//! Who asked, as proven by a workload token (OIDC) a trust policy accepted: kept with the
//! request, shown in the API, the audit log, Slack and rules.

use serde::{Deserialize, Serialize};

/// A verified workload identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Identity {
    /// The `[[trust]]` policy that accepted the token.
    pub trust: String,
    /// The token's `iss`.
    pub issuer: String,
    /// The token's `sub`.
    pub subject: String,
    /// The token's claims as verified, less `jti`.
    #[schema(value_type = Object)]
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl Identity {
    /// `{{claims.NAME}}` placeholders of `template` filled from the claims (strings as they
    /// are, other values as JSON; a claim that is absent leaves nothing).
    pub fn render(&self, template: &str) -> String {
        let mut out = String::new();
        let mut rest = template;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                out.push_str(&rest[start..]);
                return out;
            };
            let name = after[..end].trim();
            if let Some(claim) = name.strip_prefix("claims.") {
                match self.claims.get(claim) {
                    Some(serde_json::Value::String(s)) => out.push_str(s),
                    Some(serde_json::Value::Null) | None => {}
                    Some(other) => out.push_str(&other.to_string()),
                }
            }
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        out
    }

    /// The placeholders of `template` that are not `{{claims.NAME}}`, for the config check.
    pub fn unknown_placeholders(template: &str) -> Vec<String> {
        let mut bad = Vec::new();
        let mut rest = template;
        while let Some(start) = rest.find("{{") {
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else { break };
            let name = after[..end].trim();
            let ok = name.strip_prefix("claims.").is_some_and(|c| {
                !c.is_empty() && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
            });
            if !ok {
                bad.push(name.to_owned());
            }
            rest = &after[end + 2..];
        }
        bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_from_claims() {
        let id = Identity {
            trust: "github".into(),
            issuer: "https://token.actions.githubusercontent.com".into(),
            subject: "repo:acme/api:ref:refs/tags/v1.2".into(),
            claims: serde_json::json!({"repository": "acme/api", "ref": "refs/tags/v1.2", "run_id": 8812})
                .as_object()
                .unwrap()
                .clone(),
        };
        assert_eq!(
            id.render("{{claims.repository}}@{{ claims.ref }} #{{claims.run_id}}{{claims.nope}}"),
            "acme/api@refs/tags/v1.2 #8812"
        );
        assert_eq!(
            Identity::unknown_placeholders("{{claims.a}} {{params.x}} {{claims.}}"),
            ["params.x", "claims."]
        );
    }
}
