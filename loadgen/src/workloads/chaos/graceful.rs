//! The end of the chaos run: SIGTERM and one more start, which must find
//! nothing to recover, no place of a client that left (a short session's
//! place may still be inside its grace), and the same sessions as before.

use std::net::SocketAddr;
use std::process::ExitStatus;
use std::time::Duration;

use serde_json::{Value, json};

use super::client::SeenSession;
use super::start_server;
use super::store::{StoredSession, read_sessions};
use crate::client::wall_ms;
use crate::http;
use crate::server::{Server, ServerSpec};

/// Time a SIGTERM has to end the server.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// The stop and start, for the report.
pub struct Graceful {
    pub summary: String,
    pub details: Value,
    pub failures: Vec<String>,
}

/// What the start after the graceful stop found.
struct Found {
    /// Sessions it closed as left open.
    recovered: u64,
    /// Places it restored (`None`: it did not say).
    restored: Option<u64>,
    after: Result<Vec<StoredSession>, String>,
    /// Rooms with places, and how many.
    held: Vec<(String, u64)>,
}

/// Places that may still be inside their grace at a stop now: a short
/// session that a kill cut off, or that closed less than a flush window
/// before it (its leave lost with the kill), gets its place back at the
/// restart for a grace that nobody resumes, and a graceful stop inside that
/// grace keeps the place for the next start. `kills` and `readies` are the
/// cycles' kill and ready times (unix ms).
pub fn places_in_grace(
    short: &[Vec<SeenSession>],
    kills: &[u64],
    readies: &[u64],
    flush_ms: u64,
    grace_ms: u64,
) -> usize {
    let stop_ms = wall_ms();
    short
        .iter()
        .flatten()
        .filter(|s| s.joined.is_some())
        .filter_map(|s| {
            let k = kills.iter().position(|&k| k >= s.created_ms)?;
            let left_in_time = s.closed_ms.is_some_and(|c| c + flush_ms <= kills[k]);
            (!left_in_time).then_some(k)
        })
        .filter(|&k| readies.get(k).is_some_and(|&r| r + grace_ms > stop_ms))
        .count()
}

/// SIGTERM, one more start, the store read again, SIGTERM again.
/// `in_grace`: places that may still be inside their grace at the stop.
pub async fn graceful_restart(
    server: &mut Server,
    spec: &ServerSpec,
    token: &str,
    stored_before: usize,
    in_grace: usize,
) -> Graceful {
    let mut failures = Vec::new();
    let first_exit = exit_text(server.terminate(STOP_TIMEOUT).await, &mut failures);
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
    let found = Found {
        recovered: log
            .field("sessions_recovered", "closed")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        restored: log
            .field("resume_state_restored", "peers")
            .and_then(Value::as_u64),
        after: read_sessions(spec.addr, token).await,
        held: held_places(spec.addr, token, &mut failures).await,
    };
    let second = again.terminate(STOP_TIMEOUT).await;
    let (count, open) = found.judge(stored_before, in_grace, &mut failures);
    if !matches!(&second, Ok(s) if s.success()) {
        failures.push(format!("second SIGTERM: {second:?}"));
    }
    let Found {
        recovered,
        restored,
        held,
        ..
    } = found;
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

/// How the first SIGTERM ended the server; anything but exit 0 is a failure.
fn exit_text(stop: Result<ExitStatus, String>, failures: &mut Vec<String>) -> String {
    match stop {
        Ok(status) if status.success() => "exit 0".to_owned(),
        Ok(status) => {
            failures.push(format!("SIGTERM: the server exited with {status}"));
            status.to_string()
        }
        Err(err) => {
            failures.push(format!("SIGTERM: {err}"));
            err
        }
    }
}

/// The rooms with places after the restart. Only short sessions' rooms may
/// hold one: every client left.
async fn held_places(
    addr: SocketAddr,
    token: &str,
    failures: &mut Vec<String>,
) -> Vec<(String, u64)> {
    let rooms = http::get(
        addr,
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
    held
}

impl Found {
    /// The start's expectations; returns the sessions after it and how many
    /// of them are open.
    fn judge(
        &self,
        stored_before: usize,
        in_grace: usize,
        failures: &mut Vec<String>,
    ) -> (usize, usize) {
        let (recovered, restored) = (self.recovered, self.restored);
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
        let (count, open) = match &self.after {
            Ok(sessions) => (
                sessions.len(),
                sessions.iter().filter(|s| s.ended_ms.is_none()).count(),
            ),
            Err(err) => {
                failures.push(format!("/api/sessions after the restart: {err}"));
                (0, 0)
            }
        };
        if self.after.is_ok() && count != stored_before {
            failures.push(format!(
                "{stored_before} sessions before the graceful stop, {count} after"
            ));
        }
        (count, open)
    }
}
