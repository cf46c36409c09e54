//! Traces: the real binary exports to an in-process OTLP gRPC receiver; an
//! offer and its answer between two peers are one trace, and nothing is lost
//! on a graceful shutdown.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{Value, json};
use tonic::codegen::async_trait;

use crate::helpers::*;

/// Every span received, with the service name of its resource.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| attr(&r.attributes, "service.name"))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    spans.push((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            other => Some(format!("{other:?}")),
        }
    })
}

/// Linux's scheduling policies, as /proc shows them.
const SCHED_OTHER: i32 = 0;
const SCHED_IDLE: i32 = 5;

/// Each thread of process `pid`: its name and scheduling policy (field 41
/// of `/proc/<pid>/task/<tid>/stat`).
fn thread_policies(pid: u32) -> Vec<(String, i32)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let stat = std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap();
        let (head, rest) = stat.rsplit_once(") ").unwrap();
        let comm = head.split_once(" (").unwrap().1.to_string();
        // `rest` starts at field 3.
        let policy = rest.split(' ').nth(41 - 3).unwrap().parse().unwrap();
        threads.push((comm, policy));
    }
    threads
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `(trace id, span id)` of a traceparent.
fn ids(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {traceparent}");
    (parts[1].to_string(), parts[2].to_string())
}

async fn start_receiver() -> (std::net::SocketAddr, Receiver) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let receiver = Receiver::default();
    let service = TraceServiceServer::new(receiver.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    (addr, receiver)
}

/// Ann and Bob joined to `room`, Ann having seen Bob arrive.
async fn joined_pair(app: &BinApp, room: &str) -> (Client, Client) {
    let mut a = app.client().await;
    a.join(room, "ann").await;
    let mut b = app.client().await;
    b.join(room, "bob").await;
    a.recv_type("peer-joined").await;
    (a, b)
}

/// Sends `message` from `from`; the `traceparent` that `to` receives it with.
async fn relayed_traceparent(from: &mut Client, to: &mut Client, message: Value) -> String {
    let kind = message["type"].as_str().unwrap().to_string();
    from.send(message).await;
    to.recv_type(&kind).await["traceparent"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offer_and_answer_are_one_trace_and_survive_shutdown() {
    let (addr, receiver) = start_receiver().await;
    let endpoint = format!("http://{addr}");
    // A long batch delay: every span must reach the receiver through the
    // flush on shutdown, not through a timer.
    let app = BinApp::start(
        &["--otlp-endpoint", &endpoint],
        &[("OTEL_BSP_SCHEDULE_DELAY", "600000")],
    );
    let (mut a, mut b) = joined_pair(&app, "traced").await;

    let client_tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    a.send(json!({"type":"offer","to":b.peer_id(),"data":{"sdp":"x"},"traceparent":client_tp}))
        .await;
    let offer = b.recv_type("offer").await;
    let offer_tp = offer["traceparent"].as_str().unwrap().to_string();
    let (offer_trace, offer_span) = ids(&offer_tp);
    assert_eq!(offer_trace, "0af7651916cd43dd8448eb211c80319c");
    b.send(json!({"type":"answer","to":a.peer_id(),"data":{"sdp":"y"},"traceparent":offer_tp}))
        .await;
    let answer = a.recv_type("answer").await;
    let (answer_trace, answer_span) = ids(answer["traceparent"].as_str().unwrap());
    assert_eq!(
        answer_trace, offer_trace,
        "the answer continues the offer's trace"
    );

    let (status, _dir, _stdout) = tokio::task::spawn_blocking(move || app.terminate())
        .await
        .unwrap();
    assert!(status.success(), "chatsubo exited with {status}");

    let spans = receiver.spans.lock().unwrap().clone();
    let names: Vec<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
    assert!(
        spans.iter().all(|(service, _)| service == "chatsubo"),
        "service.name defaults to chatsubo"
    );
    let find = |name: &str, peer: &str| -> &Span {
        spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| s.name == name && attr(&s.attributes, "peer_id").as_deref() == Some(peer))
            .unwrap_or_else(|| panic!("no {name} span of {peer}; got {names:?}"))
    };
    let (pa, pb) = (a.peer_id(), b.peer_id());
    let (sa, sb) = (
        a.welcome["sessionId"].as_str().unwrap().to_string(),
        b.welcome["sessionId"].as_str().unwrap().to_string(),
    );
    for (peer, session) in [(&pa, &sa), (&pb, &sb)] {
        let conn = find("ws.connection", peer);
        let join = find("signal.join", peer);
        assert!(
            conn.parent_span_id.is_empty(),
            "ws.connection is a root span"
        );
        assert_eq!(join.trace_id, conn.trace_id);
        assert_eq!(
            join.parent_span_id, conn.span_id,
            "join is a child of its connection"
        );
        for span in [conn, join] {
            assert_eq!(
                attr(&span.attributes, "session_id").as_deref(),
                Some(session.as_str())
            );
            assert_eq!(attr(&span.attributes, "room").as_deref(), Some("traced"));
        }
        assert_eq!(
            attr(&join.attributes, "message.type").as_deref(),
            Some("join")
        );
    }

    let offer_relay = find("signal.relay", &pa);
    assert_eq!(hex(&offer_relay.trace_id), offer_trace);
    assert_eq!(
        hex(&offer_relay.parent_span_id),
        "b7ad6b7169203331",
        "continues the client's traceparent"
    );
    assert_eq!(
        hex(&offer_relay.span_id),
        offer_span,
        "the relayed traceparent is the relay span's"
    );
    assert_eq!(
        attr(&offer_relay.attributes, "message.type").as_deref(),
        Some("offer")
    );
    assert_eq!(
        attr(&offer_relay.attributes, "room").as_deref(),
        Some("traced")
    );
    assert_eq!(
        attr(&offer_relay.attributes, "session_id").as_deref(),
        Some(sa.as_str())
    );

    let answer_relay = find("signal.relay", &pb);
    assert_eq!(
        hex(&answer_relay.trace_id),
        offer_trace,
        "one trace for offer and answer"
    );
    assert_eq!(
        answer_relay.parent_span_id, offer_relay.span_id,
        "the answer's span is a child of the offer's"
    );
    assert_eq!(hex(&answer_relay.span_id), answer_span);
    assert_eq!(
        attr(&answer_relay.attributes, "message.type").as_deref(),
        Some("answer")
    );
    assert_eq!(
        attr(&answer_relay.attributes, "session_id").as_deref(),
        Some(sb.as_str())
    );

    // Nothing else was lost: 2 connections, 2 joins, 2 relays.
    for (name, count) in [
        ("ws.connection", 2),
        ("signal.join", 2),
        ("signal.relay", 2),
    ] {
        assert_eq!(
            names.iter().filter(|n| **n == name).count(),
            count,
            "{name} spans: {names:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_based_sampler_exports_the_relays_of_sampled_parents_only() {
    let (addr, receiver) = start_receiver().await;
    let endpoint = format!("http://{addr}");
    // Connections are roots, and this sampler drops every root: only a
    // client's sampled traceparent gets a relay recorded.
    let app = BinApp::start(
        &["--otlp-endpoint", &endpoint],
        &[("OTEL_TRACES_SAMPLER", "parentbased_always_off")],
    );
    let (mut a, mut b) = joined_pair(&app, "sampled").await;

    let to = b.peer_id();
    let untraced = relayed_traceparent(
        &mut a,
        &mut b,
        json!({"type":"offer","to":to,"data":{"sdp":"x"}}),
    )
    .await;
    assert!(untraced.ends_with("-00"), "not sampled: {untraced}");
    let unsampled_tp = "00-11111111111111111111111111111111-2222222222222222-00";
    let continued = relayed_traceparent(
        &mut a,
        &mut b,
        json!({"type":"ice-candidate","to":to,"data":{"c":1},"traceparent":unsampled_tp}),
    )
    .await;
    let (trace, span) = ids(&continued);
    assert_eq!(trace, "11111111111111111111111111111111");
    assert_ne!(span, "2222222222222222", "a fresh span id");
    assert!(continued.ends_with("-00"), "still not sampled: {continued}");
    let sampled_tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let traced = relayed_traceparent(
        &mut a,
        &mut b,
        json!({"type":"answer","to":to,"data":{"sdp":"y"},"traceparent":sampled_tp}),
    )
    .await;
    let (traced_trace, traced_span) = ids(&traced);
    assert_eq!(traced_trace, "0af7651916cd43dd8448eb211c80319c");
    assert!(traced.ends_with("-01"), "sampled: {traced}");

    let (status, _dir, _) = tokio::task::spawn_blocking(move || app.terminate())
        .await
        .unwrap();
    assert!(status.success(), "chatsubo exited with {status}");
    let spans = receiver.spans.lock().unwrap().clone();
    let relays: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == "signal.relay")
        .collect();
    assert_eq!(relays.len(), 1, "only the sampled relay: {spans:?}");
    let relay = relays[0];
    assert_eq!(hex(&relay.trace_id), traced_trace);
    assert_eq!(hex(&relay.span_id), traced_span);
    assert_eq!(hex(&relay.parent_span_id), "b7ad6b7169203331");
    assert_eq!(
        attr(&relay.attributes, "message.type").as_deref(),
        Some("answer")
    );
    assert!(
        spans.iter().all(|(_, s)| s.name != "ws.connection"),
        "connections are dropped roots"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_never_stalls_signaling() {
    // Nothing listens there: exports fail, signaling goes on.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", probe.local_addr().unwrap());
    drop(probe);
    let app = BinApp::start(
        &["--otlp-endpoint", &dead],
        &[("OTEL_BSP_SCHEDULE_DELAY", "50")],
    );
    let mut a = app.client().await;
    a.join("down", "ann").await;
    let mut b = app.client().await;
    b.join("down", "bob").await;
    let started = std::time::Instant::now();
    for i in 0..100 {
        a.send(json!({"type":"ice-candidate","to":b.peer_id(),"data":{"i":i}}))
            .await;
    }
    for _ in 0..100 {
        b.recv_type("ice-candidate").await;
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "relays took {:?}",
        started.elapsed()
    );
    // Spans of the relays are ended when their handling ends; the failed
    // exports are counted.
    let metrics_url = format!("http://{}/metrics", app.addr);
    let mut failed = 0.0;
    for _ in 0..100 {
        let text = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        failed = metric_value(
            &text,
            r#"chatsubo_spans_dropped_total{reason="export_failed"}"#,
        );
        if failed >= 100.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(failed >= 100.0, "failed exports counted: {failed}");

    // Both export threads have run (the batch thread exported, the gRPC
    // thread tried to connect) and yield the CPU to signaling; the
    // runtime's workers keep the default policy.
    let threads = thread_policies(app.pid());
    for name in ["OpenTelemetry.T", "otlp-export", "tokio-rt-worker"] {
        let policies: Vec<i32> = threads
            .iter()
            .filter(|(comm, _)| comm.starts_with(name))
            .map(|(_, policy)| *policy)
            .collect();
        let expected = if name == "tokio-rt-worker" {
            SCHED_OTHER
        } else {
            SCHED_IDLE
        };
        assert!(
            !policies.is_empty() && policies.iter().all(|p| *p == expected),
            "{name}: policies {policies:?}, expected {expected}; threads {threads:?}"
        );
    }

    let started = std::time::Instant::now();
    let (status, _dir, _) = tokio::task::spawn_blocking(move || app.terminate())
        .await
        .unwrap();
    assert!(status.success());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "shutdown took {:?}",
        started.elapsed()
    );
}
