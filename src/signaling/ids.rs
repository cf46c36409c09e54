//! Identifiers the server hands out: session ids and the peer ids made
//! from them.

use std::sync::Arc;

use parking_lot::Mutex;
use ulid::Generator;

/// A peer id: server-assigned, opaque, never reused. It is `p_` and the
/// session id of the connection it was made for ([`peer_id_of`]): a ULID
/// (48 bits of milliseconds, 80 random bits, monotonic within this process),
/// so a restarted server cannot hand out an id that an earlier run used
/// unless the clock went back and 80 random bits repeated.
pub type PeerId = Arc<str>;

/// Hands out session ids: ULIDs from one monotonic generator.
pub struct IdGenerator {
    ulids: Mutex<Generator>,
}

impl Default for IdGenerator {
    fn default() -> Self {
        IdGenerator {
            ulids: Mutex::new(Generator::new()),
        }
    }
}

impl IdGenerator {
    fn next(&self) -> ulid::Ulid {
        let mut generator = self.ulids.lock();
        // Overflow needs 2^80 ids in one millisecond; fall back to a fresh one.
        generator.generate().unwrap_or_else(|_| ulid::Ulid::new())
    }

    /// A new session id (`01JD…` as text), time-sortable.
    pub fn session_ulid(&self) -> ulid::Ulid {
        self.next()
    }
}

/// The peer id a new connection gets: `p_` and its session id, so that
/// the store can find a peer's first session without an index entry
/// ([`crate::protocol::session_of_peer`]). Unique and never reused, as
/// session ids are.
pub fn peer_id_of(session: ulid::Ulid) -> PeerId {
    Arc::from(crate::protocol::peer_of_session(session.0))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_are_unique_and_sorted() {
        let ids = IdGenerator::default();
        let sessions: Vec<String> = (0..10_000)
            .map(|_| ids.session_ulid().to_string())
            .collect();
        let mut sorted = sessions.clone();
        sorted.sort();
        assert_eq!(sessions, sorted, "session ids sort in creation order");
        let peers: HashSet<PeerId> = (0..10_000)
            .map(|_| peer_id_of(ids.session_ulid()))
            .collect();
        assert_eq!(peers.len(), 10_000);
        assert!(peers.iter().all(|p| p.starts_with("p_") && p.len() == 28));
    }
}
