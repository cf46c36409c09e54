//! The signaling protocols the load generator speaks, behind one adapter
//! trait: what URL to open, how to join a room, how to address a relay to a
//! peer, and how to recognise what the server sends.
//!
//! The workloads only ever talk to a [`Protocol`]; adding a server is one
//! more file here.

pub mod chatsubo;
mod matchbox;
mod peerjs;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use chatsubo::Chatsubo;
pub use matchbox::Matchbox;
pub use peerjs::PeerJs;

/// Who a connection is before the server names it: some protocols (peerjs)
/// let the client choose its id, the others assign one.
#[derive(Clone, Debug)]
pub struct PeerKey {
    /// A name unique within this load generator run.
    pub name: String,
    /// A secret that goes with the name (peerjs' `token`).
    pub token: String,
}

/// What a frame from the server means to the load generator.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// The connection is in its room; `peers` were there before it.
    Joined { peers: usize },
    /// Another peer came into the room.
    PeerJoined,
    /// Another peer left the room.
    PeerLeft,
    /// A relayed message: its data is somewhere in the frame.
    Relay,
    /// The server refused something.
    Error,
    /// Anything else (ignored).
    Other,
}

/// One signaling protocol, as a client sees it.
pub trait Protocol: Send + Sync {
    /// The name used on the command line and in reports.
    fn name(&self) -> &'static str;

    /// The WebSocket URL a peer opens to get into `room`.
    fn url(&self, addr: SocketAddr, room: &str, key: &PeerKey) -> String;

    /// Reads the server's first frame and returns the connection's peer id.
    fn welcome(&self, text: &str, key: &PeerKey) -> Result<String, String>;

    /// The message that joins `room`, when joining is a message of its own
    /// (`None`: the connection is in its room as soon as it is welcomed).
    fn join_message(&self, room: &str) -> Option<String>;

    /// Whether the server confirms the join from the URL with a frame of
    /// its own after the welcome (Chatsubo's `joined`), which the client
    /// waits for.
    fn joined_after_welcome(&self) -> bool {
        false
    }

    /// Appends a relay of `data` (a JSON object) to peer `to` to `out`.
    fn write_relay(&self, to: &str, data: &str, out: &mut String);

    /// What a frame from the server is. Called for every frame: cheap.
    fn classify(&self, text: &str) -> Event;

    /// Membership notifications a room of `size` peers produces in total
    /// once all of them have joined (joined peer lists and peer-joined
    /// events counted together). The idle workload waits for them.
    fn settle_events(&self, room_size: usize) -> usize;

    /// A message the client must send periodically for the server to keep
    /// the connection, and how often.
    fn keepalive(&self) -> Option<(&'static str, Duration)> {
        None
    }

    /// How the server's own join differs from ours, for the report.
    fn join_note(&self) -> &'static str;
}

/// The adapter for a protocol name given on the command line. `prefix` is
/// the path the protocol's endpoints sit under (`/matchbox` and `/peerjs`
/// on Chatsubo, empty on matchbox_server and a default peerjs-server).
pub fn by_name(name: &str, prefix: &str) -> Option<Arc<dyn Protocol>> {
    let prefix = prefix.trim_end_matches('/').to_owned();
    match name {
        "chatsubo" if prefix.is_empty() => Some(Arc::new(Chatsubo)),
        "matchbox" => Some(Arc::new(Matchbox { prefix })),
        "peerjs" => Some(Arc::new(PeerJs {
            prefix,
            ..PeerJs::default()
        })),
        _ => None,
    }
}

/// The names [`by_name`] knows.
pub const NAMES: [&str; 3] = ["chatsubo", "matchbox", "peerjs"];

/// The string value of `"field":"…"` in a small JSON text (ids, types);
/// enough for frames whose strings hold no escapes, which is true of every
/// id these servers hand out.
pub(crate) fn string_field<'a>(text: &'a str, field: &str) -> Option<&'a str> {
    let pattern = format!("\"{field}\":\"");
    let start = text.find(&pattern)? + pattern.len();
    let len = text[start..].find('"')?;
    Some(&text[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_field_reads_plain_strings() {
        let text = r#"{"type":"welcome","peerId":"p_01J","x":1}"#;
        assert_eq!(string_field(text, "peerId"), Some("p_01J"));
        assert_eq!(string_field(text, "type"), Some("welcome"));
        assert_eq!(string_field(text, "nope"), None);
    }
}
