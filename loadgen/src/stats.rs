//! What the load generator measures besides its own clocks: CPU time and
//! resident memory of a process from /proc, and latency histograms.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Clock ticks per second of /proc's utime and stime (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: u64 = 100;

/// One look at a process.
#[derive(Clone, Copy, Debug)]
pub struct ProcSample {
    pub at: Instant,
    /// utime + stime.
    pub cpu: Duration,
    /// stime alone: the kernel's work for the process (its syscalls, and
    /// over loopback the receiving side of what it sends).
    pub system: Duration,
    /// VmRSS, in bytes.
    pub rss: u64,
}

/// A process to watch: the server by pid, or this process.
#[derive(Clone, Copy, Debug)]
pub enum Proc {
    Pid(u32),
    Myself,
}

impl Proc {
    fn dir(self) -> String {
        match self {
            Proc::Pid(pid) => format!("/proc/{pid}"),
            Proc::Myself => "/proc/self".into(),
        }
    }

    /// Reads CPU time and RSS now; `None` when the process is gone.
    pub fn sample(self) -> Option<ProcSample> {
        let dir = self.dir();
        let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
        let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
        let (cpu, system) = cpu_time(&stat)?;
        Some(ProcSample {
            at: Instant::now(),
            cpu,
            system,
            rss: rss_bytes(&status)?,
        })
    }
}

/// utime + stime, and stime, from the text of /proc/<pid>/stat.
fn cpu_time(stat: &str) -> Option<(Duration, Duration)> {
    // The command name (field 2) may hold spaces: count from its ')'.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name, field 3 (state) is index 0; utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let time = |ticks: u64| Duration::from_micros(ticks * 1_000_000 / TICKS_PER_SEC);
    Some((time(utime + stime), time(stime)))
}

/// VmRSS from the text of /proc/<pid>/status, in bytes.
fn rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU used between two samples, as a share of one core (1.0 = 100%).
pub fn core_share(before: &ProcSample, after: &ProcSample) -> f64 {
    let wall = after.at.duration_since(before.at).as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    after.cpu.saturating_sub(before.cpu).as_secs_f64() / wall
}

/// CPU microseconds between two samples, divided by `units`.
pub fn cpu_us_per(before: &ProcSample, after: &ProcSample, units: u64) -> Option<f64> {
    (units > 0).then(|| after.cpu.saturating_sub(before.cpu).as_secs_f64() * 1e6 / units as f64)
}

/// System (kernel) CPU microseconds between two samples, divided by `units`.
pub fn system_us_per(before: &ProcSample, after: &ProcSample, units: u64) -> Option<f64> {
    (units > 0)
        .then(|| after.system.saturating_sub(before.system).as_secs_f64() * 1e6 / units as f64)
}

/// A latency histogram in microseconds, 1 µs to 10 minutes, 3 digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Records a duration in microseconds (clamped into the histogram's range).
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_micros() as u64).max(1));
}

/// p50, p99, p99.9 and max in milliseconds, for the JSON report.
pub fn summary_ms(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!(null);
    }
    let ms = |us: u64| us as f64 / 1000.0;
    json!({
        "count": h.len(),
        "p50": ms(h.value_at_quantile(0.50)),
        "p99": ms(h.value_at_quantile(0.99)),
        "p999": ms(h.value_at_quantile(0.999)),
        "max": ms(h.max()),
        "mean": h.mean() / 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_formats() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 100 1000 200";
        assert_eq!(
            cpu_time(stat),
            Some((Duration::from_secs(3), Duration::from_millis(500)))
        );
        let status = "Name:\tx\nVmPeak:\t 100 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(rss_bytes(status), Some(2048 * 1024));
        let me = Proc::Myself.sample().expect("own /proc");
        assert!(me.rss > 0);
    }
}
