//! Chatsubo's protocol (docs/protocol.md): `GET /ws?room=`, a `welcome`
//! and the `joined` of the room the URL names (the server writes both at
//! once), relays as `ice-candidate` with `to`.
//! Also the parts only Chatsubo has, for the chaos and flood workloads:
//! session ids, resume tokens, `resumed`, and who joined or left.

use std::net::SocketAddr;

use super::{Event, PeerKey, Protocol, string_field};

/// The Chatsubo v1 protocol.
pub struct Chatsubo;

impl Protocol for Chatsubo {
    fn name(&self) -> &'static str {
        "chatsubo"
    }

    fn url(&self, addr: SocketAddr, room: &str, _key: &PeerKey) -> String {
        // Room names here are plain (`churn-3`): nothing to escape.
        format!("ws://{addr}/ws?room={room}")
    }

    fn welcome(&self, text: &str, _key: &PeerKey) -> Result<String, String> {
        if !text.starts_with(r#"{"type":"welcome""#) {
            return Err(format!("expected welcome, got {}", clip(text)));
        }
        string_field(text, "peerId")
            .map(str::to_owned)
            .ok_or_else(|| format!("welcome without peerId: {}", clip(text)))
    }

    fn join_message(&self, _room: &str) -> Option<String> {
        None
    }

    fn joined_after_welcome(&self) -> bool {
        true
    }

    fn write_relay(&self, to: &str, data: &str, out: &mut String) {
        out.push_str(r#"{"type":"ice-candidate","to":""#);
        out.push_str(to);
        out.push_str(r#"","data":"#);
        out.push_str(data);
        out.push('}');
    }

    fn classify(&self, text: &str) -> Event {
        // Relays are by far the most frequent frame: test for them first.
        let Some(rest) = text.strip_prefix(r#"{"type":""#) else {
            return Event::Other;
        };
        if rest.starts_with("ice-candidate\"")
            || rest.starts_with("offer\"")
            || rest.starts_with("answer\"")
        {
            Event::Relay
        } else if rest.starts_with("peer-joined\"") {
            Event::PeerJoined
        } else if rest.starts_with("peer-left\"") {
            Event::PeerLeft
        } else if rest.starts_with("joined\"") {
            Event::Joined {
                peers: count_peers(text),
            }
        } else if rest.starts_with("error\"") {
            Event::Error
        } else {
            Event::Other
        }
    }

    fn settle_events(&self, room_size: usize) -> usize {
        // Everyone learns of the other size-1: from `joined.peers` or from
        // a `peer-joined`.
        room_size * room_size.saturating_sub(1)
    }

    fn join_note(&self) -> &'static str {
        "the room is in the URL: welcome and joined come in one write"
    }
}

/// What a `welcome` tells the client.
#[derive(Debug, PartialEq, Eq)]
pub struct Welcome<'a> {
    pub peer_id: &'a str,
    pub session_id: &'a str,
    pub resume_token: &'a str,
}

/// Reads a `welcome` frame.
pub fn parse_welcome(text: &str) -> Result<Welcome<'_>, String> {
    if !text.starts_with(r#"{"type":"welcome""#) {
        return Err(format!("expected welcome, got {}", clip(text)));
    }
    let field = |name: &str| {
        string_field(text, name).ok_or_else(|| format!("welcome without {name}: {}", clip(text)))
    };
    Ok(Welcome {
        peer_id: field("peerId")?,
        session_id: field("sessionId")?,
        resume_token: field("resumeToken")?,
    })
}

/// A `join` of `room`, resuming with `resume_token` when there is one.
pub fn join_resuming(room: &str, resume_token: Option<&str>) -> String {
    match resume_token {
        Some(token) => format!(r#"{{"type":"join","room":"{room}","resumeToken":"{token}"}}"#),
        None => format!(r#"{{"type":"join","room":"{room}"}}"#),
    }
}

/// What a `joined` frame tells the client.
#[derive(Debug, PartialEq, Eq)]
pub struct JoinedFrame {
    pub peer_id: String,
    pub resumed: bool,
    /// The peer ids already in the room.
    pub peers: Vec<String>,
}

/// Reads a `joined` frame (`None` for any other frame).
pub fn parse_joined(text: &str) -> Option<JoinedFrame> {
    if !text.starts_with(r#"{"type":"joined""#) {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    Some(JoinedFrame {
        peer_id: v["peerId"].as_str()?.to_owned(),
        resumed: v["resumed"].as_bool()?,
        peers: v["peers"]
            .as_array()?
            .iter()
            .filter_map(|p| p["peerId"].as_str().map(str::to_owned))
            .collect(),
    })
}

/// The peer a `peer-joined` or `peer-left` frame is about.
pub fn member_of(text: &str) -> Option<&str> {
    string_field(text, "peerId")
}

/// The `code` of an `error` frame.
pub fn error_code(text: &str) -> Option<&str> {
    string_field(text, "code")
}

/// Members listed in a `joined` frame.
fn count_peers(text: &str) -> usize {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => v["peers"].as_array().map_or(0, Vec::len),
        Err(_) => 0,
    }
}

fn clip(text: &str) -> &str {
    match text.char_indices().nth(200) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speaks_the_contract() {
        let key = PeerKey {
            name: "x".into(),
            token: "t".into(),
        };
        let p = Chatsubo;
        assert_eq!(
            p.welcome(r#"{"type":"welcome","peerId":"p_1","sessionId":"s"}"#, &key),
            Ok("p_1".into())
        );
        assert!(p.welcome(r#"{"type":"error"}"#, &key).is_err());
        assert_eq!(
            p.classify(r#"{"type":"joined","room":"r","peerId":"p","peers":[{"peerId":"a"},{"peerId":"b"}],"resumed":false}"#),
            Event::Joined { peers: 2 }
        );
        assert_eq!(
            p.classify(r#"{"type":"ice-candidate","from":"p","data":{}}"#),
            Event::Relay
        );
        assert_eq!(
            p.classify(r#"{"type":"peer-joined","peerId":"p"}"#),
            Event::PeerJoined
        );
        let mut out = String::new();
        p.write_relay("p_2", r#"{"a":1}"#, &mut out);
        assert_eq!(out, r#"{"type":"ice-candidate","to":"p_2","data":{"a":1}}"#);
    }

    #[test]
    fn reads_sessions_tokens_and_resumes() {
        let w = parse_welcome(
            r#"{"type":"welcome","peerId":"p_1","sessionId":"01J","resumeToken":"a.b","heartbeatIntervalMs":15000,"maxRoomSize":10}"#,
        )
        .unwrap();
        assert_eq!(
            w,
            Welcome {
                peer_id: "p_1",
                session_id: "01J",
                resume_token: "a.b"
            }
        );
        assert!(parse_welcome(r#"{"type":"welcome","peerId":"p_1"}"#).is_err());
        assert_eq!(
            join_resuming("r", Some("a.b")),
            r#"{"type":"join","room":"r","resumeToken":"a.b"}"#
        );
        assert_eq!(join_resuming("r", None), r#"{"type":"join","room":"r"}"#);
        assert_eq!(
            parse_joined(
                r#"{"type":"joined","room":"r","peerId":"p_1","peers":[{"peerId":"p_2","displayName":null}],"resumed":true}"#
            ),
            Some(JoinedFrame {
                peer_id: "p_1".into(),
                resumed: true,
                peers: vec!["p_2".into()]
            })
        );
        assert_eq!(parse_joined(r#"{"type":"peer-joined","peerId":"p"}"#), None);
        assert_eq!(
            member_of(r#"{"type":"peer-left","peerId":"p_3","reason":"kicked"}"#),
            Some("p_3")
        );
        assert_eq!(
            error_code(r#"{"type":"error","code":"RATE_LIMITED","message":"x","ref":"offer"}"#),
            Some("RATE_LIMITED")
        );
    }
}
