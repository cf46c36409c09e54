//! The rooms that exist now, by key. Its lock is taken to find or create a
//! room on join and to forget an empty one, never to relay a message.
//! Matchbox's `?next=N` is here too: it groups the peers of one room name
//! into rooms of N in the order they come.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::dialect::{Dialect, RoomKind};
use super::limits::RoomBudget;
use super::room::{JoinRefused, Room, RoomKey};
use super::{ConnHandle, PeerId};
use crate::config::Config;
use crate::protocol::{Protocol, RoomName};
use crate::telemetry::Metrics;

#[derive(Default)]
struct Rooms {
    by_key: HashMap<RoomKey, Arc<Room>>,
    /// The group that is filling up, for each room name split by `next`.
    filling: HashMap<(Protocol, RoomName, usize), u64>,
    last_group: u64,
}

pub struct RoomRegistry {
    rooms: Mutex<Rooms>,
    /// Each connection's message rate and burst, and the seats of a room:
    /// together they make a new room's relay budget.
    per_second: u32,
    burst: u32,
    seats: u32,
}

impl RoomRegistry {
    pub fn new(config: &Config) -> Self {
        RoomRegistry {
            rooms: Mutex::default(),
            per_second: config.rate_limit_per_sec,
            burst: config.rate_limit_burst,
            seats: config.max_room_size,
        }
    }

    /// Most peers a room of `dialect` holds.
    pub fn seats(&self, dialect: &dyn Dialect) -> usize {
        match dialect.room_kind() {
            RoomKind::Room => self.seats as usize,
            RoomKind::Namespace => usize::MAX,
        }
    }

    /// Joins room `key` (creating it if needed). On success returns the
    /// room and its size after the join; `Err(n)` when it is full with `n`.
    pub fn join(
        &self,
        key: &RoomKey,
        dialect: &Arc<dyn Dialect>,
        peer_id: &PeerId,
        display_name: Option<Arc<str>>,
        conn: &ConnHandle,
        metrics: &Metrics,
    ) -> Result<(Arc<Room>, usize), usize> {
        let max = self.seats(&**dialect);
        loop {
            let room = self.get_or_create(key, dialect, metrics);
            match room.join(peer_id, display_name.clone(), conn, max, metrics) {
                Ok(size) => return Ok((room, size)),
                Err(JoinRefused::Full(size)) => return Err(size),
                // It emptied between lookup and join; the next lookup replaces it.
                Err(JoinRefused::Closed) => continue,
            }
        }
    }

    /// Joins the group of `of` peers that is filling up under `name`: the
    /// first `of` peers to come are one room, the next `of` another.
    pub fn join_group(
        &self,
        name: &RoomName,
        of: usize,
        dialect: &Arc<dyn Dialect>,
        peer_id: &PeerId,
        conn: &ConnHandle,
        metrics: &Metrics,
    ) -> (Arc<Room>, usize) {
        let slot = (dialect.protocol(), name.clone(), of);
        loop {
            let key = {
                let mut rooms = self.rooms.lock();
                let Rooms {
                    filling,
                    last_group,
                    ..
                } = &mut *rooms;
                let group = *filling.entry(slot.clone()).or_insert_with(|| {
                    *last_group += 1;
                    *last_group
                });
                RoomKey {
                    protocol: dialect.protocol(),
                    name: name.clone(),
                    group,
                }
            };
            let room = self.get_or_create(&key, dialect, metrics);
            let joined = room.join(peer_id, None, conn, of, metrics);
            if let Ok(size) = joined
                && size < of
            {
                return (room, size);
            }
            // Complete (or found complete): the next peer starts a new group.
            let mut rooms = self.rooms.lock();
            if rooms.filling.get(&slot) == Some(&key.group) {
                rooms.filling.remove(&slot);
            }
            if let Ok(size) = joined {
                return (room, size);
            }
        }
    }

    /// The open room `key`, if any.
    pub fn get(&self, key: &RoomKey) -> Option<Arc<Room>> {
        self.rooms
            .lock()
            .by_key
            .get(key)
            .filter(|r| !r.is_closed())
            .cloned()
    }

    /// The open rooms of `protocol` named `name` (a name split by `next`
    /// is several rooms).
    pub fn named(&self, protocol: Protocol, name: &str) -> Vec<Arc<Room>> {
        self.rooms
            .lock()
            .by_key
            .iter()
            .filter(|(k, r)| k.protocol == protocol && k.name.as_str() == name && !r.is_closed())
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// The open room `key`, created (for `dialect`) if there is none.
    pub fn get_or_create(
        &self,
        key: &RoomKey,
        dialect: &Arc<dyn Dialect>,
        metrics: &Metrics,
    ) -> Arc<Room> {
        let mut rooms = self.rooms.lock();
        if let Some(room) = rooms.by_key.get(key)
            && !room.is_closed()
        {
            return room.clone();
        }
        let budget = match dialect.room_kind() {
            RoomKind::Room => Some(RoomBudget::new(self.per_second, self.burst, self.seats)),
            RoomKind::Namespace => None,
        };
        let room = Arc::new(Room::new(key.clone(), budget, dialect.clone()));
        rooms.by_key.insert(key.clone(), room.clone());
        metrics.rooms.active_rooms.set(rooms.by_key.len() as i64);
        room
    }

    /// Forgets `room` if it has closed (its last member left).
    pub fn forget_if_closed(&self, room: &Arc<Room>, metrics: &Metrics) {
        if !room.is_closed() {
            return;
        }
        let mut rooms = self.rooms.lock();
        if rooms
            .by_key
            .get(room.key())
            .is_some_and(|r| Arc::ptr_eq(r, room))
        {
            rooms.by_key.remove(room.key());
            metrics.rooms.active_rooms.set(rooms.by_key.len() as i64);
        }
        let group = room.key().group;
        if group != 0 {
            rooms.filling.retain(|_, filling| *filling != group);
        }
    }

    /// Rooms with at least one peer (peers inside their grace included).
    pub fn active(&self) -> Vec<Arc<Room>> {
        self.rooms
            .lock()
            .by_key
            .values()
            .filter(|r| !r.is_closed())
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.rooms.lock().by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
