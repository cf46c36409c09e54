//! The server as a library call: an accept loop that hands each TCP
//! connection to hyper with our limits, warp's filter tree as the service,
//! and an orderly shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::http::{self, ClientAddr};
use crate::signaling::Hub;
use crate::telemetry::Metrics;

/// Time a client has to send a request's headers (slowloris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a shutdown may take before open connections are abandoned.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often spent resume tokens are swept.
const TOKEN_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Serves on `listener` until `shutdown` completes, then closes every
/// connection as the contract says (`SERVER_SHUTTING_DOWN`, close 1001) and
/// returns within a bounded time.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::new(config.max_room_size));
    let hub = Hub::new(config, metrics);
    serve(listener, hub, shutdown).await
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
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let per_connection = service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ClientAddr(remote));
            let mut service = service.clone();
            async move { tower_service::Service::call(&mut service, req).await }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), per_connection)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(event = "http_connection_error", cause = %err, "HTTP connection ended with an error");
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

async fn sweep_tokens(hub: Arc<Hub>) {
    let mut tick = tokio::time::interval(TOKEN_SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        hub.tokens.sweep();
    }
}
