//! Restarts: giving every peer its place back from the resume state a
//! previous run of the server left in the store. Each peer comes back away,
//! inside a grace that ends no sooner than one full grace after this start
//! (the time the server was down does not count against anyone), its token
//! rebuilt from the stored hash. Peers that do not resume leave when it ends,
//! as if their connection had dropped at the restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::dialect::Dialect;
use super::grace::{AwayPeer, spawn_grace_expiry};
use super::native::Native;
use super::room::RoomKey;
use super::{Hub, PeerId};
use crate::analytics::{EventKind, ResumeChange, StoredPeer};
use crate::protocol::{LeaveReason, RoomName};

/// What a restore put back.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub rooms: usize,
    pub peers: usize,
    /// Peers put back with a token that can still resume them.
    pub tokens: usize,
    /// Records that could not be used (bad room name or session id).
    pub skipped: usize,
}

/// When a restored peer's grace ends: one full grace after the restart
/// (`now_ms`), or later if the previous run had granted more.
pub fn restored_deadline(expires_at: Option<u64>, now_ms: u64, grace: Duration) -> u64 {
    let full = now_ms.saturating_add(grace.as_millis() as u64);
    expires_at.map_or(full, |at| at.max(full))
}

impl Hub {
    /// Puts back the peers of a previous run, away inside their grace, with
    /// their tokens and their grace timers. Call before serving, inside the
    /// runtime; `now_ms` is the restart time (unix ms).
    pub fn restore(self: &Arc<Self>, peers: Vec<StoredPeer>, now_ms: u64) -> Restored {
        let mut restored = Restored::default();
        let grace = self.config.resume_grace();
        let started = Instant::now();
        let mut rooms = std::collections::HashSet::new();
        for stored in peers {
            let (Ok(room_name), Ok(session)) = (
                RoomName::parse(&stored.room),
                ulid::Ulid::from_string(&stored.record.session),
            ) else {
                restored.skipped += 1;
                continue;
            };
            let record = stored.record;
            let deadline = restored_deadline(record.expires_at, now_ms, grace);
            let left = Duration::from_millis(deadline.saturating_sub(now_ms));
            let reason = match record.reason.as_deref() {
                Some("timeout") => LeaveReason::Timeout,
                _ => LeaveReason::Disconnected,
            };
            let peer_id: PeerId = Arc::from(stored.peer.as_str());
            let dialect: Arc<dyn Dialect> = Arc::new(Native);
            let key = RoomKey::native(room_name.clone());
            let room = self.rooms.get_or_create(&key, &dialect, &self.metrics);
            let conn_id = self.next_connection_id();
            let display_name = record.display_name.as_deref().map(Arc::from);
            let session_id: Arc<str> = Arc::from(record.session.as_str());
            if !room.restore_away(peer_id.clone(), display_name, conn_id, reason) {
                restored.skipped += 1;
                continue;
            }
            let token = record.token_parts().map(|(id, hash)| {
                self.tokens.restore(
                    id,
                    hash,
                    (peer_id.clone(), room_name.clone(), session_id.clone()),
                    started + left,
                );
                // The store learns the new deadline, as for any drop.
                self.recorder.record(
                    session.0,
                    EventKind::ResumeState(ResumeChange::Armed {
                        room: stored.room.clone(),
                        peer: stored.peer.clone(),
                        token_id: id,
                        expires_at: deadline,
                        reason: reason.as_str().to_string(),
                    }),
                );
                id
            });
            restored.peers += 1;
            restored.tokens += usize::from(token.is_some());
            rooms.insert(room_name);
            spawn_grace_expiry(
                self.clone(),
                room,
                AwayPeer {
                    peer_id,
                    conn_id,
                    token,
                    session: session.0,
                    session_id,
                },
                left,
            );
        }
        restored.rooms = rooms.len();
        restored
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::analytics::{ResumeRecord, StoredToken};
    use crate::signaling::Redeemed;
    use crate::telemetry::Metrics;

    fn stored(room: &str, peer: &str, token: Option<StoredToken>, joined_at: u64) -> StoredPeer {
        StoredPeer {
            room: room.into(),
            peer: peer.into(),
            record: ResumeRecord {
                display_name: Some(peer.to_uppercase()),
                session: ulid::Ulid::from_parts(joined_at, 1).to_string(),
                token,
                joined_at,
                expires_at: None,
                reason: None,
            },
        }
    }

    #[tokio::test]
    async fn restored_peers_are_away_with_their_tokens_until_the_grace_ends() {
        let mut config = crate::config::Config::defaults();
        config.resume_grace_secs = Duration::from_millis(300);
        let hub = Hub::new(Arc::new(config), Arc::new(Metrics::new(10)));
        let (id, secret) = ([1u8; 12], [5u8; 32]);
        let token = StoredToken {
            id: URL_SAFE_NO_PAD.encode(id),
            sha256: URL_SAFE_NO_PAD.encode(Sha256::digest(secret)),
        };
        let now = crate::clock::now_ms();
        let restored = hub.restore(
            vec![
                stored("r", "p_a", Some(token), 1_000),
                stored("r", "p_b", None, 2_000),
                stored("not a room!", "p_c", None, 3_000),
            ],
            now,
        );
        assert_eq!(
            restored,
            Restored {
                rooms: 1,
                peers: 2,
                tokens: 1,
                skipped: 1
            }
        );
        let name = RoomName::parse("r").unwrap();
        let members = hub
            .rooms
            .get(&RoomKey::native(name.clone()))
            .expect("the room is back")
            .snapshot();
        let ids: Vec<&str> = members.iter().map(|m| &*m.peer_id).collect();
        assert_eq!(ids, ["p_a", "p_b"]);
        assert!(members.iter().all(|m| !m.connected));
        assert_eq!(members[0].display_name.as_deref(), Some("P_A"));
        // The token works from its hash, once.
        let text = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(id),
            URL_SAFE_NO_PAD.encode(secret)
        );
        match hub.tokens.redeem(&text) {
            Redeemed::Valid {
                peer_id,
                room,
                session_id,
                ..
            } => {
                assert_eq!(&*peer_id, "p_a");
                assert_eq!(room, name);
                assert_eq!(&*session_id, ulid::Ulid::from_parts(1_000, 1).to_string());
            }
            other => panic!("expected a valid token, got {other:?}"),
        }
        assert_eq!(hub.tokens.redeem(&text), Redeemed::Expired);
        // Nobody came back: both leave when the grace ends, and the room closes.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(hub.rooms.get(&RoomKey::native(name.clone())).is_none());
    }

    #[test]
    fn the_grace_counts_from_the_restart_or_later() {
        let grace = Duration::from_secs(30);
        assert_eq!(restored_deadline(None, 1_000, grace), 31_000);
        assert_eq!(restored_deadline(Some(5_000), 1_000, grace), 31_000);
        assert_eq!(restored_deadline(Some(90_000), 1_000, grace), 90_000);
    }
}
