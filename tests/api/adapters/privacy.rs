//! What the foreign protocols bring that must stay private: PeerJS tokens
//! (the secret that owns an id) and relayed payloads (SDP, ICE candidates
//! with addresses), including a PeerJS message that waited for an absent id
//! and expired. The real binary logs at debug level; none of it may reach
//! its log files, stdout, store or `/api` answers.

use serde_json::{Value, json};

use crate::helpers::*;

const TOKEN_A: &str = "SENTINEL-PJ-TOKEN-a71c";
const TOKEN_B: &str = "SENTINEL-PJ-TOKEN-b39e";
const WRONG_TOKEN: &str = "SENTINEL-PJ-TOKEN-wrong-5d02";
const PAYLOAD: &str = "SENTINEL-PAYLOAD-e64f";

async fn peerjs(app: &BinApp, id: &str, token: &str) -> Client {
    Client::connect_raw(&format!(
        "ws://{}/peerjs/peerjs?key=peerjs&id={id}&token={token}",
        app.addr
    ))
    .await
}

async fn matchbox(app: &BinApp) -> (Client, String) {
    let mut c = Client::connect_raw(&format!("ws://{}/matchbox/private?next=2", app.addr)).await;
    let id = c.recv().await["IdAssigned"].as_str().unwrap().to_string();
    (c, id)
}

fn candidate(to: &str) -> Value {
    json!({"type":"CANDIDATE","dst":to,"payload":{"candidate":{"candidate":PAYLOAD},"type":"data","connectionId":"dc_1"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peerjs_tokens_and_relayed_payloads_reach_no_log_store_or_api() {
    let app = BinApp::start(&["--log-level", "debug", "--peerjs-expire-ms", "100"], &[]);

    // PeerJS: a relay, a message that expires, a refused claim.
    let mut a = peerjs(&app, "pj-a", TOKEN_A).await;
    assert_eq!(a.recv().await, json!({"type":"OPEN"}));
    let mut b = peerjs(&app, "pj-b", TOKEN_B).await;
    assert_eq!(b.recv().await, json!({"type":"OPEN"}));
    a.send(candidate("pj-b")).await;
    let got = b.recv().await;
    assert_eq!(got["payload"]["candidate"]["candidate"], PAYLOAD, "{got}");
    a.send(candidate("pj-nobody")).await;
    assert_eq!(a.recv().await["type"], "EXPIRE");
    let mut thief = peerjs(&app, "pj-a", WRONG_TOKEN).await;
    assert_eq!(thief.recv().await["type"], "ID-TAKEN");

    // matchbox: a relayed signal.
    let (mut m1, id1) = matchbox(&app).await;
    let (mut m2, id2) = matchbox(&app).await;
    assert_eq!(m1.recv().await, json!({"NewPeer": id2}));
    m2.send(json!({"Signal":{"receiver":id1,"data":{"IceCandidate":PAYLOAD}}}))
        .await;
    assert_eq!(m1.recv().await["Signal"]["data"]["IceCandidate"], PAYLOAD);

    for c in [a, b, m1, m2, thief] {
        c.close().await;
    }
    let base = format!("http://{}", app.addr);
    // Every session of the run has ended in the store before it is read.
    let deadline = std::time::Instant::now() + PATIENCE;
    let sessions = loop {
        let text = reqwest::get(format!("{base}/api/sessions?limit=100"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        let sessions = value["sessions"].as_array().unwrap().clone();
        let all_ended = sessions.iter().all(|s| s["endedAt"].is_string());
        if (sessions.len() >= 4 && all_ended) || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(sessions.contains("\"protocol\":\"peerjs\""), "{sessions}");
    assert!(sessions.contains("\"protocol\":\"matchbox\""), "{sessions}");
    let mut api = sessions;
    api.push_str(
        &bodies_of(
            &base,
            &["/api/rooms", "/api/stats", "/api/churn", "/metrics"],
        )
        .await,
    );
    let (status, dir, stdout) = tokio::task::spawn_blocking(move || app.terminate())
        .await
        .unwrap();
    assert!(status.success());
    let stdout = stdout.join("\n");
    assert!(
        stdout.contains("pj-a"),
        "the debug log names the PeerJS ids"
    );
    assert!(
        stdout.contains("peer_joined"),
        "the join lines were written"
    );
    let files = files_under(dir.path());
    assert!(
        files
            .iter()
            .any(|(p, _)| p.starts_with(dir.path().join("logs")))
    );
    assert!(
        files
            .iter()
            .any(|(p, _)| p.starts_with(dir.path().join("data")))
    );
    for secret in [TOKEN_A, TOKEN_B, WRONG_TOKEN, PAYLOAD] {
        assert!(!api.contains(secret), "{secret} in an API answer");
        assert!(!stdout.contains(secret), "{secret} on stdout");
        for (path, bytes) in &files {
            assert!(
                !contains(bytes, secret.as_bytes()),
                "{secret} in {}",
                path.display()
            );
        }
    }
}
