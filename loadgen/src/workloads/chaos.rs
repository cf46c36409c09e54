//! chaos: crash cycles under load (issue 8). The workload owns the server:
//! it puts `clients` peers in rooms, has them relay at a steady rate, and
//! each cycle kills the server with SIGKILL, starts it again on the same
//! data directory and port, and has every client reconnect and resume with
//! its latest resume token (docs/protocol.md, "Resuming").
//!
//! Each cycle it measures the time from the new start to `/health` 200 (the
//! store open and recovered), the time until every client is back, how many
//! resumed and how many got a fresh join, and any `peer-joined`,
//! `peer-left` or `error` a client saw (a restart inside the grace must be
//! invisible). At the end it closes every client, reads `/api/sessions`
//! and checks it against every `welcome` the clients got: a session the
//! server created (the time in its id) more than the flush window before
//! the kill that followed must be in the store, and every session must have
//! ended (docs/analytics.md, "The flush window" and "Crash recovery").
//! Short sessions besides the clients (`--churn-rate`) make sure some are
//! created in the last moments before each kill. Then it stops the server
//! with SIGTERM and starts it once more: that start must find nothing to
//! recover, and no client's place to restore.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::{Rng, Target, room_name};
use crate::client::{self, JOIN_TIMEOUT, Ws, now_ns, wall_ms, write_payload};
use crate::http;
use crate::protocols::chatsubo::{self, Chatsubo, JoinedFrame};
use crate::protocols::{Event, Protocol};
use crate::report::Report;
use crate::server::{Server, ServerArgs, ServerSpec};
use crate::stats;

/// Settings of the chaos workload.
#[derive(clap::Args, Debug, Clone)]
pub struct ChaosArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// kill -9 cycles.
    #[arg(long, default_value_t = 20)]
    pub cycles: usize,
    /// Clients (peers), in rooms of `room_size`.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Peers per room.
    #[arg(long, default_value_t = 10)]
    pub room_size: usize,
    /// Relays a second, all clients together, each to a random room mate.
    #[arg(long, default_value_t = 2000)]
    pub rate: u32,
    /// Seconds of load after everyone is back (and before the first kill),
    /// to which up to `kill_jitter_secs` is added at random. Longer than
    /// the flush window, so that every resume is on disk when the kill comes.
    #[arg(long, default_value_t = 3.0)]
    pub load_secs: f64,
    /// Most seconds added at random to each load phase (the kill lands
    /// anywhere in the server's flush and alive-marker cycles).
    #[arg(long, default_value_t = 1.0)]
    pub kill_jitter_secs: f64,
    /// The server's --resume-grace-secs.
    #[arg(long, default_value_t = 30.0)]
    pub resume_grace_secs: f64,
    /// The server's --flush-interval-ms: what a kill -9 may lose.
    #[arg(long, default_value_t = 1000)]
    pub flush_interval_ms: u64,
    /// Seconds every client has to be back after a start (less than the grace).
    #[arg(long, default_value_t = 20.0)]
    pub resume_timeout_secs: f64,
    /// Milliseconds between a client's connection attempts while the server
    /// is away, plus up to as much again at random.
    #[arg(long, default_value_t = 50)]
    pub retry_ms: u64,
    /// Bytes of each relay's data.
    #[arg(long, default_value_t = 400)]
    pub payload_bytes: usize,
    /// Connections being opened at once for the first joins.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// Short sessions a second besides the clients (connect, join, close,
    /// in rooms of their own), so that sessions are also welcomed in the
    /// last moments before each kill and the flush window is checked at
    /// its edge; 0: none.
    #[arg(long, default_value_t = 100)]
    pub churn_rate: u32,
}

/// Tries to start the server before giving up on a cycle.
const START_ATTEMPTS: usize = 3;
/// Time a start has to answer `/health` with 200.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a SIGTERM has to end the server.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// The contract: a crashed session's `endedAt` is at most this long before the crash.
const CRASH_END_WITHIN_MS: i64 = 5000;
/// Tasks opening the short sessions of `--churn-rate`.
const CHURNERS: usize = 10;

/// What the clients count, per cycle (0: before the first kill; cycle k
/// runs from the k-th restart to the next kill).
#[derive(Clone, Debug, Default)]
struct CycleCounts {
    sent: u64,
    received: u64,
    errors: u64,
    peer_joined: u64,
    peer_left: u64,
    /// Connections that dropped without a kill.
    unexpected_drops: u64,
    /// Attempts that reached the server but did not end in the room.
    failed_joins: u64,
    /// The first frame that should not have come.
    sample: Option<String>,
}

struct Shared {
    /// Kills begun: a connection that joined in an earlier cycle than this
    /// was dropped by a kill.
    cycle: AtomicUsize,
    counts: Mutex<Vec<CycleCounts>>,
    /// Membership notifications before everyone was in (rooms forming).
    formation: AtomicUsize,
    /// Everyone is in: from now on a `peer-joined` or `peer-left` is wrong.
    formed: AtomicBool,
}

impl Shared {
    fn count(&self, cycle: usize, f: impl FnOnce(&mut CycleCounts)) {
        let mut counts = self.counts.lock().unwrap();
        let last = counts.len() - 1;
        f(&mut counts[cycle.min(last)]);
    }
}

/// A client is in its room (again).
struct Back {
    client: usize,
    cycle: usize,
    at: Instant,
    joined: JoinedFrame,
    /// When the token it came back with was bound (unix ms); `None` on its
    /// first join.
    token_bound_ms: Option<u64>,
}

/// A session a client was welcomed into.
#[derive(Clone, Debug)]
struct SeenSession {
    id: String,
    /// When the server created it (unix ms): the time in its ULID. A
    /// welcome the server sent just before a kill may be read after it.
    created_ms: u64,
    /// The peer id of the welcome, or the one the join gave.
    peer_id: String,
    /// `Some(resumed)` once it was in the room.
    joined: Option<bool>,
    /// When the client had closed it (unix ms); `None`: a kill ended it.
    closed_ms: Option<u64>,
}

/// The peer ids of every room, known once everyone is in.
type Plan = Option<Arc<Vec<Vec<String>>>>;

pub async fn run(base: Arc<Target>, args: ChaosArgs) -> Report {
    let size = args.room_size.max(1);
    let n = args.clients;
    let api_token = format!("chaos-{:016x}", Rng::new(wall_ms()).next_u64());
    let flags: Vec<String> = [
        "--resume-grace-secs",
        &args.resume_grace_secs.to_string(),
        "--flush-interval-ms",
        &args.flush_interval_ms.to_string(),
        "--api-token",
        &api_token,
    ]
    .map(String::from)
    .to_vec();
    let spec = match ServerSpec::new(&args.server, "chaos", &flags) {
        Ok(spec) => spec,
        Err(err) => {
            let mut report = Report::new("chaos", &base, json_args(&args));
            report.fail(err);
            return report;
        }
    };
    let target = Target {
        label: base.label.clone(),
        protocol: base.protocol.clone(),
        addr: spec.addr,
        server: None,
        run_id: base.run_id.clone(),
    };
    let mut report = Report::new("chaos", &target, json_args(&args));
    report.set("server_command", json!(spec.command_line()));
    report.set(
        "server_work_dir",
        json!(spec.work_dir.display().to_string()),
    );
    if base.protocol.name() != "chatsubo" {
        report.fail("chaos speaks Chatsubo's resume only (--protocol chatsubo)".into());
        return report;
    }
    if args.resume_timeout_secs >= args.resume_grace_secs {
        report.fail("--resume-timeout-secs must be less than --resume-grace-secs".into());
        return report;
    }

    let mut start_errors = Vec::new();
    let Some((mut server, first_ready)) = start_server(&spec, &mut start_errors).await else {
        report.fail(format!("the server did not start: {start_errors:?}"));
        return report;
    };
    eprintln!(
        "  chaos: server on {} ready in {} ms",
        spec.addr,
        first_ready.as_millis()
    );

    let shared = Arc::new(Shared {
        cycle: AtomicUsize::new(0),
        counts: Mutex::new(vec![CycleCounts::default(); args.cycles + 1]),
        formation: AtomicUsize::new(0),
        formed: AtomicBool::new(false),
    });
    let (back_tx, mut back_rx) = mpsc::unbounded_channel();
    let (plan_tx, plan_rx) = watch::channel::<Plan>(None);
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let cancel = CancellationToken::new();
    let interval = Duration::from_secs_f64(n as f64 / f64::from(args.rate.max(1)));
    let mut clients = JoinSet::new();
    for i in 0..n {
        let task = ClientTask {
            index: i,
            room: room_name("chaos", i / size),
            room_index: i / size,
            addr: spec.addr,
            shared: shared.clone(),
            cancel: cancel.clone(),
            retry: Duration::from_millis(args.retry_ms),
            interval,
            payload_bytes: args.payload_bytes,
        };
        let (gate, back_tx, plan_rx) = (gate.clone(), back_tx.clone(), plan_rx.clone());
        clients.spawn(async move { (i, task.run(gate, back_tx, plan_rx).await) });
    }
    drop(back_tx);

    // Everyone in, everyone told of everyone, then the plan.
    let mut peer_ids = vec![String::new(); n];
    let formed_by = Instant::now() + Duration::from_secs(120);
    let mut first_in = 0;
    while first_in < n {
        match tokio::time::timeout_at(formed_by.into(), back_rx.recv()).await {
            Ok(Some(back)) => {
                peer_ids[back.client] = back.joined.peer_id;
                first_in += 1;
            }
            _ => break,
        }
    }
    let expected = (n / size) * size * (size - 1) + (n % size) * (n % size).saturating_sub(1);
    while shared.formation.load(Ordering::Relaxed) < expected && Instant::now() < formed_by {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if first_in < n || shared.formation.load(Ordering::Relaxed) < expected {
        report.fail(format!(
            "rooms did not form: {first_in} of {n} joined, {} of {expected} membership notifications",
            shared.formation.load(Ordering::Relaxed)
        ));
        return report;
    }
    let plan: Vec<Vec<String>> = peer_ids.chunks(size).map(<[String]>::to_vec).collect();
    shared.formed.store(true, Ordering::Relaxed);
    let _ = plan_tx.send(Some(Arc::new(plan)));
    eprintln!("  chaos: {n} clients in {} rooms", n.div_ceil(size));
    let mut churners = JoinSet::new();
    if args.churn_rate > 0 {
        let every = Duration::from_secs_f64(CHURNERS as f64 / f64::from(args.churn_rate));
        for c in 0..CHURNERS {
            let churner = Churner {
                addr: spec.addr,
                room: room_name("chaos-churn", c),
                every,
                phase: every.mul_f64(c as f64 / CHURNERS as f64),
                cancel: cancel.clone(),
            };
            churners.spawn(churner.run());
        }
    }

    // The cycles.
    let mut rng = Rng::new(0xC4A05);
    let mut kills: Vec<u64> = Vec::new();
    // When each restarted server was ready (unix ms): its restored places'
    // grace ends at most a grace after it.
    let mut readies: Vec<u64> = Vec::new();
    let mut cycles: Vec<Value> = Vec::new();
    let mut all_reconnects = stats::latency_histogram();
    let flush_ms = args.flush_interval_ms;
    for k in 1..=args.cycles {
        let load = args.load_secs + args.kill_jitter_secs * rng.unit();
        tokio::time::sleep(Duration::from_secs_f64(load)).await;
        shared.cycle.store(k, Ordering::Relaxed);
        let kill_ms = wall_ms();
        let killed = Instant::now();
        server.kill();
        kills.push(kill_ms);
        let mut start_errors = Vec::new();
        let Some((next, ready)) = start_server(&spec, &mut start_errors).await else {
            report.fail(format!(
                "cycle {k}: the server did not start after kill -9: {start_errors:?}"
            ));
            cycles.push(json!({"cycle": k, "start_failures": start_errors.len(), "start_errors": start_errors}));
            break;
        };
        server = next;
        readies.push(wall_ms());
        let deadline = server.started + Duration::from_secs_f64(args.resume_timeout_secs);
        let mut reconnect = stats::latency_histogram();
        let (mut back, mut resumed, mut fresh, mut fresh_in_window) = (0, 0, 0, 0);
        let (mut wrong_peer, mut stray) = (0, 0);
        let mut last_back = None;
        while back < n {
            let Ok(Some(b)) = tokio::time::timeout_at(deadline.into(), back_rx.recv()).await else {
                break;
            };
            if b.cycle != k {
                stray += 1;
                continue;
            }
            back += 1;
            last_back = Some(b.at);
            stats::record(&mut reconnect, b.at.duration_since(killed));
            let old = &mut peer_ids[b.client];
            if b.joined.resumed {
                resumed += 1;
                wrong_peer += usize::from(b.joined.peer_id != *old);
            } else {
                fresh += 1;
                // A token bound less than a flush window before the kill may
                // have been lost with it (docs/analytics.md, "Restarts").
                let bound = b.token_bound_ms.unwrap_or(0);
                fresh_in_window += usize::from(kill_ms.saturating_sub(bound) < flush_ms);
            }
            *old = b.joined.peer_id;
        }
        all_reconnects.add(&reconnect).ok();
        server.wait_log("listening", Duration::from_secs(2)).await;
        let log = server.log();
        let row = json!({
            "cycle": k,
            "killed_at_ms": kill_ms,
            "start_failures": start_errors.len(),
            "start_errors": start_errors,
            "ready_ms": ready.as_millis() as u64,
            "all_back_ms": last_back.filter(|_| back == n).map(|at| at.duration_since(server.started).as_millis() as u64),
            "down_ms": server.started.duration_since(killed).as_millis() as u64,
            "resumed": resumed,
            "fresh": fresh,
            "fresh_token_in_flush_window": fresh_in_window,
            "not_back": n - back,
            "wrong_peer": wrong_peer,
            "stray_reports": stray,
            "reconnect_ms": stats::summary_ms(&reconnect),
            "recovered_sessions": log.field("sessions_recovered", "closed").cloned().unwrap_or(json!(0)),
            "recovered_as": log.field("sessions_recovered", "reason").cloned(),
            "restored_peers": log.field("resume_state_restored", "peers").cloned(),
            "restored_tokens": log.field("resume_state_restored", "tokens").cloned(),
            "restored_skipped": log.field("resume_state_restored", "skipped").cloned(),
            "server_log": log.to_json(),
        });
        eprintln!(
            "  chaos: cycle {k}: ready {} ms, {back}/{n} back ({resumed} resumed, {fresh} fresh) by {} ms",
            row["ready_ms"], row["all_back_ms"]
        );
        if back < n {
            report.fail(format!(
                "cycle {k}: {} clients not back within {} s",
                n - back,
                args.resume_timeout_secs
            ));
        }
        if fresh > fresh_in_window {
            report.fail(format!(
                "cycle {k}: {} clients got a fresh join with a token bound before the flush window",
                fresh - fresh_in_window
            ));
        }
        if wrong_peer > 0 {
            report.fail(format!(
                "cycle {k}: {wrong_peer} resumes gave another peer id"
            ));
        }
        if !start_errors.is_empty() {
            report.fail(format!(
                "cycle {k}: {} failed starts: {start_errors:?}",
                start_errors.len()
            ));
        }
        cycles.push(row);
        if back < n {
            break;
        }
    }

    // The last load phase, then everyone leaves normally.
    tokio::time::sleep(Duration::from_secs_f64(args.load_secs)).await;
    cancel.cancel();
    let mut seen: Vec<Vec<SeenSession>> = vec![Vec::new(); n];
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(joined) = clients.join_next().await {
            if let Ok((i, sessions)) = joined {
                seen[i] = sessions;
            }
        }
    })
    .await;
    clients.abort_all();
    drop(plan_tx);
    let mut churned = (0, 0);
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(joined) = churners.join_next().await {
            if let Ok((sessions, closed)) = joined {
                churned.0 += sessions.len();
                churned.1 += closed;
                seen.push(sessions);
            }
        }
    })
    .await;
    churners.abort_all();

    // Per-cycle counts into the rows, and their expectations.
    let counts = shared.counts.lock().unwrap().clone();
    let mut totals = CycleCounts::default();
    for (k, c) in counts.iter().enumerate() {
        if let Some(row) = cycles.get_mut(k.wrapping_sub(1)).filter(|_| k > 0) {
            fill_counts(row, c);
        }
        totals.sent += c.sent;
        totals.received += c.received;
        totals.errors += c.errors;
        totals.peer_joined += c.peer_joined;
        totals.peer_left += c.peer_left;
        totals.unexpected_drops += c.unexpected_drops;
        totals.failed_joins += c.failed_joins;
        if totals.sample.is_none() {
            totals.sample.clone_from(&c.sample);
        }
    }
    let mut before_first_kill = json!({"cycle": 0});
    fill_counts(&mut before_first_kill, &counts[0]);
    report.set("before_first_kill", before_first_kill);
    if totals.peer_joined + totals.peer_left > 0 {
        report.fail(format!(
            "room mates saw {} peer-joined and {} peer-left after the rooms formed (first: {:?})",
            totals.peer_joined, totals.peer_left, totals.sample
        ));
    }
    if totals.errors > 0 {
        report.fail(format!(
            "{} error frames (first: {:?})",
            totals.errors, totals.sample
        ));
    }
    if totals.unexpected_drops > 0 {
        report.fail(format!(
            "{} connections dropped without a kill",
            totals.unexpected_drops
        ));
    }

    // The store, read while the server still runs: every session must have
    // ended (the killed runs' by recovery, the last ones by their close).
    let stored = match read_settled_sessions(spec.addr, &api_token).await {
        Ok(stored) => stored,
        Err(err) => {
            report.fail(format!("cannot read /api/sessions: {err}"));
            Vec::new()
        }
    };
    let check = check_sessions(&seen, &kills, flush_ms, &stored);
    check.judge(&mut report);

    // A graceful stop and one more start: nothing to recover or restore,
    // nothing lost.
    // A short session that a kill cut off, or that closed less than a
    // flush window before it (its leave lost with the kill), gets its place
    // back at the restart for a grace that nobody resumes: a graceful stop
    // inside that grace keeps the place for the next start.
    let grace_ms = (args.resume_grace_secs * 1000.0) as u64;
    let stop_ms = wall_ms();
    let in_grace = seen[n..]
        .iter()
        .flatten()
        .filter(|s| s.joined.is_some())
        .filter_map(|s| {
            let k = kills.iter().position(|&k| k >= s.created_ms)?;
            let left_in_time = s.closed_ms.is_some_and(|c| c + flush_ms <= kills[k]);
            (!left_in_time).then_some(k)
        })
        .filter(|&k| readies.get(k).is_some_and(|&r| r + grace_ms > stop_ms))
        .count();
    let graceful = graceful_restart(&mut server, &spec, &api_token, stored.len(), in_grace).await;
    drop(server);
    for why in graceful.failures {
        report.fail(why);
    }

    let starts_failed: usize = cycles
        .iter()
        .filter_map(|c| c["start_failures"].as_u64())
        .sum::<u64>() as usize;
    let resumed: u64 = cycles.iter().filter_map(|c| c["resumed"].as_u64()).sum();
    let fresh: u64 = cycles.iter().filter_map(|c| c["fresh"].as_u64()).sum();
    let ready = column(&cycles, "ready_ms");
    let back = column(&cycles, "all_back_ms");
    report.summary("kill -9 cycles", json!(kills.len()));
    report.summary("failed starts", json!(starts_failed));
    report.summary(
        "ready after start (ms, min/median/max)",
        json!(spread(&ready)),
    );
    report.summary(
        "all clients back after start (ms, min/median/max)",
        json!(spread(&back)),
    );
    report.summary(
        "reconnect from kill, every client (ms)",
        json!(format!(
            "p50 {} p99 {} max {}",
            all_reconnects.value_at_quantile(0.5) / 1000,
            all_reconnects.value_at_quantile(0.99) / 1000,
            all_reconnects.max() / 1000
        )),
    );
    report.summary(
        "resumes",
        json!(format!("{resumed} resumed: true, {fresh} fresh joins")),
    );
    report.summary(
        "seen after rooms formed",
        json!(format!(
            "{} peer-joined, {} peer-left, {} errors, {} unexpected drops",
            totals.peer_joined, totals.peer_left, totals.errors, totals.unexpected_drops
        )),
    );
    report.summary(
        "relays",
        json!(format!(
            "{} sent, {} delivered ({} failed join attempts)",
            totals.sent, totals.received, totals.failed_joins
        )),
    );
    report.summary(
        "short sessions besides the clients",
        json!(format!(
            "{} welcomed, {} joined and closed normally",
            churned.0, churned.1
        )),
    );
    check.summarise(&mut report, flush_ms);
    report.summary("graceful stop and start", json!(graceful.summary));
    report.set("sessions", check.to_json());
    report.set("graceful_restart", graceful.details);
    report.set("api_token_note", json!("random per run, not recorded"));
    for row in cycles {
        report.push(row);
    }
    report
}

/// Starts the server and waits until it is ready, up to [`START_ATTEMPTS`]
/// times; each failed try is noted in `errors`.
async fn start_server(spec: &ServerSpec, errors: &mut Vec<String>) -> Option<(Server, Duration)> {
    for _ in 0..START_ATTEMPTS {
        match spec.start() {
            Ok(mut server) => match server.wait_ready(READY_TIMEOUT).await {
                Ok(ready) => return Some((server, ready)),
                Err(err) => errors.push(err),
            },
            Err(err) => errors.push(err),
        }
    }
    None
}

fn fill_counts(row: &mut Value, c: &CycleCounts) {
    row["sent"] = json!(c.sent);
    row["received"] = json!(c.received);
    row["errors"] = json!(c.errors);
    row["peer_joined"] = json!(c.peer_joined);
    row["peer_left"] = json!(c.peer_left);
    row["unexpected_drops"] = json!(c.unexpected_drops);
    row["failed_joins"] = json!(c.failed_joins);
    row["first_unexpected_frame"] = json!(c.sample);
}

fn column(rows: &[Value], key: &str) -> Vec<u64> {
    rows.iter().filter_map(|r| r[key].as_u64()).collect()
}

/// "min / median / max" of some values.
fn spread(values: &[u64]) -> String {
    let mut v = values.to_vec();
    v.sort_unstable();
    match (v.first(), v.last()) {
        (Some(min), Some(max)) => format!("{min} / {} / {max}", v[v.len() / 2]),
        _ => "-".into(),
    }
}

fn json_args(args: &ChaosArgs) -> Value {
    json!({
        "cycles": args.cycles,
        "clients": args.clients,
        "room_size": args.room_size,
        "rate": args.rate,
        "load_secs": args.load_secs,
        "kill_jitter_secs": args.kill_jitter_secs,
        "resume_grace_secs": args.resume_grace_secs,
        "flush_interval_ms": args.flush_interval_ms,
        "resume_timeout_secs": args.resume_timeout_secs,
        "retry_ms": args.retry_ms,
        "payload_bytes": args.payload_bytes,
        "churn_rate": args.churn_rate,
        "server_cpu": args.server.server_cpu,
    })
}

/// One client: joins, relays, and whenever its connection drops comes back
/// with the token of its latest welcome that got into the room.
struct ClientTask {
    index: usize,
    room: String,
    room_index: usize,
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    retry: Duration,
    /// Between two relays of this client.
    interval: Duration,
    payload_bytes: usize,
}

/// The place a client holds: the token that takes it back, and when it
/// was bound.
struct Place {
    token: String,
    bound_ms: u64,
}

/// Why a connection attempt did not end in the room.
enum Failure {
    /// Nobody listens: the server is away.
    Refused,
    Other(String),
}

/// How a connection in the room ended.
enum Ended {
    Dropped,
    Cancelled,
}

impl ClientTask {
    async fn run(
        self,
        gate: Arc<Semaphore>,
        back_tx: mpsc::UnboundedSender<Back>,
        mut plan_rx: watch::Receiver<Plan>,
    ) -> Vec<SeenSession> {
        let mut seen = Vec::new();
        let mut place: Option<Place> = None;
        let mut rng = Rng::new(self.index as u64 + 1);
        loop {
            // Only the first joins are paced; comebacks are as a browser's.
            let permit = match place {
                None => tokio::select! {
                    _ = self.cancel.cancelled() => break,
                    permit = gate.clone().acquire_owned() => Some(permit.expect("gate open")),
                },
                Some(_) => None,
            };
            let attempt = tokio::select! {
                _ = self.cancel.cancelled() => break,
                attempt = tokio::time::timeout(
                    JOIN_TIMEOUT,
                    enter(self.addr, &self.room, place.as_ref().map(|p| p.token.as_str()), &mut seen),
                ) => {
                    attempt.unwrap_or_else(|_| Err(Failure::Other("timed out joining".into())))
                }
            };
            drop(permit);
            let (mut ws, joined, token) = match attempt {
                Ok(entered) => entered,
                Err(failure) => {
                    if let Failure::Other(err) = failure {
                        let cycle = self.shared.cycle.load(Ordering::Relaxed);
                        self.shared.count(cycle, |c| {
                            c.failed_joins += 1;
                            c.sample.get_or_insert(err);
                        });
                    }
                    let wait = self.retry.mul_f64(1.0 + rng.unit());
                    tokio::select! {
                        _ = self.cancel.cancelled() => break,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
            };
            let cycle = self.shared.cycle.load(Ordering::Relaxed);
            if place.is_none() {
                self.shared
                    .formation
                    .fetch_add(joined.peers.len(), Ordering::Relaxed);
            }
            let token_bound_ms = place.as_ref().map(|p| p.bound_ms);
            let peer_id = joined.peer_id.clone();
            place = Some(Place {
                token,
                bound_ms: wall_ms(),
            });
            let _ = back_tx.send(Back {
                client: self.index,
                cycle,
                at: Instant::now(),
                joined,
                token_bound_ms,
            });
            match self
                .in_room(&mut ws, &mut plan_rx, &mut rng, cycle, &peer_id)
                .await
            {
                Ended::Cancelled => {
                    client::close(ws).await;
                    break;
                }
                Ended::Dropped => {
                    if self.shared.cycle.load(Ordering::Relaxed) == cycle {
                        self.shared.count(cycle, |c| c.unexpected_drops += 1);
                    }
                }
            }
        }
        seen
    }

    /// Relays to random room mates and reads until the connection drops or
    /// the run ends.
    async fn in_room(
        &self,
        ws: &mut Ws,
        plan_rx: &mut watch::Receiver<Plan>,
        rng: &mut Rng,
        cycle: usize,
        me: &str,
    ) -> Ended {
        let first = tokio::time::Instant::now() + self.interval.mul_f64(rng.unit());
        let mut ticker = tokio::time::interval_at(first, self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut mates: Option<Vec<String>> = None;
        let mut payload = String::with_capacity(self.payload_bytes + 64);
        let cancelled = self.cancel.cancelled();
        tokio::pin!(cancelled);
        loop {
            if mates.is_none()
                && let Some(plan) = plan_rx.borrow_and_update().as_ref()
            {
                mates = Some(
                    plan[self.room_index]
                        .iter()
                        .filter(|id| *id != me)
                        .cloned()
                        .collect(),
                );
            }
            let sending = mates.as_ref().is_some_and(|m| !m.is_empty());
            tokio::select! {
                biased;
                _ = &mut cancelled => return Ended::Cancelled,
                read = ws.next() => match read {
                    Some(Ok(Message::Text(text))) => self.on_frame(&text, cycle),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Ended::Dropped,
                    Some(Ok(_)) => {}
                },
                changed = plan_rx.changed(), if mates.is_none() => {
                    if changed.is_err() {
                        mates = Some(Vec::new());
                    }
                }
                _ = ticker.tick(), if sending => {
                    let mates = mates.as_deref().unwrap_or_default();
                    payload.clear();
                    write_payload(&mut payload, now_ns(), cycle, self.payload_bytes);
                    let mut frame = String::with_capacity(payload.len() + 96);
                    Chatsubo.write_relay(&mates[rng.below(mates.len())], &payload, &mut frame);
                    if ws.send(Message::text(frame)).await.is_err() {
                        return Ended::Dropped;
                    }
                    self.shared.count(cycle, |c| c.sent += 1);
                }
            }
        }
    }

    fn on_frame(&self, text: &str, cycle: usize) {
        let formed = self.shared.formed.load(Ordering::Relaxed);
        match Chatsubo.classify(text) {
            Event::Relay => self.shared.count(cycle, |c| c.received += 1),
            Event::PeerJoined if !formed => {
                self.shared.formation.fetch_add(1, Ordering::Relaxed);
            }
            Event::PeerJoined => self.shared.count(cycle, |c| {
                c.peer_joined += 1;
                c.sample.get_or_insert_with(|| text.to_owned());
            }),
            Event::PeerLeft => self.shared.count(cycle, |c| {
                c.peer_left += 1;
                c.sample.get_or_insert_with(|| text.to_owned());
            }),
            Event::Error => self.shared.count(cycle, |c| {
                c.errors += 1;
                c.sample.get_or_insert_with(|| text.to_owned());
            }),
            _ => {}
        }
    }
}

/// Connects, reads the welcome (noting the session in `seen`) and joins
/// `room`, resuming with `token` when there is one. Returns the connection,
/// the `joined` frame and the welcome's token.
async fn enter(
    addr: std::net::SocketAddr,
    room: &str,
    token: Option<&str>,
    seen: &mut Vec<SeenSession>,
) -> Result<(Ws, JoinedFrame, String), Failure> {
    let url = format!("ws://{addr}/ws");
    let mut ws = client::open(addr, &url).await.map_err(|e| {
        if e.starts_with("connect:") {
            Failure::Refused
        } else {
            Failure::Other(e)
        }
    })?;
    let text = client::next_text(&mut ws).await.map_err(Failure::Other)?;
    let welcome = chatsubo::parse_welcome(&text).map_err(Failure::Other)?;
    seen.push(SeenSession {
        id: welcome.session_id.to_owned(),
        created_ms: ulid::Ulid::from_string(welcome.session_id)
            .map_or_else(|_| wall_ms(), |u| u.timestamp_ms()),
        peer_id: welcome.peer_id.to_owned(),
        joined: None,
        closed_ms: None,
    });
    let new_token = welcome.resume_token.to_owned();
    ws.send(Message::text(chatsubo::join_resuming(room, token)))
        .await
        .map_err(|e| Failure::Other(format!("send join: {e}")))?;
    loop {
        let text = client::next_text(&mut ws).await.map_err(Failure::Other)?;
        if let Some(joined) = chatsubo::parse_joined(&text) {
            if let Some(s) = seen.last_mut() {
                s.joined = Some(joined.resumed);
                s.peer_id.clone_from(&joined.peer_id);
            }
            return Ok((ws, joined, new_token));
        }
        if Chatsubo.classify(&text) == Event::Error {
            return Err(Failure::Other(format!("join refused: {text}")));
        }
    }
}

/// Short sessions again and again (connect, welcome, join, close) in a
/// room of its own, whether the server is up or not.
struct Churner {
    addr: std::net::SocketAddr,
    room: String,
    every: Duration,
    phase: Duration,
    cancel: CancellationToken,
}

impl Churner {
    /// Returns the sessions it was welcomed into, and how many it closed.
    async fn run(self) -> (Vec<SeenSession>, usize) {
        let mut seen = Vec::new();
        let mut closed = 0;
        let first = tokio::time::Instant::now() + self.phase;
        let mut tick = tokio::time::interval_at(first, self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            let attempt =
                tokio::time::timeout(JOIN_TIMEOUT, enter(self.addr, &self.room, None, &mut seen))
                    .await;
            if let Ok(Ok((ws, _, _))) = attempt {
                client::close(ws).await;
                if let Some(s) = seen.last_mut() {
                    s.closed_ms = Some(wall_ms());
                }
                closed += 1;
            }
        }
        (seen, closed)
    }
}

/// A session as `/api/sessions` lists it (times in unix ms).
#[derive(Clone, Debug, PartialEq)]
struct StoredSession {
    id: String,
    peer_id: String,
    connected_ms: u64,
    ended_ms: Option<u64>,
    close_reason: Option<String>,
    resumed_from: Option<String>,
}

impl StoredSession {
    fn from_json(v: &Value) -> Result<Self, String> {
        let text = |key: &str| v[key].as_str().map(str::to_owned);
        let time = |key: &str| -> Result<Option<u64>, String> {
            match v[key].as_str() {
                None => Ok(None),
                Some(s) => OffsetDateTime::parse(s, &Rfc3339)
                    .map(|t| Some((t.unix_timestamp_nanos() / 1_000_000) as u64))
                    .map_err(|e| format!("{key} {s:?}: {e}")),
            }
        };
        Ok(StoredSession {
            id: text("sessionId").ok_or("a session without sessionId")?,
            peer_id: text("peerId").unwrap_or_default(),
            connected_ms: time("connectedAt")?.ok_or("a session without connectedAt")?,
            ended_ms: time("endedAt")?,
            close_reason: text("closeReason"),
            resumed_from: text("resumedFrom"),
        })
    }
}

/// Every session the store lists, page by page.
async fn read_sessions(
    addr: std::net::SocketAddr,
    token: &str,
) -> Result<Vec<StoredSession>, String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/sessions?limit=1000&cursor={c}"),
            None => "/api/sessions?limit=1000".to_owned(),
        };
        let r = http::get(addr, &path, Some(token), Duration::from_secs(30)).await?;
        if r.status != 200 {
            return Err(format!("{path}: {} {}", r.status, r.body));
        }
        let page: Value = serde_json::from_str(&r.body).map_err(|e| format!("{path}: {e}"))?;
        for s in page["sessions"].as_array().ok_or("no sessions array")? {
            out.push(StoredSession::from_json(s)?);
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return Ok(out),
        }
    }
}

/// The sessions once the last closes are written: read again (up to 10 s)
/// while some are still open.
async fn read_settled_sessions(
    addr: std::net::SocketAddr,
    token: &str,
) -> Result<Vec<StoredSession>, String> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let sessions = read_sessions(addr, token).await?;
        if sessions.iter().all(|s| s.ended_ms.is_some()) || Instant::now() >= until {
            return Ok(sessions);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What the store holds against what the clients were told.
#[derive(Debug, Default, PartialEq)]
struct SessionCheck {
    /// Sessions the clients were welcomed into.
    seen: usize,
    found: usize,
    /// Missing, created less than the flush window before the next kill (allowed).
    missing_in_window: usize,
    /// Missing otherwise (a failure).
    missing_outside: usize,
    /// The largest age at its kill of a missing session (ms).
    oldest_missing_ms: Option<u64>,
    /// The first few sessions missing outside the window, described.
    missing_examples: Vec<String>,
    /// Sessions in the store.
    stored: usize,
    /// In the store, never seen by a client (a welcome lost with a kill).
    store_only: usize,
    /// In the store without `endedAt`.
    left_open: usize,
    close_reasons: BTreeMap<String, usize>,
    /// Resumes whose `resumedFrom` was checked, and those that named
    /// another session than the one the token came from.
    resume_links: usize,
    resume_links_wrong: usize,
    /// Stored `peerId` differs from the one the client held.
    peer_mismatch: usize,
    /// `server_crash` sessions, and the largest gap between a kill and
    /// their `endedAt` (ms); out of bounds: not within 0 to 5 s before it.
    crashed: usize,
    crash_end_gap_max_ms: Option<i64>,
    crash_end_out_of_bounds: usize,
}

/// Checks the store's sessions against what the clients saw; `kills` are
/// the kill times (unix ms, ascending).
fn check_sessions(
    clients: &[Vec<SeenSession>],
    kills: &[u64],
    flush_ms: u64,
    stored: &[StoredSession],
) -> SessionCheck {
    let by_id: HashMap<&str, &StoredSession> = stored.iter().map(|s| (s.id.as_str(), s)).collect();
    let kill_after = |ms: u64| kills.iter().copied().find(|&k| k >= ms);
    let mut check = SessionCheck {
        stored: stored.len(),
        ..SessionCheck::default()
    };
    let mut seen_ids = std::collections::HashSet::new();
    for sessions in clients {
        let mut previous: Option<&SeenSession> = None;
        for s in sessions {
            check.seen += 1;
            seen_ids.insert(s.id.as_str());
            match by_id.get(s.id.as_str()) {
                Some(st) => {
                    check.found += 1;
                    check.peer_mismatch += usize::from(st.peer_id != s.peer_id);
                    if s.joined == Some(true)
                        && let Some(p) = previous
                    {
                        check.resume_links += 1;
                        check.resume_links_wrong +=
                            usize::from(st.resumed_from.as_deref() != Some(p.id.as_str()));
                    }
                }
                None => {
                    match kill_after(s.created_ms) {
                        Some(kill) if kill - s.created_ms < flush_ms => {
                            check.missing_in_window += 1
                        }
                        kill => {
                            check.missing_outside += 1;
                            if check.missing_examples.len() < 5 {
                                check.missing_examples.push(format!(
                                    "{} ({}) created at {} ms, joined {:?}, next kill {:?}",
                                    s.id, s.peer_id, s.created_ms, s.joined, kill
                                ));
                            }
                        }
                    }
                    if let Some(kill) = kill_after(s.created_ms) {
                        let age = kill - s.created_ms;
                        check.oldest_missing_ms = check.oldest_missing_ms.max(Some(age));
                    }
                }
            }
            if s.joined.is_some() {
                previous = Some(s);
            }
        }
    }
    for st in stored {
        check.store_only += usize::from(!seen_ids.contains(st.id.as_str()));
        check.left_open += usize::from(st.ended_ms.is_none());
        let reason = st.close_reason.clone().unwrap_or_else(|| "(open)".into());
        *check.close_reasons.entry(reason).or_default() += 1;
        if st.close_reason.as_deref() == Some("server_crash") {
            check.crashed += 1;
            match (kill_after(st.connected_ms), st.ended_ms) {
                (Some(kill), Some(ended)) => {
                    let gap = kill as i64 - ended as i64;
                    check.crash_end_gap_max_ms = check.crash_end_gap_max_ms.max(Some(gap));
                    check.crash_end_out_of_bounds +=
                        usize::from(!(0..=CRASH_END_WITHIN_MS).contains(&gap));
                }
                _ => check.crash_end_out_of_bounds += 1,
            }
        }
    }
    check
}

impl SessionCheck {
    fn judge(&self, report: &mut Report) {
        if self.missing_outside > 0 {
            report.fail(format!(
                "{} sessions created before the flush window are not in the store: {:?}",
                self.missing_outside, self.missing_examples
            ));
        }
        if self.left_open > 0 {
            report.fail(format!("{} sessions left open", self.left_open));
        }
        if self.resume_links_wrong > 0 {
            report.fail(format!(
                "{} resumed sessions name another resumedFrom than the session their token came from",
                self.resume_links_wrong
            ));
        }
        if self.peer_mismatch > 0 {
            report.fail(format!(
                "{} sessions stored with another peerId than the client held",
                self.peer_mismatch
            ));
        }
        if self.crash_end_out_of_bounds > 0 {
            report.fail(format!(
                "{} server_crash sessions end outside the 5 s before their crash",
                self.crash_end_out_of_bounds
            ));
        }
    }

    fn summarise(&self, report: &mut Report, flush_ms: u64) {
        report.summary(
            "sessions",
            json!(format!(
                "{} welcomed, {} in the store, {} missing inside the {flush_ms} ms flush window (the oldest created {} ms before its kill), {} missing outside it, {} left open",
                self.seen,
                self.found,
                self.missing_in_window,
                self.oldest_missing_ms.map_or("-".into(), |ms| ms.to_string()),
                self.missing_outside,
                self.left_open
            )),
        );
        report.summary(
            "store",
            json!(format!(
                "{} sessions ({} never welcomed to a client); close reasons {:?}",
                self.stored, self.store_only, self.close_reasons
            )),
        );
        report.summary(
            "resume links",
            json!(format!(
                "{} checked, {} wrong; {} peerId mismatches",
                self.resume_links, self.resume_links_wrong, self.peer_mismatch
            )),
        );
        report.summary(
            "server_crash endedAt before the kill",
            json!(format!(
                "{} sessions, largest gap {} ms, {} outside 0–5 s",
                self.crashed,
                self.crash_end_gap_max_ms
                    .map_or("-".into(), |g| g.to_string()),
                self.crash_end_out_of_bounds
            )),
        );
    }

    fn to_json(&self) -> Value {
        json!({
            "seen": self.seen,
            "found": self.found,
            "missing_in_flush_window": self.missing_in_window,
            "missing_outside_flush_window": self.missing_outside,
            "oldest_missing_ms": self.oldest_missing_ms,
            "missing_examples": self.missing_examples,
            "stored": self.stored,
            "store_only": self.store_only,
            "left_open": self.left_open,
            "close_reasons": self.close_reasons,
            "resume_links": self.resume_links,
            "resume_links_wrong": self.resume_links_wrong,
            "peer_mismatch": self.peer_mismatch,
            "crashed": self.crashed,
            "crash_end_gap_max_ms": self.crash_end_gap_max_ms,
            "crash_end_out_of_bounds": self.crash_end_out_of_bounds,
        })
    }
}

struct Graceful {
    summary: String,
    details: Value,
    failures: Vec<String>,
}

/// SIGTERM, one more start, the store read again, SIGTERM again.
/// `in_grace`: places that may still be inside their grace at the stop.
async fn graceful_restart(
    server: &mut Server,
    spec: &ServerSpec,
    token: &str,
    stored_before: usize,
    in_grace: usize,
) -> Graceful {
    let mut failures = Vec::new();
    let stop = server.terminate(STOP_TIMEOUT).await;
    let first_exit = match &stop {
        Ok(status) if status.success() => "exit 0".to_owned(),
        Ok(status) => {
            failures.push(format!("SIGTERM: the server exited with {status}"));
            status.to_string()
        }
        Err(err) => {
            failures.push(format!("SIGTERM: {err}"));
            err.clone()
        }
    };
    let mut errors = Vec::new();
    let Some((mut again, ready)) = start_server(spec, &mut errors).await else {
        failures.push(format!(
            "the server did not start after a graceful stop: {errors:?}"
        ));
        return Graceful {
            summary: format!("stop: {first_exit}; start failed"),
            details: json!({"stop": first_exit, "start_errors": errors}),
            failures,
        };
    };
    again.wait_log("listening", Duration::from_secs(2)).await;
    let log = again.log();
    let recovered = log
        .field("sessions_recovered", "closed")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let restored = log
        .field("resume_state_restored", "peers")
        .and_then(Value::as_u64);
    let after = read_sessions(spec.addr, token).await;
    // Only short sessions' rooms may hold a place: every client left.
    let rooms = http::get(
        spec.addr,
        "/api/rooms?active=true",
        Some(token),
        Duration::from_secs(10),
    )
    .await
    .and_then(|r| serde_json::from_str::<Value>(&r.body).map_err(|e| e.to_string()));
    let held: Vec<(String, u64)> = match &rooms {
        Ok(v) => v["rooms"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    r["room"].as_str().unwrap_or("").to_owned(),
                    r["activePeers"].as_u64().unwrap_or(0),
                )
            })
            .filter(|(_, peers)| *peers > 0)
            .collect(),
        Err(err) => {
            failures.push(format!("/api/rooms after the restart: {err}"));
            Vec::new()
        }
    };
    let clients_held: Vec<&(String, u64)> = held
        .iter()
        .filter(|(room, _)| !room.starts_with("chaos-churn-"))
        .collect();
    if !clients_held.is_empty() {
        failures.push(format!(
            "places of clients that left were restored: {clients_held:?}"
        ));
    }
    let second = again.terminate(STOP_TIMEOUT).await;
    if recovered > 0 {
        failures.push(format!(
            "the start after a graceful stop closed {recovered} sessions left open"
        ));
    }
    if restored.is_none_or(|r| r > in_grace as u64) {
        failures.push(format!(
            "the start after everyone left restored {restored:?} peers (at most {in_grace} short sessions cut by a kill or closed less than a flush window before it were inside their grace)"
        ));
    }
    let (count, open) = match &after {
        Ok(sessions) => (
            sessions.len(),
            sessions.iter().filter(|s| s.ended_ms.is_none()).count(),
        ),
        Err(err) => {
            failures.push(format!("/api/sessions after the restart: {err}"));
            (0, 0)
        }
    };
    if after.is_ok() && count != stored_before {
        failures.push(format!(
            "{stored_before} sessions before the graceful stop, {count} after"
        ));
    }
    if !matches!(&second, Ok(s) if s.success()) {
        failures.push(format!("second SIGTERM: {second:?}"));
    }
    Graceful {
        summary: format!(
            "stop: {first_exit}; start ready in {} ms, {recovered} sessions recovered, {} peers restored (at most {in_grace} could be: short sessions cut by a kill or closed less than a flush window before it, inside their grace); {count} sessions ({open} open) after, {stored_before} before",
            ready.as_millis(),
            restored.map_or("?".into(), |r| r.to_string())
        ),
        details: json!({
            "stop": first_exit,
            "ready_ms": ready.as_millis() as u64,
            "recovered_sessions": recovered,
            "restored_peers": restored,
            "places_possibly_in_grace": in_grace,
            "rooms_with_places": held,
            "sessions_before": stored_before,
            "sessions_after": count,
            "open_after": open,
            "server_log": log.to_json(),
        }),
        failures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(id: &str, at: u64, joined: Option<bool>) -> SeenSession {
        SeenSession {
            id: id.into(),
            created_ms: at,
            peer_id: "p_1".into(),
            joined,
            closed_ms: None,
        }
    }

    fn stored(id: &str, at: u64, end: Option<(u64, &str)>, from: Option<&str>) -> StoredSession {
        StoredSession {
            id: id.into(),
            peer_id: "p_1".into(),
            connected_ms: at,
            ended_ms: end.map(|e| e.0),
            close_reason: end.map(|e| e.1.into()),
            resumed_from: from.map(Into::into),
        }
    }

    #[test]
    fn sessions_are_checked_against_kills_and_the_flush_window() {
        // Kills at 10 000 and 20 000; flush window 1 000 ms.
        let client = vec![
            seen("a", 1_000, Some(false)),
            seen("b", 10_500, Some(true)),
            // Welcomed 500 ms before the second kill: may be lost.
            seen("c", 19_500, Some(true)),
            // After the last kill: must be there.
            seen("d", 20_500, Some(true)),
            // Welcomed 2 s before no kill at all, lost: a failure.
            seen("e", 21_000, None),
        ];
        let store = vec![
            stored("a", 1_000, Some((9_000, "server_crash")), None),
            stored("b", 10_500, Some((18_500, "server_crash")), Some("a")),
            stored("d", 20_500, Some((30_000, "left")), Some("a")),
            stored("x", 19_990, None, None),
        ];
        let check = check_sessions(&[client], &[10_000, 20_000], 1_000, &store);
        assert_eq!(check.seen, 5);
        assert_eq!(check.found, 3);
        assert_eq!(check.missing_in_window, 1);
        assert_eq!(check.missing_outside, 1);
        assert_eq!(check.oldest_missing_ms, Some(500));
        assert_eq!(check.store_only, 1);
        assert_eq!(check.left_open, 1);
        // b resumed from a: right; d resumed from c (lost), says a: wrong.
        assert_eq!((check.resume_links, check.resume_links_wrong), (2, 1));
        assert_eq!(check.crashed, 2);
        assert_eq!(check.crash_end_gap_max_ms, Some(1_500));
        assert_eq!(check.crash_end_out_of_bounds, 0);
        assert_eq!(check.close_reasons["(open)"], 1);
    }

    #[test]
    fn a_crash_end_after_the_kill_or_long_before_it_is_out_of_bounds() {
        let store = vec![
            stored("a", 1_000, Some((10_001, "server_crash")), None),
            stored("b", 1_000, Some((4_000, "server_crash")), None),
            stored("c", 1_000, Some((6_000, "server_crash")), None),
        ];
        let check = check_sessions(&[], &[10_000], 1_000, &store);
        assert_eq!(check.crash_end_out_of_bounds, 2);
    }

    #[test]
    fn stored_sessions_read_from_the_api() {
        let v = json!({"sessionId":"01J","peerId":"p_1","room":"r",
            "connectedAt":"2026-11-28T05:00:00.123Z","endedAt":null,
            "closeReason":null,"resumedFrom":"01H"});
        let s = StoredSession::from_json(&v).unwrap();
        assert_eq!(s.connected_ms, 1_795_842_000_123);
        assert_eq!(s.ended_ms, None);
        assert_eq!(s.resumed_from.as_deref(), Some("01H"));
        assert!(StoredSession::from_json(&json!({"sessionId":"x"})).is_err());
    }
}
