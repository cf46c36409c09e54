//! Resume: a peer that joins again with its token inside the grace keeps
//! its id and its place, unseen by the others, and gets the relays held for
//! it; a spent, late or unknown token is a fresh join.

use std::time::Duration;

use serde_json::json;

use super::{away, pair};
use crate::helpers::*;

#[tokio::test]
async fn a_peer_that_timed_out_can_resume_inside_the_grace() {
    let app = spawn_app_with(|c| {
        c.heartbeat_interval_ms = 200;
        c.resume_grace_secs = Duration::from_secs(30);
    })
    .await;
    let (mut a, b) = pair(&app, "lobby").await;
    let (b_id, token) = (b.peer_id(), b.token());
    // `b` stops polling; `a` keeps reading (and answering pings) until the
    // server has dropped b's connection.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while app.metric("chatsubo_active_connections").await != 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "b was not dropped");
        a.expect_silence(Duration::from_millis(20)).await;
    }
    a.ping_next(1).await;
    let mut b2 = app.client().await;
    let joined = b2.resume("lobby", &token).await;
    assert_eq!(joined["resumed"], true);
    assert_eq!(joined["peerId"], b_id);
    a.ping_next(2).await;
    drop(b);
    app.stop().await;
}

#[tokio::test]
async fn resume_inside_the_grace_is_invisible_to_the_others_and_delivers_held_relays() {
    let (app, mut a, b_id, token) = away(Duration::from_secs(30)).await;
    // Relays to a peer inside its grace are held, in order.
    for i in 0..3 {
        a.send(json!({"type":"ice-candidate","to":b_id,"data":{"seq":i}}))
            .await;
    }
    a.send(json!({"type":"offer","to":b_id,"data":{"seq":3}}))
        .await;
    a.ping_next(1).await;

    let mut b2 = app.client().await;
    assert_ne!(b2.peer_id(), b_id);
    let joined = b2.resume("lobby", &token).await;
    assert_eq!(joined["resumed"], true);
    assert_eq!(joined["peerId"], b_id);
    assert_eq!(joined["room"], "lobby");
    assert_eq!(
        joined["peers"],
        json!([{"peerId": a.peer_id(), "displayName": "ann"}])
    );
    for i in 0..4 {
        let m = b2.recv().await;
        assert_eq!(m["type"], if i < 3 { "ice-candidate" } else { "offer" });
        assert_eq!(m["from"], a.peer_id());
        assert_eq!(m["data"]["seq"], i);
    }
    // The others saw neither peer-left nor peer-joined.
    a.ping_next(2).await;
    // The resumed peer acts as its old id, both ways.
    b2.send(json!({"type":"answer","to":a.peer_id(),"data":{"ok":1}}))
        .await;
    assert_eq!(a.recv_type("answer").await["from"], b_id);
    a.send(json!({"type":"ice-candidate","to":b_id,"data":{"ok":2}}))
        .await;
    assert_eq!(b2.recv_type("ice-candidate").await["data"]["ok"], 2);
    // The new welcome carries a fresh token for the next resume.
    assert_ne!(b2.token(), token);
    assert_eq!(
        app.metric(r#"chatsubo_reconnections_total{outcome="resumed"}"#)
            .await,
        1.0
    );
    assert_eq!(
        app.metric("chatsubo_reconnection_attempts_total").await,
        1.0
    );
    app.stop().await;
}

#[tokio::test]
async fn at_most_64_relays_are_held_for_an_away_peer_and_the_newest_are_kept() {
    let (app, mut a, b_id, token) = away(Duration::from_secs(30)).await;
    for i in 0..70 {
        a.send(json!({"type":"ice-candidate","to":b_id,"data":{"seq":i}}))
            .await;
    }
    a.ping_next(1).await;
    let mut b2 = app.client().await;
    assert_eq!(b2.resume("lobby", &token).await["resumed"], true);
    for i in 6..70 {
        let m = b2.recv_type("ice-candidate").await;
        assert_eq!(m["data"]["seq"], i);
    }
    b2.ping_next(2).await;
    assert_eq!(
        app.metric(r#"chatsubo_dropped_messages_total{reason="held_overflow"}"#)
            .await,
        6.0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_spent_token_gives_a_fresh_join_and_counts_as_a_failed_resume() {
    let (app, mut a, b_id, token) = away(Duration::from_secs(30)).await;
    let mut b2 = app.client().await;
    assert_eq!(b2.resume("lobby", &token).await["resumed"], true);

    // The same token again: a fresh join under the new connection's own id.
    let mut b3 = app.client().await;
    b3.send(json!({"type":"join","room":"lobby","displayName":"bob3","resumeToken":token}))
        .await;
    let joined = b3.recv_type("joined").await;
    assert_eq!(joined["resumed"], false);
    assert_eq!(joined["peerId"], b3.peer_id());
    assert_ne!(b3.peer_id(), b_id);
    for x in [&mut a, &mut b2] {
        let pj = x.recv_type("peer-joined").await;
        assert_eq!(pj["peerId"], b3.peer_id());
    }
    assert_eq!(
        app.metric("chatsubo_reconnection_attempts_total").await,
        2.0
    );
    assert_eq!(
        app.metric(r#"chatsubo_reconnections_total{outcome="resumed"}"#)
            .await,
        1.0
    );
    let failed = app
        .metric(r#"chatsubo_reconnections_total{outcome="expired"}"#)
        .await
        + app
            .metric(r#"chatsubo_reconnections_total{outcome="invalid"}"#)
            .await;
    assert_eq!(failed, 1.0);
    b2.ping_next(1).await;
    app.stop().await;
}

#[tokio::test]
async fn a_token_after_the_grace_gives_a_fresh_join_and_counts_as_a_failed_resume() {
    let (app, mut a, b_id, token) = away(Duration::from_secs(1)).await;
    // Relays held for it are dropped when the grace ends.
    for i in 0..2 {
        a.send(json!({"type":"offer","to":b_id,"data":{"seq":i}}))
            .await;
    }
    let left = a.recv_type("peer-left").await;
    assert_eq!(left["peerId"], b_id);
    assert_eq!(left["reason"], "disconnected");
    assert_eq!(
        app.metric(r#"chatsubo_dropped_messages_total{reason="grace_expired"}"#)
            .await,
        2.0
    );

    let mut b2 = app.client().await;
    let joined = b2.resume("lobby", &token).await;
    assert_eq!(joined["resumed"], false);
    assert_eq!(joined["peerId"], b2.peer_id());
    assert_ne!(b2.peer_id(), b_id);
    assert_eq!(
        joined["peers"],
        json!([{"peerId": a.peer_id(), "displayName": "ann"}])
    );
    assert_eq!(a.recv_type("peer-joined").await["peerId"], b2.peer_id());
    // Nothing held is delivered to the fresh peer.
    b2.ping_next(1).await;
    assert_eq!(
        app.metric("chatsubo_reconnection_attempts_total").await,
        1.0
    );
    assert_eq!(
        app.metric(r#"chatsubo_reconnections_total{outcome="expired"}"#)
            .await,
        1.0
    );
    assert_eq!(
        app.metric(r#"chatsubo_reconnections_total{outcome="resumed"}"#)
            .await,
        0.0
    );
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_token_gives_a_fresh_join_and_counts_as_a_failed_resume() {
    let app = spawn_app().await;
    let mut a = app.joined("lobby", "ann").await;
    // A token that never joined a room, and one that was never issued.
    let mut never_joined = app.client().await;
    for token in [never_joined.token(), "garbage".to_string()] {
        let mut c = app.client().await;
        let joined = c.resume("lobby", &token).await;
        assert_eq!(joined["resumed"], false);
        assert_eq!(joined["peerId"], c.peer_id());
        assert_eq!(a.recv_type("peer-joined").await["peerId"], c.peer_id());
    }
    assert_eq!(
        app.metric("chatsubo_reconnection_attempts_total").await,
        2.0
    );
    assert_eq!(
        app.metric(r#"chatsubo_reconnections_total{outcome="invalid"}"#)
            .await,
        2.0
    );
    never_joined.ping_next(1).await;
    app.stop().await;
}

#[tokio::test]
async fn a_resumed_peer_can_resume_again_with_the_token_of_its_new_welcome() {
    let (app, mut a, b_id, mut token) = away(Duration::from_secs(30)).await;
    for round in 0..3 {
        let mut next = app.client().await;
        let joined = next.resume("lobby", &token).await;
        assert_eq!(joined["resumed"], true, "round {round}");
        assert_eq!(joined["peerId"], b_id);
        a.send(json!({"type":"offer","to":b_id,"data":{"round":round}}))
            .await;
        assert_eq!(next.recv_type("offer").await["data"]["round"], round);
        token = next.token();
        next.vanish();
        app.wait_connections(1).await;
    }
    a.ping_next(1).await;
    assert_eq!(
        app.metric(r#"chatsubo_reconnections_total{outcome="resumed"}"#)
            .await,
        3.0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_peer_alone_in_its_room_keeps_the_room_during_its_grace_and_resumes() {
    let app = spawn_app_with(|c| c.resume_grace_secs = Duration::from_secs(30)).await;
    let b = app.joined("solo", "bob").await;
    let (b_id, token) = (b.peer_id(), b.token());
    b.vanish();
    app.wait_connections(0).await;
    assert_eq!(app.health().await["activeRooms"], 1);
    let mut b2 = app.client().await;
    let joined = b2.resume("solo", &token).await;
    assert_eq!(joined["resumed"], true);
    assert_eq!(joined["peerId"], b_id);
    assert_eq!(joined["peers"], json!([]));
    // Others joining now see it as a member.
    let mut a = app.client().await;
    let joined = a.join("solo", "ann").await;
    assert_eq!(
        joined["peers"],
        json!([{"peerId": b_id, "displayName": "bob"}])
    );
    app.stop().await;
}

#[tokio::test]
async fn the_grace_timer_of_an_earlier_drop_does_not_remove_a_resumed_peer() {
    let (app, mut a, b_id, token) = away(Duration::from_millis(500)).await;
    let mut b2 = app.client().await;
    assert_eq!(b2.resume("lobby", &token).await["resumed"], true);
    // The first connection's grace ends meanwhile; b2 is live, so nothing happens.
    let quiet = Duration::from_millis(1500);
    tokio::join!(a.expect_silence(quiet), b2.expect_silence(quiet));
    a.send(json!({"type":"offer","to":b_id,"data":{"n":1}}))
        .await;
    assert_eq!(b2.recv_type("offer").await["data"]["n"], 1);
    assert_eq!(
        app.metric(r#"chatsubo_leaves_total{reason="disconnected"}"#)
            .await,
        0.0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_resume_while_the_old_connection_is_open_takes_over() {
    let app = spawn_app_with(|c| c.resume_grace_secs = Duration::from_secs(30)).await;
    let (mut a, mut b) = pair(&app, "lobby").await;
    let (b_id, token) = (b.peer_id(), b.token());
    let mut b2 = app.client().await;
    let joined = b2.resume("lobby", &token).await;
    assert_eq!(joined["resumed"], true);
    assert_eq!(joined["peerId"], b_id);
    let (texts, code) = b.collect_until_close().await;
    assert!(texts.is_empty(), "{texts:?}");
    assert_eq!(code, Some(4000));
    app.wait_connections(2).await;
    // The others saw nothing, and relays now go to the new connection.
    a.ping_next(1).await;
    a.send(json!({"type":"offer","to":b_id,"data":{"n":1}}))
        .await;
    assert_eq!(b2.recv_type("offer").await["data"]["n"], 1);
    a.ping_next(2).await;
    app.stop().await;
}
