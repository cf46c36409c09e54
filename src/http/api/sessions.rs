//! `GET /api/sessions` and `GET /api/sessions/{id}`.

use std::sync::Arc;

use serde::Serialize;
use warp::Reply;
use warp::reply::Response;

use super::params::{Query, at, bad, params, peer_param, protocol_param, range, room_param};
use super::{blocking, store};
use crate::analytics::{self, SessionFilter, SessionRecord, StoredEvent};
use crate::http::ApiError;
use crate::signaling::Hub;

/// Default and largest page of `/api/sessions`.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 1000;

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
    protocol: &'static str,
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
            protocol: s.protocol.as_str(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionList {
    sessions: Vec<ApiSession>,
    next_cursor: Option<String>,
}

pub async fn list_sessions(hub: Arc<Hub>, q: Query) -> Result<Response, warp::Rejection> {
    let p = params(
        &q,
        &[
            "room", "peer", "protocol", "since", "until", "limit", "cursor",
        ],
    )
    .map_err(bad)?;
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
        protocol: protocol_param(&p).map_err(bad)?,
        since_ms,
        until_ms,
        limit,
        cursor,
    };
    let store = store(&hub)?;
    let page = blocking(move || analytics::list_sessions(&*store, &filter)).await?;
    Ok(warp::reply::json(&SessionList {
        sessions: page
            .sessions
            .into_iter()
            .map(|s| ApiSession::from(so_far(&hub, s)))
            .collect(),
        next_cursor: page.next_cursor.map(|id| ulid::Ulid(id).to_string()),
    })
    .into_response())
}

pub async fn one_session(id: String, hub: Arc<Hub>, q: Query) -> Result<Response, warp::Rejection> {
    params(&q, &[]).map_err(bad)?;
    let not_found = || bad(ApiError::not_found(format!("no session {id}")));
    let Ok(ulid) = ulid::Ulid::from_string(&id) else {
        return Err(not_found());
    };
    let store = store(&hub)?;
    let found = blocking(move || analytics::session_with_events(&*store, ulid.0)).await?;
    let Some((record, events)) = found else {
        return Err(not_found());
    };
    let record = so_far(&hub, record);
    let mut body = serde_json::to_value(ApiSession::from(record)).expect("serializable");
    let events: Vec<serde_json::Value> = events.into_iter().map(event_json).collect();
    body["events"] = serde_json::Value::Array(events);
    Ok(warp::reply::json(&body).into_response())
}

/// A session still open shows what its connection has counted so far (the
/// store learns the counts when it ends): found through the room its
/// record names, where the peer is connected.
fn so_far(hub: &Hub, mut session: SessionRecord) -> SessionRecord {
    if session.ended_at.is_some() {
        return session;
    }
    let counts = session.room.as_deref().and_then(|name| {
        hub.rooms
            .named(session.protocol, name)
            .iter()
            .find_map(|room| room.live_counts(&session.peer_id))
    });
    if let Some(counts) = counts {
        session.messages_in = counts.messages_in;
        session.messages_out = counts.messages_out;
        session.errors = counts.errors;
    }
    session
}

/// `EVENT` of the contract: `at` as RFC 3339, `kind`, the kind's fields.
fn event_json(e: StoredEvent) -> serde_json::Value {
    let mut v = serde_json::to_value(&e).expect("serializable");
    v["at"] = serde_json::Value::String(at(e.at));
    v
}
