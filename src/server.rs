//! The server as a library call: an accept loop that hands each TCP
//! connection to hyper with our limits, warp's filter tree as the service,
//! and an orderly shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use anyhow::Context;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::analytics::writer::StatusSink;
use crate::analytics::{
    self, AnalyticsWriter, Recorder, SledOptions, recovery, resume_state, retention,
};
use crate::config::Config;
use crate::http::{self, ClientAddr};
use crate::signaling::Hub;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::SlowStage;

/// Most bytes hyper buffers for one connection's request head (its default
/// is about 400 KiB); a longer head is answered 431.
const HTTP_MAX_BUF: usize = 64 * 1024;
/// Said to a client refused by `--max-http-connections`, without waiting.
const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 97\r\nretry-after: 5\r\nconnection: close\r\n\r\n{\"error\":{\"code\":\"TOO_MANY_CONNECTIONS\",\"message\":\"too many open HTTP connections; retry later\"}}";
/// Time a shutdown may take before open connections are abandoned.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often spent resume tokens are swept.
const TOKEN_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Connections the kernel completes and holds for the accept loop before
/// it drops new ones (capped by `net.core.somaxconn`, 4096 by default).
/// `TcpListener::bind` asks for 128, which a reconnect storm overflows:
/// after a restart every client comes back at once while the store is
/// opened and the places restored, before the first accept, and a dropped
/// SYN is only sent again by the client's kernel 1 s later (then 3 s).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds the listening socket as `TcpListener::bind` does (`SO_REUSEADDR`,
/// so a restarted server gets its port back at once), with a backlog of
/// [`LISTEN_BACKLOG`]. Call inside the runtime.
///
/// `recv_buffer` (bytes; see [`Config::socket_recv_buffer`]) is set on the
/// listener, so every accepted socket inherits it from its SYN on (the
/// window scale is chosen then). Without it the kernel grows the buffer of a
/// client that floods faster than it is read up to `net.ipv4.tcp_rmem`'s
/// maximum (32 MB on some kernels), all held unread while the connection is
/// paused for its strikes, and the `close` of a kicked flooder then frees it
/// on the worker that relays everyone else (0.2 to 1.1 ms under `perf
/// trace`, `docs/resilience.md`).
///
/// [`Config::socket_recv_buffer`]: crate::config::Config::socket_recv_buffer
pub fn bind(addr: SocketAddr, recv_buffer: Option<u32>) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    if let Some(bytes) = recv_buffer {
        socket.set_recv_buffer_size(bytes)?;
    }
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves on `listener` until `shutdown` completes, then closes every
/// connection as the contract says (`SERVER_SHUTTING_DOWN`, close 1001),
/// writes every analytics event still queued, flushes the store and
/// returns within a bounded time.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::new(config.max_room_size));
    let options = SledOptions {
        cache_bytes: config.store_cache_mb * 1024 * 1024,
        flush_every_ms: config.flush_interval_ms,
    };
    let dir = config.data_dir.clone();
    let opened = tokio::task::spawn_blocking(move || analytics::open_or_defer(&dir, &options))
        .await
        .context("the store-opening task failed")??;
    let (store, open_now) = match opened {
        analytics::Opened::Now(store, _recovered) => (store, true),
        analytics::Opened::Later(store) => (store, false),
    };
    let (recorder, queue) = Recorder::new(config.analytics_queue as usize, metrics.clone());
    let hub = Hub::with_analytics(
        config.clone(),
        metrics.clone(),
        recorder.clone(),
        Some(store.clone()),
    );
    let status: StatusSink = {
        let hub = hub.clone();
        Arc::new(move |ok| hub.set_storage_ok(ok))
    };
    if open_now {
        restore_places(&hub, &store).await;
    } else {
        metrics.storage_errors.inc();
        hub.set_storage_ok(false);
        tracing::warn!(
            event = "resume_state_not_restored",
            "the store could not be read at start: peers of the previous run cannot resume"
        );
    }
    let writer_stop = CancellationToken::new();
    let writer = tokio::spawn(
        AnalyticsWriter::new(store.clone(), metrics.clone(), status.clone())
            .run(queue, writer_stop.clone()),
    );
    let alive = tokio::spawn(recovery::alive_loop(
        store.clone(),
        recorder,
        metrics.clone(),
        status,
    ));
    let retention = tokio::spawn(retention::retention_loop(
        store.clone(),
        config.retention_days,
        metrics.clone(),
    ));

    let served = serve(listener, hub.clone(), shutdown).await;

    alive.abort();
    retention.abort();
    let _ = alive.await;
    let _ = retention.await;
    // Every connection has ended: the writer drains the queue and flushes.
    writer_stop.cancel();
    if let Err(err) = writer.await {
        tracing::error!(event = "storage_error", cause = ?err, "the analytics writer failed");
    }
    let marker = store.clone();
    let marked = tokio::task::spawn_blocking(move || {
        recovery::mark_clean(&*marker, analytics::recorder::now_ms())
    })
    .await
    .context("the shutdown-marker task failed")
    .and_then(|r| r);
    match marked {
        Ok(()) => tracing::info!(event = "store_closed", "session store flushed and closed"),
        Err(err) => {
            metrics.storage_errors.inc();
            tracing::error!(event = "storage_error", cause = ?err, "could not mark a clean shutdown");
        }
    }
    served
}

/// Runs the accept loop for an existing hub.
pub async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let service = warp::service(http::routes(hub.clone()));
    let graceful = GracefulShutdown::new();
    let sweeper = tokio::spawn(sweep_tokens(hub.clone()));
    let mut shutdown = std::pin::pin!(shutdown);
    tracing::info!(
        event = "listening",
        address = %listener.local_addr()?,
        version = env!("CARGO_PKG_VERSION"),
        "chatsubo is serving"
    );
    loop {
        let (stream, remote) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Out of file descriptors and the like: back off, don't spin.
                    tracing::warn!(event = "accept_error", cause = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let metrics = hub.metrics.clone();
        if metrics.http_connections.get() >= i64::from(hub.config.max_http_connections) {
            metrics
                .connections_refused
                .with_label_values(&["http_total"])
                .inc();
            tracing::warn!(
                event = "connection_refused",
                cap = "http_total",
                "too many open HTTP connections"
            );
            // Best effort and never waiting: the socket's buffer is empty.
            let _ = stream.try_write(BUSY_RESPONSE);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let stream = WatchedStream::new(stream);
        let activity = stream.activity.clone();
        let service = service.clone();
        let seen = activity.clone();
        let per_connection = service_fn(move |mut req: hyper::Request<Incoming>| {
            seen.request_started();
            req.extensions_mut().insert(ClientAddr(remote));
            let mut service = service.clone();
            async move { tower_service::Service::call(&mut service, req).await }
        });
        let header_timeout = hub.config.http_header_timeout();
        let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
        builder
            .http1()
            .timer(TokioTimer::new())
            .max_buf_size(HTTP_MAX_BUF)
            .header_read_timeout(header_timeout);
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), per_connection)
            .into_owned();
        let connection = graceful.watch(connection);
        metrics.http_connections.inc();
        tokio::spawn(async move {
            let _open = GaugeGuard(metrics.http_connections.clone());
            let mut connection = std::pin::pin!(connection);
            // hyper's header timer starts only once it has seen the first
            // bytes (it waits for them unbounded to tell HTTP/2 from
            // HTTP/1), so the first request's deadline is kept here.
            let first = tokio::time::sleep(header_timeout);
            let mut first = std::pin::pin!(first);
            let mut armed = true;
            let result = loop {
                tokio::select! {
                    result = &mut connection => break Some(result),
                    _ = &mut first, if armed => {
                        if activity.requests() == 0 {
                            break None;
                        }
                        armed = false;
                    }
                }
            };
            let slow = match result {
                None if activity.bytes_read() == 0 => Some(SlowStage::Idle),
                None => Some(SlowStage::Headers),
                Some(Err(err)) if is_header_timeout(err.as_ref()) => {
                    // A keep-alive connection quiet after its last request
                    // is closed as usual; one that began another is slow.
                    (activity.bytes_since_request() > 0).then_some(SlowStage::Headers)
                }
                Some(Err(err)) => {
                    tracing::debug!(event = "http_connection_error", cause = %err, "HTTP connection ended with an error");
                    None
                }
                Some(Ok(())) => None,
            };
            if let Some(stage) = slow {
                metrics.slow_client(stage);
                tracing::info!(
                    event = "slow_client",
                    stage = stage.as_str(),
                    timeout_ms = header_timeout.as_millis() as u64,
                    "disconnected a client too slow to send its request"
                );
            }
        });
    }
    drop(listener);
    tracing::info!(
        event = "shutdown_started",
        "shutting down: closing every connection"
    );
    hub.shutdown.cancel();
    hub.tasks.close();
    let finished = tokio::time::timeout(SHUTDOWN_TIMEOUT, async {
        tokio::join!(graceful.shutdown(), hub.tasks.wait());
    })
    .await;
    sweeper.abort();
    match finished {
        Ok(()) => tracing::info!(event = "shutdown_complete", "every connection closed"),
        Err(_) => tracing::warn!(
            event = "shutdown_timeout",
            open = hub.tasks.len(),
            "shutdown took too long; abandoning open connections"
        ),
    }
    Ok(())
}

/// Gives the peers of the previous run their places back (before serving),
/// from the resume state in the store. A store that cannot be read loses
/// them, and signaling goes on.
async fn restore_places(hub: &Arc<Hub>, store: &Arc<dyn analytics::Store>) {
    let reader = store.clone();
    let loaded = tokio::task::spawn_blocking(move || resume_state::load(&*reader))
        .await
        .context("the resume-state task failed")
        .and_then(|r| r.context("reading the resume state"));
    match loaded {
        Ok((peers, corrupt)) => {
            let restored = hub.restore(peers, analytics::recorder::now_ms());
            tracing::info!(
                event = "resume_state_restored",
                rooms = restored.rooms,
                peers = restored.peers,
                tokens = restored.tokens,
                skipped = restored.skipped + corrupt,
                grace_ms = hub.config.resume_grace().as_millis() as u64,
                "peers of the previous run hold their places for the resume grace"
            );
        }
        Err(err) => {
            hub.metrics.storage_errors.inc();
            tracing::error!(event = "storage_error", cause = ?err, "could not read the resume state; no places restored");
        }
    }
}

fn is_header_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    err.downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_timeout)
}

/// Decrements a gauge when dropped.
struct GaugeGuard(prometheus::IntGauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What one TCP connection has read so far, to tell an idle client from a
/// slow one.
#[derive(Default)]
struct Activity {
    bytes_read: AtomicU64,
    requests: AtomicU64,
    /// `bytes_read` when the last request's head was complete.
    at_last_request: AtomicU64,
}

impl Activity {
    fn request_started(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.at_last_request
            .store(self.bytes_read.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    fn bytes_since_request(&self) -> u64 {
        self.bytes_read() - self.at_last_request.load(Ordering::Relaxed)
    }
}

/// A TCP stream that counts the bytes read from it.
struct WatchedStream {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl WatchedStream {
    fn new(inner: TcpStream) -> Self {
        WatchedStream {
            inner,
            activity: Arc::default(),
        }
    }
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = (buf.filled().len() - before) as u64;
        if read > 0 {
            self.activity.bytes_read.fetch_add(read, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn sweep_tokens(hub: Arc<Hub>) {
    let mut tick = tokio::time::interval(TOKEN_SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        hub.tokens.sweep();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn accepted_recv_buffer(recv_buffer: Option<u32>) -> u32 {
        let listener = bind("127.0.0.1:0".parse().unwrap(), recv_buffer).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let accepted = TcpSocket::from_std_stream(accepted.into_std().unwrap());
        accepted.recv_buffer_size().unwrap()
    }

    #[tokio::test]
    async fn accepted_sockets_inherit_the_listeners_receive_buffer() {
        // Linux doubles what it is asked for (its bookkeeping), and its
        // default (`net.ipv4.tcp_rmem`'s middle value) is 128 KiB or more.
        let bounded = accepted_recv_buffer(Some(16 * 1024)).await;
        assert!((16 * 1024..=32 * 1024).contains(&bounded), "{bounded}");
        let kernel = accepted_recv_buffer(None).await;
        assert!(kernel > 32 * 1024, "{kernel}");
    }
}
