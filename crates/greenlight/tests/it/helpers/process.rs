//! The greenlight binary run as a real process: config file, free port, start, kill -9.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use greenlight_sandbox::SandboxHandle;

use super::WAIT;

/// The greenlight binary, run as a real process.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
}

pub fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_greenlight"))
}

/// The CLI on the database at `db_url`, with no config file: `audit verify`, `migrate`, ...
pub fn greenlight_on(db_url: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .env("GREENLIGHT_DATABASE_URL", db_url)
        .env_remove("GREENLIGHT_CONFIG")
        .output()
        .expect("greenlight runs")
}

pub fn write_config(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("greenlight.toml");
    std::fs::write(
        &path,
        "[[workflow]]\nname = \"deploy\"\nchannel = \"#deploy\"\n",
    )
    .unwrap();
    path
}

/// How to run the binary beyond the defaults.
#[derive(Default)]
pub struct ProcessOptions {
    /// The whole config file (default: one `deploy` workflow).
    pub config: Option<String>,
    pub env: Vec<(String, String)>,
    /// Append stderr (the log) to this file instead of the test's stderr.
    pub log: Option<PathBuf>,
    /// Listen here (default: a free port).
    pub addr: Option<SocketAddr>,
}

impl Process {
    pub async fn start(
        sandbox: &SandboxHandle,
        dir: &std::path::Path,
        db_url: &str,
        secret: &str,
    ) -> Self {
        Self::start_with(sandbox, dir, db_url, secret, &ProcessOptions::default()).await
    }

    pub async fn start_with(
        sandbox: &SandboxHandle,
        dir: &std::path::Path,
        db_url: &str,
        secret: &str,
        options: &ProcessOptions,
    ) -> Self {
        let addr = options.addr.unwrap_or_else(free_port);
        let config = match &options.config {
            Some(text) => {
                let path = dir.join("greenlight.toml");
                std::fs::write(&path, text).unwrap();
                path
            }
            None => write_config(dir),
        };
        let stderr = match &options.log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap(),
            ),
            None => Stdio::inherit(),
        };
        let child = Command::new(bin())
            .arg("serve")
            .env("GREENLIGHT_CONFIG", config)
            .env("GREENLIGHT_DATABASE_URL", db_url)
            .env("GREENLIGHT_LISTEN", addr.to_string())
            .env("SLACK_BOT_TOKEN", &sandbox.config().bot_token)
            .env("SLACK_SIGNING_SECRET", secret)
            .env("SLACK_API_URL", sandbox.api_url())
            .env("RUST_LOG", "warn")
            .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("greenlight starts");
        let deadline = Instant::now() + WAIT;
        let http = reqwest::Client::new();
        loop {
            let health = http.get(format!("http://{addr}/healthz")).send().await;
            if health.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(Instant::now() < deadline, "server did not become healthy");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sandbox.set_interactivity_url(format!("http://{addr}/slack/interactions"));
        Self { child, addr }
    }

    pub fn kill9(mut self) {
        // SIGKILL: no shutdown hooks, no flush; exactly a crash.
        self.child.kill().expect("kill");
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
