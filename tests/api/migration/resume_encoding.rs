//! The `resume` tree: resume changes are stored in the documented encoding
//! and loaded back by a new process's store.

use serde_json::json;

use chatsubo::analytics::ResumeChange;
use chatsubo::analytics::apply_events;
use chatsubo::analytics::{self, Store, Tree, layout as keys};
use chatsubo::analytics::{Event, EventKind};

use super::open_store;

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
        analytics::layout::prepare(&store).unwrap();
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
    let (peers, corrupt) = chatsubo::analytics::load_resume_state(&store).unwrap();
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
