//! `/api/rooms`, `/api/churn` and `/api/stats`: the totals add up to the
//! sessions that were made.

use serde_json::{Value, json};

use super::ms;
use crate::helpers::*;

fn now_ms() -> i128 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000
}

/// The room named `name` in a `/api/rooms` answer.
fn room_of<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room"] == name)
        .unwrap()
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
    let full = room_of(&rooms, "full").clone();
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
    let full = room_of(&rooms, "full");
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
