//! matchbox_server 0.15's protocol (crates matchbox_protocol and
//! matchbox_signaling): the room is the URL path (`ws://host/<room>`), the
//! server sends `{"IdAssigned":"<uuid>"}` first, tells earlier members
//! `{"NewPeer":"<uuid>"}` and `{"PeerLeft":"<uuid>"}`, and relays
//! `{"Signal":{"receiver":…,"data":…}}` as `{"Signal":{"sender":…,"data":…}}`.
//! Serde's externally tagged enums; `"KeepAlive"` exists for proxies only.

use std::net::SocketAddr;

use super::{Event, PeerKey, Protocol};

/// The matchbox_server protocol.
#[derive(Default)]
pub struct Matchbox {
    /// What comes before the room in the URL path: empty for
    /// matchbox_server, `/matchbox` for Chatsubo's matchbox endpoint.
    pub prefix: String,
}

impl Protocol for Matchbox {
    fn name(&self) -> &'static str {
        "matchbox"
    }

    fn url(&self, addr: SocketAddr, room: &str, _key: &PeerKey) -> String {
        format!("ws://{addr}{}/{room}", self.prefix)
    }

    fn welcome(&self, text: &str, _key: &PeerKey) -> Result<String, String> {
        text.strip_prefix(r#"{"IdAssigned":""#)
            .and_then(|rest| rest.split('"').next())
            .map(str::to_owned)
            .ok_or_else(|| format!("expected IdAssigned, got {text}"))
    }

    fn join_message(&self, _room: &str) -> Option<String> {
        None
    }

    /// `data` goes out as matchbox_socket sends a candidate: a
    /// `PeerSignal`, `{"IceCandidate":"<the JSON as a string>"}`.
    fn write_relay(&self, to: &str, data: &str, out: &mut String) {
        out.push_str(r#"{"Signal":{"receiver":""#);
        out.push_str(to);
        out.push_str(r#"","data":{"IceCandidate":""#);
        for c in data.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push_str(r#""}}}"#);
    }

    fn classify(&self, text: &str) -> Event {
        if text.starts_with(r#"{"Signal""#) {
            Event::Relay
        } else if text.starts_with(r#"{"NewPeer""#) {
            Event::PeerJoined
        } else if text.starts_with(r#"{"PeerLeft""#) {
            Event::PeerLeft
        } else {
            Event::Other
        }
    }

    fn settle_events(&self, room_size: usize) -> usize {
        // Only earlier members hear of a newcomer; a newcomer gets no list.
        room_size * room_size.saturating_sub(1) / 2
    }

    fn join_note(&self) -> &'static str {
        "the room is the URL path: joined once IdAssigned arrives"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speaks_matchbox() {
        let key = PeerKey {
            name: "x".into(),
            token: "t".into(),
        };
        let matchbox = Matchbox::default();
        let id = "4e4e4a3c-0b0b-4c1c-9d9d-0a0a0a0a0a0a";
        assert_eq!(
            matchbox.welcome(&format!(r#"{{"IdAssigned":"{id}"}}"#), &key),
            Ok(id.to_owned())
        );
        let mut out = String::new();
        matchbox.write_relay(id, r#"{"a":1}"#, &mut out);
        assert_eq!(
            out,
            format!(
                r#"{{"Signal":{{"receiver":"{id}","data":{{"IceCandidate":"{{\"a\":1}}"}}}}}}"#
            )
        );
        assert_eq!(
            matchbox.classify(r#"{"Signal":{"sender":"x","data":{}}}"#),
            Event::Relay
        );
        assert_eq!(matchbox.classify(r#"{"NewPeer":"x"}"#), Event::PeerJoined);
        let chatsubo = Matchbox {
            prefix: "/matchbox".into(),
        };
        assert_eq!(
            chatsubo.url("127.0.0.1:9000".parse().unwrap(), "r1", &key),
            "ws://127.0.0.1:9000/matchbox/r1"
        );
    }
}
