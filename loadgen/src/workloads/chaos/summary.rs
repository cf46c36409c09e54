//! The chaos workload's counts and summary: the clients' counts per cycle
//! into the cycles' rows, with their expectations, and the lines printed
//! under the table.

use serde_json::{Value, json};

use super::client::CycleCounts;
use super::cycle::Cycles;
use crate::report::Report;

/// Puts each cycle's counts into its row (those before the first kill into
/// `before_first_kill`), fails the run on what no client should have seen
/// after the rooms formed, and returns the totals.
pub fn count_cycles(
    counts: &[CycleCounts],
    rows: &mut [Value],
    report: &mut Report,
) -> CycleCounts {
    let mut totals = CycleCounts::default();
    for (k, c) in counts.iter().enumerate() {
        if k > 0
            && let Some(row) = rows.get_mut(k - 1)
        {
            fill_counts(row, c);
        }
        totals.add(c);
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
    totals
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

/// The summary of the cycles and the clients' totals; `churned`: short
/// sessions welcomed, and joined and closed normally.
pub fn summarise(
    report: &mut Report,
    cycles: &Cycles,
    totals: &CycleCounts,
    churned: (usize, usize),
) {
    let rows = &cycles.rows;
    let starts_failed: usize = rows
        .iter()
        .filter_map(|c| c["start_failures"].as_u64())
        .sum::<u64>() as usize;
    let resumed: u64 = rows.iter().filter_map(|c| c["resumed"].as_u64()).sum();
    let fresh: u64 = rows.iter().filter_map(|c| c["fresh"].as_u64()).sum();
    let reconnects = &cycles.reconnects;
    report.summary("kill -9 cycles", json!(cycles.kills.len()));
    report.summary("failed starts", json!(starts_failed));
    report.summary(
        "ready after start (ms, min/median/max)",
        json!(spread(&column(rows, "ready_ms"))),
    );
    report.summary(
        "all clients back after start (ms, min/median/max)",
        json!(spread(&column(rows, "all_back_ms"))),
    );
    report.summary(
        "reconnect from kill, every client (ms)",
        json!(format!(
            "p50 {} p99 {} max {}",
            reconnects.value_at_quantile(0.5) / 1000,
            reconnects.value_at_quantile(0.99) / 1000,
            reconnects.max() / 1000
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
