//! The signaling contract, one test per rule.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::helpers::*;

/// A client trace context, as a browser would send it.
const CLIENT_TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The fields of a text frame, each as the raw JSON text it was sent as.
fn raw_fields(text: &str) -> HashMap<String, Box<RawValue>> {
    serde_json::from_str(text).expect("a JSON object")
}

/// Splits a W3C traceparent into (trace id, span id, flags), checking its form.
fn traceparent_parts(tp: &Value) -> (String, String, String) {
    let tp = tp.as_str().expect("traceparent is a string");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {tp}");
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    assert_eq!(parts[0], "00", "version of {tp}");
    assert!(
        hex(parts[1], 32) && parts[1] != "0".repeat(32),
        "trace id of {tp}"
    );
    assert!(
        hex(parts[2], 16) && parts[2] != "0".repeat(16),
        "span id of {tp}"
    );
    assert!(hex(parts[3], 2), "flags of {tp}");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

/// Two peers in `room`; `a` has seen `b` arrive.
async fn pair(app: &TestApp, room: &str) -> (Client, Client) {
    let mut a = app.joined(room, "ann").await;
    let b = app.joined(room, "bob").await;
    let pj = a.recv_type("peer-joined").await;
    assert_eq!(pj["peerId"], b.peer_id());
    (a, b)
}

#[tokio::test]
async fn welcome_comes_first() {
    let app = spawn_app().await;
    let c = app.client().await;
    let w = &c.welcome;
    assert!(w["peerId"].as_str().unwrap().starts_with("p_"));
    assert_eq!(w["sessionId"].as_str().unwrap().len(), 26);
    assert!(w["resumeToken"].as_str().unwrap().len() >= 22);
    assert_eq!(w["heartbeatIntervalMs"], 15000);
    assert_eq!(w["maxRoomSize"], 10);
    app.stop().await;
}

#[tokio::test]
async fn offer_is_relayed_with_from_and_untouched_data() {
    let app = spawn_app().await;
    let mut a = app.joined("lobby", "ann").await;
    let mut b = app.client().await;
    let joined = b.join("lobby", "bob").await;
    assert_eq!(
        joined["peers"],
        json!([{"peerId": a.peer_id(), "displayName": "ann"}])
    );
    let pj = a.recv_type("peer-joined").await;
    assert_eq!(pj["peerId"], b.peer_id());
    let data = r#"{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\n","x":[1,2.50,"é"]}"#;
    a.send_text(&format!(
        r#"{{"type":"offer","to":"{}","data":{data}}}"#,
        b.peer_id()
    ))
    .await;
    let got = b.recv_type("offer").await;
    assert_eq!(got["from"], a.peer_id());
    assert!(got.get("to").is_none());
    assert_eq!(
        got["data"],
        serde_json::from_str::<serde_json::Value>(data).unwrap()
    );
    app.stop().await;
}

#[tokio::test]
async fn welcome_is_first_also_with_a_room_query_and_carries_the_configuration() {
    let app = spawn_app_with(|c| {
        c.heartbeat_interval_ms = 20_000;
        c.max_room_size = 4;
    })
    .await;
    // Client::connect asserts that the first frame is the welcome.
    let c = app.client_with("?room=lobby").await;
    let w = &c.welcome;
    for field in ["peerId", "sessionId", "resumeToken"] {
        assert!(!w[field].as_str().unwrap().is_empty(), "{field} in {w}");
    }
    assert_eq!(w["heartbeatIntervalMs"], 20_000);
    assert_eq!(w["maxRoomSize"], 4);
    app.stop().await;
}

#[tokio::test]
async fn join_lists_the_peers_and_announces_the_newcomer() {
    let app = spawn_app().await;
    let mut a = app.client().await;
    let joined = a.join("lobby", "ann").await;
    assert_eq!(joined["room"], "lobby");
    assert_eq!(joined["peerId"], a.peer_id());
    assert_eq!(joined["peers"], json!([]));
    assert_eq!(joined["resumed"], false);

    let mut b = app.client().await;
    let joined = b.join("lobby", "bob").await;
    assert_eq!(joined["peerId"], b.peer_id());
    assert_eq!(
        joined["peers"],
        json!([{"peerId": a.peer_id(), "displayName": "ann"}])
    );
    let pj = a.recv_type("peer-joined").await;
    assert_eq!(
        pj,
        json!({"type":"peer-joined","peerId": b.peer_id(),"displayName":"bob"})
    );

    // Display names are counted in characters, up to 64.
    let long = "é".repeat(64);
    let mut d = app.client().await;
    d.join("elsewhere", &long).await;
    let mut e = app.client().await;
    let joined = e.join("elsewhere", "eve").await;
    assert_eq!(joined["peers"][0]["displayName"], long.as_str());
    assert_eq!(d.recv_type("peer-joined").await["displayName"], "eve");

    // A join without a display name.
    let mut c = app.client().await;
    c.send(json!({"type":"join","room":"lobby"})).await;
    let joined = c.recv_type("joined").await;
    let peers = joined["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2);
    assert!(peers.contains(&json!({"peerId": a.peer_id(), "displayName": "ann"})));
    assert!(peers.contains(&json!({"peerId": b.peer_id(), "displayName": "bob"})));
    for x in [&mut a, &mut b] {
        let pj = x.recv_type("peer-joined").await;
        assert_eq!(pj["peerId"], c.peer_id());
        assert!(pj["displayName"].is_null(), "{pj}");
    }
    app.stop().await;
}

#[tokio::test]
async fn offer_answer_and_ice_candidate_are_relayed_with_data_byte_for_byte() {
    let app = spawn_app().await;
    let (mut a, mut b) = pair(&app, "lobby").await;
    // Odd spacing, escapes and number forms that a re-serialisation would change.
    let datas = [
        r#"{ "type" :"offer","sdp":"v=0\r\no=- 46117 2 IN IP4 127.0.0.1\r\n" , "n": 1.50e2 }"#,
        r#"{"type":"answer",  "sdp":"caf\u00e9 \ud83d\ude00 é","x":[ 1 ,2.0, -0 ,{}],"y":null}"#,
        r#"{"candidate":"candidate:1 1 udp 2122260223 192.0.2.7 54400 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"\/a\"b"}"#,
    ];
    for (kind, data) in ["offer", "answer", "ice-candidate"].into_iter().zip(datas) {
        a.send_text(&format!(
            r#"{{"type":"{kind}", "to":"{}", "data": {data} }}"#,
            b.peer_id()
        ))
        .await;
        let text = b.recv_raw().await;
        let fields = raw_fields(&text);
        assert_eq!(fields["type"].get(), format!("\"{kind}\""));
        assert_eq!(fields["from"].get(), format!("\"{}\"", a.peer_id()));
        assert!(!fields.contains_key("to"), "{text}");
        assert_eq!(fields["data"].get(), data, "data must be untouched");
        let v: Value = serde_json::from_str(&text).unwrap();
        traceparent_parts(&v["traceparent"]);
    }
    // And the other way round.
    b.send(json!({"type":"answer","to":a.peer_id(),"data":{"sdp":"x"}}))
        .await;
    let got = a.recv_type("answer").await;
    assert_eq!(got["from"], b.peer_id());
    assert_eq!(got["data"], json!({"sdp":"x"}));
    app.stop().await;
}

#[tokio::test]
async fn relays_carry_a_traceparent_that_continues_the_clients_trace() {
    let app = spawn_app().await;
    let (mut a, mut b) = pair(&app, "lobby").await;

    // Without a client trace: a valid, fresh trace context.
    a.send(json!({"type":"offer","to":b.peer_id(),"data":{"sdp":"1"}}))
        .await;
    let first = b.recv_type("offer").await;
    let (fresh_trace, _, _) = traceparent_parts(&first["traceparent"]);

    // With one: the same trace, a new span.
    a.send(json!({"type":"offer","to":b.peer_id(),"data":{"sdp":"2"},"traceparent":CLIENT_TRACEPARENT}))
        .await;
    let got = b.recv_type("offer").await;
    let (trace, span, _) = traceparent_parts(&got["traceparent"]);
    assert_eq!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(span, "00f067aa0ba902b7");
    assert_ne!(fresh_trace, trace);

    // A malformed traceparent is ignored: a fresh trace, as W3C asks.
    a.send(json!({"type":"offer","to":b.peer_id(),"data":{"sdp":"x"},"traceparent":"00-nonsense"}))
        .await;
    let (other_trace, _, _) = traceparent_parts(&b.recv_type("offer").await["traceparent"]);
    assert_ne!(other_trace, trace);

    // A reply that copies the relay's traceparent stays in the same trace.
    b.send(json!({"type":"answer","to":a.peer_id(),"data":{"sdp":"3"},"traceparent":got["traceparent"]}))
        .await;
    let reply = a.recv_type("answer").await;
    let (reply_trace, reply_span, _) = traceparent_parts(&reply["traceparent"]);
    assert_eq!(reply_trace, trace);
    assert_ne!(reply_span, span);
    app.stop().await;
}

#[tokio::test]
async fn relays_arrive_in_the_order_they_were_sent() {
    let app = spawn_app().await;
    let (mut a, mut b) = pair(&app, "lobby").await;
    let kinds = ["offer", "answer", "ice-candidate"];
    for i in 0..150 {
        a.send(json!({"type":kinds[i % 3],"to":b.peer_id(),"data":{"seq":i}}))
            .await;
    }
    for i in 0..150 {
        let m = b.recv_type(kinds[i % 3]).await;
        assert_eq!(m["data"]["seq"], i);
    }
    app.stop().await;
}

#[tokio::test]
async fn relays_stay_inside_the_room() {
    let app = spawn_app().await;
    let (mut a, mut b) = pair(&app, "lobby").await;
    let mut c = app.joined("other", "cid").await;
    for kind in ["offer", "answer", "ice-candidate"] {
        a.send(json!({"type":kind,"to":b.peer_id(),"data":{"k":kind}}))
            .await;
        assert_eq!(b.recv_type(kind).await["data"]["k"], kind);
        // A `to` naming a peer of another room is an unknown peer.
        a.send(json!({"type":kind,"to":c.peer_id(),"data":{}}))
            .await;
        let err = a.recv_error("UNKNOWN_PEER").await;
        assert_eq!(err["ref"], kind);
        c.send(json!({"type":kind,"to":a.peer_id(),"data":{}}))
            .await;
        let err = c.recv_error("UNKNOWN_PEER").await;
        assert_eq!(err["ref"], kind);
    }
    // Every relay above was queued before these pings were answered.
    c.ping_next(1).await;
    b.ping_next(2).await;
    app.stop().await;
}

#[tokio::test]
async fn peer_left_is_sent_at_once_for_a_leave_and_for_a_client_close() {
    let app = spawn_app_with(|c| c.resume_grace_secs = Duration::from_secs(60)).await;
    let (mut a, mut b) = pair(&app, "lobby").await;
    b.send(json!({"type":"leave"})).await;
    let left = a.recv_type("peer-left").await;
    assert_eq!(
        left,
        json!({"type":"peer-left","peerId":b.peer_id(),"reason":"left"})
    );
    // b may join again, and then close its socket itself.
    b.join("lobby", "bob").await;
    a.recv_type("peer-joined").await;
    let b_id = b.peer_id();
    b.close().await;
    // The grace is a minute: `left` must not wait for it.
    let left = a.recv_type("peer-left").await;
    assert_eq!(
        left,
        json!({"type":"peer-left","peerId":b_id,"reason":"left"})
    );
    assert_eq!(
        app.metric(r#"chatsubo_leaves_total{reason="left"}"#).await,
        2.0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_dropped_connection_keeps_its_place_for_the_grace_then_leaves_as_disconnected() {
    let app = spawn_app_with(|c| c.resume_grace_secs = Duration::from_secs(2)).await;
    let (mut a, b) = pair(&app, "lobby").await;
    let b_id = b.peer_id();
    b.vanish();
    // Once the server has seen the drop, nothing is said during the grace.
    app.wait_connections(1).await;
    a.ping_next(1).await;
    a.expect_silence(Duration::from_millis(500)).await;
    assert_eq!(app.health().await["activeRooms"], 1);
    let left = a.recv_type("peer-left").await;
    assert_eq!(
        left,
        json!({"type":"peer-left","peerId":b_id,"reason":"disconnected"})
    );
    assert_eq!(
        app.metric(r#"chatsubo_leaves_total{reason="disconnected"}"#)
            .await,
        1.0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_times_out() {
    let app = spawn_app_with(|c| {
        c.heartbeat_interval_ms = 200;
        c.resume_grace_secs = Duration::from_millis(300);
    })
    .await;
    let (mut a, mut b) = pair(&app, "lobby").await;
    // `b` no longer polls its socket, so it answers no ping; `a` keeps reading.
    let left = a.recv_type("peer-left").await;
    assert_eq!(
        left,
        json!({"type":"peer-left","peerId":b.peer_id(),"reason":"timeout"})
    );
    // The server closed b's socket (with a close frame; the code is not part
    // of the contract).
    let (texts, code) = b.collect_until_close().await;
    assert!(texts.is_empty(), "{texts:?}");
    assert!(code.is_some());
    assert_eq!(
        app.metric(r#"chatsubo_leaves_total{reason="timeout"}"#)
            .await,
        1.0
    );
    a.ping_next(1).await;
    app.stop().await;
}

#[tokio::test]
async fn a_peer_that_timed_out_can_resume_inside_the_grace() {
    let app = spawn_app_with(|c| {
        c.heartbeat_interval_ms = 200;
        c.resume_grace_secs = Duration::from_secs(30);
    })
    .await;
    let (mut a, b) = pair(&app, "lobby").await;
    let (b_id, token) = (b.peer_id(), b.token());
    // `b` stops polling; `a` keeps reading (and answering pings) until the
    // server has dropped b's connection.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while app.metric("chatsubo_active_connections").await != 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "b was not dropped");
        a.expect_silence(Duration::from_millis(20)).await;
    }
    a.ping_next(1).await;
    let mut b2 = app.client().await;
    b2.send(json!({"type":"join","room":"lobby","resumeToken":token}))
        .await;
    let joined = b2.recv_type("joined").await;
    assert_eq!(joined["resumed"], true);
    assert_eq!(joined["peerId"], b_id);
    a.ping_next(2).await;
    drop(b);
    app.stop().await;
}

#[tokio::test]
async fn the_server_sends_websocket_pings_every_interval() {
    let app = spawn_app_with(|c| c.heartbeat_interval_ms = 100).await;
    let mut c = app.client().await;
    let mut pings = 0;
    while pings < 3 {
        let frame = tokio::time::timeout(PATIENCE, c.ws.next())
            .await
            .expect("a ping within PATIENCE");
        match frame {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("expected a ping, got {other:?}"),
        }
    }
    c.ping_next(1).await;
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_while_relays_are_pending_times_out() {
    // Few but large relays: the socket buffers fill long before the
    // outbound queue does, so the server's writes to `b` block (no ping goes
    // out) and `b` is never kicked; it must still be dropped for answering
    // nothing for two intervals.
    let app = spawn_app_with(|c| {
        c.heartbeat_interval_ms = 2000;
        c.resume_grace_secs = Duration::from_millis(300);
        c.max_message_bytes = 1024 * 1024;
    })
    .await;
    let (mut a, b) = pair(&app, "lobby").await;
    let b_id = b.peer_id();
    let sdp = "a".repeat(1000 * 1024);
    for i in 0..40 {
        a.send(json!({"type":"offer","to":b_id,"data":{"seq":i,"sdp":sdp}}))
            .await;
    }
    // Two intervals and the grace from b's last frame, plus patience.
    match a.next_event(PATIENCE + Duration::from_secs(5)).await {
        Some(Event::Text(left)) => assert_eq!(
            left,
            json!({"type":"peer-left","peerId":b_id,"reason":"timeout"})
        ),
        other => panic!("expected peer-left, got {other:?}"),
    }
    app.wait_connections(1).await;
    drop(b);
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_keeps_reading_is_not_dropped() {
    let app = spawn_app_with(|c| {
        c.heartbeat_interval_ms = 200;
        c.resume_grace_secs = Duration::from_millis(100);
    })
    .await;
    let (mut a, mut b) = pair(&app, "lobby").await;
    // Twelve heartbeat intervals; reading answers the server's pings.
    let quiet = Duration::from_millis(1200);
    tokio::join!(a.expect_silence(quiet), b.expect_silence(quiet));
    a.ping_next(1).await;
    b.ping_next(2).await;
    assert_eq!(app.health().await["activeConnections"], 2);
    app.stop().await;
}

#[tokio::test]
async fn resume_inside_the_grace_is_invisible_to_the_others_and_delivers_held_relays() {
    let app = spawn_app_with(|c| c.resume_grace_secs = Duration::from_secs(30)).await;
    let (mut a, b) = pair(&app, "lobby").await;
    let (b_id, token) = (b.peer_id(), b.token());
    b.vanish();
    app.wait_connections(1).await;
    // Relays to a peer inside its grace are held, in order.
    for i in 0..3 {
        a.send(json!({"type":"ice-candidate","to":b_id,"data":{"seq":i}}))
            .await;
    }
    a.send(json!({"type":"offer","to":b_id,"data":{"seq":3}}))
        .await;
    a.ping_next(1).await;

    let mut b2 = app.client().await;
    assert_ne!(b2.peer_id(), b_id);
    b2.send(json!({"type":"join","room":"lobby","resumeToken":token}))
        .await;
    let joined = b2.recv_type("joined").await;
    assert_eq!(joined["resumed"], true);
    assert_eq!(joined["peerId"], b_id);
    assert_eq!(joined["room"], "lobby");
    assert_eq!(
        joined["peers"],
        json!([{"peerId": a.peer_id(), "displayName": "ann"}])
    );
    for i in 0..4 {
        let m = b2.recv().await;
        assert_eq!(m["type"], if i < 3 { "ice-candidate" } else { "offer" });
        assert_eq!(m["from"], a.peer_id());
        assert_eq!(m["data"]["seq"], i);
    }
    // The others saw neither peer-left nor peer-joined.
    a.ping_next(2).await;
    // The resumed peer acts as its old id, both ways.
    b2.send(json!({"type":"answer","to":a.peer_id(),"data":{"ok":1}}))
        .await;
    assert_eq!(a.recv_type("answer").await["from"], b_id);
    a.send(json!({"type":"ice-candidate","to":b_id,"data":{"ok":2}}))
        .await;
    assert_eq!(b2.recv_type("ice-candidate").await["data"]["ok"], 2);
    // The new welcome carries a fresh token for the next resume.
    assert_ne!(b2.token(), token);
    assert_eq!(
        app.metric(r#"chatsubo_reconnections_total{outcome="resumed"}"#)
            .await,
        1.0
    );
    assert_eq!(
        app.metric("chatsubo_reconnection_attempts_total").await,
        1.0
    );
    app.stop().await;
}

#[tokio::test]
async fn at_most_64_relays_are_held_for_an_away_peer_and_the_newest_are_kept() {
    let app = spawn_app_with(|c| c.resume_grace_secs = Duration::from_secs(30)).await;
    let (mut a, b) = pair(&app, "lobby").await;
    let (b_id, token) = (b.peer_id(), b.token());
    b.vanish();
    app.wait_connections(1).await;
    for i in 0..70 {
        a.send(json!({"type":"ice-candidate","to":b_id,"data":{"seq":i}}))
            .await;
    }
    a.ping_next(1).await;
    let mut b2 = app.client().await;
    b2.send(json!({"type":"join","room":"lobby","resumeToken":token}))
        .await;
    assert_eq!(b2.recv_type("joined").await["resumed"], true);
    for i in 6..70 {
        let m = b2.recv_type("ice-candidate").await;
        assert_eq!(m["data"]["seq"], i);
    }
    b2.ping_next(2).await;
    assert_eq!(
        app.metric(r#"chatsubo_dropped_messages_total{reason="held_overflow"}"#)
            .await,
        6.0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_spent_token_gives_a_fresh_join_and_counts_as_a_failed_resume() {
    let app = spawn_app_with(|c| c.resume_grace_secs = Duration::from_secs(30)).await;
    let (mut a, b) = pair(&app, "lobby").await;
    let (b_id, token) = (b.peer_id(), b.token());
    b.vanish();
    app.wait_connections(1).await;
    let mut b2 = app.client().await;
    b2.send(json!({"type":"join","room":"lobby","resumeToken":token}))
        .await;
    assert_eq!(b2.recv_type("joined").await["resumed"], true);

    // The same token again: a fresh join under the new connection's own id.
    let mut b3 = app.client().await;
    b3.send(json!({"type":"join","room":"lobby","displayName":"bob3","resumeToken":token}))
        .await;
    let joined = b3.recv_type("joined").await;
    assert_eq!(joined["resumed"], false);
    assert_eq!(joined["peerId"], b3.peer_id());
    assert_ne!(b3.peer_id(), b_id);
    for x in [&mut a, &mut b2] {
        let pj = x.recv_type("peer-joined").await;
        assert_eq!(pj["peerId"], b3.peer_id());
    }
    assert_eq!(
        app.metric("chatsubo_reconnection_attempts_total").await,
        2.0
    );
    assert_eq!(
        app.metric(r#"chatsubo_reconnections_total{outcome="resumed"}"#)
            .await,
        1.0
    );
    let failed = app
        .metric(r#"chatsubo_reconnections_total{outcome="expired"}"#)
        .await
        + app
            .metric(r#"chatsubo_reconnections_total{outcome="invalid"}"#)
            .await;
    assert_eq!(failed, 1.0);
    b2.ping_next(1).await;
    app.stop().await;
}

#[tokio::test]
async fn a_token_after_the_grace_gives_a_fresh_join_and_counts_as_a_failed_resume() {
    let app = spawn_app_with(|c| c.resume_grace_secs = Duration::from_secs(1)).await;
    let (mut a, b) = pair(&app, "lobby").await;
    let (b_id, token) = (b.peer_id(), b.token());
    b.vanish();
    app.wait_connections(1).await;
    // Relays held for it are dropped when the grace ends.
    for i in 0..2 {
        a.send(json!({"type":"offer","to":b_id,"data":{"seq":i}}))
            .await;
    }
    let left = a.recv_type("peer-left").await;
    assert_eq!(left["peerId"], b_id);
    assert_eq!(left["reason"], "disconnected");
    assert_eq!(
        app.metric(r#"chatsubo_dropped_messages_total{reason="grace_expired"}"#)
            .await,
        2.0
    );

    let mut b2 = app.client().await;
    b2.send(json!({"type":"join","room":"lobby","resumeToken":token}))
        .await;
    let joined = b2.recv_type("joined").await;
    assert_eq!(joined["resumed"], false);
    assert_eq!(joined["peerId"], b2.peer_id());
    assert_ne!(b2.peer_id(), b_id);
    assert_eq!(
        joined["peers"],
        json!([{"peerId": a.peer_id(), "displayName": "ann"}])
    );
    assert_eq!(a.recv_type("peer-joined").await["peerId"], b2.peer_id());
    // Nothing held is delivered to the fresh peer.
    b2.ping_next(1).await;
    assert_eq!(
        app.metric("chatsubo_reconnection_attempts_total").await,
        1.0
    );
    assert_eq!(
        app.metric(r#"chatsubo_reconnections_total{outcome="expired"}"#)
            .await,
        1.0
    );
    assert_eq!(
        app.metric(r#"chatsubo_reconnections_total{outcome="resumed"}"#)
            .await,
        0.0
    );
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_token_gives_a_fresh_join_and_counts_as_a_failed_resume() {
    let app = spawn_app().await;
    let mut a = app.joined("lobby", "ann").await;
    // A token that never joined a room, and one that was never issued.
    let mut never_joined = app.client().await;
    for token in [never_joined.token(), "garbage".to_string()] {
        let mut c = app.client().await;
        c.send(json!({"type":"join","room":"lobby","resumeToken":token}))
            .await;
        let joined = c.recv_type("joined").await;
        assert_eq!(joined["resumed"], false);
        assert_eq!(joined["peerId"], c.peer_id());
        assert_eq!(a.recv_type("peer-joined").await["peerId"], c.peer_id());
    }
    assert_eq!(
        app.metric("chatsubo_reconnection_attempts_total").await,
        2.0
    );
    assert_eq!(
        app.metric(r#"chatsubo_reconnections_total{outcome="invalid"}"#)
            .await,
        2.0
    );
    never_joined.ping_next(1).await;
    app.stop().await;
}

#[tokio::test]
async fn a_resumed_peer_can_resume_again_with_the_token_of_its_new_welcome() {
    let app = spawn_app_with(|c| c.resume_grace_secs = Duration::from_secs(30)).await;
    let (mut a, b) = pair(&app, "lobby").await;
    let b_id = b.peer_id();
    let mut token = b.token();
    b.vanish();
    for round in 0..3 {
        app.wait_connections(1).await;
        let mut next = app.client().await;
        next.send(json!({"type":"join","room":"lobby","resumeToken":token}))
            .await;
        let joined = next.recv_type("joined").await;
        assert_eq!(joined["resumed"], true, "round {round}");
        assert_eq!(joined["peerId"], b_id);
        a.send(json!({"type":"offer","to":b_id,"data":{"round":round}}))
            .await;
        assert_eq!(next.recv_type("offer").await["data"]["round"], round);
        token = next.token();
        next.vanish();
    }
    app.wait_connections(1).await;
    a.ping_next(1).await;
    assert_eq!(
        app.metric(r#"chatsubo_reconnections_total{outcome="resumed"}"#)
            .await,
        3.0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_peer_alone_in_its_room_keeps_the_room_during_its_grace_and_resumes() {
    let app = spawn_app_with(|c| c.resume_grace_secs = Duration::from_secs(30)).await;
    let b = app.joined("solo", "bob").await;
    let (b_id, token) = (b.peer_id(), b.token());
    b.vanish();
    app.wait_connections(0).await;
    assert_eq!(app.health().await["activeRooms"], 1);
    let mut b2 = app.client().await;
    b2.send(json!({"type":"join","room":"solo","resumeToken":token}))
        .await;
    let joined = b2.recv_type("joined").await;
    assert_eq!(joined["resumed"], true);
    assert_eq!(joined["peerId"], b_id);
    assert_eq!(joined["peers"], json!([]));
    // Others joining now see it as a member.
    let mut a = app.client().await;
    let joined = a.join("solo", "ann").await;
    assert_eq!(
        joined["peers"],
        json!([{"peerId": b_id, "displayName": "bob"}])
    );
    app.stop().await;
}

#[tokio::test]
async fn the_grace_timer_of_an_earlier_drop_does_not_remove_a_resumed_peer() {
    let app = spawn_app_with(|c| c.resume_grace_secs = Duration::from_millis(500)).await;
    let (mut a, b) = pair(&app, "lobby").await;
    let (b_id, token) = (b.peer_id(), b.token());
    b.vanish();
    app.wait_connections(1).await;
    let mut b2 = app.client().await;
    b2.send(json!({"type":"join","room":"lobby","resumeToken":token}))
        .await;
    assert_eq!(b2.recv_type("joined").await["resumed"], true);
    // The first connection's grace ends meanwhile; b2 is live, so nothing happens.
    let quiet = Duration::from_millis(1500);
    tokio::join!(a.expect_silence(quiet), b2.expect_silence(quiet));
    a.send(json!({"type":"offer","to":b_id,"data":{"n":1}}))
        .await;
    assert_eq!(b2.recv_type("offer").await["data"]["n"], 1);
    assert_eq!(
        app.metric(r#"chatsubo_leaves_total{reason="disconnected"}"#)
            .await,
        0.0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_resume_while_the_old_connection_is_open_takes_over() {
    let app = spawn_app_with(|c| c.resume_grace_secs = Duration::from_secs(30)).await;
    let (mut a, mut b) = pair(&app, "lobby").await;
    let (b_id, token) = (b.peer_id(), b.token());
    let mut b2 = app.client().await;
    b2.send(json!({"type":"join","room":"lobby","resumeToken":token}))
        .await;
    let joined = b2.recv_type("joined").await;
    assert_eq!(joined["resumed"], true);
    assert_eq!(joined["peerId"], b_id);
    let (texts, code) = b.collect_until_close().await;
    assert!(texts.is_empty(), "{texts:?}");
    assert_eq!(code, Some(4000));
    app.wait_connections(2).await;
    // The others saw nothing, and relays now go to the new connection.
    a.ping_next(1).await;
    a.send(json!({"type":"offer","to":b_id,"data":{"n":1}}))
        .await;
    assert_eq!(b2.recv_type("offer").await["data"]["n"], 1);
    a.ping_next(2).await;
    app.stop().await;
}

#[tokio::test]
async fn ping_is_answered_with_its_id_and_the_server_time() {
    let app = spawn_app().await;
    let mut c = app.client().await;
    c.send(json!({"type":"ping","id":7})).await;
    let pong = c.recv_type("pong").await;
    assert_eq!(pong["id"], 7);
    let time = pong["serverTime"].as_str().unwrap();
    assert!(is_rfc3339_millis_utc(time), "{time}");
    let parsed = time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339");
    let skew = (time::OffsetDateTime::now_utc() - parsed).abs();
    assert!(skew < time::Duration::minutes(1), "server time {time}");
    // A ping without an id is still answered; a non-integer id is echoed.
    c.send(json!({"type":"ping"})).await;
    let pong = c.recv_type("pong").await;
    assert!(pong.get("id").is_none() || pong["id"].is_null(), "{pong}");
    c.send_text(r#"{"type":"ping","id":2.5}"#).await;
    assert_eq!(c.recv_type("pong").await["id"], 2.5);
    app.stop().await;
}

#[tokio::test]
async fn a_room_query_joins_at_once() {
    let app = spawn_app().await;
    let mut a = app.client_with("?room=lobby").await;
    let joined = a.recv_type("joined").await;
    assert_eq!(joined["room"], "lobby");
    assert_eq!(joined["peerId"], a.peer_id());
    assert_eq!(joined["resumed"], false);
    let mut b = app.client_with("?room=lobby").await;
    let joined = b.recv_type("joined").await;
    assert_eq!(joined["peers"][0]["peerId"], a.peer_id());
    assert_eq!(a.recv_type("peer-joined").await["peerId"], b.peer_id());
    // Already in the room from the query.
    b.send(json!({"type":"join","room":"lobby"})).await;
    assert_eq!(b.recv_error("ALREADY_IN_ROOM").await["ref"], "join");
    app.stop().await;
}

#[tokio::test]
async fn an_invalid_room_query_is_an_invalid_join() {
    let app = spawn_app().await;
    for query in [
        "?room=bad%20room",
        "?room=",
        &format!("?room={}", "x".repeat(65)),
        "?room=caf%C3%A9",
    ] {
        let mut c = app.client_with(query).await;
        let err = c.recv_error("INVALID_MESSAGE").await;
        assert_eq!(err["ref"], "join", "{query}: {err}");
        // Not in a room, and still connected.
        c.send(json!({"type":"leave"})).await;
        c.recv_error("NOT_IN_ROOM").await;
        c.join("ok-room_1.x", "n").await;
    }
    app.stop().await;
}

#[tokio::test]
async fn invalid_messages_are_answered_and_the_connection_stays_open() {
    let app = spawn_app().await;
    let mut c = app.client().await;
    // (frame, expected ref)
    let cases: [(&str, Option<&str>); 19] = [
        ("not json", None),
        ("", None),
        ("[1,2]", None),
        (r#"{"room":"lobby"}"#, None),
        (r#"{"type":7}"#, None),
        (r#"{"type":"dance"}"#, None),
        (r#"{"type":"join"}"#, Some("join")),
        (r#"{"type":"join","room":5}"#, Some("join")),
        (
            r#"{"type":"join","room":"lobby","displayName":7}"#,
            Some("join"),
        ),
        (
            &format!(
                r#"{{"type":"join","room":"lobby","displayName":"{}"}}"#,
                "n".repeat(65)
            ),
            Some("join"),
        ),
        (r#"{"type":"offer","data":{}}"#, Some("offer")),
        (
            r#"{"type":"answer","to":"p_x","data":"sdp"}"#,
            Some("answer"),
        ),
        (r#"{"type":"ping","id":"seven"}"#, Some("ping")),
        (
            r#"{"type":"join","room":"lobby","resumeToken":5}"#,
            Some("join"),
        ),
        (
            r#"{"type":"ice-candidate","to":"p_x","data":[1]}"#,
            Some("ice-candidate"),
        ),
        (r#"{"type":"offer","to":"","data":{}}"#, Some("offer")),
        (r#"{"type":"ping","traceparent":7}"#, Some("ping")),
        (r#"{"type":"ping"} trailing"#, None),
        (r#"{"type":"telemetry","event":"dance"}"#, Some("telemetry")),
    ];
    for (i, (frame, reference)) in cases.iter().enumerate() {
        c.send_text(frame).await;
        let err = c.recv_error("INVALID_MESSAGE").await;
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
        match reference {
            Some(r) => assert_eq!(err["ref"], *r, "{frame}: {err}"),
            None => assert!(err.get("ref").is_none(), "{frame}: {err}"),
        }
        c.ping_next(i as u64).await;
    }
    // A binary frame.
    c.ws.send(Message::binary(b"{\"type\":\"ping\"}".to_vec()))
        .await
        .unwrap();
    let err = c.recv_error("INVALID_MESSAGE").await;
    assert!(err.get("ref").is_none(), "{err}");
    c.ping_next(100).await;
    // Still usable for everything.
    c.join("lobby", "ann").await;
    assert_eq!(
        app.metric(r#"chatsubo_errors_total{code="INVALID_MESSAGE",kind="client"}"#)
            .await,
        20.0
    );
    app.stop().await;
}

#[tokio::test]
async fn relays_leave_and_peer_telemetry_before_join_are_not_in_room() {
    let app = spawn_app().await;
    let mut c = app.client().await;
    for kind in ["offer", "answer", "ice-candidate"] {
        c.send(json!({"type":kind,"to":"p_nobody","data":{}})).await;
        assert_eq!(c.recv_error("NOT_IN_ROOM").await["ref"], kind);
    }
    c.send(json!({"type":"leave"})).await;
    assert_eq!(c.recv_error("NOT_IN_ROOM").await["ref"], "leave");
    c.send(json!({"type":"telemetry","event":"peer-connection","peer":"p_b2","outcome":"connected","ms":830}))
        .await;
    assert_eq!(c.recv_error("NOT_IN_ROOM").await["ref"], "telemetry");
    // After a leave, the same again.
    c.join("lobby", "ann").await;
    c.send(json!({"type":"leave"})).await;
    c.send(json!({"type":"offer","to":"p_nobody","data":{}}))
        .await;
    assert_eq!(c.recv_error("NOT_IN_ROOM").await["ref"], "offer");
    c.ping_next(1).await;
    app.stop().await;
}

#[tokio::test]
async fn a_second_join_is_already_in_room() {
    let app = spawn_app().await;
    let mut c = app.joined("lobby", "ann").await;
    for room in ["lobby", "other"] {
        c.send(json!({"type":"join","room":room})).await;
        let err = c.recv_error("ALREADY_IN_ROOM").await;
        assert_eq!(err["ref"], "join");
    }
    // After a leave, a join works again.
    c.send(json!({"type":"leave"})).await;
    let joined = c.join("other", "ann").await;
    assert_eq!(joined["room"], "other");
    app.stop().await;
}

#[tokio::test]
async fn a_relay_to_nobody_or_to_oneself_is_unknown_peer() {
    let app = spawn_app().await;
    let (mut a, mut b) = pair(&app, "lobby").await;
    for to in ["p_nobody".to_string(), a.peer_id()] {
        a.send(json!({"type":"offer","to":to,"data":{}})).await;
        let err = a.recv_error("UNKNOWN_PEER").await;
        assert_eq!(err["ref"], "offer");
    }
    // A peer that left is unknown too.
    let b_id = b.peer_id();
    b.send(json!({"type":"leave"})).await;
    a.recv_type("peer-left").await;
    a.send(json!({"type":"ice-candidate","to":b_id,"data":{}}))
        .await;
    assert_eq!(a.recv_error("UNKNOWN_PEER").await["ref"], "ice-candidate");
    b.ping_next(1).await;
    app.stop().await;
}

#[tokio::test]
async fn the_eleventh_peer_gets_room_full() {
    let app = spawn_app().await;
    let mut peers = Vec::new();
    for i in 0..10 {
        peers.push(app.joined("lobby", &format!("p{i}")).await);
    }
    let mut late = app.client().await;
    late.send(json!({"type":"join","room":"lobby","displayName":"late"}))
        .await;
    let err = late.recv_error("ROOM_FULL").await;
    assert_eq!(err["ref"], "join");
    assert_eq!(err["message"], "room lobby is full (10/10)");
    assert_eq!(app.metric("chatsubo_room_full_rejections_total").await, 1.0);
    // Not in the room: another room is fine.
    late.join("overflow", "late").await;
    // The ten saw only each other arrive.
    let first = &mut peers[0];
    for _ in 0..9 {
        first.recv_type("peer-joined").await;
    }
    first.ping_next(1).await;
    // A place that frees up can be taken.
    let gone = peers.pop().unwrap();
    gone.close().await;
    let mut next = app.client().await;
    next.join("lobby", "next").await;
    app.stop().await;
}

#[tokio::test]
async fn a_peer_inside_its_grace_keeps_its_place_in_a_full_room() {
    let app = spawn_app_with(|c| {
        c.max_room_size = 2;
        c.resume_grace_secs = Duration::from_secs(30);
    })
    .await;
    let (_a, b) = pair(&app, "duo").await;
    let token = b.token();
    b.vanish();
    app.wait_connections(1).await;
    // Through ?room= as through join: full while b may still come back.
    let mut c = app.client_with("?room=duo").await;
    let err = c.recv_error("ROOM_FULL").await;
    assert_eq!(err["ref"], "join");
    assert_eq!(err["message"], "room duo is full (2/2)");
    let mut b2 = app.client().await;
    b2.send(json!({"type":"join","room":"duo","resumeToken":token}))
        .await;
    assert_eq!(b2.recv_type("joined").await["resumed"], true);
    app.stop().await;
}

#[tokio::test]
async fn over_the_rate_limit_is_rate_limited() {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_sec = 1;
        c.rate_limit_burst = 5;
    })
    .await;
    let mut c = app.joined("lobby", "ann").await; // one of the five
    for i in 0..30 {
        c.send(json!({"type":"ping","id":i})).await;
    }
    let mut limited = 0;
    for i in 0..30 {
        let m = c.recv().await;
        if i < 4 {
            assert_eq!(m["type"], "pong", "{m}");
            assert_eq!(m["id"], i);
        } else if m["type"] == "error" {
            assert_eq!(m["code"], "RATE_LIMITED", "{m}");
            assert_eq!(m["ref"], "ping", "{m}");
            limited += 1;
        } else {
            assert_eq!(m["type"], "pong", "{m}");
        }
    }
    assert!(limited >= 1);
    assert_eq!(
        app.metric(r#"chatsubo_errors_total{code="RATE_LIMITED",kind="client"}"#)
            .await,
        limited as f64
    );
    app.stop().await;
}

#[tokio::test]
async fn every_kind_of_frame_counts_against_the_rate_limit() {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_sec = 1;
        c.rate_limit_burst = 2;
    })
    .await;
    let mut c = app.client().await;
    // Two frames use up the burst; each answered INVALID_MESSAGE.
    c.send_text("not json").await;
    c.ws.send(Message::binary(b"\x00".to_vec())).await.unwrap();
    for _ in 0..2 {
        c.recv_error("INVALID_MESSAGE").await;
    }
    // Over the rate, whatever the frame: RATE_LIMITED, with `ref` only for a known type.
    c.send_text("not json").await;
    c.ws.send(Message::binary(b"\x00".to_vec())).await.unwrap();
    c.send_text(r#"{"type":"dance"}"#).await;
    c.send(json!({"type":"telemetry","event":"connect-time","ms":5}))
        .await;
    c.send(json!({"type":"join"})).await;
    for reference in [None, None, None, Some("telemetry"), Some("join")] {
        let err = c.recv_error("RATE_LIMITED").await;
        match reference {
            Some(r) => assert_eq!(err["ref"], r, "{err}"),
            None => assert!(err.get("ref").is_none(), "{err}"),
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn a_flood_of_binary_frames_is_closed_with_1008() {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_sec = 1;
        c.rate_limit_burst = 2;
    })
    .await;
    let (mut a, mut b) = pair(&app, "lobby").await;
    let b_id = b.peer_id();
    for _ in 0..100 {
        b.ws.send(Message::binary(vec![0u8; 16])).await.unwrap();
    }
    let (_, code) = b.collect_until_close().await;
    assert_eq!(code, Some(1008));
    let left = a.recv_type("peer-left").await;
    assert_eq!(
        left,
        json!({"type":"peer-left","peerId":b_id,"reason":"kicked"})
    );
    app.stop().await;
}

#[tokio::test]
async fn repeated_rate_limit_abuse_closes_with_1008_and_the_others_see_kicked() {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_sec = 1;
        c.rate_limit_burst = 2;
    })
    .await;
    let (mut a, mut b) = pair(&app, "lobby").await;
    let b_id = b.peer_id();
    for i in 0..100 {
        b.send(json!({"type":"ping","id":i})).await;
    }
    let (texts, code) = b.collect_until_close().await;
    assert_eq!(code, Some(1008));
    assert!(
        texts.iter().any(|m| m["code"] == "RATE_LIMITED"),
        "{texts:?}"
    );
    let left = a.recv_type("peer-left").await;
    assert_eq!(
        left,
        json!({"type":"peer-left","peerId":b_id,"reason":"kicked"})
    );
    assert_eq!(
        app.metric(r#"chatsubo_kicks_total{reason="rate_limit_abuse"}"#)
            .await,
        1.0
    );
    app.stop().await;
}

#[tokio::test]
async fn rate_limiting_one_room_does_not_stop_another() {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_sec = 1;
        c.rate_limit_burst = 10;
    })
    .await;
    let (mut noisy, _mate) = pair(&app, "noisy").await;
    let (mut c, mut d) = pair(&app, "quiet").await;
    for i in 0..40 {
        noisy.send(json!({"type":"ping","id":i})).await;
    }
    for i in 0..5 {
        c.send(json!({"type":"offer","to":d.peer_id(),"data":{"seq":i}}))
            .await;
    }
    for i in 0..5 {
        assert_eq!(d.recv_type("offer").await["data"]["seq"], i);
    }
    c.ping_next(1).await;
    let mut limited = 0;
    for _ in 0..40 {
        let m = noisy.recv().await;
        if m["type"] == "error" {
            assert_eq!(m["code"], "RATE_LIMITED");
            limited += 1;
        }
    }
    assert!(limited >= 1);
    app.stop().await;
}

#[tokio::test]
async fn a_room_that_spent_its_budget_refuses_a_fresh_connections_relays() {
    // Two seats at one message a second, burst 5: the room may relay 10 at
    // once, whoever its members are. (Nothing refills for 500 ms.)
    let app = spawn_app_with(|c| {
        c.rate_limit_per_sec = 1;
        c.rate_limit_burst = 5;
        c.max_room_size = 2;
    })
    .await;
    // Each join takes one of its connection's five; relays take one of the
    // room's ten as well.
    let (mut a, mut b) = pair(&app, "duo").await;
    for i in 0..4 {
        a.send(json!({"type":"offer","to":b.peer_id(),"data":{"seq":i}}))
            .await;
        b.send(json!({"type":"answer","to":a.peer_id(),"data":{"seq":i}}))
            .await;
    }
    for i in 0..4 {
        assert_eq!(b.recv_type("offer").await["data"]["seq"], i);
        assert_eq!(a.recv_type("answer").await["data"]["seq"], i);
    }
    // b leaves and comes back on a new connection, with a fresh burst of
    // its own; the room has two relays left.
    b.close().await;
    a.recv_type("peer-left").await;
    let mut b2 = app.joined("duo", "bob").await;
    a.recv_type("peer-joined").await;
    for i in 0..3 {
        b2.send(json!({"type":"answer","to":a.peer_id(),"data":{"seq":10 + i}}))
            .await;
    }
    for i in 0..2 {
        assert_eq!(a.recv_type("answer").await["data"]["seq"], 10 + i);
    }
    let refused = b2.recv_error("RATE_LIMITED").await;
    assert_eq!(refused["ref"], "answer", "{refused}");
    let text = refused["message"].as_str().unwrap();
    assert!(
        text.contains("this room's peers together are over 2 messages a second (burst 10)"),
        "{refused}"
    );
    // A message that relays nothing takes b2's own last token only.
    b2.send(json!({"type":"ping","id":7})).await;
    assert_eq!(b2.recv_type("pong").await["id"], 7);
    a.expect_silence(Duration::from_millis(100)).await;
    assert_eq!(
        app.metric(r#"chatsubo_errors_total{code="RATE_LIMITED",kind="client"}"#)
            .await,
        1.0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_message_over_the_limit_is_too_large_then_closed_with_1009() {
    let app = spawn_app_with(|c| c.max_message_bytes = 2048).await;
    // Just under the limit is fine.
    let mut c = app.client().await;
    let pad = "x".repeat(2048 - 40);
    let text = format!(r#"{{"type":"ping","id":1,"pad":"{pad}"}}"#);
    assert!(text.len() <= 2048);
    c.send_text(&text).await;
    c.recv_type("pong").await;
    // One byte too many.
    let text = format!(
        r#"{{"type":"ping","id":1,"pad":"{pad}"}}{}"#,
        " ".repeat(2049 - text.len())
    );
    assert_eq!(text.len(), 2049);
    c.send_text(&text).await;
    let (texts, code) = c.collect_until_close().await;
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert_eq!(texts[0]["type"], "error");
    assert_eq!(texts[0]["code"], "MESSAGE_TOO_LARGE");
    assert_eq!(code, Some(1009));
    app.stop().await;
}

#[tokio::test]
async fn the_size_limit_counts_a_fragmented_message_as_a_whole() {
    let app = spawn_app_with(|c| c.max_message_bytes = 2048).await;
    let mut c = app.joined("lobby", "ann").await;
    let part = "x".repeat(1000);
    c.send_frame(Frame::message(
        format!(r#"{{"type":"ping","pad":"{part}"#).into_bytes(),
        OpCode::Data(Data::Text),
        false,
    ))
    .await;
    c.send_frame(Frame::message(
        part.clone().into_bytes(),
        OpCode::Data(Data::Continue),
        false,
    ))
    .await;
    c.send_frame(Frame::message(
        format!(r#"{part}"}}"#).into_bytes(),
        OpCode::Data(Data::Continue),
        true,
    ))
    .await;
    let (texts, code) = c.collect_until_close().await;
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert_eq!(texts[0]["code"], "MESSAGE_TOO_LARGE");
    assert_eq!(code, Some(1009));
    app.stop().await;
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    let app = spawn_app().await;
    let mut c = app.joined("lobby", "ann").await;
    // A fragmented valid message first: the raw frames are masked by the
    // client (the server would drop unmasked ones) and reach the server.
    c.send_frame(Frame::message(
        br#"{"type":"pi"#.to_vec(),
        OpCode::Data(Data::Text),
        false,
    ))
    .await;
    c.send_frame(Frame::message(
        br#"ng","id":3}"#.to_vec(),
        OpCode::Data(Data::Continue),
        true,
    ))
    .await;
    assert_eq!(c.recv_type("pong").await["id"], 3);
    c.send_frame(Frame::message(
        b"{\"type\":\"ping\",\"x\":\"\xff\xfe\"}".to_vec(),
        OpCode::Data(Data::Text),
        true,
    ))
    .await;
    let (texts, code) = c.collect_until_close().await;
    assert!(
        texts.iter().all(|m| m["code"] == "INVALID_MESSAGE"),
        "{texts:?}"
    );
    assert_eq!(code, Some(1007));
    app.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_says_so_closes_with_1001_and_sends_no_peer_left() {
    let mut app = spawn_app().await;
    let (mut a, mut b) = pair(&app, "lobby").await;
    let mut lone = app.client().await;
    app.begin_shutdown();
    for c in [&mut a, &mut b, &mut lone] {
        let (texts, code) = c.collect_until_close().await;
        assert_eq!(texts.len(), 1, "only the shutdown error: {texts:?}");
        assert_eq!(texts[0]["type"], "error");
        assert_eq!(texts[0]["code"], "SERVER_SHUTTING_DOWN");
        assert_eq!(code, Some(1001));
    }
    // run() returns in bounded time (the helper allows 20 s), and new
    // connections are refused from then on.
    let url = app.ws_url("");
    app.finished().await;
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
}

#[tokio::test]
async fn every_kind_of_client_telemetry_is_accepted_and_counted() {
    let app = spawn_app().await;
    let (mut a, b) = pair(&app, "lobby").await;
    let events = [
        json!({"type":"telemetry","event":"peer-connection","peer":b.peer_id(),"outcome":"connected","ms":830}),
        json!({"type":"telemetry","event":"peer-connection","peer":b.peer_id(),"outcome":"failed","reason":"ice-failed"}),
        json!({"type":"telemetry","event":"reconnect","attempt":3,"outcome":"success","downtimeMs":4100}),
        json!({"type":"telemetry","event":"reconnect","attempt":1,"outcome":"failure"}),
        json!({"type":"telemetry","event":"signaling-rtt","ms":12.5}),
        json!({"type":"telemetry","event":"connect-time","ms":95}),
        json!({"type":"telemetry","event":"client-error","code":"GETUSERMEDIA_DENIED","message":"Permission denied"}),
        json!({"type":"telemetry","event":"client-error","code":"SOMETHING_NEW"}),
    ];
    for (i, event) in events.iter().enumerate() {
        a.send(event.clone()).await;
        a.ping_next(i as u64).await;
    }
    // Telemetry that needs no room is accepted before a join too.
    let mut lone = app.client().await;
    lone.send(json!({"type":"telemetry","event":"connect-time","ms":40.5}))
        .await;
    lone.ping_next(1).await;

    let metrics = app.metrics().await;
    for (sample, value) in [
        (
            r#"chatsubo_peer_connections_total{outcome="connected"}"#,
            1.0,
        ),
        (r#"chatsubo_peer_connections_total{outcome="failed"}"#, 1.0),
        (
            r#"chatsubo_client_reconnects_total{outcome="success"}"#,
            1.0,
        ),
        (
            r#"chatsubo_client_reconnects_total{outcome="failure"}"#,
            1.0,
        ),
        ("chatsubo_peer_connect_seconds_count", 1.0),
        ("chatsubo_peer_connect_seconds_sum", 0.83),
        ("chatsubo_signaling_rtt_seconds_count", 1.0),
        ("chatsubo_signaling_rtt_seconds_sum", 0.0125),
        ("chatsubo_client_connect_seconds_count", 2.0),
        (
            r#"chatsubo_client_errors_total{code="GETUSERMEDIA_DENIED"}"#,
            1.0,
        ),
        (r#"chatsubo_client_errors_total{code="other"}"#, 1.0),
        (
            r#"chatsubo_messages_total{direction="in",type="telemetry"}"#,
            9.0,
        ),
    ] {
        let got = metric_value(&metrics, sample);
        assert!(
            (got - value).abs() < 1e-9,
            "{sample} is {got}, expected {value}"
        );
    }
    assert_eq!(
        metric_value(
            &metrics,
            r#"chatsubo_errors_total{code="INVALID_MESSAGE",kind="client"}"#
        ),
        0.0
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_telemetry_is_invalid_message() {
    let app = spawn_app().await;
    let mut c = app.joined("lobby", "ann").await;
    for event in [
        json!({"type":"telemetry"}),
        json!({"type":"telemetry","event":"dance"}),
        json!({"type":"telemetry","event":"peer-connection","peer":"p_b","outcome":"maybe"}),
        json!({"type":"telemetry","event":"peer-connection","peer":"p_b","outcome":"connected"}),
        json!({"type":"telemetry","event":"reconnect","attempt":0,"outcome":"success"}),
        json!({"type":"telemetry","event":"signaling-rtt","ms":"fast"}),
        json!({"type":"telemetry","event":"signaling-rtt","ms":-1}),
        json!({"type":"telemetry","event":"connect-time"}),
        json!({"type":"telemetry","event":"client-error","code":"has space"}),
    ] {
        c.send(event.clone()).await;
        let err = c.recv_error("INVALID_MESSAGE").await;
        assert_eq!(err["ref"], "telemetry", "{event}: {err}");
    }
    c.ping_next(1).await;
    app.stop().await;
}

#[tokio::test]
async fn a_consumer_that_never_reads_is_kicked_and_its_connection_ends() {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_sec = 1_000_000;
        c.rate_limit_burst = 1_000_000;
    })
    .await;
    let (mut a, b) = pair(&app, "lobby").await;
    let b_id = b.peer_id();
    // `b` never reads again; `a` floods it with large relays.
    let sdp = "a".repeat(60 * 1024);
    let mut kicked = None;
    'flood: for i in 0..4000 {
        a.send(json!({"type":"offer","to":b_id,"data":{"seq":i,"sdp":sdp}}))
            .await;
        while let Some(Event::Text(m)) = a.next_event(Duration::ZERO).await {
            if m["type"] == "peer-left" {
                kicked = Some(m);
                break 'flood;
            }
            assert_eq!(m["code"], "UNKNOWN_PEER", "{m}");
        }
    }
    let left = match kicked {
        Some(m) => m,
        None => loop {
            let m = a.recv().await;
            if m["type"] == "peer-left" {
                break m;
            }
        },
    };
    assert_eq!(
        left,
        json!({"type":"peer-left","peerId":b_id,"reason":"kicked"})
    );
    assert_eq!(
        app.metric(r#"chatsubo_kicks_total{reason="slow_consumer"}"#)
            .await,
        1.0
    );
    // Relays to it are refused from now on.
    a.send(json!({"type":"offer","to":b_id,"data":{}})).await;
    loop {
        let m = a.recv().await;
        if m["type"] == "error" && m["code"] == "UNKNOWN_PEER" {
            break;
        }
    }
    // The kicked connection ends even though its client never reads.
    app.wait_connections(1).await;
    drop(b);
    app.stop().await;
}

#[tokio::test]
async fn peer_ids_and_session_ids_are_unique() {
    let app = spawn_app().await;
    let mut peers = HashSet::new();
    let mut sessions = HashSet::new();
    let mut tokens = HashSet::new();
    let mut clients = Vec::new();
    let mut in_order = Vec::new();
    for _ in 0..60 {
        let c = app.client().await;
        assert!(peers.insert(c.peer_id()), "peer id reused");
        let session = c.welcome["sessionId"].as_str().unwrap().to_string();
        assert!(sessions.insert(session.clone()));
        in_order.push(session);
        assert!(tokens.insert(c.token()));
        clients.push(c);
    }
    // Session ids sort in the order the connections were made.
    let mut sorted = in_order.clone();
    sorted.sort();
    assert_eq!(sorted, in_order);
    // Ids are not reused after their connections end either.
    for c in clients.drain(..) {
        c.close().await;
    }
    for _ in 0..20 {
        let c = app.client().await;
        assert!(peers.insert(c.peer_id()), "peer id reused");
        assert!(sessions.insert(c.welcome["sessionId"].as_str().unwrap().to_string()));
    }
    app.stop().await;
    // Nor by a restarted server.
    let app = spawn_app().await;
    for _ in 0..20 {
        let c = app.client().await;
        assert!(peers.insert(c.peer_id()), "peer id reused after a restart");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_third_connection_from_one_address_gets_429() {
    let app = spawn_app_with(|c| c.max_connections_per_ip = 2).await;
    let a = app.client().await;
    let _b = app.client().await;
    let (status, body) = app.refused_upgrade().await;
    assert_eq!(status, 429);
    assert!(body["error"]["code"].is_string(), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert_eq!(
        app.metric(r#"chatsubo_connections_refused_total{reason="per_ip"}"#)
            .await,
        1.0
    );
    // Closing one frees a place.
    a.close().await;
    app.client_when_allowed().await;
    app.stop().await;
}

#[tokio::test]
async fn a_connection_over_the_total_cap_gets_503() {
    let app = spawn_app_with(|c| {
        c.max_connections = 3;
        c.max_connections_per_ip = 3;
    })
    .await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(app.client().await);
    }
    let (status, body) = app.refused_upgrade().await;
    assert_eq!(status, 503);
    assert!(body["error"]["code"].is_string(), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    let err = Client::try_connect(&app.ws_url(""))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(&err, tokio_tungstenite::tungstenite::Error::Http(r) if r.status() == 503),
        "{err}"
    );
    // A vanished connection frees its place too.
    open.pop().unwrap().vanish();
    app.client_when_allowed().await;
    app.stop().await;
}
