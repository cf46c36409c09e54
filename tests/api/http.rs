//! The HTTP surface: `/health` and JSON errors for unknown paths.

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn health_has_every_field() {
    let app = spawn_app().await;
    let res = app.get("/health").await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let h: Value = res.json().await.unwrap();
    assert_eq!(h["status"], "healthy");
    assert!(h["uptime"].is_f64(), "uptime is a float: {h}");
    assert!(h["uptime"].as_f64().unwrap() >= 0.0);
    assert_eq!(h["activeConnections"], 0);
    assert_eq!(h["activeRooms"], 0);
    assert_eq!(h["storage"], "ok");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    let ts = h["timestamp"].as_str().unwrap();
    assert!(is_rfc3339_millis_utc(ts), "{ts}");
    let keys: Vec<&String> = h.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 7, "{h}");
    app.stop().await;
}

/// Polls /health until `field` has `value`.
async fn wait_health(app: &TestApp, field: &str, value: Value) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let h = app.health().await;
        if h[field] == value {
            return h;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{field} stayed {}, expected {value}",
            h[field]
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn health_reflects_open_connections_and_rooms() {
    let app = spawn_app().await;
    let a = app.joined("lobby", "ann").await;
    let b = app.joined("other", "bob").await;
    let c = app.client().await;
    let h = wait_health(&app, "activeConnections", json!(3)).await;
    assert_eq!(h["activeRooms"], 2);
    let first = h["uptime"].as_f64().unwrap();

    b.close().await;
    let h = wait_health(&app, "activeConnections", json!(2)).await;
    assert_eq!(h["activeRooms"], 1);
    assert!(h["uptime"].as_f64().unwrap() >= first);

    a.close().await;
    c.close().await;
    let h = wait_health(&app, "activeConnections", json!(0)).await;
    assert_eq!(h["activeRooms"], 0);
    app.stop().await;
}

#[tokio::test]
async fn unknown_paths_are_404_with_a_json_error() {
    let app = spawn_app().await;
    for path in [
        "/nope",
        "/index.html",
        "/health/extra",
        "/ws/x",
        "/api/nothing-here",
    ] {
        let res = app.get(path).await;
        assert_eq!(res.status(), 404, "{path}");
        assert_eq!(
            res.headers()["content-type"].to_str().unwrap(),
            "application/json",
            "{path}"
        );
        let body: Value = res.json().await.unwrap();
        let error = body["error"].as_object().expect("error object");
        assert!(error["code"].is_string(), "{path}: {body}");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{path}: {body}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_plain_get_of_ws_is_a_json_error() {
    let app = spawn_app().await;
    let res = app.get("/ws").await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert!(body["error"]["code"].is_string(), "{body}");
    app.stop().await;
}
