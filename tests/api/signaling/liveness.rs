//! Liveness: the server's WebSocket pings, the grace after a dropped
//! socket, timeouts for a client that stops answering or reading, the
//! protocol's `ping`, and how every connection ends at shutdown.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::{away, pair};
use crate::helpers::*;

#[tokio::test]
async fn a_dropped_connection_keeps_its_place_for_the_grace_then_leaves_as_disconnected() {
    let (app, mut a, b_id, _) = away(Duration::from_secs(2)).await;
    // Once the server has seen the drop, nothing is said during the grace.
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
