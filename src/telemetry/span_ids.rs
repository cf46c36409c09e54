//! Trace and span ids of our spans when no traces are exported.
//!
//! Log lines written inside a span carry its `trace_id` and `span_id`
//! (telemetry.md) whether or not traces go anywhere. With an OTLP endpoint,
//! tracing-opentelemetry's layer makes real spans and the ids are theirs.
//! Without one, this layer gives each span its ids and nothing else: a child
//! keeps its parent's trace id, a client's `traceparent` replaces it
//! ([`continue_trace`]). An unexported OpenTelemetry span, built only for its
//! ids, held far more memory for as long as its connection lived.

use tracing::span::{Attributes, Id};
use tracing::{Span, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::protocol::TraceParent;
use crate::protocol::{random_span_id, random_trace_id};

/// The ids of one span, kept in its extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanIds {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

/// The layer that gives every span it sees a [`SpanIds`].
pub struct IdsLayer;

impl<S> Layer<S> for IdsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let parent = if let Some(parent) = attrs.parent() {
            ctx.span(parent)
        } else if attrs.is_contextual() {
            ctx.lookup_current()
        } else {
            None
        };
        let trace_id = parent
            .and_then(|parent| parent.extensions().get::<SpanIds>().map(|ids| ids.trace_id))
            .unwrap_or_else(random_trace_id);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanIds {
                trace_id,
                span_id: random_span_id(),
            });
        }
    }
}

/// Makes `span` (not yet entered, no children yet) part of the trace of a
/// client's `traceparent`. `false` when the span has no [`SpanIds`] (it is
/// disabled, or an exported OpenTelemetry span carries its ids instead).
pub fn continue_trace(span: &Span, parent: &TraceParent) -> bool {
    span.with_subscriber(|(id, dispatch)| {
        let Some(registry) = dispatch.downcast_ref::<Registry>() else {
            return false;
        };
        let Some(data) = registry.span(id) else {
            return false;
        };
        let mut extensions = data.extensions_mut();
        match extensions.get_mut::<SpanIds>() {
            Some(ids) => {
                ids.trace_id = parent.trace_id;
                true
            }
            None => false,
        }
    })
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// The ids of `span`, if the layer gave it some.
    fn ids_of(span: &Span) -> Option<SpanIds> {
        span.with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<Registry>()?;
            let data = registry.span(id)?;
            data.extensions().get::<SpanIds>().copied()
        })
        .flatten()
    }

    fn with_layer(f: impl FnOnce()) {
        let subscriber = tracing_subscriber::registry().with(IdsLayer);
        tracing::subscriber::with_default(subscriber, f);
    }

    #[test]
    fn children_keep_their_parents_trace_and_get_their_own_span_id() {
        with_layer(|| {
            let parent = tracing::info_span!("ws.connection");
            let child = parent.in_scope(|| tracing::info_span!("signal.join"));
            let explicit = tracing::info_span!(parent: &parent, "signal.leave");
            let other = tracing::info_span!("ws.connection");
            let [parent, child, explicit, other] =
                [parent, child, explicit, other].map(|s| ids_of(&s).expect("ids"));
            assert_eq!(child.trace_id, parent.trace_id);
            assert_eq!(explicit.trace_id, parent.trace_id);
            assert_ne!(child.span_id, parent.span_id);
            assert_ne!(explicit.span_id, child.span_id);
            assert_ne!(other.trace_id, parent.trace_id);
            assert_ne!(parent.trace_id, [0; 16]);
            assert_ne!(parent.span_id, [0; 8]);
        });
    }

    #[test]
    fn a_clients_traceparent_replaces_the_trace_and_keeps_the_span_id() {
        with_layer(|| {
            let parent = tracing::info_span!("ws.connection");
            let span = parent.in_scope(|| tracing::info_span!("signal.join"));
            let before = ids_of(&span).unwrap();
            let client = TraceParent {
                trace_id: [7; 16],
                span_id: [9; 8],
                sampled: true,
            };
            assert!(continue_trace(&span, &client));
            let after = ids_of(&span).unwrap();
            assert_eq!(after.trace_id, [7; 16]);
            assert_eq!(after.span_id, before.span_id);
            // Spans made inside it follow.
            let inner = span.in_scope(|| tracing::info_span!("inner"));
            assert_eq!(ids_of(&inner).unwrap().trace_id, [7; 16]);
            // The connection's own trace is untouched.
            assert_eq!(ids_of(&parent).unwrap().trace_id, before.trace_id);
        });
    }

    #[test]
    fn without_the_layer_there_is_nothing_to_continue() {
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("signal.join");
            let client = TraceParent {
                trace_id: [7; 16],
                span_id: [9; 8],
                sampled: true,
            };
            assert!(!continue_trace(&span, &client));
            assert_eq!(ids_of(&span), None);
        });
    }
}
