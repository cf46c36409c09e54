//! The HTTP edge as it is deployed: the `Host` names `/api` and
//! `/dashboard` answer without a token, forwarded client addresses from
//! trusted proxies only, the origins that may open `/ws`, and a real nginx
//! in front over TLS.

mod host;
mod nginx;

mod origin;
mod proxy;

use crate::helpers::*;

/// Every path the access rule guards.
const GUARDED: [&str; 7] = [
    "/api/sessions",
    "/api/sessions/01JD0000000000000000000000",
    "/api/rooms",
    "/api/churn",
    "/api/stats",
    "/dashboard",
    "/dashboard.js",
];

/// A raw HTTP/1.1 request (for the `Host` values a client library will not
/// send): the status code and the body.
async fn raw_get(app: &TestApp, head: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut text = String::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_string(&mut text))
        .await
        .expect("an answer")
        .unwrap();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

/// A GET with this `Host` header (and `Authorization`, when given).
async fn get_as(app: &TestApp, path: &str, host: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .get(app.url(path))
        .header("Host", host);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.expect("GET")
}
