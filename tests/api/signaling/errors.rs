//! Bad messages: each is answered with its error code and the connection
//! stays open, except for invalid UTF-8, which is closed with 1007.

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::helpers::*;

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
