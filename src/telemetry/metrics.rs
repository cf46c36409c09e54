//! Every metric family of `docs/observability.md` (the telemetry contract),
//! registered once. Hot-path children are resolved up front so that counting
//! a message is one atomic add.

use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use tracing_appender::non_blocking::ErrorCounter;

use crate::protocol::{ErrorCode, LeaveReason, MessageType};

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

/// Kinds of server-to-client frames, the `type` label of outbound messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutKind {
    Welcome,
    Joined,
    PeerJoined,
    PeerLeft,
    Offer,
    Answer,
    IceCandidate,
    Pong,
    Error,
}

impl OutKind {
    pub const ALL: [OutKind; 9] = [
        OutKind::Welcome,
        OutKind::Joined,
        OutKind::PeerJoined,
        OutKind::PeerLeft,
        OutKind::Offer,
        OutKind::Answer,
        OutKind::IceCandidate,
        OutKind::Pong,
        OutKind::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OutKind::Welcome => "welcome",
            OutKind::Joined => "joined",
            OutKind::PeerJoined => "peer-joined",
            OutKind::PeerLeft => "peer-left",
            OutKind::Offer => "offer",
            OutKind::Answer => "answer",
            OutKind::IceCandidate => "ice-candidate",
            OutKind::Pong => "pong",
            OutKind::Error => "error",
        }
    }
}

/// Why a message the server meant to deliver was dropped.
#[derive(Clone, Copy, Debug)]
pub enum DropReason {
    /// More than 64 messages were held for a peer inside its grace.
    HeldOverflow,
    /// The grace ended with messages still held.
    GraceExpired,
    /// The receiver's queue was full; the receiver was kicked.
    SlowConsumer,
    /// The receiver's connection had already ended.
    ReceiverGone,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::HeldOverflow => "held_overflow",
            DropReason::GraceExpired => "grace_expired",
            DropReason::SlowConsumer => "slow_consumer",
            DropReason::ReceiverGone => "receiver_gone",
        }
    }
}

/// Why the server closed a connection on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KickReason {
    SlowConsumer,
    RateLimitAbuse,
    MessageTooLarge,
    InvalidUtf8,
    /// Never joined a room within `--join-timeout-secs`.
    JoinTimeout,
}

impl KickReason {
    pub fn as_str(self) -> &'static str {
        match self {
            KickReason::SlowConsumer => "slow_consumer",
            KickReason::RateLimitAbuse => "rate_limit_abuse",
            KickReason::MessageTooLarge => "message_too_large",
            KickReason::InvalidUtf8 => "invalid_utf8",
            KickReason::JoinTimeout => "join_timeout",
        }
    }
}

/// The registry and every family in it.
pub struct Metrics {
    registry: Registry,
    pub active_connections: IntGauge,
    pub active_rooms: IntGauge,
    pub room_peers: Histogram,
    pub room_full_rejections: IntCounter,
    pub websocket_errors: IntCounter,
    errors: IntCounterVec,
    messages_in: Vec<IntCounter>,
    messages_out: Vec<IntCounter>,
    pub joins: IntCounter,
    leaves: IntCounterVec,
    pub reconnection_attempts: IntCounter,
    pub reconnections: IntCounterVec,
    pub session_duration: Histogram,
    pub peer_connections: IntCounterVec,
    pub peer_connect_seconds: Histogram,
    pub signaling_rtt_seconds: Histogram,
    pub client_connect_seconds: Histogram,
    pub client_reconnects: IntCounterVec,
    client_errors: IntCounterVec,
    pub analytics_queue_depth: IntGauge,
    pub analytics_events: IntCounterVec,
    pub storage_errors: IntCounter,
    dropped_messages: IntCounterVec,
    kicks: IntCounterVec,
    pub connections_refused: IntCounterVec,
    pub held_messages: IntGauge,
    slow_clients: IntCounterVec,
    /// Open HTTP connections not upgraded to WebSocket.
    pub http_connections: IntGauge,
}

/// Where a client was too slow and got disconnected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowStage {
    /// Connected and sent nothing within the header timeout.
    Idle,
    /// Began a request but did not finish its headers in time (slowloris).
    Headers,
    /// An accepted WebSocket upgrade did not complete in time.
    Handshake,
}

impl SlowStage {
    pub const ALL: [SlowStage; 3] = [SlowStage::Idle, SlowStage::Headers, SlowStage::Handshake];

    pub fn as_str(self) -> &'static str {
        match self {
            SlowStage::Idle => "idle",
            SlowStage::Headers => "headers",
            SlowStage::Handshake => "handshake",
        }
    }
}

impl Metrics {
    /// Registers every family; `max_room_size` sets the room-size buckets.
    pub fn new(max_room_size: u32) -> Self {
        let registry = Registry::new();
        let r = &registry;

        let room_buckets: Vec<f64> = (1..=max_room_size.max(1)).map(f64::from).collect();
        let messages = counter_vec(
            r,
            "chatsubo_messages_total",
            "WebSocket frames by protocol type and direction (unknown types counted as invalid).",
            &["direction", "type"],
        );
        let messages_in = MessageType::ALL
            .iter()
            .map(|t| messages.with_label_values(&["in", t.as_str()]))
            .collect();
        let messages_out = OutKind::ALL
            .iter()
            .map(|t| messages.with_label_values(&["out", t.as_str()]))
            .collect();

        let m = Metrics {
            active_connections: gauge(
                r,
                "chatsubo_active_connections",
                "Open WebSocket connections.",
            ),
            active_rooms: gauge(
                r,
                "chatsubo_active_rooms",
                "Rooms with at least one peer, peers inside their resume grace included.",
            ),
            room_peers: histogram(
                r,
                "chatsubo_room_peers",
                "Room size after each join or leave.",
                room_buckets,
            ),
            room_full_rejections: counter(
                r,
                "chatsubo_room_full_rejections_total",
                "Joins refused with ROOM_FULL.",
            ),
            websocket_errors: counter(
                r,
                "chatsubo_websocket_errors_total",
                "Transport failures: protocol violations, I/O errors, oversized frames.",
            ),
            errors: counter_vec(
                r,
                "chatsubo_errors_total",
                "Error messages sent to clients, by protocol code and by kind (client or server).",
                &["code", "kind"],
            ),
            messages_in,
            messages_out,
            joins: counter(
                r,
                "chatsubo_joins_total",
                "Successful joins (resumes not included).",
            ),
            leaves: counter_vec(
                r,
                "chatsubo_leaves_total",
                "Peers gone from rooms, by peer-left reason.",
                &["reason"],
            ),
            reconnection_attempts: counter(
                r,
                "chatsubo_reconnection_attempts_total",
                "Joins that carried a resumeToken.",
            ),
            reconnections: counter_vec(
                r,
                "chatsubo_reconnections_total",
                "How joins with a resumeToken ended: resumed, expired or invalid.",
                &["outcome"],
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
            peer_connections: counter_vec(
                r,
                "chatsubo_peer_connections_total",
                "Client-reported WebRTC peer connections, by outcome.",
                &["outcome"],
            ),
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
            client_reconnects: counter_vec(
                r,
                "chatsubo_client_reconnects_total",
                "Client-reported reconnects, by outcome.",
                &["outcome"],
            ),
            client_errors: counter_vec(
                r,
                "chatsubo_client_errors_total",
                "Client-reported errors by code (unknown codes counted as other).",
                &["code"],
            ),
            analytics_queue_depth: gauge(
                r,
                "chatsubo_analytics_queue_depth",
                "Analytics events waiting for the store.",
            ),
            analytics_events: counter_vec(
                r,
                "chatsubo_analytics_events_total",
                "Analytics events handed to the store: written, or dropped because the queue was full.",
                &["result"],
            ),
            storage_errors: counter(
                r,
                "chatsubo_storage_errors_total",
                "Failed store operations.",
            ),
            dropped_messages: counter_vec(
                r,
                "chatsubo_dropped_messages_total",
                "Messages the server meant to deliver but dropped, by reason.",
                &["reason"],
            ),
            kicks: counter_vec(
                r,
                "chatsubo_kicks_total",
                "Connections the server closed on its own, by reason.",
                &["reason"],
            ),
            connections_refused: counter_vec(
                r,
                "chatsubo_connections_refused_total",
                "Connections refused by a cap, by cap: total and per_ip (WebSocket upgrades), http_total (open HTTP connections).",
                &["reason"],
            ),
            held_messages: gauge(
                r,
                "chatsubo_held_messages",
                "Relayed messages held for peers inside their resume grace.",
            ),
            slow_clients: counter_vec(
                r,
                "chatsubo_slow_clients_total",
                "Connections dropped for being too slow, by stage: idle (sent nothing), headers (slowloris), handshake (WebSocket upgrade).",
                &["stage"],
            ),
            http_connections: gauge(
                r,
                "chatsubo_http_connections",
                "Open HTTP connections not (yet) upgraded to WebSocket.",
            ),
            registry,
        };

        // Series that exist from the start read 0 rather than being absent.
        for code in ErrorCode::ALL {
            m.errors
                .with_label_values(&[code.as_str(), code.kind().as_str()]);
        }
        for reason in LeaveReason::ALL {
            m.leaves.with_label_values(&[reason.as_str()]);
        }
        for outcome in ["resumed", "expired", "invalid"] {
            m.reconnections.with_label_values(&[outcome]);
        }
        for outcome in ["connected", "failed"] {
            m.peer_connections.with_label_values(&[outcome]);
        }
        for outcome in ["success", "failure"] {
            m.client_reconnects.with_label_values(&[outcome]);
        }
        for result in ["written", "dropped"] {
            m.analytics_events.with_label_values(&[result]);
        }
        for reason in [
            DropReason::HeldOverflow,
            DropReason::GraceExpired,
            DropReason::SlowConsumer,
            DropReason::ReceiverGone,
        ] {
            m.dropped_messages.with_label_values(&[reason.as_str()]);
        }
        for reason in [
            KickReason::SlowConsumer,
            KickReason::RateLimitAbuse,
            KickReason::MessageTooLarge,
            KickReason::InvalidUtf8,
            KickReason::JoinTimeout,
        ] {
            m.kicks.with_label_values(&[reason.as_str()]);
        }
        for reason in ["total", "per_ip", "http_total"] {
            m.connections_refused.with_label_values(&[reason]);
        }
        for stage in SlowStage::ALL {
            m.slow_clients.with_label_values(&[stage.as_str()]);
        }

        let build = IntGaugeVec::new(
            Opts::new(
                "chatsubo_build_info",
                "Always 1; the version label tells the build.",
            ),
            &["version"],
        )
        .expect("valid metric");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        m.registry.register(Box::new(build)).expect("unique metric");
        #[cfg(target_os = "linux")]
        m.registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        m
    }

    /// The registry, for families registered elsewhere (log and span drops).
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

    pub fn leave(&self, reason: LeaveReason) {
        self.leaves.with_label_values(&[reason.as_str()]).inc();
    }

    pub fn dropped(&self, reason: DropReason, count: u64) {
        self.dropped_messages
            .with_label_values(&[reason.as_str()])
            .inc_by(count);
    }

    pub fn kicked(&self, reason: KickReason) {
        self.kicks.with_label_values(&[reason.as_str()]).inc();
    }

    pub fn slow_client(&self, stage: SlowStage) {
        self.slow_clients.with_label_values(&[stage.as_str()]).inc();
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

/// Families of the telemetry pipeline itself (log lines and spans that were
/// dropped). Logging and trace export are set up once per process, before
/// any server runs, so these live in a process-wide registry that every
/// [`Metrics::render`] includes.
pub struct Pipeline {
    registry: Registry,
    log_drops: Arc<LogDrops>,
    /// Spans handed to the exporter successfully.
    pub spans_exported: IntCounter,
    /// Spans lost, by reason: `queue_full` (the export queue was full) or
    /// `export_failed` (the collector refused them or could not be reached).
    pub spans_dropped: IntCounterVec,
}

/// The process-wide pipeline families.
pub fn pipeline() -> &'static Pipeline {
    static PIPELINE: OnceLock<Pipeline> = OnceLock::new();
    PIPELINE.get_or_init(|| {
        let registry = Registry::new();
        let log_drops = Arc::new(LogDrops {
            counter: IntCounterVec::new(
                Opts::new(
                    "chatsubo_log_lines_dropped_total",
                    "Log lines dropped because a log writer's queue was full, by output.",
                ),
                &["output"],
            )
            .expect("valid metric"),
            sources: Mutex::new(Vec::new()),
        });
        for output in ["stdout", "file"] {
            log_drops.counter.with_label_values(&[output]);
        }
        registry
            .register(Box::new(LogDropsCollector(log_drops.clone())))
            .expect("unique metric");
        let spans_exported = counter(
            &registry,
            "chatsubo_spans_exported_total",
            "Spans accepted by the OTLP collector.",
        );
        let spans_dropped = counter_vec(
            &registry,
            "chatsubo_spans_dropped_total",
            "Spans lost before reaching the collector: queue_full or export_failed.",
            &["reason"],
        );
        for reason in ["queue_full", "export_failed"] {
            spans_dropped.with_label_values(&[reason]);
        }
        Pipeline {
            registry,
            log_drops,
            spans_exported,
            spans_dropped,
        }
    })
}

impl Pipeline {
    /// Counts the lines a non-blocking log writer drops, read at scrape time.
    pub fn watch_log_writer(&self, output: &'static str, dropped: ErrorCounter) {
        self.log_drops.sources.lock().push((output, dropped));
    }
}

struct LogDrops {
    counter: IntCounterVec,
    sources: Mutex<Vec<(&'static str, ErrorCounter)>>,
}

/// Brings the counter up to the writers' own drop counts, then reports it.
struct LogDropsCollector(Arc<LogDrops>);

impl Collector for LogDropsCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.0.counter.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        for (output, dropped) in self.0.sources.lock().iter() {
            let counter = self.0.counter.with_label_values(&[output]);
            let now = dropped.dropped_lines() as u64;
            let seen = counter.get();
            if now > seen {
                counter.inc_by(now - seen);
            }
        }
        self.0.counter.collect()
    }
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_family_is_exposed() {
        let m = Metrics::new(10);
        m.room_peers.observe(1.0);
        m.session_duration.observe(1.0);
        m.peer_connect_seconds.observe(1.0);
        m.signaling_rtt_seconds.observe(0.01);
        m.client_connect_seconds.observe(0.1);
        m.client_error("X");
        m.message_in(MessageType::Join);
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
