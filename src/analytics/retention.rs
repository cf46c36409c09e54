//! Retention: sessions (with their events and index entries), churn
//! buckets, room totals and peaks older than `--retention-days` are deleted
//! in small chunks by a background task, so the store stays bounded under
//! endless churn without ever pausing the writer for long.

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::codec::{decode_room, decode_session};
use super::keys;
use super::store::{Batch, Store, Tree, scan_prefix};
use crate::clock::now_ms;
use crate::telemetry::Metrics;

/// Most sessions (or buckets, or rooms) deleted in one chunk.
pub const CHUNK: usize = 500;
/// Pause between sweeps when there is nothing left to delete.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// Pause between two chunks of one sweep, to leave the disk to the writer.
const CHUNK_PAUSE: Duration = Duration::from_millis(20);

/// How much one chunk deleted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub sessions: usize,
    /// `events` records: one per session and writer batch after its first
    /// (schema v5; v3 and v4 also had one for the first).
    pub event_records: usize,
    pub buckets: usize,
    pub rooms: usize,
}

impl Swept {
    fn total(&self) -> usize {
        self.sessions + self.buckets + self.rooms
    }
}

/// Deletes one chunk of everything older than `cutoff_ms`.
pub fn sweep_chunk(store: &dyn Store, cutoff_ms: u64) -> anyhow::Result<Swept> {
    let mut swept = Swept::default();
    let mut batch = Batch::default();
    sweep_sessions(store, cutoff_ms, &mut batch, &mut swept)?;
    let cutoff_bucket = keys::bucket_start(cutoff_ms);
    // Connection peaks.
    store.scan(
        Tree::Peaks,
        Bound::Unbounded,
        Bound::Excluded(&keys::peak_key(cutoff_bucket)),
        false,
        &mut |k, _| {
            batch.delete(Tree::Peaks, k.to_vec());
            swept.buckets += 1;
            swept.buckets < CHUNK
        },
    )?;
    sweep_rooms(store, cutoff_ms, &mut batch, &mut swept)?;
    // Old buckets of the totals over all rooms.
    let total_end = keys::churn_key(None, cutoff_bucket);
    let total_start = keys::index_prefix("");
    store.scan(
        Tree::Churn,
        Bound::Included(&total_start),
        Bound::Excluded(&total_end),
        false,
        &mut |k, _| {
            batch.delete(Tree::Churn, k.to_vec());
            swept.buckets += 1;
            swept.buckets < 2 * CHUNK
        },
    )?;
    store.apply(&batch).context("deleting expired analytics")?;
    Ok(swept)
}

/// Sessions that began before the cutoff, the oldest first (the key order
/// is connectedAt order), with their index entries and events.
fn sweep_sessions(
    store: &dyn Store,
    cutoff_ms: u64,
    batch: &mut Batch,
    swept: &mut Swept,
) -> anyhow::Result<()> {
    let end = keys::session_key(keys::first_id_at(cutoff_ms));
    let mut old = Vec::new();
    store.scan(
        Tree::Sessions,
        Bound::Unbounded,
        Bound::Excluded(&end),
        false,
        &mut |k, v| {
            old.push((k.to_vec(), v.to_vec()));
            old.len() < CHUNK
        },
    )?;
    for (key, value) in old {
        let id = keys::decode_session_key(&key).context("corrupt session key")?;
        match decode_session(&key, &value) {
            Ok(session) => {
                if let Some(room) = &session.room {
                    batch.delete(Tree::ByRoom, keys::index_key(room, id));
                }
                batch.delete(Tree::ByPeer, keys::index_key(&session.peer_id, id));
            }
            Err(err) => {
                tracing::warn!(event = "retention_corrupt_session", cause = ?err, "deleting an unreadable session")
            }
        }
        scan_prefix(store, Tree::Events, &key, false, &mut |k, _| {
            batch.delete(Tree::Events, k.to_vec());
            swept.event_records += 1;
            true
        })?;
        batch.delete(Tree::Open, key.clone());
        batch.delete(Tree::Sessions, key);
        swept.sessions += 1;
    }
    Ok(())
}

/// Rooms not seen since the cutoff go with all their churn buckets; rooms
/// still in use keep only their recent buckets.
fn sweep_rooms(
    store: &dyn Store,
    cutoff_ms: u64,
    batch: &mut Batch,
    swept: &mut Swept,
) -> anyhow::Result<()> {
    let cutoff_bucket = keys::bucket_start(cutoff_ms);
    let mut rooms = Vec::new();
    let mut live = Vec::new();
    store.scan(
        Tree::Rooms,
        Bound::Unbounded,
        Bound::Unbounded,
        false,
        &mut |k, v| {
            match decode_room(v) {
                Ok(stats) if stats.last_seen >= cutoff_ms => live.push(k.to_vec()),
                _ => rooms.push(k.to_vec()),
            }
            rooms.len() < CHUNK
        },
    )?;
    for room in live {
        let name = String::from_utf8_lossy(&room).into_owned();
        let start = keys::index_prefix(&name);
        let end = keys::churn_key(Some(&name), cutoff_bucket);
        store.scan(
            Tree::Churn,
            Bound::Included(&start),
            Bound::Excluded(&end),
            false,
            &mut |k, _| {
                batch.delete(Tree::Churn, k.to_vec());
                swept.buckets += 1;
                swept.buckets < 4 * CHUNK
            },
        )?;
    }
    for room in rooms {
        let name = String::from_utf8_lossy(&room).into_owned();
        scan_prefix(
            store,
            Tree::Churn,
            &keys::index_prefix(&name),
            false,
            &mut |k, _| {
                batch.delete(Tree::Churn, k.to_vec());
                true
            },
        )?;
        batch.delete(Tree::Rooms, room);
        swept.rooms += 1;
    }
    Ok(())
}

/// Deletes everything older than `cutoff_ms`, chunk by chunk.
pub fn sweep_all(store: &dyn Store, cutoff_ms: u64) -> anyhow::Result<Swept> {
    let mut all = Swept::default();
    loop {
        let s = sweep_chunk(store, cutoff_ms)?;
        let done = s.total() == 0;
        all.sessions += s.sessions;
        all.event_records += s.event_records;
        all.buckets += s.buckets;
        all.rooms += s.rooms;
        if done {
            return Ok(all);
        }
    }
}

/// The background task: sweeps in chunks until nothing is older than the
/// retention, then waits [`SWEEP_INTERVAL`]. Runs until aborted.
pub async fn retention_loop(store: Arc<dyn Store>, retention_days: u32, metrics: Arc<Metrics>) {
    let keep_ms = u64::from(retention_days) * 86_400_000;
    loop {
        let cutoff = now_ms().saturating_sub(keep_ms);
        let store2 = store.clone();
        let result = tokio::task::spawn_blocking(move || sweep_chunk(&*store2, cutoff))
            .await
            .context("the retention task failed")
            .and_then(|r| r);
        match result {
            Ok(swept) if swept.total() > 0 => {
                tracing::debug!(
                    event = "retention_swept",
                    sessions = swept.sessions,
                    event_records = swept.event_records,
                    buckets = swept.buckets,
                    rooms = swept.rooms,
                    "expired analytics deleted"
                );
                tokio::time::sleep(CHUNK_PAUSE).await;
            }
            Ok(_) => tokio::time::sleep(SWEEP_INTERVAL).await,
            Err(err) => {
                metrics.store.storage_errors.inc();
                tracing::error!(event = "storage_error", cause = ?err, "retention sweep failed");
                tokio::time::sleep(SWEEP_INTERVAL).await;
            }
        }
    }
}
