//! Integration tests: the real server on 127.0.0.1:0, real sockets.

mod helpers;
mod logs;
mod metrics;
mod signaling;
mod traces;
