//! The tools beside the agent (`greenlight mcp`, stdio): a client of a greenlight server over
//! its HTTP API (`GREENLIGHT_URL`, `GREENLIGHT_TOKEN`), so the agent's machine needs no
//! database and no Slack credentials.

use std::time::Duration;

use async_trait::async_trait;
use rmcp::RoleServer;
use rmcp::service::RequestContext;
use serde_json::{Value, json};

use super::{Approvals, Backends, PermissionSettings, ToolFailure, ToolResult};
use crate::domain::ToolCall;
use crate::service::intake::CreateBody;

/// Longest long-poll the server takes in one call.
const SERVER_WAIT_SECS: u64 = 120;

/// The greenlight server's API, as the backend of every tool call.
#[derive(Clone)]
pub struct OverApi {
    http: reqwest::Client,
    base: String,
    token: String,
    permissions: PermissionSettings,
}

impl OverApi {
    pub fn new(base: &str, token: &str, permissions: PermissionSettings) -> reqwest::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()?,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            permissions,
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder, wait: Duration) -> ToolResult<Value> {
        let res = req
            .bearer_auth(&self.token)
            .timeout(wait + Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| {
                ToolFailure::new(
                    "unreachable",
                    format!("cannot reach greenlight at {}: {e}", self.base),
                )
            })?;
        let status = res.status();
        let body: Value = res.json().await.map_err(|e| {
            ToolFailure::new("bad_response", format!("bad response from greenlight: {e}"))
        })?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(ToolFailure::new(
                body["error"]["code"].as_str().unwrap_or("failed"),
                body["error"]["message"]
                    .as_str()
                    .unwrap_or("greenlight refused the call")
                    .to_owned(),
            ))
        }
    }
}

impl Backends for OverApi {
    fn for_call(&self, _ctx: &RequestContext<RoleServer>) -> ToolResult<Box<dyn Approvals>> {
        Ok(Box::new(self.clone()))
    }

    fn permissions(&self) -> PermissionSettings {
        self.permissions.clone()
    }

    fn agent_name(&self, ctx: &RequestContext<RoleServer>) -> Option<String> {
        super::client_name(ctx)
    }
}

#[async_trait]
impl Approvals for OverApi {
    async fn create(&self, body: CreateBody, tool_call: Option<ToolCall>) -> ToolResult<Value> {
        let body = CreateBody {
            tool_call: tool_call.or(body.tool_call),
            ..body
        };
        let req = self
            .http
            .post(format!("{}/v1/requests", self.base))
            .json(&body);
        self.send(req, Duration::ZERO).await
    }

    async fn get(&self, id: &str, wait: Option<Duration>) -> ToolResult<Value> {
        let wait = wait
            .unwrap_or_default()
            .min(Duration::from_secs(SERVER_WAIT_SECS));
        let url = format!("{}/v1/requests/{}", self.base, urlencoding::encode(id));
        let req = self.http.get(url).query(&[("wait", wait.as_secs())]);
        self.send(req, wait).await
    }

    async fn cancel(&self, id: &str, reason: Option<String>) -> ToolResult<Value> {
        let url = format!(
            "{}/v1/requests/{}/cancel",
            self.base,
            urlencoding::encode(id)
        );
        let req = self.http.post(url).json(&json!({"reason": reason}));
        self.send(req, Duration::ZERO).await
    }

    async fn pending(&self, workflow: Option<String>, limit: u32) -> ToolResult<Vec<Value>> {
        let mut query = vec![
            ("status", "pending".to_owned()),
            ("limit", limit.to_string()),
        ];
        if let Some(w) = workflow {
            query.push(("workflow", w));
        }
        let req = self
            .http
            .get(format!("{}/v1/requests", self.base))
            .query(&query);
        let page = self.send(req, Duration::ZERO).await?;
        Ok(page["requests"].as_array().cloned().unwrap_or_default())
    }
}
