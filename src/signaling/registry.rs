//! The rooms that exist now, by name. Its lock is taken to find or create a
//! room on join and to forget an empty one, never to relay a message.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::limits::RoomBudget;
use super::room::{JoinRefused, Room};
use super::{ConnHandle, PeerId};
use crate::config::Config;
use crate::protocol::RoomName;
use crate::telemetry::Metrics;

pub struct RoomRegistry {
    rooms: Mutex<HashMap<RoomName, Arc<Room>>>,
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

    /// Joins (creating the room if needed). On success returns the room and
    /// its size after the join; `Err(n)` when it is full with `n` peers.
    pub fn join(
        &self,
        name: &RoomName,
        peer_id: &PeerId,
        display_name: Option<Arc<str>>,
        conn: &ConnHandle,
        max_size: usize,
        metrics: &Metrics,
    ) -> Result<(Arc<Room>, usize), usize> {
        loop {
            let room = self.get_or_create(name, metrics);
            match room.join(peer_id, display_name.clone(), conn, max_size, metrics) {
                Ok(size) => return Ok((room, size)),
                Err(JoinRefused::Full(size)) => return Err(size),
                // It emptied between lookup and join; the next lookup replaces it.
                Err(JoinRefused::Closed) => continue,
            }
        }
    }

    /// The open room of that name, if any.
    pub fn get(&self, name: &RoomName) -> Option<Arc<Room>> {
        self.rooms
            .lock()
            .get(name)
            .filter(|r| !r.is_closed())
            .cloned()
    }

    /// The open room of that name, created if there is none.
    pub fn get_or_create(&self, name: &RoomName, metrics: &Metrics) -> Arc<Room> {
        let mut rooms = self.rooms.lock();
        if let Some(room) = rooms.get(name)
            && !room.is_closed()
        {
            return room.clone();
        }
        let budget = RoomBudget::new(self.per_second, self.burst, self.seats);
        let room = Arc::new(Room::new(name.clone(), budget));
        rooms.insert(name.clone(), room.clone());
        metrics.rooms.active_rooms.set(rooms.len() as i64);
        room
    }

    /// Forgets `room` if it has closed (its last member left).
    pub fn forget_if_closed(&self, room: &Arc<Room>, metrics: &Metrics) {
        if !room.is_closed() {
            return;
        }
        let mut rooms = self.rooms.lock();
        if rooms.get(room.name()).is_some_and(|r| Arc::ptr_eq(r, room)) {
            rooms.remove(room.name());
            metrics.rooms.active_rooms.set(rooms.len() as i64);
        }
    }

    /// Rooms with at least one peer (peers inside their grace included).
    pub fn active(&self) -> Vec<Arc<Room>> {
        self.rooms
            .lock()
            .values()
            .filter(|r| !r.is_closed())
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.rooms.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
