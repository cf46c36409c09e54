//! The wire contract (`docs/protocol.md`): messages in both directions, their
//! validation, the identifiers and the error codes. Nothing here knows about
//! rooms or sockets.

mod client_report;
mod dialect;
mod error;
mod fields;
mod ids;
mod inbound;
mod names;
mod outbound;
#[cfg(test)]
mod proptests;
mod traceparent;

pub use client_report::{CandidatePath, ClientTelemetry, PeerOutcome, ReconnectOutcome};
pub use dialect::Protocol;
pub use error::{ErrorCode, ErrorKind, ProtocolError};
pub use ids::{peer_of_session, session_of_peer};
pub use inbound::{ClientMessage, Inbound, MessageType, RelayKind, parse};
pub use names::{MAX_DISPLAY_NAME_CHARS, RoomName, validate_display_name};
pub use outbound::{LeaveReason, OutKind, PeerInfo, ServerMessage, relay_frame};
pub use traceparent::{TraceParent, random_span_id, random_trace_id};
