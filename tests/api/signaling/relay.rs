//! Relays: offer, answer and ice-candidate reach the named peer of the same
//! room only, in order, with `from`, their data byte for byte and a
//! traceparent.

use std::collections::HashMap;

use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::pair;
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
