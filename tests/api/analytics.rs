//! Session analytics end to end: real WebSocket sessions, then the /api
//! answers (http-api.md).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use chatsubo::analytics::event::{CloseReason, Event, EventKind};
use chatsubo::analytics::writer::apply_events;
use chatsubo::analytics::{SledOptions, SledStore, keys, query, retention};

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

fn ms(text: &Value) -> i128 {
    let t = chatsubo::timefmt::parse_rfc3339(text.as_str().expect("a time")).expect("RFC 3339");
    t.unix_timestamp_nanos() / 1_000_000
}

fn now_ms() -> i128 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000
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
async fn churn_rooms_and_stats_add_up() {
    let app = spawn_app_with(|c| c.max_room_size = 2).await;
    let started = now_ms();
    let a = app.joined("full", "ann").await;
    let mut b = app.joined("full", "bob").await;
    let mut c = app.client().await;
    c.send(json!({"type":"join","room":"full","displayName":"cy"}))
        .await;
    c.recv_error("ROOM_FULL").await;
    let mut d = app.joined("other", "dee").await;
    // Live view: two rooms with peers now.
    let rooms = api_until(&app, "/api/rooms?active=true", |r| {
        r["rooms"].as_array().unwrap().len() == 2
    })
    .await;
    let full = rooms["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room"] == "full")
        .unwrap()
        .clone();
    assert_eq!(full["activePeers"], 2);
    assert_eq!(full["peakPeers"], 2);
    a.close().await;
    b.recv_type("peer-left").await;
    b.send(json!({"type":"leave"})).await;
    d.send(json!({"type":"leave"})).await;
    b.close().await;
    c.close().await;
    d.close().await;
    let stats = api_until(&app, "/api/stats", |s| {
        s["sessions"] == 4 && s["p95DurationMs"].is_number() && s["avgDurationMs"].is_number()
    })
    .await;
    assert_eq!(stats["roomFullRejections"], 1);
    assert_eq!(stats["reconnects"], 0);
    assert!(stats["peakConnections"].as_u64().unwrap() >= 4, "{stats}");
    let p50 = stats["p50DurationMs"].as_u64().unwrap();
    let p95 = stats["p95DurationMs"].as_u64().unwrap();
    assert!(p50 <= p95);
    assert!(p95 <= (now_ms() - started) as u64 + 5);

    let churn = api_until(&app, "/api/churn?room=full&bucket=3600", |c| {
        c["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["leaves"].as_u64().unwrap())
            .sum::<u64>()
            == 2
    })
    .await;
    assert_eq!(churn["bucketSeconds"], 3600);
    let sum = |c: &Value, f: &str| -> u64 {
        c["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b[f].as_u64().unwrap())
            .sum()
    };
    assert_eq!(sum(&churn, "joins"), 2);
    assert_eq!(sum(&churn, "rejections"), 1);
    assert_eq!(sum(&churn, "resumes"), 0);
    for b in churn["buckets"].as_array().unwrap() {
        assert_eq!(ms(&b["start"]) % 3_600_000, 0, "aligned buckets");
    }
    // All rooms together.
    let total = api_until(&app, "/api/churn", |c| sum(c, "leaves") == 3).await;
    assert_eq!(sum(&total, "joins"), 3);
    // Every room seen, with its totals; none active now.
    let rooms = api_until(&app, "/api/rooms", |r| {
        r["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["activePeers"] == 0)
    })
    .await;
    let full = rooms["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room"] == "full")
        .unwrap();
    assert_eq!(full["sessions"], 2);
    assert_eq!(full["peakPeers"], 2);
    assert!(ms(&full["firstSeen"]) <= ms(&full["lastSeen"]));
    let (_, active) = api(&app, "/api/rooms?active=true").await;
    assert_eq!(active["rooms"], json!([]));
    assert!(
        app.metric("chatsubo_analytics_events_total{result=\"written\"}")
            .await
            >= 10.0
    );
    assert_eq!(
        app.metric("chatsubo_analytics_events_total{result=\"dropped\"}")
            .await,
        0.0
    );
    assert_eq!(app.metric("chatsubo_storage_errors_total").await, 0.0);
    app.stop().await;
}

async fn churn_sessions(app: &TestApp, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for chunk in 0..n.div_ceil(50) {
        let count = 50.min(n - chunk * 50);
        let url = app.ws_url("");
        let clients =
            futures_util::future::join_all((0..count).map(|_| Client::connect(&url))).await;
        for c in clients {
            ids.push(c.welcome["sessionId"].as_str().unwrap().to_string());
            c.vanish();
        }
    }
    ids
}

/// Reads every page of `path` (which has no `?`) with `limit`.
async fn all_pages(app: &TestApp, limit: usize, during: impl AsyncFnMut()) -> Vec<String> {
    let mut during = during;
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/sessions?limit={limit}&cursor={c}"),
            None => format!("/api/sessions?limit={limit}"),
        };
        let (status, page) = api(app, &path).await;
        assert_eq!(status, 200, "{page}");
        let rows = page["sessions"].as_array().unwrap();
        assert!(rows.len() <= limit);
        ids.extend(
            rows.iter()
                .map(|s| s["sessionId"].as_str().unwrap().to_string()),
        );
        during().await;
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return ids,
        }
    }
}

#[tokio::test]
async fn pagination_over_more_than_a_thousand_sessions_is_exact() {
    let app = spawn_app().await;
    let made = churn_sessions(&app, 1100).await;
    api_until(&app, "/api/stats", |s| s["sessions"] == 1100).await;
    let mut expected = made.clone();
    expected.sort();
    expected.reverse(); // newest first: session ids sort by connectedAt

    let pages = all_pages(&app, 1000, async || {}).await;
    assert_eq!(
        pages, expected,
        "two pages of 1000, every row once, in order"
    );
    let (_, default_page) = api(&app, "/api/sessions").await;
    assert_eq!(default_page["sessions"].as_array().unwrap().len(), 50);

    // While new sessions arrive, paging on from a cursor neither repeats
    // nor skips any of the rows that were there.
    let (_, first) = api(&app, "/api/sessions?limit=100").await;
    let mut ids: Vec<String> = first["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sessionId"].as_str().unwrap().to_string())
        .collect();
    let mut cursor = first["nextCursor"].as_str().unwrap().to_string();
    loop {
        churn_sessions(&app, 7).await;
        let (_, page) = api(&app, &format!("/api/sessions?limit=100&cursor={cursor}")).await;
        ids.extend(
            page["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["sessionId"].as_str().unwrap().to_string()),
        );
        match page["nextCursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    assert_eq!(ids.len(), 1100);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 1100, "no repeats");
    assert_eq!(ids, expected, "no skips, newest first");
    app.stop().await;
}

#[tokio::test]
async fn every_bad_parameter_is_a_400_and_an_unknown_session_a_404() {
    let app = spawn_app().await;
    for path in [
        "/api/sessions?limit=0",
        "/api/sessions?limit=1001",
        "/api/sessions?limit=-1",
        "/api/sessions?limit=ten",
        "/api/sessions?limit=",
        "/api/sessions?since=yesterday",
        "/api/sessions?until=2026-13-01T00:00:00Z",
        "/api/sessions?since=2026-11-28T06:00:00Z&until=2026-11-28T05:00:00Z",
        "/api/sessions?room=",
        "/api/sessions?room=bad%20room",
        "/api/sessions?room=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "/api/sessions?peer=",
        "/api/sessions?peer=p%00x",
        "/api/sessions?cursor=xyz",
        "/api/sessions?colour=blue",
        "/api/sessions?limit=5&limit=6",
        "/api/sessions/01JD0000000000000000000000?x=1",
        "/api/rooms?active=yes",
        "/api/rooms?active=",
        "/api/rooms?room=a",
        "/api/churn?bucket=0",
        "/api/churn?bucket=59",
        "/api/churn?bucket=90",
        "/api/churn?bucket=abc",
        "/api/churn?bucket=6048000",
        "/api/churn?room=%2F",
        "/api/churn?since=2026-11-28",
        "/api/churn?since=2026-11-28T06:00:00Z&until=2026-11-28T05:00:00Z",
        "/api/stats?since=now",
        "/api/stats?until=1",
        "/api/stats?limit=5",
    ] {
        let (status, body) = api(&app, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "BAD_REQUEST", "{path}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().len() > 5);
    }
    for path in [
        "/api/sessions/01JD0000000000000000000000",
        "/api/sessions/not-a-session",
        "/api/nothing",
    ] {
        let (status, body) = api(&app, path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"]["code"], "NOT_FOUND");
    }
    // Good parameters pass.
    for path in [
        "/api/sessions?limit=1000&room=a.b-c_1&since=2026-01-01T00:00:00.000Z&until=2126-01-01T00:00:00%2B02:00",
        "/api/rooms?active=false",
        "/api/churn?bucket=120&room=x",
        "/api/stats?since=2026-01-01T00:00:00Z",
    ] {
        let (status, body) = api(&app, path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    app.stop().await;
}

#[tokio::test]
async fn with_a_token_every_api_request_needs_it_and_it_is_never_stored() {
    const TOKEN: &str = "tok-SECRET-4f9a2c";
    let app = spawn_app_with(|c| c.api_token = Some(TOKEN.into())).await;
    let c = app.joined("t", "ann").await;
    c.close().await;
    for path in [
        "/api/sessions",
        "/api/rooms",
        "/api/churn",
        "/api/stats",
        "/api/sessions/x",
    ] {
        let (status, body) = api(&app, path).await;
        assert_eq!(status, 401, "{path} without a token: {body}");
        assert_eq!(body["error"]["code"], "UNAUTHORIZED");
        let (status, _) = api_with(&app, path, Some("tok-SECRET-4f9a2d")).await;
        assert_eq!(status, 401, "{path} with a wrong token");
        let (status, _) = api_with(&app, path, Some("tok-SECRET-4f9a2")).await;
        assert_eq!(status, 401, "{path} with a prefix of the token");
    }
    let res = reqwest::Client::new()
        .get(app.url("/api/stats"))
        .header("authorization", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "the Bearer scheme is required");
    let challenge = res.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    let (status, _) = api_with(&app, "/api/sessions", Some(TOKEN)).await;
    assert_eq!(status, 200);
    // A wrong token is checked before the parameters.
    let (status, _) = api(&app, "/api/sessions?limit=0").await;
    assert_eq!(status, 401);
    let (status, _) = api_with(&app, "/api/sessions?limit=0", Some(TOKEN)).await;
    assert_eq!(status, 400);
    // The open endpoints stay open.
    assert_eq!(app.get("/health").await.status(), 200);
    let mut app = app;
    let dir = app.dir.path().to_path_buf();
    app.begin_shutdown();
    app.finished().await;
    assert!(
        !contains(&all_bytes(&dir), TOKEN.as_bytes()),
        "the API token is never stored"
    );
}

#[tokio::test]
async fn without_a_token_loopback_clients_are_served() {
    let app = spawn_app().await;
    let (status, body) = api(&app, "/api/sessions").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"sessions": [], "nextCursor": null}));
    app.stop().await;
}

/// The filter tree called directly, with the client address the accept
/// loop would have put on the request (tests may only use loopback sockets).
async fn status_from(
    routes: &warp::filters::BoxedFilter<(warp::reply::Response,)>,
    path: &str,
    from: &str,
    token: Option<&str>,
) -> u16 {
    let mut req = warp::http::Request::get(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let mut req = req.body(String::new()).unwrap();
    req.extensions_mut()
        .insert(chatsubo::http::ClientAddr(from.parse().unwrap()));
    let mut service = warp::service(routes.clone());
    let res = tower_service::Service::call(&mut service, req)
        .await
        .unwrap();
    res.status().as_u16()
}

#[tokio::test]
async fn the_access_rule_by_client_address() {
    use std::sync::Arc;

    use chatsubo::analytics::Recorder;
    use chatsubo::signaling::Hub;
    use chatsubo::telemetry::Metrics;

    let dir = tempfile::tempdir().unwrap();
    let (store, _) = chatsubo::analytics::open(
        dir.path(),
        &SledOptions {
            cache_bytes: 8 << 20,
            flush_every_ms: 500,
        },
    )
    .unwrap();
    let hub_with = |token: Option<&str>| {
        let mut config = test_config(&dir);
        config.api_token = token.map(str::to_string);
        let metrics = Arc::new(Metrics::new(10));
        let recorder = Recorder::disabled(metrics.clone());
        chatsubo::http::routes(Hub::with_analytics(
            Arc::new(config),
            metrics,
            recorder,
            Some(store.clone()),
        ))
    };
    let open = hub_with(None);
    assert_eq!(
        status_from(&open, "/api/stats", "127.0.0.1:5000", None).await,
        200
    );
    assert_eq!(
        status_from(&open, "/api/stats", "127.8.9.10:5000", None).await,
        200
    );
    assert_eq!(
        status_from(&open, "/api/stats", "[::1]:5000", None).await,
        200
    );
    for remote in ["192.0.2.7:5000", "10.1.2.3:5000", "[2001:db8::1]:5000"] {
        for path in [
            "/api/sessions",
            "/api/rooms",
            "/api/churn",
            "/api/stats",
            "/api/sessions/x",
        ] {
            assert_eq!(
                status_from(&open, path, remote, None).await,
                403,
                "{path} from {remote}"
            );
        }
    }
    // The open endpoints answer everyone.
    assert_eq!(
        status_from(&open, "/health", "192.0.2.7:5000", None).await,
        200
    );
    let guarded = hub_with(Some("t0ken"));
    assert_eq!(
        status_from(&guarded, "/api/stats", "192.0.2.7:5000", Some("t0ken")).await,
        200
    );
    assert_eq!(
        status_from(&guarded, "/api/stats", "127.0.0.1:5000", None).await,
        401
    );
    assert_eq!(
        status_from(&guarded, "/api/stats", "192.0.2.7:5000", Some("t0kem")).await,
        401
    );
}

fn event(session: u128, at_ms: u64, seq: u64, kind: EventKind) -> Event {
    Event {
        session,
        at_ms,
        seq,
        kind,
    }
}

#[test]
fn retention_deletes_old_history_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(
        dir.path(),
        &SledOptions {
            cache_bytes: 8 << 20,
            flush_every_ms: 1000,
        },
    )
    .unwrap();
    let day = 86_400_000u64;
    let now = 1_800_000_000_000u64;
    let mut events = Vec::new();
    let mut ids = Vec::new();
    for (i, age_days) in [40u64, 35, 31, 29, 1, 0].into_iter().enumerate() {
        let at = now - age_days * day;
        let id = keys::first_id_at(at) | i as u128;
        ids.push(id);
        let room = if age_days > 30 { "old" } else { "new" };
        events.extend([
            event(
                id,
                at,
                0,
                EventKind::Connect {
                    peer: format!("p_{i}"),
                    remote_addr: "127.0.0.1".into(),
                    user_agent: None,
                    connections: 1,
                },
            ),
            event(
                id,
                at + 1,
                1,
                EventKind::Join {
                    room: room.into(),
                    peer: format!("p_{i}"),
                    display_name: None,
                    size: 1,
                },
            ),
            event(
                id,
                at + 2,
                2,
                EventKind::Leave {
                    room: room.into(),
                    peer: format!("p_{i}"),
                    reason: "left".into(),
                },
            ),
            event(
                id,
                at + 3,
                3,
                EventKind::End {
                    close_reason: CloseReason::Left,
                    messages_in: 2,
                    messages_out: 2,
                    errors: 0,
                },
            ),
        ]);
    }
    apply_events(&store, &events).unwrap();
    let swept = retention::sweep_all(&store, now - 30 * day).unwrap();
    assert_eq!(swept.sessions, 3);
    // Each session's events were written in one batch: one record each.
    assert_eq!(swept.event_records, 3);
    assert_eq!(swept.rooms, 1, "room old was last seen 31 days ago");
    for (i, id) in ids.iter().enumerate() {
        let kept = query::session(&store, *id).unwrap().is_some();
        assert_eq!(kept, i >= 3, "session {i}");
    }
    let rooms = query::rooms(&store).unwrap();
    assert_eq!(rooms.keys().collect::<Vec<_>>(), ["new"]);
    let filter = query::SessionFilter {
        limit: 100,
        peer: Some("p_0".into()),
        ..Default::default()
    };
    assert!(
        query::sessions(&store, &filter)
            .unwrap()
            .sessions
            .is_empty(),
        "index entries go too"
    );
    let churn = query::churn(&store, None, 0, now + day, 86_400 * 365).unwrap();
    let joins: u64 = churn.iter().map(|(_, c)| c.joins).sum();
    assert_eq!(joins, 3, "old total buckets are gone");
    // A second sweep finds nothing.
    assert_eq!(
        retention::sweep_all(&store, now - 30 * day)
            .unwrap()
            .sessions,
        0
    );
}
