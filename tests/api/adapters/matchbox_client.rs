//! The real matchbox client on `/matchbox/<room>`: two native
//! `matchbox_socket` 0.15 sockets (tests/matchbox-client, `matchbox-pair`)
//! join `?next=2`, connect over WebRTC and send a packet each way on a
//! reliable channel; `/api/sessions?protocol=matchbox` then shows both.
//!
//! The client is a cargo package of its own, built apart from the server:
//! scripts/test.sh builds it into `target/matchbox-client/debug/matchbox-pair`
//! before `cargo test`. `MATCHBOX_PAIR_BIN` points the test at a binary
//! elsewhere. Without the binary the test fails (it does not skip).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

/// Overrides where the test looks for the `matchbox-pair` binary.
const BIN_ENV: &str = "MATCHBOX_PAIR_BIN";
/// The client's own deadline; it is killed if still running 10 s later.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The `matchbox-pair` binary; fails the test with how to build it.
fn matchbox_pair() -> PathBuf {
    let path = std::env::var_os(BIN_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/matchbox-client/debug/matchbox-pair")
        });
    assert!(
        path.is_file(),
        "the real matchbox client is not built: {} is missing. Build it with \
         `cargo build --locked --manifest-path tests/matchbox-client/Cargo.toml \
         --target-dir target/matchbox-client` (scripts/test.sh does), or set {BIN_ENV} \
         to the binary.",
        path.display()
    );
    path
}

/// Runs `bin` against `url`: its output, once it has exited.
async fn run(bin: PathBuf, url: &str) -> Output {
    let child = Command::new(bin)
        .arg(url)
        .arg(CLIENT_TIMEOUT.as_secs().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start matchbox-pair");
    let pid = child.id();
    let waited = tokio::time::timeout(
        CLIENT_TIMEOUT + Duration::from_secs(10),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await;
    match waited {
        Ok(output) => output.expect("wait task").expect("wait for matchbox-pair"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("matchbox-pair did not exit by itself; killed it");
        }
    }
}

#[tokio::test]
async fn two_real_matchbox_sockets_connect_through_matchbox_and_are_listed_as_sessions() {
    let bin = matchbox_pair();
    let app = spawn_app().await;
    let room = format!("pair-{}", ulid::Ulid::new());
    let url = format!("ws://{}/matchbox/{room}?next=2", app.addr);

    let output = run(bin, &url).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("matchbox-pair printed no JSON line ({e}); stdout: {stdout}; stderr: {stderr}")
    });
    assert_eq!(
        output.status.code(),
        Some(0),
        "matchbox-pair against {url}: {report}; stderr: {stderr}"
    );
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(
        report["received"],
        json!(["hello from a", "hello from b"]),
        "{report}"
    );
    let peers: Vec<&str> = report["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .map(|p| p.as_str().expect("a peer id"))
        .collect();
    assert_eq!(peers.len(), 2, "{report}");
    assert_ne!(peers[0], peers[1], "{report}");

    let list = api_until(&app, "/api/sessions?protocol=matchbox", |l| {
        l["sessions"].as_array().is_some_and(|all| {
            peers
                .iter()
                .all(|p| all.iter().any(|s| s["peerId"].as_str() == Some(p)))
        })
    })
    .await;
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{list}");
    for s in sessions {
        assert_eq!(s["protocol"], "matchbox", "{s}");
        assert_eq!(s["room"], room.as_str(), "{s}");
    }
}
