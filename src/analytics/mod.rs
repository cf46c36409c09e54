//! Session analytics: every room event and every session, kept in an
//! embedded store and queried by `/api`. The connection loop records events
//! through a [`Recorder`] (never waiting); the [`AnalyticsWriter`] task
//! applies them in batches; the queries in [`query`] read the store.

pub mod deferred;
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

/// How the store came up at start.
pub enum Opened {
    /// Open, with what recovery found.
    Now(Arc<dyn Store>, recovery::Recovered),
    /// The directory could not be used (an I/O error: read-only, full, not
    /// writable): signaling starts without it and it opens when it can.
    Later(Arc<dyn Store>),
}

/// Opens the store like [`open`]; an I/O error gives a store that opens
/// later instead of failing. Anything else (a store from a newer chatsubo,
/// corruption) still fails.
pub fn open_or_defer(dir: &Path, options: &SledOptions) -> anyhow::Result<Opened> {
    match open(dir, options) {
        Ok((store, recovered)) => Ok(Opened::Now(store, recovered)),
        Err(err) if is_io(&err) => {
            tracing::error!(
                event = "storage_error",
                cause = ?err,
                "the session store cannot be opened; serving without it until it can"
            );
            let (dir, options) = (dir.to_path_buf(), options.clone());
            Ok(Opened::Later(Arc::new(deferred::DeferredStore::new(
                move || open(&dir, &options).map(|(store, _)| store),
            ))))
        }
        Err(err) => Err(err),
    }
}

/// Whether `err` comes from the file system (not from what the store holds).
fn is_io(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.is::<std::io::Error>()
            || cause
                .downcast_ref::<sled::Error>()
                .is_some_and(|e| matches!(e, sled::Error::Io(_)))
    })
}
