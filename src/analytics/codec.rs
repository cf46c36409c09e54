//! The stored form of the history's values: session records, a session's
//! events and room totals. Everything that reads the store (queries,
//! retention, recovery, migrations) decodes through here, and only the
//! batch builder encodes.

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::event::{SessionRecord, StoredEvent};
use super::keys;

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

/// The value of one `events` record: the events of one session written
/// in one batch, as a JSON array (schema v3; v2 held one event object).
pub fn encode_events(events: &[StoredEvent]) -> anyhow::Result<Vec<u8>> {
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

/// The value of a session record (schema v4: no session id, nulls or zeros;
/// v5: the events of its first batch inside).
pub fn encode_session(session: &SessionRecord) -> anyhow::Result<Vec<u8>> {
    // A record with its first events is a few hundred bytes: one
    // allocation instead of growing through seven (sled copies the value).
    let mut out = Vec::with_capacity(512);
    serde_json::to_writer(&mut out, session).context("encoding a session")?;
    Ok(out)
}

/// The value of a room's totals.
pub fn encode_room(stats: &RoomStats) -> anyhow::Result<Vec<u8>> {
    serde_json::to_vec(stats).context("encoding room totals")
}

/// Reads a room's totals.
pub fn decode_room(bytes: &[u8]) -> anyhow::Result<RoomStats> {
    serde_json::from_slice(bytes).context("corrupt room totals")
}
