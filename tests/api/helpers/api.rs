//! The /api endpoints read as JSON, and polled until the writer has
//! applied what a test waits for.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::TestApp;

/// GET an /api path and read the JSON (`Null` if the body is not JSON).
pub async fn api(app: &TestApp, path: &str) -> (u16, Value) {
    api_with(app, path, None).await
}

/// As [`api`], with a bearer token when `token` is given.
pub async fn api_with(app: &TestApp, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(app.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.expect("GET");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Polls `path` until `done` holds (the writer applies events in the
/// background), failing after a few seconds.
pub async fn api_until(app: &TestApp, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = api(app, path).await;
        if status == 200 && done(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting on {path}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The bodies of `paths` on the server at `base` (`http://…`), one after
/// another: for searching everything the HTTP side shows at once.
pub async fn bodies_of(base: &str, paths: &[&str]) -> String {
    let mut all = String::new();
    for path in paths {
        let res = reqwest::get(format!("{base}{path}")).await.unwrap();
        all.push_str(&res.text().await.unwrap());
    }
    all
}
