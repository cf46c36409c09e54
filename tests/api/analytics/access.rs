//! Who may read /api: with a token, only a request that carries it (and the
//! token is never stored); without one, loopback clients only.

use serde_json::json;

use chatsubo::analytics::SledOptions;

use crate::helpers::*;

/// A path of every /api endpoint.
const API_PATHS: [&str; 5] = [
    "/api/sessions",
    "/api/rooms",
    "/api/churn",
    "/api/stats",
    "/api/sessions/x",
];

#[tokio::test]
async fn with_a_token_every_api_request_needs_it_and_it_is_never_stored() {
    const TOKEN: &str = "tok-SECRET-4f9a2c";
    let app = spawn_app_with(|c| c.api_token = Some(TOKEN.into())).await;
    let c = app.joined("t", "ann").await;
    c.close().await;
    for path in API_PATHS {
        let (status, body) = api(&app, path).await;
        assert_eq!(status, 401, "{path} without a token: {body}");
        assert_eq!(body["error"]["code"], "UNAUTHORIZED");
        let (status, _) = api_with(&app, path, Some("tok-SECRET-4f9a2d")).await;
        assert_eq!(status, 401, "{path} with a wrong token");
        let (status, _) = api_with(&app, path, Some("tok-SECRET-4f9a2")).await;
        assert_eq!(status, 401, "{path} with a prefix of the token");
    }
    let res = reqwest::Client::new()
        .get(app.url("/api/stats"))
        .header("authorization", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "the Bearer scheme is required");
    let challenge = res.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    let (status, _) = api_with(&app, "/api/sessions", Some(TOKEN)).await;
    assert_eq!(status, 200);
    // A wrong token is checked before the parameters.
    let (status, _) = api(&app, "/api/sessions?limit=0").await;
    assert_eq!(status, 401);
    let (status, _) = api_with(&app, "/api/sessions?limit=0", Some(TOKEN)).await;
    assert_eq!(status, 400);
    // The open endpoints stay open.
    assert_eq!(app.get("/health").await.status(), 200);
    let mut app = app;
    let dir = app.dir.path().to_path_buf();
    app.begin_shutdown();
    app.finished().await;
    assert!(
        !contains(&all_bytes(&dir), TOKEN.as_bytes()),
        "the API token is never stored"
    );
}

#[tokio::test]
async fn without_a_token_loopback_clients_are_served() {
    let app = spawn_app().await;
    let (status, body) = api(&app, "/api/sessions").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"sessions": [], "nextCursor": null}));
    app.stop().await;
}

/// The filter tree called directly, with the client address the accept
/// loop would have put on the request (tests may only use loopback sockets)
/// and the loopback `Host` a client of this machine names.
async fn status_from(
    routes: &warp::filters::BoxedFilter<(warp::reply::Response,)>,
    path: &str,
    from: &str,
    token: Option<&str>,
) -> u16 {
    let mut req = warp::http::Request::get(path).header("host", "127.0.0.1");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let mut req = req.body(String::new()).unwrap();
    req.extensions_mut()
        .insert(chatsubo::http::ClientAddr(from.parse().unwrap()));
    let mut service = warp::service(routes.clone());
    let res = tower_service::Service::call(&mut service, req)
        .await
        .unwrap();
    res.status().as_u16()
}

#[tokio::test]
async fn the_access_rule_by_client_address() {
    use std::sync::Arc;

    use chatsubo::analytics::Recorder;
    use chatsubo::signaling::Hub;
    use chatsubo::telemetry::Metrics;

    let dir = tempfile::tempdir().unwrap();
    let (store, _) = chatsubo::analytics::open(
        dir.path(),
        &SledOptions {
            cache_bytes: 8 << 20,
            flush_every_ms: 500,
        },
    )
    .unwrap();
    let hub_with = |token: Option<&str>| {
        let mut config = test_config(&dir);
        config.api_token = token.map(str::to_string);
        let metrics = Arc::new(Metrics::new(10));
        let recorder = Recorder::disabled(metrics.clone());
        chatsubo::http::routes(Hub::with_analytics(
            Arc::new(config),
            metrics,
            recorder,
            Some(store.clone()),
        ))
    };
    let open = hub_with(None);
    assert_eq!(
        status_from(&open, "/api/stats", "127.0.0.1:5000", None).await,
        200
    );
    assert_eq!(
        status_from(&open, "/api/stats", "127.8.9.10:5000", None).await,
        200
    );
    assert_eq!(
        status_from(&open, "/api/stats", "[::1]:5000", None).await,
        200
    );
    for remote in ["192.0.2.7:5000", "10.1.2.3:5000", "[2001:db8::1]:5000"] {
        for path in API_PATHS {
            assert_eq!(
                status_from(&open, path, remote, None).await,
                403,
                "{path} from {remote}"
            );
        }
    }
    // The open endpoints answer everyone.
    assert_eq!(
        status_from(&open, "/health", "192.0.2.7:5000", None).await,
        200
    );
    let guarded = hub_with(Some("t0ken"));
    assert_eq!(
        status_from(&guarded, "/api/stats", "192.0.2.7:5000", Some("t0ken")).await,
        200
    );
    assert_eq!(
        status_from(&guarded, "/api/stats", "127.0.0.1:5000", None).await,
        401
    );
    assert_eq!(
        status_from(&guarded, "/api/stats", "192.0.2.7:5000", Some("t0kem")).await,
        401
    );
}
