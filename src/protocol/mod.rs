//! The wire contract (`docs/protocol.md`): messages in both directions, their
//! validation and the error codes. Nothing here knows about rooms or sockets.

mod error;
mod inbound;
mod names;
mod outbound;
#[cfg(test)]
mod proptests;
mod telemetry;
mod traceparent;

pub use error::{ErrorCode, ErrorKind, ProtocolError};
pub use inbound::{ClientMessage, Inbound, MessageType, RelayKind, parse};
pub use names::{MAX_DISPLAY_NAME_CHARS, RoomName, validate_display_name};
pub use outbound::{LeaveReason, PeerInfo, ServerMessage, relay_frame};
pub use telemetry::{ClientTelemetry, PeerOutcome, ReconnectOutcome};
pub use traceparent::TraceParent;
