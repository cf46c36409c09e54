//! v1 → v2: an empty `resume` tree is added and the rest is kept.

use serde_json::json;

use chatsubo::analytics::{self, layout as keys};

use super::open_store;

/// The v1 layout: as v0 plus `durationMs` and the version key, and no
/// `resume` tree.
fn write_v1_store(dir: &std::path::Path, id: u128, connected: u64) {
    let db = sled::open(dir).unwrap();
    db.open_tree("meta")
        .unwrap()
        .insert(analytics::layout::VERSION_KEY, &1u32.to_be_bytes())
        .unwrap();
    let v1 = json!({
        "sessionId": ulid::Ulid(id).to_string(),
        "peerId": "p_v1",
        "room": "cellar",
        "displayName": null,
        "remoteAddr": "203.0.113.8",
        "userAgent": null,
        "connectedAt": connected,
        "endedAt": connected + 500,
        "durationMs": 500,
        "closeReason": "disconnected",
        "resumedFrom": null,
        "messagesIn": 1,
        "messagesOut": 2,
        "errors": 0,
        "roomFullRejections": 0
    });
    db.open_tree("sessions")
        .unwrap()
        .insert(keys::session_key(id), serde_json::to_vec(&v1).unwrap())
        .unwrap();
    db.flush().unwrap();
    assert!(!db.tree_names().iter().any(|n| n.as_ref() == b"resume"));
}

#[test]
fn the_v1_to_v2_migration_adds_an_empty_resume_tree_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let connected = 1_764_300_000_000u64;
    let id = keys::first_id_at(connected) | 9;
    write_v1_store(dir.path(), id, connected);
    let store = open_store(dir.path());
    let prepared = analytics::layout::prepare(&store).unwrap();
    assert_eq!(prepared.found, Some(1));
    assert_eq!(prepared.now, analytics::layout::SCHEMA_VERSION);
    assert_eq!(
        analytics::layout::read_version(&store).unwrap(),
        Some(analytics::layout::SCHEMA_VERSION)
    );
    let (session, _) = analytics::session_with_events(&store, id).unwrap().unwrap();
    assert_eq!(session.peer_id, "p_v1");
    assert_eq!(session.duration_ms, Some(500));
    let (peers, corrupt) = chatsubo::analytics::load_resume_state(&store).unwrap();
    assert!(peers.is_empty(), "a v1 run left no resume state");
    assert_eq!(corrupt, 0);
    assert_eq!(
        analytics::layout::prepare(&store).unwrap().found,
        Some(analytics::layout::SCHEMA_VERSION),
        "running it again changes nothing"
    );
}
