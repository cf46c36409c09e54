//! One room: its members and everything that must happen atomically among
//! them. Each room has its own lock, so rooms never wait on each other; the
//! lock is held only to queue frames, never across an await. The room's
//! [`Dialect`] writes what its members are told (they all speak it).
//!
//! `members` holds the member list and what changes it; `claims` the
//! client-chosen ids of PeerJS; `pending` the relays queued for a peer not
//! yet in the room.

mod claims;
mod members;
mod pending;

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;

pub use claims::{ClaimRefused, Claimed};
pub use pending::Pended;

use self::members::{Member, Presence, State};
use super::PeerId;
use super::dialect::{Dialect, UnknownPeer};
use super::labels::DropReason;
use super::limits::RoomBudget;
use super::outbox::{ConnHandle, Frame, MessageCounts, Queued, StopReason};
use crate::protocol::{LeaveReason, PeerInfo, Protocol, RoomName};
use crate::telemetry::Metrics;

/// Most relayed messages held for a peer inside its resume grace.
pub const MAX_HELD_MESSAGES: usize = 64;

/// What a room is known by: its protocol (members of one room speak the
/// same), its name, and its group (matchbox's `?next=N` splits one name
/// into groups; 0 for a room that is not split).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomKey {
    pub protocol: Protocol,
    pub name: RoomName,
    pub group: u64,
}

impl RoomKey {
    /// The room `name` of Chatsubo's own protocol.
    pub fn native(name: RoomName) -> Self {
        RoomKey {
            protocol: Protocol::Chatsubo,
            name,
            group: 0,
        }
    }
}

/// Why a join was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum JoinRefused {
    /// The room holds this many peers already.
    Full(usize),
    /// The room emptied and closed meanwhile; look it up again.
    Closed,
}

/// Why a relay was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum RelayRefused {
    /// `to` names no peer of this room.
    UnknownPeer,
    /// The sender is no longer a member (it was removed).
    NotMember,
}

/// What became of a relay.
#[derive(Debug, PartialEq, Eq)]
pub enum Relayed {
    /// Queued to its receiver, or held for it inside its grace.
    Delivered,
    /// Queued for a peer not in the room yet ([`UnknownPeer::Queue`]).
    Pending(Pended),
}

/// A member as the analytics API sees it.
#[derive(Clone, Debug)]
pub struct MemberSnapshot {
    pub peer_id: PeerId,
    pub display_name: Option<Arc<str>>,
    pub connected: bool,
}

/// A room and its members.
pub struct Room {
    key: RoomKey,
    /// What all its members may relay together (lock-free); a PeerJS
    /// namespace has none (it is not a room of a few peers).
    budget: Option<RoomBudget>,
    dialect: Arc<dyn Dialect>,
    state: Mutex<State>,
}

impl Room {
    pub fn new(key: RoomKey, budget: Option<RoomBudget>, dialect: Arc<dyn Dialect>) -> Self {
        Room {
            key,
            budget,
            dialect,
            state: Mutex::new(State::new()),
        }
    }

    /// What its members may relay together, if anything bounds it.
    pub fn budget(&self) -> Option<&RoomBudget> {
        self.budget.as_ref()
    }

    pub fn name(&self) -> &RoomName {
        &self.key.name
    }

    pub fn key(&self) -> &RoomKey {
        &self.key
    }

    pub fn dialect(&self) -> &Arc<dyn Dialect> {
        &self.dialect
    }

    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Who is in the room now.
    pub fn snapshot(&self) -> Vec<MemberSnapshot> {
        self.state
            .lock()
            .members
            .iter()
            .map(|m| MemberSnapshot {
                peer_id: m.peer_id.clone(),
                display_name: m.display_name.clone(),
                connected: matches!(m.presence, Presence::Live(_)),
            })
            .collect()
    }

    /// What the connection of `peer_id` has counted so far, if it is a
    /// member and connected.
    pub fn live_counts(&self, peer_id: &str) -> Option<MessageCounts> {
        let st = self.state.lock();
        let member = &st.members[st.index_of(peer_id)?];
        match &member.presence {
            Presence::Live(handle) => Some(handle.counts().snapshot()),
            Presence::Away { .. } => None,
        }
    }

    /// The display name of a member, if it is one and has one.
    pub fn display_name(&self, peer_id: &str) -> Option<Arc<str>> {
        let st = self.state.lock();
        st.members[st.index_of(peer_id)?].display_name.clone()
    }

    /// Puts back a member that a previous run of the server had, away
    /// inside its grace as if its connection `conn_id` had just dropped
    /// for `reason`. Nobody is told. Returns whether it was added (not if
    /// the room closed or already has this peer).
    pub fn restore_away(
        &self,
        peer_id: PeerId,
        display_name: Option<Arc<str>>,
        conn_id: u64,
        reason: LeaveReason,
    ) -> bool {
        let mut st = self.state.lock();
        if st.closed || st.index_of(&peer_id).is_some() {
            return false;
        }
        let away = Presence::Away {
            conn_id,
            reason,
            held: VecDeque::new(),
        };
        st.members.push(Member::new(peer_id, display_name, away));
        true
    }

    /// Adds a new peer: queues `joined` to it and `peer-joined` to the
    /// others (as the dialect says them), then anything queued for it.
    /// Returns the room size after the join.
    pub fn join(
        &self,
        peer_id: &PeerId,
        display_name: Option<Arc<str>>,
        conn: &ConnHandle,
        max_size: usize,
        m: &Metrics,
    ) -> Result<usize, JoinRefused> {
        let mut st = self.state.lock();
        if st.closed {
            return Err(JoinRefused::Closed);
        }
        if st.members.len() >= max_size {
            return Err(JoinRefused::Full(st.members.len()));
        }
        self.admit(
            &mut st,
            Member::new(peer_id.clone(), display_name, Presence::Live(conn.clone())),
            m,
        );
        Ok(st.members.len())
    }

    /// Makes `member` (live on its connection) a member: `joined` to it,
    /// `peer-joined` to the others, then what was pending for it.
    fn admit(&self, st: &mut State, member: Member, m: &Metrics) {
        let Presence::Live(conn) = &member.presence else {
            unreachable!("only a connected peer joins");
        };
        let peers: Vec<PeerInfo> = st.members.iter().map(Member::info).collect();
        // The joiner's queue holds at most its welcome so far.
        if let Some(joined) = self
            .dialect
            .joined(self.name(), &member.peer_id, &peers, false)
        {
            conn.send(joined);
        }
        let announce = self
            .dialect
            .peer_joined(&member.peer_id, member.display_name.as_deref());
        let conn = conn.clone();
        let peer_id = member.peer_id.clone();
        st.members.push(member);
        m.rooms.room_peers.observe(st.members.len() as f64);
        if let Some(announce) = announce {
            st.broadcast(&announce, Some(&peer_id), &*self.dialect, m);
        }
        if let Some(queue) = st.pending.take(&peer_id) {
            for frame in queue.frames {
                if conn.send(frame) != Queued::Yes {
                    DropReason::SlowConsumer.count(m, 1);
                }
            }
        }
    }

    /// Gives a peer's place to a new connection: `joined` with `resumed:
    /// true`, then the messages held for it, in order. The other peers see
    /// nothing. An older connection still attached is told to stop.
    pub fn resume(&self, peer_id: &str, conn: &ConnHandle, m: &Metrics) -> Option<usize> {
        let mut st = self.state.lock();
        if st.closed {
            return None;
        }
        let index = st.index_of(peer_id)?;
        self.take_over(&mut st, index, conn, m);
        Some(st.members.len())
    }

    /// Puts member `index` on connection `conn`: `joined` (resumed), then
    /// what was held for it; an older connection is stopped.
    fn take_over(&self, st: &mut State, index: usize, conn: &ConnHandle, m: &Metrics) {
        let old = std::mem::replace(
            &mut st.members[index].presence,
            Presence::Live(conn.clone()),
        );
        let peer_id = st.members[index].peer_id.clone();
        let peers: Vec<PeerInfo> = st
            .members
            .iter()
            .filter(|other| other.peer_id != peer_id)
            .map(Member::info)
            .collect();
        if let Some(joined) = self.dialect.joined(self.name(), &peer_id, &peers, true) {
            conn.send(joined);
        }
        match old {
            Presence::Live(previous) => previous.stop(StopReason::Superseded),
            Presence::Away { held, .. } => {
                m.connections.held_messages.sub(held.len() as i64);
                for frame in held {
                    if conn.send(frame) != Queued::Yes {
                        DropReason::SlowConsumer.count(m, 1);
                    }
                }
            }
        }
    }

    /// Relays a frame from `from` (on connection `from_conn`) to `to`.
    pub fn relay(
        &self,
        from: &PeerId,
        from_conn: u64,
        to: &str,
        frame: Frame,
        m: &Metrics,
    ) -> Result<Relayed, RelayRefused> {
        let mut st = self.state.lock();
        if !st
            .members
            .iter()
            .any(|mb| mb.peer_id == *from && mb.is_conn(from_conn))
        {
            return Err(RelayRefused::NotMember);
        }
        if **from == *to {
            return Err(RelayRefused::UnknownPeer);
        }
        match st.index_of(to) {
            Some(index) => {
                st.deliver(index, frame, &*self.dialect, m);
                Ok(Relayed::Delivered)
            }
            None => match self.dialect.unknown_peer() {
                UnknownPeer::Queue(_) => Ok(Relayed::Pending(st.pending.push(to, from, frame, m))),
                UnknownPeer::Refuse => Err(RelayRefused::UnknownPeer),
            },
        }
    }

    /// Gives up what was queued for `missing` if it has not come: the
    /// senders still here are told, as the dialect says it.
    pub fn expire_pending(&self, missing: &str, m: &Metrics) {
        let mut st = self.state.lock();
        let Some(queue) = st.pending.take(missing) else {
            return;
        };
        DropReason::PendingExpired.count(m, queue.frames.len() as u64);
        for sender in queue.senders {
            if let (Some(index), Some(frame)) =
                (st.index_of(&sender), self.dialect.expired(missing, &sender))
            {
                st.deliver(index, frame, &*self.dialect, m);
            }
        }
    }

    /// Removes a peer at once (a leave, a client close, a kick) if it is
    /// still on connection `conn_id`, and tells the others. Returns whether
    /// it was removed.
    pub fn remove(&self, peer_id: &str, conn_id: u64, reason: LeaveReason, m: &Metrics) -> bool {
        let mut st = self.state.lock();
        let Some(index) = st
            .members
            .iter()
            .position(|mb| &*mb.peer_id == peer_id && mb.is_conn(conn_id))
        else {
            return false;
        };
        st.take(index, reason, &*self.dialect, m);
        true
    }

    /// The peer's connection dropped: it keeps its place, silently, until
    /// [`Room::expire`] or a resume. Returns whether it was in the room.
    pub fn set_away(&self, peer_id: &str, conn_id: u64, reason: LeaveReason) -> bool {
        let mut st = self.state.lock();
        match st
            .members
            .iter_mut()
            .find(|mb| &*mb.peer_id == peer_id && mb.is_conn(conn_id))
        {
            Some(member) => {
                member.presence = Presence::Away {
                    conn_id,
                    reason,
                    held: VecDeque::new(),
                };
                true
            }
            None => false,
        }
    }

    /// The grace of a peer that dropped from `conn_id` ended: if it has not
    /// resumed, it leaves now, with the reason it dropped for.
    pub fn expire(&self, peer_id: &str, conn_id: u64, m: &Metrics) -> Option<LeaveReason> {
        let mut st = self.state.lock();
        let index = st.members.iter().position(|mb| {
            &*mb.peer_id == peer_id
                && matches!(&mb.presence, Presence::Away { conn_id: c, .. } if *c == conn_id)
        })?;
        let Presence::Away { reason, .. } = st.members[index].presence else {
            unreachable!("matched above");
        };
        st.take(index, reason, &*self.dialect, m);
        Some(reason)
    }
}
