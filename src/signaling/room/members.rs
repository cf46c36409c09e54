//! A room's members and what changes them under the room's lock: taking a
//! member out (telling the others), broadcasting, kicking a slow consumer.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::protocol::{LeaveReason, PeerInfo};
use crate::signaling::PeerId;
use crate::signaling::dialect::Dialect;
use crate::signaling::labels::{DropReason, KickReason};
use crate::signaling::outbox::{ConnHandle, Frame, Queued, StopReason};
use crate::telemetry::Metrics;

use super::pending::Pending;

pub(super) enum Presence {
    /// Connected: frames go to its queue.
    Live(ConnHandle),
    /// Dropped, inside its resume grace; relays are held for it.
    Away {
        /// The connection that dropped, so that a stale timer does nothing.
        conn_id: u64,
        reason: LeaveReason,
        held: VecDeque<Frame>,
    },
}

/// Who may take a client-chosen peer id back (PeerJS): the hash of the
/// token that first claimed it, and the session that holds it.
pub(super) struct Claim {
    pub token_hash: [u8; 32],
    pub session_id: Arc<str>,
}

pub(super) struct Member {
    pub peer_id: PeerId,
    pub display_name: Option<Arc<str>>,
    pub presence: Presence,
    /// Boxed: only client-chosen ids have one.
    pub claim: Option<Box<Claim>>,
}

impl Member {
    pub fn new(peer_id: PeerId, display_name: Option<Arc<str>>, presence: Presence) -> Self {
        Member {
            peer_id,
            display_name,
            presence,
            claim: None,
        }
    }

    pub fn info(&self) -> PeerInfo {
        PeerInfo {
            peer_id: self.peer_id.clone(),
            display_name: self.display_name.clone(),
        }
    }

    pub fn is_conn(&self, conn_id: u64) -> bool {
        matches!(&self.presence, Presence::Live(h) if h.id() == conn_id)
    }
}

/// What the room's lock guards.
pub(super) struct State {
    pub members: Vec<Member>,
    /// Set when the last member leaves; a closed room is never reused.
    pub closed: bool,
    /// Relays for peers not (yet) here, when the dialect queues them.
    pub pending: Pending,
}

impl State {
    pub fn new() -> Self {
        State {
            members: Vec::new(),
            closed: false,
            pending: Pending::default(),
        }
    }

    pub fn index_of(&self, peer_id: &str) -> Option<usize> {
        self.members.iter().position(|m| &*m.peer_id == peer_id)
    }

    /// Removes member `index`, tells the others, and closes an empty room.
    pub fn take(&mut self, index: usize, reason: LeaveReason, dialect: &dyn Dialect, m: &Metrics) {
        let member = self.members.remove(index);
        if let Presence::Away { held, .. } = &member.presence
            && !held.is_empty()
        {
            m.connections.held_messages.sub(held.len() as i64);
            DropReason::GraceExpired.count(m, held.len() as u64);
        }
        m.rooms.leave(reason, dialect.protocol());
        m.rooms.room_peers.observe(self.members.len() as f64);
        if self.members.is_empty() {
            self.closed = true;
            self.pending.clear(m);
            return;
        }
        if let Some(left) = dialect.peer_left(&member.peer_id, reason) {
            self.broadcast(&left, None, dialect, m);
        }
    }

    /// Queues a frame to every connected member but `except`; members whose
    /// queue is full are kicked.
    pub fn broadcast(
        &mut self,
        frame: &Frame,
        except: Option<&PeerId>,
        dialect: &dyn Dialect,
        m: &Metrics,
    ) {
        let mut slow = Vec::new();
        for member in &self.members {
            if Some(&member.peer_id) == except {
                continue;
            }
            if let Presence::Live(handle) = &member.presence {
                match handle.send(frame.clone()) {
                    Queued::Yes => {}
                    Queued::Full => slow.push(member.peer_id.clone()),
                    Queued::Gone => DropReason::ReceiverGone.count(m, 1),
                }
            }
        }
        for peer_id in slow {
            self.kick(&peer_id, dialect, m);
        }
    }

    /// Queues `frame` to member `index`: connected, its queue (a full one
    /// kicks it); away, held for its resume (the oldest dropped past the
    /// limit).
    pub fn deliver(&mut self, index: usize, frame: Frame, dialect: &dyn Dialect, m: &Metrics) {
        let target = &mut self.members[index];
        match &mut target.presence {
            Presence::Live(handle) => match handle.send(frame) {
                Queued::Yes => {}
                Queued::Full => {
                    let slow = target.peer_id.clone();
                    self.kick(&slow, dialect, m);
                }
                Queued::Gone => DropReason::ReceiverGone.count(m, 1),
            },
            Presence::Away { held, .. } => {
                if held.len() >= super::MAX_HELD_MESSAGES {
                    held.pop_front();
                    DropReason::HeldOverflow.count(m, 1);
                } else {
                    m.connections.held_messages.inc();
                }
                held.push_back(frame);
            }
        }
    }

    /// Removes a member whose queue overflowed and stops its connection.
    pub fn kick(&mut self, peer_id: &str, dialect: &dyn Dialect, m: &Metrics) {
        let Some(index) = self.index_of(peer_id) else {
            return;
        };
        if let Presence::Live(handle) = &self.members[index].presence {
            handle.stop(StopReason::Kicked(KickReason::SlowConsumer));
        }
        KickReason::SlowConsumer.count(m);
        DropReason::SlowConsumer.count(m, 1);
        self.take(index, LeaveReason::Kicked, dialect, m);
    }
}
