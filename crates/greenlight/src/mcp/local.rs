//! The tools inside the server (`POST /mcp`): each call runs as the API key the HTTP request
//! carried (checked, with its scopes, before any MCP message is read), through the same use
//! cases as the HTTP API.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rmcp::RoleServer;
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{Approvals, Backends, GreenlightMcp, PermissionSettings, ToolFailure, ToolResult};
use crate::domain::{RequestId, Status, ToolCall};
use crate::service::identity::Verified;
use crate::service::intake::CreateBody;
use crate::service::{Service, ServiceError};
use crate::store::{ApiKey, ListFilter, Scope};

/// Backends for tool calls that arrive over HTTP: the service, as the caller's key.
pub struct InServer {
    service: Arc<Service>,
    permissions: PermissionSettings,
}

impl InServer {
    pub fn new(service: Arc<Service>, permissions: PermissionSettings) -> Self {
        Self {
            service,
            permissions,
        }
    }
}

impl Backends for InServer {
    fn for_call(&self, ctx: &RequestContext<RoleServer>) -> ToolResult<Box<dyn Approvals>> {
        let key = ctx
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<ApiKey>())
            .cloned()
            .ok_or_else(|| ToolFailure::new("unauthorized", "no API key came with this call"))?;
        let token = ctx
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Arc<Verified>>())
            .cloned();
        Ok(Box::new(AsKey {
            service: self.service.clone(),
            key,
            token,
        }))
    }

    fn permissions(&self) -> PermissionSettings {
        self.permissions.clone()
    }

    /// Over stateless HTTP there is no handshake to read a name from: the API key's name says
    /// who is asking.
    fn agent_name(&self, ctx: &RequestContext<RoleServer>) -> Option<String> {
        ctx.extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<ApiKey>())
            .map(|key| key.name.clone())
    }
}

/// The MCP endpoint as a service to mount in the HTTP router (which authenticates first).
/// Stateless: any replica answers any call.
pub fn mcp_service(
    service: Arc<Service>,
    permissions: PermissionSettings,
    shutdown: CancellationToken,
) -> StreamableHttpService<GreenlightMcp, NeverSessionManager> {
    let backends: Arc<dyn Backends> = Arc::new(InServer::new(service, permissions));
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_cancellation_token(shutdown)
        // Every call carries an API key, which a page rebinding DNS to this host lacks: the
        // Host check is for servers without authentication.
        .disable_allowed_hosts();
    StreamableHttpService::new(
        move || Ok(GreenlightMcp::new(backends.clone())),
        Arc::new(NeverSessionManager::default()),
        config,
    )
}

struct AsKey {
    service: Arc<Service>,
    key: ApiKey,
    /// The workload token that authenticated the call, if one did.
    token: Option<Arc<Verified>>,
}

fn failure(e: ServiceError) -> ToolFailure {
    if let ServiceError::Store(store) = &e {
        if store.is_unavailable() {
            crate::store::log_unavailable(store);
            return ToolFailure::new(
                "storage_unavailable",
                "the database cannot take writes right now (disk full or failing); nothing was changed: try again later",
            );
        }
        tracing::error!(error = %store, "an MCP call hit a database error");
        return ToolFailure::new("internal", "internal error; see the server log");
    }
    ToolFailure::new(e.code(), e.to_string())
}

impl AsKey {
    fn require(&self, scope: Scope) -> ToolResult<()> {
        if self.key.allows(scope) {
            Ok(())
        } else {
            Err(ToolFailure::new(
                "forbidden",
                format!("this API key lacks the {:?} scope", scope.as_str()),
            ))
        }
    }

    fn view(&self, request: &crate::domain::Request) -> ToolResult<Value> {
        serde_json::to_value(self.service.shown(request, &self.key))
            .map_err(|e| ToolFailure::new("internal", e.to_string()))
    }
}

fn request_id(raw: &str) -> ToolResult<RequestId> {
    raw.parse()
        .map_err(|_| ToolFailure::new("not_found", format!("no request {raw:?}")))
}

#[async_trait]
impl Approvals for AsKey {
    async fn create(&self, body: CreateBody, tool_call: Option<ToolCall>) -> ToolResult<Value> {
        self.require(Scope::Request)?;
        let body = CreateBody {
            tool_call: tool_call.or(body.tool_call),
            ..body
        };
        let mut input = body
            .into_input(None)
            .map_err(|e| ToolFailure::new(e.code, e.message))?;
        input.token = self.token.clone();
        let (request, _) = self
            .service
            .create(input, &self.key)
            .await
            .map_err(failure)?;
        self.view(&request)
    }

    async fn get(&self, id: &str, wait: Option<Duration>) -> ToolResult<Value> {
        self.require(Scope::Read)?;
        let id = request_id(id)?;
        let request = match wait {
            Some(wait) => self.service.wait(&id, wait).await,
            None => self.service.get(&id).await,
        }
        .map_err(failure)?;
        self.view(&request)
    }

    async fn cancel(&self, id: &str, reason: Option<String>) -> ToolResult<Value> {
        self.require(Scope::Request)?;
        let id = request_id(id)?;
        let reason = crate::service::intake::non_empty("reason", reason, 1000)
            .map_err(|e| ToolFailure::new(e.code, e.message))?;
        let request = self
            .service
            .cancel(&id, &self.key, reason)
            .await
            .map_err(failure)?;
        self.view(&request)
    }

    async fn pending(&self, workflow: Option<String>, limit: u32) -> ToolResult<Vec<Value>> {
        self.require(Scope::Read)?;
        let workflow =
            workflow
                .map(|w| w.parse())
                .transpose()
                .map_err(|e: crate::domain::IdError| {
                    ToolFailure::new("unknown_workflow", e.to_string())
                })?;
        let found = self
            .service
            .store()
            .list_requests(&ListFilter {
                status: Some(Status::Pending),
                workflow,
                before: None,
                limit,
            })
            .await
            .map_err(|e| failure(e.into()))?;
        found.iter().map(|r| self.view(r)).collect()
    }
}
