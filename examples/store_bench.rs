//! Analytics store benchmark (not a test): how many events per second the
//! writer sustains, and how long the API's queries take as the history
//! grows to a million events.
//!
//! Run: `cargo run --release --example store_bench [-- EVENTS]` (default
//! 1,000,000). The store lives in a temporary directory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chatsubo::analytics::layout as keys;
use chatsubo::analytics::{
    self, AnalyticsWriter, CloseReason, EventKind, Recorder, SessionFilter, SledOptions, SledStore,
    Store, TelemetryEvent,
};
use chatsubo::telemetry::Metrics;
use tokio_util::sync::CancellationToken;

const EVENTS_PER_SESSION: u64 = 5;
const ROOMS: u64 = 1000;
/// One new session every this many milliseconds of simulated time.
const SESSION_SPACING_MS: u64 = 100;
const QUEUE: usize = 65_536;

struct Gen {
    base_ms: u64,
    next: u64,
}

impl Gen {
    fn session_at(&self, i: u64) -> u64 {
        self.base_ms + i * SESSION_SPACING_MS
    }

    fn id(&self, i: u64) -> u128 {
        keys::first_id_at(self.session_at(i)) | u128::from(i)
    }

    /// The events of session `i`.
    fn events(&self, i: u64) -> Vec<(u128, u64, EventKind)> {
        let at = self.session_at(i);
        let id = self.id(i);
        let room = format!("room-{}", i % ROOMS);
        let peer = format!("p_{i:026}");
        let duration = 30_000 + (i * 7919) % 600_000;
        vec![
            (
                id,
                at,
                EventKind::Connect {
                    peer: peer.clone(),
                    remote_addr: "203.0.113.7".into(),
                    user_agent: Some("bench/1.0".into()),
                    connections: 100 + i % 50,
                    protocol: Default::default(),
                },
            ),
            (
                id,
                at + 5,
                EventKind::Join {
                    room: room.clone(),
                    peer: peer.clone(),
                    display_name: Some("ann".into()),
                    size: 1 + i % 10,
                },
            ),
            (
                id,
                at + 50,
                EventKind::Telemetry(TelemetryEvent {
                    event: "signaling-rtt".into(),
                    ms: Some(12.5),
                    ..TelemetryEvent::default()
                }),
            ),
            (
                id,
                at + duration,
                EventKind::Leave {
                    room,
                    peer,
                    reason: "left".into(),
                },
            ),
            (
                id,
                at + duration,
                EventKind::End {
                    close_reason: CloseReason::Left,
                    messages_in: 40,
                    messages_out: 38,
                    errors: 0,
                },
            ),
        ]
    }
}

/// Feeds sessions `[from, to)` through the real recorder → queue → writer
/// path; returns events per second.
async fn write(store: Arc<dyn Store>, history: &mut Gen, to: u64) -> (f64, u64) {
    let metrics = Arc::new(Metrics::new(10));
    let (recorder, queue) = Recorder::new(QUEUE, metrics.clone());
    let stop = CancellationToken::new();
    let writer = tokio::spawn(
        AnalyticsWriter::new(store, metrics.clone(), Arc::new(|_| {})).run(queue, stop.clone()),
    );
    let started = Instant::now();
    let mut n = 0u64;
    while history.next < to {
        for (id, at, kind) in history.events(history.next) {
            // The server never waits; the benchmark does, to measure the
            // writer rather than the drop counter.
            while metrics.store.analytics_queue_depth.get() > (QUEUE as i64) - 16 {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            recorder.record_at(id, at, kind);
            n += 1;
        }
        history.next += 1;
    }
    stop.cancel();
    writer.await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    let dropped = metrics
        .store
        .analytics_events
        .with_label_values(&["dropped"])
        .get();
    (n as f64 / secs, dropped)
}

fn time<T>(runs: usize, mut f: impl FnMut(usize) -> T) -> (Duration, Duration) {
    let mut samples: Vec<Duration> = (0..runs)
        .map(|i| {
            let t = Instant::now();
            std::hint::black_box(f(i));
            t.elapsed()
        })
        .collect();
    samples.sort();
    (samples[runs / 2], samples[runs * 99 / 100])
}

fn queries(store: &dyn Store, history: &Gen, label: &str) {
    let sessions = history.next;
    let newest = history.session_at(sessions - 1);
    println!(
        "\n## {label}: {} events, {sessions} sessions",
        sessions * EVENTS_PER_SESSION
    );
    let runs = 200;
    let show = |name: &str, (p50, p99): (Duration, Duration), rows: usize| {
        println!(
            "{name:<46} p50 {:>8.3} ms   p99 {:>8.3} ms   rows {rows}",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
    };
    let page = |filter: SessionFilter| {
        analytics::list_sessions(store, &filter)
            .unwrap()
            .sessions
            .len()
    };
    let base = SessionFilter {
        limit: 50,
        ..Default::default()
    };
    let rows = page(base.clone());
    show(
        "sessions, newest 50",
        time(runs, |_| page(base.clone())),
        rows,
    );
    let f = SessionFilter {
        room: Some("room-7".into()),
        ..base.clone()
    };
    let rows = page(f.clone());
    show(
        "sessions?room=, newest 50",
        time(runs, |_| page(f.clone())),
        rows,
    );
    let mid = sessions / 2;
    let f = SessionFilter {
        cursor: Some(history.id(mid)),
        ..base.clone()
    };
    let rows = page(f.clone());
    show(
        "sessions, 50 after a cursor mid-history",
        time(runs, |_| page(f.clone())),
        rows,
    );
    let f = SessionFilter {
        peer: Some(format!("p_{:026}", sessions - 3)),
        ..base.clone()
    };
    let rows = page(f.clone());
    show("sessions?peer=", time(runs, |_| page(f.clone())), rows);
    let f = SessionFilter {
        since_ms: Some(newest - 60_000),
        limit: 1000,
        ..base.clone()
    };
    let rows = page(f.clone());
    show(
        "sessions?since=1 min ago&limit=1000",
        time(runs, |_| page(f.clone())),
        rows,
    );
    let rows = analytics::session_with_events(store, history.id(mid))
        .unwrap()
        .unwrap()
        .1
        .len();
    show(
        "sessions/{id} with its events",
        time(runs, |i| {
            analytics::session_with_events(store, history.id((i as u64 * 7919) % sessions))
        }),
        rows,
    );
    let rows = analytics::churn_by_bucket(store, Some("room-7"), newest - 3_600_000, newest, 60)
        .unwrap()
        .len();
    show(
        "churn?room=, last hour, 60 s buckets",
        time(runs, |_| {
            analytics::churn_by_bucket(store, Some("room-7"), newest - 3_600_000, newest, 60)
        }),
        rows,
    );
    let rows = analytics::churn_by_bucket(store, None, newest - 3_600_000, newest, 60)
        .unwrap()
        .len();
    show(
        "churn (all rooms), last hour, 60 s buckets",
        time(runs, |_| {
            analytics::churn_by_bucket(store, None, newest - 3_600_000, newest, 60)
        }),
        rows,
    );
    let rows = analytics::session_stats(store, newest - 60_000, newest + 1)
        .unwrap()
        .sessions as usize;
    show(
        "stats, last minute (sessions in range)",
        time(runs, |_| {
            analytics::session_stats(store, newest - 60_000, newest + 1)
        }),
        rows,
    );
}

#[tokio::main]
async fn main() {
    let total: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let sessions = total / EVENTS_PER_SESSION;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SledStore::open(
            dir.path(),
            &SledOptions {
                cache_bytes: 64 << 20,
                flush_every_ms: 1000,
            },
        )
        .unwrap(),
    );
    let now = chatsubo::clock::now_ms();
    let mut history = Gen {
        base_ms: now - sessions * SESSION_SPACING_MS,
        next: 0,
    };
    println!("# store_bench: {total} events in {sessions} sessions, {ROOMS} rooms, cache 64 MB");
    let first = sessions / 10;
    let (rate, dropped) = write(store.clone(), &mut history, first).await;
    println!(
        "writer: {rate:.0} events/s over the first {} events (dropped {dropped})",
        first * EVENTS_PER_SESSION
    );
    queries(&*store, &history, "after 10% of the history");
    let (rate, dropped) = write(store.clone(), &mut history, sessions).await;
    println!(
        "\nwriter: {rate:.0} events/s over the next {} events (dropped {dropped})",
        (sessions - first) * EVENTS_PER_SESSION
    );
    queries(&*store, &history, "after the whole history");
    println!(
        "\nstore size on disk: {:.0} MB",
        store.size_on_disk().unwrap() as f64 / 1e6
    );
}
