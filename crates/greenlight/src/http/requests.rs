//! `/v1/requests`: what machines call.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::Caller;
use super::error::{ApiBytes, ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::domain::{DecisionKind, RequestId, Status, Verdict, Vote, key_actor};
use crate::service::intake::CreateBody;
use crate::service::stages::ApiRequest;
use crate::service::{CreateInput, VoteResult};
use crate::store::{ActionResult, Delivery, ListFilter, Scope};

/// Longest single long-poll; clients loop for longer waits (the CLI does).
pub const MAX_WAIT_SECS: u64 = 120;

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_request", message)
}

fn non_empty(field: &str, value: Option<String>, max: usize) -> Result<Option<String>, ApiError> {
    crate::service::intake::non_empty(field, value, max).map_err(ApiError::from)
}

fn parse_create(body: CreateBody, headers: &HeaderMap) -> Result<CreateInput, ApiError> {
    let header_key = match headers.get("idempotency-key") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| invalid("Idempotency-Key must be visible ASCII"))?
                .to_owned(),
        ),
        None => None,
    };
    Ok(body.into_input(header_key)?)
}

/// `POST /v1/requests`: asks for a decision. Rules may decide it at once; otherwise it is
/// posted to its workflow's channel and waits for people.
#[utoipa::path(
    post,
    path = "/v1/requests",
    tag = "requests",
    operation_id = "create_request",
    security(("api_key" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeating a create with the same key returns the same request (200) instead of a new one")),
    request_body = CreateBody,
    responses(
        (status = 201, description = "Created (decided at once when a rule matched)", body = RequestView),
        (status = 200, description = "The request this Idempotency-Key already created", body = RequestView),
        (status = 400, description = "Invalid input, unknown workflow, or a callback URL that is not allowed", body = ErrorBody),
        (status = 401, description = "No API key or a wrong one", body = ErrorBody),
        (status = 403, description = "The key lacks the `request` scope", body = ErrorBody),
        (status = 422, description = "The Idempotency-Key was used with a different body", body = ErrorBody),
        (status = 429, description = "Over the key's rate limit (see `Retry-After`)", body = ErrorBody),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let key = caller.require(Scope::Request)?;
    let mut input = parse_create(body, &headers)?;
    caller.stamp(&mut input);
    if let Some(url) = &input.callback_url
        && !state.service.allow_private_targets()
    {
        let parsed = reqwest::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
        crate::delivery::outbound::check_url(&parsed)
            .await
            .map_err(|e| {
                ApiError::bad_request(
                    "callback_url_not_allowed",
                    format!("callback_url is not allowed: {e}"),
                )
            })?;
    }
    let (request, written) = state.service.create(input, key).await?;
    let (status, view) = match written {
        // Fresh: its deliveries are the jobs it just wrote, and no action has run yet.
        Some(delivery) => (
            StatusCode::CREATED,
            RequestView {
                receipt: state.service.receipt(&request).await?,
                request: state.service.shown(&request, key),
                github: github_view(&request, &[]),
                delivery,
                actions: Vec::new(),
            },
        ),
        None => (StatusCode::OK, full_view(&state, &request, key).await?),
    };
    Ok((status, Json(view)).into_response())
}

/// The request with its deliveries and action results, as GET shows it.
async fn full_view(
    state: &AppState,
    request: &crate::domain::Request,
    key: &crate::store::ApiKey,
) -> Result<RequestView, ApiError> {
    let actions = state.service.store().action_results(&request.id).await?;
    Ok(RequestView {
        receipt: state.service.receipt(request).await?,
        request: state.service.shown(request, key),
        delivery: state.service.store().deliveries(&request.id).await?,
        github: github_view(request, &actions),
        actions,
    })
}

/// The GitHub deployment a request holds, and where its review stands: the last review's
/// result among the action results, else pending.
fn github_view(request: &crate::domain::Request, actions: &[ActionResult]) -> Option<GithubView> {
    use crate::domain::github::{GithubLink, Review};
    let link = GithubLink::of(request)?;
    let review = match actions
        .iter()
        .rev()
        .find(|a| a.name == crate::delivery::REVIEW_NAME)
    {
        None => Review::Pending,
        Some(a) if !a.ok => Review::Failed,
        Some(a) if a.summary.starts_with("approved") => Review::Approved,
        Some(_) => Review::Rejected,
    };
    Some(GithubView {
        repository: link.repository,
        run_id: link.run_id,
        environment: link.environment,
        review,
    })
}

/// The GitHub deployment a request stands for (`[github]`), and its review.
#[derive(Debug, Serialize, ToSchema)]
pub struct GithubView {
    /// `owner/name`.
    pub repository: String,
    pub run_id: u64,
    pub environment: String,
    /// `pending` until greenlight has reviewed the deployment; `failed` when GitHub refused the
    /// review (the run was over) or it could not be delivered.
    pub review: crate::domain::github::Review,
}

/// A request with what happened to its side effects, as `GET /v1/requests/{id}` and a create
/// show it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestView {
    #[serde(flatten)]
    pub request: ApiRequest,
    /// Its Slack posts, callbacks and hooks: state, attempts, last error.
    pub delivery: Vec<Delivery>,
    /// What its action hooks did.
    pub actions: Vec<ActionResult>,
    /// The GitHub deployment it holds, for a request made by `POST /github/webhook`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub github: Option<GithubView>,
    /// Once decided: the signed decision receipt, a compact JWS (EdDSA) an executor can check
    /// itself against `/.well-known/jwks.json` (see `GET /v1/requests/{id}/receipt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
}

/// `{"receipt": "<jws>"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiptView {
    /// A compact JWS (EdDSA, Ed25519) whose claims are `iss`, `sub` (the request id), `iat`,
    /// `exp`, `workflow`, `status`, `decided_by`, `decided_at`, `params_sha256` (hex SHA-256
    /// of `params` as RFC 8785 canonical JSON) and `requester`; the header's `kid` names its
    /// key in `/.well-known/jwks.json`.
    pub receipt: String,
}

/// `GET /v1/requests/{id}/receipt`: the signed receipt of a decided request.
#[utoipa::path(
    get,
    path = "/v1/requests/{id}/receipt",
    tag = "requests",
    operation_id = "get_receipt",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The request's id (`req_...`)")),
    responses(
        (status = 200, description = "The receipt", body = ReceiptView),
        (status = 401, description = "No API key or a wrong one", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        (status = 404, description = "No such request (`not_found`), or it is still pending (`not_decided`)", body = ErrorBody),
    ),
)]
pub async fn receipt(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let id = parse_id(&id)?;
    let request = state.service.get(&id).await?;
    match state.service.receipt(&request).await? {
        Some(receipt) => Ok(Json(ReceiptView { receipt }).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_decided",
            format!("request {id} is still pending: its receipt is signed when it is decided"),
        )),
    }
}

/// A page of requests, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestPage {
    pub requests: Vec<ApiRequest>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

fn parse_id(raw: &str) -> Result<RequestId, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no request {raw:?}"),
        )
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GetQuery {
    /// Long-poll: wait up to this many seconds while the request is pending (a longer
    /// wait is cut to 120; loop for longer).
    #[param(minimum = 0)]
    wait: Option<i64>,
}

impl GetQuery {
    /// How long the long-poll waits, if it is one.
    fn wait(&self) -> Result<Option<Duration>, ApiError> {
        let secs = self.wait.map(u64::try_from).transpose().map_err(|_| {
            ApiError::bad_request("invalid_query", "wait must be 0 or more seconds")
        })?;
        Ok(secs
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(s.min(MAX_WAIT_SECS))))
    }
}

/// The wait `GET /v1/requests/{id}` will take for this URI's query, read as its handler reads
/// it (`?wai%74=10` is `wait=10`); none when it is no long-poll or its query is refused.
pub fn long_poll_wait(uri: &axum::http::Uri) -> Option<Duration> {
    axum::extract::Query::<GetQuery>::try_from_uri(uri)
        .ok()?
        .wait()
        .ok()?
}

/// `GET /v1/requests/{id}`: a request, its deliveries and its action results; with `wait`, a
/// long-poll that returns as soon as it is decided.
#[utoipa::path(
    get,
    path = "/v1/requests/{id}",
    tag = "requests",
    operation_id = "get_request",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The request's id (`req_...`)"), GetQuery),
    responses(
        (status = 200, description = "The request (still pending when the wait ran out)", body = RequestView),
        (status = 401, description = "No API key or a wrong one", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        (status = 404, description = "No such request", body = ErrorBody),
        (status = 429, description = "Too many long-polls waiting", body = ErrorBody),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<GetQuery>,
) -> Result<Response, ApiError> {
    let key = caller.require(Scope::Read)?;
    let id = parse_id(&id)?;
    let request = match q.wait()? {
        Some(wait) => state.service.wait(&id, wait).await?,
        None => state.service.get(&id).await?,
    };
    Ok(Json(full_view(&state, &request, key).await?).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only requests in this state.
    #[param(value_type = Option<Status>)]
    status: Option<String>,
    /// Only requests of this workflow.
    workflow: Option<String>,
    /// Page size, 1-200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = r"^req_[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")]
    cursor: Option<String>,
}

/// `GET /v1/requests`: requests, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/requests",
    tag = "requests",
    operation_id = "list_requests",
    security(("api_key" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page of requests", body = RequestPage),
        (status = 400, description = "An invalid filter, limit or cursor", body = ErrorBody),
        (status = 401, description = "No API key or a wrong one", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let key = caller.require(Scope::Read)?;
    let status = q
        .status
        .as_deref()
        .map(|s| {
            Status::parse(s).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("status must be one of pending, approved, denied, expired, cancelled; got {s:?}"),
                )
            })
        })
        .transpose()?;
    let workflow = q.workflow.as_deref().map(str::parse).transpose().map_err(
        |e: crate::domain::IdError| ApiError::bad_request("invalid_query", e.to_string()),
    )?;
    let before = q
        .cursor
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|_| ApiError::bad_request("invalid_query", "cursor is not a request id"))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be 1-200",
        ));
    }
    let requests = state
        .service
        .store()
        .list_requests(&ListFilter {
            status,
            workflow,
            before,
            limit,
        })
        .await?;
    let next_cursor = (requests.len() == limit as usize)
        .then(|| requests.last().map(|r| r.id.to_string()))
        .flatten();
    let requests = requests
        .iter()
        .map(|r| state.service.shown(r, key))
        .collect();
    Ok(Json(RequestPage {
        requests,
        next_cursor,
    })
    .into_response())
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// Why, shown in the message and the audit log (at most 1,000 characters).
    #[schema(max_length = 1000)]
    reason: Option<String>,
}

/// `POST /v1/requests/{id}/cancel`: withdraws a pending request (the key that asked, or an
/// admin key). The body is optional.
#[utoipa::path(
    post,
    path = "/v1/requests/{id}/cancel",
    tag = "requests",
    operation_id = "cancel_request",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The request's id (`req_...`)")),
    request_body(content = Option<CancelBody>, description = "Optional: a reason"),
    responses(
        (status = 200, description = "Cancelled", body = ApiRequest),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 401, description = "No API key or a wrong one", body = ErrorBody),
        (status = 403, description = "Not this key's request, or the key lacks the `request` scope", body = ErrorBody),
        (status = 404, description = "No such request", body = ErrorBody),
        (status = 409, description = "Already decided", body = ErrorBody),
    ),
)]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiBytes(body): ApiBytes,
) -> Result<Response, ApiError> {
    let key = caller.require(Scope::Request)?;
    let id = parse_id(&id)?;
    // No body, or `null`, is a cancel without a reason.
    let body: CancelBody = if body.iter().all(u8::is_ascii_whitespace) {
        CancelBody::default()
    } else {
        serde_json::from_slice::<Option<CancelBody>>(&body)
            .map_err(|e| {
                // As `ApiJson` answers: JSON that does not fit the body (an unknown field, a
                // wrong type) is `invalid_request`, text that is not JSON `invalid_json`.
                let code = match e.classify() {
                    serde_json::error::Category::Data => "invalid_request",
                    _ => "invalid_json",
                };
                ApiError::bad_request(code, e.to_string())
            })?
            .unwrap_or_default()
    };
    let reason = non_empty("reason", body.reason, 1000)?;
    let request = state.service.cancel(&id, key, reason).await?;
    Ok(Json(state.service.shown(&request, key)).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    #[schema(value_type = Verdict)]
    verdict: String,
    /// Why (at most 1,000 characters).
    #[schema(max_length = 1000)]
    reason: Option<String>,
    /// The open stage this vote is for (a `[[workflow.stage]]` name); by default the first
    /// open stage. A stage that is not open is refused with 409 `stage_not_open`.
    #[schema(max_length = 40)]
    stage: Option<String>,
    /// Answers to the request's fields, by name (required to approve a request with fields;
    /// checked like a person's in the modal: 400 `invalid_response`).
    #[schema(value_type = Option<Object>)]
    response: Option<crate::domain::Answers>,
}

/// `POST /v1/requests/{id}/decisions`: a machine's vote (the `decide` scope), counted like a
/// person's, under the same policy, and recorded as `key:` and the key's name.
#[utoipa::path(
    post,
    path = "/v1/requests/{id}/decisions",
    tag = "requests",
    operation_id = "decide_request",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The request's id (`req_...`)")),
    request_body = DecisionBody,
    responses(
        (status = 200, description = "The vote was counted (the request is decided when it settled it)", body = ApiRequest),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 401, description = "No API key or a wrong one", body = ErrorBody),
        (status = 403, description = "The policy does not let this key vote, or it lacks the `decide` scope", body = ErrorBody),
        (status = 404, description = "No such request", body = ErrorBody),
        (status = 409, description = "Already decided, this key already voted, or `stage` names no open stage", body = ErrorBody),
    ),
)]
pub async fn decide(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<DecisionBody>,
) -> Result<Response, ApiError> {
    let key = caller.require(Scope::Decide)?;
    let id = parse_id(&id)?;
    let verdict = Verdict::parse(&body.verdict)
        .ok_or_else(|| invalid("verdict must be \"approve\" or \"deny\""))?;
    let reason = non_empty("reason", body.reason, 1000)?;
    let stage = non_empty("stage", body.stage, 40)?;
    let vote = Vote {
        by: key_actor(&key.name),
        name: None,
        kind: DecisionKind::Machine,
        verdict,
        reason,
        stage,
        response: body.response,
        edits: None,
    };
    let request = match state.service.vote(&id, vote).await? {
        VoteResult::Decided(r) | VoteResult::Counted(r) => r,
    };
    Ok(Json(state.service.shown(&request, key)).into_response())
}
