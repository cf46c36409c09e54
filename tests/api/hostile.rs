//! Hostile clients: slowloris headers, idle sockets, never-joining
//! connections, the open-HTTP-connection cap. Each is cut off and counted.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

const SLOW: &str = "chatsubo_slow_clients_total";

/// Reads until the server closes the connection; what it sent, and when.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, Instant) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!(
                "the server kept the connection open; it sent {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, Instant::now()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `text` one byte every `gap`, stopping quietly if the server closes.
async fn trickle(stream: &mut TcpStream, text: &str, gap: Duration) -> usize {
    let mut sent = 0;
    for byte in text.bytes() {
        if stream.write_all(&[byte]).await.is_err() {
            break;
        }
        sent += 1;
        tokio::time::sleep(gap).await;
    }
    sent
}

#[tokio::test]
async fn slowloris_headers_are_cut_off_at_the_header_timeout_and_counted() {
    let app = spawn_app_with(|c| c.http_header_timeout_ms = 400).await;
    for path in ["/health", "/ws"] {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        let started = Instant::now();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        // 50 ms a byte: the whole head would take seconds.
        let (mut reader, mut writer) = stream.split();
        let sent = tokio::select! {
            sent = trickle_split(&mut writer, &request, Duration::from_millis(50)) => sent,
            _ = async {
                let mut buf = [0u8; 256];
                while let Ok(n) = reader.read(&mut buf).await {
                    if n == 0 { break; }
                }
            } => 0,
        };
        let elapsed = started.elapsed();
        assert!(
            sent < request.len(),
            "{path}: the whole slow head was accepted"
        );
        assert!(
            elapsed >= Duration::from_millis(350) && elapsed < Duration::from_secs(3),
            "{path}: closed after {elapsed:?}, expected about 400 ms"
        );
    }
    app.wait_metric(&format!("{SLOW}{{stage=\"headers\"}}"), 2.0)
        .await;
    assert_eq!(app.metric(&format!("{SLOW}{{stage=\"idle\"}}")).await, 0.0);
    // Normal requests still work.
    assert_eq!(app.get("/health").await.status(), 200);
    app.stop().await;
}

async fn trickle_split(
    writer: &mut tokio::net::tcp::WriteHalf<'_>,
    text: &str,
    gap: Duration,
) -> usize {
    let mut sent = 0;
    for byte in text.bytes() {
        if writer.write_all(&[byte]).await.is_err() {
            break;
        }
        sent += 1;
        tokio::time::sleep(gap).await;
    }
    sent
}

#[tokio::test]
async fn a_socket_that_sends_nothing_is_closed_and_counted_as_idle() {
    let app = spawn_app_with(|c| c.http_header_timeout_ms = 300).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let started = Instant::now();
    let (got, at) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(got.is_empty(), "nothing is said to an idle socket");
    let elapsed = at - started;
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "closed after {elapsed:?}"
    );
    app.wait_metric(&format!("{SLOW}{{stage=\"idle\"}}"), 1.0)
        .await;

    // A keep-alive connection quiet after a request is closed the same
    // way, but it is not a slow client.
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    trickle(
        &mut stream,
        "GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::ZERO,
    )
    .await;
    let (got, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    assert_eq!(app.metric(&format!("{SLOW}{{stage=\"idle\"}}")).await, 1.0);
    assert_eq!(
        app.metric(&format!("{SLOW}{{stage=\"headers\"}}")).await,
        0.0
    );
    app.stop().await;
}

#[tokio::test]
async fn open_http_connections_are_capped_with_a_clear_refusal() {
    let app = spawn_app_with(|c| {
        c.max_http_connections = 2;
        c.http_header_timeout_ms = 60_000;
    })
    .await;
    let held = [
        TcpStream::connect(app.addr).await.unwrap(),
        TcpStream::connect(app.addr).await.unwrap(),
    ];
    // The accept loop takes them in order; give it a moment.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(app.addr).await.unwrap();
    let (got, _) = read_until_closed(&mut third, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 503"), "got {text:?}");
    assert!(text.contains("TOO_MANY_CONNECTIONS"), "got {text:?}");
    drop(held);
    // Once they are gone, HTTP is served again and the refusal was counted.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let metrics = loop {
        if let Ok(res) = reqwest::get(app.url("/metrics")).await
            && res.status() == 200
        {
            break res.text().await.unwrap();
        }
        assert!(tokio::time::Instant::now() < deadline, "still refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        metric_value(
            &metrics,
            "chatsubo_connections_refused_total{reason=\"http_total\"}"
        ),
        1.0
    );
    app.stop().await;
}

#[tokio::test]
async fn upgraded_websockets_do_not_count_against_the_http_cap() {
    let app = spawn_app_with(|c| c.max_http_connections = 2).await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(app.client_when_allowed().await);
    }
    assert_eq!(app.metric("chatsubo_http_connections").await, 1.0);
    app.stop().await;
}

#[tokio::test]
async fn a_connection_that_never_joins_is_closed_with_1008_and_counted() {
    let app = spawn_app_with(|c| c.join_timeout_secs = Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut idle = app.client().await;
    // Talking is not joining.
    idle.ping_next(1).await;
    assert_eq!(idle.expect_close().await, Some(1008));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "closed after {elapsed:?}"
    );
    app.wait_metric("chatsubo_kicks_total{reason=\"join_timeout\"}", 1.0)
        .await;

    // Joined, then left: the rule no longer applies.
    let mut joined = app.joined("lobby", "ann").await;
    let mut by_query = app.client_with("?room=lobby").await;
    by_query.recv_type("joined").await;
    joined.send(json!({"type":"leave"})).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    joined.ping(2).await;
    by_query.ping(3).await;
    assert_eq!(
        app.metric("chatsubo_kicks_total{reason=\"join_timeout\"}")
            .await,
        1.0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_request_head_over_64_kib_is_refused_with_431() {
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let big = "a".repeat(100 * 1024);
    let request = format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    // The server may stop reading (and close) before all of it is sent.
    let _ = stream.write_all(request.as_bytes()).await;
    let (got, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 431"), "got {text:?}");
    app.stop().await;
}
