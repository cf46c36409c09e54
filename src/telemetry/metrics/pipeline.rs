//! Families of the telemetry pipeline itself: log lines and spans dropped or
//! exported. Process-wide, since logging and trace export are set up once
//! per process, before any server runs.

use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use tracing_appender::non_blocking::ErrorCounter;

use super::families::{counter, counter_vec};

/// Families of the telemetry pipeline itself (log lines and spans that were
/// dropped). Logging and trace export are set up once per process, before
/// any server runs, so these live in a process-wide registry that every
/// [`Metrics::render`] includes.
pub struct Pipeline {
    pub(super) registry: Registry,
    log_drops: Arc<LogDrops>,
    /// Spans handed to the exporter successfully.
    pub spans_exported: IntCounter,
    /// Spans lost, by reason: `queue_full` (the export queue was full) or
    /// `export_failed` (the collector refused them or could not be reached).
    pub spans_dropped: IntCounterVec,
}

/// The process-wide pipeline families.
pub fn pipeline() -> &'static Pipeline {
    static PIPELINE: OnceLock<Pipeline> = OnceLock::new();
    PIPELINE.get_or_init(|| {
        let registry = Registry::new();
        let log_drops = Arc::new(LogDrops {
            counter: IntCounterVec::new(
                Opts::new(
                    "chatsubo_log_lines_dropped_total",
                    "Log lines dropped because a log writer's queue was full, by output.",
                ),
                &["output"],
            )
            .expect("valid metric"),
            sources: Mutex::new(Vec::new()),
        });
        for output in ["stdout", "file"] {
            log_drops.counter.with_label_values(&[output]);
        }
        registry
            .register(Box::new(LogDropsCollector(log_drops.clone())))
            .expect("unique metric");
        let spans_exported = counter(
            &registry,
            "chatsubo_spans_exported_total",
            "Spans accepted by the OTLP collector.",
        );
        let spans_dropped = counter_vec(
            &registry,
            "chatsubo_spans_dropped_total",
            "Spans lost before reaching the collector: queue_full or export_failed.",
            &["reason"],
        );
        for reason in ["queue_full", "export_failed"] {
            spans_dropped.with_label_values(&[reason]);
        }
        Pipeline {
            registry,
            log_drops,
            spans_exported,
            spans_dropped,
        }
    })
}

impl Pipeline {
    /// Counts the lines a non-blocking log writer drops, read at scrape time.
    pub fn watch_log_writer(&self, output: &'static str, dropped: ErrorCounter) {
        self.log_drops.sources.lock().push((output, dropped));
    }
}

struct LogDrops {
    counter: IntCounterVec,
    sources: Mutex<Vec<(&'static str, ErrorCounter)>>,
}

/// Brings the counter up to the writers' own drop counts, then reports it.
struct LogDropsCollector(Arc<LogDrops>);

impl Collector for LogDropsCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.0.counter.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        for (output, dropped) in self.0.sources.lock().iter() {
            let counter = self.0.counter.with_label_values(&[output]);
            let now = dropped.dropped_lines() as u64;
            let seen = counter.get();
            if now > seen {
                counter.inc_by(now - seen);
            }
        }
        self.0.counter.collect()
    }
}
