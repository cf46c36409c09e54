//! One WebSocket connection from welcome to close: reads frames, applies the
//! protocol, writes what its outbound queue holds, keeps the heartbeat, and
//! on the way out leaves its room the way the contract says.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::limits::{ConnectionPermit, Over, Throttle, Verdict};
use super::outbox::{ConnHandle, Frame, Outbox, Queued, StopReason, outbox};
use super::resume::{Redeemed, TokenId};
use super::room::Room;
use super::{Hub, OUTBOUND_QUEUE, PeerId, ids};
use crate::analytics::recorder::now_ms;
use crate::analytics::resume_state::ResumeChange;
use crate::analytics::{CloseReason, EventKind, Recorder};
use crate::protocol::{
    ClientMessage, ClientTelemetry, ErrorCode, ErrorKind, Inbound, LeaveReason, MessageType,
    PeerOutcome, ProtocolError, RelayKind, RoomName, ServerMessage, TraceParent, relay_frame,
};
use crate::telemetry::relay_span::{self, RelayAttributes, RelaySpan};
use crate::telemetry::{
    self,
    metrics::{KickReason, OutKind},
};
use crate::timefmt;

/// How long the server waits for a client to answer its close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Frames read from a kicked client while waiting for its close: a flooder
/// keeps writing until it reads the close, and its whole backlog is not
/// worth unmasking.
const KICKED_DRAIN_FRAMES: usize = 256;
/// A connection lets the others run after reading this many frames in a
/// row (without its socket running dry in between).
const FRAMES_BEFORE_YIELD: u32 = 8;
/// Most frames written before one flush.
const WRITE_BATCH: usize = 64;
/// Close code for a connection whose peer resumed on a newer connection.
pub const CLOSE_SUPERSEDED: u16 = 4000;

/// What the HTTP layer learned about the client before the upgrade.
pub struct ConnectionInfo {
    pub remote: SocketAddr,
    pub user_agent: Option<String>,
    /// The `?room=` of the upgrade request, still to be validated.
    pub room: Option<String>,
    pub permit: ConnectionPermit,
}

/// How a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The client sent a close frame first.
    ClientClosed,
    /// The socket ended or failed without a close frame.
    Disconnected,
    /// No frame for two heartbeat intervals.
    Timeout,
    /// The server is shutting down.
    Shutdown,
    /// The server removed the peer.
    Kicked(KickReason),
    /// The peer resumed on a newer connection.
    Superseded,
}

impl End {
    /// How a connection that someone else stopped ends.
    fn stopped(reason: StopReason) -> End {
        match reason {
            StopReason::Kicked(why) => End::Kicked(why),
            StopReason::Superseded => End::Superseded,
        }
    }
}

/// Serves one upgraded WebSocket until it ends. The connection is set up
/// (and its welcome queued) at once; the future only runs it.
pub fn serve<S>(
    ws: WebSocketStream<S>,
    hub: Arc<Hub>,
    info: ConnectionInfo,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let ConnectionInfo {
        remote,
        user_agent,
        room,
        permit,
    } = info;
    let mut connection = Connection::new(hub, permit);
    connection.start(remote, user_agent, room);
    connection.run(ws)
}

struct Connection {
    hub: Arc<Hub>,
    id: u64,
    /// Shared, not copied, by relay spans and resume bindings.
    session_id: Arc<str>,
    /// The session id as a number: the key of its analytics records.
    session: u128,
    /// The peer id this connection acts as (changes on a resume).
    peer_id: PeerId,
    token: TokenId,
    handle: ConnHandle,
    outbox: Outbox,
    room: Option<Arc<Room>>,
    /// Whether the connection ever joined (or resumed into) a room: only
    /// connections that never did are closed by the join timeout.
    ever_joined: bool,
    throttle: Throttle,
    last_seen: Instant,
    connected_at: Instant,
    /// The connection's place under the connection caps, given back when
    /// it is dropped.
    _permit: ConnectionPermit,
    messages_in: u64,
    messages_out: u64,
    errors: u64,
    /// `ws.connection`: the parent of every message's span.
    span: tracing::Span,
    /// Its OpenTelemetry context, when relay spans are exported: the parent
    /// of relays that bring no `traceparent`.
    /// Boxed: most servers export nothing, and it is 64 bytes.
    span_context: Option<Box<SpanContext>>,
    /// Set by a rate-limit strike: how long to leave the socket unread.
    read_pause: Option<Duration>,
}

impl Connection {
    fn new(hub: Arc<Hub>, permit: ConnectionPermit) -> Self {
        let id = hub.next_connection_id();
        let (handle, outbox) = outbox(id, OUTBOUND_QUEUE);
        let token = hub.tokens.issue();
        let session = hub.ids.session_ulid();
        let session_id: Arc<str> = session.to_string().into();
        let peer_id = ids::peer_id_of(session);
        let welcome = ServerMessage::Welcome {
            peer_id: &peer_id,
            session_id: &session_id,
            resume_token: &token.text,
            heartbeat_interval_ms: hub.config.heartbeat_interval_ms,
            max_room_size: hub.config.max_room_size,
        };
        handle.send(Frame::new(OutKind::Welcome, welcome.to_json()));
        let now = Instant::now();
        let span = tracing::info_span!(
            "ws.connection",
            session_id = &*session_id,
            peer_id = &*peer_id,
            room = Empty,
        );
        let span_context = relay_span::exporting()
            .then(|| span.context().span().span_context().clone())
            .filter(SpanContext::is_valid)
            .map(Box::new);
        Connection {
            span,
            span_context,
            read_pause: None,
            throttle: Throttle::new(hub.config.rate_limit_per_sec, hub.config.rate_limit_burst),
            hub,
            id,
            session_id,
            session: session.0,
            peer_id,
            token: token.id,
            handle,
            outbox,
            room: None,
            ever_joined: false,
            last_seen: now,
            connected_at: now,
            _permit: permit,
            messages_in: 0,
            messages_out: 0,
            errors: 0,
        }
    }

    /// Counts the connection, records its start and joins the room of its
    /// `?room=`, if any. Done before its future is made, so that what only
    /// the start needs is not kept in it.
    fn start(&mut self, remote: SocketAddr, user_agent: Option<String>, room: Option<String>) {
        let metrics = &self.hub.metrics;
        metrics.active_connections.inc();
        self.hub.recorder.record_at(
            self.session,
            crate::analytics::keys::session_ms(self.session),
            EventKind::Connect {
                peer: self.peer_id.to_string(),
                remote_addr: remote.ip().to_string(),
                user_agent,
                connections: metrics.active_connections.get().max(0) as u64,
            },
        );
        // `ws.connection` is entered around the synchronous work only (not
        // on every poll of the connection's future): entering a span costs
        // each layer.
        let span = self.span.clone();
        let _entered = span.enter();
        tracing::debug!(event = "connected", "connection opened");
        if let Some(room) = room {
            self.join_query_room(&room);
        }
    }

    // Not an `async fn`: an async fn keeps its arguments in slots of their
    // own beside the body's copies, and the socket alone is 300 bytes that
    // every idle connection would carry twice. The block below uses the
    // captured values in place.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    fn run<S>(mut self, mut ws: WebSocketStream<S>) -> impl Future<Output = ()> + Send
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        async move {
            let metrics = self.hub.metrics.clone();
            let span = self.span.clone();
            let end = self.pump(&mut ws).await;
            span.in_scope(|| self.leave_room(end));
            self.close(&mut ws, end).await;
            metrics.active_connections.dec();
            self.hub.recorder.record(
                self.session,
                EventKind::End {
                    close_reason: close_reason(end),
                    messages_in: self.messages_in,
                    messages_out: self.messages_out,
                    errors: self.errors,
                },
            );
            metrics
                .session_duration
                .observe(self.connected_at.elapsed().as_secs_f64());
            let _entered = span.enter();
            tracing::debug!(
                event = "disconnected",
                end = ?end,
                messages_in = self.messages_in,
                messages_out = self.messages_out,
                errors = self.errors,
                "connection closed"
            );
        }
    }

    /// Reads, writes and keeps the heartbeat until the connection ends.
    ///
    /// This future is most of what an idle connection costs (its size is
    /// checked by `connection_future_size` below), so it holds as few timers
    /// and waiters as it can, and the rare paths are boxed.
    async fn pump<S>(&mut self, ws: &mut WebSocketStream<S>) -> End
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let interval = self.hub.config.heartbeat_interval();
        let shutdown = self.hub.shutdown.clone();
        let stop = self.outbox.stop.clone();
        let span = self.span.clone();
        // Built once: a fresh waiter per pass would register and unregister
        // itself under a lock for every message.
        let mut cancelled = std::pin::pin!(shutdown.cancelled());
        let mut stopped = std::pin::pin!(stop.stopped());
        // One timer for every deadline: the heartbeat, the end of a read
        // pause and the join deadline (see `Deadlines`).
        let mut deadlines = Deadlines {
            beat: tokio::time::Instant::now() + interval,
            paused_until: None,
            join: self
                .hub
                .config
                .join_timeout()
                .map(|timeout| tokio::time::Instant::from_std(self.connected_at) + timeout),
        };
        let mut timer = std::pin::pin!(tokio::time::sleep_until(deadlines.next(self.ever_joined)));
        // Frames read one after another without the socket running dry.
        let mut in_a_row: u32 = 0;
        loop {
            tokio::select! {
                biased;
                _ = &mut cancelled => return End::Shutdown,
                reason = &mut stopped => return End::stopped(reason),
                () = &mut timer => {
                    let fired = deadlines.fire(tokio::time::Instant::now(), self.ever_joined, interval);
                    timer.as_mut().reset(deadlines.next(self.ever_joined));
                    if fired.join_timeout {
                        return self.join_timeout(&span);
                    }
                    if fired.beat && let Some(end) = self.heartbeat(ws, interval).await {
                        return end;
                    }
                }
                Ok(frame) = self.outbox.rx.recv_async() => {
                    // A client that stops reading blocks this write for as
                    // long as it likes, and meanwhile no ping goes out; a
                    // kick or a shutdown still ends it, and so does a write
                    // stuck for the two intervals of the liveness rule
                    // (checked when the heartbeat is due: no timer of its
                    // own per write).
                    let started = Instant::now();
                    let joined = self.ever_joined;
                    let mut ping_due = false;
                    let written = {
                        let write = self.write_batch(ws, frame);
                        let mut write = std::pin::pin!(write);
                        loop {
                            tokio::select! {
                                biased;
                                written = &mut write => break Ok(written),
                                _ = &mut cancelled => break Err(Some(End::Shutdown)),
                                reason = &mut stopped => break Err(Some(End::stopped(reason))),
                                () = &mut timer => {
                                    let fired = deadlines.fire(tokio::time::Instant::now(), joined, interval);
                                    timer.as_mut().reset(deadlines.next(joined));
                                    if fired.join_timeout {
                                        break Err(None);
                                    }
                                    if fired.beat {
                                        if started.elapsed() >= 2 * interval {
                                            break Err(Some(End::Timeout));
                                        }
                                        ping_due = true;
                                    }
                                }
                            }
                        }
                    };
                    match written {
                        Ok(Ok(())) => {}
                        Ok(Err(err)) => return self.transport_error(&err),
                        Err(Some(end)) => return end,
                        Err(None) => return self.join_timeout(&span),
                    }
                    if ping_due && let Some(end) = self.heartbeat(ws, interval).await {
                        return end;
                    }
                }
                read = std::future::poll_fn(|cx| {
                    let read = ws.poll_next_unpin(cx);
                    if read.is_pending() {
                        in_a_row = 0;
                    }
                    read
                }), if deadlines.paused_until.is_none() => {
                    let message = match read {
                        None => return End::Disconnected,
                        // Boxed: the error path is rare and its future large.
                        Some(Err(err)) => return Box::pin(self.read_error(ws, err)).await,
                        Some(Ok(message)) => message,
                    };
                    self.last_seen = Instant::now();
                    match message {
                        Message::Text(text) => {
                            if let Some(end) = span.in_scope(|| self.on_text(text.as_str())) {
                                return end;
                            }
                        }
                        Message::Binary(_) => {
                            if let Some(end) = span.in_scope(|| self.on_binary()) {
                                return end;
                            }
                        }
                        Message::Close(_) => return End::ClientClosed,
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    }
                    if let Some(pause) = self.read_pause.take() {
                        // After a rate-limit strike the socket is left
                        // unread for `pause` (see `Verdict::Limited`);
                        // writes and pings go on meanwhile.
                        deadlines.paused_until = Some(tokio::time::Instant::now() + pause);
                        timer.as_mut().reset(deadlines.next(self.ever_joined));
                    }
                    // A client whose frames are all already buffered would
                    // otherwise be served until tokio's budget (128 polls)
                    // runs out, holding up every other connection on this
                    // worker: after a few frames in a row, let the others
                    // run. A client whose socket runs dry between frames
                    // (every well-behaved one) never pays for a yield.
                    in_a_row += 1;
                    if in_a_row >= FRAMES_BEFORE_YIELD {
                        in_a_row = 0;
                        tokio::task::yield_now().await;
                    }
                }
            }
        }
    }

    /// A connection that never joined within `--join-timeout-ms`: logged,
    /// counted, and closed.
    fn join_timeout(&self, span: &tracing::Span) -> End {
        self.hub.metrics.kicked(KickReason::JoinTimeout);
        let timeout = self.hub.config.join_timeout().unwrap_or_default();
        span.in_scope(|| {
            tracing::info!(
                event = "join_timeout",
                timeout_ms = timeout.as_millis() as u64,
                "closing a connection that never joined a room"
            )
        });
        End::Kicked(KickReason::JoinTimeout)
    }

    /// A heartbeat tick: drops a client silent for two intervals, else pings.
    // This and `write_batch` are plain functions returning an async block,
    // as `run` is: an async fn's future keeps its arguments twice.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    fn heartbeat<S>(
        &mut self,
        ws: &mut WebSocketStream<S>,
        interval: Duration,
    ) -> impl Future<Output = Option<End>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        async move {
            if self.last_seen.elapsed() >= 2 * interval {
                return Some(End::Timeout);
            }
            let ping = async {
                std::future::poll_fn(|cx| ws.poll_ready_unpin(cx)).await?;
                ws.start_send_unpin(Message::Ping(Default::default()))?;
                std::future::poll_fn(|cx| ws.poll_flush_unpin(cx)).await
            };
            match ping.await {
                Ok(()) => None,
                Err(err) => Some(self.transport_error(&err)),
            }
        }
    }

    /// Writes one frame and whatever else is already queued, then flushes once.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    fn write_batch<S>(
        &mut self,
        ws: &mut WebSocketStream<S>,
        first: Frame,
    ) -> impl Future<Output = Result<(), WsError>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // `feed` would keep each message in its future while it waits for
        // the socket; waiting first and handing the message over after
        // keeps the future small.
        async move {
            let mut next = Some(first);
            let mut written = 0;
            while let Some(frame) = next {
                std::future::poll_fn(|cx| ws.poll_ready_unpin(cx)).await?;
                self.hub.metrics.message_out(frame.kind);
                self.messages_out += 1;
                ws.start_send_unpin(Message::Text(frame.text))?;
                written += 1;
                next = if written < WRITE_BATCH {
                    self.outbox.rx.try_recv().ok()
                } else {
                    None
                };
            }
            std::future::poll_fn(|cx| ws.poll_flush_unpin(cx)).await
        }
    }

    fn transport_error(&self, err: &WsError) -> End {
        match err {
            WsError::ConnectionClosed | WsError::AlreadyClosed => {}
            other => {
                self.hub.metrics.websocket_errors.inc();
                self.span.in_scope(|| {
                    tracing::debug!(event = "websocket_error", cause = %other, "transport error")
                });
            }
        }
        End::Disconnected
    }

    /// A read failed: oversized and non-UTF-8 frames are answered as the
    /// contract says; anything else is a dropped connection.
    async fn read_error<S>(&mut self, ws: &mut WebSocketStream<S>, err: WsError) -> End
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match err {
            WsError::Capacity(cause) => {
                self.hub.metrics.websocket_errors.inc();
                let limit = self.hub.config.max_message_bytes;
                self.span.in_scope(|| {
                    tracing::info!(event = "message_too_large", cause = %cause, "oversized message")
                });
                let message = format!("messages are limited to {limit} bytes");
                self.hub.metrics.error_sent(ErrorCode::MessageTooLarge);
                self.record_error(ErrorCode::MessageTooLarge, None);
                self.errors += 1;
                let text =
                    ServerMessage::error(ErrorCode::MessageTooLarge, &message, None).to_json();
                self.hub.metrics.message_out(OutKind::Error);
                self.messages_out += 1;
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.send(Message::text(text))).await;
                End::Kicked(KickReason::MessageTooLarge)
            }
            WsError::Utf8(_) => {
                self.hub.metrics.websocket_errors.inc();
                End::Kicked(KickReason::InvalidUtf8)
            }
            other => self.transport_error(&other),
        }
    }

    /// Handles one text frame; returns how the connection ends, if it does.
    fn on_text(&mut self, text: &str) -> Option<End> {
        self.messages_in += 1;
        let parsed = crate::protocol::parse(text);
        let reference = match &parsed {
            Ok(message) => Some(message.message_type()),
            Err(err) => err.reference,
        };
        self.hub
            .metrics
            .message_in(reference.unwrap_or(MessageType::Invalid));
        let relay = matches!(&parsed, Ok(m) if matches!(m.message, ClientMessage::Relay { .. }));
        match self.admit(reference, relay) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(end) => return Some(end),
        }
        match parsed {
            // Relays make their own span (see `telemetry::relay_span`).
            Ok(inbound) if matches!(inbound.message, ClientMessage::Relay { .. }) => {
                self.on_message(inbound);
            }
            Ok(inbound) => {
                let span = self.message_span(reference.unwrap_or(MessageType::Invalid));
                if let Some(parent) = &inbound.traceparent {
                    telemetry::traces::continue_trace(&span, parent);
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
        self.messages_in += 1;
        self.hub.metrics.message_in(MessageType::Invalid);
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
        let budget = self.room.as_ref().filter(|_| relay).map(|r| r.budget());
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
    fn message_span(&self, kind: MessageType) -> tracing::Span {
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
        };
        if let Err(err) = result {
            self.send_error(&err);
        }
    }

    fn join_query_room(&mut self, room: &str) {
        let span = self.message_span(MessageType::Join);
        let _entered = span.enter();
        let result = RoomName::parse(room)
            .map_err(|e| e.about(MessageType::Join))
            .and_then(|room| self.on_join(room, None, None));
        if let Err(err) = result {
            self.send_error(&err);
        }
    }

    fn on_join(
        &mut self,
        room: RoomName,
        display_name: Option<String>,
        resume_token: Option<&str>,
    ) -> Result<(), ProtocolError> {
        let about = |e: ProtocolError| e.about(MessageType::Join);
        if let Some(current) = &self.room {
            return Err(about(ProtocolError::new(
                ErrorCode::AlreadyInRoom,
                format!("already in room {}; send leave first", current.name()),
            )));
        }
        let metrics = self.hub.metrics.clone();
        if let Some(token) = resume_token {
            metrics.reconnection_attempts.inc();
            let redeemed = self.hub.tokens.redeem(token);
            if let Redeemed::Valid {
                token,
                peer_id,
                room: old_room,
                ..
            } = &redeemed
            {
                // Spent, here and in the store, whatever happens next.
                self.persist(ResumeChange::Spent {
                    room: old_room.as_str().to_string(),
                    peer: peer_id.to_string(),
                    token_id: *token,
                });
            }
            let outcome = match redeemed {
                Redeemed::Valid {
                    peer_id,
                    room: old_room,
                    session_id: resumed_from,
                    ..
                } if old_room == room => match self
                    .hub
                    .rooms
                    .get(&room)
                    .and_then(|r| r.resume(&peer_id, &self.handle, &metrics).map(|n| (r, n)))
                {
                    Some((r, size)) => {
                        self.peer_id = peer_id;
                        self.bind_token(&r);
                        self.hub.recorder.record(
                            self.session,
                            EventKind::Resume {
                                room: room.as_str().to_string(),
                                peer: self.peer_id.to_string(),
                                resumed_from: Some(resumed_from.to_string()),
                                size: size as u64,
                            },
                        );
                        tracing::info!(
                            event = "peer_resumed",
                            session_id = %self.session_id,
                            peer_id = %self.peer_id,
                            room = %room,
                            "peer resumed"
                        );
                        self.in_room(r);
                        metrics.reconnections.with_label_values(&["resumed"]).inc();
                        return Ok(());
                    }
                    _ => "expired",
                },
                Redeemed::Valid { .. } | Redeemed::Invalid => "invalid",
                Redeemed::Expired => "expired",
            };
            metrics.reconnections.with_label_values(&[outcome]).inc();
            tracing::info!(
                event = "resume_failed",
                session_id = %self.session_id,
                outcome,
                "resume token refused; joining afresh"
            );
        }
        let display_name: Option<Arc<str>> = display_name.map(Arc::from);
        let recorded_name = display_name.as_deref().map(str::to_string);
        let max = self.hub.config.max_room_size as usize;
        match self.hub.rooms.join(
            &room,
            &self.peer_id,
            display_name,
            &self.handle,
            max,
            &metrics,
        ) {
            Ok((r, size)) => {
                metrics.joins.inc();
                self.bind_token(&r);
                self.hub.recorder.record(
                    self.session,
                    EventKind::Join {
                        room: room.as_str().to_string(),
                        peer: self.peer_id.to_string(),
                        display_name: recorded_name,
                        size: size as u64,
                    },
                );
                tracing::info!(
                    event = "peer_joined",
                    session_id = %self.session_id,
                    peer_id = %self.peer_id,
                    room = %room,
                    size,
                    "peer joined"
                );
                self.in_room(r);
                Ok(())
            }
            Err(size) => {
                metrics.room_full_rejections.inc();
                self.hub.recorder.record(
                    self.session,
                    EventKind::RoomFull {
                        room: room.as_str().to_string(),
                    },
                );
                tracing::info!(
                    event = "room_full",
                    session_id = %self.session_id,
                    peer_id = %self.peer_id,
                    room = %room,
                    "join refused: room full"
                );
                Err(about(ProtocolError::new(
                    ErrorCode::RoomFull,
                    format!("room {room} is full ({size}/{max})"),
                )))
            }
        }
    }

    /// Binds this connection's token to its peer in `room`, and has the
    /// store remember it (the hash of its secret, never the token).
    fn bind_token(&self, room: &Room) {
        let bound = self.hub.tokens.bind(
            &self.token,
            self.peer_id.clone(),
            room.name().clone(),
            self.session_id.clone(),
        );
        if let Some(token_hash) = bound {
            self.persist(ResumeChange::Bound {
                room: room.name().as_str().to_string(),
                peer: self.peer_id.to_string(),
                display_name: room.display_name(&self.peer_id).map(|n| n.to_string()),
                token_id: self.token,
                token_hash,
            });
        }
    }

    /// The peer left `room` for good: the store forgets its resume state.
    fn forget_token(&self, room: &Room) {
        self.persist(ResumeChange::Gone {
            room: room.name().as_str().to_string(),
            peer: self.peer_id.to_string(),
            token_id: self.token,
        });
    }

    /// Hands a change of the resume state to the writer (never waits).
    fn persist(&self, change: ResumeChange) {
        self.hub
            .recorder
            .record(self.session, EventKind::ResumeState(change));
    }

    /// Remembers the room, and names it (and the peer) on the spans.
    fn in_room(&mut self, room: Arc<Room>) {
        if !self.span.is_disabled() {
            let name = room.name().as_str();
            let peer = &*self.peer_id;
            self.span.record("room", name);
            self.span.record("peer_id", peer);
            let current = tracing::Span::current();
            current.record("room", name);
            current.record("peer_id", peer);
        }
        self.room = Some(room);
        self.ever_joined = true;
    }

    fn on_leave(&mut self) -> Result<(), ProtocolError> {
        let Some(room) = self.room.take() else {
            return Err(not_in_room().about(MessageType::Leave));
        };
        let metrics = &self.hub.metrics;
        if room.remove(&self.peer_id, self.id, LeaveReason::Left, metrics) {
            record_leave(
                &self.hub.recorder,
                self.session,
                &room,
                &self.peer_id,
                "left",
            );
            tracing::info!(event = "peer_left", session_id = %self.session_id, peer_id = %self.peer_id, room = %room.name(), reason = "left", "peer left");
        }
        self.hub.rooms.forget_if_closed(&room, metrics);
        self.hub.tokens.unbind(&self.token);
        self.forget_token(&room);
        Ok(())
    }

    fn on_relay(
        &mut self,
        kind: RelayKind,
        to: &str,
        data: &RawValue,
        parent: Option<TraceParent>,
    ) -> Result<(), ProtocolError> {
        let about = |e: ProtocolError| e.about(kind.message_type());
        let Some(room) = &self.room else {
            return Err(about(not_in_room()));
        };
        let span = RelaySpan::start(
            parent.as_ref(),
            self.span_context.as_deref(),
            RelayAttributes {
                session_id: &self.session_id,
                peer_id: &self.peer_id,
                room: room.name().shared(),
                message_type: kind.as_str(),
            },
        );
        let out_kind = match kind {
            RelayKind::Offer => OutKind::Offer,
            RelayKind::Answer => OutKind::Answer,
            RelayKind::IceCandidate => OutKind::IceCandidate,
        };
        let frame = Frame::new(
            out_kind,
            relay_frame(kind, &self.peer_id, data, &span.traceparent),
        );
        match room.relay(&self.peer_id, self.id, to, frame, &self.hub.metrics) {
            Ok(()) => Ok(()),
            Err(super::room::RelayRefused::UnknownPeer) => Err(about(ProtocolError::new(
                ErrorCode::UnknownPeer,
                "to names no other peer of this room",
            ))),
            Err(super::room::RelayRefused::NotMember) => {
                // Removed by the room (kicked): nothing left to resume.
                self.forget_token(room);
                self.room = None;
                Err(about(not_in_room()))
            }
        }
    }

    fn on_telemetry(&mut self, event: ClientTelemetry) -> Result<(), ProtocolError> {
        if event.needs_room() && self.room.is_none() {
            return Err(ProtocolError::new(
                ErrorCode::NotInRoom,
                "telemetry about peers needs a room; join first",
            )
            .about(MessageType::Telemetry));
        }
        let m = &self.hub.metrics;
        match &event {
            ClientTelemetry::PeerConnection { outcome, ms, .. } => {
                m.peer_connections
                    .with_label_values(&[outcome.as_str()])
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
        self.hub
            .recorder
            .record(self.session, telemetry_event(&event));
        tracing::debug!(event = "client_telemetry", session_id = %self.session_id, telemetry_event = event.event_name(), "client telemetry");
        Ok(())
    }

    /// Queues a frame to this connection's own client; a full queue means
    /// the client is not reading, and it is kicked.
    fn queue(&mut self, frame: Frame) {
        if self.handle.send(frame) == Queued::Full {
            self.handle
                .stop(StopReason::Kicked(KickReason::SlowConsumer));
        }
    }

    fn send_error(&mut self, err: &ProtocolError) {
        self.errors += 1;
        if err.code.kind() == ErrorKind::Server {
            telemetry::log_server_error("server error sent to a client", err);
        }
        self.hub.metrics.error_sent(err.code);
        self.record_error(err.code, err.reference.map(|r| r.as_str()));
        let text = ServerMessage::error(err.code, &err.message, err.reference).to_json();
        self.queue(Frame::new(OutKind::Error, text));
    }

    fn record_error(&self, code: ErrorCode, reference: Option<&str>) {
        self.hub.recorder.record(
            self.session,
            EventKind::Error {
                code: code.as_str().to_string(),
                reference: reference.map(str::to_string),
            },
        );
    }

    /// Leaves the room as the way the connection ended requires.
    fn leave_room(&mut self, end: End) {
        let hub = self.hub.clone();
        let metrics = &hub.metrics;
        let Some(room) = self.room.take() else {
            hub.tokens.revoke(&self.token);
            return;
        };
        match end {
            End::ClientClosed | End::Kicked(_) => {
                let reason = if end == End::ClientClosed {
                    LeaveReason::Left
                } else {
                    LeaveReason::Kicked
                };
                let removed = room.remove(&self.peer_id, self.id, reason, metrics);
                // A room that kicked a slow consumer has removed it already.
                if removed || matches!(end, End::Kicked(_)) {
                    record_leave(
                        &hub.recorder,
                        self.session,
                        &room,
                        &self.peer_id,
                        reason.as_str(),
                    );
                }
                if removed {
                    if let End::Kicked(why) = end {
                        metrics.kicked(why);
                    }
                    tracing::info!(event = "peer_left", session_id = %self.session_id, peer_id = %self.peer_id, room = %room.name(), reason = reason.as_str(), "peer left");
                }
                hub.rooms.forget_if_closed(&room, metrics);
                hub.tokens.revoke(&self.token);
                self.forget_token(&room);
            }
            End::Superseded => hub.tokens.revoke(&self.token),
            End::Disconnected | End::Timeout | End::Shutdown => {
                let reason = if end == End::Timeout {
                    LeaveReason::Timeout
                } else {
                    LeaveReason::Disconnected
                };
                if !room.set_away(&self.peer_id, self.id, reason) {
                    hub.tokens.revoke(&self.token);
                    self.forget_token(&room);
                    return;
                }
                let grace = hub.config.resume_grace();
                hub.tokens.arm(&self.token, Instant::now() + grace);
                self.persist(ResumeChange::Armed {
                    room: room.name().as_str().to_string(),
                    peer: self.peer_id.to_string(),
                    token_id: self.token,
                    expires_at: now_ms() + grace.as_millis() as u64,
                    reason: reason.as_str().to_string(),
                });
                hub.recorder.record(
                    self.session,
                    EventKind::Disconnect {
                        room: room.name().as_str().to_string(),
                        peer: self.peer_id.to_string(),
                        reason: if end == End::Shutdown {
                            "server_shutdown".to_string()
                        } else {
                            reason.as_str().to_string()
                        },
                    },
                );
                tracing::info!(event = "peer_away", session_id = %self.session_id, peer_id = %self.peer_id, room = %room.name(), reason = reason.as_str(), "peer dropped; holding its place for the resume grace");
                if end == End::Shutdown {
                    // The place is kept for a restarted server to take back.
                    return;
                }
                spawn_grace_expiry(
                    hub.clone(),
                    room,
                    AwayPeer {
                        peer_id: self.peer_id.clone(),
                        conn_id: self.id,
                        token: Some(self.token),
                        session: self.session,
                        session_id: self.session_id.clone(),
                    },
                    grace,
                );
            }
        }
    }

    /// Closes the socket the way the end requires, within a bounded time.
    async fn close<S>(&mut self, ws: &mut WebSocketStream<S>, end: End)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let frame = |code: CloseCode, reason: &'static str| {
            Some(CloseFrame {
                code,
                reason: reason.into(),
            })
        };
        let close = match end {
            End::Disconnected => return,
            End::ClientClosed => None,
            End::Timeout => frame(CloseCode::Away, "heartbeat timeout"),
            End::Superseded => frame(
                CloseCode::from(CLOSE_SUPERSEDED),
                "resumed on another connection",
            ),
            End::Kicked(KickReason::MessageTooLarge) => frame(CloseCode::Size, "message too large"),
            End::Kicked(KickReason::InvalidUtf8) => {
                frame(CloseCode::Invalid, "text frame is not valid UTF-8")
            }
            End::Kicked(KickReason::SlowConsumer) => {
                frame(CloseCode::Policy, "too slow to keep up")
            }
            End::Kicked(KickReason::RateLimitAbuse) => {
                frame(CloseCode::Policy, "rate limit exceeded repeatedly")
            }
            End::Kicked(KickReason::JoinTimeout) => {
                frame(CloseCode::Policy, "no room joined in time (join timeout)")
            }
            End::Shutdown => {
                let text = ServerMessage::error(
                    ErrorCode::ServerShuttingDown,
                    "the server is restarting; reconnect and resume with your token",
                    None,
                )
                .to_json();
                self.hub.metrics.error_sent(ErrorCode::ServerShuttingDown);
                self.record_error(ErrorCode::ServerShuttingDown, None);
                self.errors += 1;
                self.hub.metrics.message_out(OutKind::Error);
                self.messages_out += 1;
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.send(Message::text(text))).await;
                frame(CloseCode::Away, "server shutting down")
            }
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            match close {
                Some(frame) => ws.close(Some(frame)).await?,
                // Our answer to the client's close is already queued.
                None => ws.flush().await?,
            }
            // Wait for the other side to finish the closing handshake. A
            // kicked client may still be flooding: read at most a bounded
            // number of its frames, then drop the socket.
            let mut budget = match end {
                End::Kicked(_) => KICKED_DRAIN_FRAMES,
                _ => usize::MAX,
            };
            while budget > 0
                && let Some(Ok(_)) = ws.next().await
            {
                budget -= 1;
                // As in `pump`: a drained backlog is read a few frames at
                // a time, between the other connections' turns.
                if budget.is_multiple_of(FRAMES_BEFORE_YIELD as usize) {
                    tokio::task::yield_now().await;
                }
            }
            Ok::<(), WsError>(())
        })
        .await;
    }
}

/// `pump`'s deadlines, all kept by its one timer.
struct Deadlines {
    /// When the next heartbeat is due.
    beat: tokio::time::Instant,
    /// The end of a read pause (reads wait until then).
    paused_until: Option<tokio::time::Instant>,
    /// When a connection that has not joined yet is closed.
    join: Option<tokio::time::Instant>,
}

/// What was due when `pump`'s timer fired.
struct Fired {
    join_timeout: bool,
    beat: bool,
}

impl Deadlines {
    /// The soonest deadline still to come.
    fn next(&self, joined: bool) -> tokio::time::Instant {
        let join = self.join.filter(|_| !joined);
        [self.paused_until, join]
            .into_iter()
            .flatten()
            .fold(self.beat, std::cmp::min)
    }

    /// Settles every deadline that has passed: a pause that is over ends,
    /// and a due heartbeat is moved an interval on from now (like tokio's
    /// `MissedTickBehavior::Delay`).
    fn fire(&mut self, now: tokio::time::Instant, joined: bool, interval: Duration) -> Fired {
        if self.paused_until.is_some_and(|until| now >= until) {
            self.paused_until = None;
        }
        let beat = now >= self.beat;
        if beat {
            self.beat = now + interval;
        }
        Fired {
            join_timeout: self.join.is_some_and(|at| !joined && now >= at),
            beat,
        }
    }
}

fn not_in_room() -> ProtocolError {
    ProtocolError::new(ErrorCode::NotInRoom, "join a room first")
}

/// The `closeReason` of a session that ended this way.
fn close_reason(end: End) -> CloseReason {
    match end {
        End::ClientClosed => CloseReason::Left,
        End::Disconnected | End::Superseded => CloseReason::Disconnected,
        End::Timeout | End::Kicked(KickReason::JoinTimeout) => CloseReason::Timeout,
        End::Kicked(_) => CloseReason::Kicked,
        End::Shutdown => CloseReason::ServerShutdown,
    }
}

/// A peer away inside its resume grace, as its expiry timer knows it.
pub(super) struct AwayPeer {
    pub peer_id: PeerId,
    /// The connection that dropped (a restored peer gets a fresh number).
    pub conn_id: u64,
    /// The token that takes the place back, if it has one left.
    pub token: Option<TokenId>,
    /// The session a leave is recorded on.
    pub session: u128,
    pub session_id: Arc<str>,
}

/// Ends the grace of `peer` after `grace`: if it has not resumed by then,
/// it leaves the room (the others see `peer-left`), the leave is recorded
/// on its session and the store forgets its resume state.
pub(super) fn spawn_grace_expiry(hub: Arc<Hub>, room: Arc<Room>, peer: AwayPeer, grace: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        if let Some(token) = &peer.token {
            hub.tokens.expire(token);
        }
        let AwayPeer {
            peer_id,
            conn_id,
            token,
            session,
            session_id,
        } = peer;
        if let Some(reason) = room.expire(&peer_id, conn_id, &hub.metrics) {
            record_leave(&hub.recorder, session, &room, &peer_id, reason.as_str());
            hub.recorder.record(
                session,
                EventKind::ResumeState(ResumeChange::Gone {
                    room: room.name().as_str().to_string(),
                    peer: peer_id.to_string(),
                    // A record without a token is forgotten whatever id is named.
                    token_id: token.unwrap_or_default(),
                }),
            );
            // The connection's span has ended by then; name the session.
            tracing::info!(event = "peer_left", session_id = %session_id, peer_id = %peer_id, room = %room.name(), reason = reason.as_str(), "resume grace ended");
        }
        hub.rooms.forget_if_closed(&room, &hub.metrics);
    });
}

fn record_leave(recorder: &Recorder, session: u128, room: &Room, peer: &str, reason: &str) {
    recorder.record(
        session,
        EventKind::Leave {
            room: room.name().as_str().to_string(),
            peer: peer.to_string(),
            reason: reason.to_string(),
        },
    );
}

/// The stored form of a client telemetry event (every field it validated).
fn telemetry_event(event: &ClientTelemetry) -> EventKind {
    let name = event.event_name().to_string();
    let mut kind = EventKind::Telemetry {
        event: name,
        peer: None,
        outcome: None,
        ms: None,
        reason: None,
        attempt: None,
        downtime_ms: None,
        code: None,
        message: None,
    };
    if let EventKind::Telemetry {
        peer,
        outcome,
        ms,
        reason,
        attempt,
        downtime_ms,
        code,
        message,
        ..
    } = &mut kind
    {
        match event {
            ClientTelemetry::PeerConnection {
                peer: p,
                outcome: o,
                ms: m,
                reason: r,
            } => {
                *peer = Some(p.clone());
                *outcome = Some(o.as_str().to_string());
                *ms = *m;
                *reason = r.clone();
            }
            ClientTelemetry::Reconnect {
                attempt: a,
                outcome: o,
                downtime_ms: d,
            } => {
                *attempt = Some(*a);
                *outcome = Some(o.as_str().to_string());
                *downtime_ms = *d;
            }
            ClientTelemetry::SignalingRtt { ms: m } | ClientTelemetry::ConnectTime { ms: m } => {
                *ms = Some(*m);
            }
            ClientTelemetry::ClientError {
                code: c,
                message: m,
            } => {
                *code = Some(c.clone());
                *message = m.clone();
            }
        }
    }
    kind
}

#[cfg(test)]
mod tests {
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::*;
    use crate::config::Config;
    use crate::telemetry::Metrics;

    /// Every idle connection carries its future (in its task) for as long
    /// as it lives: 2,768 bytes (over this duplex stream) before `serve`,
    /// `run` and `pump` were reshaped, plus 768 for the upgrade's task that
    /// held it; 1,648 after. Raise this budget only knowingly, with the idle
    /// memory measured again (docs/performance.md).
    #[test]
    fn one_timer_keeps_the_heartbeat_the_read_pause_and_the_join_deadline() {
        let interval = Duration::from_secs(10);
        let t0 = tokio::time::Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let mut d = Deadlines {
            beat: at(10),
            paused_until: Some(at(2)),
            join: Some(at(5)),
        };
        assert_eq!(d.next(false), at(2), "the pause ends first");

        let fired = d.fire(at(2), false, interval);
        assert!(!fired.beat && !fired.join_timeout);
        assert_eq!(d.paused_until, None, "the pause is over");
        assert_eq!(d.next(false), at(5), "then the join deadline");
        assert_eq!(d.next(true), at(10), "which a joined peer does not have");

        assert!(d.fire(at(5), false, interval).join_timeout);
        assert!(!d.fire(at(5), true, interval).join_timeout);

        // A heartbeat fired late is due again an interval after it fired.
        let fired = d.fire(at(12), true, interval);
        assert!(fired.beat && !fired.join_timeout);
        assert_eq!(d.beat, at(22));
        assert_eq!(d.next(true), at(22));
        assert!(
            !d.fire(at(12), true, interval).beat,
            "not twice for one interval"
        );
    }

    #[tokio::test]
    async fn connection_future_size() {
        const BUDGET: usize = 1_632;
        let hub = Hub::new(Arc::new(Config::defaults()), Arc::new(Metrics::new(10)));
        let (socket, _client) = tokio::io::duplex(64);
        let ws = WebSocketStream::from_raw_socket(socket, Role::Server, None).await;
        let info = ConnectionInfo {
            remote: "127.0.0.1:1".parse().unwrap(),
            user_agent: None,
            room: None,
            permit: hub
                .limits
                .try_acquire("127.0.0.1".parse().unwrap())
                .unwrap(),
        };
        let connection = serve(ws, hub.clone(), info);
        let size = std::mem::size_of_val(&connection);
        assert!(size <= BUDGET, "the connection future is {size} bytes");
    }
}
