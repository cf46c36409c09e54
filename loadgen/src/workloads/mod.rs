//! The workloads. Three run against any protocol's server: `idle` (memory
//! per joined connection), `relay` (open-loop message rate steps) and
//! `churn` (connect, welcome, join, close, again). Two start their own
//! Chatsubo server: `chaos` (kill -9 cycles under load) and `flood` (one
//! room flooding, the others measured).

pub mod chaos;
pub mod churn;
pub mod flood;
pub mod idle;
pub mod relay;

use futures_util::SinkExt;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

use crate::client::Ws;
use crate::protocols::{Event, PeerKey, Protocol};
use crate::stats::{Proc, ProcSample};

/// The server under load and how to reach it.
pub struct Target {
    /// The name of the server in reports (`chatsubo`, `matchbox_server`…).
    pub label: String,
    pub protocol: Arc<dyn Protocol>,
    pub addr: SocketAddr,
    /// The server's process, for its CPU time and memory.
    pub server: Option<Proc>,
    /// Makes peer names unique across runs against one server.
    pub run_id: String,
}

impl Target {
    /// A client-chosen identity for connection `n` of this run.
    pub fn key(&self, n: u64) -> PeerKey {
        PeerKey {
            name: format!("lg{}-{n}", self.run_id),
            token: format!("t{n}"),
        }
    }

    /// The server's CPU time and RSS now (`None` without a pid).
    pub fn server_sample(&self) -> Option<ProcSample> {
        self.server.and_then(Proc::sample)
    }

    /// The same target, at the address of a server the workload started
    /// itself (`server`: its process, when the workload watches it).
    pub fn started_at(&self, addr: SocketAddr, server: Option<Proc>) -> Target {
        Target {
            label: self.label.clone(),
            protocol: self.protocol.clone(),
            addr,
            server,
            run_id: self.run_id.clone(),
        }
    }
}

/// The room name of room number `n`.
pub fn room_name(prefix: &str, n: usize) -> String {
    format!("{prefix}-{n}")
}

/// The keepalive timer a connection runs, if its protocol needs one.
pub fn keepalive_timer(protocol: &dyn Protocol) -> Option<(&'static str, Interval)> {
    protocol.keepalive().map(|(text, every)| {
        let mut timer = tokio::time::interval_at(Instant::now() + every, every);
        timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        (text, timer)
    })
}

/// Ticks the keepalive timer, or never when there is none.
pub async fn keepalive_tick(timer: &mut Option<(&'static str, Interval)>) -> &'static str {
    match timer {
        Some((text, t)) => {
            t.tick().await;
            text
        }
        None => std::future::pending().await,
    }
}

/// Sends one keepalive message.
pub async fn send_keepalive(ws: &mut Ws, text: &'static str) -> bool {
    ws.send(Message::text(text)).await.is_ok()
}

/// Reads one frame of a connection that only holds its place; returns the
/// event, or `None` when the connection ended.
pub fn idle_event(
    protocol: &dyn Protocol,
    read: Option<Result<Message, impl std::fmt::Debug>>,
) -> Option<Event> {
    match read {
        Some(Ok(Message::Text(text))) => Some(protocol.classify(&text)),
        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => None,
        Some(Ok(_)) => Some(Event::Other),
    }
}

/// A small, fast random number generator (xorshift64*), one per task.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
