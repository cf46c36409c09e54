//! Our storage interface: a few ordered key-value trees, batched writes and
//! range scans. The server and the queries speak only this, so the sled
//! implementation in `sled_store.rs` could be swapped for another engine.

use std::ops::Bound;
use std::sync::Arc;

/// The trees of the analytics store (see `migrations-notes/` for layouts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tree {
    /// Schema version and the liveness markers.
    Meta,
    /// One record per session, keyed by its session id (time-ordered).
    Sessions,
    /// Every event of a session, keyed by session, time and sequence.
    Events,
    /// Index: room then session key.
    ByRoom,
    /// Index: peer id then session key.
    ByPeer,
    /// Sessions not yet ended, for crash recovery.
    Open,
    /// Churn counters per room (and overall) per minute.
    Churn,
    /// Per-room totals: peak peers, sessions, first and last seen.
    Rooms,
    /// Connection-count high-water mark per minute.
    Peaks,
    /// The resume state: every peer in a room, for a restarted server (v2).
    Resume,
}

impl Tree {
    pub const ALL: [Tree; 10] = [
        Tree::Meta,
        Tree::Sessions,
        Tree::Events,
        Tree::ByRoom,
        Tree::ByPeer,
        Tree::Open,
        Tree::Churn,
        Tree::Rooms,
        Tree::Peaks,
        Tree::Resume,
    ];

    /// The tree's name on disk.
    pub fn name(self) -> &'static str {
        match self {
            Tree::Meta => "meta",
            Tree::Sessions => "sessions",
            Tree::Events => "events",
            Tree::ByRoom => "by_room",
            Tree::ByPeer => "by_peer",
            Tree::Open => "open",
            Tree::Churn => "churn",
            Tree::Rooms => "rooms",
            Tree::Peaks => "peaks",
            Tree::Resume => "resume",
        }
    }
}

/// One write of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(Tree, Vec<u8>, Vec<u8>),
    Delete(Tree, Vec<u8>),
    /// Every write before it is applied before any write after it.
    Barrier,
}

/// Writes applied together, as [`Batch::tree_groups`]: one group per tree,
/// the groups one after another. [`Store::apply`] makes each group atomic,
/// and a crash (kill -9, power loss) may keep any prefix of the groups;
/// [`Store::apply_in_order`] does not, and a crash may keep any prefix of
/// the writes in that order. A batch whose writes must not outlive others
/// puts a [`Batch::barrier`] between them.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub ops: Vec<Op>,
}

impl Batch {
    pub fn put(&mut self, tree: Tree, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(Op::Put(tree, key.into(), value.into()));
    }

    pub fn delete(&mut self, tree: Tree, key: impl Into<Vec<u8>>) {
        self.ops.push(Op::Delete(tree, key.into()));
    }

    /// Appends the writes of `other`, in order.
    pub fn extend(&mut self, other: Batch) {
        self.ops.extend(other.ops);
    }

    /// The writes so far are applied before any added after.
    pub fn barrier(&mut self) {
        self.ops.push(Op::Barrier);
    }

    /// The groups a store applies, in order: for each part of the batch
    /// between barriers, one group per tree in the order the trees first
    /// appear, each with its writes in order.
    pub fn tree_groups(&self) -> Vec<(Tree, Vec<&Op>)> {
        let mut groups: Vec<(Tree, Vec<&Op>)> = Vec::new();
        let mut part_start = 0;
        for op in &self.ops {
            let tree = match op {
                Op::Put(t, ..) | Op::Delete(t, _) => *t,
                Op::Barrier => {
                    part_start = groups.len();
                    continue;
                }
            };
            match groups[part_start..].iter().position(|(t, _)| *t == tree) {
                Some(i) => groups[part_start + i].1.push(op),
                None => groups.push((tree, vec![op])),
            }
        }
        groups
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// Errors at the storage boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The engine failed (I/O, corruption it detected, …).
    #[error("storage engine failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The engine failed earlier and has not opened again yet.
    #[error("the store is unavailable after a failure; it reopens by itself")]
    Unavailable,
    /// A record could not be decoded.
    #[error("corrupt record in tree {tree}: {what}")]
    Corrupt { tree: &'static str, what: String },
    /// The store was written by a newer chatsubo.
    #[error(
        "the store has schema version {found}, newer than the {supported} this chatsubo understands; \
         run a newer chatsubo or restore a backup (see migrations-notes/)"
    )]
    TooNew { found: u32, supported: u32 },
}

/// Visits keys and values in order; returning `false` stops the scan.
pub type Visit<'a> = &'a mut dyn FnMut(&[u8], &[u8]) -> bool;

/// The storage interface of the analytics.
pub trait Store: Send + Sync + 'static {
    /// Reads one value.
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Applies a batch of writes, each tree group atomic.
    fn apply(&self, batch: &Batch) -> Result<(), StoreError>;

    /// Applies a batch's writes one by one, in [`Batch::tree_groups`]
    /// order, with no group atomic: for batches every prefix of whose
    /// writes is safe to keep. Cheaper than [`Store::apply`] where that
    /// costs the engine more per group (see `SledStore`).
    fn apply_in_order(&self, batch: &Batch) -> Result<(), StoreError> {
        self.apply(batch)
    }

    /// Visits the keys in `[from, to]` (bounds as given), ascending or
    /// descending, until `visit` returns `false`.
    fn scan(
        &self,
        tree: Tree,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        reverse: bool,
        visit: Visit<'_>,
    ) -> Result<(), StoreError>;

    /// Makes every write so far durable.
    fn flush(&self) -> Result<(), StoreError>;

    /// Bytes the store takes on disk (an estimate).
    fn size_on_disk(&self) -> Result<u64, StoreError>;
}

/// Scans every key starting with `prefix`.
pub fn scan_prefix(
    store: &dyn Store,
    tree: Tree,
    prefix: &[u8],
    reverse: bool,
    visit: Visit<'_>,
) -> Result<(), StoreError> {
    match prefix_end(prefix) {
        Some(end) => store.scan(
            tree,
            Bound::Included(prefix),
            Bound::Excluded(&end),
            reverse,
            visit,
        ),
        None => store.scan(
            tree,
            Bound::Included(prefix),
            Bound::Unbounded,
            reverse,
            visit,
        ),
    }
}

/// The smallest key greater than every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Reports whether the last store operation succeeded (to `/health`).
pub type StatusSink = Arc<dyn Fn(bool) + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_grouped_by_tree_between_barriers() {
        let mut batch = Batch::default();
        batch.put(Tree::Open, b"a", b"");
        batch.put(Tree::Sessions, b"a", b"1");
        batch.delete(Tree::Open, b"b");
        batch.barrier();
        batch.delete(Tree::Open, b"a");
        batch.put(Tree::Sessions, b"c", b"2");
        let groups: Vec<(Tree, usize)> = batch
            .tree_groups()
            .into_iter()
            .map(|(tree, ops)| (tree, ops.len()))
            .collect();
        assert_eq!(
            groups,
            [
                (Tree::Open, 2),
                (Tree::Sessions, 1),
                (Tree::Open, 1),
                (Tree::Sessions, 1)
            ]
        );
        assert!(Batch::default().tree_groups().is_empty());
    }
}
