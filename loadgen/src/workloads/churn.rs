//! churn: workers each repeating connect, welcome, join, close (with the
//! closing handshake finished) for a fixed time; cycles a second, join
//! latency, server CPU per cycle.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::{Target, room_name};
use crate::client::{self, connect_and_join};
use crate::report::Report;
use crate::stats::{self, Proc};

/// Settings of the churn workload.
#[derive(clap::Args, Debug, Clone)]
pub struct ChurnArgs {
    /// Workers cycling at once.
    #[arg(long, default_value_t = 100)]
    pub workers: usize,
    /// Peers per room (workers share rooms of this size).
    #[arg(long, default_value_t = 10)]
    pub room_size: usize,
    /// Seconds to measure.
    #[arg(long, default_value_t = 15.0)]
    pub secs: f64,
    /// Seconds of cycling before measuring starts.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_secs: f64,
    /// Milliseconds each worker waits after a cycle (0: cycle flat out; a
    /// pause gives a steady, partial load for soak runs).
    #[arg(long, default_value_t = 0)]
    pub pause_ms: u64,
}

struct Tally {
    cycles: AtomicU64,
    errors: AtomicU64,
    counting: std::sync::atomic::AtomicBool,
    hists: Mutex<Hists>,
    first_error: Mutex<Option<String>>,
}

struct Hists {
    welcome: hdrhistogram::Histogram<u64>,
    join: hdrhistogram::Histogram<u64>,
    cycle: hdrhistogram::Histogram<u64>,
}

pub async fn run(target: Arc<Target>, args: ChurnArgs) -> Report {
    let tally = Arc::new(Tally {
        cycles: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        counting: false.into(),
        hists: Mutex::new(Hists {
            welcome: stats::latency_histogram(),
            join: stats::latency_histogram(),
            cycle: stats::latency_histogram(),
        }),
        first_error: Mutex::new(None),
    });
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup_secs);
    let stop_at = measure_from + Duration::from_secs_f64(args.secs);
    let size = args.room_size.max(1);
    let pause = Duration::from_millis(args.pause_ms);
    let mut tasks = JoinSet::new();
    for w in 0..args.workers {
        let room = room_name("churn", w / size);
        tasks.spawn(cycle_worker(
            target.clone(),
            tally.clone(),
            room,
            w,
            pause,
            stop_at,
        ));
    }

    tokio::time::sleep_until(measure_from.into()).await;
    let (server_before, me_before) = (target.server_sample(), Proc::Myself.sample());
    tally.counting.store(true, Ordering::Relaxed);
    tokio::time::sleep_until(stop_at.into()).await;
    tally.counting.store(false, Ordering::Relaxed);
    let (server_after, me_after) = (target.server_sample(), Proc::Myself.sample());
    let cycles = tally.cycles.load(Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();

    let h = tally.hists.lock().unwrap();
    let row = json!({
        "workers": args.workers,
        "cycles": cycles,
        "cycles_per_sec": cycles as f64 / args.secs,
        "errors": tally.errors.load(Ordering::Relaxed),
        "welcome_latency_ms": stats::summary_ms(&h.welcome),
        "join_latency_ms": stats::summary_ms(&h.join),
        "cycle_latency_ms": stats::summary_ms(&h.cycle),
        "server_cpu_us_per_cycle": match (server_before, server_after) {
            (Some(b), Some(a)) => stats::cpu_us_per(&b, &a, cycles),
            _ => None,
        },
        "server_system_us_per_cycle": match (server_before, server_after) {
            (Some(b), Some(a)) => stats::system_us_per(&b, &a, cycles),
            _ => None,
        },
        "server_cpu_cores": match (server_before, server_after) {
            (Some(b), Some(a)) => Some(stats::core_share(&b, &a)),
            _ => None,
        },
        "server_rss_bytes": server_after.map(|s| s.rss),
        "loadgen_cpu_cores": match (me_before, me_after) {
            (Some(b), Some(a)) => Some(stats::core_share(&b, &a)),
            _ => None,
        },
        "first_error": tally.first_error.lock().unwrap().clone(),
    });
    let mut report = Report::new("churn", &target, json_args(&args));
    report.set("join_note", json!(target.protocol.join_note()));
    report.push(row);
    report
}

/// Worker `w`: connect, welcome, join, close, (pause,) again until
/// `stop_at`; counted while the driver says so.
async fn cycle_worker(
    target: Arc<Target>,
    tally: Arc<Tally>,
    room: String,
    w: usize,
    pause: Duration,
    stop_at: Instant,
) {
    let mut n: u64 = 0;
    while Instant::now() < stop_at {
        // Unique names: peerjs refuses an id still registered.
        let key = target.key(((w as u64) << 32) | n);
        n += 1;
        let began = Instant::now();
        match connect_and_join(target.protocol.as_ref(), target.addr, &room, &key).await {
            Ok(joined) => {
                let (welcome, join) = (joined.welcome_latency, joined.join_latency);
                client::close(joined.ws).await;
                let cycle = began.elapsed();
                if pause > Duration::ZERO {
                    tokio::time::sleep(pause).await;
                }
                if tally.counting.load(Ordering::Relaxed) && Instant::now() <= stop_at {
                    tally.cycles.fetch_add(1, Ordering::Relaxed);
                    let mut h = tally.hists.lock().unwrap();
                    stats::record(&mut h.welcome, welcome);
                    stats::record(&mut h.join, join);
                    stats::record(&mut h.cycle, cycle);
                }
            }
            Err(err) => {
                tally.errors.fetch_add(1, Ordering::Relaxed);
                tally.first_error.lock().unwrap().get_or_insert(err);
                // Don't spin on a refusing server.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

fn json_args(args: &ChurnArgs) -> Value {
    json!({
        "workers": args.workers,
        "room_size": args.room_size,
        "secs": args.secs,
        "warmup_secs": args.warmup_secs,
        "pause_ms": args.pause_ms,
    })
}
