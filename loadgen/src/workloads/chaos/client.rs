//! The chaos workload's simulated client. It joins its room, relays to
//! random room mates, and whenever its connection drops (a kill) comes back
//! as a browser does, with the resume token of its latest welcome that got
//! into the room. It notes every session it was welcomed into, for the
//! store check; so do the short sessions (`churner`), which enter the same
//! way.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::client::{self, JOIN_TIMEOUT, Ws, now_ns, wall_ms, write_payload};
use crate::protocols::chatsubo::{self, Chatsubo, JoinedFrame};
use crate::protocols::{Event, Protocol};
use crate::workloads::Rng;

/// What the clients count, per cycle (0: before the first kill; cycle k
/// runs from the k-th restart to the next kill).
#[derive(Clone, Debug, Default)]
pub struct CycleCounts {
    pub sent: u64,
    pub received: u64,
    pub errors: u64,
    pub peer_joined: u64,
    pub peer_left: u64,
    /// Connections that dropped without a kill.
    pub unexpected_drops: u64,
    /// Attempts that reached the server but did not end in the room.
    pub failed_joins: u64,
    /// The first frame that should not have come.
    pub sample: Option<String>,
}

impl CycleCounts {
    /// Adds `other`'s counts; the first sample is kept.
    pub fn add(&mut self, other: &CycleCounts) {
        self.sent += other.sent;
        self.received += other.received;
        self.errors += other.errors;
        self.peer_joined += other.peer_joined;
        self.peer_left += other.peer_left;
        self.unexpected_drops += other.unexpected_drops;
        self.failed_joins += other.failed_joins;
        if self.sample.is_none() {
            self.sample.clone_from(&other.sample);
        }
    }
}

/// What the clients and the run share.
pub struct Shared {
    /// Kills begun: a connection that joined in an earlier cycle than this
    /// was dropped by a kill.
    pub cycle: AtomicUsize,
    pub counts: Mutex<Vec<CycleCounts>>,
    /// Membership notifications before everyone was in (rooms forming).
    pub formation: AtomicUsize,
    /// Everyone is in: from now on a `peer-joined` or `peer-left` is wrong.
    pub formed: AtomicBool,
}

impl Shared {
    /// Counts for the time before the first kill and for each of `cycles`.
    pub fn new(cycles: usize) -> Self {
        Shared {
            cycle: AtomicUsize::new(0),
            counts: Mutex::new(vec![CycleCounts::default(); cycles + 1]),
            formation: AtomicUsize::new(0),
            formed: AtomicBool::new(false),
        }
    }

    fn count(&self, cycle: usize, f: impl FnOnce(&mut CycleCounts)) {
        let mut counts = self.counts.lock().unwrap();
        let last = counts.len() - 1;
        f(&mut counts[cycle.min(last)]);
    }
}

/// A client is in its room (again).
pub struct Back {
    pub client: usize,
    pub cycle: usize,
    pub at: Instant,
    pub joined: JoinedFrame,
    /// When the token it came back with was bound (unix ms); `None` on its
    /// first join.
    pub token_bound_ms: Option<u64>,
}

/// A session a client was welcomed into.
#[derive(Clone, Debug)]
pub struct SeenSession {
    pub id: String,
    /// When the server created it (unix ms): the time in its ULID. A
    /// welcome the server sent just before a kill may be read after it.
    pub created_ms: u64,
    /// The peer id of the welcome, or the one the join gave.
    pub peer_id: String,
    /// `Some(resumed)` once it was in the room.
    pub joined: Option<bool>,
    /// When the client had closed it (unix ms); `None`: a kill ended it.
    pub closed_ms: Option<u64>,
}

/// The peer ids of every room, known once everyone is in.
pub type Plan = Option<Arc<Vec<Vec<String>>>>;

/// One client: joins, relays, and whenever its connection drops comes back
/// with the token of its latest welcome that got into the room.
pub struct ClientTask {
    pub index: usize,
    pub room: String,
    pub room_index: usize,
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    pub cancel: CancellationToken,
    pub retry: Duration,
    /// Between two relays of this client.
    pub interval: Duration,
    pub payload_bytes: usize,
}

/// The place a client holds: the token that takes it back, and when it
/// was bound.
struct Place {
    token: String,
    bound_ms: u64,
}

/// Why a connection attempt did not end in the room.
pub enum Failure {
    /// Nobody listens: the server is away.
    Refused,
    Other(String),
}

/// How a connection in the room ended.
enum Ended {
    Dropped,
    Cancelled,
}

/// A connection in the room, its `joined` frame and the welcome's token.
pub type Entered = (Ws, JoinedFrame, String);

impl ClientTask {
    /// Runs until the run ends; returns every session it was welcomed into.
    pub async fn run(
        self,
        gate: Arc<Semaphore>,
        back_tx: mpsc::UnboundedSender<Back>,
        mut plan_rx: watch::Receiver<Plan>,
    ) -> Vec<SeenSession> {
        let mut seen = Vec::new();
        let mut place: Option<Place> = None;
        let mut rng = Rng::new(self.index as u64 + 1);
        loop {
            let Some(attempt) = self.attempt(&gate, place.as_ref(), &mut seen).await else {
                break;
            };
            let (mut ws, joined, token) = match attempt {
                Ok(entered) => entered,
                Err(failure) => {
                    self.note_failure(failure);
                    let wait = self.retry.mul_f64(1.0 + rng.unit());
                    tokio::select! {
                        _ = self.cancel.cancelled() => break,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
            };
            let cycle = self.shared.cycle.load(Ordering::Relaxed);
            if place.is_none() {
                self.shared
                    .formation
                    .fetch_add(joined.peers.len(), Ordering::Relaxed);
            }
            let token_bound_ms = place.as_ref().map(|p| p.bound_ms);
            let peer_id = joined.peer_id.clone();
            place = Some(Place {
                token,
                bound_ms: wall_ms(),
            });
            let _ = back_tx.send(Back {
                client: self.index,
                cycle,
                at: Instant::now(),
                joined,
                token_bound_ms,
            });
            match self
                .in_room(&mut ws, &mut plan_rx, &mut rng, cycle, &peer_id)
                .await
            {
                Ended::Cancelled => {
                    client::close(ws).await;
                    break;
                }
                Ended::Dropped => {
                    if self.shared.cycle.load(Ordering::Relaxed) == cycle {
                        self.shared.count(cycle, |c| c.unexpected_drops += 1);
                    }
                }
            }
        }
        seen
    }

    /// One way into the room, with the place's token when there is one;
    /// `None` when the run ended first.
    async fn attempt(
        &self,
        gate: &Arc<Semaphore>,
        place: Option<&Place>,
        seen: &mut Vec<SeenSession>,
    ) -> Option<Result<Entered, Failure>> {
        // Only the first joins are paced; comebacks are as a browser's.
        let permit = match place {
            None => tokio::select! {
                _ = self.cancel.cancelled() => return None,
                permit = gate.clone().acquire_owned() => Some(permit.expect("gate open")),
            },
            Some(_) => None,
        };
        let attempt = tokio::select! {
            _ = self.cancel.cancelled() => return None,
            attempt = tokio::time::timeout(
                JOIN_TIMEOUT,
                enter(self.addr, &self.room, place.map(|p| p.token.as_str()), seen),
            ) => {
                attempt.unwrap_or_else(|_| Err(Failure::Other("timed out joining".into())))
            }
        };
        drop(permit);
        Some(attempt)
    }

    /// Counts an attempt that reached the server (a refused connection is
    /// the server being away, and is not counted).
    fn note_failure(&self, failure: Failure) {
        if let Failure::Other(err) = failure {
            let cycle = self.shared.cycle.load(Ordering::Relaxed);
            self.shared.count(cycle, |c| {
                c.failed_joins += 1;
                c.sample.get_or_insert(err);
            });
        }
    }

    /// Relays to random room mates and reads until the connection drops or
    /// the run ends.
    async fn in_room(
        &self,
        ws: &mut Ws,
        plan_rx: &mut watch::Receiver<Plan>,
        rng: &mut Rng,
        cycle: usize,
        me: &str,
    ) -> Ended {
        let first = tokio::time::Instant::now() + self.interval.mul_f64(rng.unit());
        let mut ticker = tokio::time::interval_at(first, self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut mates: Option<Vec<String>> = None;
        let mut payload = String::with_capacity(self.payload_bytes + 64);
        let cancelled = self.cancel.cancelled();
        tokio::pin!(cancelled);
        loop {
            if mates.is_none()
                && let Some(plan) = plan_rx.borrow_and_update().as_ref()
            {
                mates = Some(
                    plan[self.room_index]
                        .iter()
                        .filter(|id| *id != me)
                        .cloned()
                        .collect(),
                );
            }
            let sending = mates.as_ref().is_some_and(|m| !m.is_empty());
            tokio::select! {
                biased;
                _ = &mut cancelled => return Ended::Cancelled,
                read = ws.next() => match read {
                    Some(Ok(Message::Text(text))) => self.on_frame(&text, cycle),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Ended::Dropped,
                    Some(Ok(_)) => {}
                },
                changed = plan_rx.changed(), if mates.is_none() => {
                    if changed.is_err() {
                        mates = Some(Vec::new());
                    }
                }
                _ = ticker.tick(), if sending => {
                    let mates = mates.as_deref().unwrap_or_default();
                    payload.clear();
                    write_payload(&mut payload, now_ns(), cycle, self.payload_bytes);
                    let mut frame = String::with_capacity(payload.len() + 96);
                    Chatsubo.write_relay(&mates[rng.below(mates.len())], &payload, &mut frame);
                    if ws.send(Message::text(frame)).await.is_err() {
                        return Ended::Dropped;
                    }
                    self.shared.count(cycle, |c| c.sent += 1);
                }
            }
        }
    }

    fn on_frame(&self, text: &str, cycle: usize) {
        let formed = self.shared.formed.load(Ordering::Relaxed);
        match Chatsubo.classify(text) {
            Event::Relay => self.shared.count(cycle, |c| c.received += 1),
            Event::PeerJoined if !formed => {
                self.shared.formation.fetch_add(1, Ordering::Relaxed);
            }
            Event::PeerJoined => self.shared.count(cycle, |c| {
                c.peer_joined += 1;
                c.sample.get_or_insert_with(|| text.to_owned());
            }),
            Event::PeerLeft => self.shared.count(cycle, |c| {
                c.peer_left += 1;
                c.sample.get_or_insert_with(|| text.to_owned());
            }),
            Event::Error => self.shared.count(cycle, |c| {
                c.errors += 1;
                c.sample.get_or_insert_with(|| text.to_owned());
            }),
            _ => {}
        }
    }
}

/// Connects, reads the welcome (noting the session in `seen`) and joins
/// `room`, resuming with `token` when there is one. Returns the connection,
/// the `joined` frame and the welcome's token.
pub async fn enter(
    addr: SocketAddr,
    room: &str,
    token: Option<&str>,
    seen: &mut Vec<SeenSession>,
) -> Result<Entered, Failure> {
    let url = format!("ws://{addr}/ws");
    let mut ws = client::open(addr, &url).await.map_err(|e| {
        if e.starts_with("connect:") {
            Failure::Refused
        } else {
            Failure::Other(e)
        }
    })?;
    let text = client::next_text(&mut ws).await.map_err(Failure::Other)?;
    let welcome = chatsubo::parse_welcome(&text).map_err(Failure::Other)?;
    seen.push(SeenSession {
        id: welcome.session_id.to_owned(),
        created_ms: ulid::Ulid::from_string(welcome.session_id)
            .map_or_else(|_| wall_ms(), |u| u.timestamp_ms()),
        peer_id: welcome.peer_id.to_owned(),
        joined: None,
        closed_ms: None,
    });
    let new_token = welcome.resume_token.to_owned();
    ws.send(Message::text(chatsubo::join_resuming(room, token)))
        .await
        .map_err(|e| Failure::Other(format!("send join: {e}")))?;
    loop {
        let text = client::next_text(&mut ws).await.map_err(Failure::Other)?;
        if let Some(joined) = chatsubo::parse_joined(&text) {
            if let Some(s) = seen.last_mut() {
                s.joined = Some(joined.resumed);
                s.peer_id.clone_from(&joined.peer_id);
            }
            return Ok((ws, joined, new_token));
        }
        if Chatsubo.classify(&text) == Event::Error {
            return Err(Failure::Other(format!("join refused: {text}")));
        }
    }
}
