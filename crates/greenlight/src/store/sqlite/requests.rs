//! SQLite: requests, written by the writer thread with their audit entries and jobs, and read
//! by the readers.

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{Connection, params, params_from_iter};

use super::rows::{all, first, one};
use super::*;
use crate::domain::{Millis, Request, RequestId, Status, WorkflowName};
use crate::store::rows::{self as shared, REQUEST_COLUMNS, to_json};

sql!(pub(super) GET_REQUEST = "SELECT {REQUEST_COLUMNS} FROM requests WHERE id = ?1");
sql!(
    LIST_REQUESTS = "SELECT {REQUEST_COLUMNS} FROM requests \
     WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR workflow = ?2) \
     AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
);
const VOTABLE_MATCHING: &str = "FROM requests WHERE status = 'pending' \
     AND workflow IN (SELECT value FROM json_each(?1)) \
     AND NOT (requester IS NOT NULL AND requester = ?2 \
              AND workflow IN (SELECT value FROM json_each(?3))) \
     AND NOT EXISTS (SELECT 1 FROM json_each(requests.decisions) d \
                     WHERE json_extract(d.value, '$.by') = ?2 \
                     AND json_extract(d.value, '$.kind') = 'user')";
sql!(VOTABLE = "SELECT {REQUEST_COLUMNS} {VOTABLE_MATCHING} ORDER BY id DESC LIMIT ?4");
sql!(VOTABLE_COUNT = "SELECT count(*) FROM (SELECT 1 {VOTABLE_MATCHING} LIMIT ?4)");
sql!(
    pub(super) REQUESTS_BY = "SELECT {REQUEST_COLUMNS} FROM requests WHERE requester = ?1 \
     ORDER BY id DESC LIMIT ?2"
);
sql!(
    RECENTLY_DECIDED = "SELECT {REQUEST_COLUMNS} FROM requests \
     WHERE status <> 'pending' AND decided_at >= ?3 \
     AND (workflow IN (SELECT value FROM json_each(?1)) OR requester = ?2) \
     ORDER BY decided_at DESC, id DESC LIMIT ?4"
);

fn read_request(conn: &Connection, id: &str) -> StoreResult<Option<Request>> {
    first::<shared::RequestRow>(conn, &GET_REQUEST, [id])?
        .map(Request::try_from)
        .transpose()
}

const INSERT_REQUEST: &str = "INSERT INTO requests (id, workflow, title, details, params, \
     requester, status, decisions, decided_by, reason, created_at, decided_at, expires_at, \
     channel, callback_url, api_key_id, idempotency_key, idempotency_fingerprint, version, \
     reminders, remind_at, metadata, tool_call, digest_key, identity, form) VALUES (?1, ?2, ?3, \
     ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, \
     ?24, ?25, ?26)";

/// The row `INSERT_REQUEST` writes.
fn request_row(r: &Request, idempotency: Option<&Idempotency>) -> Values {
    vec![
        text(r.id.as_str()),
        text(r.workflow.as_str()),
        text(r.title.as_str()),
        opt_text(r.details.as_deref()),
        text(serde_json::to_string(&r.params).unwrap_or_default()),
        opt_text(r.requester.as_deref()),
        text(r.status.as_str()),
        text(serde_json::to_string(&r.decisions).unwrap_or_default()),
        opt_text(r.decided_by.as_deref()),
        opt_text(r.reason.as_deref()),
        Value::Integer(millis(r.created_at)),
        opt_int(r.decided_at.map(millis)),
        opt_int(r.expires_at.map(millis)),
        text(r.channel.to_string()),
        opt_text(r.callback_url.as_deref()),
        opt_text(
            r.created_by
                .as_ref()
                .or(idempotency.map(|i| &i.api_key))
                .map(|k| k.as_str()),
        ),
        opt_text(idempotency.map(|i| i.key.as_str())),
        opt_text(idempotency.map(|i| i.fingerprint.as_str())),
        Value::Integer(r.version),
        Value::Integer(i64::from(r.reminders)),
        opt_int(r.remind_at.map(millis)),
        opt_text(
            r.metadata
                .as_ref()
                .map(|m| serde_json::Value::Object(m.clone()).to_string()),
        ),
        opt_text(
            r.tool_call
                .as_ref()
                .map(|t| serde_json::to_string(t).unwrap_or_default()),
        ),
        opt_text(r.digest_key.as_deref()),
        opt_text(
            r.identity
                .as_ref()
                .map(|i| serde_json::to_string(i).unwrap_or_default()),
        ),
        opt_text(shared::form_column(r)),
    ]
}

/// Who created a request under which key, and with what body (see `Idempotency`).
struct IdempotencyKey {
    api_key: String,
    key: String,
    fingerprint: String,
}

fn create_in(
    conn: &Connection,
    row: &Values,
    idempotency: Option<&IdempotencyKey>,
    entries: &Entries,
) -> StoreResult<Created> {
    if let Some(idem) = idempotency {
        let found: Option<(Option<String>, String)> = first(
            conn,
            "SELECT idempotency_fingerprint, id FROM requests \
             WHERE api_key_id = ?1 AND idempotency_key = ?2",
            params![idem.api_key, idem.key],
        )?;
        if let Some((fingerprint, id)) = found {
            if fingerprint.as_deref() != Some(idem.fingerprint.as_str()) {
                return Ok(Created::Not(CreateOutcome::KeyReused));
            }
            // Read back here, in the writer: what the caller gets is what was committed.
            let existing = read_request(conn, &id)?
                .ok_or_else(|| StoreError::Corrupt(format!("request {id} vanished")))?;
            return Ok(Created::Not(CreateOutcome::Existing(Box::new(existing))));
        }
    }
    conn.prepare_cached(INSERT_REQUEST)?
        .execute(params_from_iter(row))?;
    Ok(Created::Written(entries.write_jobs(conn)?))
}

/// What `create_in` did: the job ids it wrote (the deliveries are made from them on the
/// caller's thread, off the writer's), or another outcome.
enum Created {
    Written(Vec<Option<i64>>),
    Not(CreateOutcome),
}

const SAVE_REQUEST: &str = "UPDATE requests SET status = ?1, decisions = ?2, decided_by = ?3, \
     reason = ?4, decided_at = ?5, version = ?6, reminders = ?7, remind_at = ?8 \
     WHERE id = ?9 AND version = ?10";

/// The parameters of `SAVE_REQUEST`.
fn transition_row(r: &Request, expected_version: i64) -> StoreResult<Values> {
    Ok(vec![
        text(r.status.as_str()),
        text(to_json(&r.decisions)?),
        opt_text(r.decided_by.as_deref()),
        opt_text(r.reason.as_deref()),
        opt_int(r.decided_at.map(millis)),
        Value::Integer(r.version),
        Value::Integer(i64::from(r.reminders)),
        opt_int(r.remind_at.map(millis)),
        text(r.id.as_str()),
        Value::Integer(expected_version),
    ])
}

fn save_in(conn: &Connection, row: &Values, entries: &Entries) -> StoreResult<bool> {
    let changed = conn
        .prepare_cached(SAVE_REQUEST)?
        .execute(params_from_iter(row))?;
    // The writer runs one operation at a time: the audit and jobs land only if the
    // compare-and-set did, and nothing at all changes otherwise.
    if changed == 0 {
        return Ok(false);
    }
    entries.write(conn)?;
    Ok(true)
}

#[async_trait]
impl Requests for SqliteStore {
    async fn create_request(
        &self,
        request: &Request,
        idempotency: Option<&Idempotency>,
        audit: &[NewAudit],
        effects: &[Effect],
        now: Millis,
    ) -> StoreResult<CreateOutcome> {
        let row = request_row(request, idempotency);
        let idem = idempotency.map(|i| IdempotencyKey {
            api_key: i.api_key.to_string(),
            key: i.key.clone(),
            fingerprint: i.fingerprint.clone(),
        });
        let entries = Entries::of(now, audit, effects)?;
        let created = self
            .writer
            .write(move |conn| create_in(conn, &row, idem.as_ref(), &entries))
            .await?;
        Ok(match created {
            Created::Written(ids) => {
                CreateOutcome::Created(Delivery::written_for(&request.id, effects, &ids, now)?)
            }
            Created::Not(outcome) => outcome,
        })
    }

    async fn get_request(&self, id: &RequestId) -> StoreResult<Option<Request>> {
        let id = id.clone();
        self.readers
            .point(move |conn| read_request(conn, id.as_str()))
            .await
    }

    async fn list_requests(&self, filter: &ListFilter) -> StoreResult<Vec<Request>> {
        let f = filter.clone();
        self.readers
            .read(move |conn| {
                let found = all(
                    conn,
                    &LIST_REQUESTS,
                    params![
                        f.status.map(Status::as_str),
                        f.workflow.as_ref().map(|w| w.as_str()),
                        f.before.as_ref().map(|b| b.as_str()),
                        i64::from(f.limit),
                    ],
                )?;
                shared::requests(found)
            })
            .await
    }

    async fn save_transition(
        &self,
        r: &Request,
        expected_version: i64,
        audit: &[NewAudit],
        effects: &[Effect],
        now: Millis,
    ) -> StoreResult<bool> {
        let row = transition_row(r, expected_version)?;
        let entries = Entries::of(now, audit, effects)?;
        self.writer
            .write(move |conn| save_in(conn, &row, &entries))
            .await
    }

    async fn due_requests(&self, now: Millis, limit: u32) -> StoreResult<Vec<RequestId>> {
        self.readers
            .read(move |conn| {
                let ids: Vec<String> = all(
                    conn,
                    // The partial indexes by name: left to itself, SQLite walked
                    // requests_status for the ORDER BY, reading every pending request's row
                    // (37 ms with 33,000 pending) four times a second.
                    "SELECT id FROM ( \
                     SELECT id FROM requests INDEXED BY requests_expiry \
                     WHERE status = 'pending' AND expires_at <= ?1 \
                     UNION SELECT id FROM requests INDEXED BY requests_remind \
                     WHERE status = 'pending' AND remind_at <= ?1) \
                     ORDER BY id LIMIT ?2",
                    params![now, i64::from(limit)],
                )?;
                shared::request_ids(ids)
            })
            .await
    }

    async fn votable_requests(&self, f: &VotableFilter) -> StoreResult<Page> {
        if f.workflows.is_empty() {
            return Ok(Page::default());
        }
        let names = |w: &[WorkflowName]| {
            serde_json::to_string(&w.iter().map(|w| w.as_str()).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let (workflows, not_own_in) = (names(&f.workflows), names(&f.not_own_in));
        let (voter, limit) = (f.voter.clone(), i64::from(f.limit));
        self.readers
            .read(move |conn| {
                let found = all(conn, &VOTABLE, params![workflows, voter, not_own_in, limit])?;
                let total: i64 = one(
                    conn,
                    &VOTABLE_COUNT,
                    params![workflows, voter, not_own_in, i64::from(VOTABLE_COUNT_CAP)],
                )?;
                Ok(Page {
                    requests: shared::requests(found)?,
                    total: u32::try_from(total).unwrap_or(VOTABLE_COUNT_CAP),
                })
            })
            .await
    }

    async fn requests_by(&self, requester: &str, limit: u32) -> StoreResult<Vec<Request>> {
        let requester = requester.to_owned();
        self.readers
            .read(move |conn| {
                let found = all(conn, &REQUESTS_BY, params![requester, i64::from(limit)])?;
                shared::requests(found)
            })
            .await
    }

    async fn recently_decided(
        &self,
        workflows: &[WorkflowName],
        requester: &str,
        since: Millis,
        limit: u32,
    ) -> StoreResult<Vec<Request>> {
        let names: Vec<&str> = workflows.iter().map(|w| w.as_str()).collect();
        let names = serde_json::to_string(&names).unwrap_or_default();
        let requester = requester.to_owned();
        self.readers
            .read(move |conn| {
                let found = all(
                    conn,
                    &RECENTLY_DECIDED,
                    params![names, requester, since, i64::from(limit)],
                )?;
                shared::requests(found)
            })
            .await
    }

    async fn set_slack_message(&self, id: &RequestId, channel: &str, ts: &str) -> StoreResult<()> {
        self.writer
            .execute(
                "UPDATE requests SET slack_channel = ?1, slack_ts = ?2 WHERE id = ?3",
                (channel.to_owned(), ts.to_owned(), id.to_string()),
            )
            .await
            .map(|_| ())
    }

    async fn add_slack_copy(&self, id: &RequestId, channel: &str, ts: &str) -> StoreResult<()> {
        self.writer
            .execute(
                "UPDATE requests SET slack_copies = json_insert(COALESCE(slack_copies, '[]'), \
                 '$[#]', json_object('channel', ?1, 'ts', ?2)) WHERE id = ?3",
                (channel.to_owned(), ts.to_owned(), id.to_string()),
            )
            .await
            .map(|_| ())
    }
}
