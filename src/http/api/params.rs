//! The query parameters of `/api/*`: each at most once, none unknown, and
//! each checked (a bad one is a 400 that says what was expected).

use std::collections::HashMap;

use time::OffsetDateTime;

use crate::clock::now_ms;
use crate::http::ApiError;
use crate::protocol::{Protocol, RoomName};
use crate::timefmt;

/// Range of `/api/churn` and `/api/stats` when `since` is absent.
pub const DEFAULT_RANGE_MS: u64 = 24 * 3_600_000;

/// The query string, as warp hands it over.
pub type Query = Vec<(String, String)>;

/// The query parameters, each at most once, none unknown.
pub fn params<'a>(
    query: &'a Query,
    allowed: &[&str],
) -> Result<HashMap<&'a str, &'a str>, ApiError> {
    let mut out = HashMap::new();
    for (name, value) in query {
        if !allowed.contains(&name.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown parameter {name:?}; allowed: {}",
                allowed.join(", ")
            )));
        }
        if out.insert(name.as_str(), value.as_str()).is_some() {
            return Err(ApiError::bad_request(format!(
                "parameter {name} is given more than once"
            )));
        }
    }
    Ok(out)
}

fn time_param(p: &HashMap<&str, &str>, name: &str) -> Result<Option<u64>, ApiError> {
    let Some(text) = p.get(name) else {
        return Ok(None);
    };
    let at = timefmt::parse_rfc3339(text).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{name} must be an RFC 3339 time such as 2026-11-28T05:00:00.000Z"
        ))
    })?;
    let ms = at.unix_timestamp_nanos() / 1_000_000;
    if !(0..(1i128 << 48)).contains(&ms) {
        return Err(ApiError::bad_request(format!("{name} is out of range")));
    }
    Ok(Some(ms as u64))
}

pub fn range(p: &HashMap<&str, &str>) -> Result<(Option<u64>, Option<u64>), ApiError> {
    let since = time_param(p, "since")?;
    let until = time_param(p, "until")?;
    if let (Some(s), Some(u)) = (since, until)
        && s > u
    {
        return Err(ApiError::bad_request("since must not be after until"));
    }
    Ok((since, until))
}

pub fn room_param(p: &HashMap<&str, &str>) -> Result<Option<String>, ApiError> {
    match p.get("room") {
        None => Ok(None),
        Some(text) => RoomName::parse(text)
            .map(|r| Some(r.as_str().to_string()))
            .map_err(|_| {
                ApiError::bad_request("room must be 1 to 64 characters from [A-Za-z0-9_.-]")
            }),
    }
}

pub fn protocol_param(p: &HashMap<&str, &str>) -> Result<Option<Protocol>, ApiError> {
    match p.get("protocol") {
        None => Ok(None),
        Some(text) => Protocol::parse(text)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request("protocol must be chatsubo, peerjs or matchbox")),
    }
}

pub fn peer_param(p: &HashMap<&str, &str>) -> Result<Option<String>, ApiError> {
    match p.get("peer") {
        None => Ok(None),
        Some(text)
            if !text.is_empty()
                && text.len() <= 64
                && text.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b' ')
                }) =>
        {
            Ok(Some(text.to_string()))
        }
        Some(_) => Err(ApiError::bad_request(
            "peer must be a peer id such as p_01JD… (a PeerJS id, a matchbox UUID)",
        )),
    }
}

/// The range of an aggregate query: `until` defaults to now, `since` to a
/// day before `until`.
pub fn aggregate_range(p: &HashMap<&str, &str>) -> Result<(u64, u64), ApiError> {
    let (since, until) = range(p)?;
    let until = until.unwrap_or_else(|| now_ms() + 1);
    let since = since.unwrap_or_else(|| until.saturating_sub(DEFAULT_RANGE_MS));
    if since > until {
        return Err(ApiError::bad_request("since must not be after until"));
    }
    Ok((since, until))
}

pub fn bad(err: ApiError) -> warp::Rejection {
    warp::reject::custom(err)
}

/// A stored time (unix ms) as the contract writes it.
pub fn at(ms: u64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    timefmt::rfc3339_millis(t)
}
