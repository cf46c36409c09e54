//! The browser client and the demo pages, compiled into the binary so that a
//! fresh `cargo run` serves them with no files beside it.

use warp::Filter;
use warp::Reply;
use warp::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use warp::reply::Response;

/// A file served from memory.
pub struct Asset {
    pub path: &'static str,
    pub body: &'static str,
    pub content_type: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Pages anyone may load: the demo and the client library.
pub const PUBLIC: &[Asset] = &[
    Asset {
        path: "",
        body: include_str!("../../web/index.html"),
        content_type: HTML,
    },
    Asset {
        path: "chatsubo-client.js",
        body: include_str!("../../web/chatsubo-client.js"),
        content_type: JS,
    },
    Asset {
        path: "demo.js",
        body: include_str!("../../web/demo.js"),
        content_type: JS,
    },
    Asset {
        path: "style.css",
        body: include_str!("../../web/style.css"),
        content_type: CSS,
    },
];

/// The analytics page, behind the same access rule as `/api`.
pub const DASHBOARD: &[Asset] = &[
    Asset {
        path: "dashboard",
        body: include_str!("../../web/dashboard.html"),
        content_type: HTML,
    },
    Asset {
        path: "dashboard.js",
        body: include_str!("../../web/dashboard.js"),
        content_type: JS,
    },
];

/// Serves `assets` at their paths (GET and HEAD).
pub fn route(
    assets: &'static [Asset],
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::get()
        .or(warp::head())
        .unify()
        .and(warp::path::full())
        .and_then(move |path: warp::path::FullPath| async move {
            let wanted = path.as_str().trim_start_matches('/');
            assets
                .iter()
                .find(|a| a.path == wanted)
                .map(respond)
                .ok_or_else(warp::reject::not_found)
        })
}

/// The dashboard's files, behind `access` (the same rule as `/api`).
pub fn dashboard(
    access: impl Filter<Extract = (), Error = warp::Rejection> + Clone + Send + Sync + 'static,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let path = warp::path("dashboard")
        .and(warp::path::end())
        .or(warp::path("dashboard.js").and(warp::path::end()))
        .unify();
    path.and(access).and(route(DASHBOARD))
}

fn respond(asset: &Asset) -> Response {
    let mut res = asset.body.into_response();
    let headers = res.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    // Small files that change with each release: always revalidate.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    if asset.content_type == HTML {
        headers.insert(
            "content-security-policy",
            HeaderValue::from_static(
                "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data: blob:; \
                 media-src 'self' blob: mediastream:; style-src 'self'; script-src 'self'; \
                 frame-ancestors 'none'",
            ),
        );
        headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    }
    res
}
