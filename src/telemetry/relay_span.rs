//! `signal.relay` spans, made straight with the OpenTelemetry SDK instead of
//! through `tracing`.
//!
//! A relay is the one message a busy server handles tens of thousands of
//! times a second. A `tracing` span costs every layer on every relay (the
//! registry's slot, the JSON layer's copy of the fields, tracing-
//! opentelemetry's builder), about 8,600 instructions, even when nothing is
//! exported; the relay itself costs less. So relays take this path:
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
use crate::signaling::{random_span_id, random_trace_id};

static TRACER: OnceLock<Tracer> = OnceLock::new();

/// Turns relay spans on: called once, when traces are exported.
pub fn install(tracer: Tracer) {
    let _ = TRACER.set(tracer);
}

/// Whether relay spans are exported by this process.
pub fn exporting() -> bool {
    TRACER.get().is_some()
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
        let Some(tracer) = TRACER.get() else {
            return RelaySpan {
                span: None,
                traceparent: TraceParent {
                    trace_id: parent.map_or_else(random_trace_id, |p| p.trace_id),
                    span_id: random_span_id(),
                    sampled: parent.is_some_and(|p| p.sampled),
                },
            };
        };
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
}
