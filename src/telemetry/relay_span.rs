//! `signal.relay` spans, made straight with the OpenTelemetry SDK instead of
//! through `tracing`.
//!
//! A relay is the one message a busy server handles tens of thousands of
//! times a second. A `tracing` span costs every layer on every relay (the
//! registry's slot, the JSON layer's copy of the fields, tracing-
//! opentelemetry's builder) even when nothing is exported, more than the
//! relay itself. So relays take this path:
//!
//! * not exporting (no OTLP endpoint): no span at all. The relayed
//!   `traceparent` still continues the sender's trace when it sent one, with
//!   a fresh span id, exactly what the sender's peer needs to answer in the
//!   same trace.
//! * exporting: an SDK span with the contract's attributes, child of the
//!   sender's `traceparent` when given, else of the connection's
//!   `ws.connection` span, sampled by the configured sampler and ended when
//!   the relay is done. It goes through the same bounded [`SpanQueue`]
//!   as every other span.
//! * exporting with a parent-based sampler (the default, and what a busy
//!   server is advised to use) and an unsampled parent: the sampler's
//!   answer is known to be "drop", so no SDK span is made; the relayed
//!   `traceparent` is what the SDK's unsampled span would have carried
//!   (the parent's trace id, a fresh span id, not sampled). At 1% sampling
//!   that is 99 relays in 100.
//!
//! Log lines written while a relay is handled carry the `ws.connection`
//! span's ids, which lead to the same trace.
//!
//! [`SpanQueue`]: super::traces::SpanQueue

use std::sync::{Arc, OnceLock};

use opentelemetry::trace::{Span as _, SpanContext, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue, StringValue};
use opentelemetry_sdk::trace::{Span, Tracer};

use super::traces::remote_context;
use crate::protocol::TraceParent;
use crate::protocol::{random_span_id, random_trace_id};

static EXPORT: OnceLock<Export> = OnceLock::new();

/// How relay spans are made when traces are exported.
struct Export {
    tracer: Tracer,
    /// The sampler drops every child of an unsampled parent.
    follows_parent: bool,
}

/// Turns relay spans on: called once, when traces are exported.
/// `follows_parent`: the tracer's sampler is parent-based
/// ([`sampler_follows_parent`]).
pub fn install(tracer: Tracer, follows_parent: bool) {
    let _ = EXPORT.set(Export {
        tracer,
        follows_parent,
    });
}

/// Whether relay spans are exported by this process.
pub fn exporting() -> bool {
    EXPORT.get().is_some()
}

/// The OpenTelemetry context of a connection's `ws.connection` span, when
/// relay spans are exported: the parent of relays that bring no
/// `traceparent`.
pub fn connection_context(span: &tracing::Span) -> Option<SpanContext> {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if !exporting() {
        return None;
    }
    Some(span.context().span().span_context().clone()).filter(SpanContext::is_valid)
}

/// Whether the sampler the SDK builds from `OTEL_TRACES_SAMPLER` is
/// parent-based: every value but `always_on`, `always_off` and
/// `traceidratio`, matched as the SDK matches them (it falls back to
/// `parentbased_always_on` for an unset or unknown value).
pub fn sampler_follows_parent() -> bool {
    !matches!(
        std::env::var("OTEL_TRACES_SAMPLER").as_deref(),
        Ok("always_on" | "always_off" | "traceidratio")
    )
}

/// The trace id of a relay's parent when that parent is not sampled: a
/// parent-based sampler drops the relay's span then. The parent is the
/// sender's `traceparent`, else the connection's span.
fn unsampled_parent(
    parent: Option<&TraceParent>,
    connection: Option<&SpanContext>,
) -> Option<[u8; 16]> {
    match (parent, connection) {
        (Some(parent), _) => (!parent.sampled).then_some(parent.trace_id),
        (None, Some(connection)) => {
            (!connection.is_sampled()).then(|| connection.trace_id().to_bytes())
        }
        (None, None) => None,
    }
}

/// What a relay span says about its message. The names are shared with the
/// connection: a span takes a reference count, not a copy of each.
pub struct RelayAttributes<'a> {
    pub session_id: &'a Arc<str>,
    pub peer_id: &'a Arc<str>,
    pub room: &'a Arc<str>,
    pub message_type: &'static str,
}

/// One relay's span; ends when dropped.
pub struct RelaySpan {
    span: Option<Span>,
    /// The context the receiver gets as the relay's `traceparent`.
    pub traceparent: TraceParent,
}

impl RelaySpan {
    /// Starts the span of one relay. `parent` is the sender's
    /// `traceparent`; `connection` the context of its `ws.connection` span.
    pub fn start(
        parent: Option<&TraceParent>,
        connection: Option<&SpanContext>,
        attributes: RelayAttributes<'_>,
    ) -> Self {
        let Some(export) = EXPORT.get() else {
            return RelaySpan::unrecorded(
                parent.map_or_else(random_trace_id, |p| p.trace_id),
                parent.is_some_and(|p| p.sampled),
            );
        };
        if export.follows_parent
            && let Some(trace_id) = unsampled_parent(parent, connection)
        {
            return RelaySpan::unrecorded(trace_id, false);
        }
        let tracer = &export.tracer;
        let cx = match (parent, connection) {
            (Some(parent), _) => Context::new().with_remote_span_context(remote_context(parent)),
            (None, Some(connection)) => Context::new().with_remote_span_context(connection.clone()),
            (None, None) => Context::new(),
        };
        let span = tracer
            .span_builder("signal.relay")
            .with_attributes([
                KeyValue::new("session_id", shared(attributes.session_id)),
                KeyValue::new("peer_id", shared(attributes.peer_id)),
                KeyValue::new("room", shared(attributes.room)),
                KeyValue::new("message.type", attributes.message_type),
            ])
            .start_with_context(tracer, &cx);
        let sc = span.span_context();
        let traceparent = TraceParent {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            sampled: sc.is_sampled(),
        };
        RelaySpan {
            span: Some(span),
            traceparent,
        }
    }

    /// No span: only the ids the receiver gets.
    fn unrecorded(trace_id: [u8; 16], sampled: bool) -> Self {
        RelaySpan {
            span: None,
            traceparent: TraceParent {
                trace_id,
                span_id: random_span_id(),
                sampled,
            },
        }
    }
}

impl Drop for RelaySpan {
    fn drop(&mut self) {
        if let Some(span) = &mut self.span {
            span.end();
        }
    }
}

fn shared(text: &Arc<str>) -> StringValue {
    StringValue::from(Arc::clone(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_export_the_senders_trace_is_continued_with_a_fresh_span_id() {
        let parent =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let name: Arc<str> = Arc::from("s");
        let attributes = || RelayAttributes {
            session_id: &name,
            peer_id: &name,
            room: &name,
            message_type: "offer",
        };
        let span = RelaySpan::start(Some(&parent), None, attributes());
        assert_eq!(span.traceparent.trace_id, parent.trace_id);
        assert_ne!(span.traceparent.span_id, parent.span_id);
        assert!(span.traceparent.sampled);
        let fresh = RelaySpan::start(None, None, attributes());
        assert_ne!(fresh.traceparent.trace_id, parent.trace_id);
        assert!(!fresh.traceparent.sampled);
    }

    #[test]
    fn an_unsampled_parent_is_the_senders_traceparent_else_the_connection() {
        use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};
        let sampled =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let unsampled =
            TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00").unwrap();
        let connection = |flags| {
            SpanContext::new(
                TraceId::from_bytes([7; 16]),
                SpanId::from_bytes([8; 8]),
                flags,
                false,
                TraceState::default(),
            )
        };
        let recorded = connection(TraceFlags::SAMPLED);
        let dropped = connection(TraceFlags::default());
        // The sender's traceparent decides, whatever the connection's span.
        assert_eq!(unsampled_parent(Some(&sampled), Some(&dropped)), None);
        assert_eq!(
            unsampled_parent(Some(&unsampled), Some(&recorded)),
            Some(unsampled.trace_id)
        );
        // Without one, the connection's span does.
        assert_eq!(unsampled_parent(None, Some(&recorded)), None);
        assert_eq!(unsampled_parent(None, Some(&dropped)), Some([7; 16]));
        // No parent at all: a root, for the sampler to decide.
        assert_eq!(unsampled_parent(None, None), None);
    }
}
