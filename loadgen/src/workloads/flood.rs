//! flood: one room floods while the others relay at their steady rate
//! (issue 8: "a flood from one room leaves the p99 of other rooms' relays
//! within 2x of its quiet value").
//!
//! The workload owns the server, with its rate limits as shipped. The quiet
//! rooms are the relay workload's peers (same open-loop schedule and
//! timing), run for two steps at the same rate: the quiet phase, then the
//! flood phase, during which the flooding room's peers send as fast as they
//! can, ignore `RATE_LIMITED`, and reconnect (a fresh join) whenever the
//! server kicks them. Latency is measured in the quiet rooms only.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use super::relay::{self, RelayArgs};
use super::{Rng, Target, room_name};
use crate::client::{self, JOIN_TIMEOUT, Ws, at_ns, sleep_until_ns, write_payload};
use crate::http;
use crate::protocols::Protocol;
use crate::protocols::chatsubo::{self, Chatsubo};
use crate::report::Report;
use crate::server::{ServerArgs, ServerSpec};
use crate::stats::Proc;

/// Settings of the flood workload.
#[derive(clap::Args, Debug, Clone)]
pub struct FloodArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Rooms in all, the flooding one included.
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Peers per room.
    #[arg(long, default_value_t = 10)]
    pub room_size: usize,
    /// Relays a second of the quiet rooms together, in both phases.
    #[arg(long, default_value_t = 5000)]
    pub rate: u32,
    /// Seconds of each phase.
    #[arg(long, default_value_t = 15.0)]
    pub phase_secs: f64,
    /// Seconds after each phase for the last relays to arrive.
    #[arg(long, default_value_t = 2.0)]
    pub drain_secs: f64,
    /// Bytes of each relay's data (the flood's too).
    #[arg(long, default_value_t = 400)]
    pub payload_bytes: usize,
    /// Frames a flooding peer writes before it flushes and lets the other
    /// peers of the load generator run.
    #[arg(long, default_value_t = 32)]
    pub flood_batch: usize,
    /// The largest p99 ratio (flood phase over quiet phase) that passes.
    #[arg(long, default_value_t = 2.0)]
    pub max_ratio: f64,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// Seconds between everyone joined and the quiet phase.
    #[arg(long, default_value_t = 2.0)]
    pub settle_secs: f64,
}

/// What the flooding peers did (all of it in the flood phase).
#[derive(Default)]
struct FloodTally {
    joined: AtomicUsize,
    sent: AtomicU64,
    rate_limited: AtomicU64,
    other_errors: AtomicU64,
    relays_received: AtomicU64,
    /// Closed by the server with 1008 (seen by the client).
    kicked: AtomicU64,
    /// Ended otherwise (a write failed first, or no close frame was read).
    dropped: AtomicU64,
    reconnects: AtomicU64,
    failed_joins: AtomicU64,
    first_error: Mutex<Option<String>>,
}

/// Server counters read from `/metrics` around each phase.
const SERVER_COUNTERS: [(&str, &str, &str); 7] = [
    (
        "rate_limited",
        "chatsubo_errors_total",
        "code=\"RATE_LIMITED\"",
    ),
    (
        "kicked_rate_limit",
        "chatsubo_kicks_total",
        "reason=\"rate_limit_abuse\"",
    ),
    (
        "kicked_slow_consumer",
        "chatsubo_kicks_total",
        "reason=\"slow_consumer\"",
    ),
    ("joins", "chatsubo_joins_total", ""),
    ("log_lines_dropped", "chatsubo_log_lines_dropped_total", ""),
    (
        "analytics_dropped",
        "chatsubo_analytics_events_total",
        "result=\"dropped\"",
    ),
    (
        "analytics_written",
        "chatsubo_analytics_events_total",
        "result=\"written\"",
    ),
];

pub async fn run(base: Arc<Target>, args: FloodArgs) -> Report {
    let spec = match ServerSpec::new(&args.server, "flood", &[]) {
        Ok(spec) => spec,
        Err(err) => {
            let mut report = Report::new("flood", &base, json_args(&args));
            report.fail(err);
            return report;
        }
    };
    let mut server = match spec.start() {
        Ok(server) => server,
        Err(err) => {
            let mut report = Report::new("flood", &base, json_args(&args));
            report.fail(err);
            return report;
        }
    };
    let target = Arc::new(Target {
        label: base.label.clone(),
        protocol: base.protocol.clone(),
        addr: spec.addr,
        server: Some(Proc::Pid(server.pid)),
        run_id: base.run_id.clone(),
    });
    let mut report = Report::new("flood", &target, json_args(&args));
    report.set("server_command", json!(spec.command_line()));
    report.set(
        "server_work_dir",
        json!(spec.work_dir.display().to_string()),
    );
    if base.protocol.name() != "chatsubo" {
        report.fail("flood needs Chatsubo's rate limits (--protocol chatsubo)".into());
        return report;
    }
    if args.rooms < 2 {
        report.fail("--rooms must be at least 2 (one floods, the others are measured)".into());
        return report;
    }
    if let Err(err) = server.wait_ready(Duration::from_secs(30)).await {
        report.fail(err);
        return report;
    }

    // The flooding room first: joined and silent until its phase.
    let tally = Arc::new(FloodTally::default());
    let (window_tx, window_rx) = watch::channel::<Option<(u64, u64)>>(None);
    let cancel = CancellationToken::new();
    let mut flooders = JoinSet::new();
    let size = args.room_size.max(1);
    for i in 0..size {
        let peer = Flooder {
            target: target.clone(),
            room: room_name("flood", 0),
            index: i,
            tally: tally.clone(),
            batch: args.flood_batch.max(1),
            payload_bytes: args.payload_bytes,
        };
        let (window_rx, cancel) = (window_rx.clone(), cancel.clone());
        flooders.spawn(async move { peer.run(window_rx, cancel).await });
    }
    let joined_by = tokio::time::Instant::now() + JOIN_TIMEOUT;
    while tally.joined.load(Ordering::Relaxed) < size && tokio::time::Instant::now() < joined_by {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if tally.joined.load(Ordering::Relaxed) < size {
        report.fail(format!(
            "the flooding room did not fill: {:?}",
            tally.first_error.lock().unwrap()
        ));
        return report;
    }

    let quiet = RelayArgs {
        rooms: args.rooms - 1,
        room_size: size,
        rates: vec![args.rate, args.rate],
        step_secs: args.phase_secs,
        drain_secs: args.drain_secs,
        payload_bytes: args.payload_bytes,
        concurrency: args.concurrency,
        settle_secs: args.settle_secs,
    };
    let running = relay::start(target.clone(), quiet, "quiet").await;
    let _ = window_tx.send(Some(running.window(1)));
    // Each phase's counters from its start to the middle of its drain (the
    // flood starts as the quiet phase's drain ends).
    let half_drain_ns = (args.drain_secs * 0.5e9) as u64;
    let scrapes = async {
        let mut out = Vec::new();
        for phase in 0..2 {
            let (from, to) = running.window(phase);
            sleep_until_ns(from).await;
            let before = server_counters(spec.addr).await;
            sleep_until_ns(to + half_drain_ns).await;
            out.push((before, server_counters(spec.addr).await));
        }
        out
    };
    let (mut rows, scrapes) = tokio::join!(running.measure(), scrapes);
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while flooders.join_next().await.is_some() {}
    })
    .await;
    flooders.abort_all();
    running.finish(&mut report).await;
    let stop = server.terminate(Duration::from_secs(20)).await;
    let log = server.log();

    let flood = json!({
        "sent": tally.sent.load(Ordering::Relaxed),
        "rate_limited": tally.rate_limited.load(Ordering::Relaxed),
        "other_errors": tally.other_errors.load(Ordering::Relaxed),
        "relays_received": tally.relays_received.load(Ordering::Relaxed),
        "kicked": tally.kicked.load(Ordering::Relaxed),
        "dropped": tally.dropped.load(Ordering::Relaxed),
        "reconnects": tally.reconnects.load(Ordering::Relaxed),
        "failed_joins": tally.failed_joins.load(Ordering::Relaxed),
        "first_error": tally.first_error.lock().unwrap().clone(),
    });
    let idle_flood = json!({"sent": 0, "rate_limited": 0, "kicked": 0});
    for (i, row) in rows.iter_mut().enumerate() {
        let phase = if i == 0 { "quiet" } else { "flood" };
        row["phase"] = json!(phase);
        row["flood"] = if i == 0 {
            idle_flood.clone()
        } else {
            flood.clone()
        };
        if let Some((before, after)) = scrapes.get(i) {
            row["server_counters"] = counter_deltas(before, after);
        }
    }
    let p = |i: usize, q: &str| rows.get(i).and_then(|r| r["latency_ms"][q].as_f64());
    let ratio = |q: &str| match (p(0, q), p(1, q)) {
        (Some(quiet), Some(flood)) if quiet > 0.0 => Some(flood / quiet),
        _ => None,
    };
    let (p50, p99, p999) = (ratio("p50"), ratio("p99"), ratio("p999"));
    report.summary(
        "quiet rooms' p99 (ms), quiet phase → flood phase",
        json!(format!(
            "{} → {} (ratio {}, at most {} passes)",
            fmt(p(0, "p99")),
            fmt(p(1, "p99")),
            fmt(p99),
            args.max_ratio
        )),
    );
    report.summary(
        "p50 and p99.9 ratios",
        json!(format!("p50 {}, p99.9 {}", fmt(p50), fmt(p999))),
    );
    let server_phase = |i: usize, key: &str| {
        rows.get(i)
            .and_then(|r| r["server_counters"][key].as_f64())
            .unwrap_or(0.0)
    };
    report.summary(
        "flooding room (10 peers, flood phase)",
        json!(format!(
            "{} sent ({:.0}/s), {} RATE_LIMITED read (server: {} sent), {} other errors, {} closed with 1008 (server: {} for rate-limit abuse, {} too slow to read), {} reconnects, {} relays received",
            flood["sent"],
            flood["sent"].as_f64().unwrap_or(0.0) / args.phase_secs,
            flood["rate_limited"],
            server_phase(1, "rate_limited"),
            flood["other_errors"],
            flood["kicked"],
            server_phase(1, "kicked_rate_limit"),
            server_phase(1, "kicked_slow_consumer"),
            flood["reconnects"],
            flood["relays_received"],
        )),
    );
    report.summary(
        "server cores, quiet → flood",
        json!(format!(
            "{} → {}",
            fmt(rows.first().and_then(|r| r["server_cpu_cores"].as_f64())),
            fmt(rows.get(1).and_then(|r| r["server_cpu_cores"].as_f64()))
        )),
    );
    report.summary(
        "analytics events written (dropped), quiet → flood",
        json!(format!(
            "{} ({}) → {} ({})",
            server_phase(0, "analytics_written"),
            server_phase(0, "analytics_dropped"),
            server_phase(1, "analytics_written"),
            server_phase(1, "analytics_dropped")
        )),
    );
    report.set("p99_ratio", json!(p99));
    report.set("p50_ratio", json!(p50));
    report.set("p999_ratio", json!(p999));
    report.set("server_log", log.to_json());
    match p99 {
        Some(r) if r <= args.max_ratio => {}
        Some(r) => report.fail(format!(
            "the quiet rooms' p99 grew {r:.2}x under the flood (at most {}x passes)",
            args.max_ratio
        )),
        None => report.fail("no latency measured in one of the phases".into()),
    }
    if !matches!(&stop, Ok(s) if s.success()) {
        report.fail(format!("stopping the server: {stop:?}"));
    }
    for row in rows {
        report.push(row);
    }
    report
}

fn fmt(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{x:.2}"))
}

fn json_args(args: &FloodArgs) -> Value {
    json!({
        "rooms": args.rooms,
        "room_size": args.room_size,
        "rate": args.rate,
        "phase_secs": args.phase_secs,
        "drain_secs": args.drain_secs,
        "payload_bytes": args.payload_bytes,
        "flood_batch": args.flood_batch,
        "max_ratio": args.max_ratio,
        "server_cpu": args.server.server_cpu,
    })
}

/// The counters of [`SERVER_COUNTERS`] now (empty if `/metrics` failed).
async fn server_counters(addr: std::net::SocketAddr) -> Vec<f64> {
    match http::get(addr, "/metrics", None, Duration::from_secs(5)).await {
        Ok(r) if r.status == 200 => SERVER_COUNTERS
            .iter()
            .map(|(_, name, labels)| metric_sum(&r.body, name, labels))
            .collect(),
        _ => Vec::new(),
    }
}

fn counter_deltas(before: &[f64], after: &[f64]) -> Value {
    let mut out = serde_json::Map::new();
    for (i, (key, _, _)) in SERVER_COUNTERS.iter().enumerate() {
        if let (Some(b), Some(a)) = (before.get(i), after.get(i)) {
            out.insert((*key).into(), json!(a - b));
        }
    }
    Value::Object(out)
}

/// The sum of the samples of metric `name` whose labels contain `labels`.
fn metric_sum(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
                && l.contains(labels)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One peer of the flooding room.
struct Flooder {
    target: Arc<Target>,
    room: String,
    index: usize,
    tally: Arc<FloodTally>,
    batch: usize,
    payload_bytes: usize,
}

/// A flooder's connection: its peer id and who else is in the room.
struct InRoom {
    ws: Ws,
    me: String,
    mates: Vec<String>,
}

/// How a flooding connection ended.
enum Ended {
    /// The phase is over (the connection is still open).
    Done,
    /// Closed by the server with 1008.
    Kicked,
    Dropped,
}

impl Flooder {
    async fn run(
        self,
        mut window_rx: watch::Receiver<Option<(u64, u64)>>,
        cancel: CancellationToken,
    ) {
        let mut conn = match self.join().await {
            Ok(conn) => conn,
            Err(err) => {
                self.tally.first_error.lock().unwrap().get_or_insert(err);
                return;
            }
        };
        self.tally.joined.fetch_add(1, Ordering::Relaxed);
        // Silent in the room until the flood phase begins.
        let (from, to) = loop {
            if let Some(window) = *window_rx.borrow_and_update() {
                break window;
            }
            tokio::select! {
                _ = cancel.cancelled() => return client::close(conn.ws).await,
                changed = window_rx.changed() => if changed.is_err() { return },
                read = conn.ws.next() => if !self.on_read(&mut conn, read) { return },
            }
        };
        let start = at_ns(from);
        while tokio::time::Instant::now() < start {
            tokio::select! {
                _ = cancel.cancelled() => return client::close(conn.ws).await,
                _ = tokio::time::sleep_until(start) => {}
                read = conn.ws.next() => if !self.on_read(&mut conn, read) { return },
            }
        }
        let end = at_ns(to);
        let mut rng = Rng::new(0xF100D + self.index as u64);
        loop {
            let ended = tokio::select! {
                _ = cancel.cancelled() => Ended::Done,
                ended = self.flood(&mut conn, end, &mut rng) => ended,
            };
            match ended {
                Ended::Done => return client::close(conn.ws).await,
                Ended::Kicked => self.tally.kicked.fetch_add(1, Ordering::Relaxed),
                Ended::Dropped => self.tally.dropped.fetch_add(1, Ordering::Relaxed),
            };
            // Back in at once, as a fresh peer.
            loop {
                if tokio::time::Instant::now() >= end || cancel.is_cancelled() {
                    return;
                }
                match self.join().await {
                    Ok(next) => {
                        conn = next;
                        self.tally.reconnects.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Err(err) => {
                        self.tally.failed_joins.fetch_add(1, Ordering::Relaxed);
                        self.tally.first_error.lock().unwrap().get_or_insert(err);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }
    }

    /// Connects and joins the flooding room.
    async fn join(&self) -> Result<InRoom, String> {
        let addr = self.target.addr;
        tokio::time::timeout(JOIN_TIMEOUT, async {
            let mut ws = client::open(addr, &format!("ws://{addr}/ws")).await?;
            chatsubo::parse_welcome(&client::next_text(&mut ws).await?)?;
            ws.send(Message::text(chatsubo::join_resuming(&self.room, None)))
                .await
                .map_err(|e| format!("send join: {e}"))?;
            loop {
                let text = client::next_text(&mut ws).await?;
                if let Some(joined) = chatsubo::parse_joined(&text) {
                    return Ok(InRoom {
                        ws,
                        me: joined.peer_id,
                        mates: joined.peers,
                    });
                }
                if chatsubo::error_code(&text).is_some() {
                    return Err(format!("join refused: {text}"));
                }
            }
        })
        .await
        .map_err(|_| "timed out joining".to_owned())?
    }

    /// Sends batch after batch until `end`, reading whatever arrives in
    /// between.
    async fn flood(&self, conn: &mut InRoom, end: tokio::time::Instant, rng: &mut Rng) -> Ended {
        let mut payload = String::with_capacity(self.payload_bytes + 64);
        let mut frame = String::with_capacity(self.payload_bytes + 160);
        loop {
            // Everything that already arrived, without waiting for more.
            loop {
                tokio::select! {
                    biased;
                    read = conn.ws.next() => match read {
                        Some(Ok(Message::Close(close))) => {
                            let kicked = close.is_some_and(|c| c.code == CloseCode::Policy);
                            return if kicked { Ended::Kicked } else { Ended::Dropped };
                        }
                        read => if !self.on_read(conn, read) { return Ended::Dropped },
                    },
                    _ = std::future::ready(()) => break,
                }
            }
            if tokio::time::Instant::now() >= end {
                return Ended::Done;
            }
            for _ in 0..self.batch {
                let to = match conn.mates.len() {
                    0 => conn.me.as_str(),
                    n => conn.mates[rng.below(n)].as_str(),
                };
                payload.clear();
                write_payload(&mut payload, 0, 0, self.payload_bytes);
                frame.clear();
                Chatsubo.write_relay(to, &payload, &mut frame);
                if conn.ws.feed(Message::text(frame.as_str())).await.is_err() {
                    return self.after_failed_write(conn).await;
                }
            }
            if conn.ws.flush().await.is_err() {
                return self.after_failed_write(conn).await;
            }
            self.tally
                .sent
                .fetch_add(self.batch as u64, Ordering::Relaxed);
            tokio::task::yield_now().await;
        }
    }

    /// A write failed: the server has closed. Its close frame may still be
    /// readable, to tell a kick from another end.
    async fn after_failed_write(&self, conn: &mut InRoom) -> Ended {
        let read = tokio::time::timeout(Duration::from_millis(200), async {
            loop {
                match conn.ws.next().await {
                    Some(Ok(Message::Close(close))) => {
                        return close.is_some_and(|c| c.code == CloseCode::Policy);
                    }
                    Some(Ok(_)) => continue,
                    _ => return false,
                }
            }
        })
        .await;
        if read == Ok(true) {
            Ended::Kicked
        } else {
            Ended::Dropped
        }
    }

    /// Counts one read and keeps the room's members; false when the
    /// connection ended.
    fn on_read(
        &self,
        conn: &mut InRoom,
        read: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> bool {
        let text = match read {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return false,
            Some(Ok(_)) => return true,
        };
        match Chatsubo.classify(&text) {
            crate::protocols::Event::Relay => {
                self.tally.relays_received.fetch_add(1, Ordering::Relaxed);
            }
            crate::protocols::Event::PeerJoined => {
                if let Some(id) = chatsubo::member_of(&text) {
                    conn.mates.push(id.to_owned());
                }
            }
            crate::protocols::Event::PeerLeft => {
                if let Some(id) = chatsubo::member_of(&text) {
                    conn.mates.retain(|m| m != id);
                }
            }
            crate::protocols::Event::Error => {
                if chatsubo::error_code(&text) == Some("RATE_LIMITED") {
                    self.tally.rate_limited.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.tally.other_errors.fetch_add(1, Ordering::Relaxed);
                    self.tally
                        .first_error
                        .lock()
                        .unwrap()
                        .get_or_insert_with(|| text.to_string());
                }
            }
            _ => {}
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_pick_the_name_and_labels() {
        let text = "\
# HELP chatsubo_kicks_total kicks
chatsubo_kicks_total{reason=\"rate_limit_abuse\"} 12
chatsubo_kicks_total{reason=\"slow_consumer\"} 1
chatsubo_kicks_total_other 99
chatsubo_errors_total{code=\"RATE_LIMITED\",kind=\"client\"} 600
chatsubo_joins_total 40
";
        assert_eq!(
            metric_sum(text, "chatsubo_kicks_total", "reason=\"rate_limit_abuse\""),
            12.0
        );
        assert_eq!(metric_sum(text, "chatsubo_kicks_total", ""), 13.0);
        assert_eq!(
            metric_sum(text, "chatsubo_errors_total", "code=\"RATE_LIMITED\""),
            600.0
        );
        assert_eq!(metric_sum(text, "chatsubo_joins_total", ""), 40.0);
        assert_eq!(
            counter_deltas(&[1.0, 2.0], &[3.0, 2.0]),
            json!({"rate_limited": 2.0, "kicked_rate_limit": 0.0})
        );
    }
}
