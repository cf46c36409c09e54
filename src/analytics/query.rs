//! The queries behind `/api`. Each one scans a key range chosen so that its
//! cost follows the rows it returns (or, for aggregates, the rows inside
//! the asked time range), never the whole history.

use std::collections::BTreeMap;
use std::ops::Bound;

use anyhow::Context;
use serde::Serialize;

use super::event::{EventKind, SessionRecord, StoredEvent};
use super::keys::{self, ChurnCounts};
use super::store::{Store, Tree, scan_prefix};
use super::writer::{RoomStats, decode_events, decode_session};

/// Filters of `GET /api/sessions`, already validated.
#[derive(Clone, Debug, Default)]
pub struct SessionFilter {
    pub room: Option<String>,
    pub peer: Option<String>,
    /// `connectedAt >= since` (unix ms).
    pub since_ms: Option<u64>,
    /// `connectedAt < until` (unix ms).
    pub until_ms: Option<u64>,
    pub limit: usize,
    /// Only sessions ordered before this session id (the previous page's last).
    pub cursor: Option<u128>,
}

/// One page of sessions, newest first.
#[derive(Debug)]
pub struct SessionPage {
    pub sessions: Vec<SessionRecord>,
    /// The id to pass as the next cursor, when more rows may follow.
    pub next_cursor: Option<u128>,
}

/// Sessions matching `filter`, newest first (by `connectedAt`, then id).
pub fn sessions(store: &dyn Store, filter: &SessionFilter) -> anyhow::Result<SessionPage> {
    // The page is the id range [lo, hi], read backwards.
    let lo = filter.since_ms.map_or(0, keys::first_id_at);
    let mut hi = match filter.until_ms {
        Some(0) => return Ok(empty_page()),
        Some(until) => keys::last_id_at(until - 1),
        None => u128::MAX,
    };
    if let Some(cursor) = filter.cursor {
        if cursor == 0 {
            return Ok(empty_page());
        }
        hi = hi.min(cursor - 1);
    }
    if lo > hi {
        return Ok(empty_page());
    }
    let want = filter.limit + 1;
    let mut rows: Vec<(u128, SessionRecord)> = Vec::with_capacity(want.min(1024));
    let mut failure = None;
    match (&filter.peer, &filter.room) {
        (None, None) => {
            store.scan(
                Tree::Sessions,
                Bound::Included(&keys::session_key(lo)),
                Bound::Included(&keys::session_key(hi)),
                true,
                &mut |k, v| {
                    match (keys::decode_session_key(k), decode_session(k, v)) {
                        (Some(id), Ok(s)) => rows.push((id, s)),
                        (_, Err(e)) => {
                            failure = Some(e);
                            return false;
                        }
                        (None, _) => {}
                    }
                    rows.len() < want
                },
            )?;
        }
        (peer, room) => {
            // The peer index is the narrower one: a peer has few sessions.
            let (tree, name) = match peer {
                Some(p) => (Tree::ByPeer, p.as_str()),
                None => (Tree::ByRoom, room.as_deref().expect("room is set")),
            };
            let from = keys::index_key(name, lo);
            let to = keys::index_key(name, hi);
            store.scan(
                tree,
                Bound::Included(&from),
                Bound::Included(&to),
                true,
                &mut |k, _| {
                    let Some((_, id)) = keys::decode_index_key(k) else {
                        return true;
                    };
                    let key = keys::session_key(id);
                    match store.get(Tree::Sessions, &key) {
                        Ok(Some(v)) => match decode_session(&key, &v) {
                            Ok(s) => {
                                if room.is_none() || s.room == *room {
                                    rows.push((id, s));
                                }
                            }
                            Err(e) => {
                                failure = Some(e);
                                return false;
                            }
                        },
                        Ok(None) => {}
                        Err(e) => {
                            failure = Some(e.into());
                            return false;
                        }
                    }
                    rows.len() < want
                },
            )?;
            // A peer's first session has no index entry (schema v4): it is
            // the session its id was made for. Stores written before v4
            // also have the entry, so it may be found twice.
            if let Some(first) = peer.as_deref().and_then(keys::session_of_peer)
                && (lo..=hi).contains(&first)
                && failure.is_none()
                && !rows.iter().any(|(id, _)| *id == first)
            {
                let key = keys::session_key(first);
                if let Some(v) = store.get(Tree::Sessions, &key)? {
                    let s = decode_session(&key, &v)?;
                    if Some(&s.peer_id) == peer.as_ref() && (room.is_none() || s.room == *room) {
                        // Newest first, as the scan gave the others.
                        let at = rows.partition_point(|(id, _)| *id > first);
                        rows.insert(at, (first, s));
                        rows.truncate(want);
                    }
                }
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let next_cursor = if rows.len() > filter.limit {
        rows.truncate(filter.limit);
        rows.last().map(|(id, _)| *id)
    } else {
        None
    };
    Ok(SessionPage {
        sessions: rows.into_iter().map(|(_, s)| s).collect(),
        next_cursor,
    })
}

fn empty_page() -> SessionPage {
    SessionPage {
        sessions: Vec::new(),
        next_cursor: None,
    }
}

/// One session and its events in time order.
pub fn session(
    store: &dyn Store,
    id: u128,
) -> anyhow::Result<Option<(SessionRecord, Vec<StoredEvent>)>> {
    let key = keys::session_key(id);
    let Some(value) = store.get(Tree::Sessions, &key)? else {
        return Ok(None);
    };
    let record = decode_session(&key, &value)?;
    let mut events = Vec::new();
    let mut failure = None;
    scan_prefix(store, Tree::Events, &key, false, &mut |_, v| {
        match decode_events(v) {
            Ok(group) => events.extend(group),
            Err(e) => {
                failure = Some(e);
                return false;
            }
        }
        true
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    // From schema v4 the connect is not stored when the record holds all
    // it says: the time, the address, the user agent, and the peer id
    // (made from the session id; the record's own until a resume).
    if !events
        .iter()
        .any(|e| matches!(e.kind, EventKind::Connect { .. }))
    {
        let resumed = events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Resume { .. }));
        let peer = if resumed {
            keys::peer_of_session(id)
        } else {
            record.peer_id.clone()
        };
        events.insert(
            0,
            StoredEvent {
                at: record.connected_at,
                kind: EventKind::Connect {
                    peer,
                    remote_addr: record.remote_addr.clone(),
                    user_agent: record.user_agent.clone(),
                    connections: 0,
                },
            },
        );
    }
    // Groups are in key order (their first event's time); a stable sort
    // by time puts every event where a key of its own would have.
    events.sort_by_key(|e| e.at);
    Ok(Some((record, events)))
}

/// Totals of every room seen, by name.
pub fn rooms(store: &dyn Store) -> anyhow::Result<BTreeMap<String, RoomStats>> {
    let mut rooms = BTreeMap::new();
    let mut failure = None;
    store.scan(
        Tree::Rooms,
        Bound::Unbounded,
        Bound::Unbounded,
        false,
        &mut |k, v| {
            match serde_json::from_slice::<RoomStats>(v) {
                Ok(s) => {
                    rooms.insert(String::from_utf8_lossy(k).into_owned(), s);
                }
                Err(e) => {
                    failure = Some(anyhow::Error::new(e).context("corrupt room totals"));
                    return false;
                }
            }
            true
        },
    )?;
    match failure {
        Some(e) => Err(e),
        None => Ok(rooms),
    }
}

/// Totals of one room.
pub fn room(store: &dyn Store, name: &str) -> anyhow::Result<Option<RoomStats>> {
    match store.get(Tree::Rooms, name.as_bytes())? {
        Some(v) => Ok(Some(
            serde_json::from_slice(&v).context("corrupt room totals")?,
        )),
        None => Ok(None),
    }
}

/// Churn per `bucket_secs` (a multiple of 60) from `since_ms` to `until_ms`,
/// for one room or all; only buckets with activity, oldest first. Bucket
/// starts are multiples of the width since the Unix epoch.
pub fn churn(
    store: &dyn Store,
    room: Option<&str>,
    since_ms: u64,
    until_ms: u64,
    bucket_secs: u64,
) -> anyhow::Result<Vec<(u64, ChurnCounts)>> {
    let from = keys::churn_key(room, keys::bucket_start(since_ms));
    let to = keys::churn_key(room, until_ms.div_ceil(1000));
    let mut out: BTreeMap<u64, ChurnCounts> = BTreeMap::new();
    store.scan(
        Tree::Churn,
        Bound::Included(&from),
        Bound::Excluded(&to),
        false,
        &mut |k, v| {
            if let (Some((_, start)), Some(counts)) =
                (keys::decode_churn_key(k), ChurnCounts::decode(v))
            {
                let bucket = start - start % bucket_secs;
                out.entry(bucket).or_default().add(&counts);
            }
            true
        },
    )?;
    Ok(out.into_iter().collect())
}

/// `GET /api/stats`.
#[derive(Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub sessions: u64,
    pub avg_duration_ms: Option<u64>,
    pub p50_duration_ms: Option<u64>,
    pub p95_duration_ms: Option<u64>,
    pub reconnects: u64,
    pub room_full_rejections: u64,
    pub peak_connections: u64,
}

/// Statistics of the sessions that connected in `[since_ms, until_ms)`.
/// Durations are over the ended ones; percentiles are nearest-rank.
/// `peakConnections` is the highest count of open connections seen in the
/// minutes of the range (sampled at every connect and every 2 s).
pub fn stats(store: &dyn Store, since_ms: u64, until_ms: u64) -> anyhow::Result<Stats> {
    let mut stats = Stats::default();
    if until_ms <= since_ms {
        return Ok(stats);
    }
    let mut durations = Vec::new();
    let mut failure = None;
    store.scan(
        Tree::Sessions,
        Bound::Included(&keys::session_key(keys::first_id_at(since_ms))),
        Bound::Included(&keys::session_key(keys::last_id_at(until_ms - 1))),
        false,
        &mut |k, v| {
            match decode_session(k, v) {
                Ok(s) => {
                    stats.sessions += 1;
                    if let Some(d) = s.duration_ms {
                        durations.push(d);
                    }
                    if s.resumed_from.is_some() {
                        stats.reconnects += 1;
                    }
                    stats.room_full_rejections += s.room_full_rejections;
                }
                Err(e) => {
                    failure = Some(e);
                    return false;
                }
            }
            true
        },
    )?;
    if let Some(e) = failure {
        return Err(e);
    }
    if !durations.is_empty() {
        durations.sort_unstable();
        let n = durations.len();
        stats.avg_duration_ms = Some(durations.iter().sum::<u64>() / n as u64);
        let rank = |p: f64| durations[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        stats.p50_duration_ms = Some(rank(0.50));
        stats.p95_duration_ms = Some(rank(0.95));
    }
    store.scan(
        Tree::Peaks,
        Bound::Included(&keys::peak_key(keys::bucket_start(since_ms))),
        Bound::Excluded(&keys::peak_key(until_ms.div_ceil(1000))),
        false,
        &mut |_, v| {
            if let Some(p) = keys::decode_u64(v) {
                stats.peak_connections = stats.peak_connections.max(p);
            }
            true
        },
    )?;
    Ok(stats)
}
