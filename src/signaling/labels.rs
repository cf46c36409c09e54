//! Why the server closed a connection or dropped a message: signaling's own
//! label values, and the series they make exist from the start.

use crate::telemetry::Metrics;

/// Why the server closed a connection on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KickReason {
    SlowConsumer,
    RateLimitAbuse,
    MessageTooLarge,
    InvalidUtf8,
    /// Never joined a room within `--join-timeout-secs`.
    JoinTimeout,
}

impl KickReason {
    pub const ALL: [KickReason; 5] = [
        KickReason::SlowConsumer,
        KickReason::RateLimitAbuse,
        KickReason::MessageTooLarge,
        KickReason::InvalidUtf8,
        KickReason::JoinTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KickReason::SlowConsumer => "slow_consumer",
            KickReason::RateLimitAbuse => "rate_limit_abuse",
            KickReason::MessageTooLarge => "message_too_large",
            KickReason::InvalidUtf8 => "invalid_utf8",
            KickReason::JoinTimeout => "join_timeout",
        }
    }

    /// Counts one connection closed for this reason.
    pub fn count(self, metrics: &Metrics) {
        metrics
            .connections
            .kicks
            .with_label_values(&[self.as_str()])
            .inc();
    }
}

/// Why a message the server meant to deliver was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// More than 64 messages were held for a peer inside its grace.
    HeldOverflow,
    /// The grace ended with messages still held.
    GraceExpired,
    /// The receiver's queue was full; the receiver was kicked.
    SlowConsumer,
    /// The receiver's connection had already ended.
    ReceiverGone,
    /// More relays for a peer not (yet) in the room than are queued for it.
    PendingOverflow,
    /// Queued for a peer that did not come in time.
    PendingExpired,
}

impl DropReason {
    pub const ALL: [DropReason; 6] = [
        DropReason::HeldOverflow,
        DropReason::GraceExpired,
        DropReason::SlowConsumer,
        DropReason::ReceiverGone,
        DropReason::PendingOverflow,
        DropReason::PendingExpired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::HeldOverflow => "held_overflow",
            DropReason::GraceExpired => "grace_expired",
            DropReason::SlowConsumer => "slow_consumer",
            DropReason::ReceiverGone => "receiver_gone",
            DropReason::PendingOverflow => "pending_overflow",
            DropReason::PendingExpired => "pending_expired",
        }
    }

    /// Counts `n` messages dropped for this reason.
    pub fn count(self, metrics: &Metrics, n: u64) {
        metrics
            .connections
            .dropped_messages
            .with_label_values(&[self.as_str()])
            .inc_by(n);
    }
}

/// Makes every series labelled by signaling's reasons exist (reading 0)
/// before anything is counted, so that dashboards and alerts see them.
pub fn touch_series(metrics: &Metrics) {
    let kicks = KickReason::ALL.map(KickReason::as_str);
    let drops = DropReason::ALL.map(DropReason::as_str);
    metrics.connections.touch_reasons(&kicks, &drops);
    for cap in super::Refused::ALL {
        metrics
            .edge
            .connections_refused
            .with_label_values(&[cap.as_str()]);
    }
}
