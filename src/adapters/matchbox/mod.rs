//! `GET /matchbox/<room>[?next=N]`: matchbox_server 0.15's endpoint, so that
//! `matchbox_socket` (and `bevy_matchbox`, ggrs) work unchanged against
//! `ws://host/matchbox/<room>`. Peer ids are UUIDs the server assigns;
//! `?next=N` puts the next N peers of that name in a room of their own, in
//! the order they come, as matchbox_server does (`next=0`, or one that is
//! not a number, is no grouping). Room names follow Chatsubo's rule, and a
//! room holds at most `--max-room-size` peers.

mod wire;

use std::sync::Arc;

use warp::Filter;
use warp::reply::Response;

pub use wire::Matchbox;

use crate::http::{Admitted, accept, upgrade_request};
use crate::protocol::{ProtocolError, RoomName};
use crate::signaling::{ConnectionInfo, Dialect, Entry, Hub, PeerId};

/// The WebSocket endpoint.
pub fn route(hub: Arc<Hub>) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let dialect: Arc<dyn Dialect> = Arc::new(Matchbox);
    let room = warp::path::param::<String>()
        .map(Some)
        .or(warp::any().map(|| None))
        .unify();
    warp::path("matchbox")
        .and(room)
        .and(warp::path::end())
        .and(warp::get())
        .and(warp::query::<Vec<(String, String)>>())
        .and(upgrade_request())
        .map(
            move |room: Option<String>, query: Vec<(String, String)>, request| {
                let next = query
                    .iter()
                    .find(|(name, _)| name == "next")
                    .and_then(|(_, value)| value.parse::<usize>().ok());
                let entry = entry(room.as_deref(), next, hub.config.max_room_size as usize);
                accept(&hub, request, |client: Admitted| ConnectionInfo {
                    remote: client.remote,
                    user_agent: client.user_agent,
                    permit: client.permit,
                    dialect: dialect.clone(),
                    peer_id: Some(PeerId::from(uuid::Uuid::new_v4().to_string())),
                    entry,
                })
            },
        )
}

/// What a connection to `/matchbox/<room>?next=<next>` does as it comes.
fn entry(room: Option<&str>, next: Option<usize>, seats: usize) -> Entry {
    let name = match RoomName::parse(room.unwrap_or_default()) {
        Ok(name) => name,
        Err(err) => return Entry::Refuse(err),
    };
    match next {
        None | Some(0) => Entry::Room(Some(name.as_str().to_string())),
        Some(of) if of > seats => Entry::Refuse(ProtocolError::invalid(format!(
            "next={of} is more than a room holds here ({seats}, --max-room-size)"
        ))),
        Some(of) => Entry::Group { name, of },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_follows_the_path_and_next() {
        assert!(matches!(entry(Some("g"), None, 10), Entry::Room(Some(r)) if r == "g"));
        assert!(matches!(
            entry(Some("g"), Some(0), 10),
            Entry::Room(Some(_))
        ));
        assert!(matches!(
            entry(Some("g"), Some(2), 10),
            Entry::Group { of: 2, .. }
        ));
        assert!(matches!(entry(Some("g"), Some(11), 10), Entry::Refuse(_)));
        assert!(matches!(entry(None, None, 10), Entry::Refuse(_)));
        assert!(matches!(entry(Some("a b"), None, 10), Entry::Refuse(_)));
    }
}
