//! matchbox_server 0.15's wire format (crates `matchbox_protocol` and
//! `matchbox_signaling`) as a [`Dialect`]: serde's externally tagged enums
//! in text frames. The server sends `{"IdAssigned":"<uuid>"}` first, then
//! `{"NewPeer":"<uuid>"}` to the peers already in the room (they make the
//! offer), `{"PeerLeft":"<uuid>"}`, and `{"Signal":{"sender":…,"data":…}}`;
//! the client sends `{"Signal":{"receiver":…,"data":…}}` and `"KeepAlive"`.
//! `data` is a `PeerSignal`: `{"Offer":sdp}`, `{"Answer":sdp}` or
//! `{"IceCandidate":json}`, relayed as it came.
//!
//! matchbox has no error message: a bad frame closes the connection with
//! 1008 and the reason. It has no resume either: a peer that drops leaves
//! at once.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::protocol::{
    ClientMessage, ErrorCode, Inbound, LeaveReason, OutKind, PeerInfo, Protocol, ProtocolError,
    RelayKind, RoomName,
};
use crate::signaling::{Answer, Dialect, Frame, Relay, Welcome};

/// matchbox_server's protocol.
pub struct Matchbox;

/// What a client sends.
#[derive(Deserialize)]
enum Request<'a> {
    Signal {
        #[serde(borrow)]
        receiver: Cow<'a, str>,
        #[serde(borrow)]
        data: &'a RawValue,
    },
    KeepAlive,
}

/// What the server sends (but relays, which are written by hand: their
/// `data` is passed through as it came).
#[derive(Serialize)]
enum Event<'a> {
    IdAssigned(&'a str),
    NewPeer(&'a str),
    PeerLeft(&'a str),
}

fn event(kind: OutKind, event: &Event<'_>) -> Frame {
    Frame::new(
        kind,
        serde_json::to_string(event).expect("matchbox events serialise"),
    )
}

/// The kind of a `PeerSignal`: an object with exactly one of `Offer`,
/// `Answer` or `IceCandidate`, whose value is a string.
fn signal_kind(data: &RawValue) -> Option<RelayKind> {
    let signal: std::collections::HashMap<&str, &RawValue> =
        serde_json::from_str(data.get()).ok()?;
    let [(name, value)] = signal.into_iter().collect::<Vec<_>>()[..] else {
        return None;
    };
    serde_json::from_str::<Cow<'_, str>>(value.get()).ok()?;
    Some(match name {
        "Offer" => RelayKind::Offer,
        "Answer" => RelayKind::Answer,
        "IceCandidate" => RelayKind::IceCandidate,
        _ => return None,
    })
}

impl Dialect for Matchbox {
    fn protocol(&self) -> Protocol {
        Protocol::Matchbox
    }

    fn welcome(&self, w: &Welcome<'_>) -> Option<Frame> {
        Some(event(OutKind::Welcome, &Event::IdAssigned(w.peer_id)))
    }

    fn parse<'a>(&self, text: &'a str) -> Result<Option<Inbound<'a>>, ProtocolError> {
        let request: Request<'a> = serde_json::from_str(text)
            .map_err(|e| ProtocolError::invalid(format!("not a matchbox request: {e}")))?;
        let Request::Signal { receiver, data } = request else {
            return Ok(None);
        };
        if uuid::Uuid::parse_str(&receiver).is_err() {
            return Err(ProtocolError::invalid("receiver must be a peer's UUID"));
        }
        let kind = signal_kind(data).ok_or_else(|| {
            ProtocolError::invalid("data must be a PeerSignal: Offer, Answer or IceCandidate")
        })?;
        Ok(Some(Inbound {
            message: ClientMessage::Relay {
                kind,
                to: receiver,
                data,
            },
            traceparent: None,
        }))
    }

    fn relay(&self, r: &Relay<'_>) -> Frame {
        let kind = match r.kind {
            RelayKind::Offer => OutKind::Offer,
            RelayKind::Answer => OutKind::Answer,
            RelayKind::IceCandidate => OutKind::IceCandidate,
        };
        let data = r.data.get();
        let mut text = String::with_capacity(data.len() + r.from.len() + 40);
        text.push_str(r#"{"Signal":{"sender":"#);
        text.push_str(&serde_json::to_string(r.from).expect("a string serialises"));
        text.push_str(r#","data":"#);
        text.push_str(data);
        text.push_str("}}");
        Frame::new(kind, text)
    }

    fn joined(&self, _: &RoomName, _: &str, _: &[PeerInfo], _: bool) -> Option<Frame> {
        // The newcomer hears of nobody: the peers already there offer.
        None
    }

    fn peer_joined(&self, peer_id: &str, _display_name: Option<&str>) -> Option<Frame> {
        Some(event(OutKind::PeerJoined, &Event::NewPeer(peer_id)))
    }

    fn peer_left(&self, peer_id: &str, _reason: LeaveReason) -> Option<Frame> {
        Some(event(OutKind::PeerLeft, &Event::PeerLeft(peer_id)))
    }

    fn error(&self, err: &ProtocolError) -> Answer {
        match err.code {
            // A signal to a peer that just left: matchbox ignores it. Over the
            // rate, the message is dropped and reading pauses; closing is for
            // repeated abuse (1008 all the same).
            ErrorCode::UnknownPeer | ErrorCode::RateLimited => Answer::Silent,
            _ => Answer::Close(format!("{}: {}", err.code.as_str(), err.message)),
        }
    }

    fn keeps_place(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TraceParent;

    const A: &str = "a83abd4f-4038-48b0-8845-1b27daa3c80f";

    #[test]
    fn requests_are_read_as_matchbox_socket_sends_them() {
        assert!(Matchbox.parse(r#""KeepAlive""#).unwrap().is_none());
        let text = format!(r#"{{"Signal":{{"receiver":"{A}","data":{{"Offer":"v=0\r\n"}}}}}}"#);
        let inbound = Matchbox.parse(&text).unwrap().unwrap();
        match inbound.message {
            ClientMessage::Relay { kind, to, data } => {
                assert_eq!(kind, RelayKind::Offer);
                assert_eq!(to, A);
                assert_eq!(data.get(), r#"{"Offer":"v=0\r\n"}"#);
            }
            other => panic!("{other:?}"),
        }
        let candidate = format!(
            r#"{{"Signal":{{"receiver":"{A}","data":{{"IceCandidate":"{{\"candidate\":\"\"}}"}}}}}}"#
        );
        assert!(Matchbox.parse(&candidate).is_ok());
        for bad in [
            "not json".to_string(),
            r#"{"Unknown":1}"#.to_string(),
            r#"{"Signal":{"receiver":"p_1","data":{"Offer":"x"}}}"#.to_string(),
            format!(r#"{{"Signal":{{"receiver":"{A}","data":{{"Hello":"x"}}}}}}"#),
            format!(r#"{{"Signal":{{"receiver":"{A}","data":{{"Offer":1}}}}}}"#),
            format!(r#"{{"Signal":{{"receiver":"{A}","data":"x"}}}}"#),
        ] {
            let err = Matchbox
                .parse(&bad)
                .err()
                .unwrap_or_else(|| panic!("{bad}"));
            assert_eq!(err.code, ErrorCode::InvalidMessage, "{bad}");
        }
    }

    #[test]
    fn events_are_what_matchbox_socket_reads() {
        let welcome = Welcome {
            peer_id: A,
            session_id: "s",
            resume_token: "t",
            heartbeat_interval_ms: 1,
            max_room_size: 1,
            ice_servers: None,
        };
        let text = |f: Frame| f.text.as_str().to_string();
        assert_eq!(
            text(Matchbox.welcome(&welcome).unwrap()),
            format!(r#"{{"IdAssigned":"{A}"}}"#)
        );
        assert_eq!(
            text(Matchbox.peer_joined(A, None).unwrap()),
            format!(r#"{{"NewPeer":"{A}"}}"#)
        );
        assert_eq!(
            text(Matchbox.peer_left(A, LeaveReason::Left).unwrap()),
            format!(r#"{{"PeerLeft":"{A}"}}"#)
        );
        let data: &RawValue = serde_json::from_str(r#"{"Answer":"v=0"}"#).unwrap();
        let tp =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let relay = Matchbox.relay(&Relay {
            kind: RelayKind::Answer,
            from: A,
            to: "b",
            data,
            traceparent: &tp,
        });
        assert_eq!(
            text(relay),
            format!(r#"{{"Signal":{{"sender":"{A}","data":{{"Answer":"v=0"}}}}}}"#)
        );
    }
}
