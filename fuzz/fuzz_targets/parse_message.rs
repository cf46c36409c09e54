//! Feeds any bytes (as UTF-8 text, when they are) to the protocol parser, and
//! everything it accepts or refuses to the code that writes the answer. Any
//! panic, or an outcome the contract does not allow, is a crash.

#![no_main]

use chatsubo::protocol::{
    ClientMessage, ErrorCode, ServerMessage, TraceParent, parse, relay_frame,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use serde_json::value::RawValue;

#[derive(serde::Deserialize)]
struct RelayOut<'a> {
    #[serde(rename = "type")]
    kind: String,
    from: String,
    #[serde(borrow)]
    data: &'a RawValue,
    traceparent: String,
}

fuzz_target!(|data: &[u8]| {
    // WebSocket text frames are UTF-8; the server drops anything else before
    // it reaches the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text) {
        Ok(inbound) => {
            if let Some(tp) = &inbound.traceparent {
                assert_eq!(TraceParent::parse(&tp.to_string()).as_ref(), Some(tp));
            }
            let (out, kind) = match &inbound.message {
                ClientMessage::Relay { kind, to, data } => {
                    let tp = inbound.traceparent.unwrap_or(TraceParent {
                        trace_id: [1; 16],
                        span_id: [2; 8],
                        sampled: true,
                    });
                    let frame = relay_frame(*kind, to, data, &tp);
                    // `data` is never looked into, so it may hold what the JSON
                    // grammar allows but strict parsers refuse (a lone
                    // surrogate escape): read the frame with `data` raw.
                    let out: RelayOut<'_> =
                        serde_json::from_str(&frame).expect("relay frames are JSON");
                    assert_eq!(out.kind, kind.as_str());
                    assert_eq!(out.from, to.as_ref());
                    assert_eq!(out.data.get(), data.get(), "data changed");
                    assert_eq!(out.traceparent, tp.to_string());
                    return;
                }
                ClientMessage::Join {
                    room,
                    display_name,
                    resume_token,
                } => {
                    let peers = [chatsubo::protocol::PeerInfo {
                        peer_id: room.as_str().into(),
                        display_name: display_name.as_deref().map(Into::into),
                    }];
                    let joined = ServerMessage::Joined {
                        room: room.as_str(),
                        peer_id: resume_token.as_deref().unwrap_or("p"),
                        peers: &peers,
                        resumed: resume_token.is_some(),
                    };
                    check_json(&joined.to_json(), "joined");
                    let peer_joined = ServerMessage::PeerJoined {
                        peer_id: room.as_str(),
                        display_name: display_name.as_deref(),
                    };
                    (peer_joined.to_json(), "peer-joined")
                }
                ClientMessage::Ping { id } => {
                    let pong = ServerMessage::Pong {
                        id: id.as_ref(),
                        server_time: "2026-01-01T00:00:00.000Z",
                    };
                    let v = check_json(&pong.to_json(), "pong");
                    assert_eq!(v.get("id").is_some(), id.is_some());
                    (pong.to_json(), "pong")
                }
                ClientMessage::Telemetry(t) => {
                    let _ = (t.event_name(), t.needs_room());
                    return;
                }
                ClientMessage::Leave => return,
            };
            check_json(&out, kind);
        }
        Err(e) => {
            assert_eq!(e.code, ErrorCode::InvalidMessage, "{e}");
            let frame = ServerMessage::error(e.code, &e.message, e.reference).to_json();
            let v = check_json(&frame, "error");
            assert_eq!(v["message"].as_str(), Some(e.message.as_str()));
        }
    }
});

fn check_json(frame: &str, kind: &str) -> Value {
    let v: Value = serde_json::from_str(frame).expect("server frames are JSON");
    assert_eq!(v["type"].as_str(), Some(kind), "{frame}");
    v
}
