//! Strategies: arbitrary JSON and text, valid messages of every type,
//! near-valid ones, and the field values of the contract.

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value};

use super::super::*;
use super::{FIELDS, TYPES};

/// Any JSON value, with objects whose keys are often the contract's field
/// names and strings that are often message types.
pub(super) fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        select(TYPES.to_vec()).prop_map(Value::from),
        "[A-Za-z0-9_.:-]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

pub(super) fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(FIELDS.to_vec()).prop_map(String::from),
        1 => any::<String>(),
    ]
}

pub(super) fn arb_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((key(), arb_json()), 0..6).prop_map(|kv| kv.into_iter().collect())
}

/// Fields a newer client might send, which this server must ignore.
pub(super) fn unknown_fields() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec(("x[A-Za-z]{0,8}", arb_json()), 0..3)
        .prop_map(|kv| kv.into_iter().collect())
}

/// Text that looks a lot like JSON messages, and often is one.
pub(super) fn json_soup() -> impl Strategy<Value = String> {
    const TOKENS: [&str; 32] = [
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        " ",
        "\"",
        "\\",
        "\"type\"",
        "\"join\"",
        "\"offer\"",
        "\"ping\"",
        "\"telemetry\"",
        "\"room\"",
        "\"to\"",
        "\"data\"",
        "\"id\"",
        "\"traceparent\"",
        "\"event\"",
        "\"ms\"",
        "\"lobby\"",
        "\"\\u00e9\\ud83d\\ude00\"",
        "\"\\ud800\"",
        "1",
        "-0.5e3",
        "1e999",
        "18446744073709551616",
        "null",
        "true",
        "\"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\"",
        "\u{e9}",
    ];
    prop::collection::vec(select(TOKENS.to_vec()), 0..40).prop_map(|t| t.concat())
}

pub(super) fn room() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.-]{1,64}"
}

/// A string of at most `max_chars` characters of any kind.
pub(super) fn chars(min: usize, max_chars: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), min..=max_chars).prop_map(String::from_iter)
}

/// A peer id as `to` and `peer` take it: 1 to 64 bytes of anything.
pub(super) fn peer_id() -> impl Strategy<Value = String> {
    prop_oneof!["p_[0-9A-Z]{26}", chars(1, 16)]
}

pub(super) fn short_code() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.:-]{1,64}"
}

pub(super) fn trace_parent() -> impl Strategy<Value = TraceParent> {
    (any::<[u8; 16]>(), any::<[u8; 8]>(), any::<bool>())
        .prop_filter("all-zero ids are invalid", |(t, s, _)| {
            *t != [0; 16] && *s != [0; 8]
        })
        .prop_map(|(trace_id, span_id, sampled)| TraceParent {
            trace_id,
            span_id,
            sampled,
        })
}

/// Milliseconds as the contract takes them (0 to one hour), exactly
/// representable through a JSON round trip: thousandths of a millisecond.
pub(super) fn millis() -> impl Strategy<Value = f64> {
    (0u64..=3_600_000_000).prop_map(|n| n as f64 / 1000.0)
}

pub(super) fn millis_json(ms: f64, as_integer: bool) -> Value {
    if as_integer && ms.fract() == 0.0 {
        Value::from(ms as u64)
    } else {
        Value::from(ms)
    }
}

/// A telemetry message and the event it must parse to.
pub(super) fn telemetry() -> impl Strategy<Value = (Map<String, Value>, ClientTelemetry)> {
    let peer_connection = (
        peer_id(),
        any::<bool>(),
        prop::option::of(millis()),
        prop::option::of(short_code()),
        any::<bool>(),
        prop::option::of(select(CandidatePath::ALL.to_vec())),
    )
        .prop_map(|(peer, connected, ms, reason, int, path)| {
            // A connected peer must say how long it took.
            let ms = if connected { ms.or(Some(1.0)) } else { ms };
            let mut m = Map::new();
            m.insert("event".into(), "peer-connection".into());
            m.insert("peer".into(), peer.clone().into());
            let outcome = if connected {
                PeerOutcome::Connected
            } else {
                PeerOutcome::Failed
            };
            m.insert("outcome".into(), outcome.as_str().into());
            if let Some(ms) = ms {
                m.insert("ms".into(), millis_json(ms, int));
            }
            if let Some(reason) = &reason {
                m.insert("reason".into(), reason.clone().into());
            }
            if let Some(path) = path {
                m.insert("path".into(), path.as_str().into());
            }
            let t = ClientTelemetry::PeerConnection {
                peer,
                outcome,
                ms,
                reason,
                path,
            };
            (m, t)
        });
    let reconnect = (
        1u32..,
        any::<bool>(),
        prop::option::of(millis()),
        any::<bool>(),
    )
        .prop_map(|(attempt, success, downtime_ms, int)| {
            let outcome = if success {
                ReconnectOutcome::Success
            } else {
                ReconnectOutcome::Failure
            };
            let mut m = Map::new();
            m.insert("event".into(), "reconnect".into());
            m.insert("attempt".into(), attempt.into());
            m.insert("outcome".into(), outcome.as_str().into());
            if let Some(ms) = downtime_ms {
                m.insert("downtimeMs".into(), millis_json(ms, int));
            }
            let t = ClientTelemetry::Reconnect {
                attempt,
                outcome,
                downtime_ms,
            };
            (m, t)
        });
    let timing = (any::<bool>(), millis(), any::<bool>()).prop_map(|(rtt, ms, int)| {
        let mut m = Map::new();
        let (event, t) = if rtt {
            ("signaling-rtt", ClientTelemetry::SignalingRtt { ms })
        } else {
            ("connect-time", ClientTelemetry::ConnectTime { ms })
        };
        m.insert("event".into(), event.into());
        m.insert("ms".into(), millis_json(ms, int));
        (m, t)
    });
    let client_error =
        (short_code(), prop::option::of(chars(0, 700))).prop_map(|(code, message)| {
            let mut m = Map::new();
            m.insert("event".into(), "client-error".into());
            m.insert("code".into(), code.clone().into());
            if let Some(message) = &message {
                m.insert("message".into(), message.clone().into());
            }
            let t = ClientTelemetry::ClientError {
                code,
                // Longer messages are cut, not refused.
                message: message.map(|s| s.chars().take(512).collect()),
            };
            (m, t)
        });
    prop_oneof![peer_connection, reconnect, timing, client_error]
}

/// A valid message of any type, as a JSON object.
pub(super) fn valid_message() -> impl Strategy<Value = Map<String, Value>> {
    let join = (
        room(),
        prop::option::of(
            chars(0, 64).prop_filter("no controls", |s| !s.chars().any(char::is_control)),
        ),
        prop::option::of(chars(0, 64)),
    )
        .prop_map(|(room, name, token)| {
            let mut m = Map::new();
            m.insert("type".into(), "join".into());
            m.insert("room".into(), room.into());
            if let Some(name) = name {
                m.insert("displayName".into(), name.into());
            }
            if let Some(token) = token {
                m.insert("resumeToken".into(), token.into());
            }
            m
        });
    let relay = (
        select(vec!["offer", "answer", "ice-candidate"]),
        peer_id(),
        arb_object(),
    )
        .prop_map(|(kind, to, data)| {
            let mut m = Map::new();
            m.insert("type".into(), kind.into());
            m.insert("to".into(), to.into());
            m.insert("data".into(), Value::Object(data));
            m
        });
    let ping = prop::option::of(any::<i64>()).prop_map(|id| {
        let mut m = Map::new();
        m.insert("type".into(), "ping".into());
        if let Some(id) = id {
            m.insert("id".into(), id.into());
        }
        m
    });
    let telemetry = telemetry().prop_map(|(mut m, _)| {
        m.insert("type".into(), "telemetry".into());
        m
    });
    let leave = Just(Map::from_iter([("type".to_string(), Value::from("leave"))]));
    prop_oneof![join, relay, ping, telemetry, leave]
}

/// A valid message with one field taken out or set to anything.
pub(super) fn near_valid() -> impl Strategy<Value = Value> {
    (
        valid_message(),
        select(FIELDS.to_vec()),
        prop::option::of(arb_json()),
    )
        .prop_map(|(mut m, field, value)| {
            match value {
                Some(v) => m.insert(field.into(), v),
                None => m.remove(field),
            };
            Value::Object(m)
        })
}

/// Strings with the dashes of a `traceparent` where they belong and anything
/// (often non-ASCII) between them, each part of exactly the right byte length.
pub(super) fn traceparent_shaped() -> impl Strategy<Value = String> {
    fn part(bytes: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                3 => select("0123456789abcdefABCDEF-".chars().collect::<Vec<_>>()),
                1 => any::<char>(),
            ],
            0..=bytes,
        )
        .prop_map(move |cs| {
            let mut s = String::new();
            for c in cs {
                if s.len() + c.len_utf8() <= bytes {
                    s.push(c);
                }
            }
            while s.len() < bytes {
                s.push('0');
            }
            s
        })
    }
    (
        part(2),
        part(32),
        part(16),
        part(2),
        prop::option::of(chars(0, 8)),
    )
        .prop_map(|(v, t, s, f, rest)| {
            let mut text = format!("{v}-{t}-{s}-{f}");
            if let Some(rest) = rest {
                text.push_str(&rest);
            }
            text
        })
}
