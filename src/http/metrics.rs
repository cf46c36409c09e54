//! `GET /metrics`: the Prometheus text exposition.

use std::sync::Arc;

use warp::Filter;
use warp::Reply;
use warp::reply::Response;

use crate::signaling::Hub;

pub fn route(hub: Arc<Hub>) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path("metrics")
        .and(warp::path::end())
        .and(warp::get())
        .map(move || {
            warp::reply::with_header(
                hub.metrics.render(),
                "content-type",
                "text/plain; version=0.0.4; charset=utf-8",
            )
            .into_response()
        })
}
