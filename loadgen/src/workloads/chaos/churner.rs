//! Short sessions besides the chaos workload's clients (connect, welcome,
//! join, close, again and again), so that sessions are also created in the
//! last moments before each kill and the flush window is checked at its
//! edge.

use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::client::{SeenSession, enter};
use crate::client::{self, JOIN_TIMEOUT, wall_ms};

/// Short sessions again and again (connect, welcome, join, close) in a
/// room of its own, whether the server is up or not.
pub struct Churner {
    pub addr: SocketAddr,
    pub room: String,
    pub every: Duration,
    pub phase: Duration,
    pub cancel: CancellationToken,
}

impl Churner {
    /// Returns the sessions it was welcomed into, and how many it closed.
    pub async fn run(self) -> (Vec<SeenSession>, usize) {
        let mut seen = Vec::new();
        let mut closed = 0;
        let first = tokio::time::Instant::now() + self.phase;
        let mut tick = tokio::time::interval_at(first, self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            let attempt =
                tokio::time::timeout(JOIN_TIMEOUT, enter(self.addr, &self.room, None, &mut seen))
                    .await;
            if let Ok(Ok((ws, _, _))) = attempt {
                client::close(ws).await;
                if let Some(s) = seen.last_mut() {
                    s.closed_ms = Some(wall_ms());
                }
                closed += 1;
            }
        }
        (seen, closed)
    }
}
