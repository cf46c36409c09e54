//! Start-up and shut-down of the whole server: open (and recover) the
//! store, give the peers of the previous run their places back, start the
//! history's writer and its background loops, serve until told to stop,
//! then write what is still queued and mark a clean shutdown.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::analytics::{
    self, AnalyticsWriter, Opened, Recorder, SledOptions, StatusSink, Store, alive_loop,
    load_resume_state, mark_clean, retention_loop,
};
use crate::clock::now_ms;
use crate::config::Config;
use crate::server;
use crate::signaling::Hub;
use crate::telemetry::Metrics;

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
    let (store, open_now) = open_store(&config).await?;
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
        metrics.store.storage_errors.inc();
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
    let loops = [
        tokio::spawn(alive_loop(store.clone(), recorder, metrics.clone(), status)),
        tokio::spawn(retention_loop(
            store.clone(),
            config.retention_days,
            metrics.clone(),
        )),
    ];

    let served = server::serve(listener, hub.clone(), shutdown).await;

    close_store(store, &metrics, loops, writer, writer_stop).await;
    served
}

/// Opens the store off the async threads; `false` when it could not be
/// used now and opens later by itself.
async fn open_store(config: &Config) -> anyhow::Result<(Arc<dyn Store>, bool)> {
    let options = SledOptions {
        cache_bytes: config.store_cache_mb * 1024 * 1024,
        flush_every_ms: config.flush_interval_ms,
    };
    let dir = config.data_dir.clone();
    let opened = tokio::task::spawn_blocking(move || analytics::open_or_defer(&dir, &options))
        .await
        .context("the store-opening task failed")??;
    Ok(match opened {
        Opened::Now(store, _recovered) => (store, true),
        Opened::Later(store) => (store, false),
    })
}

/// Every connection has ended: stops the background loops, lets the
/// writer drain the queue and flush, and marks a clean shutdown.
async fn close_store(
    store: Arc<dyn Store>,
    metrics: &Metrics,
    loops: [JoinHandle<()>; 2],
    writer: JoinHandle<()>,
    writer_stop: CancellationToken,
) {
    for background in loops {
        background.abort();
        let _ = background.await;
    }
    writer_stop.cancel();
    if let Err(err) = writer.await {
        tracing::error!(event = "storage_error", cause = ?err, "the analytics writer failed");
    }
    let marked = tokio::task::spawn_blocking(move || mark_clean(&*store, now_ms()))
        .await
        .context("the shutdown-marker task failed")
        .and_then(|r| r);
    match marked {
        Ok(()) => tracing::info!(event = "store_closed", "session store flushed and closed"),
        Err(err) => {
            metrics.store.storage_errors.inc();
            tracing::error!(event = "storage_error", cause = ?err, "could not mark a clean shutdown");
        }
    }
}

/// Gives the peers of the previous run their places back (before serving),
/// from the resume state in the store. A store that cannot be read loses
/// them, and signaling goes on.
async fn restore_places(hub: &Arc<Hub>, store: &Arc<dyn Store>) {
    let reader = store.clone();
    let loaded = tokio::task::spawn_blocking(move || load_resume_state(&*reader))
        .await
        .context("the resume-state task failed")
        .and_then(|r| r.context("reading the resume state"));
    match loaded {
        Ok((peers, corrupt)) => {
            let restored = hub.restore(peers, now_ms());
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
            hub.metrics.store.storage_errors.inc();
            tracing::error!(event = "storage_error", cause = ?err, "could not read the resume state; no places restored");
        }
    }
}
