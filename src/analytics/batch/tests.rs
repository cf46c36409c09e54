//! Crash safety of a batch's write order: whichever prefix of a batch's
//! writes a crash keeps, recovery finds every session and closes it.

use super::*;
use crate::analytics::store::Op;

fn event_at(session: u128, at_ms: u64, seq: u64, kind: EventKind) -> Event {
    Event {
        session,
        at_ms,
        seq,
        kind,
    }
}

/// A sled store in a directory of its own, removed with the guard.
fn temp_store() -> (tempfile::TempDir, crate::analytics::SledStore) {
    let dir = tempfile::tempdir().unwrap();
    let options = crate::analytics::SledOptions {
        cache_bytes: 1 << 20,
        flush_every_ms: 1000,
    };
    let store = crate::analytics::SledStore::open(dir.path(), &options).unwrap();
    (dir, store)
}

/// A batch's writes in the order `apply_in_order` makes them.
fn writes_in_order(batch: &Batch) -> Vec<Op> {
    batch
        .tree_groups()
        .into_iter()
        .flat_map(|(_, ops)| ops.into_iter().cloned())
        .collect()
}

/// Writes the first `kept` of a batch's writes, as a crash that kept
/// only those would leave the store.
fn keep_writes(store: &dyn Store, batch: &Batch, kept: usize) {
    let ops = writes_in_order(batch).into_iter().take(kept).collect();
    store.apply_in_order(&Batch { ops }).unwrap();
}

/// A crash can keep any prefix of a batch's writes (see `Batch`):
/// whichever prefix of the batch that ends a session was kept, recovery
/// must still find and close the session. Found by the chaos workload
/// (chatsubo-loadgen): the `open` entry was deleted in a group before the
/// closed record's, and a kill -9 between them left the session open
/// for good.
#[test]
fn every_prefix_of_a_batch_that_ends_a_session_leaves_it_closable() {
    use crate::analytics::event::CloseReason;
    use crate::analytics::recovery;

    let id = ulid::Ulid::from_parts(1_000, 7).0;
    let event = |seq: u64, kind: EventKind| event_at(id, 1_000 + seq, seq, kind);
    let connect = [event(
        0,
        EventKind::Connect {
            peer: "p_1".into(),
            remote_addr: "127.0.0.1".into(),
            user_agent: None,
            connections: 1,
            protocol: Default::default(),
        },
    )];
    let rest = [
        event(
            1,
            EventKind::Join {
                room: "r".into(),
                peer: "p_1".into(),
                display_name: None,
                size: 1,
            },
        ),
        event(
            2,
            EventKind::Leave {
                room: "r".into(),
                peer: "p_1".into(),
                reason: "left".into(),
            },
        ),
        event(
            3,
            EventKind::End {
                close_reason: CloseReason::Left,
                messages_in: 0,
                messages_out: 0,
                errors: 0,
            },
        ),
    ];
    let writes = {
        let (_dir, store) = temp_store();
        apply_events(&store, &connect).unwrap();
        writes_in_order(&prepare_batch(&store, &rest).unwrap()).len()
    };
    for kept in 0..=writes {
        let (_dir, store) = temp_store();
        apply_events(&store, &connect).unwrap();
        let batch = prepare_batch(&store, &rest).unwrap();
        keep_writes(&store, &batch, kept);
        recovery::recover(&store).unwrap();
        let stored = store
            .get(Tree::Sessions, &keys::session_key(id))
            .unwrap()
            .expect("the session's record");
        let record = codec::decode_session(&keys::session_key(id), &stored).unwrap();
        assert!(
            record.ended_at.is_some(),
            "with {kept} of the {writes} writes kept, the session stays open"
        );
    }
}

/// A session that begins and ends in one batch is written closed and
/// never enters the `open` index; its resume record, bound and gone
/// within the batch, is never written; its events are in its record. Any
/// prefix of that batch leaves either no session or a closed one.
#[test]
fn a_session_begun_and_ended_in_one_batch_is_written_closed_once() {
    use crate::analytics::event::CloseReason;
    use crate::analytics::recovery;
    use crate::analytics::resume_state::ResumeChange;

    let id = ulid::Ulid::from_parts(2_000, 9).0;
    let event = |seq: u64, kind: EventKind| event_at(id, 2_000 + seq, seq, kind);
    let (room, peer) = ("r".to_string(), "p_1".to_string());
    let events = [
        event(
            0,
            EventKind::Connect {
                peer: peer.clone(),
                remote_addr: "127.0.0.1".into(),
                user_agent: None,
                connections: 1,
                protocol: Default::default(),
            },
        ),
        event(
            1,
            EventKind::Join {
                room: room.clone(),
                peer: peer.clone(),
                display_name: None,
                size: 1,
            },
        ),
        event(
            2,
            EventKind::ResumeState(ResumeChange::Bound {
                room: room.clone(),
                peer: peer.clone(),
                display_name: None,
                token_id: [1; 12],
                token_hash: [2; 32],
            }),
        ),
        event(
            3,
            EventKind::Leave {
                room: room.clone(),
                peer: peer.clone(),
                reason: "left".into(),
            },
        ),
        event(
            4,
            EventKind::ResumeState(ResumeChange::Gone {
                room,
                peer,
                token_id: [1; 12],
            }),
        ),
        event(
            5,
            EventKind::End {
                close_reason: CloseReason::Left,
                messages_in: 2,
                messages_out: 1,
                errors: 0,
            },
        ),
    ];
    let (_dir, store) = temp_store();
    let batch = prepare_batch(&store, &events).unwrap();
    let trees: Vec<Tree> = batch
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::Put(t, ..) | Op::Delete(t, _) => Some(*t),
            Op::Barrier => None,
        })
        .collect();
    assert!(!trees.contains(&Tree::Open), "{trees:?}");
    assert!(!trees.contains(&Tree::Resume), "{trees:?}");
    assert!(
        !trees.contains(&Tree::Events),
        "in the record (v5): {trees:?}"
    );
    assert_eq!(trees.iter().filter(|t| **t == Tree::Sessions).count(), 1);
    let own: Vec<&Tree> = trees
        .iter()
        .filter(|t| !matches!(t, Tree::Churn | Tree::Rooms | Tree::Peaks))
        .collect();
    assert_eq!(
        own,
        [&Tree::Sessions, &Tree::ByPeer, &Tree::ByRoom],
        "its record and index entries (`p_1` was not made for it, so it is indexed by peer)"
    );
    let writes = writes_in_order(&batch).len();
    for kept in 0..=writes {
        let (_dir, store) = temp_store();
        let batch = prepare_batch(&store, &events).unwrap();
        keep_writes(&store, &batch, kept);
        recovery::recover(&store).unwrap();
        if let Some(stored) = store.get(Tree::Sessions, &keys::session_key(id)).unwrap() {
            let record = codec::decode_session(&keys::session_key(id), &stored).unwrap();
            assert!(record.ended_at.is_some(), "with {kept} writes kept");
        }
    }
    apply_events(&store, &events).unwrap();
    let (record, stored) = crate::analytics::session_with_events(&store, id)
        .unwrap()
        .unwrap();
    assert_eq!(record.close_reason, Some(CloseReason::Left));
    assert_eq!(record.messages_in, 2);
    assert_eq!(stored.len(), 3, "connect, join, leave: {stored:?}");
}

/// Schema v5: the events of the batch a session began in are in its
/// record, at most [`MAX_EVENTS_IN_RECORD`] of them; the rest, and those of
/// later batches, are `events` records. The session's event list and the
/// stats read both, each event once and in time order.
#[test]
fn the_first_batch_events_are_in_the_record_and_later_ones_in_events_records() {
    use crate::analytics::event::{CloseReason, TelemetryEvent};

    let t0 = 1_764_400_000_000u64;
    let id = keys::first_id_at(t0) | 3;
    let peer = format!("p_{}", ulid::Ulid(id));
    let event = |seq: u64, kind: EventKind| event_at(id, t0 + seq, seq, kind);
    let connected = |ms: f64| {
        EventKind::Telemetry(TelemetryEvent {
            event: "peer-connection".into(),
            peer: Some("p_other".into()),
            outcome: Some("connected".into()),
            ms: Some(ms),
            ..TelemetryEvent::default()
        })
    };
    let mut first = vec![
        event(
            0,
            EventKind::Connect {
                peer: peer.clone(),
                remote_addr: "127.0.0.1".into(),
                user_agent: None,
                connections: 1,
                protocol: Default::default(),
            },
        ),
        event(
            1,
            EventKind::Join {
                room: "r".into(),
                peer: peer.clone(),
                display_name: None,
                size: 1,
            },
        ),
    ];
    // One more than the record holds: the last goes to an `events` record.
    for n in 0..MAX_EVENTS_IN_RECORD as u64 {
        first.push(event(2 + n, connected(100.0 + n as f64)));
    }
    let (_dir, store) = temp_store();
    apply_events(&store, &first).unwrap();
    let key = keys::session_key(id);
    let raw = store.get(Tree::Sessions, &key).unwrap().unwrap();
    let record = codec::decode_session(&key, &raw).unwrap();
    assert_eq!(record.events.len(), MAX_EVENTS_IN_RECORD);
    assert_eq!(record.events[0].kind, first[1].kind, "the join first");
    let event_records = |store: &dyn Store| {
        let mut n = 0;
        crate::analytics::store::scan_prefix(store, Tree::Events, &key, false, &mut |_, _| {
            n += 1;
            true
        })
        .unwrap();
        n
    };
    assert_eq!(event_records(&store), 1, "the one over the limit");

    let later = [
        event(100, connected(500.0)),
        event(
            101,
            EventKind::Leave {
                room: "r".into(),
                peer: peer.clone(),
                reason: "left".into(),
            },
        ),
        event(
            102,
            EventKind::End {
                close_reason: CloseReason::Left,
                messages_in: 1,
                messages_out: 0,
                errors: 0,
            },
        ),
    ];
    apply_events(&store, &later).unwrap();
    assert_eq!(event_records(&store), 2, "the later batch's own record");
    let raw = store.get(Tree::Sessions, &key).unwrap().unwrap();
    let record = codec::decode_session(&key, &raw).unwrap();
    assert_eq!(record.events.len(), MAX_EVENTS_IN_RECORD, "kept as it was");
    assert_eq!(record.close_reason, Some(CloseReason::Left));

    let (record, listed) = crate::analytics::session_with_events(&store, id)
        .unwrap()
        .unwrap();
    assert!(record.events.is_empty(), "listed, not left in the record");
    let times: Vec<u64> = listed.iter().map(|e| e.at).collect();
    let mut expected = vec![t0];
    expected.extend(first[1..].iter().map(|e| e.at_ms));
    expected.extend([t0 + 100, t0 + 101]);
    assert_eq!(times, expected, "connect (from the record), then each once");
    assert!(matches!(listed[0].kind, EventKind::Connect { .. }));

    let stats = crate::analytics::session_stats(&store, t0, t0 + 1_000).unwrap();
    assert_eq!(stats.sessions, 1);
    assert_eq!(stats.peer_connections, MAX_EVENTS_IN_RECORD as u64 + 1);
    assert_eq!(stats.p95_peer_connect_ms, Some(500.0));
    assert_eq!(stats.p50_peer_connect_ms, Some(108.0));
}
