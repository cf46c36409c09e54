//! `/matchbox/<room>[?next=N]`: matchbox_server 0.15's protocol, as
//! `matchbox_socket` expects it, over Chatsubo's rooms and limits.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

/// A matchbox client: connected, with the UUID its `IdAssigned` gave.
async fn peer(app: &TestApp, path: &str) -> (Client, String) {
    let mut c = Client::connect_raw(&format!("ws://{}/matchbox/{path}", app.addr)).await;
    let first = c.recv().await;
    let id = first["IdAssigned"]
        .as_str()
        .expect("IdAssigned first")
        .to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{first}");
    (c, id)
}

fn signal(to: &str, data: Value) -> Value {
    json!({"Signal": {"receiver": to, "data": data}})
}

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn next_2_pairs_peers_in_the_order_they_come_and_relays_their_signals() {
    let app = spawn_app().await;
    let (mut a, a_id) = peer(&app, "g?next=2").await;
    let (mut b, b_id) = peer(&app, "g?next=2").await;
    // The peer already there hears of the newcomer, and offers; the
    // newcomer hears of nobody.
    assert_eq!(a.recv().await, json!({"NewPeer": b_id}));
    b.expect_silence(QUIET).await;
    a.send(signal(
        &b_id,
        json!({"Offer": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"}),
    ))
    .await;
    assert_eq!(
        b.recv().await,
        json!({"Signal": {"sender": a_id, "data": {"Offer": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"}}})
    );
    b.send(signal(&a_id, json!({"Answer": "v=0"}))).await;
    b.send(signal(
        &a_id,
        json!({"IceCandidate": "{\"candidate\":\"c\"}"}),
    ))
    .await;
    assert_eq!(a.recv().await["Signal"]["data"], json!({"Answer": "v=0"}));
    assert_eq!(
        a.recv().await["Signal"]["data"],
        json!({"IceCandidate": "{\"candidate\":\"c\"}"})
    );
    a.send_text(r#""KeepAlive""#).await;
    a.expect_silence(QUIET).await;
    // The pair is complete: the next two are a group of their own.
    let (mut c, _) = peer(&app, "g?next=2").await;
    let (_d, d_id) = peer(&app, "g?next=2").await;
    assert_eq!(c.recv().await, json!({"NewPeer": d_id}));
    a.expect_silence(QUIET).await;
    // A signal to the other group does not cross.
    a.send(signal(&d_id, json!({"Offer": "x"}))).await;
    c.expect_silence(QUIET).await;
    a.send_text(r#""KeepAlive""#).await;
    a.expect_silence(QUIET).await;
    assert_eq!(
        app.metric(r#"chatsubo_errors_total{code="UNKNOWN_PEER",protocol="matchbox"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_room_without_next_announces_newcomers_and_leavers_at_once() {
    let app = spawn_app().await;
    let (mut a, _) = peer(&app, "r").await;
    let (mut b, b_id) = peer(&app, "r").await;
    let (mut c, c_id) = peer(&app, "r").await;
    assert_eq!(a.recv().await, json!({"NewPeer": b_id}));
    assert_eq!(a.recv().await, json!({"NewPeer": c_id}));
    assert_eq!(b.recv().await, json!({"NewPeer": c_id}));
    c.expect_silence(QUIET).await;
    // No resume in matchbox: a peer that goes is gone at once.
    b.vanish();
    assert_eq!(a.recv().await, json!({"PeerLeft": b_id}));
    assert_eq!(c.recv().await, json!({"PeerLeft": b_id}));
    // Rooms of other protocols with the same name are other rooms.
    let native = app.joined("r", "ann").await;
    assert_eq!(native.welcome["type"], "welcome");
    a.expect_silence(QUIET).await;
}

#[tokio::test]
async fn bad_input_closes_with_1008_and_a_reason_and_is_counted() {
    let app = spawn_app_with(|c| c.max_room_size = 2).await;
    let (mut a, _) = peer(&app, "bad").await;
    a.send_text("not json").await;
    let (code, reason) = a.recv_close().await;
    assert_eq!(code, 1008);
    assert!(reason.starts_with("INVALID_MESSAGE"), "{reason}");
    let (mut b, b_id) = peer(&app, "bad").await;
    b.send(signal(&b_id, json!({"Hello": "x"}))).await;
    assert!(b.recv_close().await.1.contains("PeerSignal"));
    let (mut c, _) = peer(&app, "bad").await;
    c.send_frame(
        tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
            vec![1, 2, 3],
            tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
                tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Binary,
            ),
            true,
        ),
    )
    .await;
    assert_eq!(c.recv_close().await.0, 1008);
    for path in ["bad%20room", "x?next=3"] {
        let mut refused = Client::connect_raw(&format!("ws://{}/matchbox/{path}", app.addr)).await;
        let first = refused.recv().await;
        assert!(first["IdAssigned"].is_string(), "{first}");
        let (code, reason) = refused.recv_close().await;
        assert_eq!(code, 1008, "{path}: {reason}");
    }
    // A full room (two seats here).
    let (_x, _) = peer(&app, "full").await;
    let (_y, _) = peer(&app, "full").await;
    let (mut z, _) = peer(&app, "full").await;
    assert!(z.recv_close().await.1.starts_with("ROOM_FULL"));
    assert_eq!(
        app.metric(r#"chatsubo_errors_total{code="INVALID_MESSAGE",protocol="matchbox"}"#)
            .await,
        5.0
    );
    assert_eq!(
        app.metric(r#"chatsubo_errors_total{code="ROOM_FULL",protocol="matchbox"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_message_over_the_limit_is_closed_with_1009() {
    let app = spawn_app_with(|c| c.max_message_bytes = 1024).await;
    let (mut a, a_id) = peer(&app, "big").await;
    a.send(signal(&a_id, json!({"Offer": "x".repeat(2000)})))
        .await;
    assert_eq!(a.recv_close().await.0, 1009);
}

#[tokio::test]
async fn sessions_metrics_and_rooms_count_matchbox_peers() {
    let app = spawn_app().await;
    let (mut a, a_id) = peer(&app, "hist?next=2").await;
    let (b, b_id) = peer(&app, "hist?next=2").await;
    a.recv().await;
    assert_eq!(
        app.metric(r#"chatsubo_active_connections{protocol="matchbox"}"#)
            .await,
        2.0
    );
    assert_eq!(
        app.metric(r#"chatsubo_joins_total{protocol="matchbox"}"#)
            .await,
        2.0
    );
    let (_, rooms) = api(&app, "/api/rooms?active=true").await;
    let hist = rooms["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room"] == "hist")
        .cloned()
        .unwrap_or_default();
    assert_eq!(hist["activePeers"], 2, "{rooms}");
    drop((a, b));
    let list = api_until(&app, "/api/sessions?protocol=matchbox", |l| {
        let s = l["sessions"].as_array().unwrap();
        s.len() == 2 && s.iter().all(|s| !s["endedAt"].is_null())
    })
    .await;
    let mut ids: Vec<&str> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["protocol"], "matchbox");
            assert_eq!(s["room"], "hist");
            s["peerId"].as_str().unwrap()
        })
        .collect();
    ids.sort_unstable();
    let mut expected = [a_id.as_str(), b_id.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    let (_, native) = api(&app, "/api/sessions?protocol=chatsubo").await;
    assert_eq!(native["sessions"], json!([]));
    let (status, _) = api(&app, "/api/sessions?protocol=nope").await;
    assert_eq!(status, 400);
}
