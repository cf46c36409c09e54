//! Schema migrations: a store written in the v0 or v1 layout (made here with
//! sled directly, as those versions wrote it) is upgraded at open; a store
//! from a newer version is refused. Also the v2 `resume` tree's encoding.

use serde_json::json;

use chatsubo::analytics::event::{Event, EventKind};
use chatsubo::analytics::resume_state::{self, ResumeChange};
use chatsubo::analytics::writer::apply_events;
use chatsubo::analytics::{self, SledOptions, Store, Tree, keys};

use crate::helpers::*;

/// Runs `open` until it stops failing for a lock a handle dropped just
/// before still holds: sled's I/O threads may keep the file for a moment
/// after its `Db` is dropped, and an open then fails with `WouldBlock`.
fn when_unlocked<T, E: std::fmt::Debug>(mut open: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match open() {
            Err(e)
                if std::time::Instant::now() < deadline
                    && format!("{e:?}").contains("WouldBlock") =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// The store in `dir`, opened as chatsubo opens it.
fn open_store(dir: &std::path::Path) -> analytics::SledStore {
    when_unlocked(|| analytics::SledStore::open(dir, &options())).unwrap()
}

fn options() -> SledOptions {
    SledOptions {
        cache_bytes: 8 << 20,
        flush_every_ms: 500,
    }
}

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
    assert_eq!(analytics::schema::read_version(&store).unwrap(), None);
    let prepared = analytics::schema::prepare(&store).unwrap();
    assert_eq!(prepared.found, Some(0), "data without a version is v0");
    assert_eq!(prepared.now, analytics::schema::SCHEMA_VERSION);
    assert_eq!(
        analytics::schema::read_version(&store).unwrap(),
        Some(analytics::schema::SCHEMA_VERSION)
    );
    let (session, events) = analytics::query::session(&store, id).unwrap().unwrap();
    assert_eq!(session.duration_ms, Some(1234));
    assert_eq!(session.peer_id, "p_old");
    assert_eq!(events.len(), 1);
    // Running it again changes nothing.
    let again = analytics::schema::prepare(&store).unwrap();
    assert_eq!(again.found, Some(analytics::schema::SCHEMA_VERSION));
}

#[test]
fn a_store_from_a_newer_version_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert(analytics::schema::VERSION_KEY, &99u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let err = match when_unlocked(|| analytics::open(dir.path(), &options())) {
        Ok(_) => panic!("a v99 store must be refused"),
        Err(err) => format!("{err:#}"),
    };
    assert!(err.contains("schema version 99"), "{err}");
    assert!(err.contains("newer"), "{err}");
    // Nothing was rewritten.
    let db = when_unlocked(|| sled::open(dir.path())).unwrap();
    let v = db
        .open_tree("meta")
        .unwrap()
        .get(analytics::schema::VERSION_KEY)
        .unwrap()
        .unwrap();
    assert_eq!(v.as_ref(), 99u32.to_be_bytes());
}

#[test]
fn a_new_store_starts_at_the_current_version() {
    let dir = tempfile::tempdir().unwrap();
    let (store, recovered) = analytics::open(dir.path(), &options()).unwrap();
    assert_eq!(recovered.closed, 0);
    assert_eq!(
        analytics::schema::read_version(&*store).unwrap(),
        Some(analytics::schema::SCHEMA_VERSION)
    );
}

/// The v1 layout: as v0 plus `durationMs` and the version key, and no
/// `resume` tree.
fn write_v1_store(dir: &std::path::Path, id: u128, connected: u64) {
    let db = sled::open(dir).unwrap();
    db.open_tree("meta")
        .unwrap()
        .insert(analytics::schema::VERSION_KEY, &1u32.to_be_bytes())
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
    let prepared = analytics::schema::prepare(&store).unwrap();
    assert_eq!(prepared.found, Some(1));
    assert_eq!(prepared.now, analytics::schema::SCHEMA_VERSION);
    assert_eq!(
        analytics::schema::read_version(&store).unwrap(),
        Some(analytics::schema::SCHEMA_VERSION)
    );
    let (session, _) = analytics::query::session(&store, id).unwrap().unwrap();
    assert_eq!(session.peer_id, "p_v1");
    assert_eq!(session.duration_ms, Some(500));
    let (peers, corrupt) = resume_state::load(&store).unwrap();
    assert!(peers.is_empty(), "a v1 run left no resume state");
    assert_eq!(corrupt, 0);
    assert_eq!(
        analytics::schema::prepare(&store).unwrap().found,
        Some(analytics::schema::SCHEMA_VERSION),
        "running it again changes nothing"
    );
}

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
            .insert(analytics::schema::VERSION_KEY, &2u32.to_be_bytes())
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
    let prepared = analytics::schema::prepare(&store).unwrap();
    assert_eq!(prepared.found, Some(2));
    assert_eq!(prepared.now, analytics::schema::SCHEMA_VERSION);
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
    let (_, events) = analytics::query::session(&store, id).unwrap().unwrap();
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
            .insert(analytics::schema::VERSION_KEY, &3u32.to_be_bytes())
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
    let prepared = analytics::schema::prepare(&store).unwrap();
    assert_eq!((prepared.found, prepared.now), (Some(3), 4));

    // Read as they are.
    let (record, _) = analytics::query::session(&store, id).unwrap().unwrap();
    assert_eq!(record.session_id, ulid::Ulid(id).to_string());
    assert_eq!(record.room.as_deref(), Some("r"));
    assert_eq!(record.ended_at, None);
    let (peers, corrupt) = resume_state::load(&store).unwrap();
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
    let (record, _) = analytics::query::session(&store, id).unwrap().unwrap();
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
        let page = analytics::query::sessions(
            &store,
            &analytics::query::SessionFilter {
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
    // from the record, with the peer id the connection was given.
    let mut stored_kinds = Vec::new();
    analytics::store::scan_prefix(
        &store,
        Tree::Events,
        &keys::session_key(id3),
        false,
        &mut |_, v| {
            for e in analytics::writer::decode_events(v).unwrap() {
                stored_kinds.push(serde_json::to_value(&e).unwrap()["kind"].clone());
            }
            true
        },
    )
    .unwrap();
    assert_eq!(stored_kinds, [json!("resume")]);
    let events = |id: u128| {
        let (_, events) = analytics::query::session(&store, id).unwrap().unwrap();
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

fn resume(session: u128, at_ms: u64, change: ResumeChange) -> Event {
    Event {
        session,
        at_ms,
        seq: at_ms,
        kind: EventKind::ResumeState(change),
    }
}

#[test]
fn resume_changes_are_stored_in_the_documented_encoding_and_loaded_back() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = 1_764_300_000_000u64;
    let (s_ann, s_bob, s_cy) = (
        keys::first_id_at(t0) | 1,
        keys::first_id_at(t0) | 2,
        keys::first_id_at(t0) | 3,
    );
    let bound = |room: &str, peer: &str, name: Option<&str>, id: u8| ResumeChange::Bound {
        room: room.into(),
        peer: peer.into(),
        display_name: name.map(str::to_string),
        token_id: [id; 12],
        token_hash: [id.wrapping_mul(7); 32],
    };
    {
        let store = open_store(dir.path());
        analytics::schema::prepare(&store).unwrap();
        apply_events(
            &store,
            &[
                resume(s_ann, t0, bound("r", "p_ann", Some("ann"), 1)),
                resume(s_bob, t0 + 1, bound("r", "p_bob", None, 2)),
                resume(s_cy, t0 + 2, bound("s", "p_cy", Some("cy"), 3)),
                resume(
                    s_bob,
                    t0 + 3,
                    ResumeChange::Armed {
                        room: "r".into(),
                        peer: "p_bob".into(),
                        token_id: [2; 12],
                        expires_at: t0 + 30_003,
                        reason: "timeout".into(),
                    },
                ),
                // A stale leave about a token ann no longer holds: no effect.
                resume(
                    s_ann,
                    t0 + 4,
                    ResumeChange::Gone {
                        room: "r".into(),
                        peer: "p_ann".into(),
                        token_id: [9; 12],
                    },
                ),
                // cy's token is spent; then cy leaves.
                resume(
                    s_cy,
                    t0 + 5,
                    ResumeChange::Spent {
                        room: "s".into(),
                        peer: "p_cy".into(),
                        token_id: [3; 12],
                    },
                ),
            ],
        )
        .unwrap();
        let raw = store
            .get(Tree::Resume, b"r\0p_bob")
            .unwrap()
            .expect("keyed by room, 0x00, peer id");
        let value: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(
            value,
            json!({
                "session": ulid::Ulid(s_bob).to_string(),
                "token": {"id": "AgICAgICAgICAgIC", "sha256": "Dg4ODg4ODg4ODg4ODg4ODg4ODg4ODg4ODg4ODg4ODg4"},
                "joinedAt": t0 + 1,
                "expiresAt": t0 + 30_003,
                "reason": "timeout"
            })
        );
        let cy = store.get(Tree::Resume, b"s\0p_cy").unwrap().unwrap();
        let cy: serde_json::Value = serde_json::from_slice(&cy).unwrap();
        assert_eq!(
            cy.get("token"),
            None,
            "spent: no hash left (v4 leaves out nulls)"
        );
        apply_events(
            &store,
            &[resume(
                s_cy,
                t0 + 6,
                ResumeChange::Gone {
                    room: "s".into(),
                    peer: "p_cy".into(),
                    token_id: [3; 12],
                },
            )],
        )
        .unwrap();
        store.flush().unwrap();
    }
    // Read back by a new process's store: ann and bob in r, in join order.
    let store = open_store(dir.path());
    let (peers, corrupt) = resume_state::load(&store).unwrap();
    assert_eq!(corrupt, 0);
    let found: Vec<(&str, &str)> = peers
        .iter()
        .map(|p| (p.room.as_str(), p.peer.as_str()))
        .collect();
    assert_eq!(found, [("r", "p_ann"), ("r", "p_bob")]);
    assert_eq!(peers[0].record.display_name.as_deref(), Some("ann"));
    assert_eq!(peers[0].record.expires_at, None, "connected when stopped");
    assert_eq!(peers[0].record.token_parts(), Some(([1; 12], [7; 32])));
    assert_eq!(peers[1].record.session, ulid::Ulid(s_bob).to_string());
}
