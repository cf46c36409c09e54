//! Connecting and joining: the welcome, `join` and its answer, a room in
//! the query string, leaving, and ids that are never reused.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;

use super::pair;
use crate::helpers::*;

#[tokio::test]
async fn welcome_comes_first() {
    let app = spawn_app().await;
    let c = app.client().await;
    let w = &c.welcome;
    assert!(w["peerId"].as_str().unwrap().starts_with("p_"));
    assert_eq!(w["sessionId"].as_str().unwrap().len(), 26);
    assert!(w["resumeToken"].as_str().unwrap().len() >= 22);
    assert_eq!(w["heartbeatIntervalMs"], 15000);
    assert_eq!(w["maxRoomSize"], 10);
    app.stop().await;
}

#[tokio::test]
async fn welcome_is_first_also_with_a_room_query_and_carries_the_configuration() {
    let app = spawn_app_with(|c| {
        c.heartbeat_interval_ms = 20_000;
        c.max_room_size = 4;
    })
    .await;
    // Client::connect asserts that the first frame is the welcome.
    let c = app.client_with("?room=lobby").await;
    let w = &c.welcome;
    for field in ["peerId", "sessionId", "resumeToken"] {
        assert!(!w[field].as_str().unwrap().is_empty(), "{field} in {w}");
    }
    assert_eq!(w["heartbeatIntervalMs"], 20_000);
    assert_eq!(w["maxRoomSize"], 4);
    app.stop().await;
}

#[tokio::test]
async fn join_lists_the_peers_and_announces_the_newcomer() {
    let app = spawn_app().await;
    let mut a = app.client().await;
    let joined = a.join("lobby", "ann").await;
    assert_eq!(joined["room"], "lobby");
    assert_eq!(joined["peerId"], a.peer_id());
    assert_eq!(joined["peers"], json!([]));
    assert_eq!(joined["resumed"], false);

    let mut b = app.client().await;
    let joined = b.join("lobby", "bob").await;
    assert_eq!(joined["peerId"], b.peer_id());
    assert_eq!(
        joined["peers"],
        json!([{"peerId": a.peer_id(), "displayName": "ann"}])
    );
    let pj = a.recv_type("peer-joined").await;
    assert_eq!(
        pj,
        json!({"type":"peer-joined","peerId": b.peer_id(),"displayName":"bob"})
    );

    // Display names are counted in characters, up to 64.
    let long = "é".repeat(64);
    let mut d = app.client().await;
    d.join("elsewhere", &long).await;
    let mut e = app.client().await;
    let joined = e.join("elsewhere", "eve").await;
    assert_eq!(joined["peers"][0]["displayName"], long.as_str());
    assert_eq!(d.recv_type("peer-joined").await["displayName"], "eve");

    // A join without a display name.
    let mut c = app.client().await;
    c.send(json!({"type":"join","room":"lobby"})).await;
    let joined = c.recv_type("joined").await;
    let peers = joined["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2);
    assert!(peers.contains(&json!({"peerId": a.peer_id(), "displayName": "ann"})));
    assert!(peers.contains(&json!({"peerId": b.peer_id(), "displayName": "bob"})));
    for x in [&mut a, &mut b] {
        let pj = x.recv_type("peer-joined").await;
        assert_eq!(pj["peerId"], c.peer_id());
        assert!(pj["displayName"].is_null(), "{pj}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_room_query_joins_at_once() {
    let app = spawn_app().await;
    let mut a = app.client_with("?room=lobby").await;
    let joined = a.recv_type("joined").await;
    assert_eq!(joined["room"], "lobby");
    assert_eq!(joined["peerId"], a.peer_id());
    assert_eq!(joined["resumed"], false);
    let mut b = app.client_with("?room=lobby").await;
    let joined = b.recv_type("joined").await;
    assert_eq!(joined["peers"][0]["peerId"], a.peer_id());
    assert_eq!(a.recv_type("peer-joined").await["peerId"], b.peer_id());
    // Already in the room from the query.
    b.send(json!({"type":"join","room":"lobby"})).await;
    assert_eq!(b.recv_error("ALREADY_IN_ROOM").await["ref"], "join");
    app.stop().await;
}

#[tokio::test]
async fn an_invalid_room_query_is_an_invalid_join() {
    let app = spawn_app().await;
    for query in [
        "?room=bad%20room",
        "?room=",
        &format!("?room={}", "x".repeat(65)),
        "?room=caf%C3%A9",
    ] {
        let mut c = app.client_with(query).await;
        let err = c.recv_error("INVALID_MESSAGE").await;
        assert_eq!(err["ref"], "join", "{query}: {err}");
        // Not in a room, and still connected.
        c.send(json!({"type":"leave"})).await;
        c.recv_error("NOT_IN_ROOM").await;
        c.join("ok-room_1.x", "n").await;
    }
    app.stop().await;
}

#[tokio::test]
async fn peer_left_is_sent_at_once_for_a_leave_and_for_a_client_close() {
    let app = spawn_app_with(|c| c.resume_grace_secs = Duration::from_secs(60)).await;
    let (mut a, mut b) = pair(&app, "lobby").await;
    b.send(json!({"type":"leave"})).await;
    let left = a.recv_type("peer-left").await;
    assert_eq!(
        left,
        json!({"type":"peer-left","peerId":b.peer_id(),"reason":"left"})
    );
    // b may join again, and then close its socket itself.
    b.join("lobby", "bob").await;
    a.recv_type("peer-joined").await;
    let b_id = b.peer_id();
    b.close().await;
    // The grace is a minute: `left` must not wait for it.
    let left = a.recv_type("peer-left").await;
    assert_eq!(
        left,
        json!({"type":"peer-left","peerId":b_id,"reason":"left"})
    );
    assert_eq!(
        app.metric(r#"chatsubo_leaves_total{reason="left"}"#).await,
        2.0
    );
    app.stop().await;
}

#[tokio::test]
async fn peer_ids_and_session_ids_are_unique() {
    let app = spawn_app().await;
    let mut peers = HashSet::new();
    let mut sessions = HashSet::new();
    let mut tokens = HashSet::new();
    let mut clients = Vec::new();
    let mut in_order = Vec::new();
    for _ in 0..60 {
        let c = app.client().await;
        assert!(peers.insert(c.peer_id()), "peer id reused");
        let session = c.welcome["sessionId"].as_str().unwrap().to_string();
        assert!(sessions.insert(session.clone()));
        in_order.push(session);
        assert!(tokens.insert(c.token()));
        clients.push(c);
    }
    // Session ids sort in the order the connections were made.
    let mut sorted = in_order.clone();
    sorted.sort();
    assert_eq!(sorted, in_order);
    // Ids are not reused after their connections end either.
    for c in clients.drain(..) {
        c.close().await;
    }
    for _ in 0..20 {
        let c = app.client().await;
        assert!(peers.insert(c.peer_id()), "peer id reused");
        assert!(sessions.insert(c.welcome["sessionId"].as_str().unwrap().to_string()));
    }
    app.stop().await;
    // Nor by a restarted server.
    let app = spawn_app().await;
    for _ in 0..20 {
        let c = app.client().await;
        assert!(peers.insert(c.peer_id()), "peer id reused after a restart");
    }
    app.stop().await;
}
