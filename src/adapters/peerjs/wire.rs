//! peerjs-server 1.0's WebSocket messages as a [`Dialect`] (read from the
//! `peer` and `peerjs` npm packages): JSON objects with `type`, and for
//! relays `dst` and `payload`. The server answers a claim with `OPEN` (or
//! `ID-TAKEN`, or `ERROR` for anything else wrong), delivers relays as
//! `{"type","src","dst","payload"}` with `src` the sender's own id (never
//! what the client wrote), and tells a sender `EXPIRE` when what it sent an
//! id that never connected waited in vain. `HEARTBEAT` keeps nothing but
//! the rate limit busy; peers leaving are not announced (PeerJS does not).

use std::borrow::Cow;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::protocol::{
    ClientMessage, ErrorCode, Inbound, LeaveReason, OutKind, PeerInfo, Protocol, ProtocolError,
    RelayKind, RoomName,
};
use crate::signaling::{Answer, Dialect, Frame, Relay, RoomKind, UnknownPeer, Welcome};

/// PeerJS's protocol; messages for an id that is not connected wait
/// `expire` for it.
pub struct PeerJs {
    pub expire: Duration,
}

/// What a client sends (its other fields, `src` among them, are ignored).
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    dst: Option<Cow<'a, str>>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct Notice<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    src: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<Payload<'a>>,
}

#[derive(Serialize)]
struct Payload<'a> {
    msg: &'a str,
}

fn notice(out: OutKind, notice: &Notice<'_>) -> Frame {
    Frame::new(
        out,
        serde_json::to_string(notice).expect("PeerJS messages serialise"),
    )
}

/// Whether `id` is an id the PeerJS client itself accepts (its
/// `validateId`: letters and digits, single spaces, `_` or `-` between
/// them), at most 64 characters.
pub fn valid_id(id: &str) -> bool {
    id.len() <= 64
        && id
            .split([' ', '_', '-'])
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric()))
}

impl Dialect for PeerJs {
    fn protocol(&self) -> Protocol {
        Protocol::Peerjs
    }

    fn welcome(&self, _: &Welcome<'_>) -> Option<Frame> {
        // `OPEN` comes once the id is claimed (`joined`).
        None
    }

    fn parse<'a>(&self, text: &'a str) -> Result<Option<Inbound<'a>>, ProtocolError> {
        let m: Message<'a> = serde_json::from_str(text)
            .map_err(|e| ProtocolError::invalid(format!("not a PeerJS message: {e}")))?;
        let kind = match m.kind.as_ref() {
            "OFFER" => RelayKind::Offer,
            "ANSWER" => RelayKind::Answer,
            "CANDIDATE" => RelayKind::IceCandidate,
            "HEARTBEAT" | "EXPIRE" => return Ok(None),
            // A leave without `dst` leaves; one to a peer is not relayed.
            "LEAVE" if m.dst.is_none() => {
                return Ok(Some(Inbound {
                    message: ClientMessage::Leave,
                    traceparent: None,
                }));
            }
            "LEAVE" => return Ok(None),
            other => {
                let shown: String = other.chars().take(32).collect();
                return Err(ProtocolError::invalid(format!("unknown type {shown:?}")));
            }
        };
        let to = m
            .dst
            .filter(|dst| valid_id(dst))
            .ok_or_else(|| ProtocolError::invalid("dst must be a peer id"))?;
        let data = m
            .payload
            .ok_or_else(|| ProtocolError::invalid("missing field payload"))?;
        Ok(Some(Inbound {
            message: ClientMessage::Relay { kind, to, data },
            traceparent: None,
        }))
    }

    fn relay(&self, r: &Relay<'_>) -> Frame {
        let (kind, out) = match r.kind {
            RelayKind::Offer => ("OFFER", OutKind::Offer),
            RelayKind::Answer => ("ANSWER", OutKind::Answer),
            RelayKind::IceCandidate => ("CANDIDATE", OutKind::IceCandidate),
        };
        let quote = |s: &str| serde_json::to_string(s).expect("a string serialises");
        let data = r.data.get();
        let mut text = String::with_capacity(data.len() + r.from.len() + r.to.len() + 48);
        text.push_str(r#"{"type":""#);
        text.push_str(kind);
        text.push_str(r#"","src":"#);
        text.push_str(&quote(r.from));
        text.push_str(r#","dst":"#);
        text.push_str(&quote(r.to));
        text.push_str(r#","payload":"#);
        text.push_str(data);
        text.push('}');
        Frame::new(out, text)
    }

    fn joined(&self, _: &RoomName, _: &str, _: &[PeerInfo], _: bool) -> Option<Frame> {
        let open = Notice {
            kind: "OPEN",
            src: None,
            dst: None,
            payload: None,
        };
        Some(notice(OutKind::Welcome, &open))
    }

    fn peer_joined(&self, _: &str, _: Option<&str>) -> Option<Frame> {
        None
    }

    fn peer_left(&self, _: &str, _: LeaveReason) -> Option<Frame> {
        None
    }

    fn error(&self, err: &ProtocolError) -> Answer {
        let kind = match err.code {
            ErrorCode::IdTaken => "ID-TAKEN",
            _ => "ERROR",
        };
        let error = Notice {
            kind,
            src: None,
            dst: None,
            payload: Some(Payload { msg: &err.message }),
        };
        Answer::Send(notice(OutKind::Error, &error))
    }

    fn room_kind(&self) -> RoomKind {
        RoomKind::Namespace
    }

    fn unknown_peer(&self) -> UnknownPeer {
        UnknownPeer::Queue(self.expire)
    }

    fn expired(&self, missing: &str, to: &str) -> Option<Frame> {
        let expire = Notice {
            kind: "EXPIRE",
            src: Some(missing),
            dst: Some(to),
            payload: None,
        };
        Some(notice(OutKind::Expire, &expire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TraceParent;

    const P: PeerJs = PeerJs {
        expire: Duration::from_secs(5),
    };

    #[test]
    fn ids_are_what_the_peerjs_client_accepts() {
        for good in [
            "alice",
            "a1",
            "a b",
            "a_b-c",
            "dc5fcbe3-e3f0-462d-acb1-aee49272a6ec",
        ] {
            assert!(valid_id(good), "{good}");
        }
        for bad in ["", " a", "a ", "a  b", "a/b", "é", &"a".repeat(65)] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn messages_are_read_as_the_peerjs_client_sends_them() {
        let offer = r#"{"type":"OFFER","payload":{"sdp":{"type":"offer","sdp":"v=0"},"type":"data","connectionId":"dc_1"},"dst":"bob","src":"forged"}"#;
        match P.parse(offer).unwrap().unwrap().message {
            ClientMessage::Relay { kind, to, data } => {
                assert_eq!(kind, RelayKind::Offer);
                assert_eq!(to, "bob");
                assert!(data.get().starts_with(r#"{"sdp""#));
            }
            other => panic!("{other:?}"),
        }
        assert!(P.parse(r#"{"type":"HEARTBEAT"}"#).unwrap().is_none());
        assert!(matches!(
            P.parse(r#"{"type":"LEAVE"}"#).unwrap().unwrap().message,
            ClientMessage::Leave
        ));
        for bad in [
            "nope",
            r#"{"payload":{}}"#,
            r#"{"type":"DANCE"}"#,
            r#"{"type":"OFFER","payload":{}}"#,
            r#"{"type":"OFFER","dst":"bob"}"#,
            r#"{"type":"OFFER","dst":"b/b","payload":{}}"#,
            r#"{"type":7}"#,
        ] {
            assert_eq!(
                P.parse(bad).err().unwrap().code,
                ErrorCode::InvalidMessage,
                "{bad}"
            );
        }
    }

    #[test]
    fn what_the_server_sends_is_what_peerjs_server_sends() {
        let text = |f: Frame| f.text.as_str().to_string();
        let name = RoomName::parse("peerjs").unwrap();
        assert_eq!(
            text(P.joined(&name, "a", &[], false).unwrap()),
            r#"{"type":"OPEN"}"#
        );
        assert_eq!(
            text(P.expired("carol", "alice").unwrap()),
            r#"{"type":"EXPIRE","src":"carol","dst":"alice"}"#
        );
        let Answer::Send(taken) = P.error(&ProtocolError::new(ErrorCode::IdTaken, "ID is taken"))
        else {
            panic!("ID-TAKEN is a message");
        };
        assert_eq!(
            text(taken),
            r#"{"type":"ID-TAKEN","payload":{"msg":"ID is taken"}}"#
        );
        let data: &RawValue = serde_json::from_str(r#"{"candidate":{"candidate":"c"}}"#).unwrap();
        let tp =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let relay = P.relay(&Relay {
            kind: RelayKind::IceCandidate,
            from: "alice",
            to: "bob",
            data,
            traceparent: &tp,
        });
        assert_eq!(
            text(relay),
            r#"{"type":"CANDIDATE","src":"alice","dst":"bob","payload":{"candidate":{"candidate":"c"}}}"#
        );
    }
}
