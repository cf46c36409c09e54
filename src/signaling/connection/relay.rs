//! `offer`, `answer` and `ice-candidate`: relayed to a peer of the same
//! room, `data` untouched, with a `traceparent` of the relay's own.

use serde_json::value::RawValue;

use super::Connection;
use super::dispatch::not_in_room;
use crate::protocol::{ErrorCode, ProtocolError, RelayKind, TraceParent};
use crate::signaling::dialect::{Relay, UnknownPeer};
use crate::signaling::room::RelayRefused;
use crate::signaling::room::{Pended, Relayed};
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
        let frame = self.dialect.relay(&Relay {
            kind,
            from: &self.peer_id,
            to,
            data,
            traceparent: &span.traceparent,
        });
        match room.relay(&self.peer_id, self.id, to, frame, &self.hub.metrics) {
            Ok(Relayed::Pending(Pended::First)) => {
                if let UnknownPeer::Queue(after) = self.dialect.unknown_peer() {
                    let (room, hub, missing) = (room.clone(), self.hub.clone(), to.to_string());
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        room.expire_pending(&missing, &hub.metrics);
                    });
                }
                Ok(())
            }
            Ok(_) => Ok(()),
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
