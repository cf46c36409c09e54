//! Metrics tell the truth: a scripted scenario whose counts are known, and
//! every affected sample compared with them exactly.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

/// Polls until `sample` reads `value` (the server counts asynchronously to
/// the client's view of a close).
async fn settle(app: &TestApp, sample: &str, value: f64) {
    for _ in 0..250 {
        if app.metric(sample).await == value {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "{sample} never reached {value}: {}",
        app.metric(sample).await
    );
}

#[tokio::test]
async fn scripted_scenario_matches_every_metric_exactly() {
    let app = spawn_app_with(|c| c.max_room_size = 2).await;

    // Two joins fill m1; the third is refused.
    let mut a = app.joined("m1", "ann").await;
    let mut b = app.joined("m1", "bob").await;
    let b_token = b.token();
    a.recv_type("peer-joined").await;
    assert_eq!(app.metric("chatsubo_active_connections").await, 2.0);
    assert_eq!(app.metric("chatsubo_active_rooms").await, 1.0);
    let mut c = app.client().await;
    c.send(json!({"type":"join","room":"m1"})).await;
    c.recv_error("ROOM_FULL").await;

    // Bad messages: not JSON, an unknown type, a binary frame; a leave
    // before any join.
    c.send_text("not json").await;
    c.recv_error("INVALID_MESSAGE").await;
    c.send(json!({"type":"bogus"})).await;
    c.recv_error("INVALID_MESSAGE").await;
    c.ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    c.recv_error("INVALID_MESSAGE").await;
    c.send(json!({"type":"leave"})).await;
    c.recv_error("NOT_IN_ROOM").await;
    c.send(json!({"type":"telemetry","event":"peer-connection","peer":"p_x","outcome":"connected","ms":5}))
        .await;
    c.recv_error("NOT_IN_ROOM").await;

    // A relay, and one to nobody.
    a.send(json!({"type":"offer","to":b.peer_id(),"data":{"sdp":"x"}}))
        .await;
    b.recv_type("offer").await;
    a.send(json!({"type":"ice-candidate","to":"p_nobody","data":{}}))
        .await;
    a.recv_error("UNKNOWN_PEER").await;

    // Telemetry of each kind, then a ping to know it was all handled.
    let bp = b.peer_id();
    for t in [
        json!({"type":"telemetry","event":"peer-connection","peer":bp,"outcome":"connected","ms":830}),
        json!({"type":"telemetry","event":"peer-connection","peer":bp,"outcome":"failed","reason":"ice-failed"}),
        json!({"type":"telemetry","event":"reconnect","attempt":3,"outcome":"success","downtimeMs":4100}),
        json!({"type":"telemetry","event":"reconnect","attempt":1,"outcome":"failure"}),
        json!({"type":"telemetry","event":"signaling-rtt","ms":12.5}),
        json!({"type":"telemetry","event":"connect-time","ms":95}),
        json!({"type":"telemetry","event":"client-error","code":"GETUSERMEDIA_DENIED","message":"no"}),
        json!({"type":"telemetry","event":"client-error","code":"SOMETHING_NEW","message":"?"}),
    ] {
        a.send(t).await;
    }
    a.send(json!({"type":"ping","id":1})).await;
    a.recv_type("pong").await;

    // B drops without a close frame and resumes on a new connection.
    b.vanish();
    settle(&app, "chatsubo_active_connections", 2.0).await;
    let mut d = app.client().await;
    d.send(json!({"type":"join","room":"m1","resumeToken":b_token}))
        .await;
    assert_eq!(d.recv_type("joined").await["resumed"], true);
    // An unknown token and a spent one: fresh joins.
    let mut e = app.client().await;
    e.send(json!({"type":"join","room":"m2","resumeToken":"bogus"}))
        .await;
    assert_eq!(e.recv_type("joined").await["resumed"], false);
    let mut f = app.client().await;
    f.send(json!({"type":"join","room":"m3","resumeToken":b_token}))
        .await;
    assert_eq!(f.recv_type("joined").await["resumed"], false);

    // A leaves; D sees it. Then everyone closes.
    a.send(json!({"type":"leave"})).await;
    d.recv_type("peer-left").await;
    for client in [a, c, d, e, f] {
        client.close().await;
    }
    settle(&app, "chatsubo_active_connections", 0.0).await;
    settle(&app, "chatsubo_session_duration_seconds_count", 6.0).await;

    let text = app.metrics().await;
    let truth: &[(&str, f64)] = &[
        (r#"chatsubo_active_connections{protocol="chatsubo"}"#, 0.0),
        ("chatsubo_active_rooms", 0.0),
        // Room sizes: joins 1, 2, 1 (m2), 1 (m3); leaves 1 (A), 0, 0, 0.
        ("chatsubo_room_peers_count", 8.0),
        ("chatsubo_room_peers_sum", 6.0),
        (r#"chatsubo_room_peers_bucket{le="1"}"#, 7.0),
        (r#"chatsubo_room_peers_bucket{le="2"}"#, 8.0),
        ("chatsubo_room_full_rejections_total", 1.0),
        // B's socket ended without a closing handshake.
        ("chatsubo_websocket_errors_total", 1.0),
        (
            r#"chatsubo_errors_total{code="INVALID_MESSAGE",kind="client",protocol="chatsubo"}"#,
            3.0,
        ),
        (
            r#"chatsubo_errors_total{code="ROOM_FULL",kind="client",protocol="chatsubo"}"#,
            1.0,
        ),
        (
            r#"chatsubo_errors_total{code="NOT_IN_ROOM",kind="client",protocol="chatsubo"}"#,
            2.0,
        ),
        (
            r#"chatsubo_errors_total{code="UNKNOWN_PEER",kind="client",protocol="chatsubo"}"#,
            1.0,
        ),
        (
            r#"chatsubo_errors_total{code="ALREADY_IN_ROOM",kind="client",protocol="chatsubo"}"#,
            0.0,
        ),
        (
            r#"chatsubo_errors_total{code="MESSAGE_TOO_LARGE",kind="client",protocol="chatsubo"}"#,
            0.0,
        ),
        (
            r#"chatsubo_errors_total{code="RATE_LIMITED",kind="client",protocol="chatsubo"}"#,
            0.0,
        ),
        (
            r#"chatsubo_errors_total{code="SERVER_SHUTTING_DOWN",kind="server",protocol="chatsubo"}"#,
            0.0,
        ),
        (
            r#"chatsubo_errors_total{code="INTERNAL",kind="server",protocol="chatsubo"}"#,
            0.0,
        ),
        (
            r#"chatsubo_messages_total{direction="in",protocol="chatsubo",type="join"}"#,
            6.0,
        ),
        (
            r#"chatsubo_messages_total{direction="in",protocol="chatsubo",type="leave"}"#,
            2.0,
        ),
        (
            r#"chatsubo_messages_total{direction="in",protocol="chatsubo",type="invalid"}"#,
            3.0,
        ),
        (
            r#"chatsubo_messages_total{direction="in",protocol="chatsubo",type="offer"}"#,
            1.0,
        ),
        (
            r#"chatsubo_messages_total{direction="in",protocol="chatsubo",type="answer"}"#,
            0.0,
        ),
        (
            r#"chatsubo_messages_total{direction="in",protocol="chatsubo",type="ice-candidate"}"#,
            1.0,
        ),
        (
            r#"chatsubo_messages_total{direction="in",protocol="chatsubo",type="ping"}"#,
            1.0,
        ),
        (
            r#"chatsubo_messages_total{direction="in",protocol="chatsubo",type="telemetry"}"#,
            9.0,
        ),
        (
            r#"chatsubo_messages_total{direction="out",protocol="chatsubo",type="welcome"}"#,
            6.0,
        ),
        (
            r#"chatsubo_messages_total{direction="out",protocol="chatsubo",type="joined"}"#,
            5.0,
        ),
        (
            r#"chatsubo_messages_total{direction="out",protocol="chatsubo",type="peer-joined"}"#,
            1.0,
        ),
        (
            r#"chatsubo_messages_total{direction="out",protocol="chatsubo",type="peer-left"}"#,
            1.0,
        ),
        (
            r#"chatsubo_messages_total{direction="out",protocol="chatsubo",type="offer"}"#,
            1.0,
        ),
        (
            r#"chatsubo_messages_total{direction="out",protocol="chatsubo",type="answer"}"#,
            0.0,
        ),
        (
            r#"chatsubo_messages_total{direction="out",protocol="chatsubo",type="ice-candidate"}"#,
            0.0,
        ),
        (
            r#"chatsubo_messages_total{direction="out",protocol="chatsubo",type="pong"}"#,
            1.0,
        ),
        (
            r#"chatsubo_messages_total{direction="out",protocol="chatsubo",type="error"}"#,
            7.0,
        ),
        (r#"chatsubo_joins_total{protocol="chatsubo"}"#, 4.0),
        (
            r#"chatsubo_leaves_total{protocol="chatsubo",reason="left"}"#,
            4.0,
        ),
        (
            r#"chatsubo_leaves_total{protocol="chatsubo",reason="disconnected"}"#,
            0.0,
        ),
        (
            r#"chatsubo_leaves_total{protocol="chatsubo",reason="timeout"}"#,
            0.0,
        ),
        (
            r#"chatsubo_leaves_total{protocol="chatsubo",reason="kicked"}"#,
            0.0,
        ),
        ("chatsubo_reconnection_attempts_total", 3.0),
        (r#"chatsubo_reconnections_total{outcome="resumed"}"#, 1.0),
        (r#"chatsubo_reconnections_total{outcome="invalid"}"#, 1.0),
        (r#"chatsubo_reconnections_total{outcome="expired"}"#, 1.0),
        (
            r#"chatsubo_session_duration_seconds_count{protocol="chatsubo"}"#,
            6.0,
        ),
        (
            r#"chatsubo_peer_connections_total{outcome="connected",path="unknown"}"#,
            1.0,
        ),
        (
            r#"chatsubo_peer_connections_total{outcome="failed",path="unknown"}"#,
            1.0,
        ),
        ("chatsubo_peer_connect_seconds_count", 1.0),
        ("chatsubo_peer_connect_seconds_sum", 0.83),
        ("chatsubo_signaling_rtt_seconds_count", 1.0),
        ("chatsubo_signaling_rtt_seconds_sum", 0.0125),
        ("chatsubo_client_connect_seconds_count", 1.0),
        ("chatsubo_client_connect_seconds_sum", 0.095),
        (
            r#"chatsubo_client_reconnects_total{outcome="success"}"#,
            1.0,
        ),
        (
            r#"chatsubo_client_reconnects_total{outcome="failure"}"#,
            1.0,
        ),
        (
            r#"chatsubo_client_errors_total{code="GETUSERMEDIA_DENIED"}"#,
            1.0,
        ),
        (r#"chatsubo_client_errors_total{code="other"}"#, 1.0),
        ("chatsubo_held_messages", 0.0),
        (r#"chatsubo_kicks_total{reason="slow_consumer"}"#, 0.0),
        (
            r#"chatsubo_dropped_messages_total{reason="held_overflow"}"#,
            0.0,
        ),
        (r#"chatsubo_build_info{version="0.1.0"}"#, 1.0),
    ];
    let mut wrong = Vec::new();
    for (sample, expected) in truth {
        let got = metric_value(&text, sample);
        if (got - expected).abs() > 1e-9 {
            wrong.push(format!("{sample}: expected {expected}, got {got}"));
        }
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{sample} "))),
            "{sample} is not exposed"
        );
    }
    assert!(
        wrong.is_empty(),
        "metrics differ from the truth:\n{}",
        wrong.join("\n")
    );
    // No label holds a room, peer or address.
    for forbidden in ["m1", "m2", "m3", "127.0.0.1", "p_"] {
        assert!(
            !text.lines().filter(|l| !l.starts_with('#')).any(|l| l
                .split(' ')
                .next()
                .unwrap()
                .contains(&format!("\"{forbidden}"))),
            "a label holds {forbidden}"
        );
    }
    app.stop().await;
}
