//! The flooding room of the flood workload: its peers join and stay silent
//! until the flood phase, then send as fast as they can, ignore
//! `RATE_LIMITED`, and come back at once as fresh peers whenever the server
//! kicks them; everything they see is tallied.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use crate::client::{self, JOIN_TIMEOUT, Ws, at_ns, write_payload};
use crate::protocols::chatsubo::{self, Chatsubo};
use crate::protocols::{Event, Protocol};
use crate::workloads::{Rng, Target, room_name};

/// What the flooding peers did (all of it in the flood phase).
#[derive(Default)]
pub struct FloodTally {
    joined: AtomicUsize,
    sent: AtomicU64,
    rate_limited: AtomicU64,
    other_errors: AtomicU64,
    relays_received: AtomicU64,
    /// Closed by the server with 1008 (seen by the client).
    kicked: AtomicU64,
    /// Ended otherwise (a write failed first, or no close frame was read).
    dropped: AtomicU64,
    reconnects: AtomicU64,
    failed_joins: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl FloodTally {
    /// The tally for the report.
    pub fn to_json(&self) -> Value {
        json!({
            "sent": self.sent.load(Ordering::Relaxed),
            "rate_limited": self.rate_limited.load(Ordering::Relaxed),
            "other_errors": self.other_errors.load(Ordering::Relaxed),
            "relays_received": self.relays_received.load(Ordering::Relaxed),
            "kicked": self.kicked.load(Ordering::Relaxed),
            "dropped": self.dropped.load(Ordering::Relaxed),
            "reconnects": self.reconnects.load(Ordering::Relaxed),
            "failed_joins": self.failed_joins.load(Ordering::Relaxed),
            "first_error": self.first_error.lock().unwrap().clone(),
        })
    }
}

/// The flooding room's peers, as tasks.
pub struct FloodingRoom {
    size: usize,
    tally: Arc<FloodTally>,
    /// The flood phase's start and end, once known (ns since the epoch).
    window_tx: watch::Sender<Option<(u64, u64)>>,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

impl FloodingRoom {
    /// Starts `size` peers joining the flooding room; each writes `batch`
    /// frames of `payload_bytes` between two flushes.
    pub fn spawn(target: &Arc<Target>, size: usize, batch: usize, payload_bytes: usize) -> Self {
        let tally = Arc::new(FloodTally::default());
        let (window_tx, window_rx) = watch::channel::<Option<(u64, u64)>>(None);
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for i in 0..size {
            let peer = Flooder {
                target: target.clone(),
                room: room_name("flood", 0),
                index: i,
                tally: tally.clone(),
                batch,
                payload_bytes,
            };
            let (window_rx, cancel) = (window_rx.clone(), cancel.clone());
            tasks.spawn(async move { peer.run(window_rx, cancel).await });
        }
        FloodingRoom {
            size,
            tally,
            window_tx,
            cancel,
            tasks,
        }
    }

    /// Waits (up to [`JOIN_TIMEOUT`]) until every peer is in the room.
    pub async fn fill(&self) -> Result<(), String> {
        let joined = || self.tally.joined.load(Ordering::Relaxed);
        let joined_by = tokio::time::Instant::now() + JOIN_TIMEOUT;
        while joined() < self.size && tokio::time::Instant::now() < joined_by {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if joined() < self.size {
            return Err(format!(
                "the flooding room did not fill: {:?}",
                self.tally.first_error.lock().unwrap()
            ));
        }
        Ok(())
    }

    /// Tells the peers when the flood phase sends (ns since the epoch).
    pub fn open(&self, window: (u64, u64)) {
        let _ = self.window_tx.send(Some(window));
    }

    /// Closes every peer (up to 10 s) and returns what they did.
    pub async fn stop(self) -> Arc<FloodTally> {
        let FloodingRoom {
            tally,
            window_tx,
            cancel,
            mut tasks,
            ..
        } = self;
        cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        tasks.abort_all();
        drop(window_tx);
        tally
    }
}

/// One peer of the flooding room.
struct Flooder {
    target: Arc<Target>,
    room: String,
    index: usize,
    tally: Arc<FloodTally>,
    batch: usize,
    payload_bytes: usize,
}

/// A flooder's connection: its peer id and who else is in the room.
struct InRoom {
    ws: Ws,
    me: String,
    mates: Vec<String>,
}

/// How a flooding connection ended.
enum Ended {
    /// The phase is over (the connection is still open).
    Done,
    /// Closed by the server with 1008.
    Kicked,
    Dropped,
}

impl Flooder {
    async fn run(
        self,
        mut window_rx: watch::Receiver<Option<(u64, u64)>>,
        cancel: CancellationToken,
    ) {
        let mut conn = match self.join().await {
            Ok(conn) => conn,
            Err(err) => {
                self.tally.first_error.lock().unwrap().get_or_insert(err);
                return;
            }
        };
        self.tally.joined.fetch_add(1, Ordering::Relaxed);
        // Silent in the room until the flood phase begins.
        let (from, to) = loop {
            if let Some(window) = *window_rx.borrow_and_update() {
                break window;
            }
            tokio::select! {
                _ = cancel.cancelled() => return client::close(conn.ws).await,
                changed = window_rx.changed() => if changed.is_err() { return },
                read = conn.ws.next() => if !self.on_read(&mut conn, read) { return },
            }
        };
        let start = at_ns(from);
        while tokio::time::Instant::now() < start {
            tokio::select! {
                _ = cancel.cancelled() => return client::close(conn.ws).await,
                _ = tokio::time::sleep_until(start) => {}
                read = conn.ws.next() => if !self.on_read(&mut conn, read) { return },
            }
        }
        let end = at_ns(to);
        let mut rng = Rng::new(0xF100D + self.index as u64);
        loop {
            let ended = tokio::select! {
                _ = cancel.cancelled() => Ended::Done,
                ended = self.flood(&mut conn, end, &mut rng) => ended,
            };
            match ended {
                Ended::Done => return client::close(conn.ws).await,
                Ended::Kicked => self.tally.kicked.fetch_add(1, Ordering::Relaxed),
                Ended::Dropped => self.tally.dropped.fetch_add(1, Ordering::Relaxed),
            };
            // Back in at once, as a fresh peer.
            loop {
                if tokio::time::Instant::now() >= end || cancel.is_cancelled() {
                    return;
                }
                match self.join().await {
                    Ok(next) => {
                        conn = next;
                        self.tally.reconnects.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Err(err) => {
                        self.tally.failed_joins.fetch_add(1, Ordering::Relaxed);
                        self.tally.first_error.lock().unwrap().get_or_insert(err);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }
    }

    /// Connects and joins the flooding room.
    async fn join(&self) -> Result<InRoom, String> {
        let addr = self.target.addr;
        tokio::time::timeout(JOIN_TIMEOUT, async {
            let mut ws = client::open(addr, &format!("ws://{addr}/ws")).await?;
            chatsubo::parse_welcome(&client::next_text(&mut ws).await?)?;
            ws.send(Message::text(chatsubo::join_resuming(&self.room, None)))
                .await
                .map_err(|e| format!("send join: {e}"))?;
            loop {
                let text = client::next_text(&mut ws).await?;
                if let Some(joined) = chatsubo::parse_joined(&text) {
                    return Ok(InRoom {
                        ws,
                        me: joined.peer_id,
                        mates: joined.peers,
                    });
                }
                if chatsubo::error_code(&text).is_some() {
                    return Err(format!("join refused: {text}"));
                }
            }
        })
        .await
        .map_err(|_| "timed out joining".to_owned())?
    }

    /// Sends batch after batch until `end`, reading whatever arrives in
    /// between.
    async fn flood(&self, conn: &mut InRoom, end: tokio::time::Instant, rng: &mut Rng) -> Ended {
        let mut payload = String::with_capacity(self.payload_bytes + 64);
        let mut frame = String::with_capacity(self.payload_bytes + 160);
        loop {
            // Everything that already arrived, without waiting for more.
            loop {
                tokio::select! {
                    biased;
                    read = conn.ws.next() => match read {
                        Some(Ok(Message::Close(close))) => {
                            let kicked = close.is_some_and(|c| c.code == CloseCode::Policy);
                            return if kicked { Ended::Kicked } else { Ended::Dropped };
                        }
                        read => if !self.on_read(conn, read) { return Ended::Dropped },
                    },
                    _ = std::future::ready(()) => break,
                }
            }
            if tokio::time::Instant::now() >= end {
                return Ended::Done;
            }
            for _ in 0..self.batch {
                let to = match conn.mates.len() {
                    0 => conn.me.as_str(),
                    n => conn.mates[rng.below(n)].as_str(),
                };
                payload.clear();
                write_payload(&mut payload, 0, 0, self.payload_bytes);
                frame.clear();
                Chatsubo.write_relay(to, &payload, &mut frame);
                if conn.ws.feed(Message::text(frame.as_str())).await.is_err() {
                    return self.after_failed_write(conn).await;
                }
            }
            if conn.ws.flush().await.is_err() {
                return self.after_failed_write(conn).await;
            }
            self.tally
                .sent
                .fetch_add(self.batch as u64, Ordering::Relaxed);
            tokio::task::yield_now().await;
        }
    }

    /// A write failed: the server has closed. Its close frame may still be
    /// readable, to tell a kick from another end.
    async fn after_failed_write(&self, conn: &mut InRoom) -> Ended {
        let read = tokio::time::timeout(Duration::from_millis(200), async {
            loop {
                match conn.ws.next().await {
                    Some(Ok(Message::Close(close))) => {
                        return close.is_some_and(|c| c.code == CloseCode::Policy);
                    }
                    Some(Ok(_)) => continue,
                    _ => return false,
                }
            }
        })
        .await;
        if read == Ok(true) {
            Ended::Kicked
        } else {
            Ended::Dropped
        }
    }

    /// Counts one read and keeps the room's members; false when the
    /// connection ended.
    fn on_read(
        &self,
        conn: &mut InRoom,
        read: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> bool {
        let text = match read {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return false,
            Some(Ok(_)) => return true,
        };
        match Chatsubo.classify(&text) {
            Event::Relay => {
                self.tally.relays_received.fetch_add(1, Ordering::Relaxed);
            }
            Event::PeerJoined => {
                if let Some(id) = chatsubo::member_of(&text) {
                    conn.mates.push(id.to_owned());
                }
            }
            Event::PeerLeft => {
                if let Some(id) = chatsubo::member_of(&text) {
                    conn.mates.retain(|m| m != id);
                }
            }
            Event::Error => {
                if chatsubo::error_code(&text) == Some("RATE_LIMITED") {
                    self.tally.rate_limited.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.tally.other_errors.fetch_add(1, Ordering::Relaxed);
                    self.tally
                        .first_error
                        .lock()
                        .unwrap()
                        .get_or_insert_with(|| text.to_string());
                }
            }
            _ => {}
        }
        true
    }
}
