//! The HTTP edge: open HTTP connections, refused connections, slow clients.

use prometheus::{IntCounterVec, IntGauge, Registry};

use super::families::{counter_vec, gauge, touch};

pub struct EdgeMetrics {
    /// Open HTTP connections not upgraded to WebSocket.
    pub http_connections: IntGauge,
    /// Connections refused by a cap, by cap.
    pub connections_refused: IntCounterVec,
    /// Connections dropped for being too slow, by stage.
    pub slow_clients: IntCounterVec,
    /// Requests to /api/* and /dashboard refused, by why.
    pub api_refusals: IntCounterVec,
}

impl EdgeMetrics {
    pub fn register(r: &Registry) -> Self {
        let api_refusals = counter_vec(
            r,
            "chatsubo_api_refusals_total",
            "Requests to /api/* and /dashboard refused, by reason: token (401, wrong or missing --api-token), host (403, a Host name not loopback nor --allowed-host), address (403, not a loopback client).",
            &["reason"],
        );
        touch(&api_refusals, &[&["token"], &["host"], &["address"]]);
        EdgeMetrics {
            api_refusals,
            http_connections: gauge(
                r,
                "chatsubo_http_connections",
                "Open HTTP connections not (yet) upgraded to WebSocket.",
            ),
            connections_refused: counter_vec(
                r,
                "chatsubo_connections_refused_total",
                "Connections refused, by reason: total and per_ip (the WebSocket caps), origin (an Origin not in --allowed-origin), http_total (open HTTP connections).",
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
