//! `/api/*`: the session analytics of `http-api.md`. Every request passes
//! the access rule first (bearer token when `--api-token` is set, loopback
//! clients only when it is not), then its parameters are checked (400 for
//! any bad one), then the query runs off the async threads.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use warp::Filter;
use warp::Reply;
use warp::http::StatusCode;
use warp::reply::Response;

use super::{ApiError, ClientAddr};
use crate::analytics::query::{self, SessionFilter};
use crate::analytics::recorder::now_ms;
use crate::analytics::writer::RoomStats;
use crate::analytics::{SessionRecord, Store, StoredEvent};
use crate::protocol::RoomName;
use crate::signaling::Hub;
use crate::timefmt;

/// Default and largest page of `/api/sessions`.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 1000;
/// Range of `/api/churn` and `/api/stats` when `since` is absent.
pub const DEFAULT_RANGE_MS: u64 = 24 * 3_600_000;
/// Widest churn bucket, in seconds (one week).
pub const MAX_BUCKET_SECS: u64 = 7 * 86_400;

type Query = Vec<(String, String)>;

/// Every `/api` route, behind the access rule.
pub fn routes(
    hub: Arc<Hub>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let with_hub = {
        let hub = hub.clone();
        warp::any().map(move || hub.clone())
    };
    let query = warp::query::<Query>();
    let sessions = warp::path("sessions")
        .and(warp::path::end())
        .and(warp::get())
        .and(with_hub.clone())
        .and(query)
        .and_then(list_sessions);
    let session = warp::path("sessions")
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::get())
        .and(with_hub.clone())
        .and(query)
        .and_then(one_session);
    let rooms = warp::path("rooms")
        .and(warp::path::end())
        .and(warp::get())
        .and(with_hub.clone())
        .and(query)
        .and_then(list_rooms);
    let churn = warp::path("churn")
        .and(warp::path::end())
        .and(warp::get())
        .and(with_hub.clone())
        .and(query)
        .and_then(churn);
    let stats = warp::path("stats")
        .and(warp::path::end())
        .and(warp::get())
        .and(with_hub)
        .and(query)
        .and_then(stats);
    warp::path("api").and(access(hub)).and(
        sessions
            .or(session)
            .unify()
            .or(rooms)
            .unify()
            .or(churn)
            .unify()
            .or(stats)
            .unify(),
    )
}

/// The access rule, as a filter that extracts nothing.
pub fn access(hub: Arc<Hub>) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and(warp::ext::optional::<ClientAddr>())
        .and_then(move |auth: Option<String>, addr: Option<ClientAddr>| {
            let verdict = authorize(hub.config.api_token.as_deref(), auth.as_deref(), addr);
            async move { verdict.map_err(warp::reject::custom) }
        })
        .untuple_one()
}

/// With a token: `Authorization: Bearer <token>`, compared in constant time
/// (of the SHA-256 of both, so that not even the length leaks). Without
/// one: loopback clients only.
pub fn authorize(
    token: Option<&str>,
    header: Option<&str>,
    addr: Option<ClientAddr>,
) -> Result<(), ApiError> {
    match token {
        Some(expected) => {
            let given = header.map(presented_token).unwrap_or_default();
            let given = given.as_str();
            let a = Sha256::digest(given.as_bytes());
            let b = Sha256::digest(expected.as_bytes());
            if bool::from(a.ct_eq(&b)) && !given.is_empty() {
                Ok(())
            } else {
                Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    "send Authorization: Bearer <api token>",
                ))
            }
        }
        None => match addr {
            Some(ClientAddr(a)) if a.ip().is_loopback() => Ok(()),
            _ => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                "without --api-token the API answers loopback clients only",
            )),
        },
    }
}

/// The token an `Authorization` header presents: `Bearer <token>`, or (for
/// a browser opening /dashboard) `Basic` with the token as the password.
fn presented_token(header: &str) -> String {
    let Some((scheme, value)) = header.split_once(' ') else {
        return String::new();
    };
    if scheme.eq_ignore_ascii_case("bearer") {
        return value.trim().to_string();
    }
    if scheme.eq_ignore_ascii_case("basic") {
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok());
        if let Some((_, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
            return password.to_string();
        }
    }
    String::new()
}

/// The query parameters, each at most once, none unknown.
fn params<'a>(query: &'a Query, allowed: &[&str]) -> Result<HashMap<&'a str, &'a str>, ApiError> {
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

fn range(p: &HashMap<&str, &str>) -> Result<(Option<u64>, Option<u64>), ApiError> {
    let since = time_param(p, "since")?;
    let until = time_param(p, "until")?;
    if let (Some(s), Some(u)) = (since, until)
        && s > u
    {
        return Err(ApiError::bad_request("since must not be after until"));
    }
    Ok((since, until))
}

fn room_param(p: &HashMap<&str, &str>) -> Result<Option<String>, ApiError> {
    match p.get("room") {
        None => Ok(None),
        Some(text) => RoomName::parse(text)
            .map(|r| Some(r.as_str().to_string()))
            .map_err(|_| {
                ApiError::bad_request("room must be 1 to 64 characters from [A-Za-z0-9_.-]")
            }),
    }
}

fn peer_param(p: &HashMap<&str, &str>) -> Result<Option<String>, ApiError> {
    match p.get("peer") {
        None => Ok(None),
        Some(text)
            if !text.is_empty()
                && text.len() <= 64
                && text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) =>
        {
            Ok(Some(text.to_string()))
        }
        Some(_) => Err(ApiError::bad_request(
            "peer must be a peer id such as p_01JD…",
        )),
    }
}

fn store(hub: &Hub) -> Result<Arc<dyn Store>, warp::Rejection> {
    hub.store.clone().ok_or_else(|| {
        warp::reject::custom(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "this server keeps no session store",
        ))
    })
}

/// Runs a store query on the blocking pool; failures are 500s, logged.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, warp::Rejection> {
    let result = tokio::task::spawn_blocking(f)
        .await
        .map_err(anyhow::Error::new)
        .and_then(|r| r);
    result.map_err(|err| {
        tracing::error!(event = "api_query_failed", cause = ?err, "analytics query failed");
        let store_down = err.chain().any(|cause| {
            matches!(
                cause.downcast_ref::<crate::analytics::StoreError>(),
                Some(crate::analytics::StoreError::Unavailable)
                    | Some(crate::analytics::StoreError::Backend(_))
            )
        });
        warp::reject::custom(if store_down {
            // The store recovers by itself (see /health); retrying is right.
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "STORAGE_UNAVAILABLE",
                "the session store is failing; retry later",
            )
        } else {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "the query failed; see the server log",
            )
        })
    })
}

fn bad(err: ApiError) -> warp::Rejection {
    warp::reject::custom(err)
}

fn at(ms: u64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    timefmt::rfc3339_millis(t)
}

/// `SESSION` of the contract.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ApiSession {
    session_id: String,
    peer_id: String,
    room: Option<String>,
    display_name: Option<String>,
    remote_addr: String,
    user_agent: Option<String>,
    connected_at: String,
    ended_at: Option<String>,
    duration_ms: Option<u64>,
    close_reason: Option<&'static str>,
    resumed_from: Option<String>,
    messages_in: u64,
    messages_out: u64,
    errors: u64,
}

impl From<SessionRecord> for ApiSession {
    fn from(s: SessionRecord) -> Self {
        ApiSession {
            session_id: s.session_id,
            peer_id: s.peer_id,
            room: s.room,
            display_name: s.display_name,
            remote_addr: s.remote_addr,
            user_agent: s.user_agent,
            connected_at: at(s.connected_at),
            ended_at: s.ended_at.map(at),
            duration_ms: s.duration_ms,
            close_reason: s.close_reason.map(|r| r.as_str()),
            resumed_from: s.resumed_from,
            messages_in: s.messages_in,
            messages_out: s.messages_out,
            errors: s.errors,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionList {
    sessions: Vec<ApiSession>,
    next_cursor: Option<String>,
}

async fn list_sessions(hub: Arc<Hub>, q: Query) -> Result<Response, warp::Rejection> {
    let p = params(&q, &["room", "peer", "since", "until", "limit", "cursor"]).map_err(bad)?;
    let (since_ms, until_ms) = range(&p).map_err(bad)?;
    let limit = match p.get("limit") {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                bad(ApiError::bad_request(format!(
                    "limit must be a whole number from 1 to {MAX_LIMIT}"
                )))
            })?,
    };
    let cursor = match p.get("cursor") {
        None => None,
        Some(text) => Some(
            ulid::Ulid::from_string(text)
                .map_err(|_| {
                    bad(ApiError::bad_request(
                        "cursor must be a nextCursor this API returned",
                    ))
                })?
                .0,
        ),
    };
    let filter = SessionFilter {
        room: room_param(&p).map_err(bad)?,
        peer: peer_param(&p).map_err(bad)?,
        since_ms,
        until_ms,
        limit,
        cursor,
    };
    let store = store(&hub)?;
    let page = blocking(move || query::sessions(&*store, &filter)).await?;
    Ok(warp::reply::json(&SessionList {
        sessions: page.sessions.into_iter().map(ApiSession::from).collect(),
        next_cursor: page.next_cursor.map(|id| ulid::Ulid(id).to_string()),
    })
    .into_response())
}

async fn one_session(id: String, hub: Arc<Hub>, q: Query) -> Result<Response, warp::Rejection> {
    params(&q, &[]).map_err(bad)?;
    let not_found = || bad(ApiError::not_found(format!("no session {id}")));
    let Ok(ulid) = ulid::Ulid::from_string(&id) else {
        return Err(not_found());
    };
    let store = store(&hub)?;
    let found = blocking(move || query::session(&*store, ulid.0)).await?;
    let Some((record, events)) = found else {
        return Err(not_found());
    };
    let mut body = serde_json::to_value(ApiSession::from(record)).expect("serializable");
    let events: Vec<serde_json::Value> = events.into_iter().map(event_json).collect();
    body["events"] = serde_json::Value::Array(events);
    Ok(warp::reply::json(&body).into_response())
}

/// `EVENT` of the contract: `at` as RFC 3339, `kind`, the kind's fields.
fn event_json(e: StoredEvent) -> serde_json::Value {
    let mut v = serde_json::to_value(&e).expect("serializable");
    v["at"] = serde_json::Value::String(at(e.at));
    v
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ApiRoom {
    room: String,
    active_peers: usize,
    peak_peers: u64,
    sessions: u64,
    first_seen: String,
    last_seen: String,
}

#[derive(Serialize)]
struct RoomList {
    rooms: Vec<ApiRoom>,
}

async fn list_rooms(hub: Arc<Hub>, q: Query) -> Result<Response, warp::Rejection> {
    let p = params(&q, &["active"]).map_err(bad)?;
    let active_only = match p.get("active").copied() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(bad(ApiError::bad_request("active must be true or false"))),
    };
    // Peers now (those inside their resume grace keep their place and count).
    let live: Vec<(String, usize)> = hub
        .rooms
        .active()
        .iter()
        .map(|r| (r.name().as_str().to_string(), r.snapshot().len()))
        .filter(|(_, n)| *n > 0)
        .collect();
    let store = store(&hub)?;
    let names: Vec<String> = live.iter().map(|(n, _)| n.clone()).collect();
    let stored = blocking(move || {
        if active_only {
            let mut m = std::collections::BTreeMap::new();
            for name in names {
                if let Some(s) = query::room(&*store, &name)? {
                    m.insert(name, s);
                }
            }
            Ok(m)
        } else {
            query::rooms(&*store)
        }
    })
    .await?;
    let now = now_ms();
    let live: HashMap<String, usize> = live.into_iter().collect();
    let mut rooms: Vec<ApiRoom> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (name, stats) in &stored {
        let active = live.get(name).copied().unwrap_or(0);
        if active_only && active == 0 {
            continue;
        }
        seen.insert(name.clone());
        rooms.push(api_room(name, active, stats));
    }
    // Rooms whose first join the writer has not stored yet.
    for (name, active) in &live {
        if !seen.contains(name) {
            let stats = RoomStats {
                peak_peers: *active as u64,
                sessions: 0,
                first_seen: now,
                last_seen: now,
            };
            rooms.push(api_room(name, *active, &stats));
        }
    }
    rooms.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.room.cmp(&b.room)));
    Ok(warp::reply::json(&RoomList { rooms }).into_response())
}

fn api_room(name: &str, active: usize, s: &RoomStats) -> ApiRoom {
    ApiRoom {
        room: name.to_string(),
        active_peers: active,
        peak_peers: s.peak_peers.max(active as u64),
        sessions: s.sessions,
        first_seen: at(s.first_seen),
        last_seen: at(s.last_seen),
    }
}

#[derive(Serialize)]
struct ChurnBucket {
    start: String,
    joins: u64,
    leaves: u64,
    rejections: u64,
    resumes: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChurnBody {
    bucket_seconds: u64,
    buckets: Vec<ChurnBucket>,
}

/// The range of an aggregate query: `until` defaults to now, `since` to a
/// day before `until`.
fn aggregate_range(p: &HashMap<&str, &str>) -> Result<(u64, u64), ApiError> {
    let (since, until) = range(p)?;
    let until = until.unwrap_or_else(|| now_ms() + 1);
    let since = since.unwrap_or_else(|| until.saturating_sub(DEFAULT_RANGE_MS));
    if since > until {
        return Err(ApiError::bad_request("since must not be after until"));
    }
    Ok((since, until))
}

async fn churn(hub: Arc<Hub>, q: Query) -> Result<Response, warp::Rejection> {
    let p = params(&q, &["room", "since", "until", "bucket"]).map_err(bad)?;
    let room = room_param(&p).map_err(bad)?;
    let (since, until) = aggregate_range(&p).map_err(bad)?;
    let bucket = match p.get("bucket") {
        None => 60,
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|b| *b >= 60 && b % 60 == 0 && *b <= MAX_BUCKET_SECS)
            .ok_or_else(|| {
                bad(ApiError::bad_request(format!(
                    "bucket must be a multiple of 60 seconds from 60 to {MAX_BUCKET_SECS}"
                )))
            })?,
    };
    let store = store(&hub)?;
    let rows =
        blocking(move || query::churn(&*store, room.as_deref(), since, until, bucket)).await?;
    Ok(warp::reply::json(&ChurnBody {
        bucket_seconds: bucket,
        buckets: rows
            .into_iter()
            .map(|(start, c)| ChurnBucket {
                start: at(start * 1000),
                joins: c.joins,
                leaves: c.leaves,
                rejections: c.rejections,
                resumes: c.resumes,
            })
            .collect(),
    })
    .into_response())
}

async fn stats(hub: Arc<Hub>, q: Query) -> Result<Response, warp::Rejection> {
    let p = params(&q, &["since", "until"]).map_err(bad)?;
    let (since, until) = aggregate_range(&p).map_err(bad)?;
    let store = store(&hub)?;
    let stats = blocking(move || query::stats(&*store, since, until)).await?;
    Ok(warp::reply::json(&stats).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Option<ClientAddr> {
        Some(ClientAddr(text.parse().unwrap()))
    }

    #[test]
    fn the_access_rule() {
        let ok = |r: Result<(), ApiError>| r.map_err(|e| e.status.as_u16());
        assert_eq!(ok(authorize(None, None, addr("127.0.0.1:9"))), Ok(()));
        assert_eq!(ok(authorize(None, None, addr("[::1]:9"))), Ok(()));
        assert_eq!(ok(authorize(None, None, addr("192.0.2.1:9"))), Err(403));
        assert_eq!(ok(authorize(None, None, None)), Err(403));
        let t = Some("s3cret");
        assert_eq!(ok(authorize(t, None, addr("127.0.0.1:9"))), Err(401));
        assert_eq!(
            ok(authorize(t, Some("Bearer nope"), addr("127.0.0.1:9"))),
            Err(401)
        );
        assert_eq!(
            ok(authorize(t, Some("s3cret"), addr("127.0.0.1:9"))),
            Err(401)
        );
        assert_eq!(ok(authorize(t, Some("Basic s3cret"), None)), Err(401));
        assert_eq!(
            ok(authorize(t, Some("Bearer s3cret"), addr("192.0.2.1:9"))),
            Ok(())
        );
        assert_eq!(ok(authorize(Some(""), Some("Bearer "), None)), Err(401));
        // "user:s3cret" and "user:nope" in Basic.
        assert_eq!(
            ok(authorize(
                t,
                Some("Basic dXNlcjpzM2NyZXQ="),
                addr("192.0.2.1:9")
            )),
            Ok(())
        );
        assert_eq!(
            ok(authorize(
                t,
                Some("Basic dXNlcjpub3Bl"),
                addr("127.0.0.1:9")
            )),
            Err(401)
        );
        assert_eq!(
            ok(authorize(t, Some("Basic !!!"), addr("127.0.0.1:9"))),
            Err(401)
        );
    }
}
