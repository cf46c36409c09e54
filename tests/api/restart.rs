//! Restart tests: the real binary as a child process, stopped gracefully
//! (SIGTERM) or killed (SIGKILL), then started again on the same data
//! directory. The child logs its listening address (JSON line with
//! `"event":"listening"`), so it can take port 0 and tell which it got.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::*;

const TOKEN: &str = "restart-SECRET-token-91c3";

/// The binary on `dir`, with the API token these tests read with.
fn start(dir: &Path, extra: &[&str]) -> BinApp {
    let args = [&["--api-token", TOKEN][..], extra].concat();
    BinApp::start_in(dir, &args, &[("RUST_LOG", "info")])
}

async fn api(server: &BinApp, path: &str) -> Value {
    let (status, body) = api_get(server, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

async fn api_get(server: &BinApp, path: &str) -> (u16, Value) {
    let res = reqwest::Client::new()
        .get(format!("http://{}{}", server.addr, path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET");
    (res.status().as_u16(), res.json().await.unwrap())
}

/// Polls until `done`; a session not written yet (404) is polled again.
async fn api_until(server: &BinApp, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = api_get(server, path).await;
        assert!(status == 200 || status == 404, "{path}: {status} {body}");
        if status == 200 && done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "gave up on {path}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn ms(v: &Value) -> u64 {
    let t = chatsubo::timefmt::parse_rfc3339(v.as_str().expect("a time")).unwrap();
    (t.unix_timestamp_nanos() / 1_000_000) as u64
}

fn sessions(list: &Value) -> Vec<Value> {
    list["sessions"].as_array().unwrap().clone()
}

fn data_dir(dir: &Path) -> PathBuf {
    dir.join("data")
}

#[tokio::test]
async fn a_graceful_stop_flushes_and_closes_sessions_as_server_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &[]);
    let mut a = Client::connect(&server.ws_url()).await;
    a.join("r", "ann").await;
    let mut b = Client::connect(&server.ws_url()).await;
    b.join("r", "bob").await;
    let c = Client::connect(&server.ws_url()).await;
    let tokens = [a.token(), b.token(), c.token()];
    let a_session = a.welcome["sessionId"].as_str().unwrap().to_string();
    api_until(&server, "/api/sessions", |l| sessions(l).len() == 3).await;
    let before = now_ms();
    server.signal("-TERM");
    // The clients see the shutdown as the contract says.
    loop {
        let m = a.recv().await;
        if m["type"] == "error" {
            assert_eq!(m["code"], "SERVER_SHUTTING_DOWN");
            break;
        }
    }
    assert_eq!(a.expect_close().await, Some(1001));
    assert_eq!(server.exited().await, Some(0), "{}", server.output());
    let after = now_ms();
    let first_run = server.output();
    drop(server);

    let server = start(dir.path(), &[]);
    let list = api(&server, "/api/sessions").await;
    let all = sessions(&list);
    assert_eq!(all.len(), 3, "{list}");
    for s in &all {
        assert_eq!(s["closeReason"], "server_shutdown", "{s}");
        let ended = ms(&s["endedAt"]);
        assert!(
            before <= ended && ended <= after,
            "{before} <= {ended} <= {after}"
        );
    }
    let a_full = api(&server, &format!("/api/sessions/{a_session}")).await;
    let kinds: Vec<&str> = a_full["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    // The place is kept for the grace (disconnect), then the close is sent.
    assert_eq!(
        kinds,
        ["connect", "join", "disconnect", "error"],
        "{a_full}"
    );
    assert_eq!(a_full["events"][2]["reason"], "server_shutdown");
    assert_eq!(a_full["events"][3]["code"], "SERVER_SHUTTING_DOWN");
    // No token in the logs, nor in the store.
    let logs = first_run + &server.output();
    assert!(logs.contains("\"event\":\"store_closed\""), "{logs}");
    let store = all_bytes(&data_dir(dir.path()));
    for secret in [TOKEN.to_string()].into_iter().chain(
        tokens
            .iter()
            .map(|t| t.split_once('.').unwrap().1.to_string()),
    ) {
        assert!(!logs.contains(&secret), "a token in the logs");
        assert!(!contains(&store, secret.as_bytes()), "a token in the store");
    }
}

#[tokio::test]
async fn after_a_kill_sessions_are_closed_as_server_crash_and_nothing_flushed_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &["--flush-interval-ms", "200"]);
    let mut a = Client::connect(&server.ws_url()).await;
    a.join("r", "ann").await;
    let mut b = Client::connect(&server.ws_url()).await;
    b.join("r", "bob").await;
    b.send(json!({"type":"telemetry","event":"connect-time","ms":95}))
        .await;
    let mut c = Client::connect(&server.ws_url()).await;
    c.join("s", "cy").await;
    let c_session = c.welcome["sessionId"].as_str().unwrap().to_string();
    c.close().await;
    // Acknowledged: the API shows all of it.
    api_until(&server, "/api/sessions", |l| {
        let all = sessions(l);
        all.len() == 3
            && all
                .iter()
                .any(|s| s["sessionId"] == c_session.as_str() && !s["endedAt"].is_null())
    })
    .await;
    let b_events = |v: &Value| v["events"].as_array().map_or(0, |e| e.len());
    let b_path = format!("/api/sessions/{}", b.welcome["sessionId"].as_str().unwrap());
    api_until(&server, &b_path, |v| b_events(v) == 3).await;
    // Longer than the flush interval and than one alive tick.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let killed_at = now_ms();
    server.signal("-KILL");
    server.exited().await;
    drop(server);

    let server = start(dir.path(), &[]);
    let list = api(&server, "/api/sessions").await;
    let all = sessions(&list);
    assert_eq!(all.len(), 3, "{list}");
    for s in &all {
        if s["sessionId"] == c_session.as_str() {
            assert_eq!(
                s["closeReason"], "left",
                "ended before the kill: kept as it was"
            );
            continue;
        }
        assert_eq!(s["closeReason"], "server_crash", "{s}");
        let ended = ms(&s["endedAt"]);
        assert!(
            ended <= killed_at,
            "endedAt {ended} after the kill {killed_at}"
        );
        assert!(
            ended + 5000 >= killed_at,
            "endedAt {ended} more than 5 s before the kill {killed_at}"
        );
        assert_eq!(
            s["durationMs"].as_u64().unwrap(),
            ended - ms(&s["connectedAt"])
        );
    }
    let b_after = api(&server, &b_path).await;
    assert_eq!(
        b_events(&b_after),
        3,
        "connect, join, telemetry survived: {b_after}"
    );
    assert_eq!(b_after["events"][2]["event"], "connect-time");
    let logs = server.output();
    assert!(logs.contains("\"event\":\"sessions_recovered\""), "{logs}");
    assert!(!logs.contains(TOKEN));
    drop(a);
    drop(b);
}

#[test]
fn the_binary_refuses_a_store_from_a_newer_version() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(data_dir(dir.path())).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert(
                chatsubo::analytics::layout::VERSION_KEY,
                &7u32.to_be_bytes(),
            )
            .unwrap();
        db.flush().unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_chatsubo"))
        .args(["--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir(dir.path()))
        .arg("--log-dir")
        .arg(dir.path().join("logs"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "the store has schema version 7, newer than the {} this chatsubo understands",
        chatsubo::analytics::layout::SCHEMA_VERSION
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

// Restarts inside the grace: the resume state survives in the store.

/// The resume grace of the restart tests: long enough for a restart and
/// three resumes, short enough to wait for its end.
const GRACE_SECS: u64 = 5;
/// How long "nobody hears anything" is watched for.
const SILENCE: Duration = Duration::from_millis(1000);

fn restart_args() -> Vec<String> {
    [
        "--resume-grace-secs",
        &GRACE_SECS.to_string(),
        "--flush-interval-ms",
        "200",
    ]
    .map(str::to_string)
    .to_vec()
}

fn join_with_token(room: &str, token: &str) -> Value {
    json!({"type":"join","room":room,"resumeToken":token})
}

/// The peers of a `joined`, as (peerId, displayName) sorted.
fn peers_of(joined: &Value) -> Vec<(String, String)> {
    let mut peers: Vec<(String, String)> = joined["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["peerId"].as_str().unwrap().to_string(),
                p["displayName"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    peers.sort();
    peers
}

fn session_id(c: &Client) -> String {
    c.welcome["sessionId"].as_str().unwrap().to_string()
}

/// The fields of the first log line with this `event`.
fn log_event(output: &str, event: &str) -> Option<Value> {
    output
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == event)
}

/// Stops the server the way `kill` says: SIGKILL after waiting out the
/// flush window, or SIGTERM with the clients seeing the shutdown.
async fn stop(server: &mut BinApp, clients: &mut [&mut Client], kill: bool) {
    if kill {
        // Longer than the flush interval (200 ms), so the state is on disk.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        server.signal("-KILL");
        server.exited().await;
    } else {
        server.signal("-TERM");
        for c in clients.iter_mut() {
            assert_eq!(c.expect_close().await, Some(1001));
        }
        assert_eq!(server.exited().await, Some(0), "{}", server.output());
    }
}

/// Five peers in room `r` (the fifth already away when the server stops)
/// and one in `s` whose first token was spent before the restart; after the
/// restart, three of `r` and the one of `s` come back inside the grace.
async fn restart_inside_the_grace_is_invisible(kill: bool) {
    let dir = tempfile::tempdir().unwrap();
    let args = restart_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = start(dir.path(), &args);
    let mut a = Client::connect(&server.ws_url()).await;
    a.join("r", "ann").await;
    let mut b = Client::connect(&server.ws_url()).await;
    b.join("r", "bob").await;
    let mut c = Client::connect(&server.ws_url()).await;
    c.join("r", "cy").await;
    let mut d = Client::connect(&server.ws_url()).await;
    d.join("r", "dee").await;
    let mut e = Client::connect(&server.ws_url()).await;
    e.join("r", "eve").await;
    for (who, joined) in [(&mut a, 4), (&mut b, 3), (&mut c, 2), (&mut d, 1)] {
        for _ in 0..joined {
            who.recv_type("peer-joined").await;
        }
    }
    let names: Vec<(String, String)> = [
        (&a, "ann"),
        (&b, "bob"),
        (&c, "cy"),
        (&d, "dee"),
        (&e, "eve"),
    ]
    .iter()
    .map(|(c, n)| (c.peer_id(), n.to_string()))
    .collect();
    let old_sessions: Vec<String> = [&a, &b, &c, &d, &e].iter().map(|c| session_id(c)).collect();
    // e drops before the restart: it is away, inside its grace, when the
    // server stops.
    let e_token = e.token();
    e.vanish();
    // x resumes once before the restart: its first token is spent.
    let mut x1 = Client::connect(&server.ws_url()).await;
    x1.join("s", "xan").await;
    let (x_peer, x_spent, x1_session) = (x1.peer_id(), x1.token(), session_id(&x1));
    x1.vanish();
    let mut x = Client::connect(&server.ws_url()).await;
    x.send(join_with_token("s", &x_spent)).await;
    let joined = x.recv_type("joined").await;
    assert_eq!(joined["resumed"], true, "{joined}");
    assert_eq!(joined["peerId"], x_peer.as_str());
    let x_session = session_id(&x);
    // Everything is written once e's drop and x's resume show in the API.
    api_until(
        &server,
        &format!("/api/sessions/{}", old_sessions[4]),
        |s| {
            s["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["kind"] == "disconnect")
        },
    )
    .await;
    api_until(&server, &format!("/api/sessions/{x_session}"), |s| {
        s["resumedFrom"] == x1_session.as_str()
    })
    .await;

    let tokens: Vec<String> = [&a, &b, &c, &d, &x].iter().map(|c| c.token()).collect();
    stop(
        &mut server,
        &mut [&mut a, &mut b, &mut c, &mut d, &mut x],
        kill,
    )
    .await;
    let first_run = server.output();
    drop(server);
    drop((a, b, c, d, x));

    let started = Instant::now();
    let server = start(dir.path(), &args);
    let restored = log_event(&server.output(), "resume_state_restored")
        .unwrap_or_else(|| panic!("no resume_state_restored line: {}", server.output()));
    assert_eq!(restored["rooms"], 2, "{restored}");
    assert_eq!(restored["peers"], 6, "{restored}");
    assert_eq!(restored["tokens"], 6, "{restored}");

    // a, b and c come back: same ids, every old room mate listed (d and e
    // still inside their grace).
    let mut back = Vec::new();
    for (i, token) in tokens[..3].iter().enumerate() {
        let mut client = Client::connect(&server.ws_url()).await;
        client.send(join_with_token("r", token)).await;
        let joined = client.recv_type("joined").await;
        assert_eq!(joined["resumed"], true, "{joined}");
        assert_eq!(joined["peerId"], names[i].0.as_str(), "{joined}");
        let mut others = names.clone();
        others.remove(i);
        assert_eq!(peers_of(&joined), others, "{joined}");
        back.push(client);
    }
    assert!(
        started.elapsed() < Duration::from_secs(GRACE_SECS) - SILENCE,
        "too slow to watch the silence inside the grace"
    );
    // Nobody hears of anyone leaving or joining.
    {
        let [a, b, c] = &mut back[..] else {
            unreachable!()
        };
        tokio::join!(
            a.expect_silence(SILENCE),
            b.expect_silence(SILENCE),
            c.expect_silence(SILENCE)
        );
    }
    // Relays between resumed peers work, both ways.
    back[0]
        .send(json!({"type":"offer","to":names[1].0,"data":{"sdp":"v=0"}}))
        .await;
    let offer = back[1].recv_type("offer").await;
    assert_eq!(offer["from"], names[0].0.as_str());
    assert_eq!(offer["data"], json!({"sdp":"v=0"}));
    back[1]
        .send(json!({"type":"answer","to":names[0].0,"data":{"sdp":"v=1"}}))
        .await;
    let answer = back[0].recv_type("answer").await;
    assert_eq!(answer["from"], names[1].0.as_str());

    // A token spent before the restart does not work after it.
    let mut y = Client::connect(&server.ws_url()).await;
    y.send(join_with_token("s", &x_spent)).await;
    let joined = y.recv_type("joined").await;
    assert_eq!(joined["resumed"], false, "{joined}");
    assert_ne!(joined["peerId"], x_peer.as_str());
    // x's current token works once after the restart...
    let mut x = Client::connect(&server.ws_url()).await;
    x.send(join_with_token("s", &tokens[4])).await;
    let joined = x.recv_type("joined").await;
    assert_eq!(joined["resumed"], true, "{joined}");
    assert_eq!(joined["peerId"], x_peer.as_str());
    let x_new_session = session_id(&x);
    // ...and only once.
    let mut x_again = Client::connect(&server.ws_url()).await;
    x_again.send(join_with_token("s", &tokens[4])).await;
    let joined = x_again.recv_type("joined").await;
    assert_eq!(joined["resumed"], false, "{joined}");
    assert_ne!(joined["peerId"], x_peer.as_str());

    // d (connected when the server stopped) and e (away already) never
    // come back: when the grace counted from the restart ends, the others
    // see them leave.
    let mut gone = vec![names[3].0.clone(), names[4].0.clone()];
    gone.sort();
    for client in &mut back {
        let mut left = Vec::new();
        for _ in 0..2 {
            let m = client.recv_type("peer-left").await;
            assert_eq!(m["reason"], "disconnected", "{m}");
            left.push(m["peerId"].as_str().unwrap().to_string());
        }
        left.sort();
        assert_eq!(left, gone);
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(GRACE_SECS),
        "peer-left after {waited:?}, inside the grace"
    );

    // The session history: resumes point at the sessions closed by the
    // restart, and the leaves of d and e are recorded on their old sessions.
    let closed_as = if kill {
        "server_crash"
    } else {
        "server_shutdown"
    };
    for (i, client) in back.iter().enumerate() {
        let new = api_until(
            &server,
            &format!("/api/sessions/{}", session_id(client)),
            |s| !s["resumedFrom"].is_null(),
        )
        .await;
        assert_eq!(new["resumedFrom"], old_sessions[i].as_str(), "{new}");
        let old = api(&server, &format!("/api/sessions/{}", old_sessions[i])).await;
        assert_eq!(old["closeReason"], closed_as, "{old}");
    }
    let x_now = api_until(&server, &format!("/api/sessions/{x_new_session}"), |s| {
        !s["resumedFrom"].is_null()
    })
    .await;
    assert_eq!(x_now["resumedFrom"], x_session.as_str());
    for i in [3, 4] {
        let old = api_until(
            &server,
            &format!("/api/sessions/{}", old_sessions[i]),
            |s| {
                s["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["kind"] == "leave")
            },
        )
        .await;
        let leave = old["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "leave")
            .unwrap();
        assert_eq!(leave["reason"], "disconnected", "{old}");
        assert_eq!(leave["peer"], names[i].0.as_str());
    }

    // Tokens are never in the logs or the store, only hashes of them.
    let logs = first_run + &server.output();
    let store = all_bytes(&data_dir(dir.path()));
    for token in tokens.iter().chain([&x_spent, &e_token]) {
        let secret = token.split_once('.').unwrap().1;
        assert!(!logs.contains(secret), "a token in the logs");
        assert!(!contains(&store, secret.as_bytes()), "a token in the store");
    }
    drop((y, x, x_again));
}

#[tokio::test]
async fn a_graceful_restart_inside_the_grace_is_invisible_to_the_room() {
    restart_inside_the_grace_is_invisible(false).await;
}

#[tokio::test]
async fn a_kill_and_restart_inside_the_grace_is_invisible_to_the_room() {
    restart_inside_the_grace_is_invisible(true).await;
}

/// After a restart every client comes back at once, before the server
/// accepts anything (it opens the store and restores the places first):
/// the listener's queue must hold them all. With tokio's default backlog
/// (128) the rest had their SYN dropped and waited 1 s for the retry.
#[tokio::test]
async fn the_listener_holds_a_reconnect_storm_until_the_first_accept() {
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096);
    let storm = somaxconn.min(1000);
    assert!(
        storm > 256,
        "net.core.somaxconn is {somaxconn}: too small to tell the backlog"
    );
    let listener = chatsubo::server::bind("127.0.0.1:0".parse().unwrap(), None).expect("bind");
    let addr = listener.local_addr().unwrap();
    // Nothing accepts: every handshake must complete in the kernel's queue.
    let connects = (0..storm).map(|_| {
        tokio::time::timeout(
            Duration::from_millis(700),
            tokio::net::TcpStream::connect(addr),
        )
    });
    let results = futures_util::future::join_all(connects).await;
    let connected = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    assert_eq!(
        connected, storm,
        "only {connected} of {storm} connections were queued within 700 ms"
    );
    drop(listener);
}
