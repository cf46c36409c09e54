//! Client-to-server messages: one pass over the JSON, then the field rules of
//! each type. A relay keeps `data` as the raw JSON text it arrived as.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::client_report::{self, ClientTelemetry};
use super::fields::{Fields, required, string};
use super::{ProtocolError, RoomName, TraceParent, validate_display_name};

/// The `type` of a client message, also the `type` label of message metrics
/// (`invalid` for frames whose type is unknown or unreadable).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageType {
    Join,
    Leave,
    Offer,
    Answer,
    IceCandidate,
    Ping,
    Telemetry,
    IceServers,
    /// A foreign protocol's keep-alive (matchbox's, PeerJS's heartbeat).
    KeepAlive,
    Invalid,
}

impl MessageType {
    pub const ALL: [MessageType; 10] = [
        MessageType::Join,
        MessageType::Leave,
        MessageType::Offer,
        MessageType::Answer,
        MessageType::IceCandidate,
        MessageType::Ping,
        MessageType::Telemetry,
        MessageType::IceServers,
        MessageType::KeepAlive,
        MessageType::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Join => "join",
            MessageType::Leave => "leave",
            MessageType::Offer => "offer",
            MessageType::Answer => "answer",
            MessageType::IceCandidate => "ice-candidate",
            MessageType::Ping => "ping",
            MessageType::Telemetry => "telemetry",
            MessageType::IceServers => "ice-servers",
            MessageType::KeepAlive => "keep-alive",
            MessageType::Invalid => "invalid",
        }
    }

    fn from_wire(text: &str) -> Option<Self> {
        Some(match text {
            "join" => MessageType::Join,
            "leave" => MessageType::Leave,
            "offer" => MessageType::Offer,
            "answer" => MessageType::Answer,
            "ice-candidate" => MessageType::IceCandidate,
            "ping" => MessageType::Ping,
            "telemetry" => MessageType::Telemetry,
            "ice-servers" => MessageType::IceServers,
            _ => return None,
        })
    }
}

/// The three relayed types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayKind {
    Offer,
    Answer,
    IceCandidate,
}

impl RelayKind {
    pub fn as_str(self) -> &'static str {
        self.message_type().as_str()
    }

    pub fn message_type(self) -> MessageType {
        match self {
            RelayKind::Offer => MessageType::Offer,
            RelayKind::Answer => MessageType::Answer,
            RelayKind::IceCandidate => MessageType::IceCandidate,
        }
    }
}

/// A validated client message.
#[derive(Debug)]
pub enum ClientMessage<'a> {
    Join {
        room: RoomName,
        display_name: Option<String>,
        resume_token: Option<Cow<'a, str>>,
    },
    Leave,
    Relay {
        kind: RelayKind,
        to: Cow<'a, str>,
        data: &'a RawValue,
    },
    Ping {
        id: Option<serde_json::Number>,
    },
    Telemetry(ClientTelemetry),
    /// Fresh STUN/TURN servers and credentials, please.
    IceServers,
}

/// A validated client message with the trace context it carried.
#[derive(Debug)]
pub struct Inbound<'a> {
    pub message: ClientMessage<'a>,
    pub traceparent: Option<TraceParent>,
}

impl Inbound<'_> {
    pub fn message_type(&self) -> MessageType {
        match &self.message {
            ClientMessage::Join { .. } => MessageType::Join,
            ClientMessage::Leave => MessageType::Leave,
            ClientMessage::Relay { kind, .. } => kind.message_type(),
            ClientMessage::Ping { .. } => MessageType::Ping,
            ClientMessage::Telemetry(_) => MessageType::Telemetry,
            ClientMessage::IceServers => MessageType::IceServers,
        }
    }
}

/// Parses one text frame into a validated message. Errors carry `ref` when
/// the type was readable.
pub fn parse(text: &str) -> Result<Inbound<'_>, ProtocolError> {
    let fields: Fields<'_> = serde_json::from_str(text)
        .map_err(|e| ProtocolError::invalid(format!("not a JSON object: {e}")))?;
    let kind_raw = fields
        .kind
        .ok_or_else(|| ProtocolError::invalid("missing field type"))?;
    let kind_text = string(kind_raw, "type")?;
    let kind = MessageType::from_wire(&kind_text).ok_or_else(|| {
        ProtocolError::invalid(format!("unknown type {:?}", truncate(&kind_text)))
    })?;
    decode(kind, fields).map_err(|e| e.about(kind))
}

fn decode(kind: MessageType, f: Fields<'_>) -> Result<Inbound<'_>, ProtocolError> {
    let traceparent = match f.traceparent {
        // An invalid value starts a new trace, as W3C asks; a wrong type is an error.
        Some(raw) => TraceParent::parse(&string(raw, "traceparent")?),
        None => None,
    };
    let message = match kind {
        MessageType::Join => {
            let room = RoomName::parse(&string(required(f.room, "room")?, "room")?)?;
            let display_name = match f.display_name {
                Some(raw) => {
                    let name = string(raw, "displayName")?;
                    validate_display_name(&name)?;
                    Some(name.into_owned())
                }
                None => None,
            };
            let resume_token = match f.resume_token {
                Some(raw) => {
                    let token = string(raw, "resumeToken")?;
                    if token.len() > 256 {
                        return Err(ProtocolError::invalid("resumeToken is too long"));
                    }
                    Some(token)
                }
                None => None,
            };
            ClientMessage::Join {
                room,
                display_name,
                resume_token,
            }
        }
        MessageType::Leave => ClientMessage::Leave,
        MessageType::Offer | MessageType::Answer | MessageType::IceCandidate => {
            let relay = match kind {
                MessageType::Offer => RelayKind::Offer,
                MessageType::Answer => RelayKind::Answer,
                _ => RelayKind::IceCandidate,
            };
            let to = string(required(f.to, "to")?, "to")?;
            if to.is_empty() || to.len() > 64 {
                return Err(ProtocolError::invalid("to must be a peer id"));
            }
            let data = required(f.data, "data")?;
            // RawValue holds no leading white space: an object starts with '{'.
            if !data.get().starts_with('{') {
                return Err(ProtocolError::invalid("data must be a JSON object"));
            }
            ClientMessage::Relay {
                kind: relay,
                to,
                data,
            }
        }
        MessageType::Ping => {
            let id = match f.id {
                Some(raw) => Some(
                    serde_json::from_str::<serde_json::Number>(raw.get())
                        .map_err(|_| ProtocolError::invalid("id must be a number"))?,
                ),
                None => None,
            };
            ClientMessage::Ping { id }
        }
        MessageType::Telemetry => ClientMessage::Telemetry(client_report::decode(&f)?),
        MessageType::IceServers => ClientMessage::IceServers,
        MessageType::KeepAlive | MessageType::Invalid => {
            unreachable!("from_wire never yields these")
        }
    };
    Ok(Inbound {
        message,
        traceparent,
    })
}

fn truncate(text: &str) -> String {
    text.chars().take(32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    fn err(text: &str) -> ProtocolError {
        parse(text).expect_err(text)
    }

    #[test]
    fn join_with_all_fields() {
        let m = parse(r#"{"type":"join","room":"lobby","displayName":"ann","resumeToken":"t"}"#)
            .unwrap();
        match m.message {
            ClientMessage::Join {
                room,
                display_name,
                resume_token,
            } => {
                assert_eq!(room.as_str(), "lobby");
                assert_eq!(display_name.as_deref(), Some("ann"));
                assert_eq!(resume_token.as_deref(), Some("t"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn relay_keeps_data_untouched() {
        let text = r#"{"type":"offer","to":"p_b2","data":{"sdp":"v=0\r\n a", "type" : "offer"}}"#;
        match parse(text).unwrap().message {
            ClientMessage::Relay { kind, to, data } => {
                assert_eq!(kind, RelayKind::Offer);
                assert_eq!(to, "p_b2");
                assert_eq!(data.get(), r#"{"sdp":"v=0\r\n a", "type" : "offer"}"#);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(r#"{"type":"ice-candidate","to":"p","data":{"candidate":""}}"#).is_ok());
        assert_eq!(
            err(r#"{"type":"ice-candidate","to":"p","data":null}"#).code,
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            err(r#"{"type":"answer","to":"p","data":null}"#).code,
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            err(r#"{"type":"answer","to":"p","data":"x"}"#).code,
            ErrorCode::InvalidMessage
        );
    }

    #[test]
    fn every_invalid_shape_is_invalid_message() {
        for text in [
            "",
            "not json",
            "[]",
            "42",
            r#"{"room":"lobby"}"#,
            r#"{"type":7}"#,
            r#"{"type":"dance"}"#,
            r#"{"type":"join"}"#,
            r#"{"type":"join","room":""}"#,
            r#"{"type":"join","room":"bad room"}"#,
            r#"{"type":"join","room":5}"#,
            r#"{"type":"join","room":"r","displayName":5}"#,
            r#"{"type":"offer","data":{}}"#,
            r#"{"type":"offer","to":"p"}"#,
            r#"{"type":"offer","to":3,"data":{}}"#,
            r#"{"type":"ping","id":"x"}"#,
            r#"{"type":"join","room":"r","traceparent":1}"#,
            r#"{"type":"join","type":"join","room":"r"}"#,
        ] {
            assert_eq!(err(text).code, ErrorCode::InvalidMessage, "{text}");
        }
    }

    #[test]
    fn ref_is_set_once_type_is_known() {
        assert_eq!(err(r#"{"type":"join"}"#).reference, Some(MessageType::Join));
        assert_eq!(err(r#"{"type":"dance"}"#).reference, None);
        assert_eq!(err(r#"{"x":1}"#).reference, None);
    }

    #[test]
    fn escaped_strings_are_read() {
        let m = parse(r#"{"type":"join","room":"lob\u0062y"}"#).unwrap();
        assert!(matches!(m.message, ClientMessage::Join { room, .. } if room.as_str() == "lobby"));
    }

    #[test]
    fn traceparent_is_kept_or_ignored() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let text = format!(r#"{{"type":"ping","id":1,"traceparent":"{tp}"}}"#);
        let m = parse(&text).unwrap();
        assert_eq!(m.traceparent.unwrap().to_string(), tp);
        let m = parse(r#"{"type":"ping","traceparent":"garbage"}"#).unwrap();
        assert!(m.traceparent.is_none());
    }

    #[test]
    fn ping_id_is_echoable() {
        match parse(r#"{"type":"ping","id":7}"#).unwrap().message {
            ClientMessage::Ping { id } => assert_eq!(id.unwrap().to_string(), "7"),
            other => panic!("{other:?}"),
        }
    }
}
