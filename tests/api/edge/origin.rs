//! `--allowed-origin`: a browser upgrade from a page of another origin is
//! refused with 403 before the WebSocket opens; clients that send no
//! `Origin` are served.

use crate::helpers::*;

#[tokio::test]
async fn only_listed_origins_and_clients_without_one_may_open_the_websocket() {
    let app =
        spawn_app_with(|c| c.edge.allowed_origins = vec!["https://chat.example.org".into()]).await;
    let url = app.ws_url("");
    let listed = Client::try_connect_with(&url, &[("Origin", "https://chat.example.org")]).await;
    assert!(listed.is_ok(), "the listed origin is welcomed");
    let native = Client::try_connect_with(&url, &[]).await;
    assert!(native.is_ok(), "a client without Origin is welcomed");
    for other in [
        "http://evil.example",
        "https://chat.example.org:8443",
        "null",
    ] {
        let err = Client::try_connect_with(&url, &[("Origin", other)])
            .await
            .err()
            .unwrap_or_else(|| panic!("{other} was welcomed"));
        assert!(err.to_string().contains("403"), "{other}: {err}");
    }
    let refused = reqwest::Client::new()
        .get(app.url("/ws"))
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 403);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "FORBIDDEN");
    assert_eq!(
        app.metric(r#"chatsubo_connections_refused_total{reason="origin"}"#)
            .await,
        4.0
    );
    // Nothing but the refusal: no session was opened for them.
    assert_eq!(app.metric("chatsubo_active_connections").await, 2.0);
}

#[tokio::test]
async fn without_a_list_every_origin_is_served() {
    let app = spawn_app().await;
    let c = Client::try_connect_with(&app.ws_url(""), &[("Origin", "http://evil.example")]).await;
    assert!(c.is_ok());
}
