//! What the server tells its operators: the metrics registry, JSON logs and
//! trace export. [`init`] sets up logs and traces for the process; `main`
//! keeps the returned [`Telemetry`] to the end and calls
//! [`Telemetry::shutdown`] after the server stopped.

mod background_priority;
mod logging;
mod metrics;
mod relay_span;
mod span_ids;
mod traces;

pub use logging::LogWriters;
pub use metrics::{
    ClientReportMetrics, ConnectionMetrics, EdgeMetrics, KNOWN_CLIENT_ERROR_CODES, Metrics,
    Pipeline, RoomMetrics, StoreMetrics, pipeline,
};
pub use relay_span::{RelayAttributes, RelaySpan, connection_context};
pub use traces::continue_trace;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::Config;
use logging::{JsonLines, LogFilter, log_filter};
use traces::Traces;

/// Logging and trace export of this process; flushes when shut down.
pub struct Telemetry {
    traces: Traces,
    writers: LogWriters,
}

/// Installs the global subscriber: JSON lines to stdout and `--log-dir`,
/// and OpenTelemetry spans (exported when an OTLP endpoint is configured).
pub fn init(config: &Config) -> anyhow::Result<Telemetry> {
    let filter = log_filter(config)?;
    let writers = LogWriters::open(config)?;
    let traces = Traces::build(config)?;
    let exporting = traces.target.is_some();
    // Without export, the span layer only needs our spans (for their ids);
    // with export it also takes our events, as span events.
    // The level hint matters: it bounds `log` records too (tungstenite's
    // trace! calls would otherwise each cost a dispatch).
    let span_filter = filter_fn(move |meta| {
        meta.target().starts_with("chatsubo")
            && (meta.is_span() || (exporting && *meta.level() <= tracing::Level::INFO))
    })
    .with_max_level_hint(LevelFilter::INFO);
    // `--log-level off` and no export: no subscriber at all, so that spans
    // and events cost nothing.
    let logging = filter.max_level_hint() != Some(LevelFilter::OFF);
    if logging || exporting {
        tracing_subscriber::registry()
            .with(logging.then(|| JsonLines::new(&writers).with_filter(LogFilter::new(filter))))
            // Exported spans are OpenTelemetry's; otherwise spans only need
            // ids, which `span_ids` gives them far more cheaply.
            .with(exporting.then(|| traces.layer().with_filter(span_filter.clone())))
            .with((!exporting).then(|| span_ids::IdsLayer.with_filter(span_filter)))
            .try_init()
            .map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))?;
        tracing::dispatcher::get_default(logging::installed_in);
    }
    if let Some(target) = &traces.target {
        relay_span::install(traces.relay_tracer(), relay_span::sampler_follows_parent());
        tracing::info!(
            event = "trace_export",
            endpoint = %target.endpoint,
            protocol = if target.http { "http/protobuf" } else { "grpc" },
            "exporting traces over OTLP"
        );
    }
    Ok(Telemetry { traces, writers })
}

impl Telemetry {
    /// Flushes the spans still queued (blocking work, run off the runtime's
    /// worker threads). Log lines are flushed when `self` is dropped.
    pub async fn shutdown(self) -> LogWriters {
        let Telemetry { traces, writers } = self;
        let flushed = tokio::task::spawn_blocking(move || traces.shutdown()).await;
        if let Err(err) = flushed {
            tracing::warn!(event = "trace_flush_failed", cause = %err, "span flush task failed");
        }
        writers
    }
}

/// Logs a server-side failure with its whole cause chain.
pub fn log_server_error(what: &str, err: &(dyn std::error::Error + 'static)) {
    tracing::error!(
        event = "server_error",
        what,
        cause = %logging::error_chain(err),
        "{what}"
    );
}
