//! Relays for a peer that is not in the room (yet), when the room's
//! dialect queues them (PeerJS): held for a short while in case the peer
//! connects, then given up, and the senders are told. Bounded: at most
//! [`MAX_PENDING_PEERS`] missing peers per room and [`MAX_PENDING_FRAMES`]
//! frames each; what does not fit is dropped and counted.

use std::collections::HashMap;

use crate::signaling::PeerId;
use crate::signaling::labels::DropReason;
use crate::signaling::outbox::Frame;
use crate::telemetry::Metrics;

/// Most missing peers a room queues for at once.
pub const MAX_PENDING_PEERS: usize = 1024;
/// Most frames queued for one missing peer.
pub const MAX_PENDING_FRAMES: usize = 64;

#[derive(Default)]
pub(in crate::signaling) struct Pending {
    queues: HashMap<PeerId, Queue>,
}

/// What is queued for one missing peer.
#[derive(Default)]
pub(in crate::signaling) struct Queue {
    pub frames: Vec<Frame>,
    /// Who sent them, each once: the ones told when the queue expires.
    pub senders: Vec<PeerId>,
}

/// What queueing a relay did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pended {
    /// The first frame for this peer: its expiry is to be started.
    First,
    More,
    /// No room for it: dropped (and counted).
    Dropped,
}

impl Pending {
    /// Queues `frame` from `from` for the missing peer `to`.
    pub fn push(&mut self, to: &str, from: &PeerId, frame: Frame, m: &Metrics) -> Pended {
        let first = !self.queues.contains_key(to);
        if first && self.queues.len() >= MAX_PENDING_PEERS {
            DropReason::PendingOverflow.count(m, 1);
            return Pended::Dropped;
        }
        let queue = self.queues.entry(PeerId::from(to)).or_default();
        if queue.frames.len() >= MAX_PENDING_FRAMES {
            DropReason::PendingOverflow.count(m, 1);
            return Pended::Dropped;
        }
        queue.frames.push(frame);
        if !queue.senders.contains(from) {
            queue.senders.push(from.clone());
        }
        if first { Pended::First } else { Pended::More }
    }

    /// What is queued for `peer`, taken out.
    pub fn take(&mut self, peer: &str) -> Option<Queue> {
        self.queues.remove(peer)
    }

    /// Drops everything queued (the room closed), counted.
    pub fn clear(&mut self, m: &Metrics) {
        for (_, queue) in self.queues.drain() {
            DropReason::PendingExpired.count(m, queue.frames.len() as u64);
        }
    }
}
