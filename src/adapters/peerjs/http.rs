//! The HTTP side of PeerJS under `/peerjs`: the server's description, a
//! fresh id for a client that brings none, the (disabled) peer list, and
//! CORS as peerjs-server answers it (a PeerJS app is served from its own
//! origin): the request's `Origin` reflected, or only those of
//! `--allowed-origin` when it is set.

use std::sync::Arc;

use warp::Filter;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use warp::reply::{Reply, Response};

use crate::signaling::Hub;

/// What `GET /peerjs` says, as peerjs-server's `app.json`.
const INFO: &str = r#"{"name":"PeerJS Server","description":"A server side element to broker connections between PeerJS clients.","website":"https://peerjs.com/"}"#;

/// `GET /peerjs`, `GET /peerjs/<key>/id`, `GET /peerjs/<key>/peers`, and
/// the preflights of anything under `/peerjs`.
pub fn routes(
    hub: Arc<Hub>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let get = warp::get().or(warp::head()).unify();
    let info = warp::path::end().and(get).map(|| {
        let mut res = INFO.into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        res
    });
    let id = warp::path!(String / "id").and(get).map(|_key: String| {
        // The body is the id and nothing else: the client uses it verbatim.
        let mut res = uuid::Uuid::new_v4().to_string().into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        res
    });
    let peers = warp::path!(String / "peers").and(get).map(|_key: String| {
        // Listing who is connected is off, as in peerjs-server by default.
        warp::reply::with_status("Unauthorized", StatusCode::UNAUTHORIZED).into_response()
    });
    let preflight = warp::options()
        .and(warp::path::tail())
        .map(|_| warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response());
    let cors_hub = hub.clone();
    warp::path("peerjs")
        .and(info.or(id).unify().or(peers).unify().or(preflight).unify())
        .and(warp::header::headers_cloned())
        .and(warp::method())
        .map(move |res: Response, headers: HeaderMap, method: Method| {
            with_cors(&cors_hub, res, &headers, &method)
        })
}

/// Adds CORS headers for the request's origin, when it may have them.
fn with_cors(hub: &Hub, mut res: Response, request: &HeaderMap, method: &Method) -> Response {
    let h = res.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    let Some(origin) = request.get(header::ORIGIN) else {
        return res;
    };
    let allowed = &hub.config.edge.allowed_origins;
    let listed = origin
        .to_str()
        .is_ok_and(|o| allowed.is_empty() || allowed.contains(&o.to_ascii_lowercase()));
    if !listed {
        return res;
    }
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    if method == Method::OPTIONS {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET,HEAD,PUT,PATCH,POST,DELETE"),
        );
        if let Some(asked) = request.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
        }
        h.insert(
            header::VARY,
            HeaderValue::from_static("Origin, Access-Control-Request-Headers"),
        );
    }
    res
}
