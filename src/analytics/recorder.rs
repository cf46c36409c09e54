//! The handle the connection loop records events with. It never waits: an
//! event goes into a bounded queue with `try_send`, and a full queue drops
//! it and counts `chatsubo_analytics_events_total{result="dropped"}`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use super::event::{Event, EventKind};
use crate::clock::now_ms;
use crate::telemetry::Metrics;

/// Records events for the writer task.
#[derive(Clone)]
pub struct Recorder {
    tx: Option<mpsc::Sender<Event>>,
    metrics: Arc<Metrics>,
    seq: Arc<AtomicU64>,
}

/// The receiving end, for [`super::writer::AnalyticsWriter`].
pub type EventQueue = mpsc::Receiver<Event>;

impl Recorder {
    /// A recorder with a queue of `capacity` events.
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> (Self, EventQueue) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Recorder {
                tx: Some(tx),
                metrics,
                seq: Arc::new(AtomicU64::new(0)),
            },
            rx,
        )
    }

    /// A recorder that records nothing (a hub without a store).
    pub fn disabled(metrics: Arc<Metrics>) -> Self {
        Recorder {
            tx: None,
            metrics,
            seq: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Records an event of `session` happening now.
    pub fn record(&self, session: u128, kind: EventKind) {
        self.record_at(session, now_ms(), kind);
    }

    /// Records an event of `session` at `at_ms` (unix milliseconds).
    pub fn record_at(&self, session: u128, at_ms: u64, kind: EventKind) {
        let Some(tx) = &self.tx else {
            return;
        };
        let event = Event {
            session,
            at_ms,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            kind,
        };
        // Counted before the send so that the writer's decrement never
        // runs ahead of it.
        self.metrics.store.analytics_queue_depth.inc();
        if tx.try_send(event).is_err() {
            self.metrics.store.analytics_queue_depth.dec();
            self.metrics
                .store
                .analytics_events
                .with_label_values(&["dropped"])
                .inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts() {
        let metrics = Arc::new(Metrics::new(10));
        let (recorder, mut rx) = Recorder::new(2, metrics.clone());
        for _ in 0..5 {
            recorder.record(1, EventKind::Sample { connections: 1 });
        }
        let dropped = metrics
            .store
            .analytics_events
            .with_label_values(&["dropped"])
            .get();
        assert_eq!(dropped, 3);
        assert_eq!(metrics.store.analytics_queue_depth.get(), 2);
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err());
    }
}
