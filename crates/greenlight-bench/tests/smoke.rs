//! The harness in `--quick` mode against the debug greenlight binary, PostgreSQL (one and two
//! replicas) and, when one is given, the seed Flask bot: every row must come back with figures,
//! so the benchmark cannot rot unnoticed. It checks that the figures exist, never what they are
//! (tiny runs on a shared machine are noise). PostgreSQL is the bench's default admin URL
//! (`postgres://postgres@127.0.0.1:5432/postgres`) or `GREENLIGHT_BENCH_POSTGRES_URL`.
//!
//! The peer is not part of the repository: its rows are checked when
//! `GREENLIGHT_BENCH_PEER_APP` names its app.py (`.ci/run` does), and skipped, with a line that
//! says so, otherwise. The bench runs in an empty directory of its own whose parent holds nothing
//! else, so a path it reached relative to the working directory would fail here.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// The peer's app.py, when the environment names one.
fn peer_app() -> Option<PathBuf> {
    std::env::var_os("GREENLIGHT_BENCH_PEER_APP")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// greenlight-bench with the given arguments, run in `cwd`, with no peer configured but by its
/// arguments.
fn bench(cwd: &Path, args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_greenlight-bench"))
        .env_remove("GREENLIGHT_BENCH_PEER_APP")
        .current_dir(cwd)
        .args(args)
        .output()
        .expect("greenlight-bench runs")
}

#[test]
fn without_a_peer_the_bench_fails_at_once_naming_the_flag() {
    let dir = tempfile::tempdir().expect("temp dir");
    // An existing file passes the binary's check, so the peer's is the one that fails.
    let me = std::env::current_exe().expect("test binary");
    let missing = dir.path().join("app.py");
    for extra in [vec![], vec!["--peer-app".as_ref(), missing.as_os_str()]] {
        let mut args = vec![
            "--quick".as_ref(),
            "--greenlight-bin".as_ref(),
            me.as_os_str(),
        ];
        args.extend(extra);
        let out = bench(dir.path(), &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "ran without a peer: {stderr}");
        assert!(
            stderr.contains("--peer-app") && stderr.contains("--skip-peer"),
            "the error names neither flag: {stderr}"
        );
        assert!(
            out.stdout.is_empty() && std::fs::read_dir(dir.path()).unwrap().count() == 0,
            "work was done before the error"
        );
    }
}

#[test]
#[ignore = "needs target/debug/greenlight and PostgreSQL (and, for the peer's rows, a Python with Flask); scripts/test runs it after creating the venv"]
fn a_quick_run_fills_every_row() {
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
    let peer = peer_app();
    let python = python();
    if peer.is_some() {
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
    } else {
        println!(
            "the peer's rows were skipped: set GREENLIGHT_BENCH_PEER_APP to the seed Flask bot's \
             app.py to include them (see docs/benchmarks.md)"
        );
    }

    // An empty directory whose parent holds nothing else: the run may reach only what it is
    // given.
    let outer = tempfile::tempdir().expect("temp dir");
    let cwd = outer.path().join("run");
    std::fs::create_dir(&cwd).unwrap();
    let json = cwd.join("bench.json");
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "--quick".as_ref(),
        "--greenlight-bin".as_ref(),
        greenlight.as_os_str(),
        "--work-dir".as_ref(),
        cwd.as_os_str(),
        "--json".as_ref(),
        json.as_os_str(),
    ];
    let pg = std::env::var_os("GREENLIGHT_BENCH_POSTGRES_URL");
    if let Some(url) = &pg {
        args.extend(["--postgres-url".as_ref(), url.as_os_str()]);
    }
    match &peer {
        Some(app) => args.extend([
            "--peer-app".as_ref(),
            app.as_os_str(),
            "--python".as_ref(),
            python.as_os_str(),
        ]),
        None => args.push("--skip-peer".as_ref()),
    }
    let out = bench(&cwd, &args);
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
            if peer.is_some() {
                assert!(
                    row["peer"]["values"].is_object(),
                    "the peer has no figures in row {id}: {row}"
                );
            } else {
                assert!(
                    row["peer"].to_string().contains("--skip-peer"),
                    "the peer's cell does not say it was skipped in row {id}: {row}"
                );
            }
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
