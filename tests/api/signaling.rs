//! The signaling contract, one test per rule.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn welcome_comes_first() {
    let app = spawn_app().await;
    let c = app.client().await;
    let w = &c.welcome;
    assert!(w["peerId"].as_str().unwrap().starts_with("p_"));
    assert_eq!(w["sessionId"].as_str().unwrap().len(), 26);
    assert!(w["resumeToken"].as_str().unwrap().len() >= 22);
    assert_eq!(w["heartbeatIntervalMs"], 15000);
    assert_eq!(w["maxRoomSize"], 10);
    app.stop().await;
}

#[tokio::test]
async fn offer_is_relayed_with_from_and_untouched_data() {
    let app = spawn_app().await;
    let mut a = app.joined("lobby", "ann").await;
    let mut b = app.client().await;
    let joined = b.join("lobby", "bob").await;
    assert_eq!(
        joined["peers"],
        json!([{"peerId": a.peer_id(), "displayName": "ann"}])
    );
    let pj = a.recv_type("peer-joined").await;
    assert_eq!(pj["peerId"], b.peer_id());
    let data = r#"{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\n","x":[1,2.50,"é"]}"#;
    a.send_text(&format!(
        r#"{{"type":"offer","to":"{}","data":{data}}}"#,
        b.peer_id()
    ))
    .await;
    let got = b.recv_type("offer").await;
    assert_eq!(got["from"], a.peer_id());
    assert!(got.get("to").is_none());
    assert_eq!(
        got["data"],
        serde_json::from_str::<serde_json::Value>(data).unwrap()
    );
    app.stop().await;
}
