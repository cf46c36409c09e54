//! One room: its members and everything that must happen atomically among
//! them. Each room has its own lock, so rooms never wait on each other; the
//! lock is held only to queue frames, never across an await.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;

use super::PeerId;
use super::labels::{DropReason, KickReason};
use super::limits::RoomBudget;
use super::outbox::{ConnHandle, Frame, MessageCounts, Queued, StopReason};
use crate::protocol::{LeaveReason, OutKind, PeerInfo, RoomName, ServerMessage};
use crate::telemetry::Metrics;

/// Most relayed messages held for a peer inside its resume grace.
pub const MAX_HELD_MESSAGES: usize = 64;

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

enum Presence {
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

struct Member {
    peer_id: PeerId,
    display_name: Option<Arc<str>>,
    presence: Presence,
}

impl Member {
    fn info(&self) -> PeerInfo {
        PeerInfo {
            peer_id: self.peer_id.clone(),
            display_name: self.display_name.clone(),
        }
    }

    fn is_conn(&self, conn_id: u64) -> bool {
        matches!(&self.presence, Presence::Live(h) if h.id() == conn_id)
    }
}

#[derive(Default)]
struct State {
    members: Vec<Member>,
    /// Set when the last member leaves; a closed room is never reused.
    closed: bool,
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
    name: RoomName,
    /// What all its members may relay together (lock-free).
    budget: RoomBudget,
    state: Mutex<State>,
}

impl Room {
    pub fn new(name: RoomName, budget: RoomBudget) -> Self {
        Room {
            name,
            budget,
            state: Mutex::new(State::default()),
        }
    }

    /// What its members may relay together.
    pub fn budget(&self) -> &RoomBudget {
        &self.budget
    }

    pub fn name(&self) -> &RoomName {
        &self.name
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
        self.state
            .lock()
            .members
            .iter()
            .find(|m| &*m.peer_id == peer_id)
            .and_then(|m| match &m.presence {
                Presence::Live(handle) => Some(handle.counts().snapshot()),
                Presence::Away { .. } => None,
            })
    }

    /// The display name of a member, if it is one and has one.
    pub fn display_name(&self, peer_id: &str) -> Option<Arc<str>> {
        self.state
            .lock()
            .members
            .iter()
            .find(|m| &*m.peer_id == peer_id)
            .and_then(|m| m.display_name.clone())
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
        if st.closed || st.members.iter().any(|m| m.peer_id == peer_id) {
            return false;
        }
        st.members.push(Member {
            peer_id,
            display_name,
            presence: Presence::Away {
                conn_id,
                reason,
                held: VecDeque::new(),
            },
        });
        true
    }

    /// Adds a new peer: queues `joined` to it and `peer-joined` to the others.
    /// Returns the room size after the join.
    pub fn join(
        &self,
        peer_id: &PeerId,
        display_name: Option<Arc<str>>,
        conn: &ConnHandle,
        max_size: usize,
        metrics: &Metrics,
    ) -> Result<usize, JoinRefused> {
        let mut st = self.state.lock();
        if st.closed {
            return Err(JoinRefused::Closed);
        }
        if st.members.len() >= max_size {
            return Err(JoinRefused::Full(st.members.len()));
        }
        let peers: Vec<PeerInfo> = st.members.iter().map(Member::info).collect();
        let joined = ServerMessage::Joined {
            room: self.name.as_str(),
            peer_id,
            peers: &peers,
            resumed: false,
        };
        // The joiner's queue holds at most its welcome so far.
        conn.send(Frame::new(OutKind::Joined, joined.to_json()));
        let announce = Frame::new(
            OutKind::PeerJoined,
            ServerMessage::PeerJoined {
                peer_id,
                display_name: display_name.as_deref(),
            }
            .to_json(),
        );
        st.members.push(Member {
            peer_id: peer_id.clone(),
            display_name,
            presence: Presence::Live(conn.clone()),
        });
        let size = st.members.len();
        metrics.rooms.room_peers.observe(size as f64);
        st.broadcast(&announce, Some(peer_id), metrics);
        Ok(st.members.len())
    }

    /// Gives a peer's place to a new connection: `joined` with `resumed:
    /// true`, then the messages held for it, in order. The other peers see
    /// nothing. An older connection still attached is told to stop.
    pub fn resume(&self, peer_id: &str, conn: &ConnHandle, metrics: &Metrics) -> Option<usize> {
        let mut st = self.state.lock();
        if st.closed {
            return None;
        }
        let index = st.members.iter().position(|m| &*m.peer_id == peer_id)?;
        let old = std::mem::replace(
            &mut st.members[index].presence,
            Presence::Live(conn.clone()),
        );
        let peers: Vec<PeerInfo> = st
            .members
            .iter()
            .filter(|m| &*m.peer_id != peer_id)
            .map(Member::info)
            .collect();
        let joined = ServerMessage::Joined {
            room: self.name.as_str(),
            peer_id,
            peers: &peers,
            resumed: true,
        };
        conn.send(Frame::new(OutKind::Joined, joined.to_json()));
        match old {
            Presence::Live(previous) => previous.stop(StopReason::Superseded),
            Presence::Away { held, .. } => {
                metrics.connections.held_messages.sub(held.len() as i64);
                for frame in held {
                    if conn.send(frame) != Queued::Yes {
                        DropReason::SlowConsumer.count(metrics, 1);
                    }
                }
            }
        }
        Some(st.members.len())
    }

    /// Relays a frame from `from` (on connection `from_conn`) to `to`.
    pub fn relay(
        &self,
        from: &str,
        from_conn: u64,
        to: &str,
        frame: Frame,
        metrics: &Metrics,
    ) -> Result<(), RelayRefused> {
        let mut st = self.state.lock();
        if !st
            .members
            .iter()
            .any(|m| &*m.peer_id == from && m.is_conn(from_conn))
        {
            return Err(RelayRefused::NotMember);
        }
        if from == to {
            return Err(RelayRefused::UnknownPeer);
        }
        let target = st
            .members
            .iter_mut()
            .find(|m| &*m.peer_id == to)
            .ok_or(RelayRefused::UnknownPeer)?;
        match &mut target.presence {
            Presence::Live(handle) => match handle.send(frame) {
                Queued::Yes => {}
                Queued::Full => {
                    let slow = target.peer_id.clone();
                    st.kick(&slow, metrics);
                }
                Queued::Gone => DropReason::ReceiverGone.count(metrics, 1),
            },
            Presence::Away { held, .. } => {
                if held.len() >= MAX_HELD_MESSAGES {
                    held.pop_front();
                    DropReason::HeldOverflow.count(metrics, 1);
                } else {
                    metrics.connections.held_messages.inc();
                }
                held.push_back(frame);
            }
        }
        Ok(())
    }

    /// Removes a peer at once (a leave, a client close, a kick) if it is
    /// still on connection `conn_id`, and tells the others. Returns whether
    /// it was removed.
    pub fn remove(
        &self,
        peer_id: &str,
        conn_id: u64,
        reason: LeaveReason,
        metrics: &Metrics,
    ) -> bool {
        let mut st = self.state.lock();
        let Some(index) = st
            .members
            .iter()
            .position(|m| &*m.peer_id == peer_id && m.is_conn(conn_id))
        else {
            return false;
        };
        st.take(index, reason, metrics);
        true
    }

    /// The peer's connection dropped: it keeps its place, silently, until
    /// [`Room::expire`] or a resume. Returns whether it was in the room.
    pub fn set_away(&self, peer_id: &str, conn_id: u64, reason: LeaveReason) -> bool {
        let mut st = self.state.lock();
        match st
            .members
            .iter_mut()
            .find(|m| &*m.peer_id == peer_id && m.is_conn(conn_id))
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
    pub fn expire(&self, peer_id: &str, conn_id: u64, metrics: &Metrics) -> Option<LeaveReason> {
        let mut st = self.state.lock();
        let index = st.members.iter().position(|m| {
            &*m.peer_id == peer_id
                && matches!(&m.presence, Presence::Away { conn_id: c, .. } if *c == conn_id)
        })?;
        let Presence::Away { reason, .. } = st.members[index].presence else {
            unreachable!("matched above");
        };
        st.take(index, reason, metrics);
        Some(reason)
    }
}

impl State {
    /// Removes member `index`, tells the others, and closes an empty room.
    fn take(&mut self, index: usize, reason: LeaveReason, metrics: &Metrics) {
        let member = self.members.remove(index);
        if let Presence::Away { held, .. } = &member.presence
            && !held.is_empty()
        {
            metrics.connections.held_messages.sub(held.len() as i64);
            DropReason::GraceExpired.count(metrics, held.len() as u64);
        }
        metrics.rooms.leave(reason);
        metrics.rooms.room_peers.observe(self.members.len() as f64);
        if self.members.is_empty() {
            self.closed = true;
            return;
        }
        let left = Frame::new(
            OutKind::PeerLeft,
            ServerMessage::PeerLeft {
                peer_id: &member.peer_id,
                reason,
            }
            .to_json(),
        );
        self.broadcast(&left, None, metrics);
    }

    /// Queues a frame to every connected member but `except`; members whose
    /// queue is full are kicked.
    fn broadcast(&mut self, frame: &Frame, except: Option<&PeerId>, metrics: &Metrics) {
        let mut slow = Vec::new();
        for member in &self.members {
            if Some(&member.peer_id) == except {
                continue;
            }
            if let Presence::Live(handle) = &member.presence {
                match handle.send(frame.clone()) {
                    Queued::Yes => {}
                    Queued::Full => slow.push(member.peer_id.clone()),
                    Queued::Gone => DropReason::ReceiverGone.count(metrics, 1),
                }
            }
        }
        for peer_id in slow {
            self.kick(&peer_id, metrics);
        }
    }

    /// Removes a member whose queue overflowed and stops its connection.
    fn kick(&mut self, peer_id: &str, metrics: &Metrics) {
        let Some(index) = self.members.iter().position(|m| &*m.peer_id == peer_id) else {
            return;
        };
        if let Presence::Live(handle) = &self.members[index].presence {
            handle.stop(StopReason::Kicked(KickReason::SlowConsumer));
        }
        KickReason::SlowConsumer.count(metrics);
        DropReason::SlowConsumer.count(metrics, 1);
        self.take(index, LeaveReason::Kicked, metrics);
    }
}
