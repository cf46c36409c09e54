//! The key codec. Every number is big-endian so that byte order is numeric
//! order, and every key that holds a time starts with it where the queries
//! scan by time.
//!
//! - session key: the session id as a 128-bit ULID, 16 bytes big-endian.
//!   Its top 48 bits are the connection's millisecond, so session keys sort
//!   by `connectedAt`, then by id: the `(connectedAt, sessionId)` order of
//!   the API and its cursors.
//! - event key: session key (16) ++ at ms (8) ++ sequence (8).
//! - index key (by room, by peer): name ++ 0x00 ++ session key (16). Room
//!   names and peer ids never hold a 0x00 byte.
//! - churn key: room ++ 0x00 ++ minute start in unix seconds (8); the empty
//!   room name holds the totals over all rooms.
//! - peak key: minute start in unix seconds (8).

/// Bytes of a session key.
pub const SESSION_KEY_LEN: usize = 16;
/// Bytes of an event key.
pub const EVENT_KEY_LEN: usize = 32;
/// Width of the stored churn and peak buckets, in seconds.
pub const BASE_BUCKET_SECS: u64 = 60;

const RANDOM_BITS: u32 = 80;

/// A session key from a session id.
pub fn session_key(id: u128) -> [u8; SESSION_KEY_LEN] {
    id.to_be_bytes()
}

/// The session id of a session key.
pub fn decode_session_key(key: &[u8]) -> Option<u128> {
    Some(u128::from_be_bytes(key.try_into().ok()?))
}

/// The millisecond a session id was made (its `connectedAt`).
pub fn session_ms(id: u128) -> u64 {
    (id >> RANDOM_BITS) as u64
}

/// The smallest session id of millisecond `ms`.
pub fn first_id_at(ms: u64) -> u128 {
    u128::from(ms.min((1 << 48) - 1)) << RANDOM_BITS
}

/// The largest session id of millisecond `ms`.
pub fn last_id_at(ms: u64) -> u128 {
    first_id_at(ms) | ((1u128 << RANDOM_BITS) - 1)
}

/// An event key.
pub fn event_key(session: u128, at_ms: u64, seq: u64) -> [u8; EVENT_KEY_LEN] {
    let mut key = [0u8; EVENT_KEY_LEN];
    key[..16].copy_from_slice(&session.to_be_bytes());
    key[16..24].copy_from_slice(&at_ms.to_be_bytes());
    key[24..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The parts of an event key.
pub fn decode_event_key(key: &[u8]) -> Option<(u128, u64, u64)> {
    if key.len() != EVENT_KEY_LEN {
        return None;
    }
    Some((
        u128::from_be_bytes(key[..16].try_into().ok()?),
        u64::from_be_bytes(key[16..24].try_into().ok()?),
        u64::from_be_bytes(key[24..].try_into().ok()?),
    ))
}

/// Whether `name` can be part of a key (no separator byte).
pub fn valid_name(name: &str) -> bool {
    !name.as_bytes().contains(&0)
}

/// The prefix of every index key of `name`.
pub fn index_prefix(name: &str) -> Vec<u8> {
    prefix_with_room(name, SESSION_KEY_LEN)
}

/// `name`'s prefix, in a buffer with room for `tail` more bytes: the key
/// that extends it is built in one allocation.
pub fn prefix_with_room(name: &str, tail: usize) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 1 + tail);
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key
}

/// An index key: `name` then the session key.
pub fn index_key(name: &str, session: u128) -> Vec<u8> {
    let mut key = index_prefix(name);
    key.extend_from_slice(&session.to_be_bytes());
    key
}

/// The parts of an index key.
pub fn decode_index_key(key: &[u8]) -> Option<(&str, u128)> {
    if key.len() < SESSION_KEY_LEN + 1 {
        return None;
    }
    let (head, session) = key.split_at(key.len() - SESSION_KEY_LEN);
    let (name, sep) = head.split_at(head.len() - 1);
    if sep != [0] || name.contains(&0) {
        return None;
    }
    Some((
        std::str::from_utf8(name).ok()?,
        u128::from_be_bytes(session.try_into().ok()?),
    ))
}

/// The start (unix seconds) of the base bucket holding `ms`.
pub fn bucket_start(ms: u64) -> u64 {
    let secs = ms / 1000;
    secs - secs % BASE_BUCKET_SECS
}

/// A churn key; `room` `None` is the total over all rooms.
pub fn churn_key(room: Option<&str>, bucket_secs: u64) -> Vec<u8> {
    let mut key = index_prefix(room.unwrap_or(""));
    key.extend_from_slice(&bucket_secs.to_be_bytes());
    key
}

/// The parts of a churn key (`""` is the total).
pub fn decode_churn_key(key: &[u8]) -> Option<(&str, u64)> {
    if key.len() < 9 {
        return None;
    }
    let (head, bucket) = key.split_at(key.len() - 8);
    let (name, sep) = head.split_at(head.len() - 1);
    if sep != [0] || name.contains(&0) {
        return None;
    }
    Some((
        std::str::from_utf8(name).ok()?,
        u64::from_be_bytes(bucket.try_into().ok()?),
    ))
}

/// A peak key.
pub fn peak_key(bucket_secs: u64) -> [u8; 8] {
    bucket_secs.to_be_bytes()
}

/// Churn counters of one bucket, 4 × u64 big-endian.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChurnCounts {
    pub joins: u64,
    pub leaves: u64,
    pub rejections: u64,
    pub resumes: u64,
}

impl ChurnCounts {
    pub fn encode(&self) -> [u8; 32] {
        let mut v = [0u8; 32];
        for (i, n) in [self.joins, self.leaves, self.rejections, self.resumes]
            .into_iter()
            .enumerate()
        {
            v[i * 8..i * 8 + 8].copy_from_slice(&n.to_be_bytes());
        }
        v
    }

    pub fn decode(v: &[u8]) -> Option<Self> {
        if v.len() != 32 {
            return None;
        }
        let n = |i: usize| u64::from_be_bytes(v[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        Some(ChurnCounts {
            joins: n(0),
            leaves: n(1),
            rejections: n(2),
            resumes: n(3),
        })
    }

    /// Adds another bucket's counts; saturates, so that a corrupted stored
    /// counter cannot panic a query.
    pub fn add(&mut self, other: &ChurnCounts) {
        self.joins = self.joins.saturating_add(other.joins);
        self.leaves = self.leaves.saturating_add(other.leaves);
        self.rejections = self.rejections.saturating_add(other.rejections);
        self.resumes = self.resumes.saturating_add(other.resumes);
    }
}

/// A u64 value, big-endian.
pub fn decode_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;

    #[test]
    fn session_keys_round_trip_and_sort_by_time_then_id() {
        let mut rng = rand::rng();
        let mut ids: Vec<u128> = (0..5000)
            .map(|_| {
                let ms: u64 = rng.random_range(0..(1u64 << 48));
                first_id_at(ms) | (rng.random::<u128>() & ((1u128 << 80) - 1))
            })
            .collect();
        for id in &ids {
            let key = session_key(*id);
            assert_eq!(decode_session_key(&key), Some(*id));
            assert!(first_id_at(session_ms(*id)) <= *id && *id <= last_id_at(session_ms(*id)));
        }
        let mut by_key = ids.clone();
        by_key.sort_by_key(|id| session_key(*id));
        ids.sort_by_key(|id| (session_ms(*id), *id));
        assert_eq!(by_key, ids);
    }

    #[test]
    fn session_keys_agree_with_ulids() {
        let u = ulid::Ulid::from_parts(1_764_000_000_123, 42);
        assert_eq!(session_ms(u.0), 1_764_000_000_123);
        assert_eq!(decode_session_key(&session_key(u.0)), Some(u.0));
    }

    #[test]
    fn event_keys_round_trip_and_sort_within_a_session() {
        let mut rng = rand::rng();
        let session: u128 = rng.random();
        let mut parts: Vec<(u64, u64)> = (0..2000)
            .map(|_| (rng.random::<u64>(), rng.random::<u64>()))
            .collect();
        for (at, seq) in &parts {
            let key = event_key(session, *at, *seq);
            assert_eq!(decode_event_key(&key), Some((session, *at, *seq)));
            assert!(key.starts_with(&session_key(session)));
        }
        let mut keys: Vec<_> = parts
            .iter()
            .map(|(a, s)| event_key(session, *a, *s))
            .collect();
        keys.sort();
        parts.sort();
        let decoded: Vec<_> = keys
            .iter()
            .map(|k| {
                let (_, a, s) = decode_event_key(k).unwrap();
                (a, s)
            })
            .collect();
        assert_eq!(decoded, parts);
        assert_eq!(decode_event_key(&[0u8; 31]), None);
    }

    fn random_name(rng: &mut impl Rng) -> String {
        const CHARS: &[u8] = b"abcXYZ019_.-";
        let len = rng.random_range(1..=64);
        (0..len)
            .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
            .collect()
    }

    #[test]
    fn index_keys_round_trip_and_keep_names_apart() {
        let mut rng = rand::rng();
        for _ in 0..3000 {
            let name = random_name(&mut rng);
            let session: u128 = rng.random();
            let key = index_key(&name, session);
            assert_eq!(decode_index_key(&key), Some((name.as_str(), session)));
            assert!(key.starts_with(&index_prefix(&name)));
            // A name that is a prefix of another never shares its prefix.
            let longer = format!("{name}a");
            assert!(!index_key(&longer, session).starts_with(&index_prefix(&name)));
        }
        assert_eq!(decode_index_key(b"short"), None);
    }

    #[test]
    fn churn_keys_round_trip_and_sort_by_time_within_a_room() {
        let mut rng = rand::rng();
        for _ in 0..3000 {
            let name = random_name(&mut rng);
            let a: u64 = rng.random();
            let b: u64 = rng.random();
            let ka = churn_key(Some(&name), a);
            assert_eq!(decode_churn_key(&ka), Some((name.as_str(), a)));
            assert_eq!(ka < churn_key(Some(&name), b), a < b);
        }
        assert_eq!(decode_churn_key(&churn_key(None, 60)), Some(("", 60)));
    }

    #[test]
    fn counters_round_trip() {
        let mut rng = rand::rng();
        for _ in 0..1000 {
            let c = ChurnCounts {
                joins: rng.random(),
                leaves: rng.random(),
                rejections: rng.random(),
                resumes: rng.random(),
            };
            assert_eq!(ChurnCounts::decode(&c.encode()), Some(c));
        }
        assert_eq!(bucket_start(61_999), 60);
        assert_eq!(decode_u64(&peak_key(7)), Some(7));
    }
}
