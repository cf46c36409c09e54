//! Session analytics: every room event and every session, kept in an
//! embedded store and queried by `/api`. The connection loop records events
//! through a [`Recorder`] (never waiting); the [`AnalyticsWriter`] task
//! turns them into batches of writes; the queries read the store.
//!
//! Inside, `store` is the storage interface and `sled_store` its sled
//! implementation; `keys` and `codec` are the on-disk layout that the
//! writer's `batch` builder writes and everything else reads; `schema`
//! migrates, `recovery` closes what a crash left open, `retention` deletes
//! old history, and `resume_state` keeps the peers a restart gives back.

mod batch;
mod codec;
mod deferred;
mod event;
mod keys;
mod opening;
mod query;
mod recorder;
mod recovery;
mod resume_state;
mod retention;
mod schema;
mod sled_store;
mod store;
mod writer;

pub use batch::apply_events;
pub use codec::RoomStats;
pub use event::{CloseReason, Event, EventKind, SessionRecord, StoredEvent, TelemetryEvent};
pub use opening::{Opened, open, open_or_defer};
pub use query::{
    SessionFilter, SessionPage, Stats, all_room_totals, churn_by_bucket, list_sessions,
    room_totals, session_stats, session_with_events,
};
pub use recorder::{EventQueue, Recorder};
pub use recovery::{Recovered, alive_loop, mark_clean, recover};
pub use resume_state::load as load_resume_state;
pub use resume_state::{ResumeChange, ResumeRecord, StoredPeer, StoredToken};
pub use retention::{Swept, retention_loop, sweep_all};
pub use sled_store::{SledOptions, SledStore};
pub use store::{Batch, StatusSink, Store, StoreError, Tree};
pub use writer::AnalyticsWriter;

/// The store's on-disk layout: its keys, its record codecs and its schema
/// version, for tools, fuzzers and tests that read or build a store
/// directly (`migrations-notes/` describes it).
pub mod layout {
    pub use super::codec::{decode_events, decode_session};
    pub use super::keys::*;
    pub use super::recovery::{ALIVE_KEY, CLEAN_KEY};
    pub use super::resume_state::{
        TOKEN_HASH_LEN, TOKEN_ID_LEN, decode_record, decode_resume_key, encode_record, resume_key,
    };
    pub use super::schema::{Prepared, SCHEMA_VERSION, VERSION_KEY, prepare, read_version};
    pub use super::store::scan_prefix;
}
