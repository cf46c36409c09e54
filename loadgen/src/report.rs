//! The results of one workload run: a table on standard output and a JSON
//! document for scripts (`--json`).

use std::path::Path;

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::server::ServerSpec;
use crate::workloads::Target;

/// One workload run's results.
pub struct Report {
    meta: Map<String, Value>,
    rows: Vec<Value>,
}

impl Report {
    pub fn new(workload: &str, target: &Target, args: Value) -> Self {
        let mut meta = Map::new();
        meta.insert("tool".into(), json!("chatsubo-loadgen"));
        meta.insert("tool_version".into(), json!(env!("CARGO_PKG_VERSION")));
        meta.insert("workload".into(), json!(workload));
        meta.insert("server".into(), json!(target.label));
        meta.insert("protocol".into(), json!(target.protocol.name()));
        meta.insert("address".into(), json!(target.addr.to_string()));
        meta.insert(
            "finished_at".into(),
            json!(
                OffsetDateTime::now_utc()
                    .format(&Rfc3339)
                    .unwrap_or_default()
            ),
        );
        meta.insert("machine".into(), machine());
        meta.insert("args".into(), args);
        Report {
            meta,
            rows: Vec::new(),
        }
    }

    /// Sets a top-level field.
    pub fn set(&mut self, key: &str, value: Value) {
        self.meta.insert(key.into(), value);
    }

    /// Records how a workload started its own server: the command line and
    /// the work directory.
    pub fn set_server(&mut self, spec: &ServerSpec) {
        self.set("server_command", json!(spec.command_line()));
        self.set(
            "server_work_dir",
            json!(spec.work_dir.display().to_string()),
        );
    }

    /// Adds one result row (one step, one N, one run).
    pub fn push(&mut self, row: Value) {
        self.rows.push(row);
    }

    /// Adds a line to the summary printed under the table (and kept in the
    /// JSON as `summary`).
    pub fn summary(&mut self, label: &str, value: Value) {
        let list = self.meta.entry("summary").or_insert_with(|| json!([]));
        if let Some(list) = list.as_array_mut() {
            list.push(json!([label, value]));
        }
    }

    /// Records a hard expectation that failed: the run exits non-zero.
    pub fn fail(&mut self, why: String) {
        let list = self.meta.entry("failures").or_insert_with(|| json!([]));
        if let Some(list) = list.as_array_mut() {
            list.push(json!(why));
        }
    }

    /// The hard expectations that failed.
    pub fn failures(&self) -> Vec<&str> {
        self.meta
            .get("failures")
            .and_then(Value::as_array)
            .map(|l| l.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    pub fn to_json(&self) -> Value {
        let mut doc = self.meta.clone();
        doc.insert("results".into(), Value::Array(self.rows.clone()));
        Value::Object(doc)
    }

    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_string_pretty(&self.to_json()).expect("JSON values serialise");
        std::fs::write(path, text + "\n")
    }

    /// Prints the rows as a table of the columns that matter for the workload.
    pub fn print_table(&self) {
        let workload = self.meta["workload"].as_str().unwrap_or("");
        let columns = columns(workload);
        println!(
            "{} — {} ({})",
            workload,
            self.meta["server"].as_str().unwrap_or(""),
            self.meta["protocol"].as_str().unwrap_or("")
        );
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| {
                columns
                    .iter()
                    .map(|(title, pointer)| cell(title, row.pointer(pointer)))
                    .collect()
            })
            .collect();
        let widths: Vec<usize> = columns
            .iter()
            .enumerate()
            .map(|(i, (title, _))| {
                cells
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([title.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |items: Vec<String>| {
            let padded: Vec<String> = items
                .iter()
                .zip(&widths)
                .map(|(s, w)| format!("{s:>w$}"))
                .collect();
            println!("  {}", padded.join("  "));
        };
        line(columns.iter().map(|(t, _)| (*t).to_owned()).collect());
        for row in cells {
            line(row);
        }
        let summary = self.meta.get("summary").and_then(Value::as_array);
        for item in summary.into_iter().flatten() {
            let label = item[0].as_str().unwrap_or("");
            let value = match &item[1] {
                Value::String(s) => s.clone(),
                other => cell("", Some(other)),
            };
            println!("  {label}: {value}");
        }
        for why in self.failures() {
            println!("  FAILED: {why}");
        }
    }
}

/// The table's columns for a workload: a title and a JSON pointer into a row.
fn columns(workload: &str) -> &'static [(&'static str, &'static str)] {
    match workload {
        "idle" => &[
            ("conns", "/connections"),
            ("joined", "/joined"),
            ("failed", "/failed"),
            ("join s", "/join_secs"),
            ("RSS before MB", "/server_rss_before_bytes"),
            ("RSS after MB", "/server_rss_after_bytes"),
            ("KB/conn", "/server_bytes_per_connection"),
        ],
        "chaos" => &[
            ("cycle", "/cycle"),
            ("start fails", "/start_failures"),
            ("ready ms", "/ready_ms"),
            ("all back ms", "/all_back_ms"),
            ("resumed", "/resumed"),
            ("fresh", "/fresh"),
            ("not back", "/not_back"),
            ("reconn p50 ms", "/reconnect_ms/p50"),
            ("reconn p99 ms", "/reconnect_ms/p99"),
            ("peer-joined", "/peer_joined"),
            ("peer-left", "/peer_left"),
            ("errors", "/errors"),
            ("recovered", "/recovered_sessions"),
            ("restored", "/restored_peers"),
            ("relayed", "/received"),
        ],
        "flood" => &[
            ("phase", "/phase"),
            ("sent/s", "/send_rate"),
            ("delivered", "/delivered_ratio"),
            ("p50 ms", "/latency_ms/p50"),
            ("p99 ms", "/latency_ms/p99"),
            ("p99.9 ms", "/latency_ms/p999"),
            ("srv cores", "/server_cpu_cores"),
            ("lg cores", "/loadgen_cpu_cores"),
            ("lag p99 ms", "/send_lag_ms/p99"),
            ("flood sent", "/flood/sent"),
            ("limited", "/flood/rate_limited"),
            ("kicked", "/flood/kicked"),
            ("errors", "/errors"),
        ],
        "relay" => &[
            ("rate/s", "/rate"),
            ("sent/s", "/send_rate"),
            ("delivered", "/delivered_ratio"),
            ("p50 ms", "/latency_ms/p50"),
            ("p99 ms", "/latency_ms/p99"),
            ("p99.9 ms", "/latency_ms/p999"),
            ("srv µs/msg", "/server_cpu_us_per_msg"),
            ("of it sys", "/server_system_us_per_msg"),
            ("srv cores", "/server_cpu_cores"),
            ("lg cores", "/loadgen_cpu_cores"),
            ("lag p99 ms", "/send_lag_ms/p99"),
            ("errors", "/errors"),
        ],
        _ => &[
            ("workers", "/workers"),
            ("cycles/s", "/cycles_per_sec"),
            ("join p50 ms", "/join_latency_ms/p50"),
            ("join p99 ms", "/join_latency_ms/p99"),
            ("srv µs/cycle", "/server_cpu_us_per_cycle"),
            ("of it sys", "/server_system_us_per_cycle"),
            ("srv cores", "/server_cpu_cores"),
            ("lg cores", "/loadgen_cpu_cores"),
            ("errors", "/errors"),
        ],
    }
}

/// Formats one value for the table: bytes as MB or KB by column title.
fn cell(title: &str, value: Option<&Value>) -> String {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return "-".into();
    };
    let Some(x) = value.as_f64() else {
        return value.to_string();
    };
    if title.contains("MB") {
        format!("{:.1}", x / 1e6)
    } else if title.contains("KB") {
        format!("{:.2}", x / 1e3)
    } else if title == "delivered" {
        format!("{:.4}", x)
    } else if value.is_u64() || value.is_i64() {
        format!("{x}")
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

/// The machine the run was on: cores, CPU model, kernel.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .ok();
    json!({ "cores": cores, "cpu_model": model, "kernel": kernel })
}
