//! The writer: one task that takes events off the queue and writes them to
//! the store in batches (see `batch`). Store failures are retried for a
//! while, counted, logged with their cause chain and reported to `/health`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::batch::prepare_batch;
use super::event::Event;
use super::recorder::EventQueue;
use super::store::{Batch, StatusSink, Store};
use crate::telemetry::Metrics;

/// Most events applied in one batch.
pub const MAX_BATCH: usize = 1024;
/// How long the writer gathers events after the first of a batch (unless
/// [`MAX_BATCH`] come sooner). A session that begins and ends within one
/// batch costs a third of the writes, and a busy session's events are one
/// record per batch. It adds to the flush window: a `kill -9` loses at most
/// `--flush-interval-ms` plus this.
pub const BATCH_LINGER: Duration = Duration::from_millis(100);
/// First wait before a failed batch is tried again; it doubles up to
/// [`RETRY_MAX_WAIT`].
pub const RETRY_FIRST_WAIT: Duration = Duration::from_millis(100);
/// Longest wait between two tries of a failed batch.
pub const RETRY_MAX_WAIT: Duration = Duration::from_secs(2);
/// How long a failed batch is retried before it is dropped (and counted):
/// a failure that outlasts it is not a passing one.
pub const RETRY_FOR: Duration = Duration::from_secs(60);

/// The writer task.
pub struct AnalyticsWriter {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    status: StatusSink,
}

impl AnalyticsWriter {
    pub fn new(store: Arc<dyn Store>, metrics: Arc<Metrics>, status: StatusSink) -> Self {
        AnalyticsWriter {
            store,
            metrics,
            status,
        }
    }

    /// Applies events until `stop` is cancelled, then applies whatever is
    /// still queued and flushes the store.
    pub async fn run(self, mut queue: EventQueue, stop: CancellationToken) {
        loop {
            let first = tokio::select! {
                biased;
                event = queue.recv() => match event {
                    Some(event) => event,
                    None => break,
                },
                _ = stop.cancelled() => break,
            };
            let mut events = vec![first];
            let gather_until = tokio::time::Instant::now() + BATCH_LINGER;
            while events.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(event) => events.push(event),
                    Err(_) => tokio::select! {
                        biased;
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep_until(gather_until) => break,
                        event = queue.recv() => match event {
                            Some(event) => events.push(event),
                            None => break,
                        },
                    },
                }
            }
            self.write(events, &stop).await;
        }
        loop {
            let mut events = Vec::new();
            while events.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(event) => events.push(event),
                    Err(_) => break,
                }
            }
            if events.is_empty() {
                break;
            }
            self.write(events, &stop).await;
        }
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.flush()).await {
            Ok(Ok(())) => tracing::info!(event = "analytics_flushed", "analytics store flushed"),
            Ok(Err(err)) => {
                self.failed(&anyhow::Error::new(err).context("flushing the analytics store"))
            }
            Err(err) => self.failed(&anyhow::Error::new(err).context("the flush task failed")),
        }
    }

    /// Writes one batch of events. While the store fails, the same batch
    /// is tried again with a growing wait (new events wait in the bounded
    /// queue meanwhile), for at most [`RETRY_FOR`], or once more after
    /// `stop`; then it is dropped and counted.
    async fn write(&self, events: Vec<Event>, stop: &CancellationToken) {
        let n = events.len() as u64;
        self.metrics.store.analytics_queue_depth.sub(n as i64);
        let events = Arc::new(events);
        // The records to write are computed once: a retry writes the same
        // values, so a batch that was partly written is not counted twice.
        let mut prepared: Option<Arc<Batch>> = None;
        let started = Instant::now();
        let mut wait = RETRY_FIRST_WAIT;
        let mut failures = 0u32;
        loop {
            let store = self.store.clone();
            let events = events.clone();
            let ready = prepared.clone();
            let result = tokio::task::spawn_blocking(move || {
                let batch = match ready {
                    Some(batch) => batch,
                    None => Arc::new(prepare_batch(&*store, &events)?),
                };
                let written = store
                    .apply_in_order(&batch)
                    .context("writing a batch of analytics records");
                Ok::<_, anyhow::Error>((batch, written))
            })
            .await
            .context("the analytics write task failed")
            .and_then(|r| r);
            let err = match result {
                Ok((_, Ok(()))) => {
                    self.metrics
                        .store
                        .analytics_events
                        .with_label_values(&["written"])
                        .inc_by(n);
                    if failures > 0 {
                        tracing::info!(
                            event = "storage_recovered",
                            after_ms = started.elapsed().as_millis() as u64,
                            failures,
                            "analytics batch written after the store recovered"
                        );
                    }
                    (self.status)(true);
                    return;
                }
                Ok((batch, Err(err))) => {
                    prepared = Some(batch);
                    err
                }
                Err(err) => err,
            };
            failures += 1;
            self.failed(&err);
            if stop.is_cancelled() || started.elapsed() >= RETRY_FOR {
                self.metrics
                    .store
                    .analytics_events
                    .with_label_values(&["dropped"])
                    .inc_by(n);
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => {}
            }
            wait = (wait * 2).min(RETRY_MAX_WAIT);
        }
    }

    fn failed(&self, err: &anyhow::Error) {
        self.metrics.store.storage_errors.inc();
        (self.status)(false);
        tracing::error!(event = "storage_error", cause = ?err, "analytics store write failed");
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Bound;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::analytics::EventKind;
    use crate::analytics::recorder::Recorder;
    use crate::analytics::store::{StoreError, Tree, Visit};

    /// A store that fails every write while `broken` is set.
    #[derive(Default)]
    struct Flaky {
        broken: AtomicBool,
        writes: parking_lot::Mutex<usize>,
    }

    impl Store for Flaky {
        fn get(&self, _: Tree, _: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(None)
        }
        fn apply(&self, _: &Batch) -> Result<(), StoreError> {
            if self.broken.load(Ordering::SeqCst) {
                return Err(StoreError::Backend("disk on fire".into()));
            }
            *self.writes.lock() += 1;
            Ok(())
        }
        fn scan(
            &self,
            _: Tree,
            _: Bound<&[u8]>,
            _: Bound<&[u8]>,
            _: bool,
            _: Visit<'_>,
        ) -> Result<(), StoreError> {
            Ok(())
        }
        fn flush(&self) -> Result<(), StoreError> {
            Ok(())
        }
        fn size_on_disk(&self) -> Result<u64, StoreError> {
            Ok(0)
        }
    }

    #[tokio::test]
    async fn a_failed_batch_is_retried_until_the_store_recovers() {
        let store = Arc::new(Flaky::default());
        let metrics = Arc::new(Metrics::new(10));
        let ok = Arc::new(AtomicBool::new(true));
        let status: StatusSink = {
            let ok = ok.clone();
            Arc::new(move |v| ok.store(v, Ordering::SeqCst))
        };
        let (recorder, queue) = Recorder::new(64, metrics.clone());
        let stop = CancellationToken::new();
        let writer = tokio::spawn(
            AnalyticsWriter::new(store.clone(), metrics.clone(), status).run(queue, stop.clone()),
        );
        let sample = EventKind::Sample { connections: 1 };
        let settle = || tokio::time::sleep(std::time::Duration::from_millis(350));
        let events = |result: &str| {
            metrics
                .store
                .analytics_events
                .with_label_values(&[result])
                .get()
        };

        store.broken.store(true, Ordering::SeqCst);
        recorder.record(0, sample.clone());
        settle().await;
        assert!(!ok.load(Ordering::SeqCst), "health goes degraded");
        let errors = metrics.store.storage_errors.get();
        assert!(errors >= 2, "each failed try is counted ({errors})");
        assert_eq!(events("dropped"), 0, "the batch is kept for a retry");
        // Events recorded meanwhile wait in the queue.
        recorder.record(0, sample.clone());

        store.broken.store(false, Ordering::SeqCst);
        tokio::time::sleep(RETRY_MAX_WAIT + std::time::Duration::from_millis(300)).await;
        assert!(ok.load(Ordering::SeqCst), "back to ok after a good write");
        assert_eq!(events("written"), 2, "nothing was lost");
        assert_eq!(events("dropped"), 0);
        assert_eq!(metrics.store.analytics_queue_depth.get(), 0);

        // Failing at shutdown: tried once more, then dropped and counted.
        store.broken.store(true, Ordering::SeqCst);
        recorder.record(0, sample);
        settle().await;
        stop.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), writer)
            .await
            .expect("the writer stops promptly even while failing")
            .unwrap();
        assert_eq!(events("dropped"), 1);
    }
}
