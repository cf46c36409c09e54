//! `/api/sessions` and `/api/sessions/{id}`: a session's record and events,
//! the filters, a resume's link to the session before it, and the leave
//! recorded when a grace ends.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::ms;
use crate::helpers::*;

fn session_of<'a>(list: &'a Value, id: &str) -> Option<&'a Value> {
    list["sessions"]
        .as_array()?
        .iter()
        .find(|s| s["sessionId"] == id)
}

fn kinds(session: &Value) -> Vec<String> {
    session["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_session_is_recorded_with_its_events_in_order_and_a_true_duration() {
    let app = spawn_app().await;
    let opened = Instant::now();
    let mut a = app.client().await;
    let welcomed = Instant::now();
    let a_session = a.welcome["sessionId"].as_str().unwrap().to_string();
    let a_token = a.token();
    a.join("lobby", "ann").await;
    let mut b = app.joined("lobby", "bob").await;
    a.recv_type("peer-joined").await;
    a.send(json!({"type":"telemetry","event":"signaling-rtt","ms":12.5}))
        .await;
    a.send_text("not json").await;
    a.recv_error("INVALID_MESSAGE").await;
    a.send(json!({"type":"offer","to":b.peer_id(),"data":{"sdp":"SDP-SECRET-v=0"}}))
        .await;
    b.recv_type("offer").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let closing = Instant::now();
    a.close().await;
    // The session lasted at least from the welcome to the close we started,
    // and at most from before the connect to the end of the close.
    let at_least = closing.duration_since(welcomed).as_millis() as i128;
    let at_most = opened.elapsed().as_millis() as i128;
    b.send(json!({"type":"leave"})).await;
    b.close().await;

    let path = format!("/api/sessions/{a_session}");
    let s = api_until(&app, &path, |s| !s["endedAt"].is_null()).await;
    assert_eq!(s["room"], "lobby");
    assert_eq!(s["displayName"], "ann");
    assert_eq!(s["remoteAddr"], "127.0.0.1");
    assert_eq!(s["closeReason"], "left");
    assert_eq!(s["resumedFrom"], Value::Null);
    assert_eq!(s["messagesIn"], 4, "join, telemetry, invalid, offer: {s}");
    assert_eq!(s["errors"], 1);
    let duration = s["durationMs"].as_i64().unwrap() as i128;
    assert_eq!(duration, ms(&s["endedAt"]) - ms(&s["connectedAt"]));
    assert!(
        at_least - 2 <= duration && duration <= at_most + 2,
        "durationMs {duration} outside the clock's [{at_least}, {at_most}]"
    );
    assert!(duration >= 400);
    assert_eq!(
        kinds(&s),
        ["connect", "join", "telemetry", "error", "leave"],
        "{s}"
    );
    let events = s["events"].as_array().unwrap();
    assert_eq!(events[2]["event"], "signaling-rtt");
    assert_eq!(events[3]["code"], "INVALID_MESSAGE");
    assert_eq!(events[4]["reason"], "left");
    let times: Vec<i128> = events.iter().map(|e| ms(&e["at"])).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    let list = api_until(&app, "/api/sessions", |l| {
        l["sessions"].as_array().unwrap().len() == 2
            && l["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| !s["endedAt"].is_null())
    })
    .await;
    let first = &list["sessions"][0];
    assert_eq!(first["displayName"], "bob", "newest first: {list}");
    assert_eq!(list["nextCursor"], Value::Null);
    let bob = session_of(&list, first["sessionId"].as_str().unwrap()).unwrap();
    assert_eq!(bob["closeReason"], "left");

    // Filters.
    let (_, by_room) = api(&app, "/api/sessions?room=lobby").await;
    assert_eq!(by_room["sessions"].as_array().unwrap().len(), 2);
    let (_, other) = api(&app, "/api/sessions?room=elsewhere").await;
    assert_eq!(other["sessions"].as_array().unwrap().len(), 0);
    let (_, by_peer) = api(
        &app,
        &format!("/api/sessions?peer={}", s["peerId"].as_str().unwrap()),
    )
    .await;
    assert_eq!(by_peer["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(by_peer["sessions"][0]["sessionId"], a_session.as_str());
    let (_, future) = api(&app, "/api/sessions?since=2100-01-01T00:00:00Z").await;
    assert_eq!(future["sessions"].as_array().unwrap().len(), 0);
    let (_, past) = api(&app, "/api/sessions?until=2000-01-01T00:00:00Z").await;
    assert_eq!(past["sessions"].as_array().unwrap().len(), 0);

    // Nothing relayed and no resume token reaches the store.
    let mut app = app;
    let dir = app.dir.path().join("data");
    app.begin_shutdown();
    app.finished().await;
    let bytes = all_bytes(&dir);
    assert!(
        contains(&bytes, a_session.as_bytes()),
        "the store holds the session"
    );
    assert!(
        !contains(&bytes, b"SDP-SECRET"),
        "relayed data is never stored"
    );
    let (_, secret) = a_token.split_once('.').unwrap();
    assert!(
        !contains(&bytes, secret.as_bytes()),
        "resume tokens are never stored"
    );
}

#[tokio::test]
async fn a_resume_links_the_sessions_and_keeps_the_peer_id() {
    let app = spawn_app().await;
    let a = app.joined("room1", "ann").await;
    let mut b = app.joined("room1", "bob").await;
    let old_session = a.welcome["sessionId"].as_str().unwrap().to_string();
    let (token, peer) = (a.token(), a.peer_id());
    a.vanish();
    // The server notices the dropped socket.
    let old_path = format!("/api/sessions/{old_session}");
    api_until(&app, &old_path, |s| !s["endedAt"].is_null()).await;
    let mut c = app.client().await;
    let new_session = c.welcome["sessionId"].as_str().unwrap().to_string();
    let joined = c.resume("room1", &token).await;
    assert_eq!(joined["resumed"], true);
    b.expect_silence(Duration::from_millis(100)).await;

    let old = api_until(&app, &old_path, |s| !s["endedAt"].is_null()).await;
    assert_eq!(old["closeReason"], "disconnected");
    assert_eq!(kinds(&old), ["connect", "join", "disconnect"]);
    let new = api_until(&app, &format!("/api/sessions/{new_session}"), |s| {
        s["resumedFrom"] == old_session.as_str()
    })
    .await;
    assert_eq!(
        new["peerId"],
        peer.as_str(),
        "the peer id it holds at its end"
    );
    assert_eq!(new["room"], "room1");
    assert_eq!(kinds(&new), ["connect", "resume"]);
    assert_eq!(new["events"][1]["resumedFrom"], old_session.as_str());
    // Both sessions of the peer are found by its id.
    let (_, by_peer) = api(&app, &format!("/api/sessions?peer={peer}")).await;
    let ids: Vec<&str> = by_peer["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sessionId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [new_session.as_str(), old_session.as_str()]);
    let stats = api_until(&app, "/api/stats", |s| s["reconnects"] == 1).await;
    assert_eq!(stats["sessions"], 3);
    let churn = api_until(&app, "/api/churn?room=room1", |c| {
        c["buckets"].as_array().is_some_and(|b| !b.is_empty())
    })
    .await;
    let sum = |f: &str| -> u64 {
        churn["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b[f].as_u64().unwrap())
            .sum()
    };
    assert_eq!((sum("joins"), sum("resumes"), sum("leaves")), (2, 1, 0));
    app.stop().await;
}

#[tokio::test]
async fn the_end_of_a_grace_records_a_leave_for_the_old_session() {
    let app = spawn_app_with(|c| c.resume_grace_secs = Duration::from_millis(300)).await;
    let a = app.joined("g", "ann").await;
    let mut b = app.joined("g", "bob").await;
    let session = a.welcome["sessionId"].as_str().unwrap().to_string();
    a.vanish();
    let left = b.recv_type("peer-left").await;
    assert_eq!(left["reason"], "disconnected");
    let s = api_until(&app, &format!("/api/sessions/{session}"), |s| {
        s["events"].as_array().unwrap().len() == 4
    })
    .await;
    assert_eq!(kinds(&s), ["connect", "join", "disconnect", "leave"]);
    assert_eq!(s["events"][3]["reason"], "disconnected");
    assert_eq!(s["closeReason"], "disconnected");
    app.stop().await;
}

#[tokio::test]
async fn a_session_still_open_shows_its_message_counts_so_far() {
    let app = spawn_app().await;
    let mut a = app.joined("live", "ann").await;
    let mut b = app.joined("live", "bob").await;
    a.recv_type("peer-joined").await;
    for _ in 0..3 {
        a.send(json!({"type":"offer","to":b.peer_id(),"data":{"sdp":"v=0"}}))
            .await;
        b.recv_type("offer").await;
    }
    a.send_text("not json").await;
    a.recv_error("INVALID_MESSAGE").await;
    // In: the join, three offers, the bad frame. Out: welcome, joined,
    // peer-joined and the error, all read by the client already.
    let id = a.welcome["sessionId"].as_str().unwrap().to_string();
    let s = api_until(&app, &format!("/api/sessions/{id}"), |s| {
        s["messagesIn"] == 5
    })
    .await;
    assert!(s["endedAt"].is_null(), "{s}");
    assert_eq!(s["messagesOut"], 4, "{s}");
    assert_eq!(s["errors"], 1, "{s}");
    let (status, list) = api(&app, "/api/sessions?room=live").await;
    assert_eq!(status, 200);
    let listed = session_of(&list, &id).expect("the open session is listed");
    assert_eq!(listed["messagesIn"], 5, "{listed}");
    assert_eq!(listed["messagesOut"], 4, "{listed}");
    // Once it ends, the stored counts are the same.
    a.close().await;
    let ended = api_until(&app, &format!("/api/sessions/{id}"), |s| {
        !s["endedAt"].is_null()
    })
    .await;
    assert_eq!(ended["messagesIn"], 5, "{ended}");
    assert_eq!(ended["messagesOut"], 4, "{ended}");
}
