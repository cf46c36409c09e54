//! The sled implementation of [`Store`]. One sled tree per [`Tree`]; a batch
//! is applied tree by tree with sled's atomic per-tree batches.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;

use super::store::{Batch, Op, Store, StoreError, Tree, Visit};

/// Settings of the sled engine.
#[derive(Clone, Debug)]
pub struct SledOptions {
    /// Bytes of page cache (sled's default is about 1 GB).
    pub cache_bytes: u64,
    /// How often sled flushes to disk on its own: the window a kill -9 loses.
    pub flush_every_ms: u64,
}

/// The analytics store on sled.
pub struct SledStore {
    db: sled::Db,
    trees: HashMap<Tree, sled::Tree>,
}

fn backend(err: sled::Error) -> StoreError {
    StoreError::Backend(Box::new(err))
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path, options: &SledOptions) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(options.cache_bytes)
            .flush_every_ms(Some(options.flush_every_ms.max(1)))
            .open()
            .map_err(backend)?;
        let mut trees = HashMap::new();
        for tree in Tree::ALL {
            trees.insert(tree, db.open_tree(tree.name()).map_err(backend)?);
        }
        Ok(SledStore { db, trees })
    }

    fn tree(&self, tree: Tree) -> &sled::Tree {
        &self.trees[&tree]
    }
}

impl Store for SledStore {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tree(tree)
            .get(key)
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut per_tree: Vec<(Tree, sled::Batch)> = Vec::new();
        for op in batch.ops {
            let tree = match &op {
                Op::Put(t, ..) | Op::Delete(t, _) => *t,
            };
            let index = match per_tree.iter().position(|(t, _)| *t == tree) {
                Some(i) => i,
                None => {
                    per_tree.push((tree, sled::Batch::default()));
                    per_tree.len() - 1
                }
            };
            match op {
                Op::Put(_, k, v) => per_tree[index].1.insert(k, v),
                Op::Delete(_, k) => per_tree[index].1.remove(k),
            }
        }
        for (tree, b) in per_tree {
            self.tree(tree).apply_batch(b).map_err(backend)?;
        }
        Ok(())
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
        let range = self.tree(tree).range::<&[u8], _>((from, to));
        if reverse {
            for item in range.rev() {
                let (k, v) = item.map_err(backend)?;
                if !visit(&k, &v) {
                    break;
                }
            }
        } else {
            for item in range {
                let (k, v) = item.map_err(backend)?;
                if !visit(&k, &v) {
                    break;
                }
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(backend)?;
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.db.size_on_disk().map_err(backend)
    }
}
