//! The harness in `--quick` mode against the debug greenlight binary, the seed Flask bot and
//! PostgreSQL (one and two replicas): every row must come back with figures, so the benchmark
//! cannot rot unnoticed. It checks that the figures exist, never what they are (tiny runs on a
//! shared machine are noise). PostgreSQL is the bench's default admin URL
//! (`postgres://postgres@127.0.0.1:5432/postgres`) or `GREENLIGHT_BENCH_POSTGRES_URL`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Rows where both systems are measured; in the others the peer has nothing to measure.
const BOTH: &[&str] = &[
    "decisions_closed",
    "ack_closed",
    "ack_open_1",
    "ack_open_2",
    "ack_slow_slack",
    "click_to_update",
    "rss_idle",
    "rss_peak",
];
const GREENLIGHT_ONLY: &[&str] = &[
    "ceiling",
    "create_rule",
    "create_digest",
    "create_plain",
    "rss_million",
    "startup_million",
    "durable_clicks",
    "durable_creates",
    "pg1_decisions_closed",
    "pg1_ack_closed",
    "pg1_ack_open_1000",
    "pg1_creates",
    "pg1_durable_clicks",
    "pg1_durable_creates",
    "pg2_decisions_closed",
    "pg2_ack_closed",
    "pg2_ack_open_1000",
    "pg2_creates",
    "pg2_durable_clicks",
    "pg2_durable_creates",
];
/// Facts, not figures: every 200 ack is a decided row after SIGKILL, every 201 a stored row.
const DURABLE: &[&str] = &[
    "durable_clicks",
    "durable_creates",
    "pg1_durable_clicks",
    "pg1_durable_creates",
    "pg2_durable_clicks",
    "pg2_durable_creates",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    std::env::var_os("GREENLIGHT_BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python"))
}

#[test]
#[ignore = "needs target/debug/greenlight, a Python with Flask (the .venv) and PostgreSQL; scripts/test runs it after creating the venv"]
fn a_quick_run_fills_every_row_for_both_systems() {
    let root = repo_root();
    // scripts/test says where it built the binary; otherwise the workspace's default target.
    let greenlight = std::env::var_os("GREENLIGHT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/debug/greenlight"));
    assert!(
        greenlight.exists(),
        "{} is missing: run `cargo build -p greenlight` first",
        greenlight.display()
    );
    let python = python();
    let flask = Command::new(&python)
        .args(["-c", "import flask, slack_sdk"])
        .status();
    assert!(
        flask.is_ok_and(|s| s.success()),
        "{} cannot import Flask and slack_sdk: set GREENLIGHT_BENCH_PYTHON, or run \
         `{} -m pip install -r bench/requirements.txt` (scripts/test creates .venv with them)",
        python.display(),
        python.display()
    );

    let work = tempfile::tempdir().expect("temp dir");
    let json = work.path().join("bench.json");
    let mut bench = Command::new(env!("CARGO_BIN_EXE_greenlight-bench"));
    if let Some(url) = std::env::var_os("GREENLIGHT_BENCH_POSTGRES_URL") {
        bench.arg("--postgres-url").arg(url);
    }
    let out = bench
        .current_dir(&root)
        .arg("--quick")
        .arg("--greenlight-bin")
        .arg(&greenlight)
        .arg("--python")
        .arg(&python)
        .arg("--work-dir")
        .arg(work.path())
        .arg("--json")
        .arg(&json)
        .output()
        .expect("greenlight-bench runs");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "greenlight-bench failed:\n{}\n{table}",
        String::from_utf8_lossy(&out.stderr)
    );

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON written")).unwrap();
    let rows = report["rows"].as_array().expect("rows");
    for id in BOTH.iter().chain(GREENLIGHT_ONLY) {
        let row = rows
            .iter()
            .find(|r| r["id"] == *id)
            .unwrap_or_else(|| panic!("no row {id} in\n{table}"));
        assert!(
            row["greenlight"]["values"].is_object(),
            "greenlight has no figures in row {id}: {row}"
        );
        if BOTH.contains(id) {
            assert!(
                row["peer"]["values"].is_object(),
                "the peer has no figures in row {id}: {row}"
            );
        }
        // The printed table carries the same row, with a figure in greenlight's column.
        let measurement = row["measurement"].as_str().unwrap();
        let line = table
            .lines()
            .find(|l| l.starts_with(&format!("| {measurement} |")))
            .unwrap_or_else(|| panic!("row {id} missing from the table:\n{table}"));
        let greenlight_column = line.split(" | ").nth(1).unwrap_or_default();
        assert!(
            greenlight_column.chars().any(|c| c.is_ascii_digit()),
            "no figure in {line}"
        );
    }
    for id in DURABLE {
        let row = rows.iter().find(|r| r["id"] == *id).unwrap();
        assert_eq!(row["met"], true, "{row}");
    }
}
