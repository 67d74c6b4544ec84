//! Rows as both backends return them, and their conversion into domain values: the schema is
//! the same on SQLite and PostgreSQL (times as epoch milliseconds, JSON as text), so reading a
//! row is written once.

use std::collections::HashMap;

use super::{
    ActionResult, ApiKey, Attempt, AuditEvent, ChainLink, Delivery, Effect, Job, JobState, Scope,
    StoreError, StoreResult, Unchained, ts_from_millis,
};
use crate::domain::{Buttons, Decision, IdError, Params, Request, SlackRef, Status};

/// How many attempts per job the API shows.
pub const RECENT_ATTEMPTS: usize = 5;

/// The columns of `RequestRow`, in order.
pub const REQUEST_COLUMNS: &str = "id, workflow, title, details, params, requester, status, \
     decisions, decided_by, reason, created_at, decided_at, expires_at, channel, slack_channel, \
     slack_ts, callback_url, version, reminders, remind_at, api_key_id, metadata, tool_call, \
     digest_key, slack_copies, identity, form";

fn corrupt(what: &str, e: &dyn std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn opt_ts(ms: Option<i64>) -> StoreResult<Option<jiff::Timestamp>> {
    ms.map(ts_from_millis).transpose()
}

#[derive(sqlx::FromRow)]
pub struct RequestRow {
    pub id: String,
    pub workflow: String,
    pub title: String,
    pub details: Option<String>,
    pub params: String,
    pub requester: Option<String>,
    pub status: String,
    pub decisions: String,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    pub created_at: i64,
    pub decided_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub channel: String,
    pub slack_channel: Option<String>,
    pub slack_ts: Option<String>,
    pub callback_url: Option<String>,
    pub version: i64,
    pub reminders: i64,
    pub remind_at: Option<i64>,
    pub api_key_id: Option<String>,
    pub metadata: Option<String>,
    pub tool_call: Option<String>,
    pub digest_key: Option<String>,
    pub slack_copies: Option<String>,
    pub identity: Option<String>,
    pub form: Option<String>,
}

impl TryFrom<RequestRow> for Request {
    type Error = StoreError;

    fn try_from(row: RequestRow) -> StoreResult<Request> {
        let form: FormColumn = row
            .form
            .map(|f| serde_json::from_str(&f).map_err(|e| corrupt("form", &e)))
            .transpose()?
            .unwrap_or_default();
        let mut request = Request {
            id: row.id.parse().map_err(|e| corrupt("request id", &e))?,
            workflow: row.workflow.parse().map_err(|e| corrupt("workflow", &e))?,
            title: row.title,
            details: row.details,
            params: serde_json::from_str::<Params>(&row.params)
                .map_err(|e| corrupt("params", &e))?,
            requester: row.requester,
            status: Status::parse(&row.status).ok_or_else(|| corrupt("status", &row.status))?,
            decisions: serde_json::from_str::<Vec<Decision>>(&row.decisions)
                .map_err(|e| corrupt("decisions", &e))?,
            decided_by: row.decided_by,
            reason: row.reason,
            created_at: ts_from_millis(row.created_at)?,
            decided_at: opt_ts(row.decided_at)?,
            expires_at: opt_ts(row.expires_at)?,
            channel: row.channel.parse().map_err(|e| corrupt("channel", &e))?,
            slack: match (row.slack_channel, row.slack_ts) {
                (Some(channel), Some(ts)) => Some(SlackRef { channel, ts }),
                _ => None,
            },
            callback_url: row.callback_url,
            metadata: row
                .metadata
                .map(|m| serde_json::from_str(&m).map_err(|e| corrupt("metadata", &e)))
                .transpose()?,
            tool_call: row
                .tool_call
                .map(|t| serde_json::from_str(&t).map_err(|e| corrupt("tool call", &e)))
                .transpose()?,
            identity: row
                .identity
                .map(|i| serde_json::from_str(&i).map_err(|e| corrupt("identity", &e)))
                .transpose()?,
            digest_key: row.digest_key,
            slack_copies: row
                .slack_copies
                .map(|c| serde_json::from_str(&c).map_err(|e| corrupt("slack copies", &e)))
                .transpose()?
                .unwrap_or_default(),
            created_by: row
                .api_key_id
                .map(|k| k.parse().map_err(|e: IdError| corrupt("api key id", &e)))
                .transpose()?,
            reminders: count(row.reminders),
            remind_at: opt_ts(row.remind_at)?,
            version: row.version,
            fields: form.fields,
            buttons: form.buttons,
            editable: form.editable,
            response: None,
            approved_params: None,
        };
        request.settle_response();
        Ok(request)
    }
}

/// The `form` column: what a request asks beyond yes or no, fixed when it is created.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct FormColumn {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    fields: Vec<crate::domain::Field>,
    #[serde(default, skip_serializing_if = "Buttons::is_default")]
    buttons: Buttons,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    editable: Vec<String>,
}

/// The `form` column of `r` (null when it asks nothing beyond yes or no).
pub fn form_column(r: &Request) -> Option<String> {
    (!r.fields.is_empty() || !r.buttons.is_default() || !r.editable.is_empty()).then(|| {
        serde_json::to_string(&FormColumn {
            fields: r.fields.clone(),
            buttons: r.buttons,
            editable: r.editable.clone(),
        })
        .unwrap_or_default()
    })
}

pub fn requests(rows: Vec<RequestRow>) -> StoreResult<Vec<Request>> {
    rows.into_iter().map(Request::try_from).collect()
}

pub fn request_ids(ids: Vec<String>) -> StoreResult<Vec<crate::domain::RequestId>> {
    ids.iter()
        .map(|id| id.parse().map_err(|e: IdError| corrupt("request id", &e)))
        .collect()
}

pub const API_KEY_COLUMNS: &str = "id, name, scopes, created_at, revoked_at";

#[derive(sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    pub scopes: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

impl TryFrom<ApiKeyRow> for ApiKey {
    type Error = StoreError;

    fn try_from(row: ApiKeyRow) -> StoreResult<ApiKey> {
        Ok(ApiKey {
            id: row.id.parse().map_err(|e: IdError| corrupt("key id", &e))?,
            name: row.name,
            scopes: row.scopes.split(',').filter_map(Scope::parse).collect(),
            created_at: ts_from_millis(row.created_at)?,
            revoked_at: opt_ts(row.revoked_at)?,
        })
    }
}

pub fn scopes_text(key: &ApiKey) -> String {
    let scopes: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
    scopes.join(",")
}

pub const LIST_SIGNING_KEYS: &str =
    "SELECT kid, created_at, seed, public_key FROM signing_keys ORDER BY created_at, kid";
pub const INSERT_SIGNING_KEY: &str =
    "INSERT INTO signing_keys (kid, created_at, seed, public_key) VALUES ($1, $2, $3, $4)";

/// The readiness probe's write: the time of the last probe.
pub const PROBE_WRITE: &str = "INSERT INTO meta (key, value) VALUES ('ready_probe', $1) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value";

/// Audit entries with their chain positions, if any.
pub const AUDIT_SELECT: &str = "SELECT a.id, a.at, a.request_id, a.event, a.actor, a.data, \
     c.seq, c.prev_hash, c.hash FROM audit a LEFT JOIN audit_chain c ON c.audit_id = a.id";

#[derive(sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub request_id: Option<String>,
    pub event: String,
    pub actor: String,
    pub data: String,
    pub seq: Option<i64>,
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
}

impl TryFrom<AuditRow> for AuditEvent {
    type Error = StoreError;

    fn try_from(row: AuditRow) -> StoreResult<AuditEvent> {
        Ok(AuditEvent {
            id: row.id,
            at: ts_from_millis(row.at)?,
            request_id: row.request_id,
            event: row.event,
            actor: row.actor,
            data: serde_json::from_str(&row.data).map_err(|e| corrupt("audit data", &e))?,
            seq: row.seq,
            prev_hash: row.prev_hash,
            hash: row.hash,
            data_json: row.data,
        })
    }
}

/// Chain positions joined with their entries (`LEFT JOIN`: a deleted entry leaves nulls).
pub const CHAIN_SELECT: &str = "SELECT c.seq, c.audit_id, c.prev_hash, c.hash, a.at, \
     a.request_id, a.event, a.actor, a.data FROM audit_chain c LEFT JOIN audit a ON a.id = c.audit_id";

#[derive(sqlx::FromRow)]
pub struct ChainRow {
    pub seq: i64,
    pub audit_id: i64,
    pub prev_hash: String,
    pub hash: String,
    pub at: Option<i64>,
    pub request_id: Option<String>,
    pub event: Option<String>,
    pub actor: Option<String>,
    pub data: Option<String>,
    /// What could not be read of the entry's columns, if anything.
    #[sqlx(skip)]
    pub unreadable: Option<String>,
}

impl TryFrom<ChainRow> for ChainLink {
    type Error = StoreError;

    /// An entry that cannot be read (a time that is no time, data that is no JSON) is kept
    /// as unreadable, for `audit verify` to name, rather than failing the whole page.
    fn try_from(row: ChainRow) -> StoreResult<ChainLink> {
        let mut unreadable = row.unreadable;
        let entry = match (row.at, row.event, row.actor, row.data) {
            _ if unreadable.is_some() => None,
            (Some(at), Some(event), Some(actor), Some(data)) => {
                let read = AuditEvent::try_from(AuditRow {
                    id: row.audit_id,
                    at,
                    request_id: row.request_id,
                    event,
                    actor,
                    data,
                    seq: Some(row.seq),
                    prev_hash: Some(row.prev_hash.clone()),
                    hash: Some(row.hash.clone()),
                });
                match read {
                    Ok(entry) => Some(entry),
                    Err(e) => {
                        unreadable = Some(e.to_string());
                        None
                    }
                }
            }
            _ => None,
        };
        Ok(ChainLink {
            seq: row.seq,
            audit_id: row.audit_id,
            prev_hash: row.prev_hash,
            hash: row.hash,
            entry,
            unreadable,
        })
    }
}

/// The chain positions for `entries` (oldest first) after the chain's last position.
pub fn link(
    last: Option<(i64, String)>,
    entries: &[AuditEvent],
) -> Vec<(i64, i64, String, String)> {
    let (mut seq, mut prev) = last.unwrap_or((0, crate::domain::GENESIS.to_owned()));
    entries
        .iter()
        .map(|e| {
            seq += 1;
            let hash = crate::domain::entry_hash(&e.content(), &prev);
            (seq, e.id, std::mem::replace(&mut prev, hash.clone()), hash)
        })
        .collect()
}

/// Audit entries greenlight wrote that wait for their chain position, oldest first (the
/// chainer's batch). Ordered by the queue's own key: ordered by `audit.id`, PostgreSQL walks
/// the whole audit log in order (every chained entry first) to find the few queued ones.
pub const PENDING: &str = "SELECT a.id, a.at, a.request_id, a.event, a.actor, a.data, \
     CAST(NULL AS BIGINT) AS seq, CAST(NULL AS TEXT) AS prev_hash, CAST(NULL AS TEXT) AS hash \
     FROM audit_pending p JOIN audit a ON a.id = p.audit_id ORDER BY p.audit_id LIMIT $1";

/// Audit entries in no chain position, oldest first, and whether greenlight queued them.
pub const UNCHAINED: &str = "SELECT a.id, a.at, \
     EXISTS (SELECT 1 FROM audit_pending p WHERE p.audit_id = a.id) AS pending \
     FROM audit a WHERE NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.audit_id = a.id) \
     ORDER BY a.id LIMIT $1";

/// `at` is `None` when the column holds something that is not a number (SQLite stores what
/// it is given).
#[derive(sqlx::FromRow)]
pub struct UnchainedRow {
    pub id: i64,
    pub at: Option<i64>,
    pub pending: bool,
}

impl From<UnchainedRow> for Unchained {
    fn from(row: UnchainedRow) -> Self {
        Unchained {
            id: row.id,
            at_ms: row.at,
            pending: row.pending,
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct JobRow {
    pub id: i64,
    pub payload: String,
    pub attempts: i64,
    pub claims: i64,
    pub created_at: i64,
}

/// Claimed jobs, oldest first.
pub fn jobs(rows: Vec<JobRow>) -> StoreResult<Vec<Job>> {
    let mut jobs = rows
        .into_iter()
        .map(|row| {
            Ok(Job {
                id: row.id,
                effect: serde_json::from_str(&row.payload)
                    .map_err(|e| corrupt("outbox payload", &e))?,
                attempts: count(row.attempts),
                claims: count(row.claims),
                created_at: row.created_at,
            })
        })
        .collect::<StoreResult<Vec<Job>>>()?;
    jobs.sort_by_key(|j| j.id);
    Ok(jobs)
}

pub const DELIVERY_COLUMNS: &str = "id, kind, payload, state, attempts, last_error, \
     next_attempt_at, created_at, updated_at";

#[derive(sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: i64,
    pub kind: String,
    pub payload: String,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub next_attempt_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(sqlx::FromRow)]
pub struct AttemptRow {
    pub job_id: i64,
    pub at: i64,
    pub outcome: String,
    pub error: Option<String>,
}

/// A request's jobs with their latest attempts (`attempts` newest first).
pub fn deliveries(rows: Vec<DeliveryRow>, attempts: Vec<AttemptRow>) -> StoreResult<Vec<Delivery>> {
    let mut history: HashMap<i64, Vec<Attempt>> = HashMap::new();
    for a in attempts {
        let list = history.entry(a.job_id).or_default();
        if list.len() < RECENT_ATTEMPTS {
            list.push(Attempt {
                at: ts_from_millis(a.at)?,
                outcome: a.outcome,
                error: a.error,
            });
        }
    }
    rows.into_iter()
        .map(|row| {
            let state = JobState::parse(&row.state)?;
            let target = serde_json::from_str::<Effect>(&row.payload)
                .ok()
                .and_then(|e| e.target());
            Ok(Delivery {
                id: row.id,
                kind: row.kind,
                target,
                state,
                attempts: count(row.attempts),
                last_error: row.last_error,
                next_attempt_at: match state {
                    JobState::Pending => Some(ts_from_millis(row.next_attempt_at)?),
                    _ => None,
                },
                created_at: ts_from_millis(row.created_at)?,
                updated_at: ts_from_millis(row.updated_at)?,
                recent_attempts: history.remove(&row.id).unwrap_or_default(),
            })
        })
        .collect()
}

#[derive(sqlx::FromRow)]
pub struct ActionRow {
    pub name: String,
    pub ok: bool,
    pub summary: String,
    pub attempts: i64,
    pub at: i64,
}

impl TryFrom<ActionRow> for ActionResult {
    type Error = StoreError;

    fn try_from(row: ActionRow) -> StoreResult<ActionResult> {
        Ok(ActionResult {
            name: row.name,
            ok: row.ok,
            summary: row.summary,
            attempts: count(row.attempts),
            at: ts_from_millis(row.at)?,
        })
    }
}

pub fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// How a job's outcome is written: its new state, next attempt, error, whether it counts as
/// an attempt, and the attempt's outcome word.
pub struct Finish<'a> {
    pub state: JobState,
    pub next: Option<i64>,
    pub error: Option<&'a str>,
    pub counts: bool,
    pub outcome: &'static str,
}

impl<'a> Finish<'a> {
    pub fn of(result: &'a super::JobResult) -> Self {
        use super::JobResult;
        match result {
            JobResult::Done => Finish {
                state: JobState::Done,
                next: None,
                error: None,
                counts: true,
                outcome: "done",
            },
            JobResult::Retry { at, error, counts } => Finish {
                state: JobState::Pending,
                next: Some(*at),
                error: Some(error.as_str()),
                counts: *counts,
                outcome: if *counts { "failed" } else { "rate_limited" },
            },
            JobResult::Dead { error } => Finish {
                state: JobState::Dead,
                next: None,
                error: Some(error.as_str()),
                counts: true,
                outcome: "dead",
            },
        }
    }
}

pub const SIGNAL_COLUMNS: &str = "name, value, since, updated_at, set_by, expires_at";

#[derive(sqlx::FromRow)]
pub struct SignalRow {
    pub name: String,
    pub value: String,
    pub since: i64,
    pub updated_at: i64,
    pub set_by: String,
    pub expires_at: Option<i64>,
}

impl TryFrom<SignalRow> for crate::domain::Signal {
    type Error = StoreError;

    fn try_from(row: SignalRow) -> StoreResult<crate::domain::Signal> {
        Ok(crate::domain::Signal {
            name: row
                .name
                .parse()
                .map_err(|e: IdError| corrupt("signal name", &e))?,
            value: serde_json::from_str(&row.value).map_err(|e| corrupt("signal value", &e))?,
            since: ts_from_millis(row.since)?,
            updated_at: ts_from_millis(row.updated_at)?,
            set_by: row.set_by,
            expires_at: opt_ts(row.expires_at)?,
        })
    }
}

/// The lowest request id created at `ms` or later: ids are `req_` + a ULID, whose first ten
/// characters are the time, so a range of ids is a range of creation times.
pub fn first_id_at(ms: i64) -> String {
    let ms = u64::try_from(ms.max(0)).unwrap_or(0);
    let ulid = ulid::Ulid::from_parts(ms, 0);
    format!("req_{ulid}")
}

/// The SQL (in both backends) of history for rules and alerts. Creation time is read from the
/// id (its ULID time is the service's clock), so the `(workflow, id)` index serves it.
pub const COUNT_CREATED: &str = "SELECT count(*) FROM requests WHERE workflow = $1 AND id >= $2";
pub const COUNT_CREATED_BY_REQUESTER: &str = "SELECT requester, count(*) FROM requests \
     WHERE workflow = $1 AND id >= $2 GROUP BY requester";
pub const COUNT_DENIED: &str = "SELECT count(*) FROM requests WHERE workflow = $1 \
     AND status <> 'pending' AND decided_at >= $2 AND status = 'denied'";
pub const COUNT_DECIDED_BY: &str = "SELECT count(*) FROM requests WHERE decided_by = $1 \
     AND status <> 'pending' AND decided_at >= $2";
pub const DIGEST_MESSAGE: &str =
    "SELECT slack_channel, slack_ts FROM digests WHERE key = $1 AND slack_ts IS NOT NULL";

/// The SQL (in both backends) of a digest's summary.
pub const DIGEST_BY_RULE: &str = "SELECT COALESCE(decided_by, ''), status, count(*) FROM requests \
     WHERE digest_key = $1 GROUP BY decided_by, status ORDER BY count(*) DESC";
pub const DIGEST_BY_REQUESTER: &str = "SELECT requester, count(*) FROM requests \
     WHERE digest_key = $1 GROUP BY requester ORDER BY count(*) DESC LIMIT 5";
pub const DIGEST_RECENT: &str = "SELECT id, title, status, decided_by, requester FROM requests \
     WHERE digest_key = $1 ORDER BY id DESC LIMIT 5";

pub const INSERT_STANDING: &str = "INSERT INTO standing_approvals (id, workflow, granted_by, \
     caller, caller_name, match_params, request_id, created_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
pub const STANDING_FOR: &str = "SELECT id, workflow, granted_by, caller, caller_name, \
     match_params, request_id, created_at, expires_at, revoked_at, revoked_by \
     FROM standing_approvals WHERE workflow = $1 AND caller = $2 AND expires_at > $3 \
     AND revoked_at IS NULL ORDER BY created_at, id";
pub const LIVE_STANDING: &str = "SELECT id, workflow, granted_by, caller, caller_name, \
     match_params, request_id, created_at, expires_at, revoked_at, revoked_by \
     FROM standing_approvals WHERE expires_at > $1 AND revoked_at IS NULL \
     ORDER BY expires_at, id LIMIT 1000";
pub const LIVE_STANDING_GRANTED_BY: &str = "SELECT id, workflow, granted_by, caller, \
     caller_name, match_params, request_id, created_at, expires_at, revoked_at, revoked_by \
     FROM standing_approvals WHERE granted_by = $1 AND expires_at > $2 AND revoked_at IS NULL \
     ORDER BY expires_at, id LIMIT 1000";
pub const STANDING_OF_REQUEST: &str = "SELECT id, workflow, granted_by, caller, caller_name, \
     match_params, request_id, created_at, expires_at, revoked_at, revoked_by \
     FROM standing_approvals WHERE request_id = $1 ORDER BY created_at, id LIMIT 20";
pub const GET_STANDING: &str = "SELECT id, workflow, granted_by, caller, caller_name, \
     match_params, request_id, created_at, expires_at, revoked_at, revoked_by \
     FROM standing_approvals WHERE id = $1";
pub const REVOKE_STANDING: &str = "UPDATE standing_approvals SET revoked_at = $2, revoked_by = $3 \
     WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2";

#[derive(sqlx::FromRow)]
pub struct StandingRow {
    pub id: String,
    pub workflow: String,
    pub granted_by: String,
    pub caller: String,
    pub caller_name: String,
    pub match_params: String,
    pub request_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
}

impl TryFrom<StandingRow> for crate::domain::StandingApproval {
    type Error = StoreError;

    fn try_from(row: StandingRow) -> StoreResult<Self> {
        Ok(Self {
            id: row.id.parse().map_err(|e| corrupt("standing id", &e))?,
            workflow: row.workflow.parse().map_err(|e| corrupt("workflow", &e))?,
            granted_by: row.granted_by,
            caller: row.caller.parse().map_err(|e| corrupt("caller", &e))?,
            caller_name: row.caller_name,
            r#match: serde_json::from_str(&row.match_params)
                .map_err(|e| corrupt("match_params", &e))?,
            request_id: row
                .request_id
                .parse()
                .map_err(|e| corrupt("request id", &e))?,
            created_at: ts_from_millis(row.created_at)?,
            expires_at: ts_from_millis(row.expires_at)?,
            revoked_at: opt_ts(row.revoked_at)?,
            revoked_by: row.revoked_by,
        })
    }
}

pub fn standing(rows: Vec<StandingRow>) -> StoreResult<Vec<crate::domain::StandingApproval>> {
    rows.into_iter().map(TryFrom::try_from).collect()
}
