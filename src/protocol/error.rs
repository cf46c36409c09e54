//! Error codes of the contract and the error a handler answers with.

use serde::Serialize;

use super::MessageType;

/// Every code an `error` message can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// Unparsable frame, unknown type, bad field.
    InvalidMessage,
    /// Frame over the size limit; the connection is then closed with 1009.
    MessageTooLarge,
    /// The room already holds `maxRoomSize` peers.
    RoomFull,
    /// Relay, leave or telemetry about peers before `join`.
    NotInRoom,
    /// A second `join` without `leave`.
    AlreadyInRoom,
    /// `to` names no peer of this room.
    UnknownPeer,
    /// Over the per-connection message rate.
    RateLimited,
    /// A client-chosen peer id another client holds (PeerJS's ID-TAKEN).
    IdTaken,
    /// Graceful shutdown; then close 1001.
    ServerShuttingDown,
    /// A bug of ours, logged with its whole cause chain.
    Internal,
}

/// Whose fault an error is: the client's, or the server's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    Client,
    Server,
}

impl ErrorKind {
    /// The label value used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Client => "client",
            ErrorKind::Server => "server",
        }
    }
}

impl ErrorCode {
    /// Every code, for metrics that are initialised up front.
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::InvalidMessage,
        ErrorCode::MessageTooLarge,
        ErrorCode::RoomFull,
        ErrorCode::NotInRoom,
        ErrorCode::AlreadyInRoom,
        ErrorCode::UnknownPeer,
        ErrorCode::RateLimited,
        ErrorCode::IdTaken,
        ErrorCode::ServerShuttingDown,
        ErrorCode::Internal,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidMessage => "INVALID_MESSAGE",
            ErrorCode::MessageTooLarge => "MESSAGE_TOO_LARGE",
            ErrorCode::RoomFull => "ROOM_FULL",
            ErrorCode::NotInRoom => "NOT_IN_ROOM",
            ErrorCode::AlreadyInRoom => "ALREADY_IN_ROOM",
            ErrorCode::UnknownPeer => "UNKNOWN_PEER",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::IdTaken => "ID_TAKEN",
            ErrorCode::ServerShuttingDown => "SERVER_SHUTTING_DOWN",
            ErrorCode::Internal => "INTERNAL",
        }
    }

    /// Whether the client or the server caused it.
    pub fn kind(self) -> ErrorKind {
        match self {
            ErrorCode::ServerShuttingDown | ErrorCode::Internal => ErrorKind::Server,
            _ => ErrorKind::Client,
        }
    }
}

/// An error to answer a client with: code, human message and the type of the
/// message that caused it (`ref`), when known.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
    pub reference: Option<MessageType>,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProtocolError {
            code,
            message: message.into(),
            reference: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidMessage, message)
    }

    /// Sets `ref` to the type of the offending message.
    pub fn about(mut self, reference: MessageType) -> Self {
        self.reference = Some(reference);
        self
    }
}
