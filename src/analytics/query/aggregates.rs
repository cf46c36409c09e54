//! The aggregates: room totals, churn by time bucket, and the stats of a
//! time range (sessions, durations, peer connections).

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::Serialize;

use crate::analytics::codec::{RoomStats, decode_events, decode_room, decode_session};
use crate::analytics::event::{EventKind, StoredEvent};
use crate::analytics::keys::{self, ChurnCounts};
use crate::analytics::store::{Store, Tree};

/// Totals of every room seen, by name.
pub fn all_room_totals(store: &dyn Store) -> anyhow::Result<BTreeMap<String, RoomStats>> {
    let mut rooms = BTreeMap::new();
    let mut failure = None;
    store.scan(
        Tree::Rooms,
        Bound::Unbounded,
        Bound::Unbounded,
        false,
        &mut |k, v| {
            match decode_room(v) {
                Ok(s) => {
                    rooms.insert(String::from_utf8_lossy(k).into_owned(), s);
                }
                Err(e) => {
                    failure = Some(e);
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
pub fn room_totals(store: &dyn Store, name: &str) -> anyhow::Result<Option<RoomStats>> {
    match store.get(Tree::Rooms, name.as_bytes())? {
        Some(v) => Ok(Some(decode_room(&v)?)),
        None => Ok(None),
    }
}

/// Churn per `bucket_secs` (a multiple of 60) from `since_ms` to `until_ms`,
/// for one room or all; only buckets with activity, oldest first. Bucket
/// starts are multiples of the width since the Unix epoch.
pub fn churn_by_bucket(
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

/// The `p` quantile of sorted, non-empty `values` (nearest rank).
fn rank<T: Copy>(values: &[T], p: f64) -> T {
    let n = values.len();
    values[((p * n as f64).ceil() as usize).clamp(1, n) - 1]
}

/// Counts a client's report of a peer connection into `stats`, its time
/// into `times`.
fn count_peer_connection(event: &StoredEvent, stats: &mut Stats, times: &mut Vec<f64>) {
    let EventKind::Telemetry(t) = &event.kind else {
        return;
    };
    if t.event != "peer-connection" {
        return;
    }
    match t.outcome.as_deref() {
        Some("connected") => {
            stats.peer_connections += 1;
            if t.path.as_deref() == Some("relay") {
                stats.relayed_connections += 1;
            }
            times.extend(t.ms);
        }
        Some("failed") => stats.failed_peer_connections += 1,
        _ => {}
    }
}

/// What the clients of the sessions in the range reported about their peer
/// connections in later batches than their first: one scan of those
/// sessions' `events` records (keyed by session id, so by connection time).
/// The first batch's are in the session records (schema v5), which
/// [`session_stats`] reads.
fn peer_connection_stats(
    store: &dyn Store,
    (since_ms, until_ms): (u64, u64),
    stats: &mut Stats,
    times: &mut Vec<f64>,
) -> anyhow::Result<()> {
    let first = keys::first_id_at(since_ms);
    let last = keys::last_id_at(until_ms - 1);
    let mut failure = None;
    store.scan(
        Tree::Events,
        Bound::Included(&keys::event_key(first, 0, 0)),
        Bound::Included(&keys::event_key(last, u64::MAX, u64::MAX)),
        false,
        &mut |_, v| {
            match decode_events(v) {
                Ok(group) => {
                    for event in &group {
                        count_peer_connection(event, stats, times);
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    return false;
                }
            }
            true
        },
    )?;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
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
    /// Client-reported peer connections that connected.
    pub peer_connections: u64,
    /// Those of them whose selected pair went through TURN (`path: relay`).
    pub relayed_connections: u64,
    /// Client-reported peer connections that failed.
    pub failed_peer_connections: u64,
    /// Client-reported time to a connected peer, median and 95th percentile.
    pub p50_peer_connect_ms: Option<f64>,
    pub p95_peer_connect_ms: Option<f64>,
}

/// Statistics of the sessions that connected in `[since_ms, until_ms)`.
/// Durations are over the ended ones; percentiles are nearest-rank.
/// `peakConnections` is the highest count of open connections seen in the
/// minutes of the range (sampled at every connect and every 2 s).
pub fn session_stats(store: &dyn Store, since_ms: u64, until_ms: u64) -> anyhow::Result<Stats> {
    let mut stats = Stats::default();
    if until_ms <= since_ms {
        return Ok(stats);
    }
    let mut durations = Vec::new();
    let mut times = Vec::new();
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
                    for event in &s.events {
                        count_peer_connection(event, &mut stats, &mut times);
                    }
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
        stats.avg_duration_ms = Some(durations.iter().sum::<u64>() / durations.len() as u64);
        stats.p50_duration_ms = Some(rank(&durations, 0.50));
        stats.p95_duration_ms = Some(rank(&durations, 0.95));
    }
    peer_connection_stats(store, (since_ms, until_ms), &mut stats, &mut times)?;
    if !times.is_empty() {
        times.sort_unstable_by(f64::total_cmp);
        stats.p50_peer_connect_ms = Some(rank(&times, 0.50));
        stats.p95_peer_connect_ms = Some(rank(&times, 0.95));
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
