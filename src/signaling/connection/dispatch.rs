//! From a frame to an action: counts it, puts it through the rate limit,
//! parses it and hands it to the action of its type, inside the message's
//! span. Errors go back to the client with the contract's code.

use std::time::Instant;

use time::OffsetDateTime;
use tokio_tungstenite::tungstenite::Message;

use super::Connection;
use super::end::End;
use crate::protocol::{
    ClientMessage, ErrorCode, ErrorKind, Inbound, MessageType, OutKind, ProtocolError,
    ServerMessage,
};
use crate::signaling::dialect::Answer;
use crate::signaling::labels::KickReason;
use crate::signaling::limits::{Over, Verdict};
use crate::signaling::outbox::Frame;
use crate::signaling::outbox::{Queued, StopReason};
use crate::{telemetry, timefmt};

impl Connection {
    /// Handles one frame read from the socket; returns how the connection
    /// ends, if it does.
    pub(super) fn on_frame(&mut self, message: Message) -> Option<End> {
        self.last_seen = Instant::now();
        match message {
            Message::Text(text) => self.on_text(text.as_str()),
            Message::Binary(_) => self.on_binary(),
            Message::Close(_) => Some(End::ClientClosed),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => None,
        }
    }

    /// Handles one text frame.
    fn on_text(&mut self, text: &str) -> Option<End> {
        self.handle.counts().message_in();
        let dialect = self.dialect.clone();
        let parsed = dialect.parse(text);
        let reference = match &parsed {
            Ok(Some(message)) => Some(message.message_type()),
            Ok(None) => Some(MessageType::KeepAlive),
            Err(err) => err.reference,
        };
        self.hub
            .metrics
            .connections
            .message_in(self.protocol, reference.unwrap_or(MessageType::Invalid));
        let relay =
            matches!(&parsed, Ok(Some(m)) if matches!(m.message, ClientMessage::Relay { .. }));
        match self.admit(reference, relay) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(end) => return Some(end),
        }
        match parsed {
            Ok(None) => {}
            // Relays make their own span (see `telemetry::RelaySpan`).
            Ok(Some(inbound)) if matches!(inbound.message, ClientMessage::Relay { .. }) => {
                self.on_message(inbound);
            }
            Ok(Some(inbound)) => {
                let span = self.message_span(reference.unwrap_or(MessageType::Invalid));
                if let Some(parent) = &inbound.traceparent {
                    telemetry::continue_trace(&span, parent);
                }
                let _entered = span.enter();
                self.on_message(inbound);
            }
            Err(err) => self.send_error(&err),
        }
        None
    }

    /// Handles one binary frame: not part of the protocol, but counted
    /// against the rate limit like any other message.
    fn on_binary(&mut self) -> Option<End> {
        self.handle.counts().message_in();
        self.hub
            .metrics
            .connections
            .message_in(self.protocol, MessageType::Invalid);
        match self.admit(None, false) {
            Ok(true) => self.send_error(&ProtocolError::invalid(
                "binary frames are not part of the protocol; send JSON text",
            )),
            Ok(false) => {}
            Err(end) => return Some(end),
        }
        None
    }

    /// Counts one inbound message, of type `reference` when known, against
    /// the rate limit (and a relay against its room's budget too):
    /// `Ok(true)` to handle it, `Ok(false)` when it was answered with
    /// `RATE_LIMITED`, and the end of the connection for repeated abuse.
    fn admit(&mut self, reference: Option<MessageType>, relay: bool) -> Result<bool, End> {
        let budget = self
            .room
            .as_ref()
            .filter(|_| relay)
            .and_then(|r| r.budget());
        match self.throttle.check(budget) {
            Verdict::Allow => Ok(true),
            Verdict::Limited(pause, over) => {
                self.read_pause = Some(pause);
                let config = &self.hub.config;
                let (per_second, burst, whose) = match (over, budget) {
                    (Over::Room, Some(room)) => (
                        room.per_second(),
                        room.burst(),
                        "this room's peers together are ",
                    ),
                    _ => (config.rate_limit_per_sec, config.rate_limit_burst, ""),
                };
                let err = ProtocolError::new(
                    ErrorCode::RateLimited,
                    format!(
                        "{whose}over {per_second} messages a second (burst {burst}); slow down"
                    ),
                );
                let err = match reference {
                    Some(kind) => err.about(kind),
                    None => err,
                };
                self.send_error(&err);
                Ok(false)
            }
            Verdict::Abuse => Err(End::Kicked(KickReason::RateLimitAbuse)),
        }
    }

    /// The span of one handled message (disabled, and free, when no
    /// subscriber wants it).
    pub(super) fn message_span(&self, kind: MessageType) -> tracing::Span {
        let room = self.room.as_ref().map(|r| r.name().as_str());
        macro_rules! span {
            ($name:literal) => {
                tracing::info_span!(
                    $name,
                    session_id = &*self.session_id,
                    peer_id = &*self.peer_id,
                    room,
                    message.type = kind.as_str(),
                )
            };
        }
        match kind {
            MessageType::Join => span!("signal.join"),
            MessageType::Leave => span!("signal.leave"),
            MessageType::Offer | MessageType::Answer | MessageType::IceCandidate => {
                span!("signal.relay")
            }
            MessageType::Ping => span!("signal.ping"),
            MessageType::Telemetry => span!("signal.telemetry"),
            MessageType::IceServers => span!("signal.ice_servers"),
            MessageType::KeepAlive => span!("signal.keep_alive"),
            MessageType::Invalid => span!("signal.invalid"),
        }
    }

    fn on_message(&mut self, inbound: Inbound<'_>) {
        let traceparent = inbound.traceparent;
        let result = match inbound.message {
            ClientMessage::Join {
                room,
                display_name,
                resume_token,
            } => self.on_join(room, display_name, resume_token.as_deref()),
            ClientMessage::Leave => self.on_leave(),
            ClientMessage::Relay { kind, to, data } => self.on_relay(kind, &to, data, traceparent),
            ClientMessage::Ping { id } => {
                let now = timefmt::rfc3339_millis(OffsetDateTime::now_utc());
                let pong = ServerMessage::Pong {
                    id: id.as_ref(),
                    server_time: &now,
                };
                self.queue(Frame::new(OutKind::Pong, pong.to_json()));
                Ok(())
            }
            ClientMessage::Telemetry(event) => self.on_telemetry(event),
            ClientMessage::IceServers => {
                self.send_ice_servers();
                Ok(())
            }
        };
        if let Err(err) = result {
            self.send_error(&err);
        }
    }

    /// Answers `ice-servers` with fresh credentials (`[]` when this server
    /// hands out none).
    fn send_ice_servers(&mut self) {
        let servers = match &self.hub.ice {
            Some(ice) => ice.for_peer(&self.peer_id),
            None => serde_json::value::RawValue::from_string("[]".into()).expect("JSON"),
        };
        let answer = ServerMessage::IceServers {
            ice_servers: &servers,
        };
        self.queue(Frame::new(OutKind::IceServers, answer.to_json()));
    }

    /// Queues a frame to this connection's own client; a full queue means
    /// the client is not reading, and it is kicked.
    fn queue(&mut self, frame: Frame) {
        if self.handle.send(frame) == Queued::Full {
            self.handle
                .stop(StopReason::Kicked(KickReason::SlowConsumer));
        }
    }

    /// Answers the client with an error as its protocol says it (a frame,
    /// or a close), counted and recorded.
    pub(super) fn send_error(&mut self, err: &ProtocolError) {
        self.handle.counts().error();
        if err.code.kind() == ErrorKind::Server {
            telemetry::log_server_error("server error sent to a client", err);
        }
        self.journal()
            .error_sent(err.code, err.reference.map(|r| r.as_str()));
        match self.dialect.error(err) {
            Answer::Send(frame) => self.queue(frame),
            Answer::Close(reason) => self.close_with(reason),
            Answer::Silent => {}
        }
    }

    /// Ends the connection after this frame with a 1008 close and `reason`
    /// (the first reason given wins).
    pub(super) fn close_with(&mut self, reason: String) {
        // A close reason is at most 123 bytes.
        let mut end = reason.len().min(120);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        self.closing
            .get_or_insert_with(|| reason[..end].to_string().into_boxed_str());
    }
}

/// The error of a message that needs a room before `join`.
pub(super) fn not_in_room() -> ProtocolError {
    ProtocolError::new(ErrorCode::NotInRoom, "join a room first")
}
