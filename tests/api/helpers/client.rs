//! A WebSocket test client that speaks the protocol over a real socket.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::PATIENCE;

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub welcome: Value,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        Client::try_connect(url).await.expect("connect")
    }

    /// Connects and reads the welcome; the handshake error if the server
    /// refused the upgrade.
    pub async fn try_connect(url: &str) -> Result<Client, WsError> {
        Client::try_connect_with(url, &[]).await
    }

    /// Connects with extra upgrade headers (`Origin`, `X-Forwarded-For`, …).
    pub async fn try_connect_with(url: &str, headers: &[(&str, &str)]) -> Result<Client, WsError> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
        let mut request = url.into_client_request()?;
        for (name, value) in headers {
            request.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        let mut c = Client {
            ws,
            welcome: Value::Null,
        };
        c.welcome = c.recv_type("welcome").await;
        Ok(c)
    }

    /// Connects and reads nothing: a foreign protocol's first frame is its
    /// own (matchbox's `IdAssigned`, PeerJS's `OPEN`).
    pub async fn connect_raw(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        Client {
            ws,
            welcome: Value::Null,
        }
    }

    /// The close the server sends next: its code and reason (a text
    /// message before it fails the test).
    pub async fn recv_close(&mut self) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let read = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("a close within PATIENCE");
            match read {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (u16::from(frame.code), frame.reason.as_str().to_string());
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }

    pub fn peer_id(&self) -> String {
        self.welcome["peerId"].as_str().unwrap().to_string()
    }

    pub fn token(&self) -> String {
        self.welcome["resumeToken"].as_str().unwrap().to_string()
    }

    pub async fn send(&mut self, value: Value) {
        self.ws
            .send(Message::text(value.to_string()))
            .await
            .expect("send");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_string()))
            .await
            .expect("send");
    }

    /// Sends one raw WebSocket frame (masked by the client like any other).
    pub async fn send_frame(&mut self, frame: Frame) {
        self.ws.send(Message::Frame(frame)).await.expect("send");
    }

    /// Sends a ping with this id and waits for its pong; every message
    /// before the pong is returned (so a test can show nothing came first).
    pub async fn ping(&mut self, id: u64) -> Vec<Value> {
        self.send(json!({"type":"ping","id":id})).await;
        let mut before = Vec::new();
        loop {
            let v = self.recv().await;
            if v["type"] == "pong" && v["id"] == id {
                return before;
            }
            before.push(v);
        }
    }

    /// Sends a ping and asserts that its pong is the very next message.
    pub async fn ping_next(&mut self, id: u64) {
        let before = self.ping(id).await;
        assert!(before.is_empty(), "expected the pong first, got {before:?}");
    }

    /// Joins and returns the `joined` message.
    pub async fn join(&mut self, room: &str, name: &str) -> Value {
        self.send(json!({"type":"join","room":room,"displayName":name}))
            .await;
        self.recv_type("joined").await
    }

    /// Joins `room` with a resume token and returns the `joined` message;
    /// whether it resumed (`"resumed"`) is for the caller to check.
    pub async fn resume(&mut self, room: &str, token: &str) -> Value {
        self.send(json!({"type":"join","room":room,"resumeToken":token}))
            .await;
        self.recv_type("joined").await
    }

    /// The next text message, as JSON; fails after PATIENCE.
    pub async fn recv(&mut self) -> Value {
        match self.next_event(PATIENCE).await {
            Some(Event::Text(v)) => v,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// The next text message as the exact text the server sent.
    pub async fn recv_raw(&mut self) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let read = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("a message within PATIENCE");
            match read {
                Some(Ok(Message::Text(t))) => return t.as_str().to_string(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// The next text message, which must have this type.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["type"], kind, "unexpected message {v}");
        v
    }

    /// The next message must be an error with this code.
    pub async fn recv_error(&mut self, code: &str) -> Value {
        let v = self.recv_type("error").await;
        assert_eq!(v["code"], code, "unexpected error {v}");
        v
    }

    /// Asserts that no text message arrives for `quiet`.
    pub async fn expect_silence(&mut self, quiet: Duration) {
        if let Some(Event::Text(v)) = self.next_event(quiet).await {
            panic!("expected silence, got {v}");
        }
    }

    /// The next event: a text message, a close (with its code), or the end.
    pub async fn next_event(&mut self, wait: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let read = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            return Some(match read {
                None => Event::Ended,
                Some(Err(e)) => Event::Failed(e.to_string()),
                Some(Ok(Message::Text(t))) => {
                    Event::Text(serde_json::from_str(t.as_str()).expect("server sends JSON"))
                }
                Some(Ok(Message::Close(frame))) => Event::Closed(frame.map(|f| u16::from(f.code))),
                Some(Ok(_)) => continue,
            });
        }
    }

    /// Reads until the server closes; returns the close code.
    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            match self.next_event(PATIENCE).await {
                Some(Event::Closed(code)) => return code,
                Some(Event::Text(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }

    /// Reads until the server closes; returns every text message before the
    /// close frame, and the close code.
    pub async fn collect_until_close(&mut self) -> (Vec<Value>, Option<u16>) {
        let mut texts = Vec::new();
        loop {
            match self.next_event(PATIENCE).await {
                Some(Event::Closed(code)) => return (texts, code),
                Some(Event::Text(v)) => texts.push(v),
                other => panic!("expected a close frame, got {other:?} after {texts:?}"),
            }
        }
    }

    /// Closes cleanly (a close the client starts).
    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(CloseFrame {
                code: 1000.into(),
                reason: "bye".into(),
            }))
            .await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(PATIENCE, self.ws.next()).await {}
    }

    /// Drops the TCP connection without a close frame.
    pub fn vanish(self) {
        drop(self);
    }
}

#[derive(Debug)]
pub enum Event {
    Text(Value),
    Closed(Option<u16>),
    Ended,
    Failed(String),
}
