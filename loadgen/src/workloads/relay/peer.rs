//! One peer of the relay workload, and what it shares with the run: the
//! plan it follows (who is in which room, the rate steps) and the counts it
//! adds to. It joins, holds its place until the plan comes, then sends on
//! its own open-loop schedule and counts every relay it receives.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::client::{self, Ws, at_ns, connect_and_join, now_ns, read_stamp, write_payload};
use crate::protocols::{Event, Protocol};
use crate::stats;
use crate::workloads::{Rng, Target, keepalive_tick, keepalive_timer, send_keepalive};

/// One rate step, in nanoseconds since the run's epoch.
pub struct Step {
    pub rate: f64,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// Everything a peer needs to send: who is in which room, and the steps.
pub struct Plan {
    /// Peer ids by room; `None` for a connection that failed to join.
    pub rooms: Vec<Vec<Option<String>>>,
    pub steps: Vec<Step>,
    /// Peers that send (joined ones).
    pub senders: usize,
    pub payload_bytes: usize,
}

pub struct StepStats {
    pub sent: u64,
    pub received: u64,
    pub latency: Histogram<u64>,
    pub lag: Histogram<u64>,
}

/// What the peers count, for the run.
pub struct Shared {
    pub steps: Mutex<Vec<StepStats>>,
    pub errors: AtomicU64,
    pub dropped: AtomicUsize,
}

impl Shared {
    /// Empty counts for `steps` steps.
    pub fn new(steps: usize) -> Self {
        Shared {
            steps: Mutex::new(
                (0..steps)
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
        }
    }
}

/// Each peer's index and its peer id, or why it did not join.
pub type JoinedTx = mpsc::UnboundedSender<(usize, Result<String, String>)>;

/// One peer of the relay workload.
pub struct PeerTask {
    pub target: Arc<Target>,
    pub room: String,
    pub room_index: usize,
    pub position: usize,
    pub index: usize,
    pub shared: Arc<Shared>,
    pub cancel: CancellationToken,
}

/// A peer's open-loop schedule: evenly spaced sends from a random phase in
/// each step, `interval` apart, the next one due at `due` (ns since the
/// epoch).
struct Schedule<'a> {
    plan: &'a Plan,
    phase: f64,
    step: usize,
    interval: f64,
    due: f64,
}

impl<'a> Schedule<'a> {
    fn new(plan: &'a Plan, phase: f64) -> Self {
        let mut schedule = Schedule {
            plan,
            phase,
            step: 0,
            interval: 0.0,
            due: 0.0,
        };
        schedule.start_step();
        schedule
    }

    fn start_step(&mut self) {
        if let Some(s) = self.plan.steps.get(self.step) {
            self.interval = self.plan.senders as f64 * 1e9 / s.rate;
            self.due = s.start_ns as f64 + self.phase * self.interval;
        }
    }

    /// Moves on to the step the next send falls in; false after the last.
    fn in_a_step(&mut self) -> bool {
        while self.step < self.plan.steps.len()
            && self.due >= self.plan.steps[self.step].end_ns as f64
        {
            self.step += 1;
            self.start_step();
        }
        self.step < self.plan.steps.len()
    }
}

impl PeerTask {
    pub async fn run(
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
        let mut schedule = Schedule::new(plan, rng.unit());
        let mut payload = String::with_capacity(plan.payload_bytes + 64);
        let mut lags: Vec<u64> = Vec::with_capacity(64);
        let mut armed = schedule.due as u64;
        let sleep = tokio::time::sleep_until(at_ns(armed));
        tokio::pin!(sleep);
        // Made once: a fresh `cancelled()` per wake-up would lock the
        // token's waiter list twice per message.
        let cancelled = self.cancel.cancelled();
        tokio::pin!(cancelled);
        loop {
            let sending = schedule.in_a_step() && !mates.is_empty();
            if sending && schedule.due as u64 != armed {
                armed = schedule.due as u64;
                sleep.as_mut().reset(at_ns(armed));
            }
            tokio::select! {
                biased;
                _ = &mut cancelled => return true,
                read = ws.next() => match read {
                    Some(Ok(Message::Text(text))) => self.on_text(protocol, &text),
                    Some(Ok(_)) => continue,
                    _ => {
                        self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                        return false;
                    }
                },
                _ = &mut sleep, if sending => {
                    // Everything due by now goes out in one write.
                    let end = plan.steps[schedule.step].end_ns as f64;
                    let now = now_ns() as f64;
                    lags.clear();
                    while schedule.due <= now && schedule.due < end {
                        let sent = now_ns();
                        lags.push(sent.saturating_sub(schedule.due as u64));
                        payload.clear();
                        write_payload(&mut payload, sent, schedule.step, plan.payload_bytes);
                        let mut frame = String::with_capacity(payload.len() + 96);
                        protocol.write_relay(mates[rng.below(mates.len())], &payload, &mut frame);
                        if ws.feed(Message::text(frame)).await.is_err() {
                            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                            return false;
                        }
                        schedule.due += schedule.interval;
                    }
                    if ws.flush().await.is_err() {
                        self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                        return false;
                    }
                    self.count_sent(schedule.step, &lags);
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

    /// Counts a relay that arrived (with its latency) or an error frame.
    fn on_text(&self, protocol: &dyn Protocol, text: &str) {
        match protocol.classify(text) {
            Event::Relay => {
                if let Some((sent, sent_step)) = read_stamp(text) {
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

    /// Counts one batch of sends in `step`, with how late each went out.
    fn count_sent(&self, step: usize, lags: &[u64]) {
        let mut steps = self.shared.steps.lock().unwrap();
        let s = &mut steps[step];
        s.sent += lags.len() as u64;
        for &lag in lags {
            stats::record(&mut s.lag, Duration::from_nanos(lag));
        }
    }
}
