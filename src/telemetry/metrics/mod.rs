//! Every metric family of `docs/observability.md` (the telemetry contract),
//! registered once, in groups by what they count. Hot-path children are
//! resolved up front, so that counting a message is one atomic add.
//!
//! Label values that belong to a layer above (why the server kicked a
//! connection, which cap refused one) are that layer's enums; it makes
//! their series exist when it starts (for example `Hub::new`).

mod connections;
mod edge;
mod families;
mod pipeline;
mod reports;
mod rooms;
mod store;

use prometheus::{Encoder, Registry, TextEncoder};

pub use connections::ConnectionMetrics;
pub use edge::EdgeMetrics;
pub use pipeline::{Pipeline, pipeline};
pub use reports::{ClientReportMetrics, KNOWN_CLIENT_ERROR_CODES};
pub use rooms::RoomMetrics;
pub use store::StoreMetrics;

/// The registry and every family in it.
pub struct Metrics {
    registry: Registry,
    /// WebSocket connections and the frames they carry.
    pub connections: ConnectionMetrics,
    /// Rooms, joins, leaves and resumes.
    pub rooms: RoomMetrics,
    /// What clients report about themselves.
    pub reports: ClientReportMetrics,
    /// The analytics store.
    pub store: StoreMetrics,
    /// Open HTTP connections, refused and slow clients.
    pub edge: EdgeMetrics,
}

impl Metrics {
    /// Registers every family; `max_room_size` sets the room-size buckets.
    pub fn new(max_room_size: u32) -> Self {
        let registry = Registry::new();
        let metrics = Metrics {
            connections: ConnectionMetrics::register(&registry),
            rooms: RoomMetrics::register(&registry, max_room_size),
            reports: ClientReportMetrics::register(&registry),
            store: StoreMetrics::register(&registry),
            edge: EdgeMetrics::register(&registry),
            registry,
        };
        families::gauge_vec(
            &metrics.registry,
            "chatsubo_build_info",
            "Always 1; the version label tells the build.",
            &["version"],
        )
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
        #[cfg(target_os = "linux")]
        metrics
            .registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        metrics
    }

    /// The registry, for families registered elsewhere.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition of every family, the process-wide pipeline
    /// families ([`pipeline`]) included.
    pub fn render(&self) -> String {
        let mut families = self.registry.gather();
        families.extend(pipeline().registry.gather());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&families, &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("exposition is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_family_is_exposed() {
        let m = Metrics::new(10);
        m.rooms.room_peers.observe(1.0);
        m.connections
            .session_duration(crate::protocol::Protocol::Chatsubo)
            .observe(1.0);
        m.reports.peer_connect_seconds.observe(1.0);
        m.reports.signaling_rtt_seconds.observe(0.01);
        m.reports.client_connect_seconds.observe(0.1);
        m.reports.client_error("X");
        m.connections.message_in(
            crate::protocol::Protocol::Chatsubo,
            crate::protocol::MessageType::Join,
        );
        let text = m.render();
        for family in [
            "chatsubo_active_connections",
            "chatsubo_active_rooms",
            "chatsubo_room_peers",
            "chatsubo_room_full_rejections_total",
            "chatsubo_websocket_errors_total",
            "chatsubo_errors_total",
            "chatsubo_messages_total",
            "chatsubo_joins_total",
            "chatsubo_leaves_total",
            "chatsubo_reconnection_attempts_total",
            "chatsubo_reconnections_total",
            "chatsubo_session_duration_seconds",
            "chatsubo_peer_connections_total",
            "chatsubo_peer_connect_seconds",
            "chatsubo_signaling_rtt_seconds",
            "chatsubo_client_connect_seconds",
            "chatsubo_client_reconnects_total",
            "chatsubo_client_errors_total",
            "chatsubo_analytics_queue_depth",
            "chatsubo_analytics_events_total",
            "chatsubo_storage_errors_total",
            "chatsubo_build_info",
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family} missing"
            );
        }
        assert!(text.contains(r#"chatsubo_client_errors_total{code="other"} 1"#));
        for family in [
            "chatsubo_log_lines_dropped_total",
            "chatsubo_spans_exported_total",
            "chatsubo_spans_dropped_total",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} counter")),
                "{family} missing"
            );
        }
    }
}
