//! A full disk, for real: the SQLite file on a small tmpfs the test mounts, filled by a file
//! until writes fail, then freed. Mounting needs root (CI runs as root), so the test is
//! `#[ignore]`d in the plain `cargo test` and `scripts/test` runs it by name.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;

/// A tmpfs of `size` mounted on a fresh directory, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "greenlight-test",
            ])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            mounted.success(),
            "cannot mount a tmpfs: this test needs root (scripts/test runs it; CI runs as root)"
        );
        Self(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// Writes `path` until the file system is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0xA5_u8; 64 * 1024];
    loop {
        match file.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    // The last partial chunk may have left a few bytes: take them too.
    let _ = file.write_all(&[0xA5; 512]);
    let _ = file.sync_all();
}

fn log_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn readyz(http: &reqwest::Client, base: &str) -> u16 {
    http.get(format!("{base}/readyz"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Waits up to `within` for `/readyz` to answer `want`; returns how long it took.
async fn readyz_turns(http: &reqwest::Client, base: &str, want: u16, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if readyz(http, base).await == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "/readyz did not answer {want} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "mounts a tmpfs, which needs root: scripts/test runs it (CI runs as root)"]
async fn a_full_disk_answers_503_turns_readyz_red_logs_little_and_recovers() {
    init();
    let disk = Tmpfs::mount("24m");
    let dir = tempfile::tempdir().unwrap();
    let db_path: PathBuf = disk.path().join("greenlight.db");
    let db_url = format!("sqlite:{}", db_path.display());
    let secret = random_secret();
    let sandbox = start_sandbox(&secret).await;
    let key = create_key(&db_url, "ci", &[greenlight::store::Scope::Admin]).await;
    let log = dir.path().join("server.log");
    let server = Process::start_with(
        &sandbox,
        dir.path(),
        &db_url,
        &secret,
        &ProcessOptions {
            log: Some(log.clone()),
            ..Default::default()
        },
    )
    .await;
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();
    let create = |n: usize| {
        let (http, base, key) = (http.clone(), base.clone(), key.clone());
        async move {
            let res = http
                .post(format!("{base}/v1/requests"))
                .bearer_auth(&key)
                .json(&json!({"title": format!("Deploy api #{n}"), "details": "x".repeat(2000)}))
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            let retry_after = res.headers().get("retry-after").cloned();
            let body: serde_json::Value = res.json().await.unwrap();
            (status, retry_after, body)
        }
    };

    let mut acked = Vec::new();
    for n in 0..5 {
        let (status, _, body) = create(n).await;
        assert_eq!(status, 201, "{body}");
        acked.push((n, body["id"].as_str().unwrap().to_owned()));
    }
    assert_eq!(readyz(&http, &base).await, 200);

    // The disk fills up. Creates go on until the write-ahead log has no room left: every
    // answer is a 201 (acked, so it must survive) or a 503 storage_unavailable, never a 500.
    let filler = disk.path().join("filler");
    let before_full = log_lines(&log).len();
    fill(&filler);
    let mut refused = None;
    for n in 5..2_000 {
        let (status, retry_after, body) = create(n).await;
        match status {
            201 => acked.push((n, body["id"].as_str().unwrap().to_owned())),
            503 => {
                refused = Some((retry_after, body));
                break;
            }
            other => panic!("a create on a full disk answered {other}: {body}"),
        }
    }
    let (retry_after, body) = refused.expect("writes never failed on a full disk");
    assert_eq!(body["error"]["code"], "storage_unavailable", "{body}");
    assert_eq!(
        retry_after.as_ref().and_then(|v| v.to_str().ok()),
        Some("5")
    );
    let red = readyz_turns(&http, &base, 503, Duration::from_secs(2)).await;
    eprintln!("/readyz red {red:?} after the first refused write");

    // While the disk stays full: more refused creates and an idle server, and only a few log
    // lines (the probe saw about 300 a second).
    let before = log_lines(&log).len();
    for n in 0..50 {
        let (status, _, body) = create(10_000 + n).await;
        assert_eq!(status, 503, "{body}");
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(readyz(&http, &base).await, 503);
    let lines = log_lines(&log);
    let during = &lines[before..];
    eprintln!(
        "{} log lines while full:\n{}",
        during.len(),
        during.join("\n")
    );
    assert!(
        during.len() <= 8,
        "{} log lines in about 6 s on a full disk",
        during.len()
    );

    // A little space comes back (a quarter of the filler): writes land again, /readyz turns
    // green, the write-ahead log is checkpointed, and no restart is needed.
    let size = std::fs::metadata(&filler).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap()
        .set_len(size - size / 4)
        .unwrap();
    let start = Instant::now();
    let mut n = 20_000;
    loop {
        let (status, _, body) = create(n).await;
        if status == 201 {
            acked.push((n, body["id"].as_str().unwrap().to_owned()));
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "writes did not recover once space was freed"
        );
        n += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    readyz_turns(&http, &base, 200, Duration::from_secs(2)).await;
    let lines = log_lines(&log);
    let full = &lines[before_full..];
    eprintln!(
        "the log from the disk filling up to recovery:\n{}",
        full.join("\n")
    );
    assert!(
        full.iter().any(|l| l.contains("503 storage_unavailable")),
        "the failure is logged"
    );
    assert!(
        full.iter().any(|l| l.contains("land again")),
        "recovery is logged"
    );
    assert!(full.len() <= 12, "{} log lines in all", full.len());
    let wal = std::fs::metadata(disk.path().join("greenlight.db-wal")).map_or(0, |m| m.len());
    eprintln!("write-ahead log after recovery: {wal} bytes");
    for n in 30_000..30_020 {
        let (status, _, body) = create(n).await;
        assert_eq!(status, 201, "{body}");
        acked.push((n, body["id"].as_str().unwrap().to_owned()));
    }

    // Every acked request is there, as written.
    for (n, id) in &acked {
        let (status, got) = get_request(&http, &base, &key, id).await;
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["title"], format!("Deploy api #{n}"));
    }
    server.kill9();
    let conn = rusqlite::Connection::open(&db_path).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let verified = greenlight_on(&db_url, &["audit", "verify"]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
}
