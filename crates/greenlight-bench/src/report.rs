//! The results: one row per measurement, greenlight beside the peer from the same run, with the
//! target next to them; printed as a markdown table and written as JSON.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::load::{Latencies, RunResult};

/// One side's figure: the text shown in the table and the numbers behind it.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub text: String,
    /// `None` when this system was not measured (or cannot be).
    pub values: Option<Value>,
}

impl Cell {
    pub fn na(why: &str) -> Self {
        Self {
            text: format!("n/a ({why})"),
            values: None,
        }
    }

    pub fn new(text: String, values: Value) -> Self {
        Self {
            text,
            values: Some(values),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub id: String,
    pub measurement: String,
    pub greenlight: Cell,
    pub peer: Cell,
    pub target: String,
    /// Whether greenlight met the target (`None`: no target, or not measured).
    pub met: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub date: String,
    pub machine: Value,
    pub command: String,
    pub settings: Value,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("greenlight-bench, {}\n\n", self.date));
        out.push_str(&format!("machine: {}\n\n", machine_line(&self.machine)));
        out.push_str("| measurement | greenlight | seed Flask bot | target | met |\n");
        out.push_str("|---|---|---|---|---|\n");
        for r in &self.rows {
            let met = match r.met {
                Some(true) => "yes",
                Some(false) => "no",
                None => "-",
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                r.measurement, r.greenlight.text, r.peer.text, r.target, met
            ));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                out.push_str(&format!("- {n}\n"));
            }
        }
        out
    }
}

fn machine_line(m: &Value) -> String {
    let s = |k: &str| m[k].as_str().unwrap_or("?").to_owned();
    format!(
        "{} ({} cores), {} memory, Linux {}, database on {} ({})",
        s("cpu"),
        m["cores"],
        s("memory"),
        s("kernel"),
        s("work_dir"),
        s("filesystem")
    )
}

pub fn ms(v: Option<f64>) -> String {
    match v {
        None => "-".to_owned(),
        Some(v) if v >= 1000.0 => format!("{:.2} s", v / 1000.0),
        Some(v) if v >= 100.0 => format!("{v:.0} ms"),
        Some(v) if v >= 10.0 => format!("{v:.1} ms"),
        Some(v) => format!("{v:.2} ms"),
    }
}

pub fn mb(bytes: Option<u64>) -> String {
    bytes.map_or("-".to_owned(), |b| format!("{:.1} MB", b as f64 / 1e6))
}

pub(crate) fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s} s")
    }
}

pub fn rate(v: f64) -> String {
    if v >= 100.0 {
        format!("{}/s", thousands(v.round() as u64))
    } else {
        format!("{v:.1}/s")
    }
}

pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// p50 / p99 / p99.9 of a run, plus failures and the share inside Slack's 3 s.
pub fn latency_cell(run: &RunResult, ok_status: u16) -> Cell {
    let l: Latencies = run.latencies();
    let (p50, p99, p999) = (
        l.percentile_ms(50.0),
        l.percentile_ms(99.0),
        l.percentile_ms(99.9),
    );
    let failed = run.failed(ok_status);
    let within = run.within_slack_limit();
    let mut text = format!("{} / {} / {}", ms(p50), ms(p99), ms(p999));
    if failed > 0 {
        text.push_str(&format!(
            " ({} of {} failed)",
            thousands(failed as u64),
            thousands(run.samples.len() as u64)
        ));
    }
    if within < 1.0 {
        text.push_str(&format!(" ({:.1}% acked within 3 s)", within * 100.0));
    }
    Cell::new(
        text,
        serde_json::json!({
            "requests": run.samples.len(), "failed": failed, "p50_ms": p50, "p99_ms": p99,
            "p999_ms": p999, "within_3s": within, "elapsed_s": run.elapsed.as_secs_f64(),
            "acks_per_s": run.throughput(ok_status),
        }),
    )
}

/// What the machine is, from /proc and the work directory's mount.
pub fn machine(work_dir: &Path) -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown".to_owned(), |s| s.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or("?".to_owned(), |kb| format!("{:.0} GB", kb as f64 / 1e6));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or("?".to_owned(), |s| s.trim().to_owned());
    let dir = std::fs::canonicalize(work_dir).unwrap_or_else(|_| work_dir.to_owned());
    serde_json::json!({
        "cpu": cpu, "cores": cores, "memory": memory, "kernel": kernel,
        "work_dir": dir.display().to_string(), "filesystem": filesystem(&dir),
    })
}

/// The type of the filesystem holding `dir` (tmpfs would make fsync free: say so).
fn filesystem(dir: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut best: Option<(usize, String)> = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        if dir.starts_with(f[1]) && best.as_ref().is_none_or(|(len, _)| f[1].len() > *len) {
            best = Some((f[1].len(), format!("{} {}", f[2], f[0])));
        }
    }
    best.map_or("?".to_owned(), |(_, s)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_the_way_people_write_them() {
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(rate(12_345.4), "12,345/s");
        assert_eq!(ms(Some(0.4567)), "0.46 ms");
        assert_eq!(ms(Some(2512.0)), "2.51 s");
        assert_eq!(mb(Some(18_200_000)), "18.2 MB");
    }
}
