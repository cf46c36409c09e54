//! The order a batch's writes go to the store in, so that a crash that
//! keeps any prefix of them leaves the history recoverable.

use super::BatchState;
use crate::analytics::codec;
use crate::analytics::keys;
use crate::analytics::resume_state;
use crate::analytics::store::{Batch, Tree};

impl BatchState {
    /// The batch, in an order that keeps every prefix recoverable (it is
    /// written with `apply_in_order`, so a crash can keep any prefix of its
    /// writes in tree-group order, see `Batch`):
    /// a session that stays open is in the `open` index before its record
    /// is written, so recovery finds it; a session ended in an earlier
    /// batch's leaves the index only after a barrier, once its closed
    /// record is written; a session that begins and ends in this batch is
    /// written closed and never enters the index. Records come before the
    /// indexes and events that point at them.
    pub(super) fn finish(self) -> anyhow::Result<Batch> {
        let mut batch = Batch::default();
        let ended: super::Set<u128> = self.ended.iter().copied().collect();
        for id in &self.opened {
            if !ended.contains(id) {
                batch.put(Tree::Open, keys::session_key(*id), []);
            }
        }
        for (id, session) in self.sessions {
            if let Some(session) = session {
                batch.put(
                    Tree::Sessions,
                    keys::session_key(id),
                    codec::encode_session(&session)?,
                );
            }
        }
        batch.extend(self.indexes);
        for (_, group) in self.events {
            let value = codec::encode_events(&group.events)?;
            batch.put(Tree::Events, group.key, value);
        }
        for (key, counts) in self.churn {
            batch.put(Tree::Churn, key, counts.encode());
        }
        for (room, stats) in self.rooms {
            batch.put(Tree::Rooms, room.into_bytes(), codec::encode_room(&stats)?);
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
