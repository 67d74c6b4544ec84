//! Requests: created, read, and changed by compare-and-set, each write atomic with its audit
//! entries and outbox jobs; and the lists the timers, the Home tab and the API read.

use async_trait::async_trait;

use super::{Delivery, Effect, NewAudit, StoreResult};
use crate::domain::{ApiKeyId, Millis, Request, RequestId, Status, WorkflowName};

/// Requests: writing them with what they set off, and reading them back.
#[async_trait]
pub trait Requests: Send + Sync {
    /// Inserts a new request with its audit entries and effects, or finds the one created
    /// earlier under the same idempotency key.
    async fn create_request(
        &self,
        request: &Request,
        idempotency: Option<&Idempotency>,
        audit: &[NewAudit],
        effects: &[Effect],
        now: Millis,
    ) -> StoreResult<CreateOutcome>;

    async fn get_request(&self, id: &RequestId) -> StoreResult<Option<Request>>;

    async fn list_requests(&self, filter: &ListFilter) -> StoreResult<Vec<Request>>;

    /// Writes `request` (already changed by the domain) if its stored version is still
    /// `expected_version`, together with audit entries and effects. Returns false, writing
    /// nothing, when someone else changed the request first.
    async fn save_transition(
        &self,
        request: &Request,
        expected_version: i64,
        audit: &[NewAudit],
        effects: &[Effect],
        now: Millis,
    ) -> StoreResult<bool>;

    /// Pending requests whose expiry or next reminder is due at `now`, oldest first. With
    /// several replicas each due request is handed to one of them for a while (a claim), so
    /// they do not all work on the same ones; the compare-and-set still decides.
    async fn due_requests(&self, now: Millis, limit: u32) -> StoreResult<Vec<RequestId>>;

    /// Pending requests `filter.voter` may still vote on, newest first (at most
    /// `filter.limit`), and how many match in all.
    async fn votable_requests(&self, filter: &VotableFilter) -> StoreResult<Page>;

    /// The newest requests whose requester is `requester`, any status.
    async fn requests_by(&self, requester: &str, limit: u32) -> StoreResult<Vec<Request>>;

    /// Requests decided since `since`, most recently decided first, that belong to one of
    /// `workflows` or were asked for by `requester`.
    async fn recently_decided(
        &self,
        workflows: &[WorkflowName],
        requester: &str,
        since: Millis,
        limit: u32,
    ) -> StoreResult<Vec<Request>>;

    /// Remembers where the request's message was posted.
    async fn set_slack_message(&self, id: &RequestId, channel: &str, ts: &str) -> StoreResult<()>;

    /// Remembers a copy of the request's message (in someone's direct message), so that every
    /// rewrite of the message rewrites it too. Not a state change: the version stays.
    async fn add_slack_copy(&self, id: &RequestId, channel: &str, ts: &str) -> StoreResult<()>;
}

/// Who created a request, and what they called it, so that a retry finds the same request.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub api_key: ApiKeyId,
    pub key: String,
    /// A digest of the creating body: the same key with a different body is a client bug.
    pub fingerprint: String,
}

#[derive(Debug)]
pub enum CreateOutcome {
    /// Written, with the jobs it wrote for the request: its deliveries as they stand at the
    /// commit (pending, never tried), so the caller can show them without reading them back.
    Created(Vec<Delivery>),
    /// The idempotency key was seen before with the same body: here is that request.
    Existing(Box<Request>),
    /// The idempotency key was seen before with a different body.
    KeyReused,
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<Status>,
    pub workflow: Option<WorkflowName>,
    /// Return requests older than this id (ids sort by creation time).
    pub before: Option<RequestId>,
    pub limit: u32,
}

/// Which pending requests someone may still vote on (see `Requests::votable_requests`).
#[derive(Debug, Clone, Default)]
pub struct VotableFilter {
    /// The workflows whose requests they may vote on.
    pub workflows: Vec<WorkflowName>,
    /// Who: requests with a decision by them are left out (one vote per person).
    pub voter: String,
    /// Workflows where they may not approve what they asked for: their own requests (requester
    /// equal to `voter`) are left out there.
    pub not_own_in: Vec<WorkflowName>,
    pub limit: u32,
}

/// Requests counted beyond this are shown as "and 999+ more": counting stops there, so a
/// backlog of thousands does not make every Home tab read all of them.
pub const VOTABLE_COUNT_CAP: u32 = 1000;

/// Some of the requests that matched, and how many matched in all (up to `VOTABLE_COUNT_CAP`).
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub requests: Vec<Request>,
    pub total: u32,
}
