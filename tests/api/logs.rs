//! Logs: the rotated file holds one JSON object a line with the contract's
//! fields, and never relayed data, resume tokens or the API token.

use serde_json::{Value, json};

use crate::helpers::*;

const DATA_SENTINEL: &str = "SENTINEL-DATA-7c1e";
const API_TOKEN: &str = "SENTINEL-API-TOKEN-93ab";

/// The trace id of the `traceparent` one client sends with its join.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_file_has_the_fields_and_no_secrets() {
    let app = BinApp::start(
        &[
            "--log-level",
            "chatsubo=debug,info",
            "--log-rotation",
            "hourly",
            "--log-max-files",
            "3",
            "--api-token",
            API_TOKEN,
            "--resume-grace-secs",
            "5",
        ],
        &[],
    );
    let mut a = app.client().await;
    a.join("logged", "ann").await;
    let mut b = app.client().await;
    let b_token = b.token();
    b.join("logged", "bob").await;
    a.recv_type("peer-joined").await;
    let mut tokens = vec![a.token(), b_token.clone()];
    for kind in ["offer", "answer", "ice-candidate"] {
        a.send(json!({"type":kind,"to":b.peer_id(),"data":{"sdp":DATA_SENTINEL,"candidate":DATA_SENTINEL}}))
            .await;
        let got = b.recv_type(kind).await;
        assert_eq!(got["data"]["sdp"], DATA_SENTINEL);
    }
    // A resume: the token travels inbound, and a new one outbound.
    b.vanish();
    let mut b2 = app.client().await;
    tokens.push(b2.token());
    b2.send(json!({"type":"join","room":"logged","resumeToken":b_token}))
        .await;
    let joined = b2.recv_type("joined").await;
    assert_eq!(joined["resumed"], true);
    // A refused token, and a client error message with the sentinel.
    let mut c = app.client().await;
    tokens.push(c.token());
    c.send(
        json!({"type":"join","room":"other","resumeToken":format!("{DATA_SENTINEL}-token"),
        "traceparent":format!("00-{CLIENT_TRACE}-00f067aa0ba902b7-01")}),
    )
    .await;
    c.recv_type("joined").await;
    c.send(json!({"type":"telemetry","event":"client-error","code":"X","message":DATA_SENTINEL}))
        .await;
    c.send(json!({"type":"offer","to":"p_nobody","data":{"sdp":DATA_SENTINEL}}))
        .await;
    c.recv_error("UNKNOWN_PEER").await;
    a.close().await;

    let (status, dir, stdout) = tokio::task::spawn_blocking(move || app.terminate())
        .await
        .unwrap();
    assert!(status.success());

    let files: Vec<_> = std::fs::read_dir(dir.path().join("logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "one log file: {files:?}");
    let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
    // Hourly rotation: chatsubo.YYYY-MM-DD-HH.log
    assert!(
        name.starts_with("chatsubo.")
            && name.ends_with(".log")
            && name.len() == "chatsubo.2026-11-28-07.log".len(),
        "rotated file name {name}"
    );
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 8, "{} lines", lines.len());
    // Stdout carries the same lines.
    assert_eq!(
        stdout.len(),
        lines.len(),
        "stdout and file have the same lines"
    );

    for line in &lines {
        for field in ["timestamp", "level", "target", "message"] {
            assert!(line[field].is_string(), "{field} missing in {line}");
        }
        if line["target"].as_str().unwrap().starts_with("chatsubo") {
            assert!(line["event"].is_string(), "event missing in {line}");
        }
        let ts = line["timestamp"].as_str().unwrap();
        assert!(ts.ends_with('Z'), "UTC timestamp {ts}");
        assert!(
            time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).is_ok(),
            "RFC 3339 timestamp {ts}"
        );
        // trace_id and span_id come together, and only inside a span
        // (where the session is known).
        assert_eq!(
            line["trace_id"].is_string(),
            line["span_id"].is_string(),
            "{line}"
        );
        // Every line of a connection is written inside its spans, except the
        // end of a resume grace (the connection is gone by then).
        if line["session_id"].is_string() && line["message"] != "resume grace ended" {
            assert!(
                is_hex(line["trace_id"].as_str().unwrap_or(""), 32),
                "trace_id in {line}"
            );
            assert!(
                is_hex(line["span_id"].as_str().unwrap_or(""), 16),
                "span_id in {line}"
            );
        }
    }
    let event =
        |name: &str| -> Vec<&Value> { lines.iter().filter(|l| l["event"] == name).collect() };
    assert_eq!(event("listening").len(), 1);
    assert!(
        event("listening")[0].get("trace_id").is_none(),
        "no trace id outside spans"
    );
    let joins = event("peer_joined");
    assert_eq!(
        joins.len(),
        3,
        "ann, bob and the fresh join of the refused token"
    );
    let ann = joins
        .iter()
        .find(|l| l["peer_id"] == a_peer(&lines, "logged", 0))
        .unwrap();
    assert_eq!(ann["room"], "logged");
    assert_eq!(ann["level"], "INFO");
    assert_eq!(ann["target"], "chatsubo::signaling::connection");
    assert!(ann["session_id"].as_str().unwrap().len() == 26);
    // Without trace export the ids are still a trace: a message's span
    // shares its connection's trace id, with a span id of its own, ...
    let connected = event("connected");
    let ann_connected = connected
        .iter()
        .find(|l| l["session_id"] == ann["session_id"])
        .expect("ann's connected line (debug)");
    assert_eq!(ann["trace_id"], ann_connected["trace_id"]);
    assert_ne!(ann["span_id"], ann_connected["span_id"]);
    // ... and a client's traceparent is continued.
    let other = joins.iter().find(|l| l["room"] == "other").unwrap();
    assert_eq!(other["trace_id"], CLIENT_TRACE, "{other}");
    let resumed = event("peer_resumed");
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0]["room"], "logged");
    assert!(!event("resume_failed").is_empty());
    assert!(
        !event("client_telemetry").is_empty(),
        "debug lines are written at --log-level debug"
    );

    for secret in tokens
        .iter()
        .map(String::as_str)
        .chain([DATA_SENTINEL, API_TOKEN])
    {
        assert!(!text.contains(secret), "{secret} leaked into the log file");
        assert!(
            !stdout.iter().any(|l| l.contains(secret)),
            "{secret} leaked to stdout"
        );
    }
}

/// The peer id of the `n`th peer_joined line in `room`.
fn a_peer(lines: &[Value], room: &str, n: usize) -> Value {
    lines
        .iter()
        .filter(|l| l["event"] == "peer_joined" && l["room"] == room)
        .nth(n)
        .unwrap()["peer_id"]
        .clone()
}
