//! The server's own counters around each phase of the flood workload, read
//! from its `/metrics`: what it refused, kicked, joined and logged.

use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::client::sleep_until_ns;
use crate::http;
use crate::workloads::relay::Running;

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

/// The counters before and after each of the two phases: from its start to
/// the middle of its drain (the flood starts as the quiet phase's drain
/// ends).
pub async fn scrape_phases(
    running: &Running,
    addr: SocketAddr,
    drain_secs: f64,
) -> Vec<(Vec<f64>, Vec<f64>)> {
    let half_drain_ns = (drain_secs * 0.5e9) as u64;
    let mut out = Vec::new();
    for phase in 0..2 {
        let (from, to) = running.window(phase);
        sleep_until_ns(from).await;
        let before = server_counters(addr).await;
        sleep_until_ns(to + half_drain_ns).await;
        out.push((before, server_counters(addr).await));
    }
    out
}

/// The counters of [`SERVER_COUNTERS`] now (empty if `/metrics` failed).
async fn server_counters(addr: SocketAddr) -> Vec<f64> {
    match http::get(addr, "/metrics", None, std::time::Duration::from_secs(5)).await {
        Ok(r) if r.status == 200 => SERVER_COUNTERS
            .iter()
            .map(|(_, name, labels)| metric_sum(&r.body, name, labels))
            .collect(),
        _ => Vec::new(),
    }
}

/// What each counter grew by, by its key.
pub fn counter_deltas(before: &[f64], after: &[f64]) -> Value {
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
