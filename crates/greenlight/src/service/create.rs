//! Creating a request: the workflow's policy, its rules (run in passes while they ask history),
//! the idempotency key, and the first message and callbacks, written in one transaction.

use sha2::{Digest, Sha256};

use super::{Event, Service, ServiceError, ServiceResult};
use crate::config::Workflow;
use crate::domain::{
    ChannelRef, DecisionKind, DurationSpec, NewRequest, Notify, Params, Request, RequestId,
    Verdict, WorkflowName, requester_as_stored,
};
use crate::rules::{self, RuleInput};
use crate::store::{ApiKey, CreateOutcome, Delivery, DigestWindow, Effect, Idempotency, NewAudit};

/// A validated request to create an approval.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CreateInput {
    pub workflow: Option<WorkflowName>,
    pub title: String,
    pub details: Option<String>,
    pub params: Params,
    pub requester: Option<String>,
    pub callback_url: Option<String>,
    pub expires_in: Option<DurationSpec>,
    /// Another channel than the workflow's, where the workflow allows it.
    pub channel: Option<ChannelRef>,
    /// The caller's own JSON object, kept and handed back, never shown in Slack.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// The agent tool call the request asks about (MCP's permission prompt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call: Option<crate::domain::ToolCall>,
    /// What approvers fill in when they approve (checked: `domain::check_fields`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<crate::domain::Field>,
    #[serde(skip_serializing_if = "crate::domain::Buttons::is_default")]
    pub buttons: crate::domain::Buttons,
    /// Params approvers may edit (`"params.NAME"`), within the workflow's `editable`; none:
    /// the workflow's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub editable: Option<Vec<String>>,
    #[serde(skip)]
    pub idempotency_key: Option<String>,
    /// The workload token that asked, as verified (set by the adapters, never from a body):
    /// the request's requester comes from its policy, and its workflows bound where it asks.
    #[serde(skip)]
    pub token: Option<std::sync::Arc<super::identity::Verified>>,
}

impl Service {
    /// Creates a request; with it come its deliveries as written (`None`: an earlier create
    /// with the same idempotency key made it, and this one wrote nothing).
    pub async fn create(
        &self,
        input: CreateInput,
        key: &ApiKey,
    ) -> ServiceResult<(Request, Option<Vec<Delivery>>)> {
        self.take_create(key)?;
        // A permission prompt (a tool call) that names no workflow lands in `[mcp]
        // permission_workflow` and expires after `[mcp] permission_timeout`, whichever
        // transport it came by: the server's settings govern, not the agent's machine.
        let asks_permission = input.tool_call.is_some();
        // So does an agent's question (ask_question): a request only to answer.
        let agents = asks_permission || input.buttons == crate::domain::Buttons::Answer;
        let named = input.workflow.as_ref().or(if agents {
            self.permissions.workflow.as_ref()
        } else {
            None
        });
        let workflow = self.workflow(named)?;
        if let Some(token) = &input.token
            && !token.policy.workflows.is_empty()
            && !token.policy.workflows.contains(&workflow.name)
        {
            return Err(ServiceError::WorkflowNotAllowed {
                workflow: workflow.name.to_string(),
                trust: token.policy.name.clone(),
            });
        }
        if input.channel.is_some() && !workflow.allow_channel_override {
            return Err(ServiceError::ChannelOverrideNotAllowed(
                workflow.name.to_string(),
            ));
        }
        let now = self.now();
        let idempotency = input.idempotency_key.as_ref().map(|k| Idempotency {
            api_key: key.id.clone(),
            key: k.clone(),
            fingerprint: fingerprint(&input),
        });
        // A person named as the requester is kept as their user id, however it was written, so
        // that self-approval, the rules and the Home tab all see the same person.
        // A token's requester is its policy's (the body's is ignored): proven, not claimed.
        let requester = match &input.token {
            Some(token) => Some(requester_as_stored(&token.requester)),
            None => input.requester.as_deref().map(requester_as_stored),
        };
        let identity = input.token.as_ref().map(|t| t.identity.clone());
        let identity_json = identity
            .as_ref()
            .map(|i| serde_json::to_value(i).unwrap_or_default());
        // DurationSpec is bounded to a year, so this cannot leave jiff's range.
        let after = |d: DurationSpec| {
            jiff::Timestamp::from_millisecond(now.as_millisecond() + d.as_millis()).ok()
        };
        let expires_in = match input.expires_in {
            Some(d) => Some(d),
            None if asks_permission => Some(self.permissions.timeout),
            None => workflow.expires_in,
        };
        let expires_at = expires_in.and_then(after);
        let remind_at = workflow.remind_after.and_then(after);
        let evaluation = self
            .evaluate_rules(
                workflow,
                &input.params,
                requester.as_deref(),
                identity_json.as_ref(),
                &input.title,
                now,
            )
            .await?;
        let mut request = Request::new(
            RequestId::generate_at(now.as_millisecond()),
            NewRequest {
                workflow: workflow.name.clone(),
                title: input.title,
                details: input.details,
                params: input.params,
                requester,
                channel: input.channel.unwrap_or_else(|| workflow.channel.clone()),
                expires_at,
                callback_url: input.callback_url,
                remind_at,
            },
            now,
        );
        request.metadata = input.metadata;
        request.tool_call = input.tool_call;
        request.fields = input.fields;
        request.buttons = input.buttons;
        request.editable = editable_of(workflow, input.editable.as_deref(), &request.params)?;
        // An agent's tool input may be edited before it is allowed (`[mcp]
        // permission_editable`): each top-level string, number or boolean of it.
        if self.permissions.editable
            && let Some(input) = request.tool_call.as_ref().and_then(|c| c.input.as_object())
        {
            request.editable.extend(
                input
                    .iter()
                    .filter(|(k, v)| crate::domain::is_editable_value(v) && k.len() <= 100)
                    .take(crate::domain::MAX_EDITABLE_INPUT_KEYS)
                    .map(|(k, _)| format!("{}{k}", crate::domain::TOOL_INPUT_PREFIX)),
            );
        }
        request.created_by = Some(key.id.clone());
        let mut created = serde_json::json!({
            "workflow": request.workflow,
            "title": request.title,
            "api_key": key.id,
        });
        if let Some(identity) = &identity {
            created["trust"] = identity.trust.clone().into();
            created["subject"] = identity.subject.clone().into();
        }
        request.identity = identity;
        let mut audit = vec![NewAudit {
            request_id: Some(request.id.clone()),
            event: Event::Created.as_str(),
            actor: key.name.clone(),
            data: created,
        }];
        for failure in &evaluation.failures {
            tracing::warn!(workflow = %workflow.name, rule = %failure.rule, error = %failure.error, "rule failed; counted as no match");
            audit.push(NewAudit {
                request_id: Some(request.id.clone()),
                event: "rule.failed",
                actor: failure.rule.clone(),
                data: serde_json::json!({ "error": failure.error }),
            });
        }
        let mut decided = None;
        let mut notify = Notify::Message;
        let mut kind = DecisionKind::Policy;
        if let Some(m) = &evaluation.decision {
            notify = workflow.notify_for(&m.rule);
            let status = request.decide_by_rule(&m.rule, m.verdict, m.summary.clone(), now)?;
            audit.push(NewAudit {
                request_id: Some(request.id.clone()),
                event: Event::Decided(status).as_str(),
                actor: m.rule.clone(),
                data: serde_json::json!({
                    "rule": m.rule,
                    "kind": DecisionKind::Policy,
                    "verdict": m.verdict,
                    "reason": m.summary,
                    "notify": notify,
                }),
            });
            decided = Some(status);
        } else if let Some((standing, approved)) =
            self.approved_by_standing(workflow, key, &request).await?
        {
            // Like a rule's decision: posted or digested per the workflow's `notify`.
            notify = workflow.notify;
            kind = DecisionKind::Standing;
            request = approved;
            let status = request.status;
            audit.push(NewAudit {
                request_id: Some(request.id.clone()),
                event: "standing.used",
                actor: standing.granted_by.clone(),
                data: serde_json::json!({
                    "standing": standing.id,
                    "granted_on": standing.request_id,
                    "expires_at": standing.expires_at,
                }),
            });
            audit.push(NewAudit {
                request_id: Some(request.id.clone()),
                event: Event::Decided(status).as_str(),
                actor: standing.granted_by.clone(),
                data: serde_json::json!({
                    "kind": DecisionKind::Standing,
                    "verdict": Verdict::Approve,
                    "standing": standing.id,
                    "reason": request.reason,
                    "notify": notify,
                }),
            });
            metrics::counter!("greenlight_standing_total", "event" => "used").increment(1);
            decided = Some(status);
        }
        let mut effects = self.effects_for(&request, Event::Created).await;
        if decided.is_none() {
            let (stage_audit, stage_effects) = self.stage_changes(None, &request, None);
            audit.extend(stage_audit);
            effects.extend(stage_effects);
        }
        if notify != Notify::Message {
            effects.retain(|e| !matches!(e, Effect::SlackPost { .. }));
        }
        if notify == Notify::Digest {
            let window = DigestWindow::at(
                request.channel.as_str(),
                now.as_millisecond(),
                workflow.digest_interval.as_millis(),
            );
            effects.push(Effect::SlackDigest {
                key: window.key.clone(),
                channel: window.channel,
            });
            request.digest_key = Some(window.key);
        }
        effects.extend(self.home_refreshes(&request).await);
        if let Some(status) = decided {
            // Callbacks and hooks hear of the decision too; the post already shows it.
            effects.extend(
                self.effects_for(&request, Event::Decided(status))
                    .await
                    .into_iter()
                    .filter(|e| !matches!(e, Effect::SlackUpdate { .. })),
            );
        }
        let outcome = self
            .store
            .create_request(
                &request,
                idempotency.as_ref(),
                &audit,
                &effects,
                now.as_millisecond(),
            )
            .await;
        match outcome {
            Ok(CreateOutcome::Created(deliveries)) => {
                metrics::counter!("greenlight_requests_created_total").increment(1);
                match &evaluation.decision {
                    Some(m) => {
                        tracing::info!(request = %request.id, workflow = %request.workflow, status = request.status.as_str(), rule = %m.rule, "request created and decided by a rule")
                    }
                    None => {
                        tracing::info!(request = %request.id, workflow = %request.workflow, title = %request.title, "request created")
                    }
                }
                if let Some(status) = decided {
                    metrics::counter!("greenlight_decisions_total", "status" => status.as_str(), "kind" => kind.as_str()).increment(1);
                }
                self.outbox.notify_one();
                Ok((request, Some(deliveries)))
            }
            Ok(CreateOutcome::Existing(existing)) => Ok((*existing, None)),
            Ok(CreateOutcome::KeyReused) => Err(ServiceError::IdempotencyKeyReused),
            // Two tries with the same key raced; the loser finds the winner's request.
            Err(e) if e.is_unique_violation() => {
                match self
                    .store
                    .create_request(
                        &request,
                        idempotency.as_ref(),
                        &[],
                        &[],
                        now.as_millisecond(),
                    )
                    .await?
                {
                    CreateOutcome::Existing(existing) => Ok((*existing, None)),
                    CreateOutcome::KeyReused => Err(ServiceError::IdempotencyKeyReused),
                    CreateOutcome::Created(deliveries) => Ok((request, Some(deliveries))),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Runs the workflow's rules over what a create asks, with the live signals they read
    /// and the history the rules ask about, in as many passes as that takes.
    pub(super) async fn evaluate_rules(
        &self,
        workflow: &Workflow,
        params: &Params,
        requester: Option<&str>,
        identity: Option<&serde_json::Value>,
        title: &str,
        now: jiff::Timestamp,
    ) -> ServiceResult<rules::Evaluation> {
        if workflow.rules.is_empty() {
            return Ok(rules::Evaluation::default());
        }
        // Only the signals the rules name, unless one reads `signals` as a whole; either way
        // at most `[limits] max_signals`.
        let at = now.as_millisecond();
        let signals = match rules::SignalsRead::of(&workflow.rules) {
            rules::SignalsRead::Nothing => Vec::new(),
            rules::SignalsRead::Named(names) => self.store.live_signals(Some(&names), at).await?,
            rules::SignalsRead::All => self.store.live_signals(None, at).await?,
        };
        let mut history = rules::History::default();
        let mut pass = 0;
        loop {
            pass += 1;
            let mut evaluation = rules::evaluate(
                &workflow.rules,
                &RuleInput {
                    params,
                    requester,
                    identity,
                    workflow: workflow.name.as_str(),
                    title,
                    now,
                    signals: &signals,
                    history: &history,
                },
            );
            if evaluation.wanted.is_empty() {
                return Ok(evaluation);
            }
            if pass >= rules::MAX_HISTORY_PASSES {
                evaluation.failures.push(rules::RuleFailure {
                    rule: "(history)".into(),
                    error: format!(
                        "the rules asked history {} rounds of questions without deciding; counted as no match",
                        rules::MAX_HISTORY_PASSES
                    ),
                });
                evaluation.wanted.clear();
                return Ok(evaluation);
            }
            for call in std::mem::take(&mut evaluation.wanted) {
                let answer = self.ask_history(&call, now).await?;
                history.insert(call, answer);
            }
        }
    }

    /// One history question of a rule, answered by the store.
    pub(super) async fn ask_history(
        &self,
        call: &rules::HistoryCall,
        now: jiff::Timestamp,
    ) -> ServiceResult<rules::HistoryAnswer> {
        use rules::{HistoryAnswer, HistoryCall};
        let now = now.as_millisecond();
        Ok(match call {
            HistoryCall::ApprovedIn {
                workflow,
                param,
                value,
            } => HistoryAnswer::Bool(self.store.approved_with(workflow, param, value).await?),
            HistoryCall::CountRequests {
                workflow,
                within_ms,
            } => HistoryAnswer::Count(
                self.store
                    .count_created(workflow, now.saturating_sub(*within_ms))
                    .await?,
            ),
            HistoryCall::CountDenials {
                workflow,
                within_ms,
            } => HistoryAnswer::Count(
                self.store
                    .count_denied(workflow, now.saturating_sub(*within_ms))
                    .await?,
            ),
        })
    }
}

/// A digest of what a create call asked for, to catch an idempotency key reused for another body.
fn fingerprint(input: &CreateInput) -> String {
    let canonical = serde_json::to_vec(input).unwrap_or_default();
    hex::encode(Sha256::digest(&canonical))
}

/// The params approvers may edit on a request: those its own `editable` names (each must be
/// one its workflow's `editable` allows, and a string, number or boolean param it has), or else
/// those of the workflow's `editable` that it has.
fn editable_of(
    workflow: &Workflow,
    asked: Option<&[String]>,
    params: &Params,
) -> ServiceResult<Vec<String>> {
    let Some(asked) = asked else {
        return Ok(workflow
            .editable
            .iter()
            .filter(|e| {
                crate::domain::editable_param(e)
                    .and_then(|p| params.get(p))
                    .is_some_and(crate::domain::is_editable_value)
            })
            .cloned()
            .collect());
    };
    let mut out: Vec<String> = Vec::with_capacity(asked.len());
    for entry in asked {
        if !workflow.editable.contains(entry) {
            return Err(ServiceError::Editable {
                code: "editable_not_allowed",
                message: format!(
                    "workflow {:?} does not let approvers edit {entry:?} (its editable: {:?})",
                    workflow.name.as_str(),
                    workflow.editable
                ),
            });
        }
        let value = crate::domain::editable_param(entry).and_then(|p| params.get(p));
        match value {
            None => {
                return Err(ServiceError::Editable {
                    code: "invalid_editable",
                    message: format!("editable names {entry:?}, but the request has no such param"),
                });
            }
            Some(v) if !crate::domain::is_editable_value(v) => {
                return Err(ServiceError::Editable {
                    code: "invalid_editable",
                    message: format!(
                        "{entry:?} is not a number, a boolean or a string of at most 3000 characters, so it cannot be edited in Slack"
                    ),
                });
            }
            Some(_) if out.contains(entry) => {}
            Some(_) => out.push(entry.clone()),
        }
    }
    Ok(out)
}
