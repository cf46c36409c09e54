//! The real `chatsubo` binary as a child process.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use super::Client;

/// The real `chatsubo` binary as a child process on 127.0.0.1:0, with
/// `--data-dir` and `--log-dir` under one directory, its stdout collected
/// line by line and its stderr as text. It logs its address in its
/// `listening` line. Killed when dropped.
pub struct BinApp {
    pub addr: SocketAddr,
    /// The directory this app made for itself ([`BinApp::start`]); `None`
    /// when the test owns it ([`BinApp::start_in`], to restart on it).
    pub dir: Option<TempDir>,
    pub stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    child: Child,
}

impl BinApp {
    /// Starts the binary with `args` and `envs` in a fresh directory, and
    /// waits until it serves.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> BinApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut app = BinApp::start_in(dir.path(), args, envs);
        app.dir = Some(dir);
        app
    }

    /// Starts the binary on `dir/data` and `dir/logs` (kept from an earlier
    /// run, if any). `OTEL_*`, `CHATSUBO_*` and `RUST_LOG` of the test's own
    /// environment are not passed on; `envs` are.
    pub fn start_in(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> BinApp {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chatsubo"));
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--log-dir")
            .arg(dir.join("logs"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, _) in std::env::vars() {
            if name.starts_with("OTEL_") || name.starts_with("CHATSUBO_") || name == "RUST_LOG" {
                cmd.env_remove(name);
            }
        }
        cmd.envs(envs.iter().copied());
        let mut child = cmd.spawn().expect("start chatsubo");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["event"] == "listening"
                {
                    let _ = tx.send(v["address"].as_str().unwrap().parse().unwrap());
                }
                collected.lock().unwrap().push(line);
            }
        });
        let collected = errors.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut text = collected.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(30)) else {
            // Never leave a server running behind a failed test.
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!(
                "chatsubo did not log its listening address; stdout: {:?}; stderr: {}",
                lines.lock().unwrap(),
                errors.lock().unwrap()
            );
        };
        BinApp {
            addr,
            dir: None,
            stdout: lines,
            stderr: errors,
            child,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.ws_url()).await
    }

    /// Sends a signal (`-TERM`, `-KILL`, …) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([name, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits (without blocking the runtime) for the process to exit; its
    /// exit code.
    pub async fn exited(&mut self) -> Option<i32> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads take the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return status.code();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chatsubo did not exit"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything the process printed so far: stdout lines, then stderr.
    pub fn output(&self) -> String {
        let mut text = self.stdout.lock().unwrap().join("\n");
        text.push('\n');
        text.push_str(&self.stderr.lock().unwrap());
        text
    }

    /// The process id of the running binary.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the process to exit (blocking); its
    /// status, its directory and its stdout lines.
    pub fn terminate(mut self) -> (std::process::ExitStatus, TempDir, Vec<String>) {
        self.signal("-TERM");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "chatsubo did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        std::thread::sleep(Duration::from_millis(100));
        let lines = self.stdout.lock().unwrap().clone();
        let dir = self
            .dir
            .take()
            .expect("terminate() is for apps started with BinApp::start");
        (status, dir, lines)
    }
}

impl Drop for BinApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
