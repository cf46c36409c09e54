//! Property tests of the wire contract: whatever a client sends,
//! parsing never panics and fails only with `INVALID_MESSAGE` (with `ref` only
//! when `type` was a known string); valid messages of every type parse back to
//! what was sent; relay `data` passes through byte for byte; what the server
//! writes is always JSON with the right `type`.

use std::collections::HashMap;
use std::fmt::Write as _;

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::value::RawValue;
use serde_json::{Number, Value, json};

use super::*;

mod render;
mod strategies;

use render::{render, style, write_string};
use strategies::*;

const TYPES: [&str; 8] = [
    "join",
    "leave",
    "offer",
    "answer",
    "ice-candidate",
    "ping",
    "telemetry",
    "ice-servers",
];

/// Every field name some client message reads.
const FIELDS: [&str; 18] = [
    "type",
    "room",
    "displayName",
    "resumeToken",
    "to",
    "data",
    "id",
    "traceparent",
    "event",
    "peer",
    "outcome",
    "ms",
    "reason",
    "attempt",
    "downtimeMs",
    "code",
    "message",
    "path",
];

// ---------------------------------------------------------------- oracles --

/// The `type` the contract sees in `text`: a known string `type` of a JSON
/// object, or nothing.
fn known_type(text: &str) -> Option<&'static str> {
    // Raw values, as numbers out of f64 range are still valid JSON.
    let object: HashMap<String, &RawValue> = serde_json::from_str(text).ok()?;
    let kind: String = serde_json::from_str(object.get("type")?.get()).ok()?;
    TYPES.iter().copied().find(|t| *t == kind)
}

/// Parses `text` and checks the outcome against the contract. With `exact`
/// (the text has no duplicate keys) an error about a message of known type
/// must carry its `ref`; without it, `ref` must only never be wrong.
fn check_outcome(text: &str, exact: bool) -> Result<(), TestCaseError> {
    let expected = known_type(text);
    match parse(text) {
        Ok(inbound) => {
            prop_assert_eq!(Some(inbound.message_type().as_str()), expected);
            check_reserialises(&inbound)?;
        }
        Err(e) => {
            prop_assert_eq!(e.code, ErrorCode::InvalidMessage);
            prop_assert!(!e.message.is_empty());
            match e.reference {
                Some(r) => prop_assert_eq!(Some(r.as_str()), expected),
                None if exact => prop_assert_eq!(expected, None),
                None => {}
            }
            // The error a client would get is itself valid JSON.
            let frame = ServerMessage::error(e.code, &e.message, e.reference).to_json();
            let v: Value = serde_json::from_str(&frame).map_err(fail)?;
            prop_assert_eq!(v["type"].as_str(), Some("error"));
            prop_assert_eq!(v["code"].as_str(), Some("INVALID_MESSAGE"));
            prop_assert_eq!(v["message"].as_str(), Some(e.message.as_str()));
        }
    }
    Ok(())
}

/// What the server writes in answer to a valid message parses as JSON.
fn check_reserialises(inbound: &Inbound<'_>) -> Result<(), TestCaseError> {
    let frame = match &inbound.message {
        ClientMessage::Relay { kind, to, data } => {
            let tp = inbound.traceparent.unwrap_or(TraceParent {
                trace_id: [1; 16],
                span_id: [2; 8],
                sampled: true,
            });
            let frame = relay_frame(*kind, to, data, &tp);
            // `data` may hold what the JSON grammar allows but strict parsers
            // refuse (a lone surrogate escape): read the frame with it raw.
            let out: HashMap<&str, &RawValue> = serde_json::from_str(&frame).map_err(fail)?;
            prop_assert_eq!(out.get("data").map(|d| d.get()), Some(data.get()));
            prop_assert_eq!(
                out.get("type").map(|d| d.get()),
                Some(&*format!("{:?}", kind.as_str()))
            );
            return Ok(());
        }
        ClientMessage::Join {
            room, display_name, ..
        } => ServerMessage::PeerJoined {
            peer_id: room.as_str(),
            display_name: display_name.as_deref(),
        }
        .to_json(),
        ClientMessage::Ping { id } => ServerMessage::Pong {
            id: id.as_ref(),
            server_time: "2026-01-01T00:00:00.000Z",
        }
        .to_json(),
        ClientMessage::Leave | ClientMessage::Telemetry(_) | ClientMessage::IceServers => {
            return Ok(());
        }
    };
    serde_json::from_str::<Value>(&frame).map_err(fail)?;
    Ok(())
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

// ----------------------------------------------------------------- tests --

proptest! {
    // ---- never panics, errors are INVALID_MESSAGE ------------------------

    #[test]
    fn any_string_parses_or_is_invalid_message(text in any::<String>()) {
        check_outcome(&text, false)?;
    }

    #[test]
    fn any_bytes_parse_or_are_invalid_message(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        check_outcome(&String::from_utf8_lossy(&bytes), false)?;
    }

    #[test]
    fn json_like_text_parses_or_is_invalid_message(text in json_soup()) {
        check_outcome(&text, false)?;
    }

    #[test]
    fn any_json_value_parses_or_is_invalid_message(value in arb_json(), style in style()) {
        check_outcome(&render(&value, style), true)?;
    }

    #[test]
    fn any_object_with_a_known_type_parses_or_has_ref(
        kind in select(TYPES.to_vec()),
        mut fields in arb_object(),
        style in style(),
    ) {
        fields.insert("type".into(), kind.into());
        let text = render(&Value::Object(fields), style);
        check_outcome(&text, true)?;
        if let Err(e) = parse(&text) {
            prop_assert_eq!(e.reference.map(MessageType::as_str), Some(kind));
        }
    }

    #[test]
    fn near_valid_messages_parse_or_are_invalid_message(
        value in near_valid(),
        style in style(),
    ) {
        check_outcome(&render(&value, style), true)?;
    }

    #[test]
    fn any_traceparent_value_is_kept_or_ignored(
        tp in prop_oneof![traceparent_shaped(), any::<String>()],
        kind in select(vec!["leave", "ping"]),
    ) {
        let parsed = TraceParent::parse(&tp);
        let text = json!({"type": kind, "traceparent": tp}).to_string();
        let inbound = parse(&text).map_err(fail)?;
        prop_assert_eq!(inbound.traceparent, parsed);
    }

    // ---- valid messages parse back to what was sent ----------------------

    #[test]
    fn join_round_trips(
        room in room(),
        display_name in prop::option::of("\\PC{0,64}"),
        resume_token in prop::option::of(chars(0, 64)),
        traceparent in prop::option::of(trace_parent()),
        extra in unknown_fields(),
        style in style(),
    ) {
        let mut m = extra;
        m.insert("type".into(), "join".into());
        m.insert("room".into(), room.clone().into());
        if let Some(name) = &display_name {
            m.insert("displayName".into(), name.clone().into());
        }
        if let Some(token) = &resume_token {
            m.insert("resumeToken".into(), token.clone().into());
        }
        if let Some(tp) = traceparent {
            m.insert("traceparent".into(), tp.to_string().into());
        }
        let text = render(&Value::Object(m), style);
        let inbound = parse(&text).map_err(fail)?;
        prop_assert_eq!(inbound.traceparent, traceparent);
        match inbound.message {
            ClientMessage::Join { room: r, display_name: d, resume_token: t } => {
                prop_assert_eq!(r.as_str(), room.as_str());
                prop_assert_eq!(d, display_name);
                prop_assert_eq!(t.map(|t| t.into_owned()), resume_token);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn leave_round_trips(extra in unknown_fields(), style in style()) {
        let mut m = extra;
        m.insert("type".into(), "leave".into());
        let text = render(&Value::Object(m), style);
        let inbound = parse(&text).map_err(fail)?;
        prop_assert!(matches!(inbound.message, ClientMessage::Leave));
    }

    #[test]
    fn relay_round_trips_with_data_byte_for_byte(
        kind in select(vec![RelayKind::Offer, RelayKind::Answer, RelayKind::IceCandidate]),
        to in peer_id(),
        data in arb_object(),
        data_style in style(),
        style in style(),
        (before, after) in ("[ \t\r\n]{0,3}", "[ \t\r\n]{0,3}"),
        traceparent in prop::option::of(trace_parent()),
        from in any::<String>(),
    ) {
        let data_text = render(&Value::Object(data.clone()), data_style);
        let mut text = String::from("{");
        write_string("type", style, &mut text);
        text.push(':');
        write_string(kind.as_str(), style, &mut text);
        text.push(',');
        write_string("to", style, &mut text);
        text.push(':');
        write_string(&to, style, &mut text);
        if let Some(tp) = traceparent {
            text.push(',');
            write_string("traceparent", style, &mut text);
            text.push(':');
            write_string(&tp.to_string(), style, &mut text);
        }
        text.push(',');
        write_string("data", style, &mut text);
        write!(text, ":{before}{data_text}{after}}}").unwrap();

        let inbound = parse(&text).map_err(fail)?;
        prop_assert_eq!(inbound.traceparent, traceparent);
        let (k, t, d) = match inbound.message {
            ClientMessage::Relay { kind, to, data } => (kind, to, data),
            other => return Err(fail(format!("not a relay: {other:?}"))),
        };
        prop_assert_eq!(k, kind);
        prop_assert_eq!(t.as_ref(), to.as_str());
        prop_assert_eq!(d.get(), data_text.as_str());

        // What the receiver gets: same type, `from`, the same data bytes.
        let tp = traceparent.unwrap_or(TraceParent { trace_id: [7; 16], span_id: [9; 8], sampled: false });
        let frame = relay_frame(k, &from, d, &tp);
        let verbatim = frame.contains(&format!(r#""data":{data_text}"#));
        prop_assert!(verbatim, "data not verbatim in {}", frame);
        // Compared with the data as JSON reads it: serde_json's default float
        // parsing may be one ulp off the generated value.
        let data_read: Value = serde_json::from_str(&data_text).map_err(fail)?;
        let v: Value = serde_json::from_str(&frame).map_err(fail)?;
        prop_assert_eq!(
            v,
            json!({"type": kind.as_str(), "from": from, "data": data_read, "traceparent": tp.to_string()})
        );
    }

    #[test]
    fn ping_round_trips(
        id in prop::option::of(prop_oneof![
            any::<i64>().prop_map(Number::from),
            any::<u64>().prop_map(Number::from),
            millis().prop_map(|f| Number::from_f64(f).unwrap()),
        ]),
        extra in unknown_fields(),
        style in style(),
    ) {
        let mut m = extra;
        m.insert("type".into(), "ping".into());
        if let Some(id) = &id {
            m.insert("id".into(), Value::Number(id.clone()));
        }
        let text = render(&Value::Object(m), style);
        let inbound = parse(&text).map_err(fail)?;
        let got = match inbound.message {
            ClientMessage::Ping { id } => id,
            other => return Err(fail(format!("not a ping: {other:?}"))),
        };
        prop_assert_eq!(&got, &id);
        // The pong echoes it as sent.
        let pong = ServerMessage::Pong { id: got.as_ref(), server_time: "t" }.to_json();
        let v: Value = serde_json::from_str(&pong).map_err(fail)?;
        prop_assert_eq!(v.get("id").cloned(), id.map(Value::Number));
    }

    #[test]
    fn telemetry_round_trips(
        (fields, expected) in telemetry(),
        extra in unknown_fields(),
        style in style(),
    ) {
        let mut m = extra;
        m.extend(fields);
        m.insert("type".into(), "telemetry".into());
        let text = render(&Value::Object(m), style);
        let inbound = parse(&text).map_err(fail)?;
        match inbound.message {
            ClientMessage::Telemetry(t) => prop_assert_eq!(t, expected),
            other => prop_assert!(false, "{:?}", other),
        }
    }

    // ---- field rules -------------------------------------------------------

    #[test]
    fn room_name_accepts_exactly_the_contract_set(
        text in prop_oneof![
            "[A-Za-z0-9_.-]{0,70}",
            "[A-Za-z0-9_.-]{0,10}[^A-Za-z0-9_.-][A-Za-z0-9_.-]{0,10}",
            any::<String>(),
        ],
    ) {
        let valid = (1..=64).contains(&text.chars().count())
            && text.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        match RoomName::parse(&text) {
            Ok(room) => {
                prop_assert!(valid, "accepted {:?}", text);
                prop_assert_eq!(room.as_str(), text.as_str());
                prop_assert_eq!(room.to_string(), text.clone());
            }
            Err(e) => {
                prop_assert!(!valid, "refused {:?}", text);
                prop_assert_eq!(e.code, ErrorCode::InvalidMessage);
            }
        }
        // The same through a join.
        let join = json!({"type": "join", "room": text}).to_string();
        let joined = parse(&join);
        prop_assert_eq!(joined.is_ok(), valid);
        if let Err(e) = joined {
            prop_assert_eq!(e.reference, Some(MessageType::Join));
        }
    }

    #[test]
    fn display_name_accepts_at_most_64_chars_without_controls(text in chars(0, 80)) {
        let valid = text.chars().count() <= 64 && !text.chars().any(char::is_control);
        prop_assert_eq!(validate_display_name(&text).is_ok(), valid);
    }

    #[test]
    fn traceparent_formats_and_parses_back(tp in trace_parent()) {
        let text = tp.to_string();
        prop_assert_eq!(text.len(), 55);
        prop_assert!(text.bytes().all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        prop_assert_eq!(TraceParent::parse(&text), Some(tp));
    }

    #[test]
    fn valid_traceparent_text_parses_and_formats_back(
        tp in trace_parent(),
        flags in any::<u8>(),
        version in 0u8..0xff,
        suffix in prop::option::of("-[a-z0-9-]{0,8}"),
    ) {
        let ids = &tp.to_string()[3..52];
        let mut text = format!("{version:02x}-{ids}-{flags:02x}");
        if version > 0
            && let Some(s) = suffix
        {
            text.push_str(&s);
        }
        let parsed = TraceParent::parse(&text);
        let expected = TraceParent { sampled: flags & 1 == 1, ..tp };
        prop_assert_eq!(parsed, Some(expected));
        if version == 0 && flags <= 1 {
            prop_assert_eq!(expected.to_string(), text);
        }
    }

    #[test]
    fn traceparent_parse_never_panics(
        text in prop_oneof![traceparent_shaped(), any::<String>()],
    ) {
        if let Some(tp) = TraceParent::parse(&text) {
            prop_assert!(text[..55].is_ascii());
            prop_assert_eq!(&text[3..52], &tp.to_string()[3..52]);
        }
    }

    // ---- what the server writes -----------------------------------------

    #[test]
    fn server_messages_are_json_with_their_type(
        variant in 0usize..6,
        (a, b, c) in any::<(String, String, String)>(),
        (n, m, flag) in any::<(u64, u32, bool)>(),
        peers in prop::collection::vec((any::<String>(), prop::option::of(any::<String>())), 0..4),
        name in prop::option::of(any::<String>()),
        reason in select(LeaveReason::ALL.to_vec()),
        id in prop::option::of(any::<i64>().prop_map(Number::from)),
        code in select(ErrorCode::ALL.to_vec()),
        reference in prop::option::of(select(MessageType::ALL.to_vec())),
    ) {
        let peer_list: Vec<PeerInfo> = peers
            .iter()
            .map(|(p, d)| PeerInfo { peer_id: p.as_str().into(), display_name: d.as_deref().map(Into::into) })
            .collect();
        let (message, expected) = match variant {
            0 => (
                ServerMessage::Welcome { peer_id: &a, session_id: &b, resume_token: &c, heartbeat_interval_ms: n, max_room_size: m, ice_servers: None },
                json!({"type": "welcome", "peerId": a, "sessionId": b, "resumeToken": c, "heartbeatIntervalMs": n, "maxRoomSize": m}),
            ),
            1 => (
                ServerMessage::Joined { room: &a, peer_id: &b, peers: &peer_list, resumed: flag },
                json!({
                    "type": "joined", "room": a, "peerId": b, "resumed": flag,
                    "peers": peers.iter().map(|(p, d)| json!({"peerId": p, "displayName": d})).collect::<Vec<_>>(),
                }),
            ),
            2 => (
                ServerMessage::PeerJoined { peer_id: &a, display_name: name.as_deref() },
                json!({"type": "peer-joined", "peerId": a, "displayName": name}),
            ),
            3 => (
                ServerMessage::PeerLeft { peer_id: &a, reason },
                json!({"type": "peer-left", "peerId": a, "reason": reason.as_str()}),
            ),
            4 => {
                let mut e = json!({"type": "pong", "serverTime": b});
                if let Some(id) = &id {
                    e["id"] = Value::Number(id.clone());
                }
                (ServerMessage::Pong { id: id.as_ref(), server_time: &b }, e)
            }
            _ => {
                let mut e = json!({"type": "error", "code": code.as_str(), "message": c});
                if let Some(r) = reference {
                    e["ref"] = r.as_str().into();
                }
                (ServerMessage::error(code, &c, reference), e)
            }
        };
        let text = message.to_json();
        let v: Value = serde_json::from_str(&text).map_err(fail)?;
        prop_assert_eq!(v["type"].as_str(), Some(message.type_name()));
        prop_assert_eq!(v, expected);
    }

    #[test]
    fn relay_frames_of_any_data_are_json(
        kind in select(vec![RelayKind::Offer, RelayKind::Answer, RelayKind::IceCandidate]),
        from in any::<String>(),
        data in arb_json(),
        data_style in style(),
        tp in trace_parent(),
    ) {
        let data_text = render(&data, data_style);
        let raw: &RawValue = serde_json::from_str(&data_text).map_err(fail)?;
        let frame = relay_frame(kind, &from, raw, &tp);
        let verbatim = frame.contains(&format!(r#""data":{data_text},"#));
        prop_assert!(verbatim, "data not verbatim in {}", frame);
        let data_read: Value = serde_json::from_str(&data_text).map_err(fail)?;
        let v: Value = serde_json::from_str(&frame).map_err(fail)?;
        prop_assert_eq!(v, json!({"type": kind.as_str(), "from": from, "data": data_read, "traceparent": tp.to_string()}));
    }
}

/// Found by the `parse_message` fuzz target: `data` is never looked into, so
/// an escape the JSON grammar allows but strict parsers refuse (a lone
/// surrogate) is relayed as it came, like everything else in `data`.
#[test]
fn lone_surrogate_escapes_in_data_are_relayed_as_they_came() {
    let text = r#"{"type":"offer","to":"p","data":{"sdp\ude00":"\ud83d"}}"#;
    let inbound = parse(text).unwrap();
    let ClientMessage::Relay { kind, to, data } = inbound.message else {
        panic!("not a relay");
    };
    assert_eq!(data.get(), r#"{"sdp\ude00":"\ud83d"}"#);
    let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    let frame = relay_frame(kind, &to, data, &tp);
    assert!(
        frame.contains(r#""data":{"sdp\ude00":"\ud83d"}"#),
        "{frame}"
    );
}
