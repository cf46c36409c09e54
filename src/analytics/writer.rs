//! The writer: one task that takes events off the queue and applies them to
//! the store in batches, keeping sessions, indexes, churn counters, room
//! totals and connection peaks up to date. Store failures are counted,
//! logged with their cause chain and reported to `/health`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::event::{Event, EventKind, SessionRecord, StoredEvent};
use super::keys::{self, ChurnCounts};
use super::recorder::EventQueue;
use super::resume_state::{self, ResumeRecord};
use super::store::{Batch, Store, Tree};
use crate::telemetry::Metrics;

/// Most events applied in one batch.
pub const MAX_BATCH: usize = 1024;
/// How long the writer gathers events after the first of a batch (unless
/// [`MAX_BATCH`] come sooner). A session that begins and ends within one
/// batch costs a third of the writes (see [`BatchState::finish`]), and a
/// busy session's events are one record per batch. It adds to the flush
/// window: a `kill -9` loses at most `--flush-interval-ms` plus this.
pub const BATCH_LINGER: Duration = Duration::from_millis(100);
/// First wait before a failed batch is tried again; it doubles up to
/// [`RETRY_MAX_WAIT`].
pub const RETRY_FIRST_WAIT: Duration = Duration::from_millis(100);
/// Longest wait between two tries of a failed batch.
pub const RETRY_MAX_WAIT: Duration = Duration::from_secs(2);
/// How long a failed batch is retried before it is dropped (and counted):
/// a failure that outlasts it is not a passing one.
pub const RETRY_FOR: Duration = Duration::from_secs(60);

/// Totals of one room (value of the `rooms` tree, JSON).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomStats {
    pub peak_peers: u64,
    pub sessions: u64,
    /// Unix milliseconds.
    pub first_seen: u64,
    pub last_seen: u64,
}

/// Reports whether the last store operation succeeded (to `/health`).
pub type StatusSink = Arc<dyn Fn(bool) + Send + Sync>;

/// The writer task.
pub struct AnalyticsWriter {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    status: StatusSink,
}

impl AnalyticsWriter {
    pub fn new(store: Arc<dyn Store>, metrics: Arc<Metrics>, status: StatusSink) -> Self {
        AnalyticsWriter {
            store,
            metrics,
            status,
        }
    }

    /// Applies events until `stop` is cancelled, then applies whatever is
    /// still queued and flushes the store.
    pub async fn run(self, mut queue: EventQueue, stop: CancellationToken) {
        loop {
            let first = tokio::select! {
                biased;
                event = queue.recv() => match event {
                    Some(event) => event,
                    None => break,
                },
                _ = stop.cancelled() => break,
            };
            let mut events = vec![first];
            let gather_until = tokio::time::Instant::now() + BATCH_LINGER;
            while events.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(event) => events.push(event),
                    Err(_) => tokio::select! {
                        biased;
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep_until(gather_until) => break,
                        event = queue.recv() => match event {
                            Some(event) => events.push(event),
                            None => break,
                        },
                    },
                }
            }
            self.write(events, &stop).await;
        }
        loop {
            let mut events = Vec::new();
            while events.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(event) => events.push(event),
                    Err(_) => break,
                }
            }
            if events.is_empty() {
                break;
            }
            self.write(events, &stop).await;
        }
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.flush()).await {
            Ok(Ok(())) => tracing::info!(event = "analytics_flushed", "analytics store flushed"),
            Ok(Err(err)) => {
                self.failed(&anyhow::Error::new(err).context("flushing the analytics store"))
            }
            Err(err) => self.failed(&anyhow::Error::new(err).context("the flush task failed")),
        }
    }

    /// Writes one batch of events. While the store fails, the same batch
    /// is tried again with a growing wait (new events wait in the bounded
    /// queue meanwhile), for at most [`RETRY_FOR`], or once more after
    /// `stop`; then it is dropped and counted.
    async fn write(&self, events: Vec<Event>, stop: &CancellationToken) {
        let n = events.len() as u64;
        self.metrics.analytics_queue_depth.sub(n as i64);
        let events = Arc::new(events);
        // The records to write are computed once: a retry writes the same
        // values, so a batch that was partly written is not counted twice.
        let mut prepared: Option<Arc<Batch>> = None;
        let started = Instant::now();
        let mut wait = RETRY_FIRST_WAIT;
        let mut failures = 0u32;
        loop {
            let store = self.store.clone();
            let events = events.clone();
            let ready = prepared.clone();
            let result = tokio::task::spawn_blocking(move || {
                let batch = match ready {
                    Some(batch) => batch,
                    None => Arc::new(prepare_batch(&*store, &events)?),
                };
                let written = store
                    .apply_in_order(&batch)
                    .context("writing a batch of analytics records");
                Ok::<_, anyhow::Error>((batch, written))
            })
            .await
            .context("the analytics write task failed")
            .and_then(|r| r);
            let err = match result {
                Ok((_, Ok(()))) => {
                    self.metrics
                        .analytics_events
                        .with_label_values(&["written"])
                        .inc_by(n);
                    if failures > 0 {
                        tracing::info!(
                            event = "storage_recovered",
                            after_ms = started.elapsed().as_millis() as u64,
                            failures,
                            "analytics batch written after the store recovered"
                        );
                    }
                    (self.status)(true);
                    return;
                }
                Ok((batch, Err(err))) => {
                    prepared = Some(batch);
                    err
                }
                Err(err) => err,
            };
            failures += 1;
            self.failed(&err);
            if stop.is_cancelled() || started.elapsed() >= RETRY_FOR {
                self.metrics
                    .analytics_events
                    .with_label_values(&["dropped"])
                    .inc_by(n);
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => {}
            }
            wait = (wait * 2).min(RETRY_MAX_WAIT);
        }
    }

    fn failed(&self, err: &anyhow::Error) {
        self.metrics.storage_errors.inc();
        (self.status)(false);
        tracing::error!(event = "storage_error", cause = ?err, "analytics store write failed");
    }
}

/// Applies a batch of events to the store (blocking).
pub fn apply_events(store: &dyn Store, events: &[Event]) -> anyhow::Result<()> {
    let batch = prepare_batch(store, events)?;
    store
        .apply_in_order(&batch)
        .context("writing a batch of analytics records")
}

/// The writes that record `events`, computed from the store's current
/// records (blocking; reads only).
pub fn prepare_batch(store: &dyn Store, events: &[Event]) -> anyhow::Result<Batch> {
    let mut state = BatchState::default();
    for event in events {
        state.apply(store, event).with_context(|| {
            format!("applying a {:?} event", std::mem::discriminant(&event.kind))
        })?;
    }
    state.finish()
}

/// The writes of one batch, gathered while its events are applied and put
/// in a crash-safe order by [`BatchState::finish`].
#[derive(Default)]
struct BatchState {
    /// Index writes (`by_room`, `by_peer`) in the order they happened.
    indexes: Batch,
    sessions: HashMap<u128, Option<SessionRecord>>,
    /// Each session's events of this batch, in order: stored as one value,
    /// keyed by the first of them (schema v3).
    events: HashMap<u128, EventGroup>,
    churn: HashMap<Vec<u8>, ChurnCounts>,
    rooms: HashMap<String, RoomStats>,
    peaks: HashMap<u64, u64>,
    /// Resume records by key: whether the store held one before this
    /// batch, and the record at its end (`None`: none, deleted).
    resume: HashMap<Vec<u8>, (bool, Option<ResumeRecord>)>,
    /// Sessions that began in this batch.
    opened: HashSet<u128>,
    /// Sessions ended in this batch.
    ended: Vec<u128>,
}

/// The events of one session within one batch.
struct EventGroup {
    key: [u8; keys::EVENT_KEY_LEN],
    events: Vec<StoredEvent>,
}

impl BatchState {
    fn session<'a>(
        &'a mut self,
        store: &dyn Store,
        id: u128,
    ) -> anyhow::Result<Option<&'a mut SessionRecord>> {
        let entry = match self.sessions.entry(id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let key = keys::session_key(id);
                let loaded = match store
                    .get(Tree::Sessions, &key)
                    .context("reading a session")?
                {
                    Some(bytes) => Some(decode_session(&key, &bytes)?),
                    None => None,
                };
                e.insert(loaded)
            }
        };
        Ok(entry.as_mut())
    }

    fn churn(
        &mut self,
        store: &dyn Store,
        room: &str,
        at_ms: u64,
        f: impl Fn(&mut ChurnCounts),
    ) -> anyhow::Result<()> {
        let bucket = keys::bucket_start(at_ms);
        for key in [
            keys::churn_key(Some(room), bucket),
            keys::churn_key(None, bucket),
        ] {
            if !self.churn.contains_key(&key) {
                let current = match store.get(Tree::Churn, &key).context("reading churn")? {
                    Some(v) => ChurnCounts::decode(&v).context("corrupt churn counters")?,
                    None => ChurnCounts::default(),
                };
                self.churn.insert(key.clone(), current);
            }
            f(self.churn.get_mut(&key).expect("inserted above"));
        }
        Ok(())
    }

    fn room(
        &mut self,
        store: &dyn Store,
        room: &str,
        at_ms: u64,
    ) -> anyhow::Result<&mut RoomStats> {
        if !self.rooms.contains_key(room) {
            let current = match store
                .get(Tree::Rooms, room.as_bytes())
                .context("reading room totals")?
            {
                Some(v) => serde_json::from_slice(&v).context("corrupt room totals")?,
                None => RoomStats {
                    first_seen: at_ms,
                    ..RoomStats::default()
                },
            };
            self.rooms.insert(room.to_string(), current);
        }
        let stats = self.rooms.get_mut(room).expect("inserted above");
        stats.last_seen = stats.last_seen.max(at_ms);
        stats.first_seen = stats.first_seen.min(at_ms);
        Ok(stats)
    }

    fn peak(&mut self, store: &dyn Store, at_ms: u64, connections: u64) -> anyhow::Result<()> {
        let bucket = keys::bucket_start(at_ms);
        let peak = match self.peaks.entry(bucket) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let current = match store
                    .get(Tree::Peaks, &keys::peak_key(bucket))
                    .context("reading a peak")?
                {
                    Some(v) => keys::decode_u64(&v).context("corrupt peak")?,
                    None => 0,
                };
                e.insert(current)
            }
        };
        *peak = (*peak).max(connections);
        Ok(())
    }

    /// Moves the session to `room` in the room index, counting it in the
    /// room's totals the first time.
    fn set_room(
        &mut self,
        store: &dyn Store,
        id: u128,
        room: &str,
        at_ms: u64,
        size: u64,
    ) -> anyhow::Result<()> {
        let mut moved = true;
        if let Some(session) = self.session(store, id)? {
            let previous = session.room.replace(room.to_string());
            moved = previous.as_deref() != Some(room);
            if moved && let Some(previous) = previous {
                self.indexes
                    .delete(Tree::ByRoom, keys::index_key(&previous, id));
            }
            if moved {
                self.indexes
                    .put(Tree::ByRoom, keys::index_key(room, id), []);
            }
        }
        let stats = self.room(store, room, at_ms)?;
        stats.peak_peers = stats.peak_peers.max(size);
        if moved {
            stats.sessions += 1;
        }
        Ok(())
    }

    fn set_peer(&mut self, store: &dyn Store, id: u128, peer: &str) -> anyhow::Result<()> {
        if let Some(session) = self.session(store, id)?
            && session.peer_id != peer
        {
            let previous = std::mem::replace(&mut session.peer_id, peer.to_string());
            self.indexes
                .delete(Tree::ByPeer, keys::index_key(&previous, id));
            self.index_peer(peer, id);
        }
        Ok(())
    }

    /// Indexes session `id` under `peer`, unless `peer` was made for it:
    /// a query by peer finds that session from the peer id itself.
    fn index_peer(&mut self, peer: &str, id: u128) {
        if keys::session_of_peer(peer) != Some(id) {
            self.indexes
                .put(Tree::ByPeer, keys::index_key(peer, id), []);
        }
    }

    fn apply(&mut self, store: &dyn Store, event: &Event) -> anyhow::Result<()> {
        let id = event.session;
        let at = event.at_ms;
        match &event.kind {
            EventKind::Connect {
                peer,
                remote_addr,
                user_agent,
                connections,
            } => {
                let record = SessionRecord {
                    session_id: ulid::Ulid(id).to_string(),
                    peer_id: peer.clone(),
                    room: None,
                    display_name: None,
                    remote_addr: remote_addr.clone(),
                    user_agent: user_agent.clone(),
                    connected_at: at,
                    ended_at: None,
                    duration_ms: None,
                    close_reason: None,
                    resumed_from: None,
                    messages_in: 0,
                    messages_out: 0,
                    errors: 0,
                    room_full_rejections: 0,
                };
                self.sessions.insert(id, Some(record));
                self.opened.insert(id);
                self.index_peer(peer, id);
                self.peak(store, at, *connections)?;
            }
            EventKind::Join {
                room,
                display_name,
                size,
                ..
            } => {
                if let Some(session) = self.session(store, id)?
                    && display_name.is_some()
                {
                    session.display_name = display_name.clone();
                }
                self.set_room(store, id, room, at, *size)?;
                self.churn(store, room, at, |c| c.joins += 1)?;
            }
            EventKind::Resume {
                room,
                peer,
                resumed_from,
                size,
            } => {
                self.set_peer(store, id, peer)?;
                if let Some(session) = self.session(store, id)? {
                    session.resumed_from = resumed_from.clone();
                }
                self.set_room(store, id, room, at, *size)?;
                self.churn(store, room, at, |c| c.resumes += 1)?;
            }
            EventKind::Leave { room, .. } => {
                self.room(store, room, at)?;
                self.churn(store, room, at, |c| c.leaves += 1)?;
            }
            EventKind::Disconnect { room, .. } => {
                self.room(store, room, at)?;
            }
            EventKind::RoomFull { room } => {
                if let Some(session) = self.session(store, id)? {
                    session.room_full_rejections += 1;
                }
                self.room(store, room, at)?;
                self.churn(store, room, at, |c| c.rejections += 1)?;
            }
            EventKind::Error { .. } | EventKind::Telemetry { .. } => {}
            EventKind::End {
                close_reason,
                messages_in,
                messages_out,
                errors,
            } => {
                if let Some(session) = self.session(store, id)? {
                    session.close(at, *close_reason);
                    session.messages_in = *messages_in;
                    session.messages_out = *messages_out;
                    session.errors = *errors;
                }
                self.ended.push(id);
            }
            EventKind::Sample { connections } => self.peak(store, at, *connections)?,
            EventKind::ResumeState(change) => {
                let key = change.key();
                let (existed, current) = match self.resume.remove(&key) {
                    Some(known) => known,
                    None => match store
                        .get(Tree::Resume, &key)
                        .context("reading a resume record")?
                    {
                        // A record that does not decode is replaced, not
                        // allowed to fail the batch.
                        Some(v) => (true, resume_state::decode_record(&v).ok()),
                        None => (false, None),
                    },
                };
                self.resume
                    .insert(key, (existed, change.apply(current, id, at)));
            }
        }
        // Events of a session the store does not know (its connect was
        // dropped, or retention removed it) count in the totals only. A
        // connect whose peer id was made for the session says nothing its
        // record does not (schema v4): `query::session` lists it from there.
        let in_record = matches!(&event.kind, EventKind::Connect { peer, .. }
            if keys::session_of_peer(peer) == Some(id));
        if event.kind.is_stored() && !in_record && self.session(store, id)?.is_some() {
            let stored = StoredEvent {
                at,
                kind: event.kind.clone(),
            };
            self.events
                .entry(id)
                .or_insert_with(|| EventGroup {
                    key: keys::event_key(id, at, event.seq),
                    events: Vec::new(),
                })
                .events
                .push(stored);
        }
        Ok(())
    }

    /// The batch, in an order that keeps every prefix recoverable (it is
    /// written with `apply_in_order`, so a crash can keep any prefix of its
    /// writes in tree-group order, see `Batch`):
    /// a session that stays open is in the `open` index before its record
    /// is written, so recovery finds it; a session ended in an earlier
    /// batch's leaves the index only after a barrier, once its closed
    /// record is written; a session that begins and ends in this batch is
    /// written closed and never enters the index. Records come before the
    /// indexes and events that point at them.
    fn finish(self) -> anyhow::Result<Batch> {
        let mut batch = Batch::default();
        let ended: HashSet<u128> = self.ended.iter().copied().collect();
        for id in &self.opened {
            if !ended.contains(id) {
                batch.put(Tree::Open, keys::session_key(*id), []);
            }
        }
        for (id, session) in self.sessions {
            if let Some(session) = session {
                let value = serde_json::to_vec(&session).context("encoding a session")?;
                batch.put(Tree::Sessions, keys::session_key(id), value);
            }
        }
        batch.extend(self.indexes);
        for (_, group) in self.events {
            let value = encode_events(&group.events)?;
            batch.put(Tree::Events, group.key, value);
        }
        for (key, counts) in self.churn {
            batch.put(Tree::Churn, key, counts.encode());
        }
        for (room, stats) in self.rooms {
            let value = serde_json::to_vec(&stats).context("encoding room totals")?;
            batch.put(Tree::Rooms, room.into_bytes(), value);
        }
        for (key, (existed, record)) in self.resume {
            match record {
                Some(record) => batch.put(Tree::Resume, key, resume_state::encode_record(&record)),
                None if existed => batch.delete(Tree::Resume, key),
                // Made and spent within the batch: nothing to write.
                None => {}
            }
        }
        for (bucket, peak) in self.peaks {
            batch.put(Tree::Peaks, keys::peak_key(bucket), peak.to_be_bytes());
        }
        let closed: Vec<u128> = self
            .ended
            .into_iter()
            .filter(|id| !self.opened.contains(id))
            .collect();
        if !closed.is_empty() {
            batch.barrier();
            for id in closed {
                batch.delete(Tree::Open, keys::session_key(id));
            }
        }
        Ok(batch)
    }
}

/// The value of one `events` record: the events of one session written
/// in one batch, as a JSON array (schema v3; v2 held one event object).
fn encode_events(events: &[StoredEvent]) -> anyhow::Result<Vec<u8>> {
    serde_json::to_vec(events).context("encoding events")
}

/// Reads an `events` record: an array of events (v3) or one event (v2).
pub fn decode_events(bytes: &[u8]) -> anyhow::Result<Vec<StoredEvent>> {
    if bytes.first() == Some(&b'[') {
        serde_json::from_slice(bytes).context("corrupt event group")
    } else {
        Ok(vec![
            serde_json::from_slice(bytes).context("corrupt event")?,
        ])
    }
}

/// Reads the session record stored under `key`. A v4 value has no
/// `sessionId`: it is the key's.
pub fn decode_session(key: &[u8], bytes: &[u8]) -> anyhow::Result<SessionRecord> {
    let mut record: SessionRecord =
        serde_json::from_slice(bytes).context("corrupt session record")?;
    if record.session_id.is_empty() {
        let id = keys::decode_session_key(key).context("corrupt session key")?;
        record.session_id = ulid::Ulid(id).to_string();
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use std::ops::Bound;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::analytics::recorder::Recorder;
    use crate::analytics::store::{Op, StoreError, Visit};

    fn event_at(session: u128, at_ms: u64, seq: u64, kind: EventKind) -> Event {
        Event {
            session,
            at_ms,
            seq,
            kind,
        }
    }

    /// A sled store in a directory of its own, removed with the guard.
    fn temp_store() -> (tempfile::TempDir, crate::analytics::SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let options = crate::analytics::SledOptions {
            cache_bytes: 1 << 20,
            flush_every_ms: 1000,
        };
        let store = crate::analytics::SledStore::open(dir.path(), &options).unwrap();
        (dir, store)
    }

    /// A batch's writes in the order `apply_in_order` makes them.
    fn writes_in_order(batch: &Batch) -> Vec<Op> {
        batch
            .tree_groups()
            .into_iter()
            .flat_map(|(_, ops)| ops.into_iter().cloned())
            .collect()
    }

    /// Writes the first `kept` of a batch's writes, as a crash that kept
    /// only those would leave the store.
    fn keep_writes(store: &dyn Store, batch: &Batch, kept: usize) {
        let ops = writes_in_order(batch).into_iter().take(kept).collect();
        store.apply_in_order(&Batch { ops }).unwrap();
    }

    /// A store that fails every write while `broken` is set.
    #[derive(Default)]
    struct Flaky {
        broken: AtomicBool,
        writes: parking_lot::Mutex<usize>,
    }

    impl Store for Flaky {
        fn get(&self, _: Tree, _: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(None)
        }
        fn apply(&self, _: &Batch) -> Result<(), StoreError> {
            if self.broken.load(Ordering::SeqCst) {
                return Err(StoreError::Backend("disk on fire".into()));
            }
            *self.writes.lock() += 1;
            Ok(())
        }
        fn scan(
            &self,
            _: Tree,
            _: Bound<&[u8]>,
            _: Bound<&[u8]>,
            _: bool,
            _: Visit<'_>,
        ) -> Result<(), StoreError> {
            Ok(())
        }
        fn flush(&self) -> Result<(), StoreError> {
            Ok(())
        }
        fn size_on_disk(&self) -> Result<u64, StoreError> {
            Ok(0)
        }
    }

    /// A crash can keep any prefix of a batch's writes (see `Batch`):
    /// whichever prefix of the batch that ends a session was kept, recovery
    /// must still find and close the session. Found by the chaos workload
    /// (chatsubo-loadgen): the `open` entry was deleted in a group before the
    /// closed record's, and a kill -9 between them left the session open
    /// for good.
    #[test]
    fn every_prefix_of_a_batch_that_ends_a_session_leaves_it_closable() {
        use crate::analytics::event::CloseReason;
        use crate::analytics::recovery;

        let id = ulid::Ulid::from_parts(1_000, 7).0;
        let event = |seq: u64, kind: EventKind| event_at(id, 1_000 + seq, seq, kind);
        let connect = [event(
            0,
            EventKind::Connect {
                peer: "p_1".into(),
                remote_addr: "127.0.0.1".into(),
                user_agent: None,
                connections: 1,
            },
        )];
        let rest = [
            event(
                1,
                EventKind::Join {
                    room: "r".into(),
                    peer: "p_1".into(),
                    display_name: None,
                    size: 1,
                },
            ),
            event(
                2,
                EventKind::Leave {
                    room: "r".into(),
                    peer: "p_1".into(),
                    reason: "left".into(),
                },
            ),
            event(
                3,
                EventKind::End {
                    close_reason: CloseReason::Left,
                    messages_in: 0,
                    messages_out: 0,
                    errors: 0,
                },
            ),
        ];
        let writes = {
            let (_dir, store) = temp_store();
            apply_events(&store, &connect).unwrap();
            writes_in_order(&prepare_batch(&store, &rest).unwrap()).len()
        };
        for kept in 0..=writes {
            let (_dir, store) = temp_store();
            apply_events(&store, &connect).unwrap();
            let batch = prepare_batch(&store, &rest).unwrap();
            keep_writes(&store, &batch, kept);
            recovery::recover(&store).unwrap();
            let stored = store
                .get(Tree::Sessions, &keys::session_key(id))
                .unwrap()
                .expect("the session's record");
            let record = decode_session(&keys::session_key(id), &stored).unwrap();
            assert!(
                record.ended_at.is_some(),
                "with {kept} of the {writes} writes kept, the session stays open"
            );
        }
    }

    /// A session that begins and ends in one batch is written closed and
    /// never enters the `open` index; its resume record, bound and gone
    /// within the batch, is never written; its events are one record. Any
    /// prefix of that batch leaves either no session or a closed one.
    #[test]
    fn a_session_begun_and_ended_in_one_batch_is_written_closed_once() {
        use crate::analytics::event::CloseReason;
        use crate::analytics::recovery;
        use crate::analytics::resume_state::ResumeChange;

        let id = ulid::Ulid::from_parts(2_000, 9).0;
        let event = |seq: u64, kind: EventKind| event_at(id, 2_000 + seq, seq, kind);
        let (room, peer) = ("r".to_string(), "p_1".to_string());
        let events = [
            event(
                0,
                EventKind::Connect {
                    peer: peer.clone(),
                    remote_addr: "127.0.0.1".into(),
                    user_agent: None,
                    connections: 1,
                },
            ),
            event(
                1,
                EventKind::Join {
                    room: room.clone(),
                    peer: peer.clone(),
                    display_name: None,
                    size: 1,
                },
            ),
            event(
                2,
                EventKind::ResumeState(ResumeChange::Bound {
                    room: room.clone(),
                    peer: peer.clone(),
                    display_name: None,
                    token_id: [1; 12],
                    token_hash: [2; 32],
                }),
            ),
            event(
                3,
                EventKind::Leave {
                    room: room.clone(),
                    peer: peer.clone(),
                    reason: "left".into(),
                },
            ),
            event(
                4,
                EventKind::ResumeState(ResumeChange::Gone {
                    room,
                    peer,
                    token_id: [1; 12],
                }),
            ),
            event(
                5,
                EventKind::End {
                    close_reason: CloseReason::Left,
                    messages_in: 2,
                    messages_out: 1,
                    errors: 0,
                },
            ),
        ];
        let (_dir, store) = temp_store();
        let batch = prepare_batch(&store, &events).unwrap();
        let trees: Vec<Tree> = batch
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::Put(t, ..) | Op::Delete(t, _) => Some(*t),
                Op::Barrier => None,
            })
            .collect();
        assert!(!trees.contains(&Tree::Open), "{trees:?}");
        assert!(!trees.contains(&Tree::Resume), "{trees:?}");
        assert_eq!(trees.iter().filter(|t| **t == Tree::Events).count(), 1);
        assert_eq!(trees.iter().filter(|t| **t == Tree::Sessions).count(), 1);
        let writes = writes_in_order(&batch).len();
        for kept in 0..=writes {
            let (_dir, store) = temp_store();
            let batch = prepare_batch(&store, &events).unwrap();
            keep_writes(&store, &batch, kept);
            recovery::recover(&store).unwrap();
            if let Some(stored) = store.get(Tree::Sessions, &keys::session_key(id)).unwrap() {
                let record = decode_session(&keys::session_key(id), &stored).unwrap();
                assert!(record.ended_at.is_some(), "with {kept} writes kept");
            }
        }
        apply_events(&store, &events).unwrap();
        let (record, stored) = crate::analytics::query::session(&store, id)
            .unwrap()
            .unwrap();
        assert_eq!(record.close_reason, Some(CloseReason::Left));
        assert_eq!(record.messages_in, 2);
        assert_eq!(stored.len(), 3, "connect, join, leave: {stored:?}");
    }

    #[tokio::test]
    async fn a_failed_batch_is_retried_until_the_store_recovers() {
        let store = Arc::new(Flaky::default());
        let metrics = Arc::new(Metrics::new(10));
        let ok = Arc::new(AtomicBool::new(true));
        let status: StatusSink = {
            let ok = ok.clone();
            Arc::new(move |v| ok.store(v, Ordering::SeqCst))
        };
        let (recorder, queue) = Recorder::new(64, metrics.clone());
        let stop = CancellationToken::new();
        let writer = tokio::spawn(
            AnalyticsWriter::new(store.clone(), metrics.clone(), status).run(queue, stop.clone()),
        );
        let sample = EventKind::Sample { connections: 1 };
        let settle = || tokio::time::sleep(std::time::Duration::from_millis(350));
        let events = |result: &str| metrics.analytics_events.with_label_values(&[result]).get();

        store.broken.store(true, Ordering::SeqCst);
        recorder.record(0, sample.clone());
        settle().await;
        assert!(!ok.load(Ordering::SeqCst), "health goes degraded");
        let errors = metrics.storage_errors.get();
        assert!(errors >= 2, "each failed try is counted ({errors})");
        assert_eq!(events("dropped"), 0, "the batch is kept for a retry");
        // Events recorded meanwhile wait in the queue.
        recorder.record(0, sample.clone());

        store.broken.store(false, Ordering::SeqCst);
        tokio::time::sleep(RETRY_MAX_WAIT + std::time::Duration::from_millis(300)).await;
        assert!(ok.load(Ordering::SeqCst), "back to ok after a good write");
        assert_eq!(events("written"), 2, "nothing was lost");
        assert_eq!(events("dropped"), 0);
        assert_eq!(metrics.analytics_queue_depth.get(), 0);

        // Failing at shutdown: tried once more, then dropped and counted.
        store.broken.store(true, Ordering::SeqCst);
        recorder.record(0, sample);
        settle().await;
        stop.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), writer)
            .await
            .expect("the writer stops promptly even while failing")
            .unwrap();
        assert_eq!(events("dropped"), 1);
    }
}
