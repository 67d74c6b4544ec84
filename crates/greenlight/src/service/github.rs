//! GitHub's `deployment_protection_rule` webhook as a use case: the deployment becomes a
//! request in the workflow its `[[github.environment]]` names, once per run and environment
//! however often GitHub delivers it. The HTTP adapter has checked the signature already; the
//! review itself is an outbox job (`Effect::GithubReview`), planned in `effects.rs`.

use serde::Deserialize;

use super::{CreateInput, Service};
use crate::domain::github::{self, GithubLink};
use crate::domain::{Params, RequestId};
use crate::store::{ApiKey, NewAudit, Scope};

/// The fields of a `deployment_protection_rule` webhook greenlight reads (GitHub's "Webhook
/// events and payloads").
#[derive(Debug, Deserialize)]
pub struct ProtectionRuleEvent {
    pub action: String,
    pub environment: Option<String>,
    /// What set off the deployment: `push`, `workflow_dispatch`, ...
    pub event: Option<String>,
    pub sha: Option<String>,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub deployment_callback_url: Option<String>,
    pub deployment: Option<Deployment>,
    pub repository: Option<Repository>,
    pub installation: Option<Installation>,
    pub sender: Option<User>,
}

#[derive(Debug, Deserialize)]
pub struct Deployment {
    pub creator: Option<User>,
    pub sha: Option<String>,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Repository {
    pub full_name: String,
    pub html_url: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Installation {
    pub id: u64,
}

#[derive(Debug, Deserialize)]
pub struct User {
    pub login: String,
}

/// What became of a deployment webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeploymentOutcome {
    /// A request was created for it.
    Created(RequestId),
    /// An earlier delivery created its request already.
    Existing(RequestId),
    /// No `[[github.environment]]` maps its environment and repository.
    Unmapped,
    /// An action greenlight does nothing about.
    Ignored,
}

impl DeploymentOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            DeploymentOutcome::Created(_) => "created",
            DeploymentOutcome::Existing(_) => "redelivered",
            DeploymentOutcome::Unmapped => "unmapped",
            DeploymentOutcome::Ignored => "ignored",
        }
    }
}

/// Why a deployment webhook was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeploymentRefused {
    #[error("the deployment_protection_rule payload lacks {0}")]
    Missing(&'static str),
    #[error(
        "deployment_callback_url is not under [github] api_url {0}: refused (a forged payload cannot aim greenlight's installation token elsewhere)"
    )]
    CallbackNotAllowed(String),
    #[error("[github] is not configured")]
    NotConfigured,
    #[error(transparent)]
    Service(#[from] super::ServiceError),
}

impl DeploymentRefused {
    /// The stable code the HTTP adapter answers with.
    pub fn code(&self) -> &'static str {
        match self {
            DeploymentRefused::Missing(_) => "invalid_payload",
            DeploymentRefused::CallbackNotAllowed(_) => "callback_url_not_allowed",
            DeploymentRefused::NotConfigured => "github_not_configured",
            DeploymentRefused::Service(e) => e.code(),
        }
    }
}

/// The key GitHub's requests are made under (never stored: its id is reserved).
fn github_key(now: jiff::Timestamp) -> ApiKey {
    ApiKey {
        id: github::creator_id(),
        name: "github".to_owned(),
        scopes: vec![Scope::Request],
        created_at: now,
        revoked_at: None,
    }
}

impl Service {
    /// `[github]`: the mappings from GitHub environments to workflows.
    pub fn with_github(mut self, github: Option<crate::config::GithubConfig>) -> Self {
        self.github = github.map(std::sync::Arc::new);
        self
    }

    /// A `deployment_protection_rule` webhook, its signature checked: the deployment becomes a
    /// request (once per repository, run and environment).
    pub async fn github_deployment(
        &self,
        event: ProtectionRuleEvent,
    ) -> Result<DeploymentOutcome, DeploymentRefused> {
        let Some(config) = &self.github else {
            return Err(DeploymentRefused::NotConfigured);
        };
        if event.action != "requested" {
            return Ok(DeploymentOutcome::Ignored);
        }
        let environment = event
            .environment
            .ok_or(DeploymentRefused::Missing("environment"))?;
        let repository = event
            .repository
            .ok_or(DeploymentRefused::Missing("repository"))?;
        let installation = event
            .installation
            .ok_or(DeploymentRefused::Missing("installation"))?;
        let callback = event
            .deployment_callback_url
            .ok_or(DeploymentRefused::Missing("deployment_callback_url"))?;
        let Some(mapping) = config.mapping(&repository.full_name, &environment) else {
            tracing::info!(repository = %repository.full_name, environment = %environment, "GitHub deployment with no [[github.environment]] mapping; left alone");
            return Ok(DeploymentOutcome::Unmapped);
        };
        if !crate::policy::github::under_api_url(&config.api_url, &callback) {
            tracing::warn!(repository = %repository.full_name, environment = %environment, "GitHub deployment_callback_url outside [github] api_url refused");
            let audit = NewAudit {
                request_id: None,
                event: "github.callback_refused",
                actor: "github".into(),
                data: serde_json::json!({
                    "repository": repository.full_name,
                    "environment": environment,
                    "deployment_callback_url": callback,
                    "api_url": config.api_url,
                }),
            };
            self.store
                .record(&[audit], &[], self.now_ms())
                .await
                .map_err(super::ServiceError::from)?;
            return Err(DeploymentRefused::CallbackNotAllowed(
                config.api_url.clone(),
            ));
        }
        let run_id = crate::policy::github::run_id_of(&callback).ok_or(
            DeploymentRefused::Missing("a run id in deployment_callback_url"),
        )?;
        let deployment = event.deployment;
        let git_ref = event
            .git_ref
            .or_else(|| deployment.as_ref().and_then(|d| d.git_ref.clone()))
            .unwrap_or_default();
        let sha = event
            .sha
            .or_else(|| deployment.as_ref().and_then(|d| d.sha.clone()))
            .unwrap_or_default();
        let creator = deployment
            .and_then(|d| d.creator)
            .or(event.sender)
            .map(|u| u.login);
        let run_url = repository
            .html_url
            .as_ref()
            .map(|u| format!("{}/actions/runs/{run_id}", u.trim_end_matches('/')));
        let link = GithubLink {
            installation_id: installation.id,
            repository: repository.full_name.clone(),
            environment: environment.clone(),
            run_id,
            deployment_callback_url: callback,
        };
        let mut params = Params::new();
        params.insert("repository".into(), repository.full_name.clone().into());
        params.insert("environment".into(), environment.clone().into());
        params.insert("ref".into(), git_ref.clone().into());
        params.insert("sha".into(), sha.into());
        params.insert("run_id".into(), run_id.into());
        params.insert("run_url".into(), run_url.into());
        params.insert("event".into(), event.event.into());
        let mut metadata = serde_json::Map::new();
        metadata.insert(
            github::METADATA_KEY.into(),
            serde_json::to_value(&link).unwrap_or_default(),
        );
        let input = CreateInput {
            workflow: Some(mapping.workflow.clone()),
            title: github::truncate(
                &format!(
                    "Deploy {} {} to {}",
                    repository.full_name,
                    if git_ref.is_empty() { "?" } else { &git_ref },
                    environment
                ),
                200,
            ),
            params,
            requester: creator,
            metadata: Some(metadata),
            idempotency_key: Some(link.idempotency_key()),
            ..Default::default()
        };
        let (request, written) = self.create(input, &github_key(self.now())).await?;
        Ok(match written {
            Some(_) => DeploymentOutcome::Created(request.id),
            None => DeploymentOutcome::Existing(request.id),
        })
    }
}
