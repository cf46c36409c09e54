//! The analytics store: its queue and its failures.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};

use super::families::{counter, counter_vec, gauge, touch};

pub struct StoreMetrics {
    pub analytics_queue_depth: IntGauge,
    pub analytics_events: IntCounterVec,
    pub storage_errors: IntCounter,
}

impl StoreMetrics {
    pub fn register(r: &Registry) -> Self {
        let analytics_events = counter_vec(
            r,
            "chatsubo_analytics_events_total",
            "Analytics events handed to the store: written, or dropped because the queue was full.",
            &["result"],
        );
        touch(&analytics_events, &[&["written"], &["dropped"]]);
        StoreMetrics {
            analytics_queue_depth: gauge(
                r,
                "chatsubo_analytics_queue_depth",
                "Analytics events waiting for the store.",
            ),
            analytics_events,
            storage_errors: counter(
                r,
                "chatsubo_storage_errors_total",
                "Failed store operations.",
            ),
        }
    }

    /// Counts `n` events written to the store, or dropped on the way.
    pub fn events(&self, result: &str, n: u64) {
        self.analytics_events.with_label_values(&[result]).inc_by(n);
    }
}
