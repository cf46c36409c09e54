//! `/peerjs`: peerjs-server 1.0's endpoints, as the PeerJS client uses
//! them, over Chatsubo's rooms, resume and limits.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

const QUIET: Duration = Duration::from_millis(300);

/// A PeerJS socket for `id` with `token` (key `peerjs`), not yet read.
async fn socket(app: &TestApp, id: &str, token: &str) -> Client {
    let url = format!(
        "ws://{}/peerjs/peerjs?key=peerjs&id={id}&token={token}&version=1.5.5",
        app.addr
    );
    Client::connect_raw(&url).await
}

/// A PeerJS client that claimed `id` with `token`.
async fn open(app: &TestApp, id: &str, token: &str) -> Client {
    let mut c = socket(app, id, token).await;
    assert_eq!(c.recv().await, json!({"type": "OPEN"}));
    c
}

fn offer(to: &str, n: u32) -> Value {
    json!({"type":"OFFER","payload":{"sdp":{"type":"offer","sdp":"v=0"},"type":"data","connectionId":format!("dc_{n}")},"dst":to,"src":"forged"})
}

/// A server whose PeerJS messages for absent ids wait `expire_ms`.
async fn app_expiring(expire_ms: u64) -> TestApp {
    spawn_app_with(|c| c.adapters.peerjs_expire_ms = expire_ms).await
}

#[tokio::test]
async fn the_http_side_answers_as_peerjs_server_does_with_cors() {
    let app = spawn_app().await;
    let client = reqwest::Client::new();
    let info: Value = client
        .get(app.url("/peerjs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["name"], "PeerJS Server");
    let res = client
        .get(app.url("/peerjs/peerjs/id?ts=1700000000000.5&version=1.5.5"))
        .header("Origin", "http://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "http://app.example"
    );
    assert_eq!(res.headers()["vary"], "Origin");
    let id = res.text().await.unwrap();
    assert!(
        uuid::Uuid::parse_str(&id).is_ok() && id.len() == 36,
        "{id:?}"
    );
    let preflight = client
        .request(reqwest::Method::OPTIONS, app.url("/peerjs/peerjs/id"))
        .header("Origin", "http://app.example")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "x-foo")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status().as_u16(), 204);
    assert_eq!(preflight.headers()["access-control-allow-headers"], "x-foo");
    let peers = client
        .get(app.url("/peerjs/peerjs/peers"))
        .send()
        .await
        .unwrap();
    assert_eq!(peers.status().as_u16(), 401);
    // With --allowed-origin, only its origins get CORS.
    let strict =
        spawn_app_with(|c| c.edge.allowed_origins = vec!["https://app.example".into()]).await;
    let other = client
        .get(strict.url("/peerjs/peerjs/id"))
        .header("Origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn claimed_ids_relay_with_src_and_dst_and_heartbeats_say_nothing() {
    let app = spawn_app().await;
    let mut alice = open(&app, "alice", "t1").await;
    let mut bob = open(&app, "bob", "t2").await;
    alice.send(offer("bob", 1)).await;
    let got = bob.recv().await;
    assert_eq!(got["type"], "OFFER");
    assert_eq!(got["src"], "alice", "the server's src, not the client's");
    assert_eq!(got["dst"], "bob");
    assert_eq!(got["payload"]["connectionId"], "dc_1");
    bob.send(json!({"type":"ANSWER","payload":{"sdp":{"type":"answer","sdp":"v=0"},"type":"data","connectionId":"dc_1"},"dst":"alice"}))
        .await;
    assert_eq!(alice.recv().await["type"], "ANSWER");
    bob.send(json!({"type":"CANDIDATE","payload":{"candidate":{"candidate":"c"},"type":"data","connectionId":"dc_1"},"dst":"alice"}))
        .await;
    assert_eq!(alice.recv().await["type"], "CANDIDATE");
    alice.send(json!({"type":"HEARTBEAT"})).await;
    alice.expect_silence(QUIET).await;
    // Leaving is not announced, as in PeerJS.
    alice.close().await;
    bob.expect_silence(QUIET).await;
}

#[tokio::test]
async fn another_token_gets_id_taken_and_the_same_token_takes_the_id_over() {
    let app = spawn_app().await;
    let mut alice = open(&app, "alice", "t1").await;
    let mut thief = socket(&app, "alice", "other").await;
    assert_eq!(
        thief.recv().await,
        json!({"type":"ID-TAKEN","payload":{"msg":"ID is taken"}})
    );
    assert_eq!(thief.recv_close().await.0, 1008);
    // The same token on a new socket takes over; the old one is closed.
    let mut again = open(&app, "alice", "t1").await;
    match alice.next_event(PATIENCE).await {
        Some(Event::Closed(code)) => assert_eq!(code, Some(4000)),
        other => panic!("the old socket should be closed, got {other:?}"),
    }
    let mut bob = open(&app, "bob", "t2").await;
    bob.send(offer("alice", 2)).await;
    assert_eq!(again.recv().await["src"], "bob");
    assert_eq!(
        app.metric(r#"chatsubo_errors_total{code="ID_TAKEN",protocol="peerjs"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_bad_claim_gets_error_and_a_close() {
    let app = spawn_app().await;
    for (query, msg) in [
        ("key=nope&id=a&token=t", "Invalid key provided"),
        (
            "key=peerjs&token=t",
            "No id, token, or key supplied to websocket server",
        ),
        (
            "key=peerjs&id=a&token=",
            "No id, token, or key supplied to websocket server",
        ),
        ("key=peerjs&id=a%2Fb&token=t", "Invalid id provided"),
    ] {
        let mut c = Client::connect_raw(&format!("ws://{}/peerjs/peerjs?{query}", app.addr)).await;
        assert_eq!(
            c.recv().await,
            json!({"type":"ERROR","payload":{"msg":msg}}),
            "{query}"
        );
        assert_eq!(c.recv_close().await.0, 1008, "{query}");
    }
}

#[tokio::test]
async fn a_message_to_an_absent_id_waits_then_expires_or_is_delivered_when_it_comes() {
    let app = app_expiring(200).await;
    let mut alice = open(&app, "alice", "t1").await;
    alice.send(offer("carol", 1)).await;
    alice.send(offer("carol", 2)).await;
    // One EXPIRE per sender, from the missing peer, after the wait.
    assert_eq!(
        alice.recv().await,
        json!({"type":"EXPIRE","src":"carol","dst":"alice"})
    );
    alice.expect_silence(QUIET).await;
    // Queued for dave, who comes in time: OPEN first, then what waited.
    alice.send(offer("dave", 3)).await;
    let mut dave = socket(&app, "dave", "t4").await;
    assert_eq!(dave.recv().await, json!({"type":"OPEN"}));
    assert_eq!(dave.recv().await["payload"]["connectionId"], "dc_3");
    alice.expect_silence(QUIET).await;
    assert_eq!(
        app.metric(r#"chatsubo_dropped_messages_total{reason="pending_expired"}"#)
            .await,
        2.0
    );
}

#[tokio::test]
async fn a_dropped_peer_resumes_with_its_token_inside_the_grace() {
    let app = spawn_app().await;
    let alice = open(&app, "alice", "t1").await;
    let mut bob = open(&app, "bob", "t2").await;
    alice.vanish();
    app.wait_connections(1).await;
    // Held for alice while she is away, as for any peer inside its grace.
    bob.send(offer("alice", 5)).await;
    let mut back = socket(&app, "alice", "t1").await;
    assert_eq!(back.recv().await, json!({"type":"OPEN"}));
    assert_eq!(back.recv().await["payload"]["connectionId"], "dc_5");
    assert_eq!(
        app.metric(r#"chatsubo_reconnections_total{outcome="resumed"}"#)
            .await,
        1.0
    );
    let list = api_until(&app, "/api/sessions?protocol=peerjs&peer=alice", |l| {
        l["sessions"].as_array().unwrap().len() == 2
    })
    .await;
    let sessions = list["sessions"].as_array().unwrap();
    assert!(
        sessions
            .iter()
            .all(|s| s["peerId"] == "alice" && s["protocol"] == "peerjs")
    );
    assert_eq!(
        sessions[0]["resumedFrom"], sessions[1]["sessionId"],
        "{list}"
    );
}

#[tokio::test]
async fn bad_messages_get_error_and_a_namespace_has_no_room_size_cap() {
    let app = spawn_app_with(|c| c.max_room_size = 2).await;
    let mut a = open(&app, "a", "t").await;
    let _b = open(&app, "b", "t").await;
    let _c = open(&app, "c", "t").await;
    a.send_text("not json").await;
    let err = a.recv().await;
    assert_eq!(err["type"], "ERROR");
    assert!(
        err["payload"]["msg"]
            .as_str()
            .unwrap()
            .contains("not a PeerJS message")
    );
    a.send(json!({"type":"OFFER","dst":"b"})).await;
    assert_eq!(a.recv().await["payload"]["msg"], "missing field payload");
    assert_eq!(
        app.metric(r#"chatsubo_errors_total{code="INVALID_MESSAGE",protocol="peerjs"}"#)
            .await,
        2.0
    );
    assert_eq!(
        app.metric(r#"chatsubo_active_connections{protocol="peerjs"}"#)
            .await,
        3.0
    );
    let (_, rooms) = api(&app, "/api/rooms?active=true").await;
    assert!(rooms.to_string().contains(r#""room":"peerjs""#), "{rooms}");
}
