//! Causes room-full rejections on a running server, for the Prometheus
//! end-to-end check (`scripts/prometheus-e2e.sh`).
//!
//! Usage: `room_full WS_URL [ROOM] [REJECTIONS]`, for example
//! `room_full ws://127.0.0.1:8080/ws e2e 20`. The server must run with
//! `--max-room-size 1`: one peer takes the room and stays; every further
//! peer's join must be refused with `ROOM_FULL`. Exits non-zero otherwise.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(5);

/// The next JSON text frame, skipping pings and other frames.
async fn next_json(socket: &mut Socket) -> Result<Value, String> {
    loop {
        let frame = tokio::time::timeout(WAIT, socket.next())
            .await
            .map_err(|_| "no answer within 5 s".to_string())?
            .ok_or("connection closed")?
            .map_err(|e| e.to_string())?;
        if let Message::Text(text) = frame {
            return serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"));
        }
    }
}

/// Connects, reads `welcome`, sends `join`, and returns the answer.
async fn join(url: &str, room: &str) -> Result<(Socket, Value), String> {
    let (mut socket, _) = connect_async(url)
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let welcome = next_json(&mut socket).await?;
    if welcome["type"] != "welcome" {
        return Err(format!("expected welcome, got {welcome}"));
    }
    let join = json!({"type": "join", "room": room, "displayName": "e2e"});
    socket
        .send(Message::text(join.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    let answer = next_json(&mut socket).await?;
    Ok((socket, answer))
}

async fn run(url: &str, room: &str, rejections: u32) -> Result<(), String> {
    let (mut holder, answer) = join(url, room).await?;
    if answer["type"] != "joined" {
        return Err(format!("the first peer could not join {room}: {answer}"));
    }
    for n in 1..=rejections {
        let (mut socket, answer) = join(url, room).await?;
        if answer["type"] != "error" || answer["code"] != "ROOM_FULL" {
            return Err(format!("join {n}: expected ROOM_FULL, got {answer}"));
        }
        let _ = socket.close(None).await;
    }
    let _ = holder.close(None).await;
    println!("room_full: {rejections} joins refused with ROOM_FULL in room {room}");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(url) = args.first() else {
        eprintln!("usage: room_full WS_URL [ROOM] [REJECTIONS]");
        return std::process::ExitCode::from(2);
    };
    let room = args.get(1).map_or("e2e", String::as_str);
    let rejections = match args.get(2).map(|n| n.parse::<u32>()) {
        None => 20,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            eprintln!("room_full: REJECTIONS must be a number");
            return std::process::ExitCode::from(2);
        }
    };
    match run(url, room, rejections).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("room_full: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
