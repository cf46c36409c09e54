//! The resume state kept in the store (tree `resume`, schema v2), so that a
//! restarted server can give every peer its place back: one record per peer
//! in a room, keyed by room then peer id. The record holds the SHA-256 of
//! the secret of the peer's current resume token, never the token.
//!
//! The connection loop reports each change as a [`ResumeChange`] through the
//! analytics queue (never waiting); the writer applies it with
//! [`ResumeChange::apply`]; the next start reads everything with [`load`].

use serde::{Deserialize, Serialize};

use super::keys;
use super::store::{Store, StoreError, Tree, Visit};

/// Bytes of a token id (the public half of a resume token).
pub const TOKEN_ID_LEN: usize = 12;
/// Bytes of the SHA-256 of a token's secret.
pub const TOKEN_HASH_LEN: usize = 32;

/// A change of one peer's resume state. Every change but `Bound` names the
/// token it is about and does nothing when the stored record holds another
/// token: a late change from a connection the peer has resumed away from
/// cannot undo the newer one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResumeChange {
    /// A token was bound to the peer (a join or a resume): the peer is in
    /// the room, connected, and this token takes its place back. The
    /// event's session is the connection holding the token.
    Bound {
        room: String,
        peer: String,
        display_name: Option<String>,
        token_id: [u8; TOKEN_ID_LEN],
        token_hash: [u8; TOKEN_HASH_LEN],
    },
    /// The peer's connection dropped: its place is kept until `expires_at`.
    Armed {
        room: String,
        peer: String,
        token_id: [u8; TOKEN_ID_LEN],
        /// Unix milliseconds.
        expires_at: u64,
        /// How it dropped: `disconnected` or `timeout`.
        reason: String,
    },
    /// The token was redeemed: it no longer works, whatever happens next.
    Spent {
        room: String,
        peer: String,
        token_id: [u8; TOKEN_ID_LEN],
    },
    /// The peer left the room (leave, close, kick, or the end of its grace).
    Gone {
        room: String,
        peer: String,
        token_id: [u8; TOKEN_ID_LEN],
    },
}

/// The token half of a record: its id and the SHA-256 of its secret, both
/// base64url without padding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    pub id: String,
    pub sha256: String,
}

/// The value of a `resume` record (JSON). From schema v4 on, fields that
/// are `null` are left out; older values, which have them, read the same.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResumeRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The session id (ULID text) of the connection holding the token: the
    /// `resumedFrom` of a resume, and the session a leave is recorded on.
    pub session: String,
    /// The current token; `null` once it was spent without a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<StoredToken>,
    /// When the peer entered the room (unix ms; orders the members).
    pub joined_at: u64,
    /// When its grace ends (unix ms); `null` while it is connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// Why it dropped (`disconnected`, `timeout`); `null` while connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ResumeRecord {
    /// The token's id and hash, if it has one that decodes.
    pub fn token_parts(&self) -> Option<([u8; TOKEN_ID_LEN], [u8; TOKEN_HASH_LEN])> {
        let token = self.token.as_ref()?;
        Some((decode_fixed(&token.id)?, decode_fixed(&token.sha256)?))
    }

    fn holds(&self, token_id: &[u8; TOKEN_ID_LEN]) -> bool {
        self.token.as_ref().is_some_and(|t| t.id == b64(token_id))
    }
}

/// One peer as the store remembers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPeer {
    pub room: String,
    pub peer: String,
    pub record: ResumeRecord,
}

/// The key of a peer's record: room ++ `0x00` ++ peer id. Room names and
/// peer ids never hold a `0x00` byte; all the peers of a room share the
/// prefix `room ++ 0x00`.
pub fn resume_key(room: &str, peer: &str) -> Vec<u8> {
    let mut key = keys::prefix_with_room(room, peer.len());
    key.extend_from_slice(peer.as_bytes());
    key
}

/// The room and peer id of a record's key.
pub fn decode_resume_key(key: &[u8]) -> Option<(&str, &str)> {
    let sep = key.iter().position(|b| *b == 0)?;
    let (room, rest) = (&key[..sep], &key[sep + 1..]);
    if room.is_empty() || rest.is_empty() || rest.contains(&0) {
        return None;
    }
    Some((
        std::str::from_utf8(room).ok()?,
        std::str::from_utf8(rest).ok()?,
    ))
}

/// Encodes a record's value.
pub fn encode_record(record: &ResumeRecord) -> Vec<u8> {
    serde_json::to_vec(record).expect("a resume record always encodes")
}

/// Decodes a record's value.
pub fn decode_record(value: &[u8]) -> Result<ResumeRecord, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
        tree: Tree::Resume.name(),
        what: e.to_string(),
    })
}

/// Every peer in the store, ordered by room, then by the time it joined.
/// A record that does not decode is skipped and counted in the second value.
pub fn load(store: &dyn Store) -> Result<(Vec<StoredPeer>, usize), StoreError> {
    let mut peers = Vec::new();
    let mut corrupt = 0;
    let visit: Visit<'_> = &mut |k, v| {
        match (decode_resume_key(k), decode_record(v)) {
            (Some((room, peer)), Ok(record)) => peers.push(StoredPeer {
                room: room.to_string(),
                peer: peer.to_string(),
                record,
            }),
            _ => corrupt += 1,
        }
        true
    };
    store.scan(
        Tree::Resume,
        std::ops::Bound::Unbounded,
        std::ops::Bound::Unbounded,
        false,
        visit,
    )?;
    peers.sort_by(|a, b| {
        (&a.room, a.record.joined_at, &a.peer).cmp(&(&b.room, b.record.joined_at, &b.peer))
    });
    Ok((peers, corrupt))
}

impl ResumeChange {
    /// The key of the record it changes.
    pub fn key(&self) -> Vec<u8> {
        match self {
            ResumeChange::Bound { room, peer, .. }
            | ResumeChange::Armed { room, peer, .. }
            | ResumeChange::Spent { room, peer, .. }
            | ResumeChange::Gone { room, peer, .. } => resume_key(room, peer),
        }
    }

    /// Applies the change to the current record (`None`: no record),
    /// for the event of `session` at `at_ms`.
    pub fn apply(
        &self,
        current: Option<ResumeRecord>,
        session: u128,
        at_ms: u64,
    ) -> Option<ResumeRecord> {
        match self {
            ResumeChange::Bound {
                display_name,
                token_id,
                token_hash,
                ..
            } => Some(ResumeRecord {
                display_name: display_name.clone(),
                session: ulid::Ulid(session).to_string(),
                token: Some(StoredToken {
                    id: b64(token_id),
                    sha256: b64(token_hash),
                }),
                // A resume keeps the peer's place in the member order.
                joined_at: current.map_or(at_ms, |c| c.joined_at),
                expires_at: None,
                reason: None,
            }),
            ResumeChange::Armed {
                token_id,
                expires_at,
                reason,
                ..
            } => current.map(|mut c| {
                if c.holds(token_id) {
                    c.expires_at = Some(*expires_at);
                    c.reason = Some(reason.clone());
                }
                c
            }),
            ResumeChange::Spent { token_id, .. } => current.map(|mut c| {
                if c.holds(token_id) {
                    c.token = None;
                }
                c
            }),
            ResumeChange::Gone { token_id, .. } => match current {
                Some(c) if c.holds(token_id) || c.token.is_none() => None,
                other => other,
            },
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_fixed<const N: usize>(text: &str) -> Option<[u8; N]> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()?
        .try_into()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_group_a_room() {
        let key = resume_key("lobby", "p_01JD");
        assert_eq!(key, b"lobby\0p_01JD");
        assert_eq!(decode_resume_key(&key), Some(("lobby", "p_01JD")));
        assert!(key.starts_with(&keys::index_prefix("lobby")));
        assert!(!resume_key("lobby2", "p").starts_with(&keys::index_prefix("lobby")));
        assert_eq!(decode_resume_key(b"nopeer\0"), None);
        assert_eq!(decode_resume_key(b"\0p"), None);
        assert_eq!(decode_resume_key(b"no-separator"), None);
    }

    #[test]
    fn random_keys_round_trip_and_never_mix_rooms() {
        use rand::Rng;
        const CHARS: &[u8] = b"abcXYZ019_.-";
        let mut rng = rand::rng();
        let mut name = |max: usize| -> String {
            let len = rng.random_range(1..=max);
            (0..len)
                .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
                .collect()
        };
        for _ in 0..3000 {
            let (room, peer) = (name(64), format!("p_{}", name(26)));
            let key = resume_key(&room, &peer);
            assert_eq!(
                decode_resume_key(&key),
                Some((room.as_str(), peer.as_str()))
            );
            let longer = format!("{room}a");
            assert!(!resume_key(&longer, &peer).starts_with(&keys::index_prefix(&room)));
        }
    }

    #[test]
    fn changes_follow_the_token_they_name() {
        let bound = |id: u8| ResumeChange::Bound {
            room: "r".into(),
            peer: "p_1".into(),
            display_name: Some("ann".into()),
            token_id: [id; 12],
            token_hash: [9; 32],
        };
        let session = ulid::Ulid::from_parts(1_764_000_000_000, 1).0;
        let joined = bound(1).apply(None, session, 100).unwrap();
        assert_eq!(joined.joined_at, 100);
        assert_eq!(joined.token_parts(), Some(([1; 12], [9; 32])));
        assert_eq!(joined.session, ulid::Ulid(session).to_string());
        let arm = |id: u8| ResumeChange::Armed {
            room: "r".into(),
            peer: "p_1".into(),
            token_id: [id; 12],
            expires_at: 5000,
            reason: "timeout".into(),
        };
        let armed = arm(1).apply(Some(joined.clone()), session, 200).unwrap();
        assert_eq!(armed.expires_at, Some(5000));
        assert_eq!(armed.reason.as_deref(), Some("timeout"));
        // A resume keeps the join time, takes the new token, clears the expiry.
        let resumed = bound(2).apply(Some(armed), session + 1, 300).unwrap();
        assert_eq!(resumed.joined_at, 100);
        assert_eq!(resumed.expires_at, None);
        // Late changes about the old token change nothing.
        assert_eq!(
            arm(1).apply(Some(resumed.clone()), session, 400),
            Some(resumed.clone())
        );
        let gone = |id: u8| ResumeChange::Gone {
            room: "r".into(),
            peer: "p_1".into(),
            token_id: [id; 12],
        };
        assert_eq!(
            gone(1).apply(Some(resumed.clone()), session, 400),
            Some(resumed.clone())
        );
        let spent = ResumeChange::Spent {
            room: "r".into(),
            peer: "p_1".into(),
            token_id: [2; 12],
        }
        .apply(Some(resumed.clone()), session, 500)
        .unwrap();
        assert_eq!(spent.token, None, "a spent token is gone from the record");
        assert_eq!(gone(2).apply(Some(spent), session, 600), None);
        assert_eq!(gone(2).apply(Some(resumed), session, 600), None);
    }

    #[test]
    fn records_are_json_in_the_documented_form() {
        let record = ResumeRecord {
            display_name: Some("ann".into()),
            session: "01JDAAAAAAAAAAAAAAAAAAAAAA".into(),
            token: Some(StoredToken {
                id: b64(&[1; 12]),
                sha256: b64(&[2; 32]),
            }),
            joined_at: 1_764_306_000_123,
            expires_at: Some(1_764_306_030_123),
            reason: Some("disconnected".into()),
        };
        let json: serde_json::Value = serde_json::from_slice(&encode_record(&record)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "displayName": "ann",
                "session": "01JDAAAAAAAAAAAAAAAAAAAAAA",
                "token": {"id": "AQEBAQEBAQEBAQEB", "sha256": b64(&[2; 32])},
                "joinedAt": 1_764_306_000_123u64,
                "expiresAt": 1_764_306_030_123u64,
                "reason": "disconnected"
            })
        );
        assert_eq!(decode_record(&encode_record(&record)).unwrap(), record);
        assert!(decode_record(b"{").is_err());
    }
}
