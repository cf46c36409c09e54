//! Chatsubo's own protocol (`docs/protocol.md`) as a [`Dialect`].

use super::dialect::{Answer, Dialect, Relay, Welcome};
use super::outbox::Frame;
use crate::protocol::{
    Inbound, LeaveReason, OutKind, PeerInfo, Protocol, ProtocolError, RelayKind, RoomName,
    ServerMessage, relay_frame,
};

/// Chatsubo's own protocol.
pub struct Native;

impl Dialect for Native {
    fn protocol(&self) -> Protocol {
        Protocol::Chatsubo
    }

    fn welcome(&self, w: &Welcome<'_>) -> Option<Frame> {
        let welcome = ServerMessage::Welcome {
            peer_id: w.peer_id,
            session_id: w.session_id,
            resume_token: w.resume_token,
            heartbeat_interval_ms: w.heartbeat_interval_ms,
            max_room_size: w.max_room_size,
            ice_servers: w.ice_servers,
        };
        Some(Frame::new(OutKind::Welcome, welcome.to_json()))
    }

    fn parse<'a>(&self, text: &'a str) -> Result<Option<Inbound<'a>>, ProtocolError> {
        crate::protocol::parse(text).map(Some)
    }

    fn relay(&self, r: &Relay<'_>) -> Frame {
        let kind = match r.kind {
            RelayKind::Offer => OutKind::Offer,
            RelayKind::Answer => OutKind::Answer,
            RelayKind::IceCandidate => OutKind::IceCandidate,
        };
        Frame::new(kind, relay_frame(r.kind, r.from, r.data, r.traceparent))
    }

    fn joined(
        &self,
        room: &RoomName,
        peer_id: &str,
        peers: &[PeerInfo],
        resumed: bool,
    ) -> Option<Frame> {
        let joined = ServerMessage::Joined {
            room: room.as_str(),
            peer_id,
            peers,
            resumed,
        };
        Some(Frame::new(OutKind::Joined, joined.to_json()))
    }

    fn peer_joined(&self, peer_id: &str, display_name: Option<&str>) -> Option<Frame> {
        let joined = ServerMessage::PeerJoined {
            peer_id,
            display_name,
        };
        Some(Frame::new(OutKind::PeerJoined, joined.to_json()))
    }

    fn peer_left(&self, peer_id: &str, reason: LeaveReason) -> Option<Frame> {
        let left = ServerMessage::PeerLeft { peer_id, reason };
        Some(Frame::new(OutKind::PeerLeft, left.to_json()))
    }

    fn resume_tokens(&self) -> bool {
        true
    }

    fn error(&self, err: &ProtocolError) -> Answer {
        let text = ServerMessage::error(err.code, &err.message, err.reference).to_json();
        Answer::Send(Frame::new(OutKind::Error, text))
    }
}
