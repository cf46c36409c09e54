//! One WebSocket connection from welcome to close, in whichever protocol
//! it speaks (its [`Dialect`]).
//!
//! `socket` runs the loop (reads, batched writes, the heartbeat, the close)
//! with the timers of `deadlines`; `dispatch` puts each frame through the
//! rate limit and hands it to its action: `join` (with resume; `claim` for
//! client-chosen ids), `relay`, `leave` (and the resume grace of a dropped
//! peer) or `report` (client telemetry). `end` says how a connection ended.
//! Every event goes to the session's [`Journal`].

mod claim;
mod deadlines;
mod dispatch;
mod end;
mod join;
mod leave;
mod relay;
mod report;
mod socket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use opentelemetry::trace::SpanContext;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tracing::field::Empty;

pub use end::CLOSE_SUPERSEDED;

use super::dialect::{Dialect, Welcome};
use super::journal::Journal;
use super::limits::{ConnectionPermit, Throttle};
use super::native::Native;
use super::outbox::{ConnHandle, Outbox, outbox};
use super::resume::TokenId;
use super::room::Room;
use super::{Hub, OUTBOUND_QUEUE, PeerId, ids};
use crate::protocol::{Protocol, ProtocolError, RoomName};

/// What the HTTP layer learned about the client before the upgrade.
pub struct ConnectionInfo {
    pub remote: SocketAddr,
    pub user_agent: Option<String>,
    pub permit: ConnectionPermit,
    /// The protocol the connection speaks.
    pub dialect: Arc<dyn Dialect>,
    /// The peer id the protocol assigned (matchbox's UUID) or the client
    /// chose (PeerJS's); `None`: a Chatsubo id made from the session id.
    pub peer_id: Option<PeerId>,
    /// What happens as it connects.
    pub entry: Entry,
}

impl ConnectionInfo {
    /// A connection of Chatsubo's own protocol, joining `room` at once when
    /// the upgrade named one (`?room=`, still to be validated).
    pub fn native(
        remote: SocketAddr,
        user_agent: Option<String>,
        permit: ConnectionPermit,
        room: Option<String>,
    ) -> Self {
        ConnectionInfo {
            remote,
            user_agent,
            permit,
            dialect: Arc::new(Native),
            peer_id: None,
            entry: Entry::Room(room),
        }
    }
}

/// What a connection does as it connects, before its first frame.
pub enum Entry {
    /// Joins this room (still to be validated), if one is given.
    Room(Option<String>),
    /// Joins the group of `of` peers filling up under `name` (matchbox's
    /// `?next=N`).
    Group { name: RoomName, of: usize },
    /// Claims its client-chosen peer id in a namespace with the client's
    /// token (PeerJS).
    Claim { namespace: RoomName, token: String },
    /// Is refused: the error is answered, and the connection closed.
    Refuse(ProtocolError),
}

/// Serves one upgraded WebSocket until it ends. The connection is set up
/// (and its welcome queued) at once; the future only runs it.
pub fn serve<S>(
    ws: WebSocketStream<S>,
    hub: Arc<Hub>,
    info: ConnectionInfo,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let ConnectionInfo {
        remote,
        user_agent,
        permit,
        dialect,
        peer_id,
        entry,
    } = info;
    let mut connection = Connection::new(hub, permit, dialect, peer_id);
    connection.start(remote, user_agent, entry);
    connection.run(ws)
}

struct Connection {
    hub: Arc<Hub>,
    /// The protocol it speaks, and (for the hot path) its name.
    dialect: Arc<dyn Dialect>,
    protocol: Protocol,
    id: u64,
    /// Shared, not copied, by relay spans and resume bindings.
    session_id: Arc<str>,
    /// The session id as a number: the key of its analytics records.
    session: u128,
    /// The peer id this connection acts as (changes on a resume).
    peer_id: PeerId,
    token: TokenId,
    handle: ConnHandle,
    outbox: Outbox,
    room: Option<Arc<Room>>,
    /// Whether the connection ever joined (or resumed into) a room: only
    /// connections that never did are closed by the join timeout.
    ever_joined: bool,
    throttle: Throttle,
    last_seen: Instant,
    connected_at: Instant,
    /// The connection's place under the connection caps, given back when
    /// it is dropped.
    _permit: ConnectionPermit,
    /// `ws.connection`: the parent of every message's span.
    span: tracing::Span,
    /// Its OpenTelemetry context, when relay spans are exported: the parent
    /// of relays that bring no `traceparent`.
    /// Boxed: most servers export nothing, and it is 64 bytes.
    span_context: Option<Box<SpanContext>>,
    /// Set by a rate-limit strike: how long to leave the socket unread.
    read_pause: Option<std::time::Duration>,
    /// Set when the protocol answers an error by closing (matchbox): the
    /// close frame's reason.
    closing: Option<Box<str>>,
}

impl Connection {
    fn new(
        hub: Arc<Hub>,
        permit: ConnectionPermit,
        dialect: Arc<dyn Dialect>,
        peer_id: Option<PeerId>,
    ) -> Self {
        let id = hub.next_connection_id();
        let (handle, outbox) = outbox(id, OUTBOUND_QUEUE);
        let token = hub.tokens.issue();
        let session = hub.ids.session_ulid();
        let session_id: Arc<str> = session.to_string().into();
        let peer_id = peer_id.unwrap_or_else(|| ids::peer_id_of(session));
        let ice_servers = hub.ice.as_ref().map(|ice| ice.for_peer(&peer_id));
        let welcome = dialect.welcome(&Welcome {
            peer_id: &peer_id,
            session_id: &session_id,
            resume_token: &token.text,
            heartbeat_interval_ms: hub.config.heartbeat_interval_ms,
            max_room_size: hub.config.max_room_size,
            ice_servers: ice_servers.as_deref(),
        });
        if let Some(welcome) = welcome {
            handle.send(welcome);
        }
        let now = Instant::now();
        let protocol = dialect.protocol();
        let span = tracing::info_span!(
            "ws.connection",
            session_id = &*session_id,
            peer_id = &*peer_id,
            room = Empty,
            protocol = protocol.as_str(),
        );
        let span_context = crate::telemetry::connection_context(&span).map(Box::new);
        Connection {
            dialect,
            protocol,
            closing: None,
            span,
            span_context,
            read_pause: None,
            throttle: Throttle::new(hub.config.rate_limit_per_sec, hub.config.rate_limit_burst),
            hub,
            id,
            session_id,
            session: session.0,
            peer_id,
            token: token.id,
            handle,
            outbox,
            room: None,
            ever_joined: false,
            last_seen: now,
            connected_at: now,
            _permit: permit,
        }
    }

    /// The session's journal: where every event of this connection goes.
    fn journal(&self) -> Journal<'_> {
        Journal::new(&self.hub, self.session, &self.session_id, self.protocol)
    }

    /// Counts the connection, records its start and does what its entry
    /// says. Done before its future is made, so that what only the start
    /// needs is not kept in it.
    fn start(&mut self, remote: SocketAddr, user_agent: Option<String>, entry: Entry) {
        // `ws.connection` is entered around the synchronous work only (not
        // on every poll of the connection's future): entering a span costs
        // each layer.
        let span = self.span.clone();
        let _entered = span.enter();
        self.journal()
            .connected(&self.peer_id, remote.ip(), user_agent);
        match entry {
            Entry::Room(None) => {}
            Entry::Room(Some(room)) => self.join_query_room(&room),
            Entry::Group { name, of } => self.join_group(name, of),
            Entry::Claim { namespace, token } => self.claim(namespace, &token),
            Entry::Refuse(err) => {
                self.send_error(&err);
                self.close_with(err.message);
            }
        }
    }

    // Not an `async fn`: an async fn keeps its arguments in slots of their
    // own beside the body's copies, and the socket alone is 300 bytes that
    // every idle connection would carry twice. The block below uses the
    // captured values in place.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    fn run<S>(mut self, mut ws: WebSocketStream<S>) -> impl Future<Output = ()> + Send
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        async move {
            let span = self.span.clone();
            let end = self.pump(&mut ws).await;
            span.in_scope(|| self.leave_room(end));
            self.close(&mut ws, end).await;
            let _entered = span.enter();
            self.journal().closed(
                &end,
                end.close_reason(),
                self.handle.counts().snapshot(),
                self.connected_at.elapsed(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::*;
    use crate::config::Config;
    use crate::telemetry::Metrics;

    /// Every idle connection carries its future (in its task) for as long
    /// as it lives, so its size is most of what an idle connection costs.
    /// Raise this budget only knowingly, with the idle memory measured
    /// again (`scripts/bench-compare.sh`, docs/performance.md).
    #[tokio::test]
    async fn connection_future_size() {
        const BUDGET: usize = 1_632;
        let hub = Hub::new(Arc::new(Config::defaults()), Arc::new(Metrics::new(10)));
        let (socket, _client) = tokio::io::duplex(64);
        let ws = WebSocketStream::from_raw_socket(socket, Role::Server, None).await;
        let permit = hub
            .limits
            .try_acquire("127.0.0.1".parse().unwrap())
            .unwrap();
        let info = ConnectionInfo::native("127.0.0.1:1".parse().unwrap(), None, permit, None);
        let connection = serve(ws, hub.clone(), info);
        let size = std::mem::size_of_val(&connection);
        assert!(size <= BUDGET, "the connection future is {size} bytes");
    }
}
