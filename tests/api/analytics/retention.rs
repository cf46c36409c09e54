//! Retention: a sweep deletes the history older than the cut-off, with its
//! indexes and totals, and keeps the rest.

use chatsubo::analytics::apply_events;
use chatsubo::analytics::{self, SledOptions, SledStore, layout as keys};
use chatsubo::analytics::{CloseReason, Event, EventKind};

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
                    protocol: Default::default(),
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
    let swept = analytics::sweep_all(&store, now - 30 * day).unwrap();
    assert_eq!(swept.sessions, 3);
    // Each session's events were written in the batch it began in: they
    // are in its record (schema v5), with no `events` record of their own.
    assert_eq!(swept.event_records, 0);
    assert_eq!(swept.rooms, 1, "room old was last seen 31 days ago");
    for (i, id) in ids.iter().enumerate() {
        let kept = analytics::session_with_events(&store, *id)
            .unwrap()
            .is_some();
        assert_eq!(kept, i >= 3, "session {i}");
    }
    let rooms = analytics::all_room_totals(&store).unwrap();
    assert_eq!(rooms.keys().collect::<Vec<_>>(), ["new"]);
    let filter = analytics::SessionFilter {
        limit: 100,
        peer: Some("p_0".into()),
        ..Default::default()
    };
    assert!(
        analytics::list_sessions(&store, &filter)
            .unwrap()
            .sessions
            .is_empty(),
        "index entries go too"
    );
    let churn = analytics::churn_by_bucket(&store, None, 0, now + day, 86_400 * 365).unwrap();
    let joins: u64 = churn.iter().map(|(_, c)| c.joins).sum();
    assert_eq!(joins, 3, "old total buckets are gone");
    // A second sweep finds nothing.
    assert_eq!(
        analytics::sweep_all(&store, now - 30 * day)
            .unwrap()
            .sessions,
        0
    );
}
