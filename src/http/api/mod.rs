//! `/api/*`: the session analytics of `http-api.md`. Every request passes
//! the access rule first (`access`), then its parameters are checked
//! (`params`: 400 for any bad one), then its query runs off the async
//! threads. One file per resource: `sessions`, `rooms`, `aggregates`.

mod access;
mod aggregates;
mod params;
mod rooms;
mod sessions;

use std::sync::Arc;

use warp::Filter;
use warp::http::StatusCode;
use warp::reply::Response;

pub use access::access;

use super::ApiError;
use crate::analytics::{Store, StoreError};
use crate::signaling::Hub;

/// Every `/api` route, behind the access rule.
pub fn routes(
    hub: Arc<Hub>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let with_hub = {
        let hub = hub.clone();
        warp::any().map(move || hub.clone())
    };
    let query = warp::query::<params::Query>();
    let sessions = warp::path("sessions")
        .and(warp::path::end())
        .and(warp::get())
        .and(with_hub.clone())
        .and(query)
        .and_then(sessions::list_sessions);
    let session = warp::path("sessions")
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::get())
        .and(with_hub.clone())
        .and(query)
        .and_then(sessions::one_session);
    let rooms = warp::path("rooms")
        .and(warp::path::end())
        .and(warp::get())
        .and(with_hub.clone())
        .and(query)
        .and_then(rooms::list_rooms);
    let churn = warp::path("churn")
        .and(warp::path::end())
        .and(warp::get())
        .and(with_hub.clone())
        .and(query)
        .and_then(aggregates::churn);
    let stats = warp::path("stats")
        .and(warp::path::end())
        .and(warp::get())
        .and(with_hub)
        .and(query)
        .and_then(aggregates::stats);
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
                cause.downcast_ref::<StoreError>(),
                Some(StoreError::Unavailable) | Some(StoreError::Backend(_))
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
