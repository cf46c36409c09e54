//! The foreign protocols the server also speaks: PeerJS's keys and how long
//! it queues messages for an id that is not connected.

use std::time::Duration;

use clap::Args;

use crate::protocol::RoomName;

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Other clients' protocols (PeerJS, matchbox)")]
pub struct AdaptersConfig {
    /// A PeerJS key the /peerjs endpoint accepts (repeatable; comma-separated
    /// in the variable). Each key is one namespace of PeerJS ids, stored as
    /// a room of that name.
    #[arg(long = "peerjs-key", env = "CHATSUBO_PEERJS_KEY", value_name = "KEY",
          value_delimiter = ',', default_value = "peerjs", value_parser = parse_key)]
    pub peerjs_keys: Vec<RoomName>,

    /// Milliseconds a PeerJS message for an id that is not connected waits
    /// for it, before its sender gets EXPIRE (as peerjs-server does).
    #[arg(long = "peerjs-expire-ms", env = "CHATSUBO_PEERJS_EXPIRE_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(50..=600_000))]
    pub peerjs_expire_ms: u64,
}

impl Default for AdaptersConfig {
    fn default() -> Self {
        AdaptersConfig {
            peerjs_keys: vec![RoomName::parse("peerjs").expect("a valid name")],
            peerjs_expire_ms: 5000,
        }
    }
}

impl AdaptersConfig {
    /// How long a PeerJS message for an absent id waits.
    pub fn peerjs_expire(&self) -> Duration {
        Duration::from_millis(self.peerjs_expire_ms)
    }
}

/// A key is a room name: 1 to 64 characters from `[A-Za-z0-9_.-]`.
fn parse_key(text: &str) -> Result<RoomName, String> {
    RoomName::parse(text.trim())
        .map_err(|_| format!("'{text}' is not a key (1 to 64 characters from [A-Za-z0-9_.-])"))
}
