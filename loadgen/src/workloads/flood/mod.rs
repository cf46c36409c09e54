//! flood: one room floods while the others relay at their steady rate; the
//! run passes when the other rooms' relay p99 under the flood stays within
//! `--max-ratio` of its quiet value.
//!
//! The workload owns the server, with its rate limits as shipped. The quiet
//! rooms are the relay workload's peers (same open-loop schedule and
//! timing), run for two steps at the same rate: the quiet phase, then the
//! flood phase, during which the flooding room (`flooder`) sends as fast as
//! it can. Latency is measured in the quiet rooms only; the server's own
//! counters around each phase come from its `/metrics` (`counters`).

mod counters;
mod flooder;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use self::counters::{counter_deltas, scrape_phases};
use self::flooder::FloodingRoom;
use super::Target;
use super::relay::{self, RelayArgs};
use crate::report::Report;
use crate::server::{Server, ServerArgs, ServerSpec};
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

pub async fn run(base: Arc<Target>, args: FloodArgs) -> Report {
    let (spec, mut server, target, mut report) = match start(&base, &args).await {
        Ok(started) => started,
        Err(report) => return report,
    };

    // The flooding room first: joined and silent until its phase.
    let size = args.room_size.max(1);
    let room = FloodingRoom::spawn(&target, size, args.flood_batch.max(1), args.payload_bytes);
    if let Err(why) = room.fill().await {
        report.fail(why);
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
    room.open(running.window(1));
    let scrapes = scrape_phases(&running, spec.addr, args.drain_secs);
    let (mut rows, scrapes) = tokio::join!(running.measure(), scrapes);
    let tally = room.stop().await;
    running.finish(&mut report).await;
    let stop = server.terminate(Duration::from_secs(20)).await;
    let log = server.log();

    let flood = tally.to_json();
    label_rows(&mut rows, &flood, &scrapes);
    let p99 = summarise(&mut report, &rows, &flood, &args);
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

/// Starts the server and waits until it is ready; returns its command, the
/// process, the target the quiet rooms load and the report. Or, when the
/// run cannot go on, the report that says why.
async fn start(
    base: &Target,
    args: &FloodArgs,
) -> Result<(ServerSpec, Server, Arc<Target>, Report), Report> {
    let failed = |err: String| {
        let mut report = Report::new("flood", base, json_args(args));
        report.fail(err);
        report
    };
    let spec = ServerSpec::new(&args.server, "flood", &[]).map_err(failed)?;
    let mut server = spec.start().map_err(failed)?;
    let target = Arc::new(base.started_at(spec.addr, Some(Proc::Pid(server.pid))));
    let mut report = Report::new("flood", &target, json_args(args));
    report.set_server(&spec);
    if base.protocol.name() != "chatsubo" {
        report.fail("flood needs Chatsubo's rate limits (--protocol chatsubo)".into());
        return Err(report);
    }
    if args.rooms < 2 {
        report.fail("--rooms must be at least 2 (one floods, the others are measured)".into());
        return Err(report);
    }
    if let Err(err) = server.wait_ready(Duration::from_secs(30)).await {
        report.fail(err);
        return Err(report);
    }
    Ok((spec, server, target, report))
}

/// Names each row's phase, and adds what the flooding room did in it and
/// the server's counters.
fn label_rows(rows: &mut [Value], flood: &Value, scrapes: &[(Vec<f64>, Vec<f64>)]) {
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
}

/// The lines under the table and the latency ratios; returns the p99 ratio
/// (flood phase over quiet phase), if both phases measured one.
fn summarise(report: &mut Report, rows: &[Value], flood: &Value, args: &FloodArgs) -> Option<f64> {
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
    p99
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
