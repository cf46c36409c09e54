//! `spawn_app()`: the server as a library call in this process, on
//! 127.0.0.1:0 with fresh directories, and how a test reaches it: clients,
//! HTTP, metrics and shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use chatsubo::Config;
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{Client, PATIENCE};

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
        self.finished().await;
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

/// Reads one sample from a text exposition: `name{labels}` names every
/// series of `name` that has those labels (and perhaps others, such as the
/// `protocol` most families carry), and their values are summed; 0 if none.
pub fn metric_value(text: &str, sample: &str) -> f64 {
    let (name, labels) = split_series(sample);
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, have) = split_series(series);
            (n == name && labels.iter().all(|l| have.contains(l)))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// `name{a="1",b="2"}` as the name and its `a="1"`-style labels.
fn split_series(series: &str) -> (&str, Vec<&str>) {
    match series.split_once('{') {
        Some((name, rest)) => {
            let labels = rest.trim_end_matches('}');
            (name, labels.split(',').filter(|l| !l.is_empty()).collect())
        }
        None => (series, Vec::new()),
    }
}
