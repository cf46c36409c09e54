//! Session analytics end to end: real WebSocket sessions, then the /api
//! answers (http-api.md), a file per endpoint or concern.

mod access;
mod aggregates;
mod pagination;
mod params;
mod retention;
mod sessions;

use serde_json::Value;

/// An RFC 3339 time of an answer, in milliseconds since the epoch.
fn ms(text: &Value) -> i128 {
    let t = chatsubo::timefmt::parse_rfc3339(text.as_str().expect("a time")).expect("RFC 3339");
    t.unix_timestamp_nanos() / 1_000_000
}
