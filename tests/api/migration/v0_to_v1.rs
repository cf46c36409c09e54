//! v0 → v1: session values gain `durationMs`, and the version is recorded.

use serde_json::json;

use chatsubo::analytics::{self, layout as keys};

use super::open_store;
use crate::helpers::*;

/// The v0 layout: the same trees and keys as v1, no schema version key,
/// and session values without `durationMs` (readers computed it).
fn write_v0_store(dir: &std::path::Path, id: u128, connected: u64, ended: u64) {
    let db = sled::open(dir).unwrap();
    let sessions = db.open_tree("sessions").unwrap();
    let v0 = json!({
        "sessionId": ulid::Ulid(id).to_string(),
        "peerId": "p_old",
        "room": "attic",
        "displayName": "ann",
        "remoteAddr": "203.0.113.7",
        "userAgent": null,
        "connectedAt": connected,
        "endedAt": ended,
        "closeReason": "left",
        "resumedFrom": null,
        "messagesIn": 3,
        "messagesOut": 4,
        "errors": 0
    });
    sessions
        .insert(keys::session_key(id), serde_json::to_vec(&v0).unwrap())
        .unwrap();
    db.open_tree("by_room")
        .unwrap()
        .insert(keys::index_key("attic", id), &[])
        .unwrap();
    db.open_tree("by_peer")
        .unwrap()
        .insert(keys::index_key("p_old", id), &[])
        .unwrap();
    db.open_tree("events")
        .unwrap()
        .insert(
            keys::event_key(id, connected, 0),
            serde_json::to_vec(&json!({"at": connected, "kind": "connect", "peer": "p_old", "remoteAddr": "203.0.113.7"})).unwrap(),
        )
        .unwrap();
    db.flush().unwrap();
}

#[tokio::test]
async fn a_v0_store_is_migrated_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Two hours ago: well inside the retention.
    let connected = (time::OffsetDateTime::now_utc().unix_timestamp() as u64 - 7200) * 1000 + 123;
    let id = keys::first_id_at(connected) | 77;
    write_v0_store(&data, id, connected, connected + 61_000);

    let mut config = test_config(&dir);
    config.data_dir = data.clone();
    let app = spawn_with_config(config, dir).await;
    let session_id = ulid::Ulid(id).to_string();
    let (status, s) = api(&app, &format!("/api/sessions/{session_id}")).await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(
        s["durationMs"], 61_000,
        "filled in by the v0 → v1 migration"
    );
    assert_eq!(s["closeReason"], "left");
    let at =
        time::OffsetDateTime::from_unix_timestamp_nanos(connected as i128 * 1_000_000).unwrap();
    assert_eq!(
        s["connectedAt"],
        chatsubo::timefmt::rfc3339_millis(at).as_str()
    );
    assert_eq!(s["events"][0]["kind"], "connect");
    let (_, by_room) = api(&app, "/api/sessions?room=attic").await;
    assert_eq!(by_room["sessions"][0]["sessionId"], session_id.as_str());
    app.stop().await;
}

#[test]
fn the_v0_to_v1_migration_rewrites_values_and_records_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let connected = 1_764_300_000_000u64;
    let id = keys::first_id_at(connected) | 5;
    write_v0_store(dir.path(), id, connected, connected + 1234);
    let store = open_store(dir.path());
    assert_eq!(analytics::layout::read_version(&store).unwrap(), None);
    let prepared = analytics::layout::prepare(&store).unwrap();
    assert_eq!(prepared.found, Some(0), "data without a version is v0");
    assert_eq!(prepared.now, analytics::layout::SCHEMA_VERSION);
    assert_eq!(
        analytics::layout::read_version(&store).unwrap(),
        Some(analytics::layout::SCHEMA_VERSION)
    );
    let (session, events) = analytics::session_with_events(&store, id).unwrap().unwrap();
    assert_eq!(session.duration_ms, Some(1234));
    assert_eq!(session.peer_id, "p_old");
    assert_eq!(events.len(), 1);
    // Running it again changes nothing.
    let again = analytics::layout::prepare(&store).unwrap();
    assert_eq!(again.found, Some(analytics::layout::SCHEMA_VERSION));
}
