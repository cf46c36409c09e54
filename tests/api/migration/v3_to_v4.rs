//! v3 → v4: full records are read as they are, short ones are written, and
//! a session is indexed under its peer only after a resume.

use serde_json::json;

use chatsubo::analytics::apply_events;
use chatsubo::analytics::{self, Store, Tree, layout as keys};
use chatsubo::analytics::{Event, EventKind};

use super::open_store;

/// v3 stored every field of a session and resume record, `null`s and
/// zeros included, and the session id inside the session's value; v4 leaves
/// those out. A v3 store is read as it is, and what v4 writes next is short.
#[test]
fn the_v3_to_v4_step_reads_full_records_and_writes_short_ones() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = 1_764_300_000_000u64;
    let id = keys::first_id_at(t0) | 7;
    let peer = format!("p_{}", ulid::Ulid(id));
    let full_session = json!({
        "sessionId": ulid::Ulid(id).to_string(), "peerId": peer, "room": "r",
        "displayName": null, "remoteAddr": "203.0.113.9", "userAgent": null,
        "connectedAt": t0, "endedAt": null, "durationMs": null, "closeReason": null,
        "resumedFrom": null, "messagesIn": 0, "messagesOut": 0, "errors": 0,
        "roomFullRejections": 0
    });
    let full_resume = json!({
        "displayName": null, "session": ulid::Ulid(id).to_string(),
        "token": {"id": "AgICAgICAgICAgIC", "sha256": "Dg4ODg4ODg4ODg4ODg4ODg4ODg4ODg4ODg4ODg4ODg4"},
        "joinedAt": t0 + 1, "expiresAt": null, "reason": null
    });
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert(analytics::layout::VERSION_KEY, &3u32.to_be_bytes())
            .unwrap();
        db.open_tree("sessions")
            .unwrap()
            .insert(
                keys::session_key(id),
                serde_json::to_vec(&full_session).unwrap(),
            )
            .unwrap();
        db.open_tree("open")
            .unwrap()
            .insert(keys::session_key(id), &[])
            .unwrap();
        db.open_tree("resume")
            .unwrap()
            .insert(
                [b"r\0", peer.as_bytes()].concat(),
                serde_json::to_vec(&full_resume).unwrap(),
            )
            .unwrap();
        // v3 indexed every session under its peer, the first one too.
        db.open_tree("by_peer")
            .unwrap()
            .insert(keys::index_key(&peer, id), &[])
            .unwrap();
        db.flush().unwrap();
    }
    let store = open_store(dir.path());
    let prepared = analytics::layout::prepare(&store).unwrap();
    assert_eq!(prepared.found, Some(3));
    assert_eq!(prepared.now, analytics::layout::SCHEMA_VERSION);

    // Read as they are.
    let (record, _) = analytics::session_with_events(&store, id).unwrap().unwrap();
    assert_eq!(record.session_id, ulid::Ulid(id).to_string());
    assert_eq!(record.room.as_deref(), Some("r"));
    assert_eq!(record.ended_at, None);
    let (peers, corrupt) = chatsubo::analytics::load_resume_state(&store).unwrap();
    assert_eq!(corrupt, 0);
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].record.token_parts(), Some(([2; 12], [14; 32])));
    assert_eq!(peers[0].record.expires_at, None);

    // Ended by this version: written short, read back whole.
    apply_events(
        &store,
        &[Event {
            session: id,
            at_ms: t0 + 500,
            seq: 9,
            kind: EventKind::End {
                close_reason: analytics::CloseReason::Left,
                messages_in: 3,
                messages_out: 0,
                errors: 0,
            },
        }],
    )
    .unwrap();
    let raw = store
        .get(Tree::Sessions, &keys::session_key(id))
        .unwrap()
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        value,
        json!({
            "peerId": peer, "room": "r", "remoteAddr": "203.0.113.9",
            "connectedAt": t0, "endedAt": t0 + 500, "durationMs": 500,
            "closeReason": "left", "messagesIn": 3
        }),
        "no session id, no nulls, no zeros"
    );
    assert!(raw.len() < serde_json::to_vec(&full_session).unwrap().len());
    let (record, _) = analytics::session_with_events(&store, id).unwrap().unwrap();
    assert_eq!(record.session_id, ulid::Ulid(id).to_string());
    assert_eq!(
        (record.messages_in, record.messages_out, record.errors),
        (3, 0, 0)
    );
    assert_eq!(record.duration_ms, Some(500));
    assert_eq!(record.display_name, None);

    // v4 indexes a session under its peer only when the peer id was not
    // made for it (a resume). A query by peer finds the first session from
    // the id, once, whether or not a v3 entry is there too.
    let id2 = keys::first_id_at(t0 + 1000) | 1;
    let id3 = keys::first_id_at(t0 + 2000) | 1;
    let peer2 = format!("p_{}", ulid::Ulid(id2));
    let at = |session, at_ms, kind| Event {
        session,
        at_ms,
        seq: at_ms,
        kind,
    };
    let connect = |peer: &str| EventKind::Connect {
        peer: peer.into(),
        remote_addr: "203.0.113.9".into(),
        user_agent: None,
        connections: 1,
        protocol: Default::default(),
    };
    apply_events(
        &store,
        &[
            at(id2, t0 + 1000, connect(&peer2)),
            // id3 resumes id2's peer.
            at(id3, t0 + 2000, connect(&format!("p_{}", ulid::Ulid(id3)))),
            at(
                id3,
                t0 + 2001,
                EventKind::Resume {
                    room: "r".into(),
                    peer: peer2.clone(),
                    resumed_from: Some(ulid::Ulid(id2).to_string()),
                    size: 1,
                },
            ),
        ],
    )
    .unwrap();
    let mut indexed = Vec::new();
    store
        .scan(
            Tree::ByPeer,
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
            false,
            &mut |k, _| {
                let (name, session) = keys::decode_index_key(k).unwrap();
                indexed.push((name.to_string(), session));
                true
            },
        )
        .unwrap();
    assert_eq!(
        indexed,
        [(peer.clone(), id), (peer2.clone(), id3)],
        "the v3 entry stays; of v4's sessions only the resume is indexed"
    );
    let by_peer = |peer: &str, limit: usize, cursor: Option<u128>| {
        let page = analytics::list_sessions(
            &store,
            &analytics::SessionFilter {
                peer: Some(peer.to_string()),
                limit,
                cursor,
                ..Default::default()
            },
        )
        .unwrap();
        let ids: Vec<String> = page.sessions.into_iter().map(|s| s.session_id).collect();
        (ids, page.next_cursor)
    };
    let name = |id: u128| ulid::Ulid(id).to_string();
    assert_eq!(by_peer(&peer, 10, None), (vec![name(id)], None), "once");
    assert_eq!(
        by_peer(&peer2, 10, None),
        (vec![name(id3), name(id2)], None),
        "the resume, then the first session, newest first"
    );
    assert_eq!(by_peer(&peer2, 1, None), (vec![name(id3)], Some(id3)));
    assert_eq!(by_peer(&peer2, 1, Some(id3)), (vec![name(id2)], None));
    let (ids, _) = by_peer(&format!("p_{}", ulid::Ulid(id3)), 10, None);
    assert!(
        ids.is_empty(),
        "id3's own peer id was given up by its resume"
    );

    // Nor is a connect stored that the record says all of; it is listed
    // from the record, with the peer id the connection was given. (From
    // v5 on, the events of the batch a session began in are in its record.)
    let key3 = keys::session_key(id3);
    let record3 = analytics::layout::decode_session(
        &key3,
        &store.get(Tree::Sessions, &key3).unwrap().unwrap(),
    )
    .unwrap();
    let mut stored_kinds: Vec<_> = record3
        .events
        .iter()
        .map(|e| serde_json::to_value(e).unwrap()["kind"].clone())
        .collect();
    analytics::layout::scan_prefix(
        &store,
        Tree::Events,
        &keys::session_key(id3),
        false,
        &mut |_, v| {
            for e in analytics::layout::decode_events(v).unwrap() {
                stored_kinds.push(serde_json::to_value(&e).unwrap()["kind"].clone());
            }
            true
        },
    )
    .unwrap();
    assert_eq!(stored_kinds, [json!("resume")]);
    let events = |id: u128| {
        let (_, events) = analytics::session_with_events(&store, id).unwrap().unwrap();
        events
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        events(id3)[0],
        json!({"at": t0 + 2000, "kind": "connect", "peer": format!("p_{}", ulid::Ulid(id3)), "remoteAddr": "203.0.113.9"})
    );
    assert_eq!(events(id3)[1]["kind"], "resume");
    assert_eq!(
        events(id2),
        [json!({"at": t0 + 1000, "kind": "connect", "peer": peer2, "remoteAddr": "203.0.113.9"})]
    );
    // A v3 session without a stored connect (kept by a crash between its
    // record and its events) is listed with the record's peer id.
    assert_eq!(events(id)[0]["peer"], json!(peer));
}
