//! `matchbox-pair`: the real matchbox client (`matchbox_socket` 0.15 from
//! crates.io) against a signaling server, for Chatsubo's tests.
//!
//! Two native sockets in this one process join the same room URL, e.g.
//! `ws://127.0.0.1:PORT/matchbox/<room>?next=2` (Chatsubo) or
//! `ws://127.0.0.1:PORT/<room>?next=2` (matchbox_server), connect over WebRTC
//! without ICE servers (host candidates only: nothing is sent off the machine),
//! and send a packet each way on a reliable channel. One JSON line on stdout
//! tells how it went:
//!
//! - `{"ok":true,"peers":["<id of a>","<id of b>"],"received":["hello from a","hello from b"]}`
//!   and exit code 0; `received` holds what b got from a, then what a got from b;
//! - `{"ok":false,"error":"…","a":{…},"b":{…}}` and exit code 1, with how far
//!   each socket got (its id, the peer it connected to, what it received).
//!
//! Usage: `matchbox-pair <room url> [timeout in seconds, default 30]`.

use std::process::ExitCode;
use std::time::Duration;

use matchbox_socket::{Error, PeerId, RtcIceServerConfig, WebRtcSocket};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};

/// How often the sockets are looked at.
const POLL: Duration = Duration::from_millis(20);
/// How often a packet that has not arrived yet is sent again: a packet sent
/// as soon as one side sees the other Connected can be lost while the other
/// side is still finishing its handshake.
const RESEND: Duration = Duration::from_millis(250);

/// One of the two sockets, and what it has seen so far.
struct Peer {
    name: &'static str,
    socket: WebRtcSocket,
    message_loop: JoinHandle<Result<(), Error>>,
    id: Option<PeerId>,
    connected_to: Option<PeerId>,
    received: Option<String>,
}

impl Peer {
    fn join(name: &'static str, url: &str) -> Peer {
        let (socket, message_loop) = WebRtcSocket::builder(url)
            // Localhost only: no STUN (the default asks two Google servers).
            .ice_server(RtcIceServerConfig {
                urls: vec![],
                username: None,
                credential: None,
            })
            // One try: the server is local and up, and a refused upgrade
            // should fail now, not after the default 3 tries 3 s apart.
            .reconnect_attempts(Some(1))
            .add_reliable_channel()
            .build();
        Peer {
            name,
            socket,
            message_loop: tokio::spawn(message_loop),
            id: None,
            connected_to: None,
            received: None,
        }
    }

    /// Takes in what happened since the last look; an error once the
    /// message loop is gone (the server refused or dropped us, a panic…).
    async fn update(&mut self) -> Result<(), String> {
        if self.message_loop.is_finished() {
            let end = match (&mut self.message_loop).await {
                Ok(Ok(())) => "ended".to_string(),
                // The variant's text alone does not say why.
                Ok(Err(e)) => match &e {
                    Error::ConnectionFailed(why) | Error::Disconnected(why) => {
                        format!("failed: {e} ({why})")
                    }
                },
                Err(e) => format!("panicked: {e}"),
            };
            return Err(format!("{}: the message loop {end}", self.name));
        }
        self.id = self.id.or_else(|| self.socket.id());
        self.socket
            .try_update_peers()
            .map_err(|e| format!("{}: {e}", self.name))?;
        self.connected_to = self.socket.connected_peers().next();
        Ok(())
    }

    /// Reads channel 0; a packet from anyone but `from` is an error.
    fn receive(&mut self, from: PeerId) -> Result<(), String> {
        for (sender, packet) in self.socket.channel_mut(0).receive() {
            if sender != from {
                return Err(format!("{}: a packet from {sender}, not {from}", self.name));
            }
            self.received = Some(String::from_utf8_lossy(&packet).into_owned());
        }
        Ok(())
    }

    fn send_hello(&mut self, to: PeerId) {
        let hello = format!("hello from {}", self.name);
        self.socket
            .channel_mut(0)
            .send(hello.into_bytes().into(), to);
    }

    fn state(&self) -> Value {
        json!({
            "id": self.id.map(|id| id.to_string()),
            "connectedTo": self.connected_to.map(|id| id.to_string()),
            "received": self.received,
        })
    }
}

/// Waits until a and b are connected to each other, then sends a hello each
/// way until both have arrived.
async fn exchange(a: &mut Peer, b: &mut Peer) -> Result<(), String> {
    let mut last_sent: Option<Instant> = None;
    loop {
        a.update().await?;
        b.update().await?;
        if let (Some(a_id), Some(b_id), Some(a_to), Some(b_to)) =
            (a.id, b.id, a.connected_to, b.connected_to)
        {
            if a_to != b_id || b_to != a_id {
                return Err(format!(
                    "a ({a_id}) is connected to {a_to} and b ({b_id}) to {b_to}"
                ));
            }
            a.receive(b_id)?;
            b.receive(a_id)?;
            if a.received.is_some() && b.received.is_some() {
                return Ok(());
            }
            if last_sent.is_none_or(|t| t.elapsed() >= RESEND) {
                if b.received.is_none() {
                    a.send_hello(b_id);
                }
                if a.received.is_none() {
                    b.send_hello(a_id);
                }
                last_sent = Some(Instant::now());
            }
        }
        sleep(POLL).await;
    }
}

fn args() -> Result<(String, Duration), String> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or("usage: matchbox-pair <room url> [timeout in seconds]")?;
    let seconds = match args.next() {
        Some(s) => s
            .parse::<f64>()
            .map_err(|_| format!("not a number of seconds: {s}"))?,
        None => 30.0,
    };
    Ok((url, Duration::from_secs_f64(seconds)))
}

#[tokio::main]
async fn main() -> ExitCode {
    let (url, timeout) = match args() {
        Ok(args) => args,
        Err(error) => {
            println!("{}", json!({"ok": false, "error": error}));
            return ExitCode::from(2);
        }
    };
    let mut a = Peer::join("a", &url);
    let mut b = Peer::join("b", &url);
    let outcome = tokio::time::timeout(timeout, exchange(&mut a, &mut b))
        .await
        .unwrap_or_else(|_| Err(format!("timed out after {timeout:?}")));
    let (line, code) = match outcome {
        Ok(()) => (
            json!({
                "ok": true,
                "peers": [a.state()["id"], b.state()["id"]],
                "received": [b.received, a.received],
            }),
            ExitCode::SUCCESS,
        ),
        Err(error) => (
            json!({"ok": false, "error": error, "a": a.state(), "b": b.state()}),
            ExitCode::FAILURE,
        ),
    };
    println!("{line}");
    code
}
