//! PostgreSQL: the outbox, claimed with `FOR UPDATE SKIP LOCKED` under leases that run out,
//! and its deliveries.

use async_trait::async_trait;

use super::*;
use crate::domain::{Millis, RequestId};
use crate::store::rows;

#[async_trait]
impl Outbox for PostgresStore {
    async fn record(&self, audit: &[NewAudit], effects: &[Effect], now: Millis) -> StoreResult<()> {
        if audit.is_empty() && effects.is_empty() {
            return Ok(());
        }
        let (audit, effects) = (audit.to_vec(), effects.to_vec());
        self.writer
            .write_one(move || {
                let mut qb = Statement::new("WITH src AS (SELECT 1 AS one)");
                push_audit_and_effects(&mut qb, "src", now, &audit, &effects)?;
                qb.push(" SELECT count(*) FROM src");
                Ok(qb)
            })
            .await
            .map(|_| ())
    }

    async fn claim_jobs(
        &self,
        owner: &str,
        lanes: &[(Lane, u32)],
        now: Millis,
        lease_ms: Millis,
    ) -> StoreResult<Vec<Job>> {
        let lanes: Vec<(Lane, u32)> = lanes.iter().copied().filter(|(_, n)| *n > 0).collect();
        if lanes.is_empty() {
            return Ok(Vec::new());
        }
        // On a connection of its own, not in a batch: a claim walks the queue, and the votes
        // and results behind it in a batch would wait for that walk.
        let found = claim_statement(owner, &lanes, now, lease_ms)
            .build_query_as()
            .fetch_all(&self.pool)
            .await?;
        rows::jobs(found)
    }

    async fn recover_leases(&self) -> StoreResult<u64> {
        // Other replicas hold their leases; a dead one's run out by themselves.
        Ok(0)
    }

    async fn release_leases(&self, owner: &str) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE outbox SET leased_until = NULL, lease_owner = NULL \
             WHERE state = 'pending' AND lease_owner = $1",
        )
        .bind(owner)
        .execute(&self.pool)
        .await?;
        sqlx::query("DELETE FROM message_leases WHERE left(owner, length($1)) = $1")
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn finish_job(&self, id: i64, now: Millis, report: &JobReport) -> StoreResult<()> {
        let report = report.clone();
        self.writer
            .write_one(move || finish_statement(id, now, &report))
            .await
            .map(|_| ())
    }

    async fn next_job_due(&self, lanes: &[Lane], now: Millis) -> StoreResult<Option<Millis>> {
        // One index walk per lane (outbox_lane_due), past the jobs in flight.
        let names: Vec<&str> = lanes.iter().map(|l| l.as_str()).collect();
        Ok(sqlx::query_scalar(
            "SELECT MIN(( \
                 SELECT next_attempt_at FROM outbox \
                 WHERE state = 'pending' AND lane = l \
                   AND (leased_until IS NULL OR leased_until < $2) \
                 ORDER BY next_attempt_at LIMIT 1)) \
             FROM unnest($1::text[]) AS l",
        )
        .bind(&names)
        .bind(now)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn deliveries(&self, request_id: &RequestId) -> StoreResult<Vec<Delivery>> {
        let sql = format!(
            "SELECT {} FROM outbox WHERE request_id = $1 ORDER BY id",
            rows::DELIVERY_COLUMNS
        );
        let jobs = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(request_id.as_str())
            .fetch_all(&self.pool)
            .await?;
        let attempts = sqlx::query_as(
            "SELECT a.job_id, a.at, a.outcome, a.error FROM outbox_attempts a \
             JOIN outbox o ON o.id = a.job_id WHERE o.request_id = $1 ORDER BY a.id DESC",
        )
        .bind(request_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows::deliveries(jobs, attempts)
    }

    async fn action_results(&self, request_id: &RequestId) -> StoreResult<Vec<ActionResult>> {
        let found: Vec<rows::ActionRow> = sqlx::query_as(
            "SELECT name, ok, summary, attempts, at FROM action_results WHERE request_id = $1 ORDER BY id",
        )
        .bind(request_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        found.into_iter().map(ActionResult::try_from).collect()
    }
}

/// The claim of up to each lane's share of due jobs, skipping rows other replicas hold.
fn claim_statement(owner: &str, lanes: &[(Lane, u32)], now: Millis, lease_ms: Millis) -> Statement {
    // One CTE per lane: each takes its own share, skipping rows other replicas hold.
    let mut qb = Statement::new("WITH ");
    for (i, (lane, limit)) in lanes.iter().enumerate() {
        if i > 0 {
            qb.push(", ");
        }
        qb.push(format!(
            "lane{i} AS (SELECT id FROM outbox WHERE state = 'pending' AND lane = "
        ))
        .push_bind(lane.as_str())
        .push(" AND next_attempt_at <= ")
        .push_bind(now);
        qb.push(" AND (leased_until IS NULL OR leased_until < ")
            .push_bind(now)
            .push(") ORDER BY next_attempt_at, id LIMIT ")
            .push_bind(i64::from(*limit))
            .push(" FOR UPDATE SKIP LOCKED)");
    }
    qb.push(" UPDATE outbox SET leased_until = ")
        .push_bind(now + lease_ms)
        .push(", lease_owner = ")
        .push_bind(owner.to_owned())
        .push(", claims = claims + 1 WHERE id IN (");
    for i in 0..lanes.len() {
        if i > 0 {
            qb.push(" UNION ALL ");
        }
        qb.push(format!("SELECT id FROM lane{i}"));
    }
    qb.push(") RETURNING id, payload, attempts, claims, created_at");
    qb
}

/// The result of one delivery attempt: the job's new state, the attempt, what it learnt (the
/// posted message, an action's result) and what it sets off.
fn finish_statement(id: i64, now: Millis, report: &JobReport) -> StoreResult<Statement> {
    let rows::Finish {
        state,
        next,
        error,
        counts,
        outcome,
    } = rows::Finish::of(&report.result);
    let mut qb = Statement::new("WITH src AS (UPDATE outbox SET state = ");
    qb.push_bind(state.as_str())
        .push(", next_attempt_at = COALESCE(")
        .push_bind(next)
        .push(", next_attempt_at), last_error = COALESCE(")
        .push_bind(error.map(str::to_owned))
        .push(", last_error), attempts = attempts + ")
        .push_bind(i64::from(counts && report.attempted))
        .push(", leased_until = NULL, lease_owner = NULL, updated_at = ")
        .push_bind(now)
        .push(" WHERE id = ")
        .push_bind(id)
        .push(" RETURNING id, request_id)");
    if report.attempted {
        qb.push(", attempt_rows AS (INSERT INTO outbox_attempts (job_id, at, outcome, error) SELECT id, ")
            .push_bind(now)
            .push(", ")
            .push_bind(outcome)
            .push(", ")
            .push_bind(error.map(str::to_owned))
            .push(" FROM src)");
    }
    if let Some(m) = &report.posted {
        qb.push(", posted_rows AS (UPDATE requests SET slack_channel = ")
            .push_bind(m.channel.clone())
            .push(", slack_ts = ")
            .push_bind(m.ts.clone())
            .push(" FROM src WHERE requests.id = src.request_id)");
    }
    if let Some(a) = &report.action {
        qb.push(", action_rows AS (INSERT INTO action_results (request_id, name, ok, summary, attempts, at) SELECT request_id, ")
            .push_bind(a.name.clone())
            .push(", ")
            .push_bind(a.ok)
            .push(", ")
            .push_bind(a.summary.clone())
            .push(", ")
            .push_bind(i64::from(a.attempts))
            .push(", ")
            .push_bind(millis(a.at))
            .push(" FROM src)");
    }
    push_audit_and_effects(&mut qb, "src", now, &report.audit, &report.effects)?;
    qb.push(" SELECT count(*) FROM src");
    Ok(qb)
}
