//! Room names and display names: the field rules of the contract.

use std::fmt;
use std::sync::Arc;

use super::ProtocolError;

/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 64;
const MAX_ROOM_CHARS: usize = 64;

/// A valid room name: 1 to 64 characters from `[A-Za-z0-9_.-]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(Arc<str>);

impl RoomName {
    pub fn parse(text: &str) -> Result<Self, ProtocolError> {
        if text.is_empty() || text.len() > MAX_ROOM_CHARS {
            return Err(ProtocolError::invalid(
                "room must be 1 to 64 characters from [A-Za-z0-9_.-]",
            ));
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err(ProtocolError::invalid(
                "room may hold only the characters [A-Za-z0-9_.-]",
            ));
        }
        Ok(RoomName(Arc::from(text)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name itself, shared rather than copied.
    pub fn shared(&self) -> &Arc<str> {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A display name is optional and at most 64 characters; control characters
/// are refused so that it prints safely in logs and pages.
pub fn validate_display_name(text: &str) -> Result<(), ProtocolError> {
    if text.chars().count() > MAX_DISPLAY_NAME_CHARS {
        return Err(ProtocolError::invalid(
            "displayName must be at most 64 characters",
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(ProtocolError::invalid(
            "displayName must not hold control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_rules() {
        assert!(RoomName::parse("lobby").is_ok());
        assert!(RoomName::parse("A-z_0.9").is_ok());
        assert!(RoomName::parse(&"r".repeat(64)).is_ok());
        assert!(RoomName::parse(&"r".repeat(65)).is_err());
        assert!(RoomName::parse("").is_err());
        assert!(RoomName::parse("a b").is_err());
        assert!(RoomName::parse("café").is_err());
        assert!(RoomName::parse("a/b").is_err());
    }

    #[test]
    fn display_name_rules() {
        assert!(validate_display_name("ann").is_ok());
        assert!(validate_display_name(&"é".repeat(64)).is_ok());
        assert!(validate_display_name(&"é".repeat(65)).is_err());
        assert!(validate_display_name("a\nb").is_err());
    }
}
