//! A connection's outbound side as the rest of the server sees it: a bounded
//! queue of serialised frames and a way to stop the connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::labels::KickReason;
use crate::protocol::OutKind;

/// One serialised server message. Cloning shares the text.
#[derive(Clone, Debug)]
pub struct Frame {
    pub kind: OutKind,
    pub text: Utf8Bytes,
}

impl Frame {
    pub fn new(kind: OutKind, text: String) -> Self {
        Frame {
            kind,
            text: Utf8Bytes::from(text),
        }
    }
}

/// Why a connection was told to stop by someone else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// Removed by the server (close 1008).
    Kicked(KickReason),
    /// A newer connection resumed this peer; close quietly.
    Superseded,
}

/// The outcome of queueing a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queued {
    Yes,
    /// The queue is full: the receiver cannot keep up.
    Full,
    /// The connection has ended.
    Gone,
}

#[derive(Default)]
struct Control {
    // 0: running; otherwise a StopReason code.
    stop: AtomicU8,
    notify: Notify,
    counts: LiveCounts,
}

/// What a connection counted over its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageCounts {
    pub messages_in: u64,
    pub messages_out: u64,
    pub errors: u64,
}

/// A connection's counts as it goes, where `/api` can read them while it
/// is open (the history learns them when it ends). Only the connection's
/// own task writes them.
#[derive(Default)]
pub struct LiveCounts {
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    errors: AtomicU64,
}

impl LiveCounts {
    pub fn message_in(&self) {
        self.messages_in.fetch_add(1, Ordering::Relaxed);
    }

    pub fn message_out(&self) {
        self.messages_out.fetch_add(1, Ordering::Relaxed);
    }

    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn snapshot(&self) -> MessageCounts {
        MessageCounts {
            messages_in: self.messages_in.load(Ordering::Relaxed),
            messages_out: self.messages_out.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// A cheap, cloneable handle to one connection's outbound queue.
#[derive(Clone)]
pub struct ConnHandle {
    id: u64,
    tx: flume::Sender<Frame>,
    control: Arc<Control>,
}

/// The connection's own end: the receiver and the stop signal.
pub struct Outbox {
    pub rx: flume::Receiver<Frame>,
    pub stop: StopSignal,
}

/// Tells a connection that someone asked it to stop.
#[derive(Clone)]
pub struct StopSignal {
    control: Arc<Control>,
}

/// A bounded outbound queue for connection `id`. Its storage grows only as
/// frames wait in it: an idle connection's queue holds no buffer at all
/// (tokio's bounded channel allocates a block of 32 slots up front).
pub fn outbox(id: u64, capacity: usize) -> (ConnHandle, Outbox) {
    let (tx, rx) = flume::bounded(capacity);
    let control = Arc::new(Control::default());
    (
        ConnHandle {
            id,
            tx,
            control: control.clone(),
        },
        Outbox {
            rx,
            stop: StopSignal { control },
        },
    )
}

impl ConnHandle {
    /// The connection this handle belongs to.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// What the connection has counted so far.
    pub fn counts(&self) -> &LiveCounts {
        &self.control.counts
    }

    /// Queues a frame without waiting.
    pub fn send(&self, frame: Frame) -> Queued {
        match self.tx.try_send(frame) {
            Ok(()) => Queued::Yes,
            Err(flume::TrySendError::Full(_)) => Queued::Full,
            Err(flume::TrySendError::Disconnected(_)) => Queued::Gone,
        }
    }

    /// Tells the connection to stop; the first reason given wins.
    pub fn stop(&self, reason: StopReason) {
        let code = match reason {
            StopReason::Superseded => 1,
            StopReason::Kicked(KickReason::SlowConsumer) => 2,
            StopReason::Kicked(KickReason::RateLimitAbuse) => 3,
            StopReason::Kicked(KickReason::MessageTooLarge) => 4,
            StopReason::Kicked(KickReason::InvalidUtf8) => 5,
            StopReason::Kicked(KickReason::JoinTimeout) => 6,
        };
        if self
            .control
            .stop
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.control.notify.notify_one();
        }
    }
}

impl StopSignal {
    /// Waits until someone calls [`ConnHandle::stop`], and says why.
    pub async fn stopped(&self) -> StopReason {
        loop {
            if let Some(reason) = self.stop_reason() {
                return reason;
            }
            self.control.notify.notified().await;
        }
    }

    fn stop_reason(&self) -> Option<StopReason> {
        Some(match self.control.stop.load(Ordering::Acquire) {
            0 => return None,
            1 => StopReason::Superseded,
            2 => StopReason::Kicked(KickReason::SlowConsumer),
            3 => StopReason::Kicked(KickReason::RateLimitAbuse),
            4 => StopReason::Kicked(KickReason::MessageTooLarge),
            5 => StopReason::Kicked(KickReason::InvalidUtf8),
            _ => StopReason::Kicked(KickReason::JoinTimeout),
        })
    }
}
