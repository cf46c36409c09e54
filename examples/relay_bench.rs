//! Relay throughput and server CPU per relayed message, with observability
//! on (JSON logs to stdout and a file, OTLP trace export to an in-process
//! receiver) against all of it off.
//!
//! ```text
//! cargo build --release --bin chatsubo --example relay_bench
//! target/release/examples/relay_bench [--pairs 50] [--messages 2000] [--rounds 3]
//! RELAY_BENCH_SINK_ONLY=127.0.0.1:4317 target/release/examples/relay_bench
//! ```
//!
//! Each round starts `target/release/chatsubo` twice (observability off, then
//! on, alternating which goes first), connects `pairs` pairs of peers (one
//! room each), and has every A send `messages` ICE candidates to its B with
//! at most `WINDOW` in flight. The server's CPU time is read from
//! `/proc/<pid>/stat` around the load, so the load generator's own CPU does
//! not count.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tonic::codegen::async_trait;

/// Relays in flight per pair.
const WINDOW: usize = 64;

const CANDIDATE: &str = "candidate:842163049 1 udp 1677729535 192.0.2.3 54321 typ srflx raddr 10.0.0.1 rport 54321 generation 0 ufrag abcd network-cost 999";

#[derive(Default, Clone)]
struct Sink {
    spans: Arc<AtomicU64>,
}

#[async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let n: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.spans.fetch_add(n as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

struct Args {
    pairs: usize,
    messages: usize,
    rounds: usize,
}

fn args() -> Args {
    let mut a = Args {
        pairs: 50,
        messages: 2000,
        rounds: 3,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse().ok()).expect("a number");
        match pair[0].as_str() {
            "--pairs" => a.pairs = value,
            "--messages" => a.messages = value,
            "--rounds" => a.rounds = value,
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

struct Server {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

fn start_server(observability: Option<SocketAddr>) -> Server {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("chatsubo");
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--log-dir")
        .arg(dir.path().join("logs"))
        .args([
            "--rate-limit-per-sec",
            "1000000",
            "--rate-limit-burst",
            "1000000",
        ])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped());
    // RELAY_BENCH_ON=logs or =traces turns on only one half (to profile).
    let on = std::env::var("RELAY_BENCH_ON").unwrap_or_else(|_| "all".into());
    match observability {
        Some(sink) => {
            let logs = if on == "traces" { "off" } else { "info" };
            cmd.args(["--log-level", logs]);
            if on != "logs" {
                cmd.arg("--otlp-endpoint").arg(format!("http://{sink}"));
            }
        }
        None => {
            cmd.args(["--log-level", "off"]);
        }
    }
    let mut child = cmd.spawn().expect("start target/release/chatsubo");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent
                && let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["event"] == "listening"
            {
                let _ = tx.send(
                    v["address"]
                        .as_str()
                        .unwrap()
                        .parse::<SocketAddr>()
                        .unwrap(),
                );
                sent = true;
            }
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(2)) {
        Ok(addr) => addr,
        // With logs off the address is not printed: find it by probing.
        Err(_) => find_port(child.id()).expect("chatsubo listens"),
    };
    Server {
        child,
        addr,
        _dir: dir,
    }
}

/// The listening TCP port of `pid`, from /proc (used when logs are off).
fn find_port(pid: u32) -> Option<SocketAddr> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|p| {
            let s = p.to_string_lossy().to_string();
            s.strip_prefix("socket:[")
                .map(|r| r.trim_end_matches(']').to_string())
        })
        .collect();
    let tcp = std::fs::read_to_string("/proc/net/tcp").ok()?;
    tcp.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // state 0A = LISTEN
        if f.get(3) == Some(&"0A") && inodes.iter().any(|i| Some(&i.as_str()) == f.get(9)) {
            let port = u16::from_str_radix(f[1].split(':').nth(1)?, 16).ok()?;
            Some(SocketAddr::from(([127, 0, 0, 1], port)))
        } else {
            None
        }
    })
}

/// User plus system CPU seconds of `pid`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: SocketAddr, room: &str) -> (Ws, String) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?room={room}"))
        .await
        .expect("connect");
    let mut peer = String::new();
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["type"] == "welcome" {
                peer = v["peerId"].as_str().unwrap().to_string();
            }
            if v["type"] == "joined" {
                break;
            }
        }
    }
    (ws, peer)
}

struct Outcome {
    seconds: f64,
    cpu: f64,
    relays: usize,
}

async fn load(addr: SocketAddr, pairs: usize, messages: usize, pid: u32) -> Outcome {
    let mut conns = Vec::new();
    for i in 0..pairs {
        let room = format!("bench{i}");
        let (a, _) = connect(addr, &room).await;
        let (b, b_id) = connect(addr, &room).await;
        conns.push((a, b, b_id));
    }
    let cpu0 = cpu_seconds(pid);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (mut a, mut b, b_id) in conns {
        let window = Arc::new(Semaphore::new(WINDOW));
        let w = window.clone();
        tasks.push(tokio::spawn(async move {
            let text = json!({"type":"ice-candidate","to":b_id,
                "data":{"candidate":CANDIDATE,"sdpMid":"0","sdpMLineIndex":0}})
            .to_string();
            for _ in 0..messages {
                w.acquire().await.unwrap().forget();
                a.send(Message::text(text.clone())).await.unwrap();
            }
            a
        }));
        tasks.push(tokio::spawn(async move {
            let mut got = 0;
            while got < messages {
                match b.next().await {
                    Some(Ok(Message::Text(t))) if t.as_str().contains("ice-candidate") => {
                        got += 1;
                        window.add_permits(1);
                    }
                    Some(Ok(_)) => {}
                    other => panic!("receiver ended: {other:?}"),
                }
            }
            b
        }));
    }
    let mut keep = Vec::new();
    for t in tasks {
        keep.push(t.await.unwrap());
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;
    drop(keep);
    Outcome {
        seconds,
        cpu,
        relays: pairs * messages,
    }
}

fn stop(mut server: Server) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status();
    let _ = server.child.wait();
}

#[tokio::main]
async fn main() {
    // RELAY_BENCH_SINK_ONLY=127.0.0.1:4317 runs only the OTLP sink, for a
    // server started by hand (chatsubo-loadgen's relay workload with trace
    // export on); it prints the spans received every 5 s until killed.
    if let Ok(addr) = std::env::var("RELAY_BENCH_SINK_ONLY") {
        let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
        let sink = Sink::default();
        let spans = sink.spans.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                println!("spans received: {}", spans.load(Ordering::Relaxed));
            }
        });
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(sink))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
        return;
    }
    let args = args();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = listener.local_addr().unwrap();
    let sink = Sink::default();
    let service = TraceServiceServer::new(sink.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });

    println!(
        "pairs={} messages/pair={} rounds={} window={WINDOW}",
        args.pairs, args.messages, args.rounds
    );
    println!("mode  round  relays/s   server CPU µs/relay");
    let mut results: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    for round in 0..args.rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        // RELAY_BENCH_MODES=on runs only the observability-on server.
        let only = std::env::var("RELAY_BENCH_MODES").ok();
        for mode in order {
            if only.as_deref().is_some_and(|m| m != ["off", "on"][mode]) {
                continue;
            }
            let server = start_server((mode == 1).then_some(sink_addr));
            let pid = server.child.id();
            let o = load(server.addr, args.pairs, args.messages, pid).await;
            let rate = o.relays as f64 / o.seconds;
            let us = o.cpu * 1e6 / o.relays as f64;
            println!(
                "{:<5} {round:>5}  {rate:>9.0}  {us:>8.2}",
                ["off", "on"][mode]
            );
            results[mode].push((rate, us));
            if mode == 1 {
                let text = reqwest::get(format!("http://{}/metrics", server.addr))
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                let dropped: Vec<&str> = text
                    .lines()
                    .filter(|l| {
                        l.starts_with("chatsubo_spans_dropped_total")
                            || l.starts_with("chatsubo_log_lines_dropped_total")
                    })
                    .collect();
                println!("      drops so far: {}", dropped.join(", "));
            }
            stop(server);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let mut rate_off: Vec<f64> = results[0].iter().map(|r| r.0).collect();
    let mut rate_on: Vec<f64> = results[1].iter().map(|r| r.0).collect();
    let mut cpu_off: Vec<f64> = results[0].iter().map(|r| r.1).collect();
    let mut cpu_on: Vec<f64> = results[1].iter().map(|r| r.1).collect();
    let (ro, rn, co, cn) = (
        median(&mut rate_off),
        median(&mut rate_on),
        median(&mut cpu_off),
        median(&mut cpu_on),
    );
    println!("median off: {ro:.0} relays/s, {co:.2} µs CPU/relay");
    println!("median on:  {rn:.0} relays/s, {cn:.2} µs CPU/relay");
    println!(
        "overhead: CPU per relay {:+.1}%, throughput {:+.1}%",
        (cn / co - 1.0) * 100.0,
        (rn / ro - 1.0) * 100.0
    );
    println!(
        "spans received by the in-process OTLP sink: {}",
        sink.spans.load(Ordering::Relaxed)
    );
}
