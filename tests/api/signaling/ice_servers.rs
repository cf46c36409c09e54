//! STUN/TURN servers in `welcome` and on `ice-servers`: coturn's REST API
//! credentials (`<expiry>:<peerId>`, base64 HMAC-SHA1), fresh on every
//! answer, never in the logs, the store or `/api`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::helpers::*;

const SECRET: &str = "turn-secret-SENTINEL-7f3a";
const TURN: &str = "turn:127.0.0.1:3478?transport=udp";
const STUN: &str = "stun:127.0.0.1:3478";

/// A server handing out one STUN and one TURN url, credentials valid `ttl` s.
async fn with_ice(ttl: u64) -> TestApp {
    spawn_app_with(|c| {
        let file = c.data_dir.with_file_name("turn-secret");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, format!("{SECRET}\n")).unwrap();
        c.ice.turn_urls = vec![TURN.into()];
        c.ice.stun_urls = vec![STUN.into()];
        c.ice.turn_secret_file = Some(file);
        c.ice.turn_ttl_secs = ttl;
        c.ice.load_secret().unwrap();
    })
    .await
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Checks one `iceServers` array: STUN first, then TURN with a credential
/// for `peer` expiring `ttl` seconds from about now. Returns the TURN entry.
fn check_servers(servers: &Value, peer: &str, ttl: u64) -> Value {
    assert_eq!(servers[0], json!({"urls": [STUN]}), "{servers}");
    let turn = &servers[1];
    assert_eq!(turn["urls"], json!([TURN]), "{servers}");
    let username = turn["username"].as_str().unwrap();
    let (expiry, name) = username.split_once(':').unwrap();
    assert_eq!(name, peer);
    let expiry: u64 = expiry.parse().unwrap();
    let now = now_secs();
    assert!(
        (now + ttl - 5..=now + ttl + 1).contains(&expiry),
        "expiry {expiry}, now {now}"
    );
    assert_eq!(
        turn["credential"],
        chatsubo::signaling::turn_credential(SECRET.as_bytes(), username)
    );
    turn.clone()
}

#[tokio::test]
async fn without_ice_servers_the_welcome_has_none_and_the_answer_is_empty() {
    let app = spawn_app().await;
    let mut c = app.client().await;
    assert!(c.welcome.get("iceServers").is_none(), "{}", c.welcome);
    c.send(json!({"type":"ice-servers"})).await;
    assert_eq!(
        c.recv_type("ice-servers").await,
        json!({"type":"ice-servers","iceServers":[]})
    );
}

#[tokio::test]
async fn the_welcome_carries_stun_and_turn_with_credentials_for_the_peer() {
    let app = with_ice(600).await;
    let c = app.client().await;
    check_servers(&c.welcome["iceServers"], &c.peer_id(), 600);
}

#[tokio::test]
async fn ice_servers_answers_with_fresh_credentials_before_and_after_join() {
    let app = with_ice(2).await;
    let mut c = app.client().await;
    let first = check_servers(&c.welcome["iceServers"], &c.peer_id(), 2);
    // Fresh: a later expiry than the welcome's, once the clock moved a second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    c.send(json!({"type":"ice-servers"})).await;
    let before = c.recv_type("ice-servers").await;
    let fresh = check_servers(&before["iceServers"], &c.peer_id(), 2);
    assert_ne!(fresh["username"], first["username"]);
    c.join("ice", "ann").await;
    c.send(json!({"type":"ice-servers"})).await;
    let after = c.recv_type("ice-servers").await;
    check_servers(&after["iceServers"], &c.peer_id(), 2);
    assert_eq!(
        app.metric(r#"chatsubo_messages_total{direction="in",type="ice-servers"}"#)
            .await,
        2.0
    );
    assert_eq!(
        app.metric(r#"chatsubo_messages_total{direction="out",type="ice-servers"}"#)
            .await,
        2.0
    );
}

#[tokio::test]
async fn ice_servers_is_rate_limited_like_everything_else() {
    let app = spawn_app_with(|c| {
        c.rate_limit_burst = 3;
        c.rate_limit_per_sec = 1;
    })
    .await;
    let mut c = app.client().await;
    for _ in 0..4 {
        c.send(json!({"type":"ice-servers"})).await;
    }
    for _ in 0..3 {
        c.recv_type("ice-servers").await;
    }
    let limited = c.recv_error("RATE_LIMITED").await;
    assert_eq!(limited["ref"], "ice-servers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_and_the_credentials_reach_no_log_store_or_api() {
    // The real binary, logging at debug to its files and stdout, with the
    // secret in the environment.
    let app = BinApp::start(
        &[
            "--log-level",
            "debug",
            "--turn-url",
            TURN,
            "--stun-url",
            STUN,
        ],
        &[("CHATSUBO_TURN_SECRET", SECRET)],
    );
    let (mut a, mut b) = (app.client().await, app.client().await);
    a.join("ice", "ann").await;
    b.join("ice", "bob").await;
    a.recv_type("peer-joined").await;
    let mut credentials = Vec::new();
    for c in [&mut a, &mut b] {
        let turn = check_servers(&c.welcome["iceServers"], &c.peer_id(), 86_400);
        credentials.push(turn["credential"].as_str().unwrap().to_string());
        c.send(json!({"type":"ice-servers"})).await;
        let answer = c.recv_type("ice-servers").await;
        let turn = check_servers(&answer["iceServers"], &c.peer_id(), 86_400);
        credentials.push(turn["credential"].as_str().unwrap().to_string());
    }
    let id = a.welcome["sessionId"].as_str().unwrap().to_string();
    a.close().await;
    b.close().await;
    let base = format!("http://{}", app.addr);
    let mut api = String::new();
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let session = reqwest::get(format!("{base}/api/sessions/{id}"))
            .await
            .unwrap();
        let text = session.text().await.unwrap();
        if text.contains("endedAt\":\"") || std::time::Instant::now() > deadline {
            api.push_str(&text);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    api.push_str(
        &bodies_of(
            &base,
            &["/api/sessions", "/api/rooms", "/api/stats", "/metrics"],
        )
        .await,
    );
    let (status, dir, stdout) = tokio::task::spawn_blocking(move || app.terminate())
        .await
        .unwrap();
    assert!(status.success());
    let files = files_under(dir.path());
    assert!(
        files
            .iter()
            .any(|(p, _)| p.starts_with(dir.path().join("logs"))),
        "{files:?}"
    );
    assert!(
        files
            .iter()
            .any(|(p, _)| p.starts_with(dir.path().join("data")))
    );
    let stdout = stdout.join("\n");
    assert!(stdout.contains("peer_joined"), "the debug log ran");
    for secret in std::iter::once(SECRET.to_string()).chain(credentials) {
        assert!(!api.contains(&secret), "{secret} in an API answer");
        assert!(!stdout.contains(&secret), "{secret} on stdout");
        for (path, bytes) in &files {
            let found = contains(bytes, secret.as_bytes());
            assert!(!found, "{secret} in {}", path.display());
        }
    }
}

#[tokio::test]
async fn the_path_of_a_connected_pair_is_counted_and_in_the_stats() {
    let app = spawn_app().await;
    let (mut a, b) = (
        app.joined("paths", "ann").await,
        app.joined("paths", "bob").await,
    );
    a.recv_type("peer-joined").await;
    for (path, ms) in [("relay", 400), ("host", 100), ("relay", 300)] {
        a.send(
            json!({"type":"telemetry","event":"peer-connection","peer":b.peer_id(),
            "outcome":"connected","ms":ms,"path":path}),
        )
        .await;
    }
    a.send(
        json!({"type":"telemetry","event":"peer-connection","peer":b.peer_id(),
        "outcome":"failed","reason":"ice-failed"}),
    )
    .await;
    a.send(
        json!({"type":"telemetry","event":"peer-connection","peer":b.peer_id(),
        "outcome":"connected","ms":10,"path":"turn"}),
    )
    .await;
    a.recv_error("INVALID_MESSAGE").await;
    for (sample, value) in [
        (
            r#"chatsubo_peer_connections_total{outcome="connected",path="relay"}"#,
            2.0,
        ),
        (
            r#"chatsubo_peer_connections_total{outcome="connected",path="host"}"#,
            1.0,
        ),
        (
            r#"chatsubo_peer_connections_total{outcome="failed",path="unknown"}"#,
            1.0,
        ),
        (
            r#"chatsubo_peer_connections_total{outcome="connected",path="srflx"}"#,
            0.0,
        ),
    ] {
        assert_eq!(app.metric(sample).await, value, "{sample}");
    }
    let stats = api_until(&app, "/api/stats", |s| s["peerConnections"] == 3).await;
    assert_eq!(stats["relayedConnections"], 2, "{stats}");
    assert_eq!(stats["failedPeerConnections"], 1, "{stats}");
    assert_eq!(stats["p50PeerConnectMs"], 300.0, "{stats}");
    assert_eq!(stats["p95PeerConnectMs"], 400.0, "{stats}");
    let id = a.welcome["sessionId"].as_str().unwrap();
    let session = api_until(&app, &format!("/api/sessions/{id}"), |s| {
        s["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"] == "relay")
    })
    .await;
    assert!(session.to_string().contains(r#""path":"relay""#));
}
