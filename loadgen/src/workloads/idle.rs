//! idle: N connections in rooms of `room_size`, all joined and settled;
//! the server's RSS before and after, and per connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
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
    let protocol = target.protocol.clone();
    // Rooms of `size`, the last one possibly smaller.
    let expected_membership =
        (n / size) * protocol.settle_events(size) + protocol.settle_events(n % size);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server_before = target.server_sample();
    let me_before = Proc::Myself.sample();

    let counters = Arc::new(Counters::default());
    let join_latency = Arc::new(Mutex::new(stats::latency_histogram()));
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    for i in 0..n {
        let (target, counters, join_latency, gate, cancel) = (
            target.clone(),
            counters.clone(),
            join_latency.clone(),
            gate.clone(),
            cancel.clone(),
        );
        tasks.spawn(async move {
            let room = room_name("idle", i / size);
            let key = target.key(i as u64);
            let permit = gate.acquire_owned().await.expect("gate open");
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
            stats::record(&mut join_latency.lock().unwrap(), joined.join_latency);
            counters
                .membership
                .fetch_add(joined.membership_events, Ordering::Relaxed);
            counters.joined.fetch_add(1, Ordering::Relaxed);
            let protocol = target.protocol.as_ref();
            let mut keepalive = keepalive_timer(protocol);
            let cancelled = cancel.cancelled();
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
        });
    }

    // Everyone in (or failed), then everyone told of everyone, then a pause.
    let join_deadline = started + Duration::from_secs_f64(args.join_timeout_secs);
    let mut last_print = Instant::now();
    while counters.joined.load(Ordering::Relaxed) + counters.failed.load(Ordering::Relaxed) < n
        && Instant::now() < join_deadline
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
    let join_secs = started.elapsed().as_secs_f64();
    let settle_deadline = Instant::now() + Duration::from_secs(30);
    while counters.membership.load(Ordering::Relaxed) < expected_membership
        && counters.failed.load(Ordering::Relaxed) == 0
        && Instant::now() < settle_deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let settled = counters.membership.load(Ordering::Relaxed) >= expected_membership;
    tokio::time::sleep(Duration::from_secs_f64(args.settle_secs)).await;
    let server_after = target.server_sample();
    let me_after = Proc::Myself.sample();

    let joined = counters.joined.load(Ordering::Relaxed);
    let failed = counters.failed.load(Ordering::Relaxed);
    let dropped = counters.dropped.load(Ordering::Relaxed);
    let per_conn = match (server_before, server_after) {
        (Some(b), Some(a)) if joined > 0 => Some((a.rss as f64 - b.rss as f64) / joined as f64),
        _ => None,
    };
    let row = json!({
        "connections": n,
        "joined": joined,
        "failed": failed,
        "dropped": dropped,
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
        "join_latency_ms": stats::summary_ms(&join_latency.lock().unwrap()),
        "first_error": counters.first_error.lock().unwrap().clone(),
    });

    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();

    let mut report = Report::new("idle", &target, json_args(&args));
    report.push(row);
    report
}

fn json_args(args: &IdleArgs) -> Value {
    json!({
        "connections": args.connections,
        "room_size": args.room_size,
        "concurrency": args.concurrency,
        "settle_secs": args.settle_secs,
    })
}
