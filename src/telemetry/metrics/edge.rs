//! The HTTP edge: open HTTP connections, refused connections, slow clients.

use prometheus::{IntCounterVec, IntGauge, Registry};

use super::families::{counter_vec, gauge};

pub struct EdgeMetrics {
    /// Open HTTP connections not upgraded to WebSocket.
    pub http_connections: IntGauge,
    /// Connections refused by a cap, by cap.
    pub connections_refused: IntCounterVec,
    /// Connections dropped for being too slow, by stage.
    pub slow_clients: IntCounterVec,
}

impl EdgeMetrics {
    pub fn register(r: &Registry) -> Self {
        EdgeMetrics {
            http_connections: gauge(
                r,
                "chatsubo_http_connections",
                "Open HTTP connections not (yet) upgraded to WebSocket.",
            ),
            connections_refused: counter_vec(
                r,
                "chatsubo_connections_refused_total",
                "Connections refused by a cap, by cap: total and per_ip (WebSocket upgrades), http_total (open HTTP connections).",
                &["reason"],
            ),
            slow_clients: counter_vec(
                r,
                "chatsubo_slow_clients_total",
                "Connections dropped for being too slow, by stage: idle (sent nothing), headers (slowloris), handshake (WebSocket upgrade).",
                &["stage"],
            ),
        }
    }
}
