//! The end of a resume grace: a peer whose connection dropped keeps its
//! place until then, and leaves if it has not resumed.

use std::sync::Arc;
use std::time::Duration;

use super::journal::Journal;
use super::resume::TokenId;
use super::room::Room;
use super::{Hub, PeerId};

/// A peer away inside its resume grace, as its expiry timer knows it.
pub struct AwayPeer {
    pub peer_id: PeerId,
    /// The connection that dropped (a restored peer gets a fresh number).
    pub conn_id: u64,
    /// The token that takes the place back, if it has one left.
    pub token: Option<TokenId>,
    /// The session a leave is recorded on.
    pub session: u128,
    pub session_id: Arc<str>,
}

/// Ends the grace of `peer` after `grace`: if it has not resumed by then,
/// it leaves the room (the others see `peer-left`), the leave is recorded
/// on its session and the store forgets its resume state.
pub fn spawn_grace_expiry(hub: Arc<Hub>, room: Arc<Room>, peer: AwayPeer, grace: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        if let Some(token) = &peer.token {
            hub.tokens.expire(token);
        }
        if let Some(reason) = room.expire(&peer.peer_id, peer.conn_id, &hub.metrics) {
            // A record without a token is forgotten whatever id is named.
            let protocol = room.dialect().protocol();
            Journal::new(&hub, peer.session, &peer.session_id, protocol).grace_ended(
                room.name(),
                &peer.peer_id,
                reason,
                peer.token.unwrap_or_default(),
            );
        }
        hub.rooms.forget_if_closed(&room, &hub.metrics);
    });
}
