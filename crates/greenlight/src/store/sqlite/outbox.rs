//! SQLite: the outbox, claimed lane by lane by the one writer, and its deliveries.

use async_trait::async_trait;
use rusqlite::{Connection, params};

use super::rows::{all, first};
use super::*;
use crate::domain::{Millis, RequestId};
use crate::store::rows as shared;

sql!(
    pub(super) DELIVERIES = "SELECT {} FROM outbox WHERE request_id = ?1 ORDER BY id",
    shared::DELIVERY_COLUMNS
);

fn finish_in(
    conn: &Connection,
    id: i64,
    now: Millis,
    report: &JobReport,
    entries: &Entries,
) -> StoreResult<()> {
    let shared::Finish {
        state,
        next,
        error,
        counts,
        outcome,
    } = shared::Finish::of(&report.result);
    conn.prepare_cached(
        "UPDATE outbox SET state = ?1, next_attempt_at = COALESCE(?2, next_attempt_at), \
         last_error = COALESCE(?3, last_error), attempts = attempts + ?4, leased_until = NULL, \
         updated_at = ?5 WHERE id = ?6",
    )?
    .execute(params![
        state.as_str(),
        next,
        error,
        i64::from(counts && report.attempted),
        now,
        id
    ])?;
    if report.attempted {
        conn.prepare_cached(
            "INSERT INTO outbox_attempts (job_id, at, outcome, error) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![id, now, outcome, error])?;
    }
    if let Some(m) = &report.posted {
        conn.prepare_cached(
            "UPDATE requests SET slack_channel = ?1, slack_ts = ?2 \
             WHERE id = (SELECT request_id FROM outbox WHERE id = ?3)",
        )?
        .execute(params![m.channel, m.ts, id])?;
    }
    if let Some(a) = &report.action {
        conn.prepare_cached(
            "INSERT INTO action_results (request_id, name, ok, summary, attempts, at) \
             SELECT request_id, ?2, ?3, ?4, ?5, ?6 FROM outbox WHERE id = ?1",
        )?
        .execute(params![
            id,
            a.name,
            a.ok,
            a.summary,
            i64::from(a.attempts),
            millis(a.at)
        ])?;
    }
    entries.write(conn)
}

/// Leases up to `limit` due jobs of one lane.
pub(super) const CLAIM_LANE: &str = "UPDATE outbox SET leased_until = ?1, claims = claims + 1 \
     WHERE id IN (SELECT id FROM outbox WHERE state = 'pending' AND lane = ?2 \
     AND next_attempt_at <= ?3 AND (leased_until IS NULL OR leased_until < ?3) \
     ORDER BY next_attempt_at, id LIMIT ?4) \
     RETURNING id, payload, attempts, claims, created_at";

/// The first job of a lane that nobody holds, by the lane's due index: it walks past the
/// leased jobs (those in flight) and stops at the first free one.
pub(super) const NEXT_DUE_IN_LANE: &str = "SELECT next_attempt_at FROM outbox \
     WHERE state = 'pending' AND lane = ?1 AND (leased_until IS NULL OR leased_until < ?2) \
     ORDER BY next_attempt_at LIMIT 1";

#[async_trait]
impl Outbox for SqliteStore {
    async fn record(&self, audit: &[NewAudit], effects: &[Effect], now: Millis) -> StoreResult<()> {
        let entries = Entries::of(now, audit, effects)?;
        self.writer.write(move |conn| entries.write(conn)).await
    }

    async fn claim_jobs(
        &self,
        _owner: &str,
        lanes: &[(Lane, u32)],
        now: Millis,
        lease_ms: Millis,
    ) -> StoreResult<Vec<Job>> {
        let lanes: Vec<(Lane, u32)> = lanes.iter().copied().filter(|(_, n)| *n > 0).collect();
        if lanes.is_empty() {
            return Ok(Vec::new());
        }
        let found = self
            .writer
            .write(move |conn| {
                let mut found: Vec<shared::JobRow> = Vec::new();
                for (lane, limit) in &lanes {
                    found.extend(all::<shared::JobRow>(
                        conn,
                        CLAIM_LANE,
                        params![now + lease_ms, lane.as_str(), now, i64::from(*limit)],
                    )?);
                }
                Ok(found)
            })
            .await?;
        shared::jobs(found)
    }

    async fn recover_leases(&self) -> StoreResult<u64> {
        self.writer
            .execute(
                "UPDATE outbox SET leased_until = NULL WHERE state = 'pending' AND leased_until IS NOT NULL",
                (),
            )
            .await
    }

    async fn release_leases(&self, _owner: &str) -> StoreResult<u64> {
        // One process per file: every lease is this process's own.
        self.recover_leases().await
    }

    async fn finish_job(&self, id: i64, now: Millis, report: &JobReport) -> StoreResult<()> {
        let entries = Entries::of(now, &report.audit, &report.effects)?;
        // What finish_in reads; the audit and effects travel as `entries`.
        let report = JobReport {
            action: report.action.clone(),
            posted: report.posted.clone(),
            ..JobReport::new(report.result.clone(), report.attempted)
        };
        self.writer
            .write(move |conn| finish_in(conn, id, now, &report, &entries))
            .await
    }

    async fn next_job_due(&self, lanes: &[Lane], now: Millis) -> StoreResult<Option<Millis>> {
        let lanes = lanes.to_vec();
        self.readers
            .read(move |conn| {
                let mut next: Option<Millis> = None;
                for lane in &lanes {
                    let due: Option<i64> =
                        first(conn, NEXT_DUE_IN_LANE, params![lane.as_str(), now])?;
                    next = match (next, due) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                Ok(next)
            })
            .await
    }

    async fn deliveries(&self, request_id: &RequestId) -> StoreResult<Vec<Delivery>> {
        let id = request_id.clone();
        self.readers
            .read(move |conn| {
                let jobs = all(conn, &DELIVERIES, [id.as_str()])?;
                let attempts = all(
                    conn,
                    "SELECT a.job_id, a.at, a.outcome, a.error FROM outbox_attempts a \
                     JOIN outbox o ON o.id = a.job_id WHERE o.request_id = ?1 ORDER BY a.id DESC",
                    [id.as_str()],
                )?;
                shared::deliveries(jobs, attempts)
            })
            .await
    }

    async fn action_results(&self, request_id: &RequestId) -> StoreResult<Vec<ActionResult>> {
        let id = request_id.clone();
        // A few rows by the request's key, read for every message rendered: a point read.
        self.readers
            .point(move |conn| {
                let found: Vec<shared::ActionRow> = all(
                    conn,
                    "SELECT name, ok, summary, attempts, at FROM action_results \
                     WHERE request_id = ?1 ORDER BY id",
                    [id.as_str()],
                )?;
                found.into_iter().map(ActionResult::try_from).collect()
            })
            .await
    }
}
