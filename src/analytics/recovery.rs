//! Crash safety. While serving, an "alive" marker with the time is written
//! and flushed every [`ALIVE_INTERVAL`]; a graceful stop writes a
//! clean-shutdown marker after the last flush. At the next start, sessions
//! left open are closed: `server_shutdown` after a graceful stop,
//! `server_crash` otherwise, at the last time the server was known alive.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::codec::{decode_session, encode_session};
use super::event::{CloseReason, EventKind};
use super::keys;
use super::recorder::Recorder;
use super::store::{Batch, StatusSink, Store, Tree};
use crate::clock::now_ms;
use crate::telemetry::Metrics;

/// How often the alive marker is written and flushed. A crash is dated at
/// most this long (plus one flush) before it happened: within the 5 s of
/// the contract.
pub const ALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// `meta` key: last time known alive (u64 ms big-endian).
pub const ALIVE_KEY: &[u8] = b"alive_at";
/// `meta` key: time of the last graceful stop (u64 ms big-endian); removed at start.
pub const CLEAN_KEY: &[u8] = b"clean_shutdown_at";
/// Open sessions closed per batch.
const CHUNK: usize = 1000;

/// What the start found.
#[derive(Debug, PartialEq, Eq)]
pub struct Recovered {
    /// Sessions closed.
    pub closed: usize,
    /// How the previous run ended (`None`: there was none).
    pub previous: Option<CloseReason>,
    /// The `endedAt` given to them.
    pub ended_at: Option<u64>,
}

/// Closes the sessions a previous run left open and arms the markers for
/// this run. Call before serving.
pub fn recover(store: &dyn Store) -> anyhow::Result<Recovered> {
    let read = |key: &[u8]| -> anyhow::Result<Option<u64>> {
        Ok(store
            .get(Tree::Meta, key)
            .context("reading a liveness marker")?
            .and_then(|v| keys::decode_u64(&v)))
    };
    let clean = read(CLEAN_KEY)?;
    let alive = read(ALIVE_KEY)?;
    let (previous, ended_at) = match (clean, alive) {
        (Some(at), _) => (Some(CloseReason::ServerShutdown), Some(at)),
        (None, Some(at)) => (Some(CloseReason::ServerCrash), Some(at)),
        (None, None) => (None, None),
    };
    let reason = previous.unwrap_or(CloseReason::ServerCrash);
    let mut closed = 0;
    loop {
        let mut open = Vec::new();
        store.scan(
            Tree::Open,
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
            false,
            &mut |k, _| {
                open.push(k.to_vec());
                open.len() < CHUNK
            },
        )?;
        if open.is_empty() {
            break;
        }
        let mut batch = Batch::default();
        for key in open {
            if let Some(bytes) = store.get(Tree::Sessions, &key)? {
                let mut session = decode_session(&key, &bytes)?;
                if session.ended_at.is_none() {
                    // No marker at all: the connection's own start is the
                    // only moment known for sure.
                    session.close(ended_at.unwrap_or(session.connected_at), reason);
                    batch.put(Tree::Sessions, key.clone(), encode_session(&session)?);
                    closed += 1;
                }
            }
            batch.delete(Tree::Open, key);
        }
        store.apply(&batch).context("closing sessions left open")?;
    }
    let mut batch = Batch::default();
    batch.delete(Tree::Meta, CLEAN_KEY);
    batch.put(Tree::Meta, ALIVE_KEY, now_ms().to_be_bytes());
    store.apply(&batch).context("arming the liveness markers")?;
    store.flush().context("flushing the recovered store")?;
    Ok(Recovered {
        closed,
        previous,
        ended_at,
    })
}

/// Writes and flushes the alive marker.
pub fn mark_alive(store: &dyn Store, at_ms: u64) -> anyhow::Result<()> {
    let mut batch = Batch::default();
    batch.put(Tree::Meta, ALIVE_KEY, at_ms.to_be_bytes());
    store.apply(&batch).context("writing the alive marker")?;
    store.flush().context("flushing the alive marker")
}

/// Writes and flushes the clean-shutdown marker (after the writer's last flush).
pub fn mark_clean(store: &dyn Store, at_ms: u64) -> anyhow::Result<()> {
    let mut batch = Batch::default();
    batch.put(Tree::Meta, ALIVE_KEY, at_ms.to_be_bytes());
    batch.put(Tree::Meta, CLEAN_KEY, at_ms.to_be_bytes());
    store
        .apply(&batch)
        .context("writing the clean-shutdown marker")?;
    store.flush().context("flushing the clean-shutdown marker")
}

/// Writes the alive marker every [`ALIVE_INTERVAL`] and samples the open
/// connections for `peakConnections`. Runs until aborted.
pub async fn alive_loop(
    store: Arc<dyn Store>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    status: StatusSink,
) {
    let mut tick = tokio::time::interval(ALIVE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        recorder.record(
            0,
            EventKind::Sample {
                connections: metrics.connections.open().max(0) as u64,
            },
        );
        let store = store.clone();
        let result = tokio::task::spawn_blocking(move || mark_alive(&*store, now_ms()))
            .await
            .context("the alive-marker task failed")
            .and_then(|r| r);
        match result {
            Ok(()) => status(true),
            Err(err) => {
                metrics.store.storage_errors.inc();
                status(false);
                tracing::error!(event = "storage_error", cause = ?err, "alive marker write failed");
            }
        }
    }
}
