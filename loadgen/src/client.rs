//! One client connection: TCP with Nagle off, the WebSocket handshake with
//! small buffers, and the way into a room for any [`Protocol`]. Also the
//! relay payload, which carries its send time and step.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::protocols::{Event, PeerKey, Protocol};

/// A client WebSocket.
pub type Ws = WebSocketStream<TcpStream>;

/// Time allowed for connecting, the handshake, the welcome and the join.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Time allowed for the closing handshake.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Client socket settings: a small read buffer (20,000 of them must fit,
/// and tungstenite zero-fills it before every read attempt, which across
/// 1,000 sockets is mostly cache misses; 2 KiB still holds three relays),
/// and a write buffer that collects fed frames until the flush, so that a
/// batch of relays leaves in one write.
pub fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(2 * 1024)
        .write_buffer_size(64 * 1024)
        .max_write_buffer_size(16 * 1024 * 1024)
}

/// The instant all timestamps of this run count from.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`].
pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// The instant `ns` nanoseconds after [`epoch`].
pub fn at_ns(ns: u64) -> tokio::time::Instant {
    tokio::time::Instant::from_std(epoch() + Duration::from_nanos(ns))
}

/// Sleeps until `ns` nanoseconds after [`epoch`].
pub async fn sleep_until_ns(ns: u64) {
    tokio::time::sleep_until(at_ns(ns)).await;
}

/// Unix milliseconds now (the server's clock is the same machine's).
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A connection that is in its room.
pub struct Joined {
    pub ws: Ws,
    pub peer_id: String,
    /// From the start of the TCP connect to the welcome.
    pub welcome_latency: Duration,
    /// From the start of the TCP connect to being in the room.
    pub join_latency: Duration,
    /// Membership notifications seen so far (the joined list counts).
    pub membership_events: usize,
}

/// Opens a WebSocket to `url` on `addr` with Nagle's algorithm off.
pub async fn open(addr: SocketAddr, url: &str) -> Result<Ws, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(url, tcp, Some(socket_config()))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
    Ok(ws)
}

/// Connects, reads the welcome and joins `room`, within [`JOIN_TIMEOUT`].
pub async fn connect_and_join(
    protocol: &dyn Protocol,
    addr: SocketAddr,
    room: &str,
    key: &PeerKey,
) -> Result<Joined, String> {
    tokio::time::timeout(JOIN_TIMEOUT, join_inner(protocol, addr, room, key))
        .await
        .map_err(|_| "timed out joining".to_owned())?
}

async fn join_inner(
    protocol: &dyn Protocol,
    addr: SocketAddr,
    room: &str,
    key: &PeerKey,
) -> Result<Joined, String> {
    let start = Instant::now();
    let mut ws = open(addr, &protocol.url(addr, room, key)).await?;
    let first = next_text(&mut ws).await?;
    let peer_id = protocol.welcome(&first, key)?;
    let welcome_latency = start.elapsed();
    let mut membership_events = 0;
    let join = protocol.join_message(room);
    if let Some(join) = &join {
        ws.send(Message::text(join.as_str()))
            .await
            .map_err(|e| format!("send join: {e}"))?;
    }
    if join.is_some() || protocol.joined_after_welcome() {
        loop {
            let text = next_text(&mut ws).await?;
            match protocol.classify(&text) {
                Event::Joined { peers } => {
                    membership_events += peers;
                    break;
                }
                Event::PeerJoined => membership_events += 1,
                Event::Error => return Err(format!("join refused: {text}")),
                _ => {}
            }
        }
    }
    Ok(Joined {
        ws,
        peer_id,
        welcome_latency,
        join_latency: start.elapsed(),
        membership_events,
    })
}

/// The next text frame (pings are answered by tungstenite on the next read).
pub async fn next_text(ws: &mut Ws) -> Result<Utf8Bytes, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text),
            Some(Ok(Message::Close(frame))) => return Err(format!("closed by server: {frame:?}")),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("read: {e}")),
            None => return Err("connection ended".into()),
        }
    }
}

/// Starts the closing handshake and waits for the server to finish it.
pub async fn close(mut ws: Ws) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if ws.close(None).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// The key of data's send timestamp (nanoseconds since [`epoch`]); unique
/// enough that no server's own fields contain it.
const STAMP: &str = "\"lgts\":";
/// The key of the step the message was sent in.
const STEP: &str = "\"lgstep\":";

/// Padding, copied in slices rather than pushed a character at a time.
const PAD: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

/// Writes the relay payload: a JSON object of exactly `size` bytes (or its
/// minimum size when `size` is smaller) carrying the send time and step.
pub fn write_payload(out: &mut String, sent_ns: u64, step: usize, size: usize) {
    use std::fmt::Write as _;
    let start = out.len();
    let _ = write!(out, "{{{STAMP}{sent_ns},{STEP}{step},\"pad\":\"");
    // What remains after the padding: `"}`.
    let mut missing = size.saturating_sub(out.len() - start + 2);
    while missing > 0 {
        let n = missing.min(PAD.len());
        out.push_str(&PAD[..n]);
        missing -= n;
    }
    out.push_str("\"}");
}

/// The send time and step of a relayed payload somewhere in `frame`: as
/// written, or escaped inside a JSON string (matchbox peers send it as the
/// string of an `IceCandidate`), whatever the order of the keys.
pub fn read_stamp(frame: &str) -> Option<(u64, usize)> {
    let sent = number_after(frame, STAMP)?;
    let step = number_after(frame, STEP)?;
    Some((sent, step as usize))
}

/// The number after the first `"key":` (or `\"key\":`) in `frame`.
fn number_after(frame: &str, key: &str) -> Option<u64> {
    let name = key.trim_end_matches(':').trim_matches('"');
    let mut from = 0;
    while let Some(i) = frame[from..].find(name) {
        let rest = &frame[from + i + name.len()..];
        let rest = rest.strip_prefix('\\').unwrap_or(rest);
        if let Some(r) = rest.strip_prefix("\":") {
            return Some(number_at(r)?.0);
        }
        from += i + name.len();
    }
    None
}

/// The decimal number at the start of `text` and its length.
fn number_at(text: &str) -> Option<(u64, usize)> {
    let len = text.bytes().take_while(u8::is_ascii_digit).count();
    let value = text[..len].parse().ok()?;
    Some((value, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_asked_size_and_reads_back() {
        let mut out = String::new();
        write_payload(&mut out, 123_456_789_012, 3, 400);
        assert_eq!(out.len(), 400);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["lgts"], 123_456_789_012u64);
        let frame = format!(r#"{{"Signal":{{"sender":"x","data":{out}}}}}"#);
        assert_eq!(read_stamp(&frame), Some((123_456_789_012, 3)));
        // Servers that sort keys (matchbox re-serialises through a map).
        assert_eq!(
            read_stamp(r#"{"data":{"lgstep":1,"lgts":42,"pad":"x"}}"#),
            Some((42, 1))
        );
        assert_eq!(read_stamp(r#"{"type":"peer-joined"}"#), None);
        // Inside a string, as matchbox peers send it.
        let escaped = serde_json::to_string(&out).unwrap();
        let frame = format!(r#"{{"Signal":{{"sender":"x","data":{{"IceCandidate":{escaped}}}}}}}"#);
        assert_eq!(read_stamp(&frame), Some((123_456_789_012, 3)));
    }
}
