//! `--trusted-proxy`: only for a connection from a trusted proxy is the
//! client's address taken from `X-Forwarded-For` (else `Forwarded`); that
//! address is what the history, the per-address cap and the `/api` check
//! use. Anyone else's forwarding headers change nothing.

use serde_json::Value;

use crate::helpers::*;

/// The stored `remoteAddr` of the session `client` opened.
async fn remote_addr_of(app: &TestApp, client: &Client) -> Value {
    let id = client.welcome["sessionId"].as_str().unwrap();
    let path = format!("/api/sessions/{id}");
    api_until(app, &path, |s| s["remoteAddr"].is_string()).await["remoteAddr"].clone()
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_change_nothing() {
    let app = spawn_app_with(|c| c.max_connections_per_ip = 2).await;
    let url = app.ws_url("");
    let mut clients = Vec::new();
    for (i, header) in ["x-forwarded-for", "forwarded", "x-forwarded-for"]
        .iter()
        .enumerate()
    {
        let value = if *header == "forwarded" {
            format!("for=198.51.100.{i}")
        } else {
            format!("198.51.100.{i}")
        };
        let c = Client::try_connect_with(&url, &[(header, &value)]).await;
        clients.push(c);
    }
    // All three came from 127.0.0.1: the third is over the per-address cap.
    assert!(clients[0].is_ok() && clients[1].is_ok());
    assert!(clients[2].is_err(), "the claimed addresses were believed");
    let first = clients.remove(0).unwrap();
    assert_eq!(remote_addr_of(&app, &first).await, "127.0.0.1");
}

#[tokio::test]
async fn from_a_trusted_proxy_the_forwarded_address_is_the_client() {
    let app = spawn_app_with(|c| {
        c.max_connections_per_ip = 2;
        c.edge.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let url = app.ws_url("");
    let via = |addr: &'static str| [("X-Forwarded-For", addr)];
    let a1 = Client::try_connect_with(&url, &via("203.0.113.7"))
        .await
        .unwrap();
    // A client's own claim left of what the proxy appended is passed over.
    let a2 = Client::try_connect_with(&url, &via("198.51.100.99, 203.0.113.7"))
        .await
        .unwrap();
    assert_eq!(remote_addr_of(&app, &a1).await, "203.0.113.7");
    assert_eq!(remote_addr_of(&app, &a2).await, "203.0.113.7");
    // The per-address cap counts per client: 203.0.113.7 is full, others are not.
    let err = Client::try_connect_with(&url, &via("203.0.113.7"))
        .await
        .err()
        .expect("a third connection from 203.0.113.7 is refused");
    assert!(err.to_string().contains("429"), "{err}");
    let b = Client::try_connect_with(&url, &[("Forwarded", "for=\"[2001:db8::5]:4711\"")])
        .await
        .unwrap();
    assert_eq!(remote_addr_of(&app, &b).await, "2001:db8::5");
    let c = Client::try_connect_with(&url, &[]).await.unwrap();
    assert_eq!(remote_addr_of(&app, &c).await, "127.0.0.1");
}

#[tokio::test]
async fn through_a_trusted_proxy_the_api_answers_only_a_forwarded_loopback_client() {
    let app =
        spawn_app_with(|c| c.edge.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]).await;
    let get = |forwarded: &'static str| {
        reqwest::Client::new()
            .get(app.url("/api/stats"))
            .header("X-Forwarded-For", forwarded)
            .send()
    };
    assert_eq!(get("203.0.113.7").await.unwrap().status().as_u16(), 403);
    assert_eq!(get("127.0.0.1").await.unwrap().status().as_u16(), 200);
    assert_eq!(
        app.metric(r#"chatsubo_api_refusals_total{reason="address"}"#)
            .await,
        1.0
    );
}
