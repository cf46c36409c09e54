//! `join`: into a room afresh, or back into the place a resume token holds.

use std::sync::Arc;

use super::Connection;
use super::dispatch::not_in_room;
use crate::analytics::ResumeChange;
use crate::protocol::{ErrorCode, MessageType, ProtocolError, RoomName};
use crate::signaling::resume::Redeemed;
use crate::signaling::room::{Room, RoomKey};

impl Connection {
    /// Joins the room of the upgrade's `?room=`, as a `join` would.
    pub(super) fn join_query_room(&mut self, room: &str) {
        let span = self.message_span(MessageType::Join);
        let _entered = span.enter();
        let result = RoomName::parse(room)
            .map_err(|e| e.about(MessageType::Join))
            .and_then(|room| self.on_join(room, None, None));
        if let Err(err) = result {
            self.send_error(&err);
        }
    }

    pub(super) fn on_join(
        &mut self,
        room: RoomName,
        display_name: Option<String>,
        resume_token: Option<&str>,
    ) -> Result<(), ProtocolError> {
        if let Some(current) = &self.room {
            return Err(ProtocolError::new(
                ErrorCode::AlreadyInRoom,
                format!("already in room {}; send leave first", current.name()),
            )
            .about(MessageType::Join));
        }
        if let Some(token) = resume_token {
            match self.try_resume(&room, token) {
                Ok(()) => return Ok(()),
                Err(outcome) => self.journal().resume_refused(outcome),
            }
        }
        self.join_fresh(room, display_name)
            .map_err(|e| e.about(MessageType::Join))
    }

    /// Takes back the place `token` holds in `room`; `Err` says why not
    /// (`expired` or `invalid`), and a fresh join follows.
    fn try_resume(&mut self, room: &RoomName, token: &str) -> Result<(), &'static str> {
        self.journal().resume_attempted();
        let redeemed = self.hub.tokens.redeem(token);
        let (token, peer_id, old_room, resumed_from) = match redeemed {
            Redeemed::Valid {
                token,
                peer_id,
                room,
                session_id,
            } => (token, peer_id, room, session_id),
            Redeemed::Invalid => return Err("invalid"),
            Redeemed::Expired => return Err("expired"),
        };
        // Spent, here and in the store, whatever happens next.
        self.journal().resume_state(ResumeChange::Spent {
            room: old_room.as_str().to_string(),
            peer: peer_id.to_string(),
            token_id: token,
        });
        if old_room != *room {
            return Err("invalid");
        }
        let metrics = self.hub.metrics.clone();
        let key = self.room_key(room.clone());
        let Some((r, size)) = self
            .hub
            .rooms
            .get(&key)
            .and_then(|r| r.resume(&peer_id, &self.handle, &metrics).map(|n| (r, n)))
        else {
            return Err("expired");
        };
        self.peer_id = peer_id;
        // The spans were opened under the peer id this connection was
        // given; from here on it is the resumed one.
        if !self.span.is_disabled() {
            self.span.record("peer_id", &*self.peer_id);
            tracing::Span::current().record("peer_id", &*self.peer_id);
        }
        self.bind_token(&r);
        self.journal()
            .resumed(room, &self.peer_id, &resumed_from, size);
        self.in_room(r);
        Ok(())
    }

    /// A join that takes a new place in `room`, if it has one free.
    fn join_fresh(
        &mut self,
        room: RoomName,
        display_name: Option<String>,
    ) -> Result<(), ProtocolError> {
        let display_name: Option<Arc<str>> = display_name.map(Arc::from);
        let recorded_name = display_name.as_deref().map(str::to_string);
        let metrics = self.hub.metrics.clone();
        let key = self.room_key(room.clone());
        let max = self.hub.rooms.seats(&*self.dialect);
        match self.hub.rooms.join(
            &key,
            &self.dialect,
            &self.peer_id,
            display_name,
            &self.handle,
            &metrics,
        ) {
            Ok((r, size)) => {
                self.bind_token(&r);
                self.journal()
                    .joined(&room, &self.peer_id, recorded_name, size);
                self.in_room(r);
                Ok(())
            }
            Err(size) => {
                self.journal().room_full(&room, &self.peer_id);
                Err(ProtocolError::new(
                    ErrorCode::RoomFull,
                    format!("room {room} is full ({size}/{max})"),
                ))
            }
        }
    }

    /// The room of this connection's protocol named `name`.
    fn room_key(&self, name: RoomName) -> RoomKey {
        RoomKey {
            protocol: self.protocol,
            name,
            group: 0,
        }
    }

    /// Binds this connection's token to its peer in `room`, and has the
    /// store remember it (the hash of its secret, never the token), when
    /// its protocol resumes by token.
    fn bind_token(&self, room: &Room) {
        if !self.dialect.resume_tokens() {
            return;
        }
        let bound = self.hub.tokens.bind(
            &self.token,
            self.peer_id.clone(),
            room.name().clone(),
            self.session_id.clone(),
        );
        if let Some(token_hash) = bound {
            self.journal().resume_state(ResumeChange::Bound {
                room: room.name().as_str().to_string(),
                peer: self.peer_id.to_string(),
                display_name: room.display_name(&self.peer_id).map(|n| n.to_string()),
                token_id: self.token,
                token_hash,
            });
        }
    }

    /// The peer left `room` for good: the store forgets its resume state.
    pub(super) fn forget_token(&self, room: &Room) {
        self.journal().resume_state(ResumeChange::Gone {
            room: room.name().as_str().to_string(),
            peer: self.peer_id.to_string(),
            token_id: self.token,
        });
    }

    /// Remembers the room, and names it on the spans.
    pub(super) fn in_room(&mut self, room: Arc<Room>) {
        if !self.span.is_disabled() {
            let name = room.name().as_str();
            self.span.record("room", name);
            tracing::Span::current().record("room", name);
        }
        self.room = Some(room);
        self.ever_joined = true;
    }

    /// The room this connection is in, or `NOT_IN_ROOM` about `kind`.
    pub(super) fn current_room(&self, kind: MessageType) -> Result<&Arc<Room>, ProtocolError> {
        self.room.as_ref().ok_or_else(|| not_in_room().about(kind))
    }
}
