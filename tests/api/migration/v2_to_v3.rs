//! v2 → v3: single-event records are read beside v3's grouped ones.

use serde_json::json;

use chatsubo::analytics::apply_events;
use chatsubo::analytics::{self, Store, Tree, layout as keys};
use chatsubo::analytics::{Event, EventKind};

use super::open_store;

/// v2 stored one event per `events` record; v3 writes one record per
/// session and batch holding an array. A v2 store is read as it is, and a
/// session with records of both kinds lists its events in time order.
#[test]
fn the_v2_to_v3_step_reads_single_event_records_beside_groups() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = 1_764_300_000_000u64;
    let id = keys::first_id_at(t0) | 5;
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert(analytics::layout::VERSION_KEY, &2u32.to_be_bytes())
            .unwrap();
        let session = json!({
            "sessionId": ulid::Ulid(id).to_string(), "peerId": "p_v2", "room": "r",
            "displayName": null, "remoteAddr": "203.0.113.9", "userAgent": null,
            "connectedAt": t0, "endedAt": null, "durationMs": null, "closeReason": null,
            "resumedFrom": null, "messagesIn": 0, "messagesOut": 0, "errors": 0,
            "roomFullRejections": 0
        });
        db.open_tree("sessions")
            .unwrap()
            .insert(keys::session_key(id), serde_json::to_vec(&session).unwrap())
            .unwrap();
        let events = db.open_tree("events").unwrap();
        for (at, seq, event) in [
            (
                t0,
                1,
                json!({"at": t0, "kind": "connect", "peer": "p_v2", "remoteAddr": "203.0.113.9"}),
            ),
            (
                t0 + 1,
                2,
                json!({"at": t0 + 1, "kind": "join", "room": "r", "peer": "p_v2", "size": 1}),
            ),
        ] {
            events
                .insert(
                    keys::event_key(id, at, seq),
                    serde_json::to_vec(&event).unwrap(),
                )
                .unwrap();
        }
        db.open_tree("open")
            .unwrap()
            .insert(keys::session_key(id), &[])
            .unwrap();
        db.flush().unwrap();
    }
    let store = open_store(dir.path());
    let prepared = analytics::layout::prepare(&store).unwrap();
    assert_eq!(prepared.found, Some(2));
    assert_eq!(prepared.now, analytics::layout::SCHEMA_VERSION);
    let event = |seq: u64, kind: EventKind| Event {
        session: id,
        at_ms: t0 + seq,
        seq: 100 + seq,
        kind,
    };
    apply_events(
        &store,
        &[
            event(
                2,
                EventKind::Error {
                    code: "UNKNOWN_PEER".into(),
                    reference: None,
                },
            ),
            event(
                3,
                EventKind::Leave {
                    room: "r".into(),
                    peer: "p_v2".into(),
                    reason: "left".into(),
                },
            ),
        ],
    )
    .unwrap();
    let raw = store
        .get(Tree::Events, &keys::event_key(id, t0 + 2, 102))
        .unwrap()
        .expect("one record for the batch, keyed by its first event");
    assert_eq!(raw.first(), Some(&b'['), "a v3 record holds an array");
    let (_, events) = analytics::session_with_events(&store, id).unwrap().unwrap();
    let kinds: Vec<String> = events
        .iter()
        .map(|e| {
            serde_json::to_value(e).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kinds, ["connect", "join", "error", "leave"]);
    let times: Vec<u64> = events.iter().map(|e| e.at).collect();
    assert_eq!(times, [t0, t0 + 1, t0 + 2, t0 + 3]);
}
