//! The server as a library call: an accept loop that hands each TCP
//! connection to hyper with our limits, warp's filter tree as the service,
//! and an orderly shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::analytics::writer::StatusSink;
use crate::analytics::{
    self, AnalyticsWriter, Recorder, SledOptions, recovery, resume_state, retention,
};
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
    let (store, _recovered) = tokio::task::spawn_blocking(move || analytics::open(&dir, &options))
        .await
        .context("the store-opening task failed")??;
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
    restore_places(&hub, &store).await;
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

async fn sweep_tokens(hub: Arc<Hub>) {
    let mut tick = tokio::time::interval(TOKEN_SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        hub.tokens.sweep();
    }
}
