//! The shared state of the signaling server: rooms, resume tokens, ids,
//! connection caps, metrics and the history's recorder.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ice::IceServers;
use super::ids::IdGenerator;
use super::labels;
use super::limits::ConnectionLimits;
use super::registry::RoomRegistry;
use super::resume::ResumeTokens;
use crate::analytics::{Recorder, Store};
use crate::config::Config;
use crate::telemetry::Metrics;

/// Frames a connection's outbound queue holds before its receiver counts as
/// too slow and is kicked. A join into a full room of 10 with every peer
/// trickling candidates stays far below this.
pub const OUTBOUND_QUEUE: usize = 256;

/// The shared state of the signaling server.
pub struct Hub {
    pub config: Arc<Config>,
    pub rooms: RoomRegistry,
    pub tokens: ResumeTokens,
    pub ids: IdGenerator,
    pub limits: Arc<ConnectionLimits>,
    pub metrics: Arc<Metrics>,
    /// The STUN and TURN servers peers are given, if any are configured.
    pub ice: Option<IceServers>,
    /// Where connections record analytics events (never waits).
    pub recorder: Recorder,
    /// The analytics store, read by `/api` (absent in a hub without one).
    pub store: Option<Arc<dyn Store>>,
    /// Cancelled when the server begins a graceful shutdown.
    pub shutdown: CancellationToken,
    /// Every connection task, so that shutdown can wait for them.
    pub tasks: TaskTracker,
    pub started_at: Instant,
    next_connection: AtomicU64,
    storage_ok: AtomicBool,
}

impl Hub {
    /// A hub that records no analytics.
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>) -> Arc<Self> {
        let recorder = Recorder::disabled(metrics.clone());
        Self::with_analytics(config, metrics, recorder, None)
    }

    /// A hub whose connections record into `recorder` and whose `/api`
    /// reads `store`.
    pub fn with_analytics(
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        recorder: Recorder,
        store: Option<Arc<dyn Store>>,
    ) -> Arc<Self> {
        labels::touch_series(&metrics);
        Arc::new(Hub {
            ice: IceServers::new(&config.ice),
            recorder,
            store,
            limits: ConnectionLimits::new(config.max_connections, config.max_connections_per_ip),
            rooms: RoomRegistry::new(&config),
            config,
            tokens: ResumeTokens::default(),
            ids: IdGenerator::default(),
            metrics,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            started_at: Instant::now(),
            next_connection: AtomicU64::new(1),
            storage_ok: AtomicBool::new(true),
        })
    }

    /// Whether the last store operation succeeded.
    pub fn storage_ok(&self) -> bool {
        self.storage_ok.load(Ordering::Relaxed)
    }

    /// Records the outcome of a store operation.
    pub fn set_storage_ok(&self, ok: bool) {
        self.storage_ok.store(ok, Ordering::Relaxed);
    }

    /// A process-unique connection number.
    pub fn next_connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }
}
