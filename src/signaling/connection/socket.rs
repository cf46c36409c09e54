//! The socket loop: reads frames, writes what the outbound queue holds in
//! batches, keeps the heartbeat and the other deadlines, and closes the
//! socket the way the connection ended.
//!
//! This future is most of what an idle connection costs (its size is
//! checked by `connection_future_size`), so it holds as few timers and
//! waiters as it can, and the rare paths are boxed.

use std::pin::Pin;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::Connection;
use super::deadlines::{Deadlines, Fired};
use super::end::End;
use crate::signaling::outbox::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::protocol::{ErrorCode, ProtocolError};
use crate::signaling::dialect::Answer;
use crate::signaling::labels::KickReason;
use crate::signaling::outbox::StopReason;

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

/// What the loop waits on besides the socket and the queue: a shutdown, a
/// stop, and the one timer of its deadlines.
struct Waiters<'a, C, S> {
    cancelled: Pin<&'a mut C>,
    stopped: Pin<&'a mut S>,
    timer: Pin<&'a mut Sleep>,
    deadlines: Deadlines,
}

impl<C, S> Waiters<'_, C, S> {
    /// Settles what is due when the timer fires, and sets it for the next.
    fn fire(&mut self, joined: bool, interval: Duration) -> Fired {
        let fired = self
            .deadlines
            .fire(tokio::time::Instant::now(), joined, interval);
        self.timer.as_mut().reset(self.deadlines.next(joined));
        fired
    }
}

/// How a write watched by [`watch_write`] ended.
enum Written {
    /// Written and flushed; a heartbeat fell due meanwhile.
    Ok {
        ping_due: bool,
    },
    Failed(WsError),
    /// A shutdown, a stop, or the liveness rule ended the connection.
    Ended(End),
    JoinTimeout,
}

/// Drives `write` while still watching for a shutdown, a stop and the
/// deadlines. A client that stops reading blocks the write for as long as
/// it likes, and meanwhile no ping goes out; a kick or a shutdown still
/// ends it, and so does a write stuck for the two intervals of the liveness
/// rule (checked when the heartbeat is due: no timer of its own per write).
// A plain function returning an async block: an async fn's future keeps
// its arguments twice, and this one is in every busy connection's future.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
fn watch_write<'a, F, C, T>(
    mut write: Pin<&'a mut F>,
    w: &'a mut Waiters<'_, C, T>,
    joined: bool,
    interval: Duration,
) -> impl Future<Output = Written> + 'a
where
    F: Future<Output = Result<(), WsError>>,
    C: Future<Output = ()>,
    T: Future<Output = StopReason>,
{
    async move {
        let started = Instant::now();
        let mut ping_due = false;
        loop {
            tokio::select! {
                biased;
                written = &mut write => break match written {
                    Ok(()) => Written::Ok { ping_due },
                    Err(err) => Written::Failed(err),
                },
                _ = &mut w.cancelled => break Written::Ended(End::Shutdown),
                reason = &mut w.stopped => break Written::Ended(End::stopped(reason)),
                () = &mut w.timer => {
                    let fired = w.fire(joined, interval);
                    if fired.join_timeout {
                        break Written::JoinTimeout;
                    }
                    if fired.beat {
                        if started.elapsed() >= 2 * interval {
                            break Written::Ended(End::Timeout);
                        }
                        ping_due = true;
                    }
                }
            }
        }
    }
}

impl Connection {
    /// Reads, writes and keeps the heartbeat until the connection ends.
    pub(super) async fn pump<S>(&mut self, ws: &mut WebSocketStream<S>) -> End
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let shutdown = self.hub.shutdown.clone();
        let stop = self.outbox.stop.clone();
        let deadlines = Deadlines::start(
            self.hub.config.heartbeat_interval(),
            self.hub.config.join_timeout(),
            self.connected_at,
        );
        // Built once: a fresh waiter per pass would register and unregister
        // itself under a lock for every message.
        let mut w = Waiters {
            cancelled: std::pin::pin!(shutdown.cancelled()),
            stopped: std::pin::pin!(stop.stopped()),
            timer: std::pin::pin!(tokio::time::sleep_until(deadlines.next(self.ever_joined))),
            deadlines,
        };
        // Frames read one after another without the socket running dry.
        let mut in_a_row: u32 = 0;
        if self.closing.is_some() {
            // Refused as it came: what the refusal queued goes out first.
            if let Ok(first) = self.outbox.rx.try_recv() {
                let _ = self.write_batch(ws, first).await;
            }
            return End::Refused;
        }
        loop {
            tokio::select! {
                biased;
                _ = &mut w.cancelled => return End::Shutdown,
                reason = &mut w.stopped => return End::stopped(reason),
                () = &mut w.timer => {
                    let fired = w.fire(self.ever_joined, self.hub.config.heartbeat_interval());
                    if fired.join_timeout {
                        return self.join_timeout();
                    }
                    if fired.beat && let Some(end) = self.heartbeat(ws).await {
                        return end;
                    }
                }
                Ok(frame) = self.outbox.rx.recv_async() => {
                    let (joined, interval) = (self.ever_joined, self.hub.config.heartbeat_interval());
                    let written = {
                        let write = std::pin::pin!(self.write_batch(ws, frame));
                        watch_write(write, &mut w, joined, interval).await
                    };
                    match written {
                        Written::Ok { ping_due: false } => {}
                        Written::Ok { ping_due: true } => {
                            if let Some(end) = self.heartbeat(ws).await {
                                return end;
                            }
                        }
                        Written::Failed(err) => return self.transport_error(&err),
                        Written::Ended(end) => return end,
                        Written::JoinTimeout => return self.join_timeout(),
                    }
                }
                read = std::future::poll_fn(|cx| {
                    let read = ws.poll_next_unpin(cx);
                    if read.is_pending() {
                        in_a_row = 0;
                    }
                    read
                }), if w.deadlines.paused_until.is_none() => {
                    let message = match read {
                        None => return End::Disconnected,
                        // Boxed: the error path is rare and its future large.
                        Some(Err(err)) => return Box::pin(self.read_error(ws, err)).await,
                        Some(Ok(message)) => message,
                    };
                    if let Some(end) = self.read_one(message, &mut w) {
                        return end;
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

    /// Handles one frame read from the socket, inside the connection's
    /// span. After a rate-limit strike the socket is then left unread for
    /// the pause (see `Verdict::Limited`); writes and pings go on meanwhile.
    fn read_one<C, T>(&mut self, message: Message, w: &mut Waiters<'_, C, T>) -> Option<End> {
        let span = self.span.clone();
        let end = span.in_scope(|| self.on_frame(message));
        if let Some(pause) = self.read_pause.take() {
            w.deadlines.paused_until = Some(tokio::time::Instant::now() + pause);
            w.timer.as_mut().reset(w.deadlines.next(self.ever_joined));
        }
        end.or(self.closing.as_ref().map(|_| End::Refused))
    }

    /// A connection that never joined within `--join-timeout-ms`: logged,
    /// counted, and closed.
    fn join_timeout(&self) -> End {
        let timeout = self.hub.config.join_timeout().unwrap_or_default();
        self.span.in_scope(|| self.journal().join_timeout(timeout));
        End::Kicked(KickReason::JoinTimeout)
    }

    /// A heartbeat tick: drops a client silent for two intervals, else pings.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    fn heartbeat<S>(&mut self, ws: &mut WebSocketStream<S>) -> impl Future<Output = Option<End>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        async move {
            if self.last_seen.elapsed() >= 2 * self.hub.config.heartbeat_interval() {
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
                self.hub
                    .metrics
                    .connections
                    .message_out(self.protocol, frame.kind);
                self.handle.counts().message_out();
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
            other => self.span.in_scope(|| self.journal().transport_error(other)),
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
                self.span
                    .in_scope(|| self.journal().message_too_large(&cause));
                let limit = self.hub.config.max_message_bytes;
                let message = format!("messages are limited to {limit} bytes");
                self.send_last_error(ws, ErrorCode::MessageTooLarge, &message)
                    .await;
                End::Kicked(KickReason::MessageTooLarge)
            }
            WsError::Utf8(_) => {
                self.journal().invalid_utf8();
                End::Kicked(KickReason::InvalidUtf8)
            }
            other => self.transport_error(&other),
        }
    }

    /// Sends an error straight to the socket, within a bounded time, as the
    /// protocol says it (matchbox has no error message: its close follows):
    /// the last word of a connection that is being closed.
    async fn send_last_error<S>(&mut self, ws: &mut WebSocketStream<S>, code: ErrorCode, text: &str)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.journal().error_sent(code, None);
        self.handle.counts().error();
        let Answer::Send(frame) = self.dialect.error(&ProtocolError::new(code, text)) else {
            return;
        };
        self.hub
            .metrics
            .connections
            .message_out(self.protocol, frame.kind);
        self.handle.counts().message_out();
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.send(Message::Text(frame.text))).await;
    }

    /// Closes the socket the way the end requires, within a bounded time.
    pub(super) async fn close<S>(&mut self, ws: &mut WebSocketStream<S>, end: End)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if end == End::Disconnected {
            return;
        }
        if end == End::Shutdown {
            let text = "the server is restarting; reconnect and resume with your token";
            self.send_last_error(ws, ErrorCode::ServerShuttingDown, text)
                .await;
        }
        let close = match (end, self.closing.take()) {
            (End::Refused, Some(reason)) => Some(CloseFrame {
                code: CloseCode::Policy,
                reason: String::from(reason).into(),
            }),
            _ => end.close_frame(),
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
