//! The signaling contract, one test per rule, a file per part of the
//! protocol.

mod client_telemetry;
mod errors;
mod join;
mod limits;
mod liveness;
mod rate_limit;
mod relay;
mod resume;

use crate::helpers::*;

/// Two peers in `room`; `a` has seen `b` arrive.
async fn pair(app: &TestApp, room: &str) -> (Client, Client) {
    let mut a = app.joined(room, "ann").await;
    let b = app.joined(room, "bob").await;
    let pj = a.recv_type("peer-joined").await;
    assert_eq!(pj["peerId"], b.peer_id());
    (a, b)
}
