//! `/peerjs`: peerjs-server 1.0's endpoints, so that a PeerJS app
//! configured with `{host, port, path: "/peerjs"}` works unchanged. The
//! WebSocket is `/peerjs/peerjs?key=&id=&token=`: a key of `--peerjs-key`
//! is one namespace of ids (stored as a room of that name; no room-size
//! cap and no shared relay budget apply to it, each connection's own rate
//! limit does). An id is owned by the token that first claimed it, while
//! its peer is connected or inside its resume grace; the same token takes
//! it back, another gets `ID-TAKEN`.

mod http;
mod wire;

use std::sync::Arc;

use serde::Deserialize;
use warp::Filter;
use warp::reply::Response;

pub use wire::{PeerJs, valid_id};

use crate::http::{Admitted, accept, upgrade_request};
use crate::protocol::ProtocolError;
use crate::signaling::{ConnectionInfo, Dialect, Entry, Hub, PeerId};

#[derive(Deserialize, Default)]
struct Claim {
    key: Option<String>,
    id: Option<String>,
    token: Option<String>,
}

/// Every PeerJS route: the WebSocket, and the HTTP side.
pub fn routes(
    hub: Arc<Hub>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let dialect: Arc<dyn Dialect> = Arc::new(PeerJs {
        expire: hub.config.adapters.peerjs_expire(),
    });
    let ws_hub = hub.clone();
    let query = warp::query::<Claim>()
        .or(warp::any().map(Claim::default))
        .unify();
    let ws = warp::path!("peerjs" / "peerjs")
        .and(warp::get())
        .and(query)
        .and(upgrade_request())
        .map(move |claim: Claim, request| {
            let hub = &ws_hub;
            let (peer_id, entry) = entry(hub, claim);
            accept(hub, request, |client: Admitted| ConnectionInfo {
                remote: client.remote,
                user_agent: client.user_agent,
                permit: client.permit,
                dialect: dialect.clone(),
                peer_id,
                entry,
            })
        });
    ws.or(http::routes(hub)).unify()
}

/// What a connection claiming `claim` does as it comes: claims its id, or
/// is refused with peerjs-server's own words (an `ERROR`, then a close).
fn entry(hub: &Hub, claim: Claim) -> (Option<PeerId>, Entry) {
    let refuse = |msg: &str| (None, Entry::Refuse(ProtocolError::invalid(msg)));
    let nonempty = |v: Option<String>| v.filter(|v| !v.is_empty());
    let (Some(key), Some(id), Some(token)) = (
        nonempty(claim.key),
        nonempty(claim.id),
        nonempty(claim.token),
    ) else {
        return refuse("No id, token, or key supplied to websocket server");
    };
    let Some(namespace) = hub
        .config
        .adapters
        .peerjs_keys
        .iter()
        .find(|k| k.as_str() == key)
    else {
        return refuse("Invalid key provided");
    };
    if !valid_id(&id) {
        return refuse("Invalid id provided");
    }
    if token.len() > 256 {
        return refuse("Invalid token provided");
    }
    let entry = Entry::Claim {
        namespace: namespace.clone(),
        token,
    };
    (Some(PeerId::from(id)), entry)
}
