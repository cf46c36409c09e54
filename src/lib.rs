//! Chatsubo: a WebRTC signaling server. Browsers meet in rooms; the server
//! relays their offers, answers and ICE candidates, and tells its operators
//! what happened.
//!
//! [`run`] is the whole server as a library call; `main` only parses the
//! configuration and calls it, and the integration tests do the same on
//! `127.0.0.1:0`.

pub mod analytics;
pub mod config;
pub mod http;
pub mod protocol;
pub mod server;
pub mod signaling;
pub mod telemetry;
pub mod timefmt;

pub use config::Config;
pub use server::run;
