//! One HTTP connection: hyper with our limits (head size, header timeout,
//! the first request's deadline), the client's address on every request,
//! and a slow client counted and logged by the stage it was at.

use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpStream;

use super::watched::{Activity, GaugeGuard, WatchedStream};
use crate::http::{SlowStage, client_addr};
use crate::signaling::Hub;

/// Most bytes hyper buffers for one connection's request head (its default
/// is about 400 KiB); a longer head is answered 431.
const HTTP_MAX_BUF: usize = 64 * 1024;

/// Serves `stream` from `remote` in a task of its own, watched by
/// `graceful` for the shutdown.
pub fn spawn<S>(
    stream: TcpStream,
    remote: SocketAddr,
    hub: &Hub,
    service: S,
    graceful: &GracefulShutdown,
) where
    S: tower_service::Service<
            hyper::Request<Incoming>,
            Response = warp::reply::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let _ = stream.set_nodelay(true);
    let stream = WatchedStream::new(stream);
    let activity = stream.activity.clone();
    let seen = activity.clone();
    let trusted = hub.config.edge.trusted_proxies.clone();
    let per_connection = service_fn(move |mut req: hyper::Request<Incoming>| {
        seen.request_started();
        let client = client_addr(remote, req.headers(), &trusted);
        req.extensions_mut().insert(client);
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
    let metrics = hub.metrics.clone();
    metrics.edge.http_connections.inc();
    tokio::spawn(async move {
        let _open = GaugeGuard(metrics.edge.http_connections.clone());
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
        if let Some(stage) = slow_stage(result, &activity) {
            stage.count(&metrics);
            tracing::info!(
                event = "slow_client",
                stage = stage.as_str(),
                timeout_ms = header_timeout.as_millis() as u64,
                "disconnected a client too slow to send its request"
            );
        }
    });
}

/// Whether a connection that ended so (`None`: its first request's
/// deadline passed) was a slow client, and at which stage.
fn slow_stage(
    result: Option<Result<(), Box<dyn std::error::Error + Send + Sync>>>,
    activity: &Activity,
) -> Option<SlowStage> {
    match result {
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
    }
}

fn is_header_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    err.downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_timeout)
}
