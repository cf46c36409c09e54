//! The analytics store's key codec (`chatsubo::analytics::layout`: the
//! history's keys, and the resume tree's keys and records):
//! decoding any bytes never panics, and whatever decodes encodes back to the
//! same bytes (one encoding per key); encoding any parts decodes back to them
//! and keeps the byte order the queries scan by.

#![no_main]

use chatsubo::analytics::layout::{
    self as keys, ChurnCounts, EVENT_KEY_LEN, SESSION_KEY_LEN, bucket_start, churn_key, decode_churn_key,
    decode_event_key, decode_index_key, decode_session_key, decode_u64, event_key, first_id_at,
    index_key, index_prefix, last_id_at, peak_key, session_key, session_ms, valid_name,
};
use chatsubo::analytics::layout::{decode_record, decode_resume_key, encode_record, resume_key};
use chatsubo::analytics::{ResumeRecord, StoredToken};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    /// Decoded as every kind of key and value.
    bytes: &'a [u8],
    a: Parts,
    b: Parts,
}

#[derive(Arbitrary, Debug)]
struct Parts {
    session: u128,
    ms: u64,
    seq: u64,
    name: String,
    counts: [u64; 4],
    peer: String,
    record: Record,
}

#[derive(Arbitrary, Debug)]
struct Record {
    display_name: Option<String>,
    session: String,
    token: Option<(String, String)>,
    joined_at: u64,
    expires_at: Option<u64>,
    reason: Option<String>,
}

fuzz_target!(|input: Input<'_>| {
    decode_anything(input.bytes);
    round_trip(&input.a);
    round_trip(&input.b);
    order(&input.a, &input.b);
});

/// Any bytes: no panic, and a key that decodes is the encoding of its parts.
fn decode_anything(bytes: &[u8]) {
    if let Some(id) = decode_session_key(bytes) {
        assert_eq!(session_key(id), bytes);
    } else {
        assert_ne!(bytes.len(), SESSION_KEY_LEN);
    }
    if let Some((session, at, seq)) = decode_event_key(bytes) {
        assert_eq!(event_key(session, at, seq), bytes);
    } else {
        assert_ne!(bytes.len(), EVENT_KEY_LEN);
    }
    if let Some((name, session)) = decode_index_key(bytes) {
        assert!(valid_name(name));
        assert_eq!(index_key(name, session), bytes);
    }
    if let Some((room, bucket)) = decode_churn_key(bytes) {
        assert!(valid_name(room));
        let room = (!room.is_empty()).then_some(room);
        assert_eq!(churn_key(room, bucket), bytes);
    }
    if let Some(counts) = ChurnCounts::decode(bytes) {
        assert_eq!(counts.encode(), bytes);
    }
    if let Some(n) = decode_u64(bytes) {
        assert_eq!(peak_key(n), bytes);
    }
    if let Some((room, peer)) = decode_resume_key(bytes) {
        assert!(!room.is_empty() && valid_name(room));
        assert!(!peer.is_empty() && valid_name(peer));
        assert_eq!(resume_key(room, peer), bytes);
    }
    if let Ok(record) = decode_record(bytes) {
        let _ = record.token_parts();
        assert_eq!(decode_record(&encode_record(&record)).ok(), Some(record));
    }
}

/// Any parts: encoding then decoding gives them back.
fn round_trip(p: &Parts) {
    let key = session_key(p.session);
    assert_eq!(decode_session_key(&key), Some(p.session));

    let ms = session_ms(p.session);
    assert!(ms < 1 << 48);
    assert!(first_id_at(ms) <= p.session && p.session <= last_id_at(ms));
    assert_eq!(session_ms(first_id_at(p.ms)), p.ms.min((1 << 48) - 1));
    assert_eq!(session_ms(last_id_at(p.ms)), p.ms.min((1 << 48) - 1));

    let key = event_key(p.session, p.ms, p.seq);
    assert_eq!(decode_event_key(&key), Some((p.session, p.ms, p.seq)));
    assert!(key.starts_with(&session_key(p.session)));

    if valid_name(&p.name) {
        let key = index_key(&p.name, p.session);
        assert_eq!(decode_index_key(&key), Some((p.name.as_str(), p.session)));
        assert!(key.starts_with(&index_prefix(&p.name)));

        let key = churn_key(Some(&p.name), p.ms);
        assert_eq!(decode_churn_key(&key), Some((p.name.as_str(), p.ms)));
        assert!(key.starts_with(&index_prefix(&p.name)));
    } else {
        assert!(p.name.as_bytes().contains(&0));
    }
    assert_eq!(decode_churn_key(&churn_key(None, p.ms)), Some(("", p.ms)));

    let bucket = bucket_start(p.ms);
    assert_eq!(bucket % keys::BASE_BUCKET_SECS, 0);
    assert!(bucket <= p.ms / 1000 && p.ms / 1000 - bucket < keys::BASE_BUCKET_SECS);
    assert_eq!(decode_u64(&peak_key(bucket)), Some(bucket));

    if !p.name.is_empty() && valid_name(&p.name) && !p.peer.is_empty() && valid_name(&p.peer) {
        let key = resume_key(&p.name, &p.peer);
        assert_eq!(
            decode_resume_key(&key),
            Some((p.name.as_str(), p.peer.as_str()))
        );
        assert!(key.starts_with(&index_prefix(&p.name)));
    }
    let r = &p.record;
    let record = ResumeRecord {
        display_name: r.display_name.clone(),
        session: r.session.clone(),
        token: r
            .token
            .clone()
            .map(|(id, sha256)| StoredToken { id, sha256 }),
        joined_at: r.joined_at,
        expires_at: r.expires_at,
        reason: r.reason.clone(),
    };
    let _ = record.token_parts();
    assert_eq!(decode_record(&encode_record(&record)).ok(), Some(record));

    let [joins, leaves, rejections, resumes] = p.counts;
    let counts = ChurnCounts {
        joins,
        leaves,
        rejections,
        resumes,
    };
    assert_eq!(ChurnCounts::decode(&counts.encode()), Some(counts));
}

/// Byte order of keys is the order the queries rely on.
fn order(a: &Parts, b: &Parts) {
    // Sessions: by connection millisecond, then by id.
    assert_eq!(
        session_key(a.session).cmp(&session_key(b.session)),
        (session_ms(a.session), a.session).cmp(&(session_ms(b.session), b.session))
    );
    // Events: by session, then time, then sequence.
    assert_eq!(
        event_key(a.session, a.ms, a.seq).cmp(&event_key(b.session, b.ms, b.seq)),
        (a.session, a.ms, a.seq).cmp(&(b.session, b.ms, b.seq))
    );
    peak_order(a.ms, b.ms);
    if valid_name(&a.name) && valid_name(&b.name) {
        // Within one name: index keys by session, churn keys by bucket.
        assert_eq!(
            index_key(&a.name, a.session).cmp(&index_key(&a.name, b.session)),
            a.session.cmp(&b.session)
        );
        assert_eq!(
            churn_key(Some(&a.name), a.ms).cmp(&churn_key(Some(&a.name), b.ms)),
            a.ms.cmp(&b.ms)
        );
        // Different names never share a prefix: a scan of one name's keys
        // never meets another's.
        if a.name != b.name {
            assert!(!index_key(&b.name, b.session).starts_with(&index_prefix(&a.name)));
            assert!(!churn_key(Some(&b.name), b.ms).starts_with(&index_prefix(&a.name)));
        }
    }
}

fn peak_order(a: u64, b: u64) {
    assert_eq!(peak_key(a).cmp(&peak_key(b)), a.cmp(&b));
}
