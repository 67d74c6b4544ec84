//! The worker's GitHub job: the review of a deployment held by greenlight's custom deployment
//! protection rule (`[github]`), or its one status report while it waits. It buys an
//! installation token with the App JWT (kept until 5 minutes before it expires), checks that
//! the deployment's callback URL is under `api_url`, and posts there.

use std::collections::HashMap;

use super::{Outcome, WAIT_FOR_POST_MS, Worker};
use crate::domain::github::{self, GithubLink, ReviewState};
use crate::domain::{Millis, Request, RequestId, Status};
use crate::policy::github::{AppKey, under_api_url};
use crate::store::Job;

/// The name a review's result has among the request's action results.
pub const REVIEW_NAME: &str = "GitHub review";

/// A token is used until this long before it expires.
const TOKEN_MARGIN_MS: Millis = 5 * 60 * 1000;

/// How long the status report waits for the Slack message to link to.
const STATUS_WAITS_FOR_POST_MS: Millis = 60_000;

/// `[github]` as the worker needs it.
pub struct GithubSettings {
    pub app_id: u64,
    pub key: AppKey,
    pub api_url: String,
    pub http: reqwest::Client,
}

impl GithubSettings {
    pub fn new(
        config: &crate::config::GithubConfig,
        timeout: std::time::Duration,
    ) -> reqwest::Result<Self> {
        Ok(Self {
            app_id: config.app_id,
            key: config.private_key.clone(),
            api_url: config.api_url.clone(),
            http: reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout.min(std::time::Duration::from_secs(5)))
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("greenlight/", env!("CARGO_PKG_VERSION")))
                .build()?,
        })
    }
}

/// Installation tokens by installation id, with when each expires.
#[derive(Default)]
pub struct Tokens(std::sync::Mutex<HashMap<u64, (String, Millis)>>);

impl Tokens {
    fn get(&self, installation: u64, now: Millis) -> Option<String> {
        let tokens = self.0.lock().unwrap_or_else(|e| e.into_inner());
        tokens
            .get(&installation)
            .filter(|(_, expires)| now < expires - TOKEN_MARGIN_MS)
            .map(|(token, _)| token.clone())
    }

    fn put(&self, installation: u64, token: String, expires: Millis) {
        let mut tokens = self.0.lock().unwrap_or_else(|e| e.into_inner());
        tokens.insert(installation, (token, expires));
    }

    fn forget(&self, installation: u64) {
        let mut tokens = self.0.lock().unwrap_or_else(|e| e.into_inner());
        tokens.remove(&installation);
    }
}

/// How a call to GitHub failed.
enum CallError {
    /// Worth trying again later.
    Transient(String),
    /// The token was refused: buy another and try again.
    Unauthorized(String),
    /// GitHub will not take it (422: the run finished, the rule was removed).
    Unprocessable(String),
    /// Never worth another try.
    Permanent(String),
}

/// GitHub's error body says why: `{"message": "..."}`.
async fn why(response: reqwest::Response) -> String {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let message = github::truncate(message.trim(), 200);
    if message.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {message}")
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else {
        "request failed".to_owned()
    }
}

impl Worker {
    /// Reviews the deployment `id` holds (`state`), or posts its status report (`None`).
    pub(super) async fn github_review(
        &self,
        job: &Job,
        id: &RequestId,
        state: Option<ReviewState>,
    ) -> Outcome {
        let now = self.now();
        let Some(gh) = &self.settings.github else {
            return Outcome::dead("[github] is not configured: nothing can review the deployment");
        };
        let request = match self.load(id).await {
            Ok(Some(r)) => r,
            Ok(None) => return Outcome::dead(format!("request {id} not found")),
            Err(e) => return self.retry_or_give_up(job, now, e.to_string()),
        };
        let Some(link) = GithubLink::of(&request) else {
            return Outcome::dead("the request holds no GitHub deployment");
        };
        if !under_api_url(&gh.api_url, &link.deployment_callback_url) {
            return Outcome::dead(format!(
                "deployment_callback_url is not under [github] api_url {}: refused",
                gh.api_url
            ));
        }
        let comment = match state {
            Some(_) => github::review_comment(&request),
            None => match self.status_report(&request, job, now) {
                Ok(comment) => comment,
                Err(outcome) => return outcome,
            },
        };
        let mut body = serde_json::json!({
            "environment_name": link.environment,
            "comment": comment,
        });
        if let Some(state) = state {
            body["state"] = state.as_str().into();
        }
        let mut result = self.post_review(gh, &link, &body, now).await;
        if let Err(CallError::Unauthorized(_)) = &result {
            // A token revoked or expired early: buy a fresh one, once.
            self.github_tokens.forget(link.installation_id);
            result = self.post_review(gh, &link, &body, now).await;
        }
        let what = state.map_or("status", ReviewState::as_str);
        let (outcome, label) = match result {
            Ok(status) => (
                Outcome::done(match state {
                    Some(s) => format!("{} (HTTP {status})", s.as_str()),
                    None => format!("status reported (HTTP {status})"),
                }),
                "done",
            ),
            Err(CallError::Unprocessable(e)) => {
                // The run is over or the rule was removed: retrying cannot help.
                tracing::warn!(request = %id, error = %e, "GitHub refused the deployment review");
                (
                    Outcome {
                        kept_error: Some(e.clone()),
                        ..Outcome::done(e)
                    },
                    "refused",
                )
            }
            Err(CallError::Permanent(e)) => (Outcome::dead(e), "dead"),
            Err(CallError::Transient(e) | CallError::Unauthorized(e)) => {
                (self.retry_or_give_up(job, now, e), "retry")
            }
        };
        metrics::counter!("greenlight_github_reviews_total", "state" => what, "outcome" => label)
            .increment(1);
        outcome
    }

    /// The status report's comment, once the message is posted (or has waited long enough).
    #[allow(clippy::result_large_err)] // an Outcome, built once per job: not worth a Box
    fn status_report(&self, request: &Request, job: &Job, now: Millis) -> Result<String, Outcome> {
        if request.status != Status::Pending {
            // Decided meanwhile: the review says so.
            return Err(Outcome::done("decided before the status report"));
        }
        let waiting = github::review_comment(request);
        match &request.slack {
            Some(slack) => Ok(github::truncate(
                &format!(
                    "{waiting}: https://slack.com/archives/{}/p{}",
                    slack.channel,
                    slack.ts.replace('.', "")
                ),
                github::MAX_COMMENT_CHARS,
            )),
            None if now - job.created_at < STATUS_WAITS_FOR_POST_MS => Err(Outcome::wait(
                now + WAIT_FOR_POST_MS,
                "waiting for the Slack message to link to",
            )),
            None => Ok(waiting),
        }
    }

    async fn post_review(
        &self,
        gh: &GithubSettings,
        link: &GithubLink,
        body: &serde_json::Value,
        now: Millis,
    ) -> Result<u16, CallError> {
        let token = self
            .installation_token(gh, link.installation_id, now)
            .await?;
        let response = gh
            .http
            .post(&link.deployment_callback_url)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .map_err(|e| CallError::Transient(describe(&e)))?;
        let status = response.status().as_u16();
        match status {
            200..=299 => Ok(status),
            401 => Err(CallError::Unauthorized(why(response).await)),
            422 => Err(CallError::Unprocessable(why(response).await)),
            _ => Err(CallError::Transient(why(response).await)),
        }
    }

    /// An installation token: the cached one until 5 minutes before it expires, else a new
    /// one bought with the App JWT.
    async fn installation_token(
        &self,
        gh: &GithubSettings,
        installation: u64,
        now: Millis,
    ) -> Result<String, CallError> {
        if let Some(token) = self.github_tokens.get(installation, now) {
            return Ok(token);
        }
        let jwt = gh
            .key
            .app_jwt(gh.app_id, now / 1000)
            .map_err(|e| CallError::Permanent(format!("cannot sign the App JWT: {e}")))?;
        let url = format!(
            "{}/app/installations/{installation}/access_tokens",
            gh.api_url
        );
        let response = gh
            .http
            .post(&url)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .bearer_auth(jwt)
            .send()
            .await
            .map_err(|e| CallError::Transient(format!("installation token: {}", describe(&e))))?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let e = format!("installation token: {}", why(response).await);
            // 404: the App is not installed there (any more); 401: the App's key or id is
            // wrong. Either may be fixed by the operator, so keep trying within the limits.
            return Err(if status == 422 {
                CallError::Permanent(e)
            } else {
                CallError::Transient(e)
            });
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            token: String,
            expires_at: jiff::Timestamp,
        }
        let answer: Answer = response.json().await.map_err(|_| {
            CallError::Transient("installation token: the answer is not {token, expires_at}".into())
        })?;
        metrics::counter!("greenlight_github_installation_tokens_total").increment(1);
        let expires = answer.expires_at.as_millisecond();
        self.github_tokens
            .put(installation, answer.token.clone(), expires);
        Ok(answer.token)
    }
}
