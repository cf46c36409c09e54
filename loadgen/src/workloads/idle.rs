//! idle: N connections in rooms of `room_size`, all joined and settled;
//! the server's RSS before and after, and per connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Target, idle_event, keepalive_tick, keepalive_timer, room_name, send_keepalive};
use crate::client::{self, connect_and_join};
use crate::protocols::Event;
use crate::report::Report;
use crate::stats::{self, Proc};

/// Settings of the idle workload.
#[derive(clap::Args, Debug, Clone)]
pub struct IdleArgs {
    /// Connections to open and join.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Peers per room.
    #[arg(long, default_value_t = 10)]
    pub room_size: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// Seconds to wait after everyone settled before measuring.
    #[arg(long, default_value_t = 3.0)]
    pub settle_secs: f64,
    /// Seconds allowed for opening and joining every connection.
    #[arg(long, default_value_t = 180.0)]
    pub join_timeout_secs: f64,
}

#[derive(Default)]
struct Counters {
    joined: AtomicUsize,
    failed: AtomicUsize,
    membership: AtomicUsize,
    dropped: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

pub async fn run(target: Arc<Target>, args: IdleArgs) -> Report {
    let n = args.connections;
    let size = args.room_size.max(1);
    // Rooms of `size`, the last one possibly smaller.
    let protocol = target.protocol.clone();
    let expected_membership =
        (n / size) * protocol.settle_events(size) + protocol.settle_events(n % size);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server_before = target.server_sample();
    let me_before = Proc::Myself.sample();

    let shared = Shared {
        counters: Arc::new(Counters::default()),
        join_latency: Arc::new(Mutex::new(stats::latency_histogram())),
        gate: Arc::new(Semaphore::new(args.concurrency.max(1))),
        cancel: CancellationToken::new(),
    };
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    for i in 0..n {
        tasks.spawn(hold_one(target.clone(), shared.clone(), i, size));
    }

    // Everyone in (or failed), then everyone told of everyone, then a pause.
    let counters = &shared.counters;
    wait_joined(
        counters,
        n,
        started + Duration::from_secs_f64(args.join_timeout_secs),
    )
    .await;
    let join_secs = started.elapsed().as_secs_f64();
    let settled = wait_settled(counters, expected_membership).await;
    tokio::time::sleep(Duration::from_secs_f64(args.settle_secs)).await;
    let server_after = target.server_sample();
    let me_after = Proc::Myself.sample();

    let joined = counters.joined.load(Ordering::Relaxed);
    let per_conn = match (server_before, server_after) {
        (Some(b), Some(a)) if joined > 0 => Some((a.rss as f64 - b.rss as f64) / joined as f64),
        _ => None,
    };
    let row = json!({
        "connections": n,
        "joined": joined,
        "failed": counters.failed.load(Ordering::Relaxed),
        "dropped": counters.dropped.load(Ordering::Relaxed),
        "settled": settled,
        "membership_events": counters.membership.load(Ordering::Relaxed),
        "expected_membership_events": expected_membership,
        "join_secs": join_secs,
        "server_rss_before_bytes": server_before.map(|s| s.rss),
        "server_rss_after_bytes": server_after.map(|s| s.rss),
        "server_bytes_per_connection": per_conn,
        "server_cpu_secs_joining": match (server_before, server_after) {
            (Some(b), Some(a)) => Some(a.cpu.saturating_sub(b.cpu).as_secs_f64()),
            _ => None,
        },
        "loadgen_rss_after_bytes": me_after.map(|s| s.rss),
        "loadgen_cpu_secs": match (me_before, me_after) {
            (Some(b), Some(a)) => Some(a.cpu.saturating_sub(b.cpu).as_secs_f64()),
            _ => None,
        },
        "join_latency_ms": stats::summary_ms(&shared.join_latency.lock().unwrap()),
        "first_error": counters.first_error.lock().unwrap().clone(),
    });

    shared.cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();

    let mut report = Report::new("idle", &target, json_args(&args));
    report.push(row);
    report
}

/// What every connection's task shares with the driver.
#[derive(Clone)]
struct Shared {
    counters: Arc<Counters>,
    join_latency: Arc<Mutex<Histogram<u64>>>,
    gate: Arc<Semaphore>,
    cancel: CancellationToken,
}

/// Connection `i`: opens and joins (at most `gate` at once), then holds the
/// connection, keeping it alive and counting what it hears, until cancelled.
async fn hold_one(target: Arc<Target>, shared: Shared, i: usize, size: usize) {
    let counters = &shared.counters;
    let room = room_name("idle", i / size);
    let key = target.key(i as u64);
    let permit = shared
        .gate
        .clone()
        .acquire_owned()
        .await
        .expect("gate open");
    let joined = connect_and_join(target.protocol.as_ref(), target.addr, &room, &key).await;
    drop(permit);
    let mut joined = match joined {
        Ok(j) => j,
        Err(err) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            counters.first_error.lock().unwrap().get_or_insert(err);
            return;
        }
    };
    stats::record(
        &mut shared.join_latency.lock().unwrap(),
        joined.join_latency,
    );
    counters
        .membership
        .fetch_add(joined.membership_events, Ordering::Relaxed);
    counters.joined.fetch_add(1, Ordering::Relaxed);
    let protocol = target.protocol.as_ref();
    let mut keepalive = keepalive_timer(protocol);
    let cancelled = shared.cancel.cancelled();
    tokio::pin!(cancelled);
    loop {
        tokio::select! {
            _ = &mut cancelled => break,
            read = joined.ws.next() => match idle_event(protocol, read) {
                None => {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Some(Event::PeerJoined) => {
                    counters.membership.fetch_add(1, Ordering::Relaxed);
                }
                Some(_) => {}
            },
            text = keepalive_tick(&mut keepalive) => {
                if !send_keepalive(&mut joined.ws, text).await {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
    client::close(joined.ws).await;
}

/// Until all `n` joined or failed, or the deadline; progress every 5 s.
async fn wait_joined(counters: &Counters, n: usize, deadline: Instant) {
    let mut last_print = Instant::now();
    while counters.joined.load(Ordering::Relaxed) + counters.failed.load(Ordering::Relaxed) < n
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            eprintln!(
                "  idle: {} joined, {} failed of {n}",
                counters.joined.load(Ordering::Relaxed),
                counters.failed.load(Ordering::Relaxed)
            );
        }
    }
}

/// Until every membership event arrived (or one failed, or 30 s); whether
/// they all did.
async fn wait_settled(counters: &Counters, expected: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while counters.membership.load(Ordering::Relaxed) < expected
        && counters.failed.load(Ordering::Relaxed) == 0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    counters.membership.load(Ordering::Relaxed) >= expected
}

fn json_args(args: &IdleArgs) -> Value {
    json!({
        "connections": args.connections,
        "room_size": args.room_size,
        "concurrency": args.concurrency,
        "settle_secs": args.settle_secs,
    })
}
