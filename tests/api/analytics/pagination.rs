//! Paging `/api/sessions` with its cursor: exact over more than a thousand
//! rows, also while new sessions arrive.

use std::collections::HashSet;

use crate::helpers::*;

async fn churn_sessions(app: &TestApp, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for chunk in 0..n.div_ceil(50) {
        let count = 50.min(n - chunk * 50);
        let url = app.ws_url("");
        let clients =
            futures_util::future::join_all((0..count).map(|_| Client::connect(&url))).await;
        for c in clients {
            ids.push(c.welcome["sessionId"].as_str().unwrap().to_string());
            c.vanish();
        }
    }
    ids
}

/// Reads every page of `path` (which has no `?`) with `limit`.
async fn all_pages(app: &TestApp, limit: usize, during: impl AsyncFnMut()) -> Vec<String> {
    let mut during = during;
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/sessions?limit={limit}&cursor={c}"),
            None => format!("/api/sessions?limit={limit}"),
        };
        let (status, page) = api(app, &path).await;
        assert_eq!(status, 200, "{page}");
        let rows = page["sessions"].as_array().unwrap();
        assert!(rows.len() <= limit);
        ids.extend(
            rows.iter()
                .map(|s| s["sessionId"].as_str().unwrap().to_string()),
        );
        during().await;
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return ids,
        }
    }
}

#[tokio::test]
async fn pagination_over_more_than_a_thousand_sessions_is_exact() {
    let app = spawn_app().await;
    let made = churn_sessions(&app, 1100).await;
    api_until(&app, "/api/stats", |s| s["sessions"] == 1100).await;
    let mut expected = made.clone();
    expected.sort();
    expected.reverse(); // newest first: session ids sort by connectedAt

    let pages = all_pages(&app, 1000, async || {}).await;
    assert_eq!(
        pages, expected,
        "two pages of 1000, every row once, in order"
    );
    let (_, default_page) = api(&app, "/api/sessions").await;
    assert_eq!(default_page["sessions"].as_array().unwrap().len(), 50);

    // While new sessions arrive, paging on from a cursor neither repeats
    // nor skips any of the rows that were there.
    let (_, first) = api(&app, "/api/sessions?limit=100").await;
    let mut ids: Vec<String> = first["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sessionId"].as_str().unwrap().to_string())
        .collect();
    let mut cursor = first["nextCursor"].as_str().unwrap().to_string();
    loop {
        churn_sessions(&app, 7).await;
        let (_, page) = api(&app, &format!("/api/sessions?limit=100&cursor={cursor}")).await;
        ids.extend(
            page["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["sessionId"].as_str().unwrap().to_string()),
        );
        match page["nextCursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    assert_eq!(ids.len(), 1100);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 1100, "no repeats");
    assert_eq!(ids, expected, "no skips, newest first");
    app.stop().await;
}
