//! peerjs-server 1.0.2's protocol (npm package `peer`): the client picks its
//! id and connects to `/peerjs?key=peerjs&id=ID&token=TOKEN`; the server
//! answers `{"type":"OPEN"}` and forwards `OFFER`/`ANSWER`/`CANDIDATE` with
//! `dst` to that client, adding `src`. There are no rooms: the load
//! generator's rooms are only who sends to whom. A client must send
//! `{"type":"HEARTBEAT"}` within `alive_timeout` (60 s in the CLI).

use std::net::SocketAddr;
use std::time::Duration;

use super::{Event, PeerKey, Protocol};

/// The peerjs-server protocol.
pub struct PeerJs {
    /// The server's `--key` (`peerjs` unless configured).
    pub key: String,
    /// peerjs-server's `--path` without its trailing slash: empty for the
    /// default `/`, `/peerjs` for Chatsubo's PeerJS endpoint.
    pub prefix: String,
}

impl Default for PeerJs {
    fn default() -> Self {
        PeerJs {
            key: "peerjs".into(),
            prefix: String::new(),
        }
    }
}

impl Protocol for PeerJs {
    fn name(&self) -> &'static str {
        "peerjs"
    }

    fn url(&self, addr: SocketAddr, _room: &str, key: &PeerKey) -> String {
        format!(
            "ws://{addr}{}/peerjs?key={}&id={}&token={}",
            self.prefix, self.key, key.name, key.token
        )
    }

    fn welcome(&self, text: &str, key: &PeerKey) -> Result<String, String> {
        if text.starts_with(r#"{"type":"OPEN""#) {
            Ok(key.name.clone())
        } else {
            Err(format!("expected OPEN, got {text}"))
        }
    }

    fn join_message(&self, _room: &str) -> Option<String> {
        None
    }

    fn write_relay(&self, to: &str, data: &str, out: &mut String) {
        out.push_str(r#"{"type":"CANDIDATE","dst":""#);
        out.push_str(to);
        out.push_str(r#"","payload":"#);
        out.push_str(data);
        out.push('}');
    }

    fn classify(&self, text: &str) -> Event {
        if text.starts_with(r#"{"type":"CANDIDATE""#)
            || text.starts_with(r#"{"type":"OFFER""#)
            || text.starts_with(r#"{"type":"ANSWER""#)
        {
            Event::Relay
        } else if text.starts_with(r#"{"type":"ERROR""#)
            || text.starts_with(r#"{"type":"ID-TAKEN""#)
        {
            Event::Error
        } else {
            Event::Other
        }
    }

    fn settle_events(&self, _room_size: usize) -> usize {
        0
    }

    fn keepalive(&self) -> Option<(&'static str, Duration)> {
        // The browser client sends one every 5 s; 20 s keeps well inside
        // the 60 s alive_timeout at a quarter of the cost.
        Some((r#"{"type":"HEARTBEAT"}"#, Duration::from_secs(20)))
    }

    fn join_note(&self) -> &'static str {
        "no rooms: joined once OPEN arrives; peers address each other by id"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speaks_peerjs() {
        let key = PeerKey {
            name: "lg-1".into(),
            token: "t1".into(),
        };
        let p = PeerJs::default();
        assert_eq!(
            p.url("127.0.0.1:9000".parse().unwrap(), "r", &key),
            "ws://127.0.0.1:9000/peerjs?key=peerjs&id=lg-1&token=t1"
        );
        assert_eq!(p.welcome(r#"{"type":"OPEN"}"#, &key), Ok("lg-1".into()));
        let mut out = String::new();
        p.write_relay("lg-2", r#"{"a":1}"#, &mut out);
        assert_eq!(
            out,
            r#"{"type":"CANDIDATE","dst":"lg-2","payload":{"a":1}}"#
        );
        assert_eq!(
            p.classify(r#"{"type":"CANDIDATE","src":"a","dst":"b","payload":{}}"#),
            Event::Relay
        );
    }
}
