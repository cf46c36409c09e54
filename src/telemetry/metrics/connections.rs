//! WebSocket connections and the frames they carry.

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, Registry};

use super::families::{counter, counter_vec, gauge, histogram, touch};
use crate::protocol::{ErrorCode, MessageType, OutKind};

pub struct ConnectionMetrics {
    pub active_connections: IntGauge,
    pub session_duration: Histogram,
    pub websocket_errors: IntCounter,
    errors: IntCounterVec,
    /// Children resolved up front: counting a frame is one atomic add.
    messages_in: Vec<IntCounter>,
    messages_out: Vec<IntCounter>,
    /// Connections the server closed on its own, by reason.
    pub kicks: IntCounterVec,
    /// Messages the server meant to deliver but dropped, by reason.
    pub dropped_messages: IntCounterVec,
    pub held_messages: IntGauge,
}

impl ConnectionMetrics {
    pub fn register(r: &Registry) -> Self {
        let messages = counter_vec(
            r,
            "chatsubo_messages_total",
            "WebSocket frames by protocol type and direction (unknown types counted as invalid).",
            &["direction", "type"],
        );
        let errors = counter_vec(
            r,
            "chatsubo_errors_total",
            "Error messages sent to clients, by protocol code and by kind (client or server).",
            &["code", "kind"],
        );
        for code in ErrorCode::ALL {
            errors.with_label_values(&[code.as_str(), code.kind().as_str()]);
        }
        ConnectionMetrics {
            active_connections: gauge(
                r,
                "chatsubo_active_connections",
                "Open WebSocket connections.",
            ),
            session_duration: histogram(
                r,
                "chatsubo_session_duration_seconds",
                "Length of each ended WebSocket connection.",
                vec![
                    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
                    14400.0,
                ],
            ),
            websocket_errors: counter(
                r,
                "chatsubo_websocket_errors_total",
                "Transport failures: protocol violations, I/O errors, oversized frames.",
            ),
            errors,
            messages_in: MessageType::ALL
                .iter()
                .map(|t| messages.with_label_values(&["in", t.as_str()]))
                .collect(),
            messages_out: OutKind::ALL
                .iter()
                .map(|t| messages.with_label_values(&["out", t.as_str()]))
                .collect(),
            kicks: counter_vec(
                r,
                "chatsubo_kicks_total",
                "Connections the server closed on its own, by reason.",
                &["reason"],
            ),
            dropped_messages: counter_vec(
                r,
                "chatsubo_dropped_messages_total",
                "Messages the server meant to deliver but dropped, by reason.",
                &["reason"],
            ),
            held_messages: gauge(
                r,
                "chatsubo_held_messages",
                "Relayed messages held for peers inside their resume grace.",
            ),
        }
    }

    pub fn message_in(&self, kind: MessageType) {
        self.messages_in[kind as usize].inc();
    }

    pub fn message_out(&self, kind: OutKind) {
        self.messages_out[kind as usize].inc();
    }

    pub fn error_sent(&self, code: ErrorCode) {
        self.errors
            .with_label_values(&[code.as_str(), code.kind().as_str()])
            .inc();
    }

    /// Makes the series of every kick and drop reason exist from the start.
    pub fn touch_reasons(&self, kicks: &[&str], drops: &[&str]) {
        for (family, values) in [(&self.kicks, kicks), (&self.dropped_messages, drops)] {
            for value in values {
                touch(family, &[&[value]]);
            }
        }
    }
}
