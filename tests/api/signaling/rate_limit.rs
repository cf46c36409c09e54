//! Rate limits, per connection and per room: over them is RATE_LIMITED,
//! abuse is a kick with 1008, and one room's flood does not slow another.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::pair;
use crate::helpers::*;

/// A server that lets a connection send one message a second, after a
/// burst of `burst`.
async fn spawn_limited(burst: u32) -> TestApp {
    spawn_app_with(|c| {
        c.rate_limit_per_sec = 1;
        c.rate_limit_burst = burst;
    })
    .await
}

#[tokio::test]
async fn over_the_rate_limit_is_rate_limited() {
    let app = spawn_limited(5).await;
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
    let app = spawn_limited(2).await;
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
    let app = spawn_limited(2).await;
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
    let app = spawn_limited(2).await;
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
    let app = spawn_limited(10).await;
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
