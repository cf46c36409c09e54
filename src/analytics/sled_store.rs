//! The sled implementation of [`Store`]. One sled tree per [`Tree`]; a batch
//! is applied group by group ([`Batch::tree_groups`]) with sled's atomic
//! per-tree batches, which reach the disk in order.
//!
//! After an I/O error (a full disk, a read-only directory) sled keeps the
//! error and fails every later write and flush, so the engine is closed and
//! opened again, at most once per [`REOPEN_INTERVAL`], until it opens and
//! writes succeed: the store recovers by itself once the disk does.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use super::store::{Batch, Op, Store, StoreError, Tree, Visit};

/// Least time between two attempts to reopen a failed engine.
pub const REOPEN_INTERVAL: Duration = Duration::from_millis(500);

/// Settings of the sled engine.
#[derive(Clone, Debug)]
pub struct SledOptions {
    /// Bytes of page cache (sled's default is about 1 GB).
    pub cache_bytes: u64,
    /// How often the store flushes to disk on its own: the window a kill -9 loses.
    pub flush_every_ms: u64,
}

/// The analytics store on sled.
pub struct SledStore {
    dir: PathBuf,
    options: SledOptions,
    /// The open engine; `None` after a failure until it opens again.
    engine: RwLock<Option<Arc<Engine>>>,
    last_reopen: Mutex<Option<Instant>>,
}

struct Engine {
    db: sled::Db,
    trees: HashMap<Tree, sled::Tree>,
    /// Stops the flush thread (by being dropped) and waits for it.
    flusher: Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl Engine {
    fn open(dir: &Path, options: &SledOptions) -> Result<Engine, sled::Error> {
        // sled's own flush thread is off: after each flush it also spends up
        // to half of the interval relocating pages out of old log segments,
        // and the memory it frees waits in that thread's epoch garbage, so
        // an idle server's RSS kept rising after a wave of joins. Writes
        // still clean a segment page each as they go.
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(options.cache_bytes)
            .flush_every_ms(None)
            .open()?;
        let mut trees = HashMap::new();
        for tree in Tree::ALL {
            trees.insert(tree, db.open_tree(tree.name())?);
        }
        let flusher = spawn_flusher(
            db.clone(),
            Duration::from_millis(options.flush_every_ms.max(1)),
        )
        .map_err(sled::Error::Io)?;
        Ok(Engine {
            db,
            trees,
            flusher: Some(flusher),
        })
    }

    fn tree(&self, tree: Tree) -> &sled::Tree {
        &self.trees[&tree]
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.flusher.take() {
            drop(stop);
            // Joined, so that the thread's handle on the database (and its
            // file lock) is gone before the engine is opened again.
            let _ = thread.join();
        }
    }
}

/// Flushes `db` every `every` until the sender is dropped: the window that
/// a kill -9 can lose. A failed flush ends the thread; the next write or
/// flush of the store fails too, and the store reopens (see `SledStore`).
fn spawn_flusher(
    db: sled::Db,
    every: Duration,
) -> std::io::Result<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)> {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("store-flush".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every)
            {
                if let Err(err) = db.flush() {
                    tracing::error!(
                        event = "storage_error",
                        cause = %err,
                        "periodic flush of the session store failed"
                    );
                    return;
                }
            }
        })?;
    Ok((stop, thread))
}

fn backend(err: sled::Error) -> StoreError {
    StoreError::Backend(Box::new(err))
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path, options: &SledOptions) -> Result<Self, StoreError> {
        let engine = Engine::open(dir, options).map_err(backend)?;
        Ok(SledStore {
            dir: dir.to_path_buf(),
            options: options.clone(),
            engine: RwLock::new(Some(Arc::new(engine))),
            last_reopen: Mutex::new(None),
        })
    }

    /// The open engine, reopening a failed one when it is time to try.
    fn engine(&self) -> Result<Arc<Engine>, StoreError> {
        if let Some(engine) = &*self.engine.read() {
            return Ok(engine.clone());
        }
        let mut slot = self.engine.write();
        if let Some(engine) = &*slot {
            return Ok(engine.clone());
        }
        {
            let mut last = self.last_reopen.lock();
            if last.is_some_and(|at| at.elapsed() < REOPEN_INTERVAL) {
                return Err(StoreError::Unavailable);
            }
            *last = Some(Instant::now());
        }
        match Engine::open(&self.dir, &self.options) {
            Ok(engine) => {
                tracing::info!(
                    event = "store_reopened",
                    path = %self.dir.display(),
                    "session store reopened after a failure"
                );
                let engine = Arc::new(engine);
                *slot = Some(engine.clone());
                Ok(engine)
            }
            Err(err) => Err(backend(err)),
        }
    }

    /// Runs `op` on the engine; after an I/O error the engine is closed so
    /// that a later call opens it afresh (sled stays failed otherwise).
    fn with<T>(&self, op: impl FnOnce(&Engine) -> Result<T, sled::Error>) -> Result<T, StoreError> {
        let engine = self.engine()?;
        match op(&engine) {
            Ok(v) => Ok(v),
            Err(err) => {
                if matches!(err, sled::Error::Io(_)) {
                    let mut slot = self.engine.write();
                    if slot.as_ref().is_some_and(|e| Arc::ptr_eq(e, &engine)) {
                        *slot = None;
                        tracing::warn!(
                            event = "store_closed_after_error",
                            cause = %err,
                            "closing the session store after an I/O error; it reopens when it can"
                        );
                    }
                }
                Err(backend(err))
            }
        }
    }
}

impl Store for SledStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|e| Ok(e.tree(tree).get(key)?.map(|v| v.to_vec())))
    }

    fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
        let groups: Vec<(Tree, sled::Batch)> = batch
            .tree_groups()
            .into_iter()
            .map(|(tree, ops)| {
                let mut b = sled::Batch::default();
                for op in ops {
                    match op {
                        Op::Put(_, k, v) => b.insert(k.as_slice(), v.as_slice()),
                        Op::Delete(_, k) => b.remove(k.as_slice()),
                        Op::Barrier => {}
                    }
                }
                (tree, b)
            })
            .collect();
        self.with(|e| {
            for (tree, b) in groups {
                e.tree(tree).apply_batch(b)?;
            }
            Ok(())
        })
    }

    /// Plain inserts and removes, then one empty `apply_batch`. sled seals
    /// its current log buffer twice for every `apply_batch` and hands each
    /// to its I/O thread pool, which wakes all of its idle threads for
    /// every one: with an `apply_batch` per tree group, that was thousands
    /// of context switches a second on the core that relays. The one empty `apply_batch` at the end seals the buffer
    /// holding the batch, so its writes reach the OS (not the disk: that is
    /// the flush) as soon as before, and a `kill -9` loses no more than it
    /// did. sled recovers its log in order up to the first write missing,
    /// so a crash keeps a prefix of the writes.
    fn apply_in_order(&self, batch: &Batch) -> Result<(), StoreError> {
        self.with(|e| {
            for (tree, ops) in batch.tree_groups() {
                let tree = e.tree(tree);
                for op in ops {
                    match op {
                        Op::Put(_, k, v) => {
                            tree.insert(k.as_slice(), v.as_slice())?;
                        }
                        Op::Delete(_, k) => {
                            tree.remove(k.as_slice())?;
                        }
                        Op::Barrier => {}
                    }
                }
            }
            e.db.apply_batch(sled::Batch::default())?;
            Ok(())
        })
    }

    fn scan(
        &self,
        tree: Tree,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        reverse: bool,
        visit: Visit<'_>,
    ) -> Result<(), StoreError> {
        // sled panics on an inverted range; an inverted range is empty.
        if let (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) =
            (from, to)
        {
            let empty = a > b
                || (a == b
                    && !(matches!(from, Bound::Included(_)) && matches!(to, Bound::Included(_))));
            if empty {
                return Ok(());
            }
        }
        self.with(|e| {
            let range = e.tree(tree).range::<&[u8], _>((from, to));
            if reverse {
                for item in range.rev() {
                    let (k, v) = item?;
                    if !visit(&k, &v) {
                        break;
                    }
                }
            } else {
                for item in range {
                    let (k, v) = item?;
                    if !visit(&k, &v) {
                        break;
                    }
                }
            }
            Ok(())
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.with(|e| e.db.flush().map(|_| ()))
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.with(|e| e.db.size_on_disk())
    }
}
