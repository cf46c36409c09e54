//! What clients report about themselves (`telemetry` messages).

use prometheus::{Histogram, IntCounterVec, Registry};

use super::families::{counter_vec, histogram, touch};
use crate::protocol::CandidatePath;

/// Client error codes kept as label values; any other code counts as `other`,
/// so that clients cannot grow the number of series.
pub const KNOWN_CLIENT_ERROR_CODES: &[&str] = &[
    "GETUSERMEDIA_DENIED",
    "GETUSERMEDIA_FAILED",
    "ICE_FAILED",
    "NEGOTIATION_FAILED",
    "DATACHANNEL_ERROR",
    "SIGNALING_ERROR",
    "WEBSOCKET_ERROR",
    "RECONNECT_FAILED",
    "UNCAUGHT_ERROR",
    "UNHANDLED_REJECTION",
];

pub struct ClientReportMetrics {
    pub peer_connections: IntCounterVec,
    pub peer_connect_seconds: Histogram,
    pub signaling_rtt_seconds: Histogram,
    pub client_connect_seconds: Histogram,
    pub client_reconnects: IntCounterVec,
    client_errors: IntCounterVec,
}

impl ClientReportMetrics {
    pub fn register(r: &Registry) -> Self {
        let peer_connections = counter_vec(
            r,
            "chatsubo_peer_connections_total",
            "Client-reported WebRTC peer connections, by outcome and by the path of the selected candidate pair (relay: through TURN; unknown: not reported).",
            &["outcome", "path"],
        );
        for outcome in ["connected", "failed"] {
            for path in CandidatePath::ALL
                .map(CandidatePath::as_str)
                .into_iter()
                .chain(["unknown"])
            {
                peer_connections.with_label_values(&[outcome, path]);
            }
        }
        let client_reconnects = counter_vec(
            r,
            "chatsubo_client_reconnects_total",
            "Client-reported reconnects, by outcome.",
            &["outcome"],
        );
        touch(&client_reconnects, &[&["success"], &["failure"]]);
        ClientReportMetrics {
            peer_connections,
            peer_connect_seconds: histogram(
                r,
                "chatsubo_peer_connect_seconds",
                "Client-reported time from starting a peer connection to connected.",
                vec![0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0],
            ),
            signaling_rtt_seconds: histogram(
                r,
                "chatsubo_signaling_rtt_seconds",
                "Client-reported round trip to the signaling server.",
                vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
            ),
            client_connect_seconds: histogram(
                r,
                "chatsubo_client_connect_seconds",
                "Client-reported time to open the signaling socket.",
                vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
            ),
            client_reconnects,
            client_errors: counter_vec(
                r,
                "chatsubo_client_errors_total",
                "Client-reported errors by code (unknown codes counted as other).",
                &["code"],
            ),
        }
    }

    pub fn client_error(&self, code: &str) {
        let label = if KNOWN_CLIENT_ERROR_CODES.contains(&code) {
            code
        } else {
            "other"
        };
        self.client_errors.with_label_values(&[label]).inc();
    }
}
