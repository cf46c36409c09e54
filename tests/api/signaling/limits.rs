//! Limits: the room size, the message size, a consumer too slow to read,
//! and connections per address and in all.

use std::time::Duration;

use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use super::{away_from, pair};
use crate::helpers::*;

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
    let (app, _a, _, token) = away_from("duo", |c| {
        c.max_room_size = 2;
        c.resume_grace_secs = Duration::from_secs(30);
    })
    .await;
    // Through ?room= as through join: full while b may still come back.
    let mut c = app.client_with("?room=duo").await;
    let err = c.recv_error("ROOM_FULL").await;
    assert_eq!(err["ref"], "join");
    assert_eq!(err["message"], "room duo is full (2/2)");
    let mut b2 = app.client().await;
    assert_eq!(b2.resume("duo", &token).await["resumed"], true);
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
