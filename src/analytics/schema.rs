//! The schema version in the store and the migrations run at open. Forward
//! only: a store from a newer chatsubo is refused, never rewritten. Each
//! version is described in `migrations-notes/`.

use std::ops::Bound;

use anyhow::Context;

use super::codec::{decode_session, encode_session};
use super::event::SessionRecord;
use super::store::{Batch, Store, StoreError, Tree};

/// The schema this build writes.
pub const SCHEMA_VERSION: u32 = 5;
/// Key of the schema version in the `meta` tree (value: u32 big-endian).
pub const VERSION_KEY: &[u8] = b"schema_version";
/// Records rewritten per batch by a migration.
const MIGRATION_CHUNK: usize = 1000;

/// What [`prepare`] found and did.
#[derive(Debug, PartialEq, Eq)]
pub struct Prepared {
    /// The version found (`None` for a new, empty store).
    pub found: Option<u32>,
    pub now: u32,
}

/// Reads the store's version, runs the migrations up to
/// [`SCHEMA_VERSION`] and records it. Refuses a newer store.
pub fn prepare(store: &dyn Store) -> anyhow::Result<Prepared> {
    let found = match read_version(store)? {
        Some(v) => v,
        None if is_empty(store)? => {
            write_version(store, SCHEMA_VERSION)?;
            return Ok(Prepared {
                found: None,
                now: SCHEMA_VERSION,
            });
        }
        // Data without a version: the v0 layout of the first previews.
        None => 0,
    };
    let mut version = found;
    if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            found: version,
            supported: SCHEMA_VERSION,
        }
        .into());
    }
    while version < SCHEMA_VERSION {
        match version {
            0 => migrate_v0_to_v1(store).context("migrating the store from v0 to v1")?,
            1 => migrate_v1_to_v2(store).context("migrating the store from v1 to v2")?,
            // v3 reads v2's records as they are: nothing to rewrite.
            2 => {}
            // v4 reads v3's full records as they are and writes short ones.
            3 => {}
            // v5 reads v4's records (no events inside) as they are.
            4 => {}
            other => anyhow::bail!("no migration from schema version {other}"),
        }
        version += 1;
        // Written after each step, so that an interrupted migration re-runs
        // only the step it was in (every step is idempotent).
        write_version(store, version)?;
        tracing::info!(event = "store_migrated", version, "store migrated");
    }
    store.flush().context("flushing the migrated store")?;
    Ok(Prepared {
        found: Some(found),
        now: version,
    })
}

/// The version recorded in the store, if any.
pub fn read_version(store: &dyn Store) -> anyhow::Result<Option<u32>> {
    match store
        .get(Tree::Meta, VERSION_KEY)
        .context("reading the schema version")?
    {
        None => Ok(None),
        Some(v) => {
            let bytes: [u8; 4] = v.as_slice().try_into().map_err(|_| StoreError::Corrupt {
                tree: Tree::Meta.name(),
                what: "schema version is not 4 bytes".into(),
            })?;
            Ok(Some(u32::from_be_bytes(bytes)))
        }
    }
}

fn write_version(store: &dyn Store, version: u32) -> anyhow::Result<()> {
    let mut batch = Batch::default();
    batch.put(Tree::Meta, VERSION_KEY, version.to_be_bytes());
    store.apply(&batch).context("writing the schema version")
}

fn is_empty(store: &dyn Store) -> anyhow::Result<bool> {
    let mut empty = true;
    for tree in [Tree::Sessions, Tree::Meta] {
        store.scan(
            tree,
            Bound::Unbounded,
            Bound::Unbounded,
            false,
            &mut |_, _| {
                empty = false;
                false
            },
        )?;
    }
    Ok(empty)
}

/// v0 → v1: v0 session values had no `durationMs` (readers computed it);
/// v1 stores it. Fills it in for every ended session.
fn migrate_v0_to_v1(store: &dyn Store) -> anyhow::Result<()> {
    let mut from: Option<Vec<u8>> = None;
    loop {
        let mut chunk: Vec<(Vec<u8>, SessionRecord)> = Vec::new();
        let mut failure = None;
        let lower = match &from {
            Some(k) => Bound::Excluded(k.as_slice()),
            None => Bound::Unbounded,
        };
        store.scan(
            Tree::Sessions,
            lower,
            Bound::Unbounded,
            false,
            &mut |k, v| {
                match decode_session(k, v) {
                    Ok(s) => chunk.push((k.to_vec(), s)),
                    Err(e) => {
                        failure = Some(e);
                        return false;
                    }
                }
                chunk.len() < MIGRATION_CHUNK
            },
        )?;
        if let Some(e) = failure {
            return Err(e);
        }
        let Some((last, _)) = chunk.last() else {
            return Ok(());
        };
        from = Some(last.clone());
        let mut batch = Batch::default();
        for (key, mut session) in chunk {
            if let (Some(ended), None) = (session.ended_at, session.duration_ms) {
                session.duration_ms = Some(ended.saturating_sub(session.connected_at));
                batch.put(Tree::Sessions, key, encode_session(&session)?);
            }
        }
        store.apply(&batch).context("rewriting sessions")?;
    }
}

/// v1 → v2: adds the `resume` tree (the resume state for a restarted
/// server). A v1 server kept no resume state, so the tree starts empty:
/// peers of a v1 run cannot be given their places back. Anything found in
/// it (nothing a v1 chatsubo wrote) is cleared, so the step is idempotent.
fn migrate_v1_to_v2(store: &dyn Store) -> anyhow::Result<()> {
    loop {
        let mut stale = Vec::new();
        store.scan(
            Tree::Resume,
            Bound::Unbounded,
            Bound::Unbounded,
            false,
            &mut |k, _| {
                stale.push(k.to_vec());
                stale.len() < MIGRATION_CHUNK
            },
        )?;
        if stale.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::default();
        for key in stale {
            batch.delete(Tree::Resume, key);
        }
        store.apply(&batch).context("clearing the resume tree")?;
    }
}
