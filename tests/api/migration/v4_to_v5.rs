//! v4 → v5: a v4 store's `events` records are read as they are; from v5 on
//! the events of the batch a session began in are in its record.

use serde_json::json;

use chatsubo::analytics::apply_events;
use chatsubo::analytics::{self, Store, Tree, layout as keys};
use chatsubo::analytics::{Event, EventKind, TelemetryEvent};

use super::open_store;

/// The `events` records of session `id`.
fn event_records(store: &dyn Store, id: u128) -> usize {
    let mut n = 0;
    keys::scan_prefix(
        store,
        Tree::Events,
        &keys::session_key(id),
        false,
        &mut |_, _| {
            n += 1;
            true
        },
    )
    .unwrap();
    n
}

/// A v4 session (its join in an `events` record) reads as before and
/// keeps its record free of events when a v5 writer ends it; a session
/// that v5 begins and ends in one batch is one record with its events in
/// it, listed and counted as before.
#[test]
fn the_v4_to_v5_step_reads_event_records_and_puts_new_ones_in_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = 1_764_500_000_000u64;
    let id = keys::first_id_at(t0) | 5;
    let peer = format!("p_{}", ulid::Ulid(id));
    let v4_session = json!({
        "peerId": peer, "room": "r", "remoteAddr": "203.0.113.9", "connectedAt": t0
    });
    let v4_events = json!([
        {"at": t0 + 1, "kind": "join", "room": "r", "peer": peer, "size": 1}
    ]);
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert(keys::VERSION_KEY, &4u32.to_be_bytes())
            .unwrap();
        db.open_tree("sessions")
            .unwrap()
            .insert(
                keys::session_key(id),
                serde_json::to_vec(&v4_session).unwrap(),
            )
            .unwrap();
        db.open_tree("open")
            .unwrap()
            .insert(keys::session_key(id), &[])
            .unwrap();
        db.open_tree("events")
            .unwrap()
            .insert(
                keys::event_key(id, t0 + 1, 1),
                serde_json::to_vec(&v4_events).unwrap(),
            )
            .unwrap();
        db.flush().unwrap();
    }
    let store = open_store(dir.path());
    let prepared = keys::prepare(&store).unwrap();
    assert_eq!((prepared.found, prepared.now), (Some(4), 5));
    assert_eq!(keys::read_version(&store).unwrap(), Some(5));

    let kinds = |id: u128| -> Vec<String> {
        let (_, events) = analytics::session_with_events(&store, id).unwrap().unwrap();
        events
            .iter()
            .map(|e| serde_json::to_value(&e.kind).unwrap()["kind"].to_string())
            .collect()
    };
    assert_eq!(kinds(id), ["\"connect\"", "\"join\""]);

    let at = |session, at_ms, kind| Event {
        session,
        at_ms,
        seq: at_ms,
        kind,
    };
    let connected = EventKind::Telemetry(TelemetryEvent {
        event: "peer-connection".into(),
        peer: Some("p_other".into()),
        outcome: Some("connected".into()),
        ms: Some(250.0),
        ..TelemetryEvent::default()
    });
    let leave = |peer: &str| EventKind::Leave {
        room: "r".into(),
        peer: peer.into(),
        reason: "left".into(),
    };
    let end = EventKind::End {
        close_reason: analytics::CloseReason::Left,
        messages_in: 1,
        messages_out: 0,
        errors: 0,
    };
    // The v4 session ends under v5: a batch it did not begin in, so its
    // events are an `events` record and its record holds none.
    apply_events(
        &store,
        &[
            at(id, t0 + 10, connected.clone()),
            at(id, t0 + 11, leave(&peer)),
            at(id, t0 + 12, end.clone()),
        ],
    )
    .unwrap();
    let raw = store
        .get(Tree::Sessions, &keys::session_key(id))
        .unwrap()
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(value.get("events"), None, "{value}");
    assert_eq!(value["closeReason"], "left");
    assert_eq!(event_records(&store, id), 2);
    assert_eq!(
        kinds(id),
        ["\"connect\"", "\"join\"", "\"telemetry\"", "\"leave\""]
    );

    // A session begun and ended in one v5 batch: one record, events inside.
    let id2 = keys::first_id_at(t0 + 100) | 5;
    let peer2 = format!("p_{}", ulid::Ulid(id2));
    apply_events(
        &store,
        &[
            at(
                id2,
                t0 + 100,
                EventKind::Connect {
                    peer: peer2.clone(),
                    remote_addr: "203.0.113.10".into(),
                    user_agent: None,
                    connections: 1,
                    protocol: Default::default(),
                },
            ),
            at(
                id2,
                t0 + 101,
                EventKind::Join {
                    room: "r".into(),
                    peer: peer2.clone(),
                    display_name: None,
                    size: 1,
                },
            ),
            at(id2, t0 + 102, connected),
            at(id2, t0 + 103, leave(&peer2)),
            at(id2, t0 + 104, end),
        ],
    )
    .unwrap();
    assert_eq!(event_records(&store, id2), 0);
    let raw = store
        .get(Tree::Sessions, &keys::session_key(id2))
        .unwrap()
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        value["events"],
        json!([
            {"at": t0 + 101, "kind": "join", "room": "r", "peer": peer2, "size": 1},
            {"at": t0 + 102, "kind": "telemetry", "event": "peer-connection",
             "peer": "p_other", "outcome": "connected", "ms": 250.0},
            {"at": t0 + 103, "kind": "leave", "room": "r", "peer": peer2, "reason": "left"}
        ])
    );
    assert_eq!(
        kinds(id2),
        ["\"connect\"", "\"join\"", "\"telemetry\"", "\"leave\""]
    );
    let stats = analytics::session_stats(&store, t0, t0 + 1_000).unwrap();
    assert_eq!((stats.sessions, stats.peer_connections), (2, 2));
    assert_eq!(stats.p50_peer_connect_ms, Some(250.0));

    // Retention takes the record with its events, and the v4 records.
    analytics::sweep_all(&store, t0 + 1_000).unwrap();
    assert!(
        analytics::session_with_events(&store, id2)
            .unwrap()
            .is_none()
    );
    assert_eq!(event_records(&store, id), 0);
}
