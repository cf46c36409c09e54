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
/// within the batch, is never written; its events are one record. Any
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
    assert_eq!(trees.iter().filter(|t| **t == Tree::Events).count(), 1);
    assert_eq!(trees.iter().filter(|t| **t == Tree::Sessions).count(), 1);
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
