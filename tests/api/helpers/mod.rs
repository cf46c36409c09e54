#![allow(dead_code)]
//! spawn_app(): the real server on 127.0.0.1:0 with a fresh data directory
//! (`app`); a WebSocket test client that speaks the protocol over a real
//! socket (`client`); the real binary as a child process (`binary`); the
//! /api answers as JSON (`api`) and the bytes a data directory holds
//! (`data_dir`).

use std::time::Duration;

mod api;
mod app;
mod binary;
mod client;
mod data_dir;

pub use api::*;
pub use app::*;
pub use binary::*;
pub use client::*;
pub use data_dir::*;

/// How long a test waits for a message that must come.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// A TCP port free on 127.0.0.1 a moment ago, for a child process to listen on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether `text` is an RFC 3339 UTC time with milliseconds
/// (`2026-11-28T05:00:00.123Z`), as the contract writes every timestamp.
pub fn is_rfc3339_millis_utc(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    b.len() == 24
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..23)
        && b[23] == b'Z'
        && time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_ok()
}
