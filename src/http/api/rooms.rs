//! `GET /api/rooms`: every room seen, or the active ones, with what is in
//! them now and their stored totals.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use warp::Reply;
use warp::reply::Response;

use super::params::{Query, at, bad, params};
use super::{blocking, store};
use crate::analytics::{self, RoomStats};
use crate::clock::now_ms;
use crate::http::ApiError;
use crate::signaling::Hub;

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

pub async fn list_rooms(hub: Arc<Hub>, q: Query) -> Result<Response, warp::Rejection> {
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
                if let Some(s) = analytics::room_totals(&*store, &name)? {
                    m.insert(name, s);
                }
            }
            Ok(m)
        } else {
            analytics::all_room_totals(&*store)
        }
    })
    .await?;
    let now = now_ms();
    // One name may be a room of each protocol (and several groups of one).
    let live: HashMap<String, usize> = live.into_iter().fold(HashMap::new(), |mut m, (n, c)| {
        *m.entry(n).or_default() += c;
        m
    });
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
