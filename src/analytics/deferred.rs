//! A store that could not be opened when the server started: the data
//! directory was read-only, full or not writable. Signaling starts anyway
//! (`/health` says `degraded`), and the store is opened, migrated and
//! recovered by the first call after [`REOPEN_INTERVAL`] that finds the
//! directory usable again: the writer's retries and the alive marker make
//! such calls every few seconds. Until then every call fails with
//! [`StoreError::Unavailable`], which the callers count and report as for
//! any other storage failure.

use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};

use super::sled_store::REOPEN_INTERVAL;
use super::store::{Batch, Store, StoreError, Tree, Visit};

type Opener = Box<dyn Fn() -> anyhow::Result<Arc<dyn Store>> + Send + Sync>;

/// The store, once it opened.
pub struct DeferredStore {
    open: Opener,
    inner: RwLock<Option<Arc<dyn Store>>>,
    last_try: Mutex<Instant>,
}

impl DeferredStore {
    /// A store that `open` opens later (its first try failed just now).
    pub fn new(open: impl Fn() -> anyhow::Result<Arc<dyn Store>> + Send + Sync + 'static) -> Self {
        DeferredStore {
            open: Box::new(open),
            inner: RwLock::new(None),
            last_try: Mutex::new(Instant::now()),
        }
    }

    fn inner(&self) -> Result<Arc<dyn Store>, StoreError> {
        if let Some(store) = &*self.inner.read() {
            return Ok(store.clone());
        }
        let mut slot = self.inner.write();
        if let Some(store) = &*slot {
            return Ok(store.clone());
        }
        {
            let mut last = self.last_try.lock();
            if last.elapsed() < REOPEN_INTERVAL {
                return Err(StoreError::Unavailable);
            }
            *last = Instant::now();
        }
        match (self.open)() {
            Ok(store) => {
                tracing::info!(
                    event = "store_opened_late",
                    "the session store opened after failing at start"
                );
                *slot = Some(store.clone());
                Ok(store)
            }
            Err(err) => {
                tracing::debug!(event = "store_still_unavailable", cause = ?err, "the session store still cannot be opened");
                Err(StoreError::Unavailable)
            }
        }
    }
}

impl Store for DeferredStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner()?.get(tree, key)
    }

    fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
        self.inner()?.apply(batch)
    }

    fn apply_in_order(&self, batch: &Batch) -> Result<(), StoreError> {
        self.inner()?.apply_in_order(batch)
    }

    fn scan(
        &self,
        tree: Tree,
        from: std::ops::Bound<&[u8]>,
        to: std::ops::Bound<&[u8]>,
        reverse: bool,
        visit: Visit<'_>,
    ) -> Result<(), StoreError> {
        self.inner()?.scan(tree, from, to, reverse, visit)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.inner()?.flush()
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner()?.size_on_disk()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::analytics::SledOptions;

    #[test]
    fn fails_until_the_opener_succeeds_then_serves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let usable = Arc::new(AtomicBool::new(false));
        let gate = usable.clone();
        let store = DeferredStore::new(move || {
            anyhow::ensure!(gate.load(Ordering::SeqCst), "read-only file system");
            let options = SledOptions {
                cache_bytes: 1 << 20,
                flush_every_ms: 100,
            };
            Ok(crate::analytics::open(&path, &options)?.0)
        });
        assert!(matches!(
            store.get(Tree::Meta, b"x"),
            Err(StoreError::Unavailable)
        ));
        usable.store(true, Ordering::SeqCst);
        // Too soon after the last try: still unavailable, without trying.
        assert!(matches!(
            store.get(Tree::Meta, b"x"),
            Err(StoreError::Unavailable)
        ));
        std::thread::sleep(REOPEN_INTERVAL);
        let mut batch = Batch::default();
        batch.put(Tree::Meta, b"k".to_vec(), b"v".to_vec());
        store.apply(&batch).unwrap();
        assert_eq!(store.get(Tree::Meta, b"k").unwrap(), Some(b"v".to_vec()));
    }
}
