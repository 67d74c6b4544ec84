//! PostgreSQL: requests, each change one statement with its audit entries and jobs; due
//! timers handed to one replica at a time.

use async_trait::async_trait;
use sqlx::Row;

use super::*;
use crate::domain::{Millis, Request, RequestId, Status, WorkflowName};
use crate::store::rows::{self, REQUEST_COLUMNS, to_json};

/// How long a replica looks after a due request's timers before another may.
const TIMER_LEASE_MS: Millis = 30_000;

/// Each effect's job id, from the jobs a statement wrote (`None`: it collapsed into a job
/// already waiting), matched by payload: equal payloads are the same job to whoever reads it.
fn job_ids(
    effects: &[Effect],
    ids: Vec<i64>,
    payloads: Vec<String>,
) -> StoreResult<Vec<Option<i64>>> {
    let mut written: Vec<Option<(i64, String)>> = ids.into_iter().zip(payloads).map(Some).collect();
    effects
        .iter()
        .map(|effect| {
            let payload = to_json(effect)?;
            Ok(written
                .iter_mut()
                .find(|w| w.as_ref().is_some_and(|(_, p)| *p == payload))
                .and_then(Option::take)
                .map(|(id, _)| id))
        })
        .collect()
}

#[async_trait]
impl Requests for PostgresStore {
    async fn create_request(
        &self,
        r: &Request,
        idempotency: Option<&Idempotency>,
        audit: &[NewAudit],
        effects: &[Effect],
        now: Millis,
    ) -> StoreResult<CreateOutcome> {
        let statement = {
            let (r, idempotency) = (r.clone(), idempotency.cloned());
            let (audit, effects) = (audit.to_vec(), effects.to_vec());
            move || create_statement(&r, idempotency.as_ref(), &audit, &effects, now)
        };
        let row = self.writer.write_one(statement).await?;
        let (created, ids, payloads): (i64, Vec<i64>, Vec<String>) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        if created == 1 {
            let ids = job_ids(effects, ids, payloads)?;
            return Ok(CreateOutcome::Created(Delivery::written_for(
                &r.id, effects, &ids, now,
            )?));
        }
        let Some(idem) = idempotency else {
            return Err(StoreError::Corrupt(format!("request id {} exists", r.id)));
        };
        let found: Option<(Option<String>, String)> = sqlx::query_as(
            "SELECT idempotency_fingerprint, id FROM requests \
             WHERE api_key_id = $1 AND idempotency_key = $2",
        )
        .bind(idem.api_key.as_str())
        .bind(&idem.key)
        .fetch_optional(&self.pool)
        .await?;
        let Some((fingerprint, id)) = found else {
            return Err(StoreError::Corrupt(format!("request id {} exists", r.id)));
        };
        if fingerprint.as_deref() != Some(idem.fingerprint.as_str()) {
            return Ok(CreateOutcome::KeyReused);
        }
        let id: RequestId = id
            .parse()
            .map_err(|e: crate::domain::IdError| StoreError::Corrupt(e.to_string()))?;
        let existing = self
            .get_request(&id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("request {id} vanished")))?;
        Ok(CreateOutcome::Existing(Box::new(existing)))
    }

    async fn get_request(&self, id: &RequestId) -> StoreResult<Option<Request>> {
        let sql = format!("SELECT {REQUEST_COLUMNS} FROM requests WHERE id = $1");
        let row: Option<rows::RequestRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(Request::try_from).transpose()
    }

    async fn list_requests(&self, filter: &ListFilter) -> StoreResult<Vec<Request>> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM requests \
             WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR workflow = $2) \
             AND ($3::text IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
        );
        let found = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(filter.status.map(Status::as_str))
            .bind(filter.workflow.as_ref().map(|w| w.as_str()))
            .bind(filter.before.as_ref().map(|b| b.as_str()))
            .bind(i64::from(filter.limit))
            .fetch_all(&self.pool)
            .await?;
        rows::requests(found)
    }

    async fn save_transition(
        &self,
        r: &Request,
        expected_version: i64,
        audit: &[NewAudit],
        effects: &[Effect],
        now: Millis,
    ) -> StoreResult<bool> {
        let statement = {
            let r = r.clone();
            let (audit, effects) = (audit.to_vec(), effects.to_vec());
            move || transition_statement(&r, expected_version, &audit, &effects, now)
        };
        let row = self.writer.write_one(statement).await?;
        let saved = row.try_get::<i64, _>(0)? == 1;
        if saved && r.status.is_final() {
            // Told to other replicas after the commit, not in it: a NOTIFY in the deciding
            // transaction would hold PostgreSQL's one notification lock through its fsync and
            // so commit every decision one at a time. A notice lost here only delays a
            // long-poll on another replica until its next look (every 5 s).
            let _ = self.decided.try_send(r.id.clone());
        }
        Ok(saved)
    }

    async fn due_requests(&self, now: Millis, limit: u32) -> StoreResult<Vec<RequestId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            // Each half reads its own partial index (expiry, reminders), so a tick costs what
            // is due, not every pending request.
            "WITH expiring AS (SELECT id FROM requests WHERE status = 'pending' \
                 AND expires_at <= $1 AND (timer_lease_until IS NULL OR timer_lease_until < $1) \
                 ORDER BY expires_at LIMIT $3 FOR UPDATE SKIP LOCKED), \
             reminding AS (SELECT id FROM requests WHERE status = 'pending' \
                 AND remind_at <= $1 AND (timer_lease_until IS NULL OR timer_lease_until < $1) \
                 ORDER BY remind_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
             UPDATE requests SET timer_lease_until = $2 \
             WHERE id IN (SELECT id FROM expiring UNION SELECT id FROM reminding) \
             RETURNING id",
        )
        .bind(now)
        .bind(now + TIMER_LEASE_MS)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut ids = rows::request_ids(ids)?;
        ids.sort();
        Ok(ids)
    }

    async fn votable_requests(&self, f: &VotableFilter) -> StoreResult<Page> {
        if f.workflows.is_empty() {
            return Ok(Page::default());
        }
        let names = |w: &[WorkflowName]| w.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        let (workflows, not_own_in) = (names(&f.workflows), names(&f.not_own_in));
        let matching = "FROM requests WHERE status = 'pending' AND workflow = ANY($1) \
             AND NOT (requester IS NOT NULL AND requester = $2 AND workflow = ANY($3)) \
             AND NOT decisions::jsonb @> jsonb_build_array(jsonb_build_object('by', $2::text, 'kind', 'user'))";
        let sql = format!("SELECT {REQUEST_COLUMNS} {matching} ORDER BY id DESC LIMIT $4");
        let found = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&workflows)
            .bind(&f.voter)
            .bind(&not_own_in)
            .bind(i64::from(f.limit))
            .fetch_all(&self.pool)
            .await?;
        let sql = format!("SELECT count(*) FROM (SELECT 1 {matching} LIMIT $4) AS m");
        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(&workflows)
            .bind(&f.voter)
            .bind(&not_own_in)
            .bind(i64::from(VOTABLE_COUNT_CAP))
            .fetch_one(&self.pool)
            .await?;
        Ok(Page {
            requests: rows::requests(found)?,
            total: u32::try_from(total).unwrap_or(VOTABLE_COUNT_CAP),
        })
    }

    async fn requests_by(&self, requester: &str, limit: u32) -> StoreResult<Vec<Request>> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM requests WHERE requester = $1 ORDER BY id DESC LIMIT $2"
        );
        let found = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(requester)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows::requests(found)
    }

    async fn recently_decided(
        &self,
        workflows: &[WorkflowName],
        requester: &str,
        since: Millis,
        limit: u32,
    ) -> StoreResult<Vec<Request>> {
        let names: Vec<String> = workflows.iter().map(|w| w.to_string()).collect();
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM requests WHERE status <> 'pending' AND decided_at >= $3 \
             AND (workflow = ANY($1) OR requester = $2) \
             ORDER BY decided_at DESC, id DESC LIMIT $4"
        );
        let found = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&names)
            .bind(requester)
            .bind(since)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows::requests(found)
    }

    async fn set_slack_message(&self, id: &RequestId, channel: &str, ts: &str) -> StoreResult<()> {
        self.set_place(
            "UPDATE requests SET slack_channel = $1, slack_ts = $2 WHERE id = $3",
            id,
            channel,
            ts,
        )
        .await
    }

    async fn add_slack_copy(&self, id: &RequestId, channel: &str, ts: &str) -> StoreResult<()> {
        self.set_place(
            "UPDATE requests SET slack_copies = (COALESCE(slack_copies, '[]')::jsonb \
             || jsonb_build_array(jsonb_build_object('channel', $1::text, 'ts', $2::text)))::text \
             WHERE id = $3",
            id,
            channel,
            ts,
        )
        .await
    }
}

impl PostgresStore {
    /// Runs `sql`, which writes where a message of request `$3` is (`$1` channel, `$2` ts).
    async fn set_place(
        &self,
        sql: &'static str,
        id: &RequestId,
        channel: &str,
        ts: &str,
    ) -> StoreResult<()> {
        sqlx::query(sql)
            .bind(channel)
            .bind(ts)
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// The statement of a create: the request (nothing when its idempotency key exists), its
/// audit entries and its jobs; answers (created, job ids, job payloads).
fn create_statement(
    r: &Request,
    idempotency: Option<&Idempotency>,
    audit: &[NewAudit],
    effects: &[Effect],
    now: Millis,
) -> StoreResult<Statement> {
    let mut qb = Statement::new(
        "WITH src AS (INSERT INTO requests (id, workflow, title, details, params, requester, \
         status, decisions, decided_by, reason, created_at, decided_at, expires_at, channel, \
         callback_url, api_key_id, idempotency_key, idempotency_fingerprint, version, \
         reminders, remind_at, metadata, tool_call, digest_key, identity, form) ",
    );
    qb.push_values([r], |mut row, r| {
        row.push_bind(r.id.to_string())
            .push_bind(r.workflow.to_string())
            .push_bind(r.title.clone())
            .push_bind(r.details.clone())
            .push_bind(serde_json::to_string(&r.params).unwrap_or_default())
            .push_bind(r.requester.clone())
            .push_bind(r.status.as_str())
            .push_bind(serde_json::to_string(&r.decisions).unwrap_or_default())
            .push_bind(r.decided_by.clone())
            .push_bind(r.reason.clone())
            .push_bind(millis(r.created_at))
            .push_bind(r.decided_at.map(millis))
            .push_bind(r.expires_at.map(millis))
            .push_bind(r.channel.to_string())
            .push_bind(r.callback_url.clone())
            .push_bind(
                r.created_by
                    .as_ref()
                    .or(idempotency.map(|i| &i.api_key))
                    .map(|k| k.to_string()),
            )
            .push_bind(idempotency.map(|i| i.key.clone()))
            .push_bind(idempotency.map(|i| i.fingerprint.clone()))
            .push_bind(r.version)
            .push_bind(i64::from(r.reminders))
            .push_bind(r.remind_at.map(millis))
            .push_bind(
                r.metadata
                    .as_ref()
                    .map(|m| serde_json::Value::Object(m.clone()).to_string()),
            )
            .push_bind(
                r.tool_call
                    .as_ref()
                    .map(|t| serde_json::to_string(t).unwrap_or_default()),
            )
            .push_bind(r.digest_key.clone())
            .push_bind(
                r.identity
                    .as_ref()
                    .map(|i| serde_json::to_string(i).unwrap_or_default()),
            )
            .push_bind(rows::form_column(r));
    });
    // A repeated idempotency key conflicts; nothing is written and the earlier request is
    // looked up below (also when the two creates raced on different replicas).
    qb.push(" ON CONFLICT DO NOTHING RETURNING id)");
    push_audit_and_effects(&mut qb, "src", now, audit, effects)?;
    if effects.is_empty() {
        qb.push(" SELECT count(*), ARRAY[]::bigint[], ARRAY[]::text[] FROM src");
    } else {
        qb.push(
            " SELECT (SELECT count(*) FROM src), \
             ARRAY(SELECT id FROM job_rows ORDER BY id), \
             ARRAY(SELECT payload FROM job_rows ORDER BY id)",
        );
    }
    Ok(qb)
}

/// The statement of a transition: the request, if still at `expected_version`, with its audit
/// entries and jobs; answers how many requests it changed (0 or 1).
fn transition_statement(
    r: &Request,
    expected_version: i64,
    audit: &[NewAudit],
    effects: &[Effect],
    now: Millis,
) -> StoreResult<Statement> {
    let mut qb = Statement::new("WITH src AS (UPDATE requests SET status = ");
    qb.push_bind(r.status.as_str())
        .push(", decisions = ")
        .push_bind(to_json(&r.decisions)?)
        .push(", decided_by = ")
        .push_bind(r.decided_by.clone())
        .push(", reason = ")
        .push_bind(r.reason.clone())
        .push(", decided_at = ")
        .push_bind(r.decided_at.map(millis))
        .push(", version = ")
        .push_bind(r.version)
        .push(", reminders = ")
        .push_bind(i64::from(r.reminders))
        .push(", remind_at = ")
        .push_bind(r.remind_at.map(millis))
        .push(" WHERE id = ")
        .push_bind(r.id.to_string())
        .push(" AND version = ")
        .push_bind(expected_version)
        .push(" RETURNING id)");
    push_audit_and_effects(&mut qb, "src", now, audit, effects)?;
    qb.push(" SELECT count(*) FROM src");
    Ok(qb)
}
