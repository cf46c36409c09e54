//! Without `--api-token`, `/api/*` and `/dashboard` answer only under a
//! loopback `Host` name or one of `--allowed-host`: a DNS-rebinding page
//! cannot read the history through the operator's browser or tunnel.

use serde_json::Value;

use super::{GUARDED, get_as, raw_get};
use crate::helpers::*;

#[tokio::test]
async fn loopback_host_names_pass_on_every_guarded_path() {
    let app = spawn_app().await;
    let port = app.addr.port();
    for host in [
        format!("127.0.0.1:{port}"),
        "127.0.0.1".to_string(),
        format!("localhost:{port}"),
        "LocalHost".to_string(),
        format!("[::1]:{port}"),
        "127.1.2.3:80".to_string(),
    ] {
        for path in GUARDED {
            let status = get_as(&app, path, &host, None).await.status().as_u16();
            // A session id that does not exist is a 404: past the access rule.
            let expected = if path.contains("/01JD") { 404 } else { 200 };
            assert_eq!(status, expected, "{path} with Host {host}");
        }
    }
}

#[tokio::test]
async fn other_host_names_are_refused_with_403_and_counted() {
    let app = spawn_app().await;
    let port = app.addr.port();
    let mut refused = 0.0;
    for host in [
        format!("evil.example:{port}"),
        "evil.example".to_string(),
        format!("127.0.0.1.evil.example:{port}"),
        "localhost.evil.example".to_string(),
        "10.0.0.1".to_string(),
    ] {
        for path in GUARDED {
            let res = get_as(&app, path, &host, None).await;
            assert_eq!(res.status().as_u16(), 403, "{path} with Host {host}");
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error"]["code"], "FORBIDDEN", "{body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains("--allowed-host"), "{message}");
            refused += 1.0;
        }
    }
    assert_eq!(
        app.metric(r#"chatsubo_api_refusals_total{reason="host"}"#)
            .await,
        refused
    );
    // The open endpoints do not look at Host.
    for path in ["/health", "/metrics", "/"] {
        let status = get_as(&app, path, "evil.example", None).await.status();
        assert_eq!(status.as_u16(), 200, "{path}");
    }
}

#[tokio::test]
async fn an_empty_or_missing_host_is_refused() {
    let app = spawn_app().await;
    for path in GUARDED {
        let (status, body) = raw_get(
            &app,
            &format!("GET {path} HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 403, "{path} with an empty Host: {body}");
        let (status, body) = raw_get(
            &app,
            &format!("GET {path} HTTP/1.0\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 403, "{path} without Host: {body}");
    }
}

#[tokio::test]
async fn allowed_host_admits_its_name_and_only_it() {
    let app = spawn_app_with(|c| {
        c.edge.allowed_hosts = vec!["chat.example.org".into(), "admin.example.org:8443".into()]
    })
    .await;
    for (host, status) in [
        ("chat.example.org", 200),
        ("chat.example.org:8080", 200),
        ("admin.example.org:8443", 200),
        ("admin.example.org:9999", 403),
        ("admin.example.org", 403),
        ("evil.example", 403),
        ("127.0.0.1", 200),
    ] {
        let got = get_as(&app, "/api/stats", host, None).await.status();
        assert_eq!(got.as_u16(), status, "Host {host}");
    }
}

#[tokio::test]
async fn with_an_api_token_the_token_is_what_counts() {
    let app = spawn_app_with(|c| c.api_token = Some("s3cret".into())).await;
    for host in ["evil.example", "127.0.0.1", "chat.example.org:443"] {
        let good = get_as(&app, "/api/sessions", host, Some("s3cret")).await;
        assert_eq!(good.status().as_u16(), 200, "Host {host}");
        let bad = get_as(&app, "/api/sessions", host, Some("nope")).await;
        assert_eq!(bad.status().as_u16(), 401, "Host {host}");
        let none = get_as(&app, "/dashboard", host, None).await;
        assert_eq!(none.status().as_u16(), 401, "Host {host}");
    }
    assert_eq!(
        app.metric(r#"chatsubo_api_refusals_total{reason="token"}"#)
            .await,
        6.0
    );
}

#[tokio::test]
async fn the_api_sends_no_cors_header_that_lets_another_origin_read_it() {
    let app = spawn_app().await;
    let res = reqwest::Client::new()
        .get(app.url("/api/sessions"))
        .header("Origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    for name in [
        "access-control-allow-origin",
        "access-control-allow-credentials",
    ] {
        assert!(res.headers().get(name).is_none(), "{name} sent");
    }
    let preflight = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, app.url("/api/sessions"))
        .header("Origin", "http://evil.example")
        .header("Access-Control-Request-Method", "GET")
        .send()
        .await
        .unwrap();
    assert!(
        preflight
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}
