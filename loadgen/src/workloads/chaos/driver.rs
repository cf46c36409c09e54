//! The chaos run from start to report: the server started, the rooms
//! formed, the cycles, everyone closed, the store checked, a graceful stop
//! and start, and the summary.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::args::{ChaosArgs, json_args};
use super::crowd::Crowd;
use super::cycle::Cycles;
use super::graceful::{graceful_restart, places_in_grace};
use super::start_server;
use super::store::{check_sessions, read_settled_sessions};
use super::summary::{count_cycles, summarise};
use crate::client::wall_ms;
use crate::report::Report;
use crate::server::ServerSpec;
use crate::workloads::{Rng, Target};

pub async fn run(base: Arc<Target>, args: ChaosArgs) -> Report {
    let api_token = format!("chaos-{:016x}", Rng::new(wall_ms()).next_u64());
    let (spec, mut report) = match prepare(&base, &args, &api_token) {
        Ok(prepared) => prepared,
        Err(report) => return report,
    };
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

    let mut crowd = Crowd::spawn(&args, spec.addr);
    if let Err(why) = crowd.form().await {
        report.fail(why);
        return report;
    }
    crowd.start_churners(args.churn_rate);
    let mut cycles = Cycles::new();
    for k in 1..=args.cycles {
        let go_on = cycles
            .kill_and_restart(k, &args, &spec, &mut server, &mut crowd, &mut report)
            .await;
        if !go_on {
            break;
        }
    }

    // The last load phase, then everyone leaves normally.
    tokio::time::sleep(Duration::from_secs_f64(args.load_secs)).await;
    let finished = crowd.finish().await;
    let totals = count_cycles(&finished.counts, &mut cycles.rows, &mut report);

    // The store, read while the server still runs: every session must have
    // ended (the killed runs' by recovery, the last ones by their close).
    let flush_ms = args.flush_interval_ms;
    let stored = match read_settled_sessions(spec.addr, &api_token).await {
        Ok(stored) => stored,
        Err(err) => {
            report.fail(format!("cannot read /api/sessions: {err}"));
            Vec::new()
        }
    };
    let check = check_sessions(&finished.seen, &cycles.kills, flush_ms, &stored);
    check.judge(&mut report);

    // A graceful stop and one more start: nothing to recover or restore,
    // nothing lost.
    let short = &finished.seen[args.clients..];
    let grace_ms = (args.resume_grace_secs * 1000.0) as u64;
    let in_grace = places_in_grace(short, &cycles.kills, &cycles.readies, flush_ms, grace_ms);
    let graceful = graceful_restart(&mut server, &spec, &api_token, stored.len(), in_grace).await;
    drop(server);
    for why in graceful.failures {
        report.fail(why);
    }

    summarise(&mut report, &cycles, &totals, finished.churned);
    check.summarise(&mut report, flush_ms);
    report.summary("graceful stop and start", json!(graceful.summary));
    report.set("sessions", check.to_json());
    report.set("graceful_restart", graceful.details);
    report.set("api_token_note", json!("random per run, not recorded"));
    for row in cycles.rows {
        report.push(row);
    }
    report
}

/// The server's command line and the report; or, when the run cannot
/// start, the report that says why.
fn prepare(
    base: &Target,
    args: &ChaosArgs,
    api_token: &str,
) -> Result<(ServerSpec, Report), Report> {
    let flags: Vec<String> = [
        "--resume-grace-secs",
        &args.resume_grace_secs.to_string(),
        "--flush-interval-ms",
        &args.flush_interval_ms.to_string(),
        "--api-token",
        api_token,
    ]
    .map(String::from)
    .to_vec();
    let spec = match ServerSpec::new(&args.server, "chaos", &flags) {
        Ok(spec) => spec,
        Err(err) => {
            let mut report = Report::new("chaos", base, json_args(args));
            report.fail(err);
            return Err(report);
        }
    };
    let target = base.started_at(spec.addr, None);
    let mut report = Report::new("chaos", &target, json_args(args));
    report.set_server(&spec);
    if base.protocol.name() != "chatsubo" {
        report.fail("chaos speaks Chatsubo's resume only (--protocol chatsubo)".into());
        return Err(report);
    }
    if args.resume_timeout_secs >= args.resume_grace_secs {
        report.fail("--resume-timeout-secs must be less than --resume-grace-secs".into());
        return Err(report);
    }
    Ok((spec, report))
}
