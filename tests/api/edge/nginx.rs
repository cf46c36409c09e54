//! A real nginx with the shipped `deploy/nginx/chatsubo.conf` in front,
//! terminating TLS (tests/nginx/in-front.sh): two clients from distinct
//! loopback addresses connect over wss:// through it, relay an offer, and
//! appear in `/api/sessions` with their own addresses.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::*;

/// nginx in front of a server, until dropped.
struct Nginx {
    child: Child,
    dir: TempDir,
    tls: u16,
    http: u16,
}

impl Nginx {
    async fn start(upstream: u16) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let (tls, http) = (free_port(), free_port());
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/nginx/in-front.sh");
        let child = Command::new("bash")
            .arg(&script)
            .arg(dir.path())
            .args([upstream, tls, http].map(|p| p.to_string()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("bash runs tests/nginx/in-front.sh");
        let mut nginx = Nginx {
            child,
            dir,
            tls,
            http,
        };
        let deadline = tokio::time::Instant::now() + PATIENCE * 2;
        while TcpStream::connect(("127.0.0.1", tls)).await.is_err() {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                let log = std::fs::read_to_string(nginx.dir.path().join("error.log"));
                panic!(
                    "nginx exited ({status}); is it installed (scripts/test.sh installs it)? {log:?}"
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nginx did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        nginx
    }

    /// A client for this run's certificate.
    // ring's provider is deprecated for its lack of post-quantum key
    // exchange, which a test talking to loopback does not need; aws-lc-rs
    // would add a C library's build to every test run.
    #[allow(deprecated)]
    fn tls_connector(&self) -> TlsConnector {
        let cert = CertificateDer::from_pem_file(self.dir.path().join("ca.pem")).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(cert).unwrap();
        let config = ClientConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }

    /// A WebSocket over TLS through nginx, from local address `from`.
    async fn wss(&self, from: &str, path: &str, headers: &[(&str, &str)]) -> Wss {
        let socket = TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))
            .unwrap();
        let tcp = socket
            .connect(SocketAddr::from(([127, 0, 0, 1], self.tls)))
            .await
            .unwrap();
        let name = ServerName::try_from("chat.example.org").unwrap();
        let tls = self.tls_connector().connect(name, tcp).await.expect("TLS");
        let mut request = format!("wss://chat.example.org{path}")
            .into_client_request()
            .unwrap();
        for (name, value) in headers {
            let name =
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes());
            request
                .headers_mut()
                .insert(name.unwrap(), value.parse().unwrap());
        }
        let (ws, _) = tokio_tungstenite::client_async(request, tls)
            .await
            .expect("the WebSocket upgrade through nginx");
        Wss { ws }
    }
}

impl Nginx {
    /// The status code of a plain GET of `path` over TLS through nginx.
    async fn https_status(&self, path: &str) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tcp = TcpStream::connect(("127.0.0.1", self.tls)).await.unwrap();
        let name = ServerName::try_from("chat.example.org").unwrap();
        let mut tls = self.tls_connector().connect(name, tcp).await.expect("TLS");
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: chat.example.org\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let _ = tokio::time::timeout(PATIENCE, tls.read_to_end(&mut head)).await;
        let head = String::from_utf8_lossy(&head);
        let status = head.split(' ').nth(1).unwrap_or_default();
        status
            .parse()
            .unwrap_or_else(|_| panic!("no status line in {head:?}"))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Wss {
    ws: WebSocketStream<TlsStream<TcpStream>>,
}

impl Wss {
    async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no {kind} within {PATIENCE:?}"))
                .expect("open")
                .expect("a frame");
            if let Message::Text(text) = message {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["type"] == kind {
                    return value;
                }
            }
        }
    }

    async fn send(&mut self, value: Value) {
        self.ws
            .send(Message::text(value.to_string()))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn two_clients_over_wss_through_nginx_relay_and_are_stored_with_their_own_addresses() {
    let app =
        spawn_app_with(|c| c.edge.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]).await;
    let nginx = Nginx::start(app.addr.port()).await;
    // Ann claims an address of her own: nginx appends the real one, which
    // is what counts.
    let mut ann = nginx
        .wss(
            "127.0.0.2",
            "/ws?room=tls",
            &[("x-forwarded-for", "203.0.113.66")],
        )
        .await;
    let ann_welcome = ann.recv_type("welcome").await;
    ann.recv_type("joined").await;
    let mut bob = nginx.wss("127.0.0.3", "/ws?room=tls", &[]).await;
    let bob_welcome = bob.recv_type("welcome").await;
    bob.recv_type("joined").await;
    ann.recv_type("peer-joined").await;
    ann.send(json!({"type":"offer","to":bob_welcome["peerId"],"data":{"sdp":"v=0 over TLS"}}))
        .await;
    let offer = bob.recv_type("offer").await;
    assert_eq!(offer["from"], ann_welcome["peerId"]);
    assert_eq!(offer["data"]["sdp"], "v=0 over TLS");

    for (welcome, address) in [(&ann_welcome, "127.0.0.2"), (&bob_welcome, "127.0.0.3")] {
        let path = format!("/api/sessions/{}", welcome["sessionId"].as_str().unwrap());
        let session = api_until(&app, &path, |s| s["room"] == "tls").await;
        assert_eq!(session["remoteAddr"], address, "{session}");
    }

    // Plain HTTP is only a redirect to https.
    let res = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{}/?room=x", nginx.http))
        .header("Host", "chat.example.org")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 301);
    assert_eq!(
        res.headers()["location"].to_str().unwrap(),
        "https://chat.example.org/?room=x"
    );

    // The metrics are not served to the internet; /health is.
    assert_eq!(nginx.https_status("/metrics").await, 404);
    assert_eq!(nginx.https_status("/health").await, 200);
}
