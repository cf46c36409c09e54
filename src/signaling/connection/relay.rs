//! `offer`, `answer` and `ice-candidate`: relayed to a peer of the same
//! room, `data` untouched, with a `traceparent` of the relay's own.

use serde_json::value::RawValue;

use super::dispatch::not_in_room;
use super::{Connection, Frame};
use crate::protocol::{ErrorCode, OutKind, ProtocolError, RelayKind, TraceParent, relay_frame};
use crate::signaling::room::RelayRefused;
use crate::telemetry::{RelayAttributes, RelaySpan};

impl Connection {
    pub(super) fn on_relay(
        &mut self,
        kind: RelayKind,
        to: &str,
        data: &RawValue,
        parent: Option<TraceParent>,
    ) -> Result<(), ProtocolError> {
        let about = |e: ProtocolError| e.about(kind.message_type());
        let room = self.current_room(kind.message_type())?;
        let span = RelaySpan::start(
            parent.as_ref(),
            self.span_context.as_deref(),
            RelayAttributes {
                session_id: &self.session_id,
                peer_id: &self.peer_id,
                room: room.name().shared(),
                message_type: kind.as_str(),
            },
        );
        let out_kind = match kind {
            RelayKind::Offer => OutKind::Offer,
            RelayKind::Answer => OutKind::Answer,
            RelayKind::IceCandidate => OutKind::IceCandidate,
        };
        let frame = Frame::new(
            out_kind,
            relay_frame(kind, &self.peer_id, data, &span.traceparent),
        );
        match room.relay(&self.peer_id, self.id, to, frame, &self.hub.metrics) {
            Ok(()) => Ok(()),
            Err(RelayRefused::UnknownPeer) => Err(about(ProtocolError::new(
                ErrorCode::UnknownPeer,
                "to names no other peer of this room",
            ))),
            Err(RelayRefused::NotMember) => {
                // Removed by the room (kicked): nothing left to resume.
                let room = room.clone();
                self.forget_token(&room);
                self.room = None;
                Err(about(not_in_room()))
            }
        }
    }
}
