//! Which wire protocol a connection speaks: Chatsubo's own, or one of the
//! foreign ones the same server also speaks (matchbox_server's, PeerJS's).
//! The `protocol` label of the connection and message metrics, and the
//! `protocol` field of a stored session.

use serde::{Deserialize, Serialize};

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Chatsubo,
    Peerjs,
    Matchbox,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Chatsubo, Protocol::Peerjs, Protocol::Matchbox];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Chatsubo => "chatsubo",
            Protocol::Peerjs => "peerjs",
            Protocol::Matchbox => "matchbox",
        }
    }

    /// The protocol named `text` (as the API's `protocol=` filter takes it).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == text)
    }

    /// Whether this is Chatsubo's own protocol (stored records leave it out).
    pub fn is_native(&self) -> bool {
        *self == Protocol::Chatsubo
    }
}
