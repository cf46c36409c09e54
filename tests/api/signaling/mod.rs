//! The signaling contract, one test per rule, a file per part of the
//! protocol.

mod client_telemetry;
mod errors;
mod ice_servers;
mod join;
mod limits;
mod liveness;
mod rate_limit;
mod relay;
mod resume;

use std::time::Duration;

use chatsubo::Config;

use crate::helpers::*;

/// Two peers in `room`; `a` has seen `b` arrive.
async fn pair(app: &TestApp, room: &str) -> (Client, Client) {
    let mut a = app.joined(room, "ann").await;
    let b = app.joined(room, "bob").await;
    let pj = a.recv_type("peer-joined").await;
    assert_eq!(pj["peerId"], b.peer_id());
    (a, b)
}

/// The set-up of a resume: a server configured by `configure`, `a` and
/// `b` in `room`, then b's socket dropped without a close frame, and the
/// server has seen the drop: b is away, inside its grace. Returns the
/// server, `a`, and b's peer id and resume token.
async fn away_from(
    room: &str,
    configure: impl FnOnce(&mut Config),
) -> (TestApp, Client, String, String) {
    let app = spawn_app_with(configure).await;
    let (a, b) = pair(&app, room).await;
    let (b_id, token) = (b.peer_id(), b.token());
    b.vanish();
    app.wait_connections(1).await;
    (app, a, b_id, token)
}

/// [`away_from`] "lobby", on a server with this resume grace.
async fn away(grace: Duration) -> (TestApp, Client, String, String) {
    away_from("lobby", |c| c.resume_grace_secs = grace).await
}
