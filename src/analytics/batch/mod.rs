//! The batch builder: turns a batch of events into the store writes that
//! record them (sessions, indexes, event lists, churn counters, room
//! totals, connection peaks, resume records), in an order that a crash at
//! any point leaves recoverable.

mod order;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};

use anyhow::Context;

use super::codec::{self, RoomStats};
use super::event::{Event, EventKind, SessionRecord, StoredEvent};
use super::keys::{self, ChurnCounts};
use super::resume_state::{self, ResumeChange, ResumeRecord};
use super::store::{Batch, Store, Tree};
use crate::protocol::session_of_peer;

/// The batch's maps hash with foldhash, seeded per process, for less than
/// SipHash costs the writer's thread. Their keys (session ids, room
/// names, resume keys) number at most a batch's events, so a client that
/// aimed for collisions could only slow that one batch, off the hot path.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type Set<K> = HashSet<K, foldhash::fast::RandomState>;

/// Most events kept in a session's record (schema v5); the rest of its
/// first batch's go into an `events` record. Every later batch that touches
/// the session rewrites its record, so this bounds what each rewrite costs.
pub const MAX_EVENTS_IN_RECORD: usize = 16;

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
    sessions: Map<u128, Option<SessionRecord>>,
    /// Each session's events of this batch, in order: stored as one value,
    /// keyed by the first of them (schema v3).
    events: Map<u128, EventGroup>,
    churn: Map<Vec<u8>, ChurnCounts>,
    rooms: Map<String, RoomStats>,
    peaks: Map<u64, u64>,
    /// Resume records by key: whether the store held one before this
    /// batch, and the record at its end (`None`: none, deleted).
    resume: Map<Vec<u8>, (bool, Option<ResumeRecord>)>,
    /// Sessions that began in this batch.
    opened: Set<u128>,
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
                    Some(bytes) => Some(codec::decode_session(&key, &bytes)?),
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
                Some(v) => codec::decode_room(&v)?,
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
        if session_of_peer(peer) != Some(id) {
            self.indexes
                .put(Tree::ByPeer, keys::index_key(peer, id), []);
        }
    }

    fn apply(&mut self, store: &dyn Store, event: &Event) -> anyhow::Result<()> {
        let (id, at) = (event.session, event.at_ms);
        match &event.kind {
            EventKind::Connect {
                peer,
                remote_addr,
                user_agent,
                connections,
                protocol,
            } => {
                let record =
                    SessionRecord::opened(id, at, peer, remote_addr, user_agent, *protocol);
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
            } => self.join(store, id, at, (room, *size), display_name)?,
            EventKind::Resume {
                room,
                peer,
                resumed_from,
                size,
            } => self.resume(store, id, at, (room, *size), peer, resumed_from)?,
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
            EventKind::Error { .. } | EventKind::Telemetry(_) => {}
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
            EventKind::ResumeState(change) => self.resume_state(store, id, at, change)?,
        }
        self.keep_event(store, event)
    }

    fn join(
        &mut self,
        store: &dyn Store,
        id: u128,
        at: u64,
        (room, size): (&str, u64),
        display_name: &Option<String>,
    ) -> anyhow::Result<()> {
        if let Some(session) = self.session(store, id)?
            && display_name.is_some()
        {
            session.display_name = display_name.clone();
        }
        self.set_room(store, id, room, at, size)?;
        self.churn(store, room, at, |c| c.joins += 1)
    }

    fn resume(
        &mut self,
        store: &dyn Store,
        id: u128,
        at: u64,
        (room, size): (&str, u64),
        peer: &str,
        resumed_from: &Option<String>,
    ) -> anyhow::Result<()> {
        self.set_peer(store, id, peer)?;
        if let Some(session) = self.session(store, id)? {
            session.resumed_from = resumed_from.clone();
        }
        self.set_room(store, id, room, at, size)?;
        self.churn(store, room, at, |c| c.resumes += 1)
    }

    /// Applies a change of the resume state to the record it names (read
    /// from the store the first time this batch touches it).
    fn resume_state(
        &mut self,
        store: &dyn Store,
        id: u128,
        at: u64,
        change: &ResumeChange,
    ) -> anyhow::Result<()> {
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
        Ok(())
    }

    /// Keeps the event for its session's event list: in the session's
    /// record when the session began in this batch (schema v5), else in the
    /// session's `events` record of this batch. Events of a session the
    /// store does not know (its connect was dropped, or retention removed
    /// it) count in the totals only. A connect whose peer id was made for
    /// the session says nothing its record does not (schema v4):
    /// `query::session` lists it from there.
    fn keep_event(&mut self, store: &dyn Store, event: &Event) -> anyhow::Result<()> {
        let id = event.session;
        let in_record = matches!(&event.kind, EventKind::Connect { peer, .. }
            if session_of_peer(peer) == Some(id));
        if !event.kind.is_stored() || in_record {
            return Ok(());
        }
        let opened_here = self.opened.contains(&id);
        let Some(session) = self.session(store, id)? else {
            return Ok(());
        };
        let stored = StoredEvent {
            at: event.at_ms,
            kind: event.kind.clone(),
        };
        if opened_here && session.events.len() < MAX_EVENTS_IN_RECORD {
            // The batch writes this record anyway (schema v5).
            session.events.push(stored);
        } else {
            self.events
                .entry(id)
                .or_insert_with(|| EventGroup {
                    key: keys::event_key(id, event.at_ms, event.seq),
                    events: Vec::new(),
                })
                .events
                .push(stored);
        }
        Ok(())
    }
}
