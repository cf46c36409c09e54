//! Entries of foreign protocols: a client-chosen peer id claimed with its
//! token (PeerJS), and a place in a group that fills up (matchbox's
//! `?next=N`).

use sha2::{Digest, Sha256};

use super::Connection;
use crate::protocol::{ErrorCode, MessageType, ProtocolError, RoomName};
use crate::signaling::room::{ClaimRefused, Claimed, RoomKey};

impl Connection {
    /// Claims this connection's peer id in `namespace` for `token`: a new
    /// member, or its own place back; another token's id is refused
    /// (`ID_TAKEN`) and the connection closed.
    pub(super) fn claim(&mut self, namespace: RoomName, token: &str) {
        let span = self.message_span(MessageType::Join);
        let _entered = span.enter();
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let key = RoomKey {
            protocol: self.protocol,
            name: namespace,
            group: 0,
        };
        let metrics = self.hub.metrics.clone();
        loop {
            let room = self.hub.rooms.get_or_create(&key, &self.dialect, &metrics);
            match room.claim(
                &self.peer_id,
                hash,
                &self.session_id,
                &self.handle,
                &metrics,
            ) {
                Ok(Claimed::Fresh(size)) => {
                    self.journal().joined(&key.name, &self.peer_id, None, size);
                    self.in_room(room);
                }
                Ok(Claimed::Resumed { size, resumed_from }) => {
                    let journal = self.journal();
                    journal.resume_attempted();
                    journal.resumed(&key.name, &self.peer_id, &resumed_from, size);
                    self.in_room(room);
                }
                Err(ClaimRefused::Closed) => continue,
                Err(ClaimRefused::Taken) => {
                    let err = ProtocolError::new(ErrorCode::IdTaken, "ID is taken");
                    self.send_error(&err.about(MessageType::Join));
                    self.close_with("ID is taken".into());
                }
            }
            return;
        }
    }

    /// Joins the group of `of` peers filling up under `name`.
    pub(super) fn join_group(&mut self, name: RoomName, of: usize) {
        let span = self.message_span(MessageType::Join);
        let _entered = span.enter();
        let metrics = self.hub.metrics.clone();
        let (room, size) = self.hub.rooms.join_group(
            &name,
            of,
            &self.dialect,
            &self.peer_id,
            &self.handle,
            &metrics,
        );
        self.journal().joined(&name, &self.peer_id, None, size);
        self.in_room(room);
    }
}
