//! The one place that records what happens to a session: each call counts
//! the event in the metrics, hands it to the history (never waiting) and
//! writes its log line, so a connection (or a protocol adapter) calls one
//! method per event instead of repeating the three.
//!
//! Log lines are written in the caller's span (`ws.connection` and the
//! message's), which puts the session, peer and trace ids on them.

use std::net::IpAddr;
use std::time::Duration;

use super::Hub;
use super::labels::KickReason;
use super::outbox::MessageCounts;
use super::resume::TokenId;
use crate::analytics::{CloseReason, EventKind, ResumeChange};
use crate::protocol::{ClientTelemetry, ErrorCode, LeaveReason, PeerOutcome, Protocol, RoomName};

/// The target of the session's log lines: they are the connection's events,
/// wherever in signaling they are written.
const TARGET: &str = "chatsubo::signaling::connection";

/// The log line of an event of a peer in a room: `event`, the session, the
/// peer, the room, then the event's own fields, at info.
macro_rules! room_line {
    ($journal:expr, $event:literal, $peer:expr, $room:expr, $($rest:tt)+) => {
        tracing::info!(
            target: TARGET,
            event = $event,
            session_id = $journal.session_id,
            peer_id = $peer,
            room = $room.as_str(),
            $($rest)+
        )
    };
}

/// Records the events of one session.
pub struct Journal<'a> {
    hub: &'a Hub,
    /// The session id as a number: the key of its history.
    session: u128,
    session_id: &'a str,
    /// The protocol the session speaks.
    protocol: Protocol,
}

impl<'a> Journal<'a> {
    pub fn new(hub: &'a Hub, session: u128, session_id: &'a str, protocol: Protocol) -> Self {
        Journal {
            hub,
            session,
            session_id,
            protocol,
        }
    }

    fn record(&self, kind: EventKind) {
        self.hub.recorder.record(self.session, kind);
    }

    /// A WebSocket connection was accepted (at the time its session id says).
    pub fn connected(&self, peer: &str, remote: IpAddr, user_agent: Option<String>) {
        let metrics = &self.hub.metrics.connections;
        metrics.active(self.protocol).inc();
        self.hub.recorder.record_at(
            self.session,
            ulid::Ulid(self.session).timestamp_ms(),
            EventKind::Connect {
                peer: peer.to_string(),
                remote_addr: remote.to_string(),
                user_agent,
                connections: metrics.open().max(0) as u64,
                protocol: self.protocol,
            },
        );
        tracing::debug!(target: TARGET, event = "connected", "connection opened");
    }

    /// The connection ended, `lasted` after it was accepted.
    pub fn closed(
        &self,
        end: &dyn std::fmt::Debug,
        reason: CloseReason,
        counts: MessageCounts,
        lasted: Duration,
    ) {
        let metrics = &self.hub.metrics.connections;
        metrics.active(self.protocol).dec();
        self.record(EventKind::End {
            close_reason: reason,
            messages_in: counts.messages_in,
            messages_out: counts.messages_out,
            errors: counts.errors,
        });
        metrics
            .session_duration(self.protocol)
            .observe(lasted.as_secs_f64());
        tracing::debug!(
            target: TARGET,
            event = "disconnected",
            end = ?end,
            messages_in = counts.messages_in,
            messages_out = counts.messages_out,
            errors = counts.errors,
            "connection closed"
        );
    }

    /// A fresh join (not a resume); `size` is the room's size after it.
    pub fn joined(&self, room: &RoomName, peer: &str, display_name: Option<String>, size: usize) {
        self.hub.metrics.rooms.joined(self.protocol);
        self.record(EventKind::Join {
            room: room.as_str().to_string(),
            peer: peer.to_string(),
            display_name,
            size: size as u64,
        });
        room_line!(self, "peer_joined", peer, room, size, "peer joined");
    }

    /// A join refused with `ROOM_FULL`.
    pub fn room_full(&self, room: &RoomName, peer: &str) {
        self.hub.metrics.rooms.room_full_rejections.inc();
        self.record(EventKind::RoomFull {
            room: room.as_str().to_string(),
        });
        room_line!(self, "room_full", peer, room, "join refused: room full");
    }

    /// A join carried a resume token.
    pub fn resume_attempted(&self) {
        self.hub.metrics.rooms.reconnection_attempts.inc();
    }

    /// The token took back `peer`'s place, held for it since `resumed_from`
    /// dropped; `size` is the room's size.
    pub fn resumed(&self, room: &RoomName, peer: &str, resumed_from: &str, size: usize) {
        self.record(EventKind::Resume {
            room: room.as_str().to_string(),
            peer: peer.to_string(),
            resumed_from: Some(resumed_from.to_string()),
            size: size as u64,
        });
        room_line!(self, "peer_resumed", peer, room, "peer resumed");
        self.hub
            .metrics
            .rooms
            .reconnections
            .with_label_values(&["resumed"])
            .inc();
    }

    /// The token resumed nothing (`expired` or `invalid`); a fresh join follows.
    pub fn resume_refused(&self, outcome: &'static str) {
        self.hub
            .metrics
            .rooms
            .reconnections
            .with_label_values(&[outcome])
            .inc();
        tracing::info!(
            target: TARGET,
            event = "resume_failed",
            session_id = self.session_id,
            outcome,
            "resume token refused; joining afresh"
        );
    }

    /// The peer left `room` for good (its `peer-left` has gone out).
    pub fn left(&self, room: &RoomName, peer: &str, reason: LeaveReason) {
        self.leave_recorded(room, peer, reason);
        room_line!(
            self,
            "peer_left",
            peer,
            room,
            reason = reason.as_str(),
            "peer left"
        );
    }

    /// The leave of a peer that the room removed itself (and counted): only
    /// the history learns it here.
    pub fn leave_recorded(&self, room: &RoomName, peer: &str, reason: LeaveReason) {
        self.record(EventKind::Leave {
            room: room.as_str().to_string(),
            peer: peer.to_string(),
            reason: reason.as_str().to_string(),
        });
    }

    /// The grace of a peer that dropped ended without a resume: it left
    /// `room`, and the store forgets its resume state. Written after its
    /// connection (and span) ended, so the line names the session itself.
    pub fn grace_ended(&self, room: &RoomName, peer: &str, reason: LeaveReason, token: TokenId) {
        self.leave_recorded(room, peer, reason);
        self.resume_state(ResumeChange::Gone {
            room: room.as_str().to_string(),
            peer: peer.to_string(),
            token_id: token,
        });
        room_line!(
            self,
            "peer_left",
            peer,
            room,
            reason = reason.as_str(),
            "resume grace ended"
        );
    }

    /// The connection dropped and the peer keeps its place for the grace
    /// (for a restarted server to take back, when `shutdown`).
    pub fn away(&self, room: &RoomName, peer: &str, reason: LeaveReason, shutdown: bool) {
        self.record(EventKind::Disconnect {
            room: room.as_str().to_string(),
            peer: peer.to_string(),
            reason: if shutdown {
                "server_shutdown".to_string()
            } else {
                reason.as_str().to_string()
            },
        });
        room_line!(
            self,
            "peer_away",
            peer,
            room,
            reason = reason.as_str(),
            "peer dropped; holding its place for the resume grace"
        );
    }

    /// A change of the resume state, for a restarted server (the hash of
    /// a token's secret at most, never the token).
    pub fn resume_state(&self, change: ResumeChange) {
        self.record(EventKind::ResumeState(change));
    }

    /// An `error` sent to the client (`reference`: the type it answers).
    pub fn error_sent(&self, code: ErrorCode, reference: Option<&str>) {
        self.hub.metrics.connections.error_sent(self.protocol, code);
        self.record(EventKind::Error {
            code: code.as_str().to_string(),
            reference: reference.map(str::to_string),
        });
    }

    /// The server closed the connection on its own.
    pub fn kicked(&self, why: KickReason) {
        why.count(&self.hub.metrics);
    }

    /// A connection that never joined within the join timeout is closed.
    pub fn join_timeout(&self, timeout: Duration) {
        self.kicked(KickReason::JoinTimeout);
        tracing::info!(
            target: TARGET,
            event = "join_timeout",
            timeout_ms = timeout.as_millis() as u64,
            "closing a connection that never joined a room"
        );
    }

    /// The socket failed (an I/O error, a protocol violation).
    pub fn transport_error(&self, cause: &dyn std::fmt::Display) {
        self.hub.metrics.connections.websocket_errors.inc();
        tracing::debug!(target: TARGET, event = "websocket_error", cause = %cause, "transport error");
    }

    /// A frame over the size limit.
    pub fn message_too_large(&self, cause: &dyn std::fmt::Display) {
        self.hub.metrics.connections.websocket_errors.inc();
        tracing::info!(target: TARGET, event = "message_too_large", cause = %cause, "oversized message");
    }

    /// A text frame that is not UTF-8.
    pub fn invalid_utf8(&self) {
        self.hub.metrics.connections.websocket_errors.inc();
    }

    /// A telemetry event the client reported.
    pub fn telemetry(&self, event: &ClientTelemetry) {
        let m = &self.hub.metrics.reports;
        match event {
            ClientTelemetry::PeerConnection {
                outcome, ms, path, ..
            } => {
                let path = path.map_or("unknown", |p| p.as_str());
                m.peer_connections
                    .with_label_values(&[outcome.as_str(), path])
                    .inc();
                if let (PeerOutcome::Connected, Some(ms)) = (outcome, ms) {
                    m.peer_connect_seconds.observe(ms / 1000.0);
                }
            }
            ClientTelemetry::Reconnect { outcome, .. } => {
                m.client_reconnects
                    .with_label_values(&[outcome.as_str()])
                    .inc();
            }
            ClientTelemetry::SignalingRtt { ms } => m.signaling_rtt_seconds.observe(ms / 1000.0),
            ClientTelemetry::ConnectTime { ms } => m.client_connect_seconds.observe(ms / 1000.0),
            ClientTelemetry::ClientError { code, .. } => m.client_error(code),
        }
        self.record(EventKind::Telemetry(event.into()));
        tracing::debug!(
            target: TARGET,
            event = "client_telemetry",
            session_id = self.session_id,
            telemetry_event = event.event_name(),
            "client telemetry"
        );
    }
}
