//! `telemetry`: what only the client can see, counted and recorded.

use super::Connection;
use crate::protocol::{ClientTelemetry, ErrorCode, MessageType, ProtocolError};

impl Connection {
    pub(super) fn on_telemetry(&mut self, event: ClientTelemetry) -> Result<(), ProtocolError> {
        if event.needs_room() && self.room.is_none() {
            return Err(ProtocolError::new(
                ErrorCode::NotInRoom,
                "telemetry about peers needs a room; join first",
            )
            .about(MessageType::Telemetry));
        }
        self.journal().telemetry(&event);
        Ok(())
    }
}
