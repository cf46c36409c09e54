//! Client-chosen peer ids (PeerJS): an id belongs to the token that first
//! claimed it, for as long as its peer is in the room (connected, or away
//! inside its resume grace). The same token takes the place back; another
//! token is refused, so nobody can act as someone else.

use std::sync::Arc;

use subtle::ConstantTimeEq;

use super::Room;
use super::members::{Claim, Member, Presence};
use crate::signaling::PeerId;
use crate::signaling::outbox::ConnHandle;
use crate::telemetry::Metrics;

/// What a claim gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Claimed {
    /// A new member; the room's size after it.
    Fresh(usize),
    /// The id's own token took its place back (from a connection that
    /// dropped, or one still open, which is stopped), held for the session
    /// `resumed_from`.
    Resumed { size: usize, resumed_from: Arc<str> },
}

/// Why a claim was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum ClaimRefused {
    /// Another token holds the id.
    Taken,
    /// The room emptied and closed meanwhile; look it up again.
    Closed,
}

impl Room {
    /// Claims `peer_id` for the token whose SHA-256 is `token_hash`, on
    /// connection `conn` of session `session_id`.
    pub fn claim(
        &self,
        peer_id: &PeerId,
        token_hash: [u8; 32],
        session_id: &Arc<str>,
        conn: &ConnHandle,
        m: &Metrics,
    ) -> Result<Claimed, ClaimRefused> {
        let mut st = self.state.lock();
        if st.closed {
            return Err(ClaimRefused::Closed);
        }
        let Some(index) = st.index_of(peer_id) else {
            let mut member = Member::new(peer_id.clone(), None, Presence::Live(conn.clone()));
            member.claim = Some(Box::new(Claim {
                token_hash,
                session_id: session_id.clone(),
            }));
            self.admit(&mut st, member, m);
            return Ok(Claimed::Fresh(st.members.len()));
        };
        let claim = st.members[index]
            .claim
            .as_mut()
            .filter(|c| bool::from(c.token_hash.ct_eq(&token_hash)))
            .ok_or(ClaimRefused::Taken)?;
        let resumed_from = std::mem::replace(&mut claim.session_id, session_id.clone());
        self.take_over(&mut st, index, conn, m);
        Ok(Claimed::Resumed {
            size: st.members.len(),
            resumed_from,
        })
    }
}
