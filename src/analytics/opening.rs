//! Opening the store at start: migrate it, close what a previous run left
//! open, and fall back to a store that opens later when the disk refuses.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use super::deferred::DeferredStore;
use super::recovery::{self, Recovered};
use super::schema;
use super::sled_store::{SledOptions, SledStore};
use super::store::Store;

/// Opens the store in `dir` (creating it), migrates it to the current
/// schema and closes the sessions a previous run left open.
pub fn open(dir: &Path, options: &SledOptions) -> anyhow::Result<(Arc<dyn Store>, Recovered)> {
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
    Now(Arc<dyn Store>, Recovered),
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
            Ok(Opened::Later(Arc::new(DeferredStore::new(move || {
                open(&dir, &options).map(|(store, _)| store)
            }))))
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
