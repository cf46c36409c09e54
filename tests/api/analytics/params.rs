//! The /api parameters: every bad one is a 400, an unknown session a 404,
//! and good ones pass.

use crate::helpers::*;

#[tokio::test]
async fn every_bad_parameter_is_a_400_and_an_unknown_session_a_404() {
    let app = spawn_app().await;
    for path in [
        "/api/sessions?limit=0",
        "/api/sessions?limit=1001",
        "/api/sessions?limit=-1",
        "/api/sessions?limit=ten",
        "/api/sessions?limit=",
        "/api/sessions?since=yesterday",
        "/api/sessions?until=2026-13-01T00:00:00Z",
        "/api/sessions?since=2026-11-28T06:00:00Z&until=2026-11-28T05:00:00Z",
        "/api/sessions?room=",
        "/api/sessions?room=bad%20room",
        "/api/sessions?room=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "/api/sessions?peer=",
        "/api/sessions?peer=p%00x",
        "/api/sessions?cursor=xyz",
        "/api/sessions?colour=blue",
        "/api/sessions?limit=5&limit=6",
        "/api/sessions/01JD0000000000000000000000?x=1",
        "/api/rooms?active=yes",
        "/api/rooms?active=",
        "/api/rooms?room=a",
        "/api/churn?bucket=0",
        "/api/churn?bucket=59",
        "/api/churn?bucket=90",
        "/api/churn?bucket=abc",
        "/api/churn?bucket=6048000",
        "/api/churn?room=%2F",
        "/api/churn?since=2026-11-28",
        "/api/churn?since=2026-11-28T06:00:00Z&until=2026-11-28T05:00:00Z",
        "/api/stats?since=now",
        "/api/stats?until=1",
        "/api/stats?limit=5",
    ] {
        let (status, body) = api(&app, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "BAD_REQUEST", "{path}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().len() > 5);
    }
    for path in [
        "/api/sessions/01JD0000000000000000000000",
        "/api/sessions/not-a-session",
        "/api/nothing",
    ] {
        let (status, body) = api(&app, path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"]["code"], "NOT_FOUND");
    }
    // Good parameters pass.
    for path in [
        "/api/sessions?limit=1000&room=a.b-c_1&since=2026-01-01T00:00:00.000Z&until=2126-01-01T00:00:00%2B02:00",
        "/api/rooms?active=false",
        "/api/churn?bucket=120&room=x",
        "/api/stats?since=2026-01-01T00:00:00Z",
    ] {
        let (status, body) = api(&app, path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    app.stop().await;
}
