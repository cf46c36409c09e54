//! Client telemetry messages: every kind is accepted and counted in the
//! metrics, and a malformed one is INVALID_MESSAGE.

use serde_json::json;

use super::pair;
use crate::helpers::*;

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
            r#"chatsubo_peer_connections_total{outcome="connected",path="unknown"}"#,
            1.0,
        ),
        (
            r#"chatsubo_peer_connections_total{outcome="failed",path="unknown"}"#,
            1.0,
        ),
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
