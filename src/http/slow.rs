//! Clients disconnected for being too slow, by the stage they were at: the
//! `stage` label of `chatsubo_slow_clients_total`.

use crate::telemetry::Metrics;

/// Where a client was too slow and got disconnected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowStage {
    /// Connected and sent nothing within the header timeout.
    Idle,
    /// Began a request but did not finish its headers in time (slowloris).
    Headers,
    /// An accepted WebSocket upgrade did not complete in time.
    Handshake,
}

impl SlowStage {
    pub const ALL: [SlowStage; 3] = [SlowStage::Idle, SlowStage::Headers, SlowStage::Handshake];

    pub fn as_str(self) -> &'static str {
        match self {
            SlowStage::Idle => "idle",
            SlowStage::Headers => "headers",
            SlowStage::Handshake => "handshake",
        }
    }

    /// Counts one client dropped at this stage.
    pub fn count(self, metrics: &Metrics) {
        metrics
            .edge
            .slow_clients
            .with_label_values(&[self.as_str()])
            .inc();
    }

    /// Makes every stage's series exist (reading 0) from the start.
    pub fn touch_series(metrics: &Metrics) {
        for stage in Self::ALL {
            metrics
                .edge
                .slow_clients
                .with_label_values(&[stage.as_str()]);
        }
    }
}
