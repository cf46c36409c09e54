//! How a connection ends, and what each ending means for the session's
//! history and for the close frame.

use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::super::labels::KickReason;
use super::super::outbox::StopReason;
use crate::analytics::CloseReason;

/// Close code for a connection whose peer resumed on a newer connection.
pub const CLOSE_SUPERSEDED: u16 = 4000;

/// How a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum End {
    /// The client sent a close frame first.
    ClientClosed,
    /// The socket ended or failed without a close frame.
    Disconnected,
    /// No frame for two heartbeat intervals.
    Timeout,
    /// The server is shutting down.
    Shutdown,
    /// The server removed the peer.
    Kicked(KickReason),
    /// The peer resumed on a newer connection.
    Superseded,
    /// The protocol answered an error by closing (matchbox), or refused
    /// the connection as it came (a PeerJS id taken, a bad key).
    Refused,
}

impl End {
    /// How a connection that someone else stopped ends.
    pub(super) fn stopped(reason: StopReason) -> End {
        match reason {
            StopReason::Kicked(why) => End::Kicked(why),
            StopReason::Superseded => End::Superseded,
        }
    }

    /// The `closeReason` of a session that ended this way.
    pub(super) fn close_reason(self) -> CloseReason {
        match self {
            End::ClientClosed => CloseReason::Left,
            End::Disconnected | End::Superseded => CloseReason::Disconnected,
            End::Timeout | End::Kicked(KickReason::JoinTimeout) => CloseReason::Timeout,
            End::Kicked(_) | End::Refused => CloseReason::Kicked,
            End::Shutdown => CloseReason::ServerShutdown,
        }
    }

    /// The close frame the server sends: `None` when it sends none of its
    /// own (the client closed first, or the socket is gone); a refusal's
    /// reason is the connection's own.
    pub(super) fn close_frame(self) -> Option<CloseFrame> {
        let frame = |code: CloseCode, reason: &'static str| {
            Some(CloseFrame {
                code,
                reason: reason.into(),
            })
        };
        match self {
            End::Disconnected | End::ClientClosed => None,
            End::Refused => frame(CloseCode::Policy, "refused"),
            End::Timeout => frame(CloseCode::Away, "heartbeat timeout"),
            End::Superseded => frame(
                CloseCode::from(CLOSE_SUPERSEDED),
                "resumed on another connection",
            ),
            End::Kicked(KickReason::MessageTooLarge) => frame(CloseCode::Size, "message too large"),
            End::Kicked(KickReason::InvalidUtf8) => {
                frame(CloseCode::Invalid, "text frame is not valid UTF-8")
            }
            End::Kicked(KickReason::SlowConsumer) => {
                frame(CloseCode::Policy, "too slow to keep up")
            }
            End::Kicked(KickReason::RateLimitAbuse) => {
                frame(CloseCode::Policy, "rate limit exceeded repeatedly")
            }
            End::Kicked(KickReason::JoinTimeout) => {
                frame(CloseCode::Policy, "no room joined in time (join timeout)")
            }
            End::Shutdown => frame(CloseCode::Away, "server shutting down"),
        }
    }
}
