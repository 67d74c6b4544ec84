//! The MCP adapter: AI agents ask a person through the Model Context Protocol. The same tools
//! run in two places: inside the server (`POST /mcp`, streamable HTTP, stateless, behind the
//! API's Bearer keys), calling the service layer directly; and as `greenlight mcp` beside the
//! agent (stdio), a client of a greenlight server over its HTTP API. Either way the server's
//! use cases decide: approvers, N-of-M, rules, expiry and audit are those of the HTTP API.
//! Imports the service and the layers below it; never `http`.

mod local;
mod remote;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, Implementation, ProtocolVersion, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::{Value, json};

pub use local::{InServer, mcp_service};
pub use remote::OverApi;

use crate::domain::{DurationSpec, FieldSpec, ToolCall};
use crate::service::intake::CreateBody;

/// Longest wait a tool call takes for a decision (clients and proxies time out around a
/// minute).
pub const MAX_TOOL_WAIT_SECS: u64 = 55;

/// What a tool call could not do: shown to the agent as a tool error with a clear message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolFailure {
    pub code: String,
    pub message: String,
}

impl ToolFailure {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

type ToolResult<T> = Result<T, ToolFailure>;

/// The approval operations the tools need, wherever the server is.
#[async_trait]
pub trait Approvals: Send + Sync {
    /// Creates a request; returns it as the API shows it.
    async fn create(&self, body: CreateBody, tool_call: Option<ToolCall>) -> ToolResult<Value>;
    /// The request; while it is pending, waits up to `wait` for its decision.
    async fn get(&self, id: &str, wait: Option<Duration>) -> ToolResult<Value>;
    async fn cancel(&self, id: &str, reason: Option<String>) -> ToolResult<Value>;
    /// Pending requests, newest first.
    async fn pending(&self, workflow: Option<String>, limit: u32) -> ToolResult<Vec<Value>>;
}

/// Where `permission_prompt` asks, and for how long it waits.
#[derive(Debug, Clone)]
pub struct PermissionSettings {
    /// The workflow (none: the server's `[mcp] permission_workflow`, else its default one).
    pub workflow: Option<String>,
    /// How long a person has (none: the server's `[mcp] permission_timeout`).
    pub timeout: Option<Duration>,
}

/// Gives each tool call its backend: the server's own service (with the caller's key from the
/// HTTP request) or a client of a remote server.
#[async_trait]
pub trait Backends: Send + Sync + 'static {
    fn for_call(&self, ctx: &RequestContext<RoleServer>) -> ToolResult<Box<dyn Approvals>>;
    fn permissions(&self) -> PermissionSettings;
    /// Who is asking, for "requested by" when the call does not say.
    fn agent_name(&self, ctx: &RequestContext<RoleServer>) -> Option<String>;
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RequestApprovalArgs {
    /// The workflow to ask in (decides the Slack channel and who may approve). Leave it out
    /// to use the server's default workflow.
    pub workflow: Option<String>,
    /// One line saying what needs a human yes, e.g. "Run terraform apply on prod".
    pub title: String,
    /// More context for the approver: what will happen, why, what could go wrong.
    pub details: Option<String>,
    /// Key facts as a flat JSON object (amount, environment, version); rules may decide on them.
    pub params: Option<serde_json::Map<String, Value>>,
    /// Who is asking (your agent's name, or the person you act for); ignored when a workload
    /// token authenticated the call (its trust policy sets it).
    pub requester: Option<String>,
    /// When the request lapses if nobody decides: seconds, or "30m", "2h".
    pub expires_in: Option<Value>,
    /// Makes a retried call return the same request instead of asking twice.
    pub idempotency_key: Option<String>,
    /// Your own JSON object kept with the request and returned with it (a run id, a
    /// tool-call id); never shown to the approver.
    pub metadata: Option<serde_json::Map<String, Value>>,
    /// Wait up to this many seconds (at most 55) for the decision before answering; 0 or
    /// absent answers at once (then poll with get_approval).
    pub wait_seconds: Option<u64>,
    /// What the approver fills in when approving (at most 10); their answers come back as
    /// `response`, e.g. [{"name": "replicas", "type": "number", "min": 1, "max": 10}].
    pub fields: Option<Vec<QuestionField>>,
}

/// A field a person fills in: text, textarea, number, select (with options) or boolean.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuestionField {
    /// The key of the answer in `response`: letters, digits, `_` and `-`.
    pub name: String,
    /// What the person reads above the input (default: the name).
    pub label: Option<String>,
    /// One of "text" (one line), "textarea", "number", "select", "boolean".
    #[serde(rename = "type")]
    pub kind: String,
    /// Must be answered (default true, except for boolean).
    pub required: Option<bool>,
    /// A select's choices.
    pub options: Option<Vec<String>>,
    /// The value the input starts with.
    pub default: Option<Value>,
    /// A number's smallest allowed value.
    pub min: Option<f64>,
    /// A number's largest allowed value.
    pub max: Option<f64>,
    /// The most characters of a text.
    pub max_length: Option<u32>,
}

impl From<QuestionField> for FieldSpec {
    fn from(f: QuestionField) -> Self {
        FieldSpec {
            name: f.name,
            label: f.label,
            kind: f.kind,
            required: f.required,
            options: f.options,
            default: f.default,
            min: f.min,
            max: f.max,
            max_length: f.max_length,
        }
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct AskQuestionArgs {
    /// The question, as the person reads it, e.g. "Which environment should I deploy to?"
    pub question: String,
    /// What to ask for (at most 10). Left out: one free-text answer, named "answer".
    pub fields: Option<Vec<QuestionField>>,
    /// The workflow to ask in (decides the channel and who may answer). Left out: the
    /// server's [mcp] permission_workflow, else its default workflow.
    pub workflow: Option<String>,
    /// Wait up to this many seconds (at most 55) for the answer; absent or 0 answers at once
    /// (then wait with get_approval).
    pub wait_seconds: Option<u64>,
    /// Your own JSON object kept with the question and returned with it; never shown.
    pub metadata: Option<serde_json::Map<String, Value>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct GetApprovalArgs {
    /// The request_id that request_approval returned.
    pub request_id: String,
    /// While it is pending, wait up to this many seconds (at most 55) for the decision.
    pub wait_seconds: Option<u64>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct CancelApprovalArgs {
    /// The request to withdraw (only one you created).
    pub request_id: String,
    /// Why it is no longer needed; shown on the Slack message.
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ListPendingArgs {
    /// Only this workflow's requests.
    pub workflow: Option<String>,
    /// How many, newest first (1-100, default 20).
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct PermissionPromptArgs {
    /// The tool the agent wants to run, e.g. "Bash" or "mcp__github__create_pull_request".
    pub tool_name: String,
    /// The input the tool would run with.
    pub input: serde_json::Map<String, Value>,
    /// The id of this tool use, if the agent has one.
    pub tool_use_id: Option<String>,
}

/// The MCP server: the tools, over whichever backend.
#[derive(Clone)]
pub struct GreenlightMcp {
    backends: Arc<dyn Backends>,
    tool_router: ToolRouter<GreenlightMcp>,
}

fn wait_of(seconds: Option<u64>) -> Option<Duration> {
    seconds
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(s.min(MAX_TOOL_WAIT_SECS)))
}

/// A request as a tool returns it: the API's view with its id as `request_id`.
fn approval(mut request: Value) -> Value {
    if let Some(id) = request.get("id").cloned() {
        request["request_id"] = id;
    }
    if let Some(obj) = request.as_object_mut() {
        // What the outbox did is the server's business, not the agent's.
        obj.remove("delivery");
        obj.remove("actions");
    }
    request
}

fn answer(result: ToolResult<Value>) -> CallToolResult {
    match result {
        Ok(v) => CallToolResult::structured(v),
        Err(f) => failed(&f),
    }
}

fn failed(f: &ToolFailure) -> CallToolResult {
    CallToolResult::structured_error(json!({"error": {"code": f.code, "message": f.message}}))
}

/// The agent's name, from the client's MCP handshake (over stdio, where there is one).
pub fn client_name(ctx: &RequestContext<RoleServer>) -> Option<String> {
    ctx.peer
        .peer_info()
        .map(|info| info.client_info.name.clone())
        .filter(|n| !n.trim().is_empty())
        .map(|n| n.chars().take(100).collect())
}

/// The name of who decided, as a person reads it: `@alice` for a click, the key's or rule's
/// name otherwise.
fn decider(request: &Value) -> String {
    let last = request["decisions"]
        .as_array()
        .and_then(|d| d.last())
        .cloned()
        .unwrap_or_default();
    match (last["name"].as_str(), request["decided_by"].as_str()) {
        (Some(name), _) => format!("@{name}"),
        (None, Some(by)) => by.to_owned(),
        (None, None) => "someone".to_owned(),
    }
}

/// Claude Code's `--permission-prompt-tool` answer for a request that is no longer pending.
pub fn permission_answer(request: &Value, input: &serde_json::Map<String, Value>) -> Value {
    let reason = request["reason"]
        .as_str()
        .filter(|r| !r.is_empty())
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    match request["status"].as_str() {
        // The input as approved: with a person's edits when the server let them edit it.
        Some("approved") => match request["tool_call"]["approved_input"].as_object() {
            Some(edited) => json!({"behavior": "allow", "updatedInput": edited}),
            None => json!({"behavior": "allow", "updatedInput": input}),
        },
        Some("denied") => {
            json!({"behavior": "deny", "message": format!("Denied by {}{reason}", decider(request))})
        }
        Some("expired") => json!({"behavior": "deny",
            "message": format!("Nobody decided in time: the request expired{reason}")}),
        Some("cancelled") => json!({"behavior": "deny",
            "message": format!("Cancelled by {}{reason}", request["decided_by"].as_str().unwrap_or("someone"))}),
        _ => json!({"behavior": "deny", "message": "No decision was made in time"}),
    }
}

/// Creates a request and, with `wait_seconds`, waits for its decision while it is pending.
async fn create_and_wait(
    backend: &dyn Approvals,
    body: CreateBody,
    wait_seconds: Option<u64>,
) -> ToolResult<Value> {
    let created = backend.create(body, None).await?;
    match (wait_of(wait_seconds), created["status"].as_str()) {
        (Some(wait), Some("pending")) => {
            let id = created["id"].as_str().unwrap_or_default().to_owned();
            backend.get(&id, Some(wait)).await
        }
        _ => Ok(created),
    }
}

#[tool_router]
impl GreenlightMcp {
    pub fn new(backends: Arc<dyn Backends>) -> Self {
        Self {
            backends,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "Ask a human to approve an action before you take it. Posts the request to Slack with Approve and Deny buttons for the right people. Returns at once with request_id and status (\"pending\", or \"approved\"/\"denied\" if a rule decided), or, with wait_seconds, waits up to that long (at most 55 s) for the decision. Do not proceed unless status is \"approved\"; if it is still \"pending\", call get_approval to keep waiting."
    )]
    async fn request_approval(
        &self,
        Parameters(args): Parameters<RequestApprovalArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let backend = match self.backends.for_call(&ctx) {
            Ok(b) => b,
            Err(f) => return Ok(failed(&f)),
        };
        let expires_in = match args.expires_in.map(serde_json::from_value::<DurationSpec>) {
            None => None,
            Some(Ok(d)) => Some(d),
            Some(Err(e)) => {
                return Ok(failed(&ToolFailure::new("invalid_request", e.to_string())));
            }
        };
        let body = CreateBody {
            workflow: args.workflow,
            title: Some(args.title),
            details: args.details,
            params: args.params.map(|p| p.into_iter().collect()),
            requester: args.requester.or_else(|| self.backends.agent_name(&ctx)),
            expires_in,
            idempotency_key: args.idempotency_key,
            metadata: args.metadata.map(Value::Object),
            fields: args
                .fields
                .map(|f| f.into_iter().map(FieldSpec::from).collect()),
            ..Default::default()
        };
        let result = create_and_wait(backend.as_ref(), body, args.wait_seconds).await;
        Ok(answer(result.map(approval)))
    }

    #[tool(
        description = "Ask a human a question in Slack and get typed answers back: which environment, what the commit message should say, how many replicas. The message has one Answer button that opens a form with your fields (one free-text field named \"answer\" when you give none). Returns request_id and status; once answered, status is \"approved\" and `response` holds the answers by field name (numbers as numbers, booleans as booleans). With wait_seconds it waits up to that long (at most 55 s); if still \"pending\", call get_approval to keep waiting."
    )]
    async fn ask_question(
        &self,
        Parameters(args): Parameters<AskQuestionArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let backend = match self.backends.for_call(&ctx) {
            Ok(b) => b,
            Err(f) => return Ok(failed(&f)),
        };
        let question = args.question.trim().to_owned();
        // The title holds 200 characters; a longer question is shown whole under it.
        let (title, details) = if question.chars().count() > 200 {
            let cut: String = question.chars().take(199).collect();
            (format!("{cut}…"), Some(question))
        } else {
            (question, None)
        };
        let fields = match args.fields.filter(|f| !f.is_empty()) {
            Some(fields) => fields.into_iter().map(FieldSpec::from).collect(),
            None => vec![FieldSpec {
                name: "answer".into(),
                label: Some("Answer".into()),
                kind: "textarea".into(),
                ..FieldSpec::default()
            }],
        };
        let body = CreateBody {
            workflow: args.workflow,
            title: Some(title),
            details,
            requester: self.backends.agent_name(&ctx),
            metadata: args.metadata.map(Value::Object),
            fields: Some(fields),
            buttons: Some("answer".into()),
            ..Default::default()
        };
        let result = create_and_wait(backend.as_ref(), body, args.wait_seconds).await;
        Ok(answer(result.map(approval)))
    }

    #[tool(
        description = "Look up an approval request by request_id: its status (pending, approved, denied, expired, cancelled), who decided, the reason they gave, and your metadata. With wait_seconds it waits (at most 55 s) while the request is pending, so call it in a loop to wait longer."
    )]
    async fn get_approval(
        &self,
        Parameters(args): Parameters<GetApprovalArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let backend = match self.backends.for_call(&ctx) {
            Ok(b) => b,
            Err(f) => return Ok(failed(&f)),
        };
        let got = backend
            .get(&args.request_id, wait_of(args.wait_seconds))
            .await;
        Ok(answer(got.map(approval)))
    }

    #[tool(
        description = "Withdraw an approval request you made and no longer need (its Slack message loses its buttons). Fails if it was already decided."
    )]
    async fn cancel_approval(
        &self,
        Parameters(args): Parameters<CancelApprovalArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let backend = match self.backends.for_call(&ctx) {
            Ok(b) => b,
            Err(f) => return Ok(failed(&f)),
        };
        let cancelled = backend.cancel(&args.request_id, args.reason).await;
        Ok(answer(cancelled.map(approval)))
    }

    #[tool(
        description = "List approval requests still waiting for a human decision, newest first, optionally of one workflow."
    )]
    async fn list_pending_approvals(
        &self,
        Parameters(args): Parameters<ListPendingArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let backend = match self.backends.for_call(&ctx) {
            Ok(b) => b,
            Err(f) => return Ok(failed(&f)),
        };
        let limit = args.limit.unwrap_or(20).clamp(1, 100);
        let listed = backend
            .pending(args.workflow, limit)
            .await
            .map(|all| json!({"approvals": all.into_iter().map(approval).collect::<Vec<_>>()}));
        Ok(answer(listed))
    }

    #[tool(
        description = "Permission prompt for coding agents (Claude Code's --permission-prompt-tool): asks a human in Slack whether the agent may run tool_name with this input, waits for the decision, and answers with JSON text: {\"behavior\":\"allow\",\"updatedInput\":...} or {\"behavior\":\"deny\",\"message\":...}."
    )]
    async fn permission_prompt(
        &self,
        Parameters(args): Parameters<PermissionPromptArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let backend = match self.backends.for_call(&ctx) {
            Ok(b) => b,
            Err(f) => return Ok(failed(&f)),
        };
        let settings = self.backends.permissions();
        let mut metadata = serde_json::Map::new();
        if let Some(id) = &args.tool_use_id {
            metadata.insert("tool_use_id".into(), Value::String(id.clone()));
        }
        let agent = self.backends.agent_name(&ctx);
        let body = CreateBody {
            workflow: settings.workflow.clone(),
            title: Some(
                format!(
                    "Allow {} to run {}",
                    agent.as_deref().unwrap_or("an agent"),
                    args.tool_name
                )
                .chars()
                .take(200)
                .collect(),
            ),
            requester: agent,
            expires_in: settings
                .timeout
                .and_then(|t| DurationSpec::from_secs(t.as_secs().max(1)).ok()),
            // A retried prompt for the same tool use finds the same request.
            idempotency_key: args
                .tool_use_id
                .as_ref()
                .map(|id| format!("permission-prompt:{id}")),
            metadata: (!metadata.is_empty()).then_some(Value::Object(metadata)),
            ..Default::default()
        };
        let call = ToolCall {
            name: args.tool_name.clone(),
            input: Value::Object(args.input.clone()),
            approved_input: None,
        };
        let decided = async {
            let created = backend.create(body, Some(call)).await?;
            let id = created["id"].as_str().unwrap_or_default().to_owned();
            // Wait until the request expires (the server set when), and a little longer for
            // its expiry to be recorded.
            let expires_in = created["expires_at"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(|at| {
                    let ms = at.as_millisecond() - jiff::Timestamp::now().as_millisecond();
                    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
                });
            let timeout = expires_in
                .or(settings.timeout)
                .unwrap_or(Duration::from_secs(600));
            let deadline = tokio::time::Instant::now() + timeout + Duration::from_secs(5);
            let mut request = created;
            while request["status"] == "pending" {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                request = backend
                    .get(&id, Some(left.min(Duration::from_secs(50))))
                    .await?;
            }
            Ok::<_, ToolFailure>(request)
        }
        .await;
        Ok(match decided {
            // The contract: one text content holding the JSON answer.
            Ok(request) => {
                let verdict = permission_answer(&request, &args.input);
                CallToolResult::success(vec![rmcp::model::ContentBlock::text(verdict.to_string())])
            }
            Err(f) => failed(&f),
        })
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for GreenlightMcp {
    fn get_info(&self) -> ServerConfig {
        let mut implementation = Implementation::new("greenlight", env!("CARGO_PKG_VERSION"));
        implementation.title = Some("greenlight: human approval in Slack".to_owned());
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(implementation)
            .with_protocol_version(ProtocolVersion::LATEST)
            .with_instructions(
                "Ask a human for a yes before risky steps: request_approval (then get_approval to wait), cancel_approval, list_pending_approvals; ask_question asks a person a question and returns their typed answers; permission_prompt answers a coding agent's permission question.",
            )
    }
}
