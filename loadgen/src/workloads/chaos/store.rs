//! The chaos workload's store check: `/api/sessions` read after the cycles
//! and checked against every `welcome` the clients got. A session the server
//! created (the time in its id) more than the flush window before the kill
//! that followed must be in the store, and every session must have ended
//! (docs/analytics.md, "The flush window" and "Crash recovery").

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::client::SeenSession;
use crate::http;
use crate::report::Report;

/// The contract: a crashed session's `endedAt` is at most this long before the crash.
const CRASH_END_WITHIN_MS: i64 = 5000;

/// A session as `/api/sessions` lists it (times in unix ms).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredSession {
    pub id: String,
    pub peer_id: String,
    pub connected_ms: u64,
    pub ended_ms: Option<u64>,
    pub close_reason: Option<String>,
    pub resumed_from: Option<String>,
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
pub async fn read_sessions(addr: SocketAddr, token: &str) -> Result<Vec<StoredSession>, String> {
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
pub async fn read_settled_sessions(
    addr: SocketAddr,
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
pub struct SessionCheck {
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
pub fn check_sessions(
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
    let mut seen_ids = HashSet::new();
    for sessions in clients {
        let mut previous: Option<&SeenSession> = None;
        for s in sessions {
            check.seen += 1;
            seen_ids.insert(s.id.as_str());
            match by_id.get(s.id.as_str()) {
                Some(st) => check.found_one(s, st, previous),
                None => check.missing_one(s, kill_after(s.created_ms), flush_ms),
            }
            if s.joined.is_some() {
                previous = Some(s);
            }
        }
    }
    for st in stored {
        check.store_only += usize::from(!seen_ids.contains(st.id.as_str()));
        check.stored_one(st, kill_after(st.connected_ms));
    }
    check
}

impl SessionCheck {
    /// A session a client saw, found in the store; `previous` is the
    /// client's session before it that got into the room.
    fn found_one(&mut self, s: &SeenSession, st: &StoredSession, previous: Option<&SeenSession>) {
        self.found += 1;
        self.peer_mismatch += usize::from(st.peer_id != s.peer_id);
        if s.joined == Some(true)
            && let Some(p) = previous
        {
            self.resume_links += 1;
            self.resume_links_wrong +=
                usize::from(st.resumed_from.as_deref() != Some(p.id.as_str()));
        }
    }

    /// A session a client saw that the store lacks; `kill` is the first
    /// kill after its creation.
    fn missing_one(&mut self, s: &SeenSession, kill: Option<u64>, flush_ms: u64) {
        match kill {
            Some(kill) if kill - s.created_ms < flush_ms => self.missing_in_window += 1,
            kill => {
                self.missing_outside += 1;
                if self.missing_examples.len() < 5 {
                    self.missing_examples.push(format!(
                        "{} ({}) created at {} ms, joined {:?}, next kill {:?}",
                        s.id, s.peer_id, s.created_ms, s.joined, kill
                    ));
                }
            }
        }
        if let Some(kill) = kill {
            let age = kill - s.created_ms;
            self.oldest_missing_ms = self.oldest_missing_ms.max(Some(age));
        }
    }

    /// A stored session's end; `kill` is the first kill after it connected.
    fn stored_one(&mut self, st: &StoredSession, kill: Option<u64>) {
        self.left_open += usize::from(st.ended_ms.is_none());
        let reason = st.close_reason.clone().unwrap_or_else(|| "(open)".into());
        *self.close_reasons.entry(reason).or_default() += 1;
        if st.close_reason.as_deref() == Some("server_crash") {
            self.crashed += 1;
            match (kill, st.ended_ms) {
                (Some(kill), Some(ended)) => {
                    let gap = kill as i64 - ended as i64;
                    self.crash_end_gap_max_ms = self.crash_end_gap_max_ms.max(Some(gap));
                    self.crash_end_out_of_bounds +=
                        usize::from(!(0..=CRASH_END_WITHIN_MS).contains(&gap));
                }
                _ => self.crash_end_out_of_bounds += 1,
            }
        }
    }

    /// The check's failures into `report`.
    pub fn judge(&self, report: &mut Report) {
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

    /// The check's lines under the table.
    pub fn summarise(&self, report: &mut Report, flush_ms: u64) {
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

    pub fn to_json(&self) -> Value {
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
