//! Server-to-client messages, serialised once and shared by every receiver.

use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

use super::{ErrorCode, MessageType, RelayKind, TraceParent};

/// Why a peer left a room, as `peer-left.reason` says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaveReason {
    /// A `leave`, or a close the client started.
    Left,
    /// The connection dropped and the resume grace ended.
    Disconnected,
    /// The peer stopped answering pings and the resume grace ended.
    Timeout,
    /// The server removed the peer (abuse, or too slow to keep up).
    Kicked,
}

impl LeaveReason {
    pub const ALL: [LeaveReason; 4] = [
        LeaveReason::Left,
        LeaveReason::Disconnected,
        LeaveReason::Timeout,
        LeaveReason::Kicked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LeaveReason::Left => "left",
            LeaveReason::Disconnected => "disconnected",
            LeaveReason::Timeout => "timeout",
            LeaveReason::Kicked => "kicked",
        }
    }
}

/// The `type` of a server-to-client frame, also the `type` label of
/// outbound message metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutKind {
    Welcome,
    Joined,
    PeerJoined,
    PeerLeft,
    Offer,
    Answer,
    IceCandidate,
    Pong,
    IceServers,
    /// PeerJS: what was sent to a peer that never came expired.
    Expire,
    Error,
}

impl OutKind {
    pub const ALL: [OutKind; 11] = [
        OutKind::Welcome,
        OutKind::Joined,
        OutKind::PeerJoined,
        OutKind::PeerLeft,
        OutKind::Offer,
        OutKind::Answer,
        OutKind::IceCandidate,
        OutKind::Pong,
        OutKind::IceServers,
        OutKind::Expire,
        OutKind::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OutKind::Welcome => "welcome",
            OutKind::Joined => "joined",
            OutKind::PeerJoined => "peer-joined",
            OutKind::PeerLeft => "peer-left",
            OutKind::Offer => "offer",
            OutKind::Answer => "answer",
            OutKind::IceCandidate => "ice-candidate",
            OutKind::Pong => "pong",
            OutKind::IceServers => "ice-servers",
            OutKind::Expire => "expire",
            OutKind::Error => "error",
        }
    }
}

/// A member of a room as `joined.peers` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerInfo {
    pub peer_id: Arc<str>,
    pub display_name: Option<Arc<str>>,
}

/// Every message the server sends except relays (see [`relay_frame`]).
#[derive(Debug, Serialize)]
#[serde(
    tag = "type",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum ServerMessage<'a> {
    Welcome {
        peer_id: &'a str,
        session_id: &'a str,
        resume_token: &'a str,
        heartbeat_interval_ms: u64,
        max_room_size: u32,
        /// `RTCIceServer`s, when STUN or TURN urls are configured.
        #[serde(skip_serializing_if = "Option::is_none")]
        ice_servers: Option<&'a RawValue>,
    },
    Joined {
        room: &'a str,
        peer_id: &'a str,
        peers: &'a [PeerInfo],
        resumed: bool,
    },
    PeerJoined {
        peer_id: &'a str,
        display_name: Option<&'a str>,
    },
    PeerLeft {
        peer_id: &'a str,
        reason: LeaveReason,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a serde_json::Number>,
        server_time: &'a str,
    },
    /// The answer to `ice-servers`: fresh credentials (`[]` when none).
    IceServers { ice_servers: &'a RawValue },
    Error {
        code: ErrorCode,
        message: &'a str,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'static str>,
    },
}

impl<'a> ServerMessage<'a> {
    /// The wire `type`, also the metrics label of outbound messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            ServerMessage::Welcome { .. } => "welcome",
            ServerMessage::Joined { .. } => "joined",
            ServerMessage::PeerJoined { .. } => "peer-joined",
            ServerMessage::PeerLeft { .. } => "peer-left",
            ServerMessage::Pong { .. } => "pong",
            ServerMessage::IceServers { .. } => "ice-servers",
            ServerMessage::Error { .. } => "error",
        }
    }

    pub fn to_json(&self) -> String {
        // Most messages fit in the first allocation, instead of growing
        // through six (8, 16, … 256 bytes) as an empty buffer would.
        let mut out = Vec::with_capacity(256);
        serde_json::to_writer(&mut out, self).expect("server messages always serialise");
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }

    /// An `error` message for a protocol error.
    pub fn error(code: ErrorCode, message: &'a str, reference: Option<MessageType>) -> Self {
        ServerMessage::Error {
            code,
            message,
            reference: reference.map(MessageType::as_str),
        }
    }
}

#[derive(Serialize)]
struct RelayOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    from: &'a str,
    data: &'a RawValue,
    traceparent: &'a str,
}

/// The frame a relay delivers: the same type, `to` replaced by `from`, `data`
/// byte for byte as it came, and the relay's own trace context.
pub fn relay_frame(
    kind: RelayKind,
    from: &str,
    data: &RawValue,
    traceparent: &TraceParent,
) -> String {
    let traceparent = traceparent.encode();
    let traceparent = std::str::from_utf8(&traceparent).expect("hex digits are ASCII");
    // Sized once: `data` is most of the frame, the rest is the keys, the
    // kind, the sender's id and the 55-byte traceparent.
    let capacity = data.get().len() + from.len() + 128;
    if !needs_escape(from) {
        // What serde_json writes for `RelayOut`, without its byte-by-byte
        // escaping pass over seven strings that have nothing to escape: the
        // keys, the kind and the traceparent are fixed ASCII, and `from` was
        // just checked.
        let mut out = String::with_capacity(capacity);
        for part in [
            r#"{"type":""#,
            kind.as_str(),
            r#"","from":""#,
            from,
            r#"","data":"#,
            data.get(),
            r#","traceparent":""#,
            traceparent,
            r#""}"#,
        ] {
            out.push_str(part);
        }
        return out;
    }
    let relay = RelayOut {
        kind: kind.as_str(),
        from,
        data,
        traceparent,
    };
    let mut out = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut out, &relay).expect("relay frames always serialise");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// Whether serde_json would escape anything in `s` (control characters,
/// `"` and `\`; everything else, non-ASCII too, it writes as it is).
fn needs_escape(s: &str) -> bool {
    s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_frame_is_what_serde_json_writes_for_any_sender() {
        let data = RawValue::from_string(r#"{"sdp":"v=0\\r\\n","n":[1,2]}"#.into()).unwrap();
        let tp = TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
            .expect("a valid traceparent");
        for from in [
            "p_01J",
            "3f1e-uuid",
            "héllo",
            "a\"b",
            "back\\slash",
            "tab\tnl\n",
            "",
        ] {
            let expected = serde_json::to_string(&RelayOut {
                kind: RelayKind::Offer.as_str(),
                from,
                data: &data,
                traceparent: std::str::from_utf8(&tp.encode()).unwrap(),
            })
            .unwrap();
            assert_eq!(
                relay_frame(RelayKind::Offer, from, &data, &tp),
                expected,
                "{from:?}"
            );
        }
    }

    #[test]
    fn shapes_match_the_contract() {
        let w = ServerMessage::Welcome {
            peer_id: "p_1",
            session_id: "01J",
            resume_token: "tok",
            heartbeat_interval_ms: 15000,
            max_room_size: 10,
            ice_servers: None,
        };
        assert_eq!(
            w.to_json(),
            r#"{"type":"welcome","peerId":"p_1","sessionId":"01J","resumeToken":"tok","heartbeatIntervalMs":15000,"maxRoomSize":10}"#
        );
        let peers = [PeerInfo {
            peer_id: "p_a1".into(),
            display_name: Some("ann".into()),
        }];
        assert_eq!(
            ServerMessage::Joined {
                room: "lobby",
                peer_id: "p_2",
                peers: &peers,
                resumed: false
            }
            .to_json(),
            r#"{"type":"joined","room":"lobby","peerId":"p_2","peers":[{"peerId":"p_a1","displayName":"ann"}],"resumed":false}"#
        );
        assert_eq!(
            ServerMessage::PeerLeft {
                peer_id: "p_b2",
                reason: LeaveReason::Left
            }
            .to_json(),
            r#"{"type":"peer-left","peerId":"p_b2","reason":"left"}"#
        );
        assert_eq!(
            ServerMessage::error(ErrorCode::RoomFull, "full", Some(MessageType::Join)).to_json(),
            r#"{"type":"error","code":"ROOM_FULL","message":"full","ref":"join"}"#
        );
        assert_eq!(
            ServerMessage::error(ErrorCode::InvalidMessage, "bad", None).to_json(),
            r#"{"type":"error","code":"INVALID_MESSAGE","message":"bad"}"#
        );
    }

    #[test]
    fn relay_replaces_to_with_from() {
        let data: &RawValue = serde_json::from_str(r#"{"sdp":"x"}"#).unwrap();
        let tp =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(
            relay_frame(RelayKind::IceCandidate, "p_a", data, &tp),
            r#"{"type":"ice-candidate","from":"p_a","data":{"sdp":"x"},"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}"#
        );
    }
}
