//! `GET /health`: whether the server is serving, and a few live numbers.

use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;
use warp::Filter;
use warp::Reply;
use warp::http::StatusCode;
use warp::reply::Response;

use crate::signaling::Hub;
use crate::timefmt;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Health {
    status: &'static str,
    uptime: f64,
    active_connections: i64,
    active_rooms: usize,
    storage: &'static str,
    version: &'static str,
    timestamp: String,
}

pub fn route(hub: Arc<Hub>) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path("health")
        .and(warp::path::end())
        .and(warp::get().or(warp::head()).unify())
        .map(move || health(&hub))
}

fn health(hub: &Hub) -> Response {
    let storage_ok = hub.storage_ok();
    let status = if hub.shutdown.is_cancelled() {
        "shutting_down"
    } else if !storage_ok {
        "degraded"
    } else {
        "healthy"
    };
    let body = Health {
        status,
        uptime: hub.started_at.elapsed().as_secs_f64(),
        active_connections: hub.metrics.connections.open(),
        active_rooms: hub.rooms.len(),
        storage: if storage_ok { "ok" } else { "error" },
        version: env!("CARGO_PKG_VERSION"),
        timestamp: timefmt::rfc3339_millis(OffsetDateTime::now_utc()),
    };
    let code = if status == "healthy" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    warp::reply::with_status(warp::reply::json(&body), code).into_response()
}
