//! Leaving a room: at once for a `leave`, a client's close or a kick; after
//! the resume grace for a connection that dropped, timed out or was closed
//! by a shutdown (which keeps the place for a restarted server).

use std::sync::Arc;
use std::time::Instant;

use super::Connection;
use super::end::End;
use crate::analytics::ResumeChange;
use crate::clock::now_ms;
use crate::protocol::{LeaveReason, MessageType, ProtocolError};
use crate::signaling::grace::{AwayPeer, spawn_grace_expiry};
use crate::signaling::labels::KickReason;
use crate::signaling::room::Room;

impl Connection {
    pub(super) fn on_leave(&mut self) -> Result<(), ProtocolError> {
        let room = self.current_room(MessageType::Leave)?.clone();
        self.room = None;
        let metrics = &self.hub.metrics;
        if room.remove(&self.peer_id, self.id, LeaveReason::Left, metrics) {
            self.journal()
                .left(room.name(), &self.peer_id, LeaveReason::Left);
        }
        self.hub.rooms.forget_if_closed(&room, metrics);
        self.hub.tokens.unbind(&self.token);
        self.forget_token(&room);
        Ok(())
    }

    /// Leaves the room as the way the connection ended requires.
    pub(super) fn leave_room(&mut self, end: End) {
        let Some(room) = self.room.take() else {
            self.hub.tokens.revoke(&self.token);
            return;
        };
        let keeps = self.dialect.keeps_place();
        match end {
            End::ClientClosed => self.leave_now(&room, LeaveReason::Left, None),
            End::Kicked(why) => self.leave_now(&room, LeaveReason::Kicked, Some(why)),
            End::Refused => self.leave_now(&room, LeaveReason::Kicked, None),
            End::Superseded => self.hub.tokens.revoke(&self.token),
            End::Timeout if keeps => self.go_away(room, LeaveReason::Timeout, false),
            End::Disconnected if keeps => self.go_away(room, LeaveReason::Disconnected, false),
            End::Shutdown if keeps => self.go_away(room, LeaveReason::Disconnected, true),
            // A protocol without resume leaves at once.
            End::Timeout => self.leave_now(&room, LeaveReason::Timeout, None),
            End::Disconnected | End::Shutdown => {
                self.leave_now(&room, LeaveReason::Disconnected, None)
            }
        }
    }

    /// Leaves `room` for good; `kicked` says why the server removed it.
    fn leave_now(&mut self, room: &Arc<Room>, reason: LeaveReason, kicked: Option<KickReason>) {
        let metrics = &self.hub.metrics;
        let removed = room.remove(&self.peer_id, self.id, reason, metrics);
        let journal = self.journal();
        if removed {
            if let Some(why) = kicked {
                journal.kicked(why);
            }
            journal.left(room.name(), &self.peer_id, reason);
        } else if kicked.is_some() {
            // A room that kicked a slow consumer has removed (and counted)
            // it already; its history still learns the leave.
            journal.leave_recorded(room.name(), &self.peer_id, reason);
        }
        self.hub.rooms.forget_if_closed(room, metrics);
        self.hub.tokens.revoke(&self.token);
        self.forget_token(room);
    }

    /// The connection dropped: the peer keeps its place for the resume
    /// grace, silently, and its token can take it back until then. After a
    /// shutdown the place is kept for a restarted server to take back.
    fn go_away(&mut self, room: Arc<Room>, reason: LeaveReason, shutdown: bool) {
        let hub = self.hub.clone();
        if !room.set_away(&self.peer_id, self.id, reason) {
            hub.tokens.revoke(&self.token);
            self.forget_token(&room);
            return;
        }
        let grace = hub.config.resume_grace();
        hub.tokens.arm(&self.token, Instant::now() + grace);
        let journal = self.journal();
        journal.resume_state(ResumeChange::Armed {
            room: room.name().as_str().to_string(),
            peer: self.peer_id.to_string(),
            token_id: self.token,
            expires_at: now_ms() + grace.as_millis() as u64,
            reason: reason.as_str().to_string(),
        });
        journal.away(room.name(), &self.peer_id, reason, shutdown);
        if shutdown {
            return;
        }
        let away = AwayPeer {
            peer_id: self.peer_id.clone(),
            conn_id: self.id,
            token: Some(self.token),
            session: self.session,
            session_id: self.session_id.clone(),
        };
        spawn_grace_expiry(hub, room, away, grace);
    }
}
