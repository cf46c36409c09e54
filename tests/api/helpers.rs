#![allow(dead_code)]
//! spawn_app(): the real server on 127.0.0.1:0 with a fresh data directory,
//! and a WebSocket test client that speaks the protocol over a real socket.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatsubo::Config;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for a message that must come.
pub const PATIENCE: Duration = Duration::from_secs(5);

pub struct TestApp {
    pub addr: SocketAddr,
    pub dir: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

/// A test configuration: defaults, with fresh directories.
pub fn test_config(dir: &TempDir) -> Config {
    let mut config = Config::defaults();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.data_dir = dir.path().join("data");
    config.log_dir = dir.path().join("logs");
    config
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(&dir);
    configure(&mut config);
    spawn_with_config(config, dir).await
}

pub async fn spawn_with_config(config: Config, dir: TempDir) -> TestApp {
    // The server's own bind: its backlog and receive buffer, as shipped.
    let listener =
        chatsubo::server::bind("127.0.0.1:0".parse().unwrap(), config.socket_recv_buffer())
            .expect("bind");
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(chatsubo::run(listener, config, async {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        dir,
        shutdown: Some(tx),
        handle: Some(handle),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws{}", self.addr, query)
    }

    /// Connects and reads the welcome.
    pub async fn client(&self) -> Client {
        Client::connect(&self.ws_url("")).await
    }

    /// Connects and joins `room` as `name`.
    pub async fn joined(&self, room: &str, name: &str) -> Client {
        let mut c = self.client().await;
        c.join(room, name).await;
        c
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::get(self.url(path)).await.expect("GET")
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.text().await.unwrap()
    }

    /// The value of one sample, e.g. `chatsubo_joins_total` or
    /// `chatsubo_errors_total{code="ROOM_FULL",kind="client"}`; 0 if absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        metric_value(&self.metrics().await, sample)
    }

    /// Connects with a query string (e.g. `?room=lobby`) and reads the welcome.
    pub async fn client_with(&self, query: &str) -> Client {
        Client::connect(&self.ws_url(query)).await
    }

    /// `GET /health` as JSON.
    pub async fn health(&self) -> Value {
        self.get("/health")
            .await
            .json()
            .await
            .expect("health is JSON")
    }

    /// Waits until a metric sample has `value`; fails after PATIENCE.
    pub async fn wait_metric(&self, sample: &str, value: f64) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let now = self.metric(sample).await;
            if now == value {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{sample} stayed at {now}, expected {value}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the server counts `n` open WebSocket connections (a
    /// connection is counted down only after it has left its room).
    pub async fn wait_connections(&self, n: usize) {
        self.wait_metric("chatsubo_active_connections", n as f64)
            .await;
    }

    /// A WebSocket upgrade request made with plain HTTP, for upgrades the
    /// server refuses: the status and the JSON error body.
    pub async fn refused_upgrade(&self) -> (u16, Value) {
        let res = reqwest::Client::new()
            .get(self.url("/ws"))
            .header("Upgrade", "websocket")
            .header("Connection", "Upgrade")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
            .await
            .expect("upgrade request");
        let status = res.status().as_u16();
        assert_ne!(status, 101, "the upgrade was accepted");
        let content_type = res
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(content_type.as_deref(), Some("application/json"));
        (status, res.json().await.expect("JSON error body"))
    }

    /// Connects as soon as the server has a free place; fails after PATIENCE.
    pub async fn client_when_allowed(&self) -> Client {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match Client::try_connect(&self.ws_url("")).await {
                Ok(c) => return c,
                Err(err) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "still refused: {err}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Starts a graceful shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Shuts down and waits until run() returns.
    pub async fn stop(mut self) {
        self.begin_shutdown();
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(20), handle)
                .await
                .expect("shutdown finishes in bounded time")
                .expect("server task")
                .expect("server result");
        }
    }

    /// Waits until run() returns (after begin_shutdown).
    pub async fn finished(&mut self) {
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(20), handle)
                .await
                .expect("shutdown finishes in bounded time")
                .expect("server task")
                .expect("server result");
        }
    }
}

/// Reads one sample value from a text exposition.
pub fn metric_value(text: &str, sample: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == sample).then(|| value.parse::<f64>().ok())?
        })
        .unwrap_or(0.0)
}

/// Whether `text` is an RFC 3339 UTC time with milliseconds
/// (`2026-11-28T05:00:00.123Z`), as the contract writes every timestamp.
pub fn is_rfc3339_millis_utc(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    b.len() == 24
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..23)
        && b[23] == b'Z'
        && time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_ok()
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub welcome: Value,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        Client::try_connect(url).await.expect("connect")
    }

    /// Connects and reads the welcome; the handshake error if the server
    /// refused the upgrade.
    pub async fn try_connect(url: &str) -> Result<Client, WsError> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        let mut c = Client {
            ws,
            welcome: Value::Null,
        };
        c.welcome = c.recv_type("welcome").await;
        Ok(c)
    }

    pub fn peer_id(&self) -> String {
        self.welcome["peerId"].as_str().unwrap().to_string()
    }

    pub fn token(&self) -> String {
        self.welcome["resumeToken"].as_str().unwrap().to_string()
    }

    pub async fn send(&mut self, value: Value) {
        self.ws
            .send(Message::text(value.to_string()))
            .await
            .expect("send");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_string()))
            .await
            .expect("send");
    }

    /// Sends one raw WebSocket frame (masked by the client like any other).
    pub async fn send_frame(&mut self, frame: Frame) {
        self.ws.send(Message::Frame(frame)).await.expect("send");
    }

    /// Sends a ping with this id and waits for its pong; every message
    /// before the pong is returned (so a test can show nothing came first).
    pub async fn ping(&mut self, id: u64) -> Vec<Value> {
        self.send(json!({"type":"ping","id":id})).await;
        let mut before = Vec::new();
        loop {
            let v = self.recv().await;
            if v["type"] == "pong" && v["id"] == id {
                return before;
            }
            before.push(v);
        }
    }

    /// Sends a ping and asserts that its pong is the very next message.
    pub async fn ping_next(&mut self, id: u64) {
        let before = self.ping(id).await;
        assert!(before.is_empty(), "expected the pong first, got {before:?}");
    }

    /// Joins and returns the `joined` message.
    pub async fn join(&mut self, room: &str, name: &str) -> Value {
        self.send(json!({"type":"join","room":room,"displayName":name}))
            .await;
        self.recv_type("joined").await
    }

    /// The next text message, as JSON; fails after PATIENCE.
    pub async fn recv(&mut self) -> Value {
        match self.next_event(PATIENCE).await {
            Some(Event::Text(v)) => v,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// The next text message as the exact text the server sent.
    pub async fn recv_raw(&mut self) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let read = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("a message within PATIENCE");
            match read {
                Some(Ok(Message::Text(t))) => return t.as_str().to_string(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// The next text message, which must have this type.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["type"], kind, "unexpected message {v}");
        v
    }

    /// The next message must be an error with this code.
    pub async fn recv_error(&mut self, code: &str) -> Value {
        let v = self.recv_type("error").await;
        assert_eq!(v["code"], code, "unexpected error {v}");
        v
    }

    /// Asserts that no text message arrives for `quiet`.
    pub async fn expect_silence(&mut self, quiet: Duration) {
        if let Some(Event::Text(v)) = self.next_event(quiet).await {
            panic!("expected silence, got {v}");
        }
    }

    /// The next event: a text message, a close (with its code), or the end.
    pub async fn next_event(&mut self, wait: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let read = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            return Some(match read {
                None => Event::Ended,
                Some(Err(e)) => Event::Failed(e.to_string()),
                Some(Ok(Message::Text(t))) => {
                    Event::Text(serde_json::from_str(t.as_str()).expect("server sends JSON"))
                }
                Some(Ok(Message::Close(frame))) => Event::Closed(frame.map(|f| u16::from(f.code))),
                Some(Ok(_)) => continue,
            });
        }
    }

    /// Reads until the server closes; returns the close code.
    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            match self.next_event(PATIENCE).await {
                Some(Event::Closed(code)) => return code,
                Some(Event::Text(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }

    /// Reads until the server closes; returns every text message before the
    /// close frame, and the close code.
    pub async fn collect_until_close(&mut self) -> (Vec<Value>, Option<u16>) {
        let mut texts = Vec::new();
        loop {
            match self.next_event(PATIENCE).await {
                Some(Event::Closed(code)) => return (texts, code),
                Some(Event::Text(v)) => texts.push(v),
                other => panic!("expected a close frame, got {other:?} after {texts:?}"),
            }
        }
    }

    /// Closes cleanly (a close the client starts).
    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(CloseFrame {
                code: 1000.into(),
                reason: "bye".into(),
            }))
            .await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(PATIENCE, self.ws.next()).await {}
    }

    /// Drops the TCP connection without a close frame.
    pub fn vanish(self) {
        drop(self);
    }
}

#[derive(Debug)]
pub enum Event {
    Text(Value),
    Closed(Option<u16>),
    Ended,
    Failed(String),
}

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
