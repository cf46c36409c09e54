//! Session analytics: every room event and every session, kept in an
//! embedded store and queried by `/api`. The connection loop records events
//! through a [`Recorder`] (never waiting); the [`AnalyticsWriter`] task
//! applies them in batches; the queries in [`query`] read the store.

pub mod event;
pub mod keys;
pub mod query;
pub mod recorder;
pub mod recovery;
pub mod resume_state;
pub mod retention;
pub mod schema;
pub mod sled_store;
pub mod store;
pub mod writer;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

pub use event::{CloseReason, Event, EventKind, SessionRecord, StoredEvent};
pub use recorder::{EventQueue, Recorder};
pub use sled_store::{SledOptions, SledStore};
pub use store::{Store, StoreError, Tree};
pub use writer::AnalyticsWriter;

/// Opens the store in `dir` (creating it), migrates it to the current
/// schema and closes the sessions a previous run left open.
pub fn open(
    dir: &Path,
    options: &SledOptions,
) -> anyhow::Result<(Arc<dyn Store>, recovery::Recovered)> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let store = SledStore::open(dir, options)
        .with_context(|| format!("cannot open the session store in {}", dir.display()))?;
    let prepared = schema::prepare(&store)
        .with_context(|| format!("cannot use the session store in {}", dir.display()))?;
    tracing::info!(
        event = "store_opened",
        path = %dir.display(),
        found = ?prepared.found,
        version = prepared.now,
        "session store opened"
    );
    let recovered = recovery::recover(&store).context("recovering sessions left open")?;
    if recovered.closed > 0 {
        tracing::info!(
            event = "sessions_recovered",
            closed = recovered.closed,
            reason = ?recovered.previous,
            "closed sessions the previous run left open"
        );
    }
    Ok((Arc::new(store), recovered))
}
