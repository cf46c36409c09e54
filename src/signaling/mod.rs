//! Signaling: rooms, the per-connection loop, resume tokens and limits.
//! Data flows one way: socket → protocol (parse) → here (decide) → the
//! receivers' outbound queues; what happens is recorded by the [`Journal`]
//! (metrics, history, logs).
//!
//! [`Hub`] is the shared state; `connection/` is one client's loop, with a
//! file per action; `room/` and `registry` hold the rooms; `outbox` is a
//! connection's bounded queue; `resume`, `grace` and `restore` keep a
//! dropped peer's place; `limits` caps what one client can take. A
//! connection's [`Dialect`] reads and writes its wire protocol: [`Native`]
//! for Chatsubo's own, `crate::adapters` for foreign ones.

mod connection;
mod dialect;
mod grace;
mod hub;
mod ice;
mod ids;
mod journal;
mod labels;
mod limits;
mod native;
mod outbox;
mod registry;
mod restore;
mod resume;
mod room;

pub use connection::{CLOSE_SUPERSEDED, ConnectionInfo, Entry, serve};
pub use dialect::{Answer, Dialect, Relay, RoomKind, UnknownPeer, Welcome};
pub use hub::{Hub, OUTBOUND_QUEUE};
pub use ice::{IceServers, turn_credential};
pub use ids::{IdGenerator, PeerId, peer_id_of};
pub use journal::Journal;
pub use labels::{DropReason, KickReason};
pub use limits::{
    ABUSE_STRIKES, ABUSE_WINDOW, ConnectionLimits, ConnectionPermit, Refused, Throttle, Verdict,
};
pub use native::Native;
pub use outbox::{ConnHandle, Frame, LiveCounts, MessageCounts, Queued, StopReason, outbox};
pub use registry::RoomRegistry;
pub use restore::{Restored, restored_deadline};
pub use resume::{Redeemed, ResumeTokens};
pub use room::{MAX_HELD_MESSAGES, MemberSnapshot, Room, RoomKey};
