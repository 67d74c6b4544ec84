//! The table's rows, built from the measured results: greenlight beside the peer, each with
//! its target and whether it was met.

use std::time::Duration;

use serde_json::json;

use crate::Sizes;
use crate::load::RunResult;
use crate::report::{self, Cell, Row, mb, ms, rate, secs, thousands};
use crate::scenarios::{Creates, GreenlightClicks, Million, PeerResults, PgRun, UpdateRun};

/// The table: one row per measurement, in the issue's order.
pub(crate) fn rows(
    s: &Sizes,
    gl: &GreenlightClicks,
    peer: Option<&PeerResults>,
    creates: &Creates,
    million: Option<&Million>,
    skip_peer: bool,
) -> Vec<Row> {
    let not_run = if skip_peer { "--skip-peer" } else { "not run" };
    let peer_cell = |f: &dyn Fn(&PeerResults) -> Cell| peer.map_or_else(|| Cell::na(not_run), f);
    let mut rows = Vec::new();

    let gl_rate = gl.runs.closed.throughput(200);
    let peer_rate = peer.map(|p| p.runs.closed.throughput(200));
    let ratio = peer_rate.filter(|r| *r > 0.0).map(|r| gl_rate / r);
    rows.push(Row {
        id: "decisions_closed".into(),
        measurement: format!(
            "Durable decisions (signed clicks on distinct pending requests), closed loop, {} connections, up to {}",
            s.connections,
            secs(s.duration)
        ),
        greenlight: Cell::new(
            match ratio {
                Some(x) => format!("{} ({x:.1}x the peer)", rate(gl_rate)),
                None => rate(gl_rate),
            },
            json!({"per_s": gl_rate, "acks": gl.runs.closed.ok(200), "failed": gl.runs.closed.failed(200),
                   "elapsed_s": gl.runs.closed.elapsed.as_secs_f64(), "vs_peer": ratio}),
        ),
        peer: peer_cell(&|p| {
            let r = p.runs.closed.throughput(200);
            Cell::new(
                rate(r),
                json!({"per_s": r, "acks": p.runs.closed.ok(200), "failed": p.runs.closed.failed(200),
                       "elapsed_s": p.runs.closed.elapsed.as_secs_f64()}),
            )
        }),
        target: ">= 10,000/s and >= 20x the peer".to_owned(),
        met: Some(gl_rate >= 10_000.0 && ratio.is_none_or(|x| x >= 20.0)),
    });
    rows.push(Row {
        id: "ack_closed".into(),
        measurement: "Ack latency in that closed loop, p50 / p99 / p99.9".to_owned(),
        greenlight: report::latency_cell(&gl.runs.closed, 200),
        peer: peer_cell(&|p| report::latency_cell(&p.runs.closed, 200)),
        target: "-".to_owned(),
        met: None,
    });
    for (i, (r, run)) in gl.runs.open.iter().enumerate() {
        let Some(run) = run else { continue };
        let p99 = run.latencies().percentile_ms(99.0);
        // The issue's targets: p99 < 10 ms at 1,000/s, < 25 ms at 5,000/s with none failed.
        let limit = match *r as u64 {
            1000 => Some(10.0),
            5000 => Some(25.0),
            _ => None,
        };
        rows.push(Row {
            id: format!("ack_open_{}", i + 1),
            measurement: format!(
                "Ack latency, open loop {}/s for {}, from the scheduled send time, p50 / p99 / p99.9",
                thousands(*r as u64),
                secs(s.open_duration)
            ),
            greenlight: report::latency_cell(run, 200),
            peer: peer_cell(&|p| match &p.runs.open[i].1 {
                Some(run) => report::latency_cell(run, 200),
                None => Cell::na(&format!(
                    "not run above {}/s (--peer-max-rate)",
                    thousands(s.peer_max_rate as u64)
                )),
            }),
            target: limit.map_or_else(
                || "-".to_owned(),
                |l| format!("p99 < {l} ms, nothing failed"),
            ),
            met: limit.map(|l| p99.is_some_and(|v| v < l) && run.failed(200) == 0),
        });
    }
    if let Some(ceiling) = &gl.ceiling {
        let top = ceiling.throughput(200);
        let share = (top > 0.0).then(|| gl_rate / top);
        rows.push(Row {
            id: "ceiling".into(),
            measurement: format!(
                "The ceiling: signed clicks on a button greenlight ignores (verify, parse; no read, no write), closed loop, {} connections",
                s.connections
            ),
            greenlight: Cell::new(
                match share {
                    Some(x) => format!("{} (decisions are {:.0}% of it)", rate(top), x * 100.0),
                    None => rate(top),
                },
                json!({"per_s": top, "acks": ceiling.ok(200), "failed": ceiling.failed(200),
                       "decisions_share": share}),
            ),
            peer: Cell::na("-"),
            target: "reported; decisions >= 70% of it".to_owned(),
            met: Some(share.is_some_and(|x| x >= 0.7)),
        });
    }
    let slow_p99 = gl.runs.slow.latencies().percentile_ms(99.0);
    rows.push(Row {
        id: "ack_slow_slack".into(),
        measurement: format!(
            "Ack latency while every Slack API call takes {}, open loop {}/s for {}, p50 / p99 / p99.9",
            ms(Some(s.slack_latency.as_secs_f64() * 1000.0)),
            s.slow_rate,
            secs(s.slow_duration)
        ),
        greenlight: report::latency_cell(&gl.runs.slow, 200),
        peer: peer_cell(&|p| report::latency_cell(&p.runs.slow, 200)),
        target: "p99 < 50 ms (Slack's limit: 3 s)".to_owned(),
        met: Some(slow_p99.is_some_and(|v| v < 50.0) && gl.runs.slow.failed(200) == 0),
    });
    for (id, notify, result, target) in [
        ("create_rule", "message", &creates.rule, ">= 10,000/s"),
        ("create_digest", "digest", &creates.digest, ">= 10,000/s"),
    ] {
        let rate_of = |(run, approved): &(RunResult, usize)| {
            *approved as f64 / run.elapsed.as_secs_f64().max(1e-9)
        };
        let cell = match result {
            Ok(r @ (run, approved)) => Cell::new(
                format!(
                    "{} ({} of {} answers approved)",
                    rate(rate_of(r)),
                    thousands(*approved as u64),
                    thousands(run.samples.len() as u64)
                ),
                json!({"per_s": rate_of(r), "approved": approved,
                       "requests": run.samples.len(), "elapsed_s": run.elapsed.as_secs_f64(),
                       "p50_ms": run.latencies().percentile_ms(50.0), "p99_ms": run.latencies().percentile_ms(99.0)}),
            ),
            Err(why) => Cell::na(why),
        };
        let per_s = result.as_ref().ok().map(rate_of);
        rows.push(Row {
            id: id.into(),
            measurement: format!(
                "Creates auto-approved by a CEL rule, notify = \"{notify}\" (POST /v1/requests, durable), closed loop, {} connections, {}",
                s.connections,
                secs(s.create_duration)
            ),
            greenlight: cell,
            peer: Cell::na("no API"),
            target: target.to_owned(),
            met: (target != "-").then(|| per_s.is_some_and(|r| r >= 10_000.0)),
        });
    }
    let plain = &creates.plain;
    rows.push(Row {
        id: "create_plain".into(),
        measurement: format!(
            "Creates, pending and posted to Slack, closed loop, {} connections, {}",
            s.connections,
            secs(s.create_duration)
        ),
        greenlight: Cell::new(
            rate(plain.throughput(201)),
            json!({"per_s": plain.throughput(201), "created": plain.ok(201), "failed": plain.failed(201),
                   "p50_ms": plain.latencies().percentile_ms(50.0), "p99_ms": plain.latencies().percentile_ms(99.0)}),
        ),
        peer: Cell::na("no API"),
        target: "-".to_owned(),
        met: None,
    });
    let update_cell = |u: &UpdateRun| {
        let (p50, p99) = (
            u.latencies.percentile_ms(50.0),
            u.latencies.percentile_ms(99.0),
        );
        let mut text = format!("{} / {}", ms(p50), ms(p99));
        if u.missing > 0 {
            text.push_str(&format!(
                " ({} of {} never updated)",
                u.missing,
                u.run.samples.len()
            ));
        }
        Cell::new(
            text,
            json!({"p50_ms": p50, "p99_ms": p99, "clicks": u.run.samples.len(), "missing": u.missing}),
        )
    };
    rows.push(Row {
        id: "click_to_update".into(),
        measurement: format!(
            "Click sent -> chat.update applied by Slack, {}/s for {}, p50 / p99",
            s.update_rate,
            secs(s.update_duration)
        ),
        greenlight: update_cell(&gl.runs.update),
        peer: peer_cell(&|p| update_cell(&p.runs.update)),
        target: "p50 < 20 ms".to_owned(),
        met: Some(
            gl.runs
                .update
                .latencies
                .percentile_ms(50.0)
                .is_some_and(|v| v < 20.0)
                && gl.runs.update.missing == 0,
        ),
    });
    let rss_cell = |b: Option<u64>| match b {
        Some(b) => Cell::new(mb(Some(b)), json!({"bytes": b})),
        None => Cell::na("not measured"),
    };
    rows.push(Row {
        id: "rss_idle".into(),
        measurement: "Resident memory (VmRSS) idle, 1 s after start".to_owned(),
        greenlight: rss_cell(gl.idle_rss),
        peer: peer_cell(&|p| rss_cell(p.idle_rss)),
        target: "< 30 MB".to_owned(),
        met: gl.idle_rss.map(|b| b < 30_000_000),
    });
    rows.push(Row {
        id: "rss_peak".into(),
        measurement: "Peak resident memory (VmHWM) over the click runs".to_owned(),
        greenlight: rss_cell(gl.peak_rss),
        peer: peer_cell(&|p| rss_cell(p.peak_rss)),
        target: "-".to_owned(),
        met: None,
    });
    match million {
        Some(m) => {
            rows.push(Row {
                id: "rss_million".into(),
                measurement: format!(
                    "Resident memory with {} stored requests, after start and 1,000 reads",
                    thousands(m.seeded.rows as u64)
                ),
                greenlight: Cell::new(
                    format!(
                        "{} (after start: {})",
                        mb(m.rss_after_reads),
                        mb(m.rss_started)
                    ),
                    json!({"bytes": m.rss_after_reads, "after_start_bytes": m.rss_started,
                           "database_bytes": m.seeded.file_bytes}),
                ),
                peer: Cell::na("stores nothing"),
                target: "< 100 MB".to_owned(),
                met: m.rss_after_reads.map(|b| b < 100_000_000),
            });
            rows.push(Row {
                id: "startup_million".into(),
                measurement: format!(
                    "Start-up with {} stored requests (spawn -> /readyz 200)",
                    thousands(m.seeded.rows as u64)
                ),
                greenlight: Cell::new(
                    ms(Some(m.startup.as_secs_f64() * 1000.0)),
                    json!({"ms": m.startup.as_secs_f64() * 1000.0}),
                ),
                peer: Cell::na("stores nothing"),
                target: "< 1 s".to_owned(),
                met: Some(m.startup < Duration::from_secs(1)),
            });
        }
        None => {
            for (id, what) in [
                (
                    "rss_million",
                    "Resident memory with a million stored requests",
                ),
                ("startup_million", "Start-up with a million stored requests"),
            ] {
                rows.push(Row {
                    id: id.into(),
                    measurement: what.to_owned(),
                    greenlight: Cell::na("--skip-million"),
                    peer: Cell::na("stores nothing"),
                    target: "-".to_owned(),
                    met: None,
                });
            }
        }
    }
    let acks = gl.runs.acks();
    // A click the generator gave up on (or that was answered with an error) may still have
    // been decided: it counts as allowed, never as required.
    let (mut cell, durable) = durable_cell(gl.decided, acks, gl.runs.not_acked());
    cell.values =
        Some(json!({"decided_in_db": gl.decided, "acks": acks, "not_acked": gl.runs.not_acked()}));
    rows.push(Row {
        id: "durable_clicks".into(),
        measurement:
            "Decided requests in the database after SIGKILL = clicks acked 200 (all click runs)"
                .to_owned(),
        greenlight: cell,
        peer: Cell::na("keeps no state"),
        target: "equal (plus at most the clicks not acked)".to_owned(),
        met: Some(durable),
    });
    let approved_answers = creates.rule.as_ref().map_or(0, |(_, a)| *a)
        + creates.digest.as_ref().map_or(0, |(_, a)| *a);
    let created = creates.plain.ok(201);
    rows.push(Row {
        id: "durable_creates".into(),
        measurement: "Pending / approved requests in the database after SIGKILL = creates answered 201 / approved".to_owned(),
        greenlight: Cell::new(
            format!(
                "{} / {} = {} / {}",
                thousands(creates.pending_in_db.max(0) as u64),
                thousands(creates.approved_in_db.max(0) as u64),
                thousands(created as u64),
                thousands(approved_answers as u64)
            ),
            json!({"pending_in_db": creates.pending_in_db, "approved_in_db": creates.approved_in_db,
                   "created": created, "approved_answers": approved_answers}),
        ),
        peer: Cell::na("no API"),
        target: "equal".to_owned(),
        met: Some(creates.pending_in_db == created as i64 && creates.approved_in_db == approved_answers as i64),
    });
    rows
}

/// The PostgreSQL rows, per replica count: decisions, PostgreSQL CPU per decision, ack latency
/// (closed loop and open loop), creates, and the two durability counts. The targets are issue
/// 30's: 5,000 decisions/s, 150 µs of PostgreSQL CPU a decision and ack p99 < 20 ms at 1,000
/// clicks/s with one and two replicas, 6,000 creates/s with one.
pub(crate) fn pg_rows(s: &Sizes, runs: &[PgRun], skipped: bool) -> Vec<Row> {
    let mut rows = Vec::new();
    let peer = || Cell::na("one process, no database");
    for &n in &s.replicas {
        let label = format!(
            "PostgreSQL, {n} replica{}",
            if n == 1 {
                ""
            } else {
                "s, load spread over them"
            }
        );
        let two = n == 2;
        let measured = runs.iter().find(|r| r.replicas == n);
        let cell = |f: &dyn Fn(&PgRun) -> Cell| {
            measured.map_or_else(
                || {
                    Cell::na(if skipped {
                        "--skip-postgres"
                    } else {
                        "not run"
                    })
                },
                f,
            )
        };
        let decisions = measured.map(|r| r.closed.throughput(200));
        rows.push(Row {
            id: format!("pg{n}_decisions_closed"),
            measurement: format!(
                "{label}: durable decisions (signed clicks on distinct pending requests), closed loop, {} connections, up to {}",
                s.connections,
                secs(s.duration)
            ),
            greenlight: cell(&|r| {
                let per_s = r.closed.throughput(200);
                let ran = r.closed.elapsed;
                let text = if ran + Duration::from_millis(500) < s.duration {
                    format!(
                        "{} (its pool of {} ran out after {:.1} s)",
                        rate(per_s),
                        thousands(r.closed.samples.len() as u64),
                        ran.as_secs_f64()
                    )
                } else {
                    rate(per_s)
                };
                Cell::new(
                    text,
                    json!({"per_s": per_s, "acks": r.closed.ok(200), "failed": r.closed.failed(200),
                           "elapsed_s": r.closed.elapsed.as_secs_f64(), "cpu": r.closed_cpu.json()}),
                )
            }),
            peer: peer(),
            target: ">= 5,000/s".to_owned(),
            met: decisions.map(|d| d >= 5_000.0),
        });
        let per_decision = measured.and_then(PgRun::pg_cpu_per_decision);
        rows.push(Row {
            id: format!("pg{n}_pg_cpu_per_decision"),
            measurement: format!(
                "{label}: PostgreSQL CPU per durable decision (backends of the run's database, over that closed loop and the drain of its message updates)"
            ),
            greenlight: cell(&|r| match r.pg_cpu_per_decision() {
                Some(d) => Cell::new(
                    format!("{} µs", d.as_micros()),
                    json!({"us": d.as_secs_f64() * 1e6, "cpu": r.drained_cpu.json()}),
                ),
                None => Cell::na("no decision acked"),
            }),
            peer: peer(),
            target: "<= 150 µs".to_owned(),
            met: per_decision.map(|d| d.as_micros() <= 150),
        });
        rows.push(Row {
            id: format!("pg{n}_ack_closed"),
            measurement: format!("{label}: ack latency in that closed loop, p50 / p99 / p99.9"),
            greenlight: cell(&|r| report::latency_cell(&r.closed, 200)),
            peer: peer(),
            target: "-".to_owned(),
            met: None,
        });
        let at_1000 = (s.pg_rate - 1000.0).abs() < f64::EPSILON;
        rows.push(Row {
            id: format!("pg{n}_ack_open_1000"),
            measurement: format!(
                "{label}: ack latency, open loop {}/s for {}, from the scheduled send time, p50 / p99 / p99.9",
                thousands(s.pg_rate as u64),
                secs(s.open_duration)
            ),
            greenlight: cell(&|r| report::latency_cell(&r.open, 200)),
            peer: peer(),
            target: if at_1000 {
                "p99 < 20 ms".to_owned()
            } else {
                "-".to_owned()
            },
            met: at_1000
                .then(|| {
                    measured.map(|r| {
                        r.open.latencies().percentile_ms(99.0).is_some_and(|v| v < 20.0)
                            && r.open.failed(200) == 0
                    })
                })
                .flatten(),
        });
        rows.push(Row {
            id: format!("pg{n}_creates"),
            measurement: format!(
                "{label}: creates, pending and posted to Slack, closed loop, {} connections, {}",
                s.connections,
                secs(s.create_duration)
            ),
            greenlight: cell(&|r| {
                let c = &r.creates;
                Cell::new(
                    rate(c.throughput(201)),
                    json!({"per_s": c.throughput(201), "created": c.ok(201), "failed": c.failed(201),
                           "p50_ms": c.latencies().percentile_ms(50.0), "p99_ms": c.latencies().percentile_ms(99.0)}),
                )
            }),
            peer: Cell::na("no API"),
            target: if two { "-" } else { ">= 6,000/s" }.to_owned(),
            met: (!two)
                .then(|| measured.map(|r| r.creates.throughput(201) >= 6_000.0))
                .flatten(),
        });
        rows.push(Row {
            id: format!("pg{n}_durable_clicks"),
            measurement: format!(
                "{label}: decided requests in PostgreSQL after SIGKILL to every replica = clicks acked 200"
            ),
            greenlight: cell(&|r| durable_cell(r.decided, r.acks(), r.clicks_unanswered()).0),
            peer: Cell::na("keeps no state"),
            target: "equal".to_owned(),
            met: measured.map(|r| durable_cell(r.decided, r.acks(), r.clicks_unanswered()).1),
        });
        rows.push(Row {
            id: format!("pg{n}_durable_creates"),
            measurement: format!(
                "{label}: pending requests in PostgreSQL after SIGKILL to every replica = creates answered 201"
            ),
            greenlight: cell(&|r| {
                durable_cell(r.pending_in_db, r.creates.ok(201), r.creates.ok(0)).0
            }),
            peer: Cell::na("no API"),
            target: "equal".to_owned(),
            met: measured
                .map(|r| durable_cell(r.pending_in_db, r.creates.ok(201), r.creates.ok(0)).1),
        });
    }
    rows
}

/// "stored = answered", plus the share of unanswered requests that were stored anyway; met
/// when every answered request is stored and nothing beyond the unanswered ones.
fn durable_cell(stored: i64, answered: usize, unanswered: usize) -> (Cell, bool) {
    let extra = stored - answered as i64;
    let mut text = format!(
        "{} = {}",
        thousands(stored.max(0) as u64),
        thousands(answered as u64)
    );
    if unanswered > 0 {
        text = format!(
            "{} = {} + {} of the {} not acked (timed out or refused)",
            thousands(stored.max(0) as u64),
            thousands(answered as u64),
            extra,
            thousands(unanswered as u64)
        );
    }
    let met = extra >= 0 && extra <= unanswered as i64;
    (
        Cell::new(
            text,
            json!({"in_db": stored, "answered": answered, "unanswered": unanswered}),
        ),
        met,
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::Options;

    #[test]
    fn a_timed_out_request_may_be_stored_but_an_answered_one_must_be() {
        assert_eq!(durable_cell(10, 10, 0).0.text, "10 = 10");
        assert!(durable_cell(10, 10, 0).1);
        assert!(!durable_cell(9, 10, 0).1, "an acked decision was lost");
        assert!(!durable_cell(11, 10, 0).1, "a row nobody asked for");
        let (cell, met) = durable_cell(1_012, 1_000, 30);
        assert_eq!(
            cell.text,
            "1,012 = 1,000 + 12 of the 30 not acked (timed out or refused)"
        );
        assert!(met);
        assert!(!durable_cell(1_031, 1_000, 30).1);
    }

    #[test]
    fn skipped_postgres_rows_still_stand_in_the_table_with_the_targets_of_issue_30() {
        let sizes = Options::parse_from(["greenlight-bench", "--skip-postgres"]).sizes();
        let rows = pg_rows(&sizes, &[], true);
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        for n in [1, 2] {
            for what in [
                "decisions_closed",
                "pg_cpu_per_decision",
                "ack_closed",
                "ack_open_1000",
                "creates",
                "durable_clicks",
                "durable_creates",
            ] {
                assert!(ids.contains(&format!("pg{n}_{what}").as_str()), "{ids:?}");
            }
        }
        assert!(
            rows.iter()
                .all(|r| r.greenlight.values.is_none() && r.met.is_none())
        );
        let targets: Vec<(&str, &str)> = rows
            .iter()
            .filter(|r| r.target != "-" && r.target != "equal")
            .map(|r| (r.id.as_str(), r.target.as_str()))
            .collect();
        assert_eq!(
            targets,
            [
                ("pg1_decisions_closed", ">= 5,000/s"),
                ("pg1_pg_cpu_per_decision", "<= 150 µs"),
                ("pg1_ack_open_1000", "p99 < 20 ms"),
                ("pg1_creates", ">= 6,000/s"),
                ("pg2_decisions_closed", ">= 5,000/s"),
                ("pg2_pg_cpu_per_decision", "<= 150 µs"),
                ("pg2_ack_open_1000", "p99 < 20 ms"),
            ]
        );
    }
}
