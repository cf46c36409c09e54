//! The clients people already have, on the same listener: foreign wire
//! protocols translated at the edge into the one signaling core, with its
//! rooms, limits, history, metrics, logs and traces. `matchbox` speaks
//! matchbox_server 0.15's protocol at `/matchbox/<room>`; `peerjs` speaks
//! peerjs-server 1.0's under `/peerjs`. Each is a [`Dialect`] of the core
//! plus the endpoints that bring its connections in.
//!
//! [`Dialect`]: crate::signaling::Dialect

mod matchbox;
mod peerjs;

use std::sync::Arc;

use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

pub use matchbox::Matchbox;
pub use peerjs::PeerJs;

use crate::signaling::Hub;

/// The routes of every foreign protocol; the rest of the tree (and its
/// errors) is `crate::http::routes`'.
pub fn routes(hub: Arc<Hub>) -> BoxedFilter<(Response,)> {
    matchbox::route(hub.clone())
        .or(peerjs::routes(hub))
        .unify()
        .boxed()
}
