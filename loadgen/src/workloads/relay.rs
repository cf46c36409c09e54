//! relay: rooms of peers sending open-loop to random room mates at stepped
//! total rates; delivered ratio, latency, server CPU per delivered message,
//! and the load generator's own CPU and send lag.
//!
//! Open loop: every peer has its own schedule (evenly spaced sends with a
//! random phase), fixed before the step starts; a send that is late is sent
//! as soon as possible and its lateness is recorded as send lag, never
//! skipped. Latency counts from the moment the frame was built.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::{Rng, Target, keepalive_tick, keepalive_timer, room_name, send_keepalive};
use crate::client::{
    self, Ws, at_ns, connect_and_join, now_ns, read_stamp, sleep_until_ns, write_payload,
};
use crate::protocols::Event;
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

/// One rate step, in nanoseconds since the run's epoch.
struct Step {
    rate: f64,
    start_ns: u64,
    end_ns: u64,
}

/// Everything a peer needs to send: who is in which room, and the steps.
struct Plan {
    /// Peer ids by room; `None` for a connection that failed to join.
    rooms: Vec<Vec<Option<String>>>,
    steps: Vec<Step>,
    /// Peers that send (joined ones).
    senders: usize,
    payload_bytes: usize,
}

struct StepStats {
    sent: u64,
    received: u64,
    latency: Histogram<u64>,
    lag: Histogram<u64>,
}

struct Shared {
    steps: Mutex<Vec<StepStats>>,
    errors: AtomicU64,
    dropped: AtomicUsize,
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
    let shared = Arc::new(Shared {
        steps: Mutex::new(
            args.rates
                .iter()
                .map(|_| StepStats {
                    sent: 0,
                    received: 0,
                    latency: stats::latency_histogram(),
                    lag: stats::latency_histogram(),
                })
                .collect(),
        ),
        errors: AtomicU64::new(0),
        dropped: AtomicUsize::new(0),
    });
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

    // Collect every peer's id.
    let mut rooms = vec![vec![None; size]; args.rooms];
    let mut failed = 0;
    let mut first_error = None;
    let join_started = std::time::Instant::now();
    for _ in 0..total {
        match tokio::time::timeout(Duration::from_secs(120), joined_rx.recv()).await {
            Ok(Some((i, Ok(id)))) => rooms[i / size][i % size] = Some(id),
            Ok(Some((_, Err(err)))) => {
                failed += 1;
                first_error.get_or_insert(err);
            }
            Ok(None) | Err(_) => break,
        }
    }
    let joined = rooms.iter().flatten().filter(|p| p.is_some()).count();
    eprintln!(
        "  relay: {joined} of {total} joined in {:.1} s",
        join_started.elapsed().as_secs_f64()
    );

    // The schedule, fixed before anyone sends.
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
    let windows: Vec<(u64, u64, u64)> = steps
        .iter()
        .map(|s| (s.start_ns, s.end_ns, s.end_ns + secs_ns(args.drain_secs)))
        .collect();
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

/// One peer of the relay workload.
struct PeerTask {
    target: Arc<Target>,
    room: String,
    room_index: usize,
    position: usize,
    index: usize,
    shared: Arc<Shared>,
    cancel: CancellationToken,
}

type JoinedTx = mpsc::UnboundedSender<(usize, Result<String, String>)>;

impl PeerTask {
    async fn run(
        self,
        gate: Arc<Semaphore>,
        joined_tx: JoinedTx,
        mut plan_rx: watch::Receiver<Option<Arc<Plan>>>,
    ) {
        let protocol = self.target.protocol.clone();
        let key = self.target.key(self.index as u64);
        let permit = gate.acquire_owned().await.expect("gate open");
        let joined = connect_and_join(protocol.as_ref(), self.target.addr, &self.room, &key).await;
        drop(permit);
        let mut ws = match joined {
            Ok(j) => {
                let _ = joined_tx.send((self.index, Ok(j.peer_id)));
                j.ws
            }
            Err(err) => {
                let _ = joined_tx.send((self.index, Err(err)));
                return;
            }
        };
        drop(joined_tx);
        let mut keepalive = keepalive_timer(protocol.as_ref());
        // Hold the place until the plan arrives.
        let plan = loop {
            if let Some(plan) = plan_rx.borrow_and_update().clone() {
                break plan;
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return client::close(ws).await,
                changed = plan_rx.changed() => if changed.is_err() { return },
                read = ws.next() => if !matches!(read, Some(Ok(_))) {
                    self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                },
            }
        };
        if self.send_and_receive(&mut ws, &plan, &mut keepalive).await {
            client::close(ws).await;
        }
    }

    /// Runs the schedule and counts what arrives; false if the connection
    /// dropped.
    async fn send_and_receive(
        &self,
        ws: &mut Ws,
        plan: &Plan,
        keepalive: &mut Option<(&'static str, tokio::time::Interval)>,
    ) -> bool {
        let protocol = self.target.protocol.as_ref();
        let mates: Vec<&str> = plan.rooms[self.room_index]
            .iter()
            .enumerate()
            .filter(|(pos, _)| *pos != self.position)
            .filter_map(|(_, id)| id.as_deref())
            .collect();
        let mut rng = Rng::new(self.index as u64 + 1);
        let phase = rng.unit();
        let mut step = 0;
        let mut interval = 0.0;
        let mut due = 0.0;
        let start_step = |step: usize, interval: &mut f64, due: &mut f64| {
            if let Some(s) = plan.steps.get(step) {
                *interval = plan.senders as f64 * 1e9 / s.rate;
                *due = s.start_ns as f64 + phase * *interval;
            }
        };
        start_step(step, &mut interval, &mut due);
        let mut payload = String::with_capacity(plan.payload_bytes + 64);
        let mut lags: Vec<u64> = Vec::with_capacity(64);
        let mut armed = due as u64;
        let sleep = tokio::time::sleep_until(at_ns(armed));
        tokio::pin!(sleep);
        // Made once: a fresh `cancelled()` per wake-up would lock the
        // token's waiter list twice per message.
        let cancelled = self.cancel.cancelled();
        tokio::pin!(cancelled);
        loop {
            while step < plan.steps.len() && due >= plan.steps[step].end_ns as f64 {
                step += 1;
                start_step(step, &mut interval, &mut due);
            }
            let sending = step < plan.steps.len() && !mates.is_empty();
            if sending && due as u64 != armed {
                armed = due as u64;
                sleep.as_mut().reset(at_ns(armed));
            }
            tokio::select! {
                biased;
                _ = &mut cancelled => return true,
                read = ws.next() => {
                    let text = match read {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(_)) => continue,
                        _ => {
                            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                            return false;
                        }
                    };
                    match protocol.classify(&text) {
                        Event::Relay => {
                            if let Some((sent, sent_step)) = read_stamp(&text) {
                                let latency = Duration::from_nanos(now_ns().saturating_sub(sent));
                                let mut steps = self.shared.steps.lock().unwrap();
                                if let Some(s) = steps.get_mut(sent_step) {
                                    s.received += 1;
                                    stats::record(&mut s.latency, latency);
                                }
                            }
                        }
                        Event::Error => {
                            self.shared.errors.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
                _ = &mut sleep, if sending => {
                    // Everything due by now goes out in one write.
                    let end = plan.steps[step].end_ns as f64;
                    let now = now_ns() as f64;
                    lags.clear();
                    while due <= now && due < end {
                        let sent = now_ns();
                        lags.push(sent.saturating_sub(due as u64));
                        payload.clear();
                        write_payload(&mut payload, sent, step, plan.payload_bytes);
                        let mut frame = String::with_capacity(payload.len() + 96);
                        protocol.write_relay(mates[rng.below(mates.len())], &payload, &mut frame);
                        if ws.feed(Message::text(frame)).await.is_err() {
                            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                            return false;
                        }
                        due += interval;
                    }
                    if ws.flush().await.is_err() {
                        self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                        return false;
                    }
                    let mut steps = self.shared.steps.lock().unwrap();
                    let s = &mut steps[step];
                    s.sent += lags.len() as u64;
                    for &lag in &lags {
                        stats::record(&mut s.lag, Duration::from_nanos(lag));
                    }
                }
                text = keepalive_tick(keepalive) => {
                    if !send_keepalive(ws, text).await {
                        self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                        return false;
                    }
                }
            }
        }
    }
}
