//! Standing approvals: granted with an "Approve for…" approval, used when a later request from
//! the same caller in the same workflow repeats the matched params, listed and revoked.
//!
//! A standing approval acts only where its granter's own approval would decide the request:
//! the granter must still be allowed to approve (an approver of every stage, never the
//! requester unless self-approval is allowed), and the workflow needs one approval per stage
//! (the config refuses `allow_standing` otherwise). Deny rules, and any rule's decision, win.

use super::{Service, ServiceError, ServiceResult, VoteResult};
use crate::config::Workflow;
use crate::domain::{
    DecisionKind, DurationSpec, Request, RequestId, StandingApproval, StandingId, Status, Verdict,
    Vote,
};
use crate::store::{ApiKey, Effect, NewAudit};

/// The shortest standing approval.
const MIN_STANDING_MS: i64 = 60_000;

impl Service {
    /// "Approve for…": casts `vote` (an approval) and, when it approves the request, grants a
    /// standing approval for `duration` (at most the workflow's `allow_standing`).
    pub async fn approve_for(
        &self,
        id: &RequestId,
        vote: Vote,
        duration: DurationSpec,
    ) -> ServiceResult<VoteResult> {
        let request = self.get(id).await?;
        let workflow = self
            .workflow_of(&request)
            .ok_or_else(|| ServiceError::NotFound(id.to_string()))?;
        let Some(bound) = workflow.allow_standing else {
            return Err(ServiceError::StandingNotAllowed(
                "This workflow does not allow standing approvals; use Approve.".into(),
            ));
        };
        if duration.as_millis() < MIN_STANDING_MS || duration.as_millis() > bound.as_millis() {
            return Err(ServiceError::StandingNotAllowed(format!(
                "Give a duration from 1m up to {bound}."
            )));
        }
        if !request.fields.is_empty() {
            return Err(ServiceError::StandingNotAllowed(
                "This request asks for answers, which cannot be given in advance; use Approve."
                    .into(),
            ));
        }
        let Some(caller) = request.created_by.clone() else {
            return Err(ServiceError::StandingNotAllowed(
                "This request names no API key to grant a standing approval to; use Approve."
                    .into(),
            ));
        };
        let granter = vote.by.clone();
        let result = self.vote(id, vote).await?;
        if let VoteResult::Decided(decided) = &result
            && decided.status == Status::Approved
        {
            let now = self.now();
            let caller_name = self.caller_name(decided, &caller).await?;
            let expires_at =
                jiff::Timestamp::from_millisecond(now.as_millisecond() + duration.as_millis())
                    .unwrap_or(jiff::Timestamp::MAX);
            let standing = StandingApproval {
                id: StandingId::generate(),
                workflow: workflow.name.clone(),
                granted_by: granter.clone(),
                caller,
                caller_name,
                r#match: StandingApproval::match_of(
                    &decided.params,
                    workflow.standing_match.as_deref(),
                ),
                request_id: decided.id.clone(),
                created_at: now,
                expires_at,
                revoked_at: None,
                revoked_by: None,
            };
            let audit = NewAudit {
                request_id: Some(decided.id.clone()),
                event: "standing.granted",
                actor: granter,
                data: serde_json::json!({
                    "standing": standing.id,
                    "workflow": standing.workflow,
                    "caller": standing.caller,
                    "caller_name": standing.caller_name,
                    "match": standing.r#match,
                    "expires_at": standing.expires_at,
                }),
            };
            // The message shows it with a Revoke button, and again when it runs out.
            let mut effects = vec![
                Effect::SlackUpdate {
                    request_id: decided.id.clone(),
                },
                Effect::SlackUpdateAt {
                    request_id: decided.id.clone(),
                    at: standing.expires_at.as_millisecond(),
                },
            ];
            effects.extend(self.home_refresh_of(&standing.granted_by).await);
            self.store
                .add_standing(&standing, &[audit], &effects, now.as_millisecond())
                .await?;
            self.outbox.notify_one();
            metrics::counter!("greenlight_standing_total", "event" => "granted").increment(1);
            tracing::info!(standing = %standing.id, workflow = %standing.workflow, caller = %standing.caller_name, until = %standing.expires_at, "standing approval granted");
        }
        Ok(result)
    }

    /// How a caller is shown: its workload identity, else its API key's name.
    async fn caller_name(
        &self,
        request: &Request,
        caller: &crate::domain::ApiKeyId,
    ) -> ServiceResult<String> {
        if let Some(identity) = &request.identity {
            return Ok(format!("oidc:{}/{}", identity.trust, identity.subject));
        }
        Ok(self
            .store
            .list_api_keys()
            .await?
            .into_iter()
            .find(|k| &k.id == caller)
            .map_or_else(|| caller.to_string(), |k| k.name))
    }

    /// The standing approval that approves `request` (just built, not stored) asked by `key`,
    /// with the request as that approval leaves it; `None` when none applies.
    pub(super) async fn approved_by_standing(
        &self,
        workflow: &Workflow,
        key: &ApiKey,
        request: &Request,
    ) -> ServiceResult<Option<(StandingApproval, Request)>> {
        if workflow.allow_standing.is_none() {
            return Ok(None);
        }
        let now = self.now();
        let exact = workflow.standing_match.is_none();
        let candidates = self
            .store
            .standing_for(&workflow.name, &key.id, now.as_millisecond())
            .await?;
        for s in candidates {
            if !request.fields.is_empty()
                || !s.covers(&workflow.name, &key.id, &request.params, exact, now)
            {
                continue;
            }
            // The granter's approval, checked as if they clicked now (still an approver of
            // every stage it needs, not the requester), recorded as of kind `standing`.
            let as_person = Vote {
                by: s.granted_by.clone(),
                name: None,
                kind: DecisionKind::User,
                verdict: Verdict::Approve,
                reason: None,
                stage: None,
                response: None,
                edits: None,
            };
            let facts = self.standing(request, &as_person).await?;
            let vote = Vote {
                kind: DecisionKind::Standing,
                reason: Some(format!("standing approval {}", s.id)),
                ..as_person
            };
            let mut trial = request.clone();
            if trial
                .cast_as(vote, facts, &self.policy(request), now)
                .is_ok()
                && trial.status == Status::Approved
            {
                return Ok(Some((s, trial)));
            }
        }
        Ok(None)
    }

    /// One standing approval, live or not.
    pub async fn standing_approval(
        &self,
        id: &StandingId,
    ) -> ServiceResult<Option<StandingApproval>> {
        Ok(self.store.get_standing(id).await?)
    }

    /// Every live standing approval, soonest to expire first.
    pub async fn live_standing(&self) -> ServiceResult<Vec<StandingApproval>> {
        Ok(self.store.live_standing(self.now_ms()).await?)
    }

    /// Ends a live standing approval at once (audited `standing.revoked`).
    pub async fn revoke_standing(
        &self,
        id: &StandingId,
        by: &str,
    ) -> ServiceResult<StandingApproval> {
        let now = self.now_ms();
        let Some(standing) = self.store.get_standing(id).await? else {
            return Err(ServiceError::NotFound(format!("standing approval {id}")));
        };
        let audit = NewAudit {
            request_id: Some(standing.request_id.clone()),
            event: "standing.revoked",
            actor: by.to_owned(),
            data: serde_json::json!({
                "standing": standing.id,
                "workflow": standing.workflow,
                "granted_by": standing.granted_by,
                "caller": standing.caller,
            }),
        };
        let mut effects = vec![Effect::SlackUpdate {
            request_id: standing.request_id.clone(),
        }];
        effects.extend(self.home_refresh_of(&standing.granted_by).await);
        if !self
            .store
            .revoke_standing(id, by, now, &[audit], &effects)
            .await?
        {
            return Err(ServiceError::NotFound(format!(
                "live standing approval {id} (it expired or was revoked)"
            )));
        }
        metrics::counter!("greenlight_standing_total", "event" => "revoked").increment(1);
        self.outbox.notify_one();
        tracing::info!(standing = %id, by, "standing approval revoked");
        self.store
            .get_standing(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("standing approval {id}")))
    }
}
