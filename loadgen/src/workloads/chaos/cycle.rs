//! One crash cycle of the chaos workload: a load phase of random length,
//! SIGKILL, the server started again on the same data directory and port,
//! and every client's comeback counted (resumed or fresh, with its old peer
//! id or not, how long after the kill) into the cycle's row of the report.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::args::ChaosArgs;
use super::client::Back;
use super::crowd::Crowd;
use super::start_server;
use crate::client::wall_ms;
use crate::report::Report;
use crate::server::{Server, ServerSpec};
use crate::stats;
use crate::workloads::Rng;

/// The cycles so far.
pub struct Cycles {
    /// When each kill came (unix ms).
    pub kills: Vec<u64>,
    /// When each restarted server was ready (unix ms): its restored places'
    /// grace ends at most a grace after it.
    pub readies: Vec<u64>,
    /// One row of the report per cycle.
    pub rows: Vec<Value>,
    /// Every client's time from a kill to being back, all cycles together.
    pub reconnects: Histogram<u64>,
    /// Draws the random part of each load phase.
    rng: Rng,
}

/// The clients' comebacks after one restart.
struct Comebacks {
    /// Clients in the run.
    clients: usize,
    back: usize,
    resumed: usize,
    fresh: usize,
    /// Fresh joins with a token bound less than a flush window before the kill.
    fresh_in_window: usize,
    /// Resumes that gave another peer id than the client had.
    wrong_peer: usize,
    /// Reports of an earlier cycle read in this one.
    stray: usize,
    last_back: Option<Instant>,
    /// Time from the kill to being back, per client.
    reconnect: Histogram<u64>,
}

impl Cycles {
    pub fn new() -> Self {
        Cycles {
            kills: Vec::new(),
            readies: Vec::new(),
            rows: Vec::new(),
            reconnects: stats::latency_histogram(),
            rng: Rng::new(0xC4A05),
        }
    }

    /// Cycle `k`: load, kill, restart, every client back. Returns false when
    /// the run cannot go on: the server did not start, or clients are missing.
    pub async fn kill_and_restart(
        &mut self,
        k: usize,
        args: &ChaosArgs,
        spec: &ServerSpec,
        server: &mut Server,
        crowd: &mut Crowd,
        report: &mut Report,
    ) -> bool {
        let load = args.load_secs + args.kill_jitter_secs * self.rng.unit();
        tokio::time::sleep(Duration::from_secs_f64(load)).await;
        crowd.shared.cycle.store(k, Ordering::Relaxed);
        let kill_ms = wall_ms();
        let killed = Instant::now();
        server.kill();
        self.kills.push(kill_ms);
        let mut start_errors = Vec::new();
        let Some((next, ready)) = start_server(spec, &mut start_errors).await else {
            report.fail(format!(
                "cycle {k}: the server did not start after kill -9: {start_errors:?}"
            ));
            self.rows.push(json!({"cycle": k, "start_failures": start_errors.len(), "start_errors": start_errors}));
            return false;
        };
        *server = next;
        self.readies.push(wall_ms());
        let deadline = server.started + Duration::from_secs_f64(args.resume_timeout_secs);
        let mut back = Comebacks::new(crowd.peer_ids.len());
        while back.back < back.clients {
            let Ok(Some(b)) = tokio::time::timeout_at(deadline.into(), crowd.back_rx.recv()).await
            else {
                break;
            };
            back.note(b, k, kill_ms, killed, args.flush_interval_ms, crowd);
        }
        self.reconnects.add(&back.reconnect).ok();
        server.wait_log("listening", Duration::from_secs(2)).await;
        let mut row = back.row(server, ready, killed);
        row["cycle"] = json!(k);
        row["killed_at_ms"] = json!(kill_ms);
        row["start_failures"] = json!(start_errors.len());
        row["start_errors"] = json!(start_errors);
        eprintln!(
            "  chaos: cycle {k}: ready {} ms, {}/{} back ({} resumed, {} fresh) by {} ms",
            row["ready_ms"], back.back, back.clients, back.resumed, back.fresh, row["all_back_ms"]
        );
        back.judge(k, args.resume_timeout_secs, &start_errors, report);
        self.rows.push(row);
        back.back == back.clients
    }
}

impl Comebacks {
    fn new(clients: usize) -> Self {
        Comebacks {
            clients,
            back: 0,
            resumed: 0,
            fresh: 0,
            fresh_in_window: 0,
            wrong_peer: 0,
            stray: 0,
            last_back: None,
            reconnect: stats::latency_histogram(),
        }
    }

    /// Counts one client's report in cycle `k`, and keeps its peer id.
    fn note(
        &mut self,
        b: Back,
        k: usize,
        kill_ms: u64,
        killed: Instant,
        flush_ms: u64,
        crowd: &mut Crowd,
    ) {
        if b.cycle != k {
            self.stray += 1;
            return;
        }
        self.back += 1;
        self.last_back = Some(b.at);
        stats::record(&mut self.reconnect, b.at.duration_since(killed));
        let old = &mut crowd.peer_ids[b.client];
        if b.joined.resumed {
            self.resumed += 1;
            self.wrong_peer += usize::from(b.joined.peer_id != *old);
        } else {
            self.fresh += 1;
            // A token bound less than a flush window before the kill may
            // have been lost with it (docs/analytics.md, "Restarts").
            let bound = b.token_bound_ms.unwrap_or(0);
            self.fresh_in_window += usize::from(kill_ms.saturating_sub(bound) < flush_ms);
        }
        *old = b.joined.peer_id;
    }

    /// The cycle's row: the comebacks and what the new server logged.
    fn row(&self, server: &Server, ready: Duration, killed: Instant) -> Value {
        let log = server.log();
        let all_back = self.last_back.filter(|_| self.back == self.clients);
        json!({
            "ready_ms": ready.as_millis() as u64,
            "all_back_ms": all_back.map(|at| at.duration_since(server.started).as_millis() as u64),
            "down_ms": server.started.duration_since(killed).as_millis() as u64,
            "resumed": self.resumed,
            "fresh": self.fresh,
            "fresh_token_in_flush_window": self.fresh_in_window,
            "not_back": self.clients - self.back,
            "wrong_peer": self.wrong_peer,
            "stray_reports": self.stray,
            "reconnect_ms": stats::summary_ms(&self.reconnect),
            "recovered_sessions": log.field("sessions_recovered", "closed").cloned().unwrap_or(json!(0)),
            "recovered_as": log.field("sessions_recovered", "reason").cloned(),
            "restored_peers": log.field("resume_state_restored", "peers").cloned(),
            "restored_tokens": log.field("resume_state_restored", "tokens").cloned(),
            "restored_skipped": log.field("resume_state_restored", "skipped").cloned(),
            "server_log": log.to_json(),
        })
    }

    /// Cycle `k`'s expectations.
    fn judge(
        &self,
        k: usize,
        resume_timeout_secs: f64,
        start_errors: &[String],
        report: &mut Report,
    ) {
        if self.back < self.clients {
            report.fail(format!(
                "cycle {k}: {} clients not back within {resume_timeout_secs} s",
                self.clients - self.back
            ));
        }
        if self.fresh > self.fresh_in_window {
            report.fail(format!(
                "cycle {k}: {} clients got a fresh join with a token bound before the flush window",
                self.fresh - self.fresh_in_window
            ));
        }
        if self.wrong_peer > 0 {
            report.fail(format!(
                "cycle {k}: {} resumes gave another peer id",
                self.wrong_peer
            ));
        }
        if !start_errors.is_empty() {
            report.fail(format!(
                "cycle {k}: {} failed starts: {start_errors:?}",
                start_errors.len()
            ));
        }
    }
}
