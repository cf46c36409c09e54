//! relay: rooms of peers sending open-loop to random room mates at stepped
//! total rates; delivered ratio, latency, server CPU per delivered message,
//! and the load generator's own CPU and send lag.
//!
//! Open loop: every peer (`peer`) has its own schedule (evenly spaced sends
//! with a random phase), fixed before the step starts; a send that is late
//! is sent as soon as possible and its lateness is recorded as send lag,
//! never skipped. Latency counts from the moment the frame was built.

mod peer;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::peer::{PeerTask, Plan, Shared, Step};
use super::{Target, room_name};
use crate::client::{now_ns, sleep_until_ns};
use crate::report::Report;
use crate::stats::{self, Proc};

/// Settings of the relay workload.
#[derive(clap::Args, Debug, Clone)]
pub struct RelayArgs {
    /// Rooms.
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Peers per room.
    #[arg(long, default_value_t = 10)]
    pub room_size: usize,
    /// Total messages a second of each step, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "5000,10000,20000,40000,80000"
    )]
    pub rates: Vec<u32>,
    /// Seconds each step sends.
    #[arg(long, default_value_t = 15.0)]
    pub step_secs: f64,
    /// Seconds after each step for the last messages to arrive.
    #[arg(long, default_value_t = 2.0)]
    pub drain_secs: f64,
    /// Bytes of each message's data (a JSON object carrying the send time).
    #[arg(long, default_value_t = 400)]
    pub payload_bytes: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// Seconds between everyone joined and the first step.
    #[arg(long, default_value_t = 2.0)]
    pub settle_secs: f64,
}

/// A relay run under way: every peer connected and joined, the schedule
/// fixed. [`run`] measures it step by step; the flood workload adds its
/// flooding room to one.
pub struct Running {
    target: Arc<Target>,
    args: RelayArgs,
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
    cancel: CancellationToken,
    /// Send start, send end and drain end of each step, in ns since the epoch.
    windows: Vec<(u64, u64, u64)>,
    total: usize,
    joined: usize,
    failed: usize,
    first_error: Option<String>,
}

/// Connects and joins every peer (in rooms `<prefix>-0`, `<prefix>-1`…),
/// then fixes the schedule: the first step starts `settle_secs` later.
pub async fn start(target: Arc<Target>, args: RelayArgs, prefix: &str) -> Running {
    let size = args.room_size.max(1);
    let total = args.rooms * size;
    let shared = Arc::new(Shared::new(args.rates.len()));
    let (joined_tx, mut joined_rx) = mpsc::unbounded_channel();
    let (plan_tx, plan_rx) = watch::channel::<Option<Arc<Plan>>>(None);
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();
    for i in 0..total {
        let peer = PeerTask {
            target: target.clone(),
            room: room_name(prefix, i / size),
            room_index: i / size,
            position: i % size,
            index: i,
            shared: shared.clone(),
            cancel: cancel.clone(),
        };
        let (joined_tx, plan_rx, gate) = (joined_tx.clone(), plan_rx.clone(), gate.clone());
        tasks.spawn(async move { peer.run(gate, joined_tx, plan_rx).await });
    }
    drop(joined_tx);

    let join_started = std::time::Instant::now();
    let (rooms, failed, first_error) = collect_ids(&mut joined_rx, args.rooms, size).await;
    let joined = rooms.iter().flatten().filter(|p| p.is_some()).count();
    eprintln!(
        "  relay: {joined} of {total} joined in {:.1} s",
        join_started.elapsed().as_secs_f64()
    );

    // The schedule, fixed before anyone sends.
    let (steps, windows) = schedule(&args);
    let plan = Arc::new(Plan {
        rooms,
        steps,
        senders: joined,
        payload_bytes: args.payload_bytes,
    });
    let _ = plan_tx.send(Some(plan));
    Running {
        target,
        args,
        shared,
        tasks,
        cancel,
        windows,
        total,
        joined,
        failed,
        first_error,
    }
}

/// Every peer's id as it joins (each within 2 minutes), by room; and how
/// many did not join, with the first error.
async fn collect_ids(
    joined_rx: &mut mpsc::UnboundedReceiver<(usize, Result<String, String>)>,
    rooms: usize,
    size: usize,
) -> (Vec<Vec<Option<String>>>, usize, Option<String>) {
    let mut ids = vec![vec![None; size]; rooms];
    let mut failed = 0;
    let mut first_error = None;
    for _ in 0..rooms * size {
        match tokio::time::timeout(Duration::from_secs(120), joined_rx.recv()).await {
            Ok(Some((i, Ok(id)))) => ids[i / size][i % size] = Some(id),
            Ok(Some((_, Err(err)))) => {
                failed += 1;
                first_error.get_or_insert(err);
            }
            Ok(None) | Err(_) => break,
        }
    }
    (ids, failed, first_error)
}

/// The steps from `settle_secs` from now, each `step_secs` long and
/// `drain_secs` apart; and each one's send start, send end and drain end.
fn schedule(args: &RelayArgs) -> (Vec<Step>, Vec<(u64, u64, u64)>) {
    let mut start = now_ns() + secs_ns(args.settle_secs);
    let steps: Vec<Step> = args
        .rates
        .iter()
        .map(|&rate| {
            let step = Step {
                rate: f64::from(rate),
                start_ns: start,
                end_ns: start + secs_ns(args.step_secs),
            };
            start = step.end_ns + secs_ns(args.drain_secs);
            step
        })
        .collect();
    let windows = steps
        .iter()
        .map(|s| (s.start_ns, s.end_ns, s.end_ns + secs_ns(args.drain_secs)))
        .collect();
    (steps, windows)
}

impl Running {
    /// When step `i` sends: its start and end, in ns since the epoch.
    pub fn window(&self, i: usize) -> (u64, u64) {
        let (from, to, _) = self.windows[i];
        (from, to)
    }

    /// Waits out every step and returns one row of results per step.
    pub async fn measure(&self) -> Vec<Value> {
        let (target, args, shared) = (&self.target, &self.args, &self.shared);
        let mut rows = Vec::new();
        for (i, &(from, send_end, to)) in self.windows.iter().enumerate() {
            sleep_until_ns(from).await;
            let errors_before = shared.errors.load(Ordering::Relaxed);
            let (server_before, me_before) = (target.server_sample(), Proc::Myself.sample());
            sleep_until_ns(send_end).await;
            // Cores are a share of the sending time; CPU per message also
            // counts the drain, where the last messages are still handled.
            let (server_sending, me_sending) = (target.server_sample(), Proc::Myself.sample());
            sleep_until_ns(to).await;
            let (server_after, me_after) = (target.server_sample(), Proc::Myself.sample());
            let errors = shared.errors.load(Ordering::Relaxed) - errors_before;
            let (sent, received, latency, lag) = {
                let steps = shared.steps.lock().unwrap();
                let s = &steps[i];
                (s.sent, s.received, s.latency.clone(), s.lag.clone())
            };
            let rate = args.rates[i];
            let row = json!({
                "rate": rate,
                "sent": sent,
                "send_rate": sent as f64 / args.step_secs,
                "delivered": received,
                "delivered_ratio": if sent > 0 { received as f64 / sent as f64 } else { 0.0 },
                "latency_ms": stats::summary_ms(&latency),
                "send_lag_ms": stats::summary_ms(&lag),
                "errors": errors,
                "server_cpu_us_per_msg": match (server_before, server_after) {
                    (Some(b), Some(a)) => stats::cpu_us_per(&b, &a, received),
                    _ => None,
                },
                "server_system_us_per_msg": match (server_before, server_after) {
                    (Some(b), Some(a)) => stats::system_us_per(&b, &a, received),
                    _ => None,
                },
                "server_cpu_cores": match (server_before, server_sending) {
                    (Some(b), Some(a)) => Some(stats::core_share(&b, &a)),
                    _ => None,
                },
                "server_rss_bytes": server_after.map(|s| s.rss),
                "loadgen_cpu_cores": match (me_before, me_sending) {
                    (Some(b), Some(a)) => Some(stats::core_share(&b, &a)),
                    _ => None,
                },
                "loadgen_cpu_us_per_msg": match (me_before, me_after) {
                    (Some(b), Some(a)) => stats::cpu_us_per(&b, &a, received),
                    _ => None,
                },
                "dropped_connections": shared.dropped.load(Ordering::Relaxed),
            });
            eprintln!(
                "  relay: step {rate}/s: sent {sent}, delivered {received}, p99 {} ms, server {} µs/msg",
                row["latency_ms"]["p99"], row["server_cpu_us_per_msg"]
            );
            rows.push(row);
        }
        rows
    }

    /// Closes every connection and notes who joined in `report`.
    pub async fn finish(mut self, report: &mut Report) {
        self.cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(20), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
        report.set("peers", json!(self.total));
        report.set("joined", json!(self.joined));
        report.set("join_failed", json!(self.failed));
        report.set("first_error", json!(self.first_error));
    }
}

pub async fn run(target: Arc<Target>, args: RelayArgs) -> Report {
    let running = start(target.clone(), args.clone(), "relay").await;
    let rows = running.measure().await;
    let mut report = Report::new("relay", &target, json_args(&args));
    running.finish(&mut report).await;
    for row in rows {
        report.push(row);
    }
    report
}

fn secs_ns(secs: f64) -> u64 {
    (secs * 1e9) as u64
}

fn json_args(args: &RelayArgs) -> Value {
    json!({
        "rooms": args.rooms,
        "room_size": args.room_size,
        "rates": args.rates,
        "step_secs": args.step_secs,
        "drain_secs": args.drain_secs,
        "payload_bytes": args.payload_bytes,
    })
}
