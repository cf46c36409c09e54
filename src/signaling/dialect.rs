//! How a connection's wire protocol speaks. The core (the connection's
//! actions, the rooms) decides what happens; a [`Dialect`] reads a client's
//! frames into the core's messages and writes the core's events in its own
//! format. Chatsubo's own protocol is [`Native`](super::native::Native);
//! `crate::adapters` brings matchbox_server's and PeerJS's.

use serde_json::value::RawValue;

use super::outbox::Frame;
use crate::protocol::{
    Inbound, LeaveReason, PeerInfo, Protocol, ProtocolError, RelayKind, RoomName, TraceParent,
};

/// What the first frame after the upgrade may say.
pub struct Welcome<'a> {
    pub peer_id: &'a str,
    pub session_id: &'a str,
    pub resume_token: &'a str,
    pub heartbeat_interval_ms: u64,
    pub max_room_size: u32,
    pub ice_servers: Option<&'a RawValue>,
}

/// One relayed message, as the receiver is to get it.
pub struct Relay<'a> {
    pub kind: RelayKind,
    pub from: &'a str,
    pub to: &'a str,
    pub data: &'a RawValue,
    pub traceparent: &'a TraceParent,
}

/// How a client hears of an error.
pub enum Answer {
    /// A frame of the protocol's own (`error`, PeerJS's `ERROR`).
    Send(Frame),
    /// The connection is closed with 1008 and this reason (matchbox has no
    /// error message).
    Close(String),
    /// Not at all (counted all the same).
    Silent,
}

/// What a relay to a peer that is not in the room does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownPeer {
    /// Answered with `UNKNOWN_PEER`.
    Refuse,
    /// Queued for this long in case the peer connects, then the sender is
    /// told it expired (PeerJS).
    Queue(std::time::Duration),
}

/// What the rooms of a protocol are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoomKind {
    /// A room of up to `--max-room-size` peers, with a relay budget shared
    /// by its members.
    Room,
    /// A namespace of any number of peers who address each other by id
    /// (PeerJS's key): no size cap and no shared budget; each connection's
    /// own rate limit still applies.
    Namespace,
}

/// A wire protocol: Chatsubo's own, or a foreign one translated at the edge.
pub trait Dialect: Send + Sync + 'static {
    /// Its name in the metrics and the history.
    fn protocol(&self) -> Protocol;

    /// The first frame after the upgrade, if the protocol sends one before
    /// the peer is in a room.
    fn welcome(&self, welcome: &Welcome<'_>) -> Option<Frame>;

    /// One text frame; `Ok(None)` when it asks for nothing (a keep-alive).
    fn parse<'a>(&self, text: &'a str) -> Result<Option<Inbound<'a>>, ProtocolError>;

    /// The frame a relay delivers.
    fn relay(&self, relay: &Relay<'_>) -> Frame;

    /// Told to a peer that joined (or resumed) `room`, if the protocol says so.
    fn joined(
        &self,
        room: &RoomName,
        peer_id: &str,
        peers: &[PeerInfo],
        resumed: bool,
    ) -> Option<Frame>;

    /// Told to the others when a peer joins.
    fn peer_joined(&self, peer_id: &str, display_name: Option<&str>) -> Option<Frame>;

    /// Told to the others when a peer leaves.
    fn peer_left(&self, peer_id: &str, reason: LeaveReason) -> Option<Frame>;

    /// How the client hears of `err`.
    fn error(&self, err: &ProtocolError) -> Answer;

    /// Whether a peer whose connection dropped keeps its place for the
    /// resume grace (a protocol without resume leaves at once).
    fn keeps_place(&self) -> bool {
        true
    }

    /// Whether the client gets a resume token to take its place back with
    /// (Chatsubo's `welcome.resumeToken`); otherwise none is bound.
    fn resume_tokens(&self) -> bool {
        false
    }

    /// What its rooms are.
    fn room_kind(&self) -> RoomKind {
        RoomKind::Room
    }

    /// What a relay to a peer that is not in the room does.
    fn unknown_peer(&self) -> UnknownPeer {
        UnknownPeer::Refuse
    }

    /// Tells `to` that what it sent `missing` expired unread (with
    /// [`UnknownPeer::Queue`]).
    fn expired(&self, _missing: &str, _to: &str) -> Option<Frame> {
        None
    }
}
