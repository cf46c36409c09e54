//! Chatsubo: a WebRTC signaling server. Browsers meet in rooms; the server
//! relays their offers, answers and ICE candidates, and tells its operators
//! what happened.
//!
//! [`run`] is the whole server as a library call; `main` only parses the
//! configuration and calls it, and the integration tests do the same on
//! `127.0.0.1:0`.
//!
//! # The map
//!
//! Each module may use only the ones below it (`scripts/check-layers.py`
//! checks this), and shows what it offers in its `mod.rs`:
//!
//! ```text
//! app          start-up and shut-down: store, hub, background loops, serve
//! server       the accept loop, per-connection HTTP limits, graceful shutdown
//! adapters     foreign protocols at the edge: matchbox, PeerJS
//! http         the warp filter tree: /ws upgrade, /health, /metrics, /api, pages
//! signaling    rooms, the per-connection loop, resume, limits, the journal
//! analytics    the history: recorder, writer, sled store, queries, retention
//! telemetry    the metrics registry, JSON logs, trace export
//! config       every flag, its variable and default
//! protocol     wire messages, validation, ids, error codes (and clock,
//!              timefmt beside it)
//! ```
//!
//! # The data flow
//!
//! A frame goes one way: socket → `protocol::parse` → `signaling` decides
//! (the connection's action, the room) → the receivers' bounded outbound
//! queues → their sockets. What happened goes to the connection's
//! `signaling::Journal`, which counts it in `telemetry`'s metrics, writes
//! its log line and hands an event to the `analytics::Recorder`, a bounded
//! queue that never waits; the writer task turns events into batches of
//! store writes. `/api` reads the store and the hub's live rooms.
//! `docs/architecture.md` follows a relayed offer and a join through it.

pub mod adapters;
pub mod analytics;
mod app;
pub mod clock;
pub mod config;
pub mod http;
pub mod protocol;
pub mod server;
pub mod signaling;
pub mod telemetry;
pub mod timefmt;

pub use app::run;
pub use config::Config;
