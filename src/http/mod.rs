//! The HTTP surface: one warp filter tree for `/ws`, `/health`, `/metrics`
//! and, with the analytics store, `/api/*`. Errors are JSON everywhere.

mod api;
mod client_addr;
mod errors;
mod health;
mod metrics;
mod slow;
mod static_files;
mod ws;

use std::sync::Arc;

use warp::Filter;
use warp::filters::BoxedFilter;

pub use client_addr::{ClientAddr, client_addr};
pub use errors::{ApiError, json_error};
pub use slow::SlowStage;
pub use ws::{Admitted, UpgradeRequest, accept, upgrade_request};

use crate::signaling::Hub;

/// Every route of the server.
pub fn routes(hub: Arc<Hub>) -> BoxedFilter<(warp::reply::Response,)> {
    SlowStage::touch_series(&hub.metrics);
    hub.metrics
        .edge
        .connections_refused
        .with_label_values(&[ws::ORIGIN_REFUSED]);
    ws::route(hub.clone())
        .or(health::route(hub.clone()))
        .unify()
        .or(metrics::route(hub.clone()))
        .unify()
        .or(api::routes(hub.clone()))
        .unify()
        .or(static_files::route(static_files::PUBLIC))
        .unify()
        .or(static_files::dashboard(api::access(hub)))
        .unify()
        .recover(errors::recover)
        .unify()
        .boxed()
}
