//! A Chatsubo server the load generator starts and stops itself, for the
//! workloads that kill it (chaos) or need its limits as shipped (flood).
//!
//! The server runs on loopback, pinned to a CPU with `taskset` when asked,
//! its JSON log lines read from its standard output for the events the
//! workloads check (`sessions_recovered`, `resume_state_restored`, errors).
//! It is never left running: a dropped [`Server`] is killed, and when
//! `setpriv` is there the kernel kills it too if the load generator dies
//! (parent-death signal).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http;

/// Where and how to run the server.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// The chatsubo binary to run.
    #[arg(long, default_value = "target/release/chatsubo")]
    pub server_bin: PathBuf,
    /// Directory for the server's data, logs and stderr; its `data` is
    /// emptied first (default: target/loadgen-<workload>).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// CPU to pin the server to with taskset (default: not pinned).
    #[arg(long)]
    pub server_cpu: Option<usize>,
    /// Port on 127.0.0.1 (0: a free one, kept across restarts).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// One more server flag, as `--server-arg=--flag=value` (repeatable).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
}

/// Everything needed to start the same server again: same binary, flags,
/// data directory and port.
pub struct ServerSpec {
    pub addr: SocketAddr,
    pub work_dir: PathBuf,
    stderr_path: PathBuf,
    /// The command line: wrappers, binary and flags.
    argv: Vec<String>,
}

impl ServerSpec {
    /// Prepares a fresh work directory and the command line; `flags` are
    /// the workload's own server flags (the `--server-arg`s come after, so
    /// they win).
    pub fn new(args: &ServerArgs, workload: &str, flags: &[String]) -> Result<Self, String> {
        let work_dir = args
            .work_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("target/loadgen-{workload}")));
        let data_dir = work_dir.join("data");
        let log_dir = work_dir.join("logs");
        if data_dir.exists() {
            std::fs::remove_dir_all(&data_dir)
                .map_err(|e| format!("cannot empty {}: {e}", data_dir.display()))?;
        }
        for dir in [&data_dir, &log_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        if !args.server_bin.is_file() {
            return Err(format!(
                "no server binary at {} (cargo build --release --bins)",
                args.server_bin.display()
            ));
        }
        let port = match args.port {
            0 => free_port().map_err(|e| format!("cannot find a free port: {e}"))?,
            p => p,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut argv = Vec::new();
        if on_path("setpriv") {
            argv.extend(["setpriv", "--pdeathsig", "KILL", "--"].map(String::from));
        }
        if let Some(cpu) = args.server_cpu {
            if !on_path("taskset") {
                return Err("--server-cpu needs taskset (util-linux)".into());
            }
            argv.extend(["taskset".into(), "-c".into(), cpu.to_string()]);
        }
        argv.push(args.server_bin.display().to_string());
        argv.extend([
            "--listen".into(),
            addr.to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--log-dir".into(),
            log_dir.display().to_string(),
            // All the load comes from 127.0.0.1.
            "--max-connections".into(),
            "20000".into(),
            "--max-connections-per-ip".into(),
            "20000".into(),
        ]);
        argv.extend(flags.iter().cloned());
        argv.extend(args.server_args.iter().cloned());
        Ok(ServerSpec {
            addr,
            stderr_path: work_dir.join("server-stderr.log"),
            work_dir,
            argv,
        })
    }

    /// The command line, for the report (`--api-token`'s value hidden).
    pub fn command_line(&self) -> String {
        let mut out = Vec::with_capacity(self.argv.len());
        let mut hide = false;
        for arg in &self.argv {
            out.push(if hide { "…" } else { arg.as_str() });
            hide = arg == "--api-token";
        }
        out.join(" ")
    }

    /// Starts the server (it is not ready yet: see [`Server::wait_ready`]).
    pub fn start(&self) -> Result<Server, String> {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .map_err(|e| format!("cannot open {}: {e}", self.stderr_path.display()))?;
        let mut child = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.argv[0]))?;
        let log = Arc::new(Mutex::new(ServerLog::default()));
        if let Some(stdout) = child.stdout.take() {
            let log = log.clone();
            std::thread::Builder::new()
                .name("server-log".into())
                .spawn(move || read_log(stdout, &log))
                .map_err(|e| format!("cannot start the log reader: {e}"))?;
        }
        Ok(Server {
            pid: child.id(),
            child,
            started: Instant::now(),
            addr: self.addr,
            stderr_path: self.stderr_path.clone(),
            log,
        })
    }
}

/// A running server process.
pub struct Server {
    pub pid: u32,
    child: Child,
    /// When the process was started.
    pub started: Instant,
    addr: SocketAddr,
    stderr_path: PathBuf,
    log: Arc<Mutex<ServerLog>>,
}

impl Server {
    /// Waits until `/health` answers 200, and returns the time since the
    /// start; fails if the process exits first or `timeout` passes.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<Duration, String> {
        let deadline = self.started + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "the server exited before it was ready ({status}); its stderr ends: {}",
                    tail(&self.stderr_path, 400)
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("/health not 200 within {timeout:?}"));
            }
            // A listener bound but not yet accepting (the store opening)
            // holds the request: one long try is exact, short ones poll.
            match http::get(self.addr, "/health", None, left.min(Duration::from_secs(2))).await {
                Ok(r) if r.status == 200 => return Ok(self.started.elapsed()),
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    /// SIGKILL, and waits until the process is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `timeout` for the exit (SIGKILL after).
    pub async fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .map_err(|e| format!("cannot run kill: {e}"))?;
        if !sent.success() {
            return Err(format!("kill -TERM {} failed", self.pid));
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Ok(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill();
        Err(format!("no exit within {timeout:?} of SIGTERM; killed"))
    }

    /// What the server logged so far.
    pub fn log(&self) -> ServerLog {
        self.log.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for the log to show `event` (log lines are
    /// written by a background thread of the server, a little late).
    pub async fn wait_log(&self, event: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log.lock().unwrap().events.contains_key(event) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

/// What one server process logged that the workloads look at.
#[derive(Clone, Debug, Default)]
pub struct ServerLog {
    /// Lines seen per `event` field.
    pub events: BTreeMap<String, u64>,
    /// The last line of each event the workloads read fields of.
    pub lines: BTreeMap<String, Value>,
    /// Lines at level ERROR and WARN.
    pub errors: u64,
    pub warnings: u64,
    pub first_error: Option<String>,
}

impl ServerLog {
    /// A field of the last line of `event`.
    pub fn field(&self, event: &str, field: &str) -> Option<&Value> {
        self.lines.get(event)?.get(field)
    }

    /// The summary for reports.
    pub fn to_json(&self) -> Value {
        json!({
            "errors": self.errors,
            "warnings": self.warnings,
            "first_error": self.first_error,
        })
    }
}

/// Events whose whole line is kept.
const KEPT: [&str; 4] = [
    "store_opened",
    "sessions_recovered",
    "resume_state_restored",
    "listening",
];

fn read_log(stdout: impl std::io::Read, log: &Mutex<ServerLog>) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let Ok(value) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let mut log = log.lock().unwrap();
        match value["level"].as_str() {
            Some("ERROR") => {
                log.errors += 1;
                log.first_error.get_or_insert_with(|| line.clone());
            }
            Some("WARN") => log.warnings += 1,
            _ => {}
        }
        if let Some(event) = value["event"].as_str() {
            *log.events.entry(event.to_owned()).or_default() += 1;
            if KEPT.contains(&event) {
                log.lines.insert(event.to_owned(), value.clone());
            }
        }
    }
}

/// A port on 127.0.0.1 that nothing listens on now.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// The last `max` bytes of a file, on one line.
fn tail(path: &Path, max: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(max);
    let start = (start..=text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    text[start..].trim().replace('\n', " | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_events_and_levels_of_json_log_lines() {
        let text = concat!(
            r#"{"level":"INFO","event":"store_opened","version":2}"#,
            "\n",
            "not json\n",
            r#"{"level":"INFO","event":"sessions_recovered","closed":1000}"#,
            "\n",
            r#"{"level":"ERROR","event":"storage_error","cause":"x"}"#,
            "\n",
            r#"{"level":"INFO","event":"peer_resumed"}"#,
            "\n",
            r#"{"level":"INFO","event":"peer_resumed"}"#,
            "\n",
        );
        let log = Mutex::new(ServerLog::default());
        read_log(text.as_bytes(), &log);
        let log = log.into_inner().unwrap();
        assert_eq!(log.events["peer_resumed"], 2);
        assert_eq!(
            log.field("sessions_recovered", "closed"),
            Some(&json!(1000))
        );
        assert_eq!(log.field("peer_resumed", "x"), None);
        assert_eq!(log.errors, 1);
        assert!(log.first_error.unwrap().contains("storage_error"));
    }

    #[test]
    fn the_command_line_hides_the_api_token() {
        let spec = ServerSpec {
            addr: "127.0.0.1:1".parse().unwrap(),
            work_dir: "w".into(),
            stderr_path: "e".into(),
            argv: ["chatsubo", "--api-token", "secret", "--port", "1"]
                .map(String::from)
                .to_vec(),
        };
        assert_eq!(spec.command_line(), "chatsubo --api-token … --port 1");
    }
}
