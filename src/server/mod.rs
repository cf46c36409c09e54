//! The accept loop: binds the listening socket, hands each TCP connection
//! to hyper with our limits (`http_connection`) and warp's filter tree as
//! the service, and shuts down in order: every connection is told, and
//! waited for within a bounded time.

mod http_connection;
mod watched;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use warp::Filter;
use warp::filters::BoxedFilter;

use crate::signaling::Hub;
use crate::{adapters, http};

/// Said to a client refused by `--max-http-connections`, without waiting.
const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 97\r\nretry-after: 5\r\nconnection: close\r\n\r\n{\"error\":{\"code\":\"TOO_MANY_CONNECTIONS\",\"message\":\"too many open HTTP connections; retry later\"}}";
/// Time a shutdown may take before open connections are abandoned.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often spent resume tokens are swept.
const TOKEN_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// The `reason` label of connections refused by `--max-http-connections`.
const HTTP_TOTAL: &str = "http_total";
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
/// on the worker that relays everyone else.
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

/// Runs the accept loop for an existing hub until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let service = warp::service(routes(hub.clone()));
    hub.metrics
        .edge
        .connections_refused
        .with_label_values(&[HTTP_TOTAL]);
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
        if too_many_http_connections(&hub, &stream) {
            continue;
        }
        http_connection::spawn(stream, remote, &hub, service.clone(), &graceful);
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

/// Every route: the foreign protocols' (`crate::adapters`), then the rest,
/// whose recovery answers whatever matched nothing.
pub fn routes(hub: Arc<Hub>) -> BoxedFilter<(warp::reply::Response,)> {
    adapters::routes(hub.clone())
        .or(http::routes(hub))
        .unify()
        .boxed()
}

/// Refuses a connection over `--max-http-connections` with a 503 (counted,
/// logged, best effort and never waiting: the socket's buffer is empty).
fn too_many_http_connections(hub: &Hub, stream: &TcpStream) -> bool {
    let metrics = &hub.metrics;
    if metrics.edge.http_connections.get() < i64::from(hub.config.max_http_connections) {
        return false;
    }
    metrics
        .edge
        .connections_refused
        .with_label_values(&[HTTP_TOTAL])
        .inc();
    tracing::warn!(
        event = "connection_refused",
        cap = HTTP_TOTAL,
        "too many open HTTP connections"
    );
    let _ = stream.try_write(BUSY_RESPONSE);
    true
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
