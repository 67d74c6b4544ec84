//! A GitHub deployment held by greenlight's custom deployment protection rule: what a request
//! created from GitHub's `deployment_protection_rule` webhook keeps about it, the review it
//! ends with, and the comment that review carries. Pure: no HTTP, no keys.

use serde::{Deserialize, Serialize};

use super::{ApiKeyId, DecisionKind, Request, Status};

/// The id greenlight's GitHub webhook creates requests under (an all-zero ULID, which no
/// generated API key has): only requests made by it carry a GitHub link that is acted on.
pub const GITHUB_CREATOR: &str = "key_00000000000000000000000000";

/// Where a request's GitHub link is kept in its `metadata`.
pub const METADATA_KEY: &str = "github";

/// GitHub's limit on a review's comment.
pub const MAX_COMMENT_CHARS: usize = 1024;

pub fn creator_id() -> ApiKeyId {
    GITHUB_CREATOR.parse().unwrap_or_else(|_| unreachable!())
}

/// The deployment a request stands for, as the webhook named it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GithubLink {
    pub installation_id: u64,
    /// `owner/name`.
    pub repository: String,
    pub environment: String,
    pub run_id: u64,
    /// Where the review is posted (checked against `api_url` before every call).
    pub deployment_callback_url: String,
}

impl GithubLink {
    /// The link of a request the GitHub webhook created; none for any other request, whatever
    /// its metadata says (an API caller cannot make greenlight review someone's deployment).
    pub fn of(request: &Request) -> Option<Self> {
        if request.created_by.as_ref().map(ApiKeyId::as_str) != Some(GITHUB_CREATOR) {
            return None;
        }
        let value = request.metadata.as_ref()?.get(METADATA_KEY)?;
        serde_json::from_value(value.clone()).ok()
    }

    /// The request's idempotency key: GitHub redelivers a webhook, and each delivery of the same
    /// run's environment finds the same request.
    pub fn idempotency_key(&self) -> String {
        format!(
            "github:{}:{}:{}",
            self.repository, self.run_id, self.environment
        )
    }
}

/// How a review ends a deployment's wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReviewState {
    Approved,
    Rejected,
}

impl ReviewState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewState::Approved => "approved",
            ReviewState::Rejected => "rejected",
        }
    }

    /// The review a final status calls for (none while pending).
    pub fn for_status(status: Status) -> Option<Self> {
        match status {
            Status::Pending => None,
            Status::Approved => Some(ReviewState::Approved),
            Status::Denied | Status::Expired | Status::Cancelled => Some(ReviewState::Rejected),
        }
    }
}

/// Where a request's review stands, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Review {
    Pending,
    Approved,
    Rejected,
    Failed,
}

/// The comment of a review: who decided and why (the status report: where it waits), with the
/// request's id, at most 1,024 characters. "Approved by @alice in #deploy (greenlight req_…)".
pub fn review_comment(request: &Request) -> String {
    let channel = request.channel.as_str();
    let last = request.decisions.last();
    let who = last
        .map(|d| match (&d.name, d.kind) {
            (Some(name), _) => format!("@{name}"),
            (None, DecisionKind::Policy) => format!("greenlight rule {}", d.by),
            (None, _) => d.by.clone(),
        })
        .or_else(|| request.decided_by.clone())
        .unwrap_or_else(|| "greenlight".to_owned());
    let kind = last.map(|d| d.kind);
    let mut text = match (request.status, kind) {
        (Status::Pending, _) => format!("Waiting for approval in {channel}"),
        (Status::Approved, Some(DecisionKind::Timeout)) => format!(
            "Approved: nobody decided in {channel} in time, and the workflow approves on expiry"
        ),
        (Status::Denied, Some(DecisionKind::Timeout)) => {
            format!("Rejected: nobody decided in {channel} in time")
        }
        (Status::Approved, Some(DecisionKind::Policy)) => format!("Approved by {who}"),
        (Status::Denied, Some(DecisionKind::Policy)) => format!("Rejected by {who}"),
        (Status::Approved, _) => format!("Approved by {who} in {channel}"),
        (Status::Denied, _) => format!("Rejected by {who} in {channel}"),
        (Status::Expired, _) => {
            format!("Rejected: nobody decided in {channel} before the request expired")
        }
        (Status::Cancelled, _) => {
            let by = request.decided_by.as_deref().unwrap_or("its requester");
            format!("Rejected: the request was cancelled by {by}")
        }
    };
    if let Some(reason) = request
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
    {
        text.push_str(": ");
        text.push_str(reason);
    }
    text.push_str(&format!(" (greenlight {})", request.id));
    truncate(&text, MAX_COMMENT_CHARS)
}

/// At most `max` characters, the cut marked with an ellipsis.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters (none
/// included) and everything else for itself: `prod-*`, `acme/*`, `*`.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Greedy with backtracking to the last star: linear in practice, no recursion.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_matches("prod-*", "prod-eu"));
        assert!(glob_matches("prod-*", "prod-"));
        assert!(!glob_matches("prod-*", "staging"));
        assert!(glob_matches("acme/*", "acme/api"));
        assert!(!glob_matches("acme/*", "other/api"));
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("production", "production"));
        assert!(!glob_matches("production", "Production"));
        assert!(glob_matches("*-web-*", "acme-web-1"));
        assert!(!glob_matches("a*b", "acbd"));
    }

    #[test]
    fn truncates_to_the_limit() {
        let long = "x".repeat(2000);
        let t = truncate(&long, MAX_COMMENT_CHARS);
        assert_eq!(t.chars().count(), MAX_COMMENT_CHARS);
        assert!(t.ends_with('…'));
        assert_eq!(truncate("short", 10), "short");
    }

    fn request() -> Request {
        use crate::domain::{NewRequest, Params, RequestId};
        Request::new(
            RequestId::generate_at(0),
            NewRequest {
                workflow: "deploy".parse().unwrap(),
                title: "Deploy".into(),
                details: None,
                params: Params::new(),
                requester: Some("octocat".into()),
                channel: "#deploy".parse().unwrap(),
                expires_at: None,
                callback_url: None,
                remind_at: None,
            },
            jiff::Timestamp::UNIX_EPOCH,
        )
    }

    fn decided(
        kind: DecisionKind,
        by: &str,
        name: Option<&str>,
        status: Status,
        reason: Option<&str>,
    ) -> Request {
        let mut r = request();
        r.decisions.push(crate::domain::Decision {
            by: by.into(),
            name: name.map(str::to_owned),
            kind,
            verdict: if status == Status::Approved {
                crate::domain::Verdict::Approve
            } else {
                crate::domain::Verdict::Deny
            },
            reason: reason.map(str::to_owned),
            at: jiff::Timestamp::UNIX_EPOCH,
            stage: None,
            response: None,
            edits: None,
        });
        r.status = status;
        r.decided_by = Some(by.into());
        r.reason = reason.map(str::to_owned);
        r
    }

    #[test]
    fn comments_name_who_decided_and_why() {
        let r = decided(
            DecisionKind::User,
            "U0ALICE",
            Some("alice"),
            Status::Approved,
            None,
        );
        assert_eq!(
            review_comment(&r),
            format!("Approved by @alice in #deploy (greenlight {})", r.id)
        );
        let r = decided(
            DecisionKind::User,
            "U0BOB",
            None,
            Status::Denied,
            Some(" freeze "),
        );
        assert_eq!(
            review_comment(&r),
            format!("Rejected by U0BOB in #deploy: freeze (greenlight {})", r.id)
        );
        let r = decided(
            DecisionKind::Machine,
            "key:ci",
            None,
            Status::Approved,
            None,
        );
        assert!(review_comment(&r).starts_with("Approved by key:ci in #deploy"));
        let r = decided(
            DecisionKind::Policy,
            "small-change",
            None,
            Status::Approved,
            Some("docs only"),
        );
        assert!(
            review_comment(&r).starts_with("Approved by greenlight rule small-change: docs only"),
            "{}",
            review_comment(&r)
        );
        let r = decided(
            DecisionKind::Timeout,
            "timeout",
            None,
            Status::Approved,
            None,
        );
        assert!(review_comment(&r).contains("approves on expiry"));
        let mut r = request();
        r.status = Status::Expired;
        assert!(
            review_comment(&r)
                .starts_with("Rejected: nobody decided in #deploy before the request expired")
        );
        r.status = Status::Cancelled;
        r.decided_by = Some("key:ci".into());
        assert!(review_comment(&r).starts_with("Rejected: the request was cancelled by key:ci"));
        let r = decided(
            DecisionKind::User,
            "U0B",
            None,
            Status::Denied,
            Some(&"why ".repeat(400)),
        );
        assert_eq!(review_comment(&r).chars().count(), MAX_COMMENT_CHARS);
        assert!(review_comment(&request()).starts_with("Waiting for approval in #deploy"));
    }

    #[test]
    fn the_creator_id_parses() {
        assert_eq!(creator_id().as_str(), GITHUB_CREATOR);
    }
}
