//! `GET /ws`: the WebSocket upgrade, done here rather than by warp's `ws()`
//! so that the socket's buffers are sized deliberately and the connection
//! caps answer before any upgrade.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use warp::Filter;
use warp::Reply;
use warp::http::{HeaderMap, HeaderValue, StatusCode, header};
use warp::reply::Response;

use super::{ClientAddr, SlowStage, json_error};
use crate::signaling::{self, ConnectionInfo, ConnectionPermit, Hub, Refused};

#[derive(Deserialize, Default)]
struct WsQuery {
    room: Option<String>,
}

pub fn route(hub: Arc<Hub>) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let query = warp::query::<WsQuery>()
        .or(warp::any().map(WsQuery::default))
        .unify();
    warp::path("ws")
        .and(warp::path::end())
        .and(warp::get())
        .and(upgrade_request())
        .and(query)
        .map(move |request: UpgradeRequest, query: WsQuery| {
            accept(&hub, request, |client| {
                ConnectionInfo::native(client.remote, client.user_agent, client.permit, query.room)
            })
        })
}

/// What a WebSocket upgrade request brings: its headers, the upgrade to
/// wait for, and the client's address.
pub struct UpgradeRequest {
    headers: HeaderMap,
    on_upgrade: Option<OnUpgrade>,
    addr: Option<ClientAddr>,
}

/// The client of an upgrade that passed every check, and its place under
/// the connection caps.
pub struct Admitted {
    pub remote: SocketAddr,
    pub user_agent: Option<String>,
    pub permit: ConnectionPermit,
}

/// The parts of a request [`accept`] needs.
pub fn upgrade_request()
-> impl Filter<Extract = (UpgradeRequest,), Error = std::convert::Infallible> + Clone {
    warp::header::headers_cloned()
        .and(warp::ext::optional::<OnUpgrade>())
        .and(warp::ext::optional::<ClientAddr>())
        .map(|headers, on_upgrade, addr| UpgradeRequest {
            headers,
            on_upgrade,
            addr,
        })
}

/// The WebSocket settings. The read buffer is what every idle connection
/// keeps, so it is small: 512 bytes hold a join, a leave or an ICE
/// candidate in one read; an SDP offer of a few KiB takes a few reads and
/// grows the buffer as it needs.
///
/// Frames are gathered in the write buffer until the connection's loop
/// flushes, once per batch of what its queue holds (or once the buffer
/// passes [`WRITE_BUFFER_BYTES`]): the frames of one wake-up leave in one
/// `send`, instead of a system call each (the kernel's share is most of
/// what a relay costs).
pub fn socket_config(max_message_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes))
}

/// Bytes of frames the write buffer gathers before it writes without
/// waiting for the flush. Its allocation stays as large as the largest
/// batch it held, so it is kept well below the 4 MiB it may hold in all.
pub const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// Accepts a WebSocket upgrade after the checks every endpoint shares (a
/// valid handshake, no shutdown, an allowed origin, a place under the
/// connection caps), and serves the connection `connection` describes, of
/// whichever protocol.
pub fn accept(
    hub: &Arc<Hub>,
    request: UpgradeRequest,
    connection: impl FnOnce(Admitted) -> ConnectionInfo,
) -> Response {
    let UpgradeRequest {
        headers,
        on_upgrade,
        addr,
    } = request;
    let headers = &headers;
    let key = match handshake_key(headers) {
        Ok(key) => key,
        Err(refused) => return *refused,
    };
    if let Err(refused) = check_origin(hub, headers) {
        return *refused;
    }
    let (Some(on_upgrade), Some(ClientAddr(remote))) = (on_upgrade, addr) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "this connection cannot be upgraded",
        );
    };
    if hub.shutdown.is_cancelled() {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVER_SHUTTING_DOWN",
            "the server is shutting down",
        );
    }
    let permit = match admit(hub, remote.ip()) {
        Ok(permit) => permit,
        Err(refused) => return *refused,
    };
    let info = connection(Admitted {
        remote,
        user_agent: user_agent(headers),
        permit,
    });
    spawn_connection(hub, on_upgrade, info);
    switching_protocols(key.as_bytes())
}

/// The client's `User-Agent`, at most 256 characters.
fn user_agent(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(256).collect())
}

/// The `Sec-WebSocket-Key` of a valid version-13 upgrade request, or the
/// answer to one that is not.
fn handshake_key(headers: &HeaderMap) -> Result<&HeaderValue, Box<Response>> {
    let header_has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(token))
    };
    if !header_has(header::UPGRADE, "websocket") || !header_has(header::CONNECTION, "upgrade") {
        return Err(Box::new(json_error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "this endpoint speaks WebSocket only (Upgrade: websocket)",
        )));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut res = json_error(
            StatusCode::UPGRADE_REQUIRED,
            "BAD_REQUEST",
            "only WebSocket version 13 is supported",
        );
        res.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return Err(Box::new(res));
    }
    headers.get(header::SEC_WEBSOCKET_KEY).ok_or_else(|| {
        Box::new(json_error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "missing Sec-WebSocket-Key",
        ))
    })
}

/// With `--allowed-origin`, a browser's upgrade (it sends `Origin`) from a
/// page of another origin is refused before the WebSocket opens: otherwise
/// any web site could use this server, and the TURN credentials it hands
/// out. Clients that send no `Origin` (native apps) are served.
fn check_origin(hub: &Hub, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let allowed = &hub.config.edge.allowed_origins;
    let Some(origin) = headers.get(header::ORIGIN).filter(|_| !allowed.is_empty()) else {
        return Ok(());
    };
    let origin = String::from_utf8_lossy(origin.as_bytes()).to_ascii_lowercase();
    if allowed.contains(&origin) {
        return Ok(());
    }
    hub.metrics
        .edge
        .connections_refused
        .with_label_values(&[ORIGIN_REFUSED])
        .inc();
    let shown: String = origin.chars().take(256).collect();
    tracing::info!(event = "origin_refused", origin = %shown, "WebSocket upgrade from a page of an origin not in --allowed-origin");
    Err(Box::new(json_error(
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        "this server does not accept WebSocket connections from pages of this origin",
    )))
}

/// The `reason` label of upgrades refused by `--allowed-origin`.
pub const ORIGIN_REFUSED: &str = "origin";

/// A place under the connection caps for a client at `address`, or the
/// answer that it has none (counted and logged).
fn admit(hub: &Hub, address: IpAddr) -> Result<ConnectionPermit, Box<Response>> {
    let refused = match hub.limits.try_acquire(address) {
        Ok(permit) => return Ok(permit),
        Err(refused) => refused,
    };
    hub.metrics
        .edge
        .connections_refused
        .with_label_values(&[refused.as_str()])
        .inc();
    tracing::warn!(
        event = "connection_refused",
        cap = refused.as_str(),
        remote_addr = %address,
        "connection cap reached"
    );
    let (status, message) = match refused {
        Refused::Total => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is at its connection limit; retry later",
        ),
        Refused::PerAddress => (
            StatusCode::TOO_MANY_REQUESTS,
            "too many connections from your address",
        ),
    };
    let mut res = json_error(status, "TOO_MANY_CONNECTIONS", message);
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    Err(Box::new(res))
}

/// Completes the upgrade in a task of its own, then runs the connection.
fn spawn_connection(hub: &Arc<Hub>, on_upgrade: OnUpgrade, info: ConnectionInfo) {
    let config = socket_config(hub.config.max_message_bytes());
    let task_hub = hub.clone();
    let handshake_timeout = hub.config.ws_handshake_timeout();
    hub.tasks.spawn(async move {
        // The connection holds its place under the caps from here on: a
        // client that never completes the upgrade must not keep it.
        let Ok(upgraded) = tokio::time::timeout(handshake_timeout, on_upgrade).await else {
            SlowStage::Handshake.count(&task_hub.metrics);
            tracing::info!(
                event = "slow_client",
                stage = "handshake",
                timeout_ms = handshake_timeout.as_millis() as u64,
                "WebSocket upgrade not completed in time"
            );
            return;
        };
        match upgraded {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                // The connection runs as a task of its own, spawned before
                // this one ends (so shutdown still waits for it): the
                // upgrade's state is freed now instead of being carried,
                // beside the connection, for as long as it lives.
                let connection = signaling::serve(ws, task_hub.clone(), info);
                task_hub.tasks.spawn(connection);
            }
            Err(err) => {
                tracing::debug!(event = "upgrade_failed", cause = %err, "WebSocket upgrade failed")
            }
        }
    });
}

/// The `101 Switching Protocols` answer to the key the client sent.
fn switching_protocols(key: &[u8]) -> Response {
    let accept = derive_accept_key(key);
    let mut res = warp::reply().into_response();
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    res
}
