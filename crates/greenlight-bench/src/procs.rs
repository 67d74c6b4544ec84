//! The systems under test as child processes: greenlight (`serve`, plus its `migrate` and
//! `keys create` commands) and the seed Flask bot. Children are killed when dropped, so a failed
//! or interrupted run leaves nothing behind.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::{Error, Result};

/// How long a system may take to become ready (a million-row database included).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// A loopback address nobody listens on right now.
pub fn free_addr() -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// Everything greenlight is started with (the environment of product.md).
#[derive(Debug, Clone)]
pub struct GreenlightEnv {
    pub bin: PathBuf,
    pub config: PathBuf,
    /// `GREENLIGHT_DATABASE_URL`: `sqlite:PATH` or `postgres://...`.
    pub db_url: String,
    pub api_url: String,
    pub bot_token: String,
    pub signing_secret: String,
    pub log: PathBuf,
}

impl GreenlightEnv {
    fn command(&self, listen: SocketAddr) -> Result<Command> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(&self.bin);
        cmd.env("GREENLIGHT_CONFIG", &self.config)
            .env("GREENLIGHT_DATABASE_URL", &self.db_url)
            .env("GREENLIGHT_LISTEN", listen.to_string())
            .env("SLACK_BOT_TOKEN", &self.bot_token)
            .env("SLACK_SIGNING_SECRET", &self.signing_secret)
            .env("SLACK_API_URL", &self.api_url)
            .env_remove("SLACK_APP_TOKEN")
            .env_remove("GREENLIGHT_URL")
            .env_remove("GREENLIGHT_TOKEN")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        Ok(cmd)
    }

    /// Runs a one-shot command (`migrate`, `keys create ...`) and returns its stdout; its
    /// stderr goes to the log, and into the error when it fails.
    pub async fn run(&self, args: &[&str]) -> Result<String> {
        // tokio's `output` pipes both streams whatever was configured.
        let out = self
            .command(free_addr()?)?
            .args(args)
            .output()
            .await
            .map_err(|e| Error::msg(format!("cannot run {}: {e}", self.bin.display())))?;
        let mut log = std::fs::OpenOptions::new().append(true).open(&self.log)?;
        std::io::Write::write_all(&mut log, &out.stderr)?;
        if !out.status.success() {
            return Err(Error::msg(format!(
                "`{} {}` failed ({}):\n{}",
                self.bin.display(),
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// `greenlight serve`, waited for until `/readyz` answers 200.
    pub async fn serve(&self) -> Result<Server> {
        let addr = free_addr()?;
        let log_start = std::fs::metadata(&self.log).map_or(0, |m| m.len());
        let started = Instant::now();
        let child = self
            .command(addr)?
            .arg("serve")
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| Error::msg(format!("cannot start {}: {e}", self.bin.display())))?;
        let mut server = Server {
            child,
            addr,
            startup: Duration::ZERO,
            log: self.log.clone(),
            log_start,
        };
        server.startup = wait_ready(
            &mut server.child,
            &format!("http://{addr}/readyz"),
            started,
            &self.log,
        )
        .await?;
        Ok(server)
    }
}

/// A running child process with its address.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// Spawn to first successful readiness answer.
    pub startup: Duration,
    log: PathBuf,
    /// Where this process's part of the log begins (one-shot commands may have written before).
    log_start: u64,
}

impl Server {
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What this process has written to its log so far.
    pub fn log_text(&self) -> String {
        let bytes = std::fs::read(&self.log).unwrap_or_default();
        let from = (self.log_start as usize).min(bytes.len());
        String::from_utf8_lossy(&bytes[from..]).into_owned()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Resident memory now (`VmRSS`), in bytes.
    pub fn rss(&self) -> Option<u64> {
        self.pid().and_then(|pid| proc_status(pid, "VmRSS"))
    }

    /// CPU time the process has used so far (user + system).
    pub fn cpu(&self) -> Option<Duration> {
        self.pid().and_then(cpu_time)
    }

    /// Peak resident memory so far (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        self.pid().and_then(|pid| proc_status(pid, "VmHWM"))
    }

    /// SIGKILL: no shutdown, no flush. What survives this was on disk.
    pub async fn kill9(&mut self) -> Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// SIGTERM and wait for a clean exit (SIGKILL after 30 s).
    pub async fn terminate(&mut self) -> Result<()> {
        if let Some(pid) = self.pid() {
            // No signal API without unsafe code; kill(1) does it.
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                eprintln!("{} did not stop on SIGTERM; killing it", self.log.display());
                self.child.kill().await?;
            }
        }
        Ok(())
    }
}

/// Polls `url` until it answers 200; fails when the child exits first or time runs out.
async fn wait_ready(
    child: &mut Child,
    url: &str,
    started: Instant,
    log: &Path,
) -> Result<Duration> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()?;
    loop {
        if let Ok(res) = http.get(url).send().await
            && res.status().is_success()
        {
            return Ok(started.elapsed());
        }
        if let Some(status) = child.try_wait()? {
            return Err(Error::msg(format!(
                "the process exited ({status}) before {url} answered; its log:\n{}",
                tail(log)
            )));
        }
        if started.elapsed() > READY_TIMEOUT {
            return Err(Error::msg(format!(
                "{url} did not answer 200 within {READY_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The last lines of a log file, for error messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// User + system CPU time of a process so far, from /proc/PID/stat.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the name.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux the bench runs on (no libc call without unsafe code).
    Some(Duration::from_millis(ticks * 10))
}

/// CPU time used so far by the processes named `postgres` on this machine: those serving
/// `database` (backends show it in their title), and all the others (the WAL writer, the
/// checkpointer, autovacuum, backends of other databases). A backend that exited is no longer
/// counted, so sample around one run, while the pools stay connected.
pub fn postgres_cpu(database: &str) -> (Duration, Duration) {
    let (mut ours, mut others) = (Duration::ZERO, Duration::ZERO);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (ours, others);
    };
    for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        if !std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim() == "postgres")
        {
            continue;
        }
        let title = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cpu = cpu_time(pid).unwrap_or_default();
        if String::from_utf8_lossy(&title).contains(database) {
            ours += cpu;
        } else {
            others += cpu;
        }
    }
    (ours, others)
}

/// CPU time of this process (the load generator and the sandbox).
pub fn own_cpu() -> Option<Duration> {
    cpu_time(std::process::id())
}

/// A `kB` field of /proc/PID/status, in bytes.
fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(&format!("{field}:")))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The seed Flask bot, as its README says to run it.
pub async fn start_peer(
    python: &Path,
    app: &Path,
    api_url: &str,
    bot_token: &str,
    signing_secret: &str,
    log: &Path,
) -> Result<Server> {
    let addr = free_addr()?;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let started = Instant::now();
    let mut child = Command::new(python)
        .arg(app)
        .env("SLACK_SIGNING_SECRET", signing_secret)
        .env("SLACK_BOT_TOKEN", bot_token)
        .env("SLACK_API_URL", api_url)
        .env("PORT", addr.port().to_string())
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::msg(format!("cannot start {}: {e}", python.display())))?;
    // Flask answers 404 on `/` once it listens; readiness is "any HTTP answer".
    let http = reqwest::Client::builder().no_proxy().build()?;
    loop {
        if http.get(format!("http://{addr}/")).send().await.is_ok() {
            break;
        }
        if let Some(status) = child.try_wait()? {
            let log_text = tail(log);
            let hint = if log_text.contains("No module named") {
                format!(
                    "\nthe peer needs Flask and slack_sdk: {} -m pip install -r bench/requirements.txt",
                    python.display()
                )
            } else {
                String::new()
            };
            return Err(Error::msg(format!(
                "the peer exited ({status}) before listening; its log:\n{log_text}{hint}"
            )));
        }
        if started.elapsed() > READY_TIMEOUT {
            return Err(Error::msg("the peer did not start listening"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Server {
        child,
        addr,
        startup: started.elapsed(),
        log: log.to_owned(),
        log_start: 0,
    })
}
