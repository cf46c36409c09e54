//! WebSocket connections and the frames they carry, by wire protocol.

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, Registry};

use super::families::{counter, counter_vec, gauge, gauge_vec, histogram_vec};
use crate::protocol::{ErrorCode, MessageType, OutKind, Protocol};

pub struct ConnectionMetrics {
    /// Open connections, by protocol ([`Protocol`] as index).
    active: Vec<IntGauge>,
    session_duration: Vec<Histogram>,
    pub websocket_errors: IntCounter,
    errors: IntCounterVec,
    /// Children resolved up front, by protocol then type: counting a frame
    /// is one atomic add.
    messages_in: Vec<Vec<IntCounter>>,
    messages_out: Vec<Vec<IntCounter>>,
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
            "WebSocket frames by protocol type and direction (unknown types counted as invalid), by wire protocol.",
            &["direction", "type", "protocol"],
        );
        let errors = counter_vec(
            r,
            "chatsubo_errors_total",
            "Error messages sent to clients, by protocol code, by kind (client or server) and by wire protocol.",
            &["code", "kind", "protocol"],
        );
        for code in ErrorCode::ALL {
            for protocol in Protocol::ALL {
                errors.with_label_values(&[code.as_str(), code.kind().as_str(), protocol.as_str()]);
            }
        }
        let active = gauge_vec(
            r,
            "chatsubo_active_connections",
            "Open WebSocket connections, by wire protocol.",
            &["protocol"],
        );
        let durations = histogram_vec(
            r,
            "chatsubo_session_duration_seconds",
            "Length of each ended WebSocket connection, by wire protocol.",
            &["protocol"],
            vec![
                1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0,
            ],
        );
        let by_protocol = |kinds: &[&str], direction: &str| -> Vec<Vec<IntCounter>> {
            Protocol::ALL
                .iter()
                .map(|p| {
                    kinds
                        .iter()
                        .map(|t| messages.with_label_values(&[direction, t, p.as_str()]))
                        .collect()
                })
                .collect()
        };
        let types_in: Vec<&str> = MessageType::ALL.iter().map(|t| t.as_str()).collect();
        let types_out: Vec<&str> = OutKind::ALL.iter().map(|t| t.as_str()).collect();
        ConnectionMetrics {
            active: Protocol::ALL
                .iter()
                .map(|p| active.with_label_values(&[p.as_str()]))
                .collect(),
            session_duration: Protocol::ALL
                .iter()
                .map(|p| durations.with_label_values(&[p.as_str()]))
                .collect(),
            websocket_errors: counter(
                r,
                "chatsubo_websocket_errors_total",
                "Transport failures: protocol violations, I/O errors, oversized frames.",
            ),
            errors,
            messages_in: by_protocol(&types_in, "in"),
            messages_out: by_protocol(&types_out, "out"),
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

    /// The open connections of `protocol`.
    pub fn active(&self, protocol: Protocol) -> &IntGauge {
        &self.active[protocol as usize]
    }

    /// Open connections of every protocol.
    pub fn open(&self) -> i64 {
        self.active.iter().map(IntGauge::get).sum()
    }

    pub fn session_duration(&self, protocol: Protocol) -> &Histogram {
        &self.session_duration[protocol as usize]
    }

    pub fn message_in(&self, protocol: Protocol, kind: MessageType) {
        self.messages_in[protocol as usize][kind as usize].inc();
    }

    pub fn message_out(&self, protocol: Protocol, kind: OutKind) {
        self.messages_out[protocol as usize][kind as usize].inc();
    }

    pub fn error_sent(&self, protocol: Protocol, code: ErrorCode) {
        self.errors
            .with_label_values(&[code.as_str(), code.kind().as_str(), protocol.as_str()])
            .inc();
    }

    /// Makes the series of every kick and drop reason exist from the start.
    pub fn touch_reasons(&self, kicks: &[&str], drops: &[&str]) {
        for (family, values) in [(&self.kicks, kicks), (&self.dropped_messages, drops)] {
            for value in values {
                family.with_label_values(&[value]);
            }
        }
    }
}
