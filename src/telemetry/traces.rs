//! Trace export: tracing-opentelemetry spans, exported over OTLP in batches.
//!
//! * Endpoint: `--otlp-endpoint`, else `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`). Neither: nothing is exported.
//! * Protocol: gRPC, or HTTP/protobuf when `OTEL_EXPORTER_OTLP_PROTOCOL` (or
//!   `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`) is `http/protobuf`.
//! * `OTEL_SERVICE_NAME` (default `chatsubo`), `OTEL_RESOURCE_ATTRIBUTES`,
//!   `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` and `OTEL_BSP_*` are
//!   read by the OpenTelemetry SDK.
//!
//! Finished spans go into a bounded queue ([`SpanQueue`]); a batch thread
//! exports them. A full queue drops the span and counts it, a failed export
//! counts its spans: the signaling tasks never wait for a collector.
//!
//! Without an endpoint the same layer still runs, with a sampler that records
//! nothing: spans then only carry ids, so that log lines and the relayed
//! `traceparent` share the ids a collector would have seen.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, Span, SpanData,
    SpanExporter, SpanProcessor,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::Config;
use crate::protocol::TraceParent;
use crate::telemetry::background_priority::yield_to_signaling;
use crate::telemetry::metrics::pipeline;

/// Spans waiting for export, at most (`OTEL_BSP_MAX_QUEUE_SIZE` overrides).
pub const SPAN_QUEUE: usize = 16384;
/// Spans per export call (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE` overrides); large
/// batches keep up with one span per relayed message.
pub const EXPORT_BATCH: usize = 2048;
/// How long shutdown waits for the last export.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where spans go, if anywhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportTarget {
    pub endpoint: String,
    pub http: bool,
}

impl ExportTarget {
    /// The target the configuration and the `OTEL_*` variables name.
    pub fn from_config(config: &Config) -> Option<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let protocol = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .unwrap_or_else(|| "grpc".into());
        let http = protocol.trim().starts_with("http");
        // A signal-specific endpoint is used as given; a base endpoint gets
        // the traces path when spoken to over HTTP.
        let (endpoint, as_given) = match (
            config.otlp_endpoint.clone(),
            var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            var("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(e), _, _) => (e, false),
            (None, Some(e), _) => (e, true),
            (None, None, Some(e)) => (e, false),
            (None, None, None) => return None,
        };
        let endpoint = if http && !as_given && !endpoint.ends_with("/v1/traces") {
            format!("{}/v1/traces", endpoint.trim_end_matches('/'))
        } else {
            endpoint
        };
        Some(ExportTarget { endpoint, http })
    }
}

/// The tracer provider, exporting or not.
pub struct Traces {
    // Dropped before the runtime its exporter runs on.
    pub provider: SdkTracerProvider,
    pub target: Option<ExportTarget>,
    _export_runtime: Option<ExportRuntime>,
}

/// The runtime of the gRPC exporter: one thread of its own. The channel's
/// connection runs on it, and so does the encoding of each request (tonic
/// encodes a batch as hyper sends its body): on the server's runtime, a
/// batch of 2,048 spans held a relaying worker thread for milliseconds.
/// (The HTTP exporter's blocking client has a thread of its own already.)
struct ExportRuntime(Option<tokio::runtime::Runtime>);

impl ExportRuntime {
    fn start() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-export")
            .on_thread_start(yield_to_signaling)
            .enable_all()
            .build()
            .context("cannot start the trace export thread")?;
        Ok(ExportRuntime(Some(runtime)))
    }

    fn enter(&self) -> Option<tokio::runtime::EnterGuard<'_>> {
        self.0.as_ref().map(tokio::runtime::Runtime::enter)
    }
}

impl Drop for ExportRuntime {
    fn drop(&mut self) {
        // Allowed anywhere, an async context included; spans were flushed
        // by `Traces::shutdown` before.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Traces {
    /// Builds the provider; a gRPC exporter gets a runtime of its own.
    pub fn build(config: &Config) -> anyhow::Result<Self> {
        let target = ExportTarget::from_config(config);
        let mut builder = SdkTracerProvider::builder().with_resource(resource());
        let mut export_runtime = None;
        match &target {
            Some(target) => {
                let exporter = if target.http {
                    opentelemetry_otlp::SpanExporter::builder()
                        .with_http()
                        .with_protocol(Protocol::HttpBinary)
                        .with_endpoint(target.endpoint.clone())
                        .build()
                } else {
                    let runtime = export_runtime.insert(ExportRuntime::start()?);
                    let _on_it = runtime.enter();
                    opentelemetry_otlp::SpanExporter::builder()
                        .with_tonic()
                        .with_endpoint(target.endpoint.clone())
                        .build()
                }
                .context("cannot build the OTLP span exporter")?;
                let queue = std::env::var("OTEL_BSP_MAX_QUEUE_SIZE")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(SPAN_QUEUE);
                builder = builder.with_span_processor(SpanQueue::new(exporter, queue));
            }
            // Ids only: the sampler records nothing and nothing is exported.
            None => builder = builder.with_sampler(Sampler::AlwaysOff),
        }
        Ok(Traces {
            provider: builder.build(),
            target,
            _export_runtime: export_runtime,
        })
    }

    /// The tracing layer that turns spans into OpenTelemetry spans.
    pub fn layer<S>(
        &self,
    ) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("chatsubo"))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            // Nothing reads the thread's current OpenTelemetry context: log
            // lines read their span's ids from the span, relays get their
            // parent explicitly, and activating it on every enter of
            // `ws.connection` costs every relay.
            .with_context_activation(false)
    }

    /// The tracer of `signal.relay` spans (see [`super::relay_span`]).
    pub fn relay_tracer(&self) -> opentelemetry_sdk::trace::Tracer {
        self.provider.tracer("chatsubo")
    }

    /// Exports what is queued and stops the exporter. Blocks: call it from
    /// `spawn_blocking`.
    pub fn shutdown(&self) {
        if let Err(err) = self.provider.shutdown_with_timeout(FLUSH_TIMEOUT) {
            tracing::warn!(event = "trace_flush_failed", cause = %err, "spans could not be flushed");
        }
    }
}

fn resource() -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    let mut builder = Resource::builder();
    if !named {
        builder = builder.with_service_name("chatsubo");
    }
    builder
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The ids of the span of `cx`, when they are valid.
pub fn ids_of(cx: &Context) -> Option<TraceParent> {
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| TraceParent {
        trace_id: sc.trace_id().to_bytes(),
        span_id: sc.span_id().to_bytes(),
        sampled: sc.is_sampled(),
    })
}

/// Makes `span` (not yet entered) continue the trace of a client's
/// `traceparent`.
pub fn continue_trace(span: &tracing::Span, parent: &TraceParent) {
    if span.is_disabled() || super::span_ids::continue_trace(span, parent) {
        return;
    }
    let _ = span.set_parent(Context::new().with_remote_span_context(remote_context(parent)));
}

/// A client's `traceparent` as the remote parent of a span.
pub fn remote_context(parent: &TraceParent) -> SpanContext {
    let flags = if parent.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    SpanContext::new(
        TraceId::from_bytes(parent.trace_id),
        SpanId::from_bytes(parent.span_id),
        flags,
        true,
        TraceState::default(),
    )
}

/// A bounded queue in front of the batch exporter: a span that would make
/// more than `capacity` spans wait is dropped and counted, never waited for.
#[derive(Debug)]
pub struct SpanQueue {
    inner: BatchSpanProcessor,
    waiting: Arc<AtomicUsize>,
    capacity: usize,
}

impl SpanQueue {
    pub fn new<E: SpanExporter + 'static>(exporter: E, capacity: usize) -> Self {
        let waiting = Arc::new(AtomicUsize::new(0));
        let exporter = CountingExporter {
            inner: exporter,
            waiting: waiting.clone(),
        };
        // The inner queue is as large as ours, and ours counts spans until
        // their export ends, so the inner one never fills up.
        let batch_size = std::env::var("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(EXPORT_BATCH)
            .min(capacity);
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(capacity)
            .with_max_export_batch_size(batch_size)
            .build();
        SpanQueue {
            inner: BatchSpanProcessor::builder(exporter)
                .with_batch_config(batch)
                .build(),
            waiting,
            capacity,
        }
    }
}

impl SpanProcessor for SpanQueue {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            pipeline()
                .spans_dropped
                .with_label_values(&["queue_full"])
                .inc();
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Counts what each export achieved and frees its places in the queue.
#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
    waiting: Arc<AtomicUsize>,
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        // Called on the SDK's batch thread, which has no start hook.
        yield_to_signaling();
        let count = batch.len();
        let export = self.inner.export(batch);
        let waiting = self.waiting.clone();
        async move {
            let result = export.await;
            match &result {
                Ok(()) => pipeline().spans_exported.inc_by(count as u64),
                Err(_) => pipeline()
                    .spans_dropped
                    .with_label_values(&["export_failed"])
                    .inc_by(count as u64),
            }
            waiting.fetch_sub(count, Ordering::AcqRel);
            result
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn http_endpoint_from_the_flag_gets_the_traces_path() {
        // SAFETY: this test alone touches these variables.
        unsafe {
            std::env::remove_var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
            std::env::set_var("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
        }
        let config =
            Config::try_parse_from(["chatsubo", "--otlp-endpoint", "http://c:4318/"]).unwrap();
        let target = ExportTarget::from_config(&config).unwrap();
        unsafe { std::env::remove_var("OTEL_EXPORTER_OTLP_PROTOCOL") };
        assert_eq!(
            target,
            ExportTarget {
                endpoint: "http://c:4318/v1/traces".into(),
                http: true
            }
        );
        let config =
            Config::try_parse_from(["chatsubo", "--otlp-endpoint", "http://c:4317"]).unwrap();
        let target = ExportTarget::from_config(&config).unwrap();
        assert_eq!(target.endpoint, "http://c:4317");
        assert!(!target.http);
    }
}
