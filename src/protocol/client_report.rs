//! Telemetry events that clients report (`type: "telemetry"`): the things only
//! a browser can see. Validated here; counted and stored by the server.

use serde_json::value::RawValue;

use super::ProtocolError;
use super::fields::{Fields, required, string};

/// Longest duration a client may report, in milliseconds (one hour).
const MAX_MS: f64 = 3_600_000.0;
/// Longest client error message kept; longer ones are cut, not refused.
const MAX_ERROR_MESSAGE_CHARS: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerOutcome {
    Connected,
    Failed,
}

impl PeerOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerOutcome::Connected => "connected",
            PeerOutcome::Failed => "failed",
        }
    }
}

/// The path a connected pair took: the local candidate type of the
/// selected candidate pair (`relay`: through TURN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CandidatePath {
    Host,
    Srflx,
    Prflx,
    Relay,
}

impl CandidatePath {
    pub const ALL: [CandidatePath; 4] = [
        CandidatePath::Host,
        CandidatePath::Srflx,
        CandidatePath::Prflx,
        CandidatePath::Relay,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CandidatePath::Host => "host",
            CandidatePath::Srflx => "srflx",
            CandidatePath::Prflx => "prflx",
            CandidatePath::Relay => "relay",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconnectOutcome {
    Success,
    Failure,
}

impl ReconnectOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ReconnectOutcome::Success => "success",
            ReconnectOutcome::Failure => "failure",
        }
    }
}

/// One client-reported event. Durations are in milliseconds, as sent.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientTelemetry {
    PeerConnection {
        peer: String,
        outcome: PeerOutcome,
        ms: Option<f64>,
        reason: Option<String>,
        /// How the pair connected, when the client says.
        path: Option<CandidatePath>,
    },
    Reconnect {
        attempt: u32,
        outcome: ReconnectOutcome,
        downtime_ms: Option<f64>,
    },
    SignalingRtt {
        ms: f64,
    },
    ConnectTime {
        ms: f64,
    },
    ClientError {
        code: String,
        message: Option<String>,
    },
}

impl ClientTelemetry {
    /// The `event` name as sent.
    pub fn event_name(&self) -> &'static str {
        match self {
            ClientTelemetry::PeerConnection { .. } => "peer-connection",
            ClientTelemetry::Reconnect { .. } => "reconnect",
            ClientTelemetry::SignalingRtt { .. } => "signaling-rtt",
            ClientTelemetry::ConnectTime { .. } => "connect-time",
            ClientTelemetry::ClientError { .. } => "client-error",
        }
    }

    /// Events about other peers make sense only inside a room.
    pub fn needs_room(&self) -> bool {
        matches!(self, ClientTelemetry::PeerConnection { .. })
    }
}

pub(super) fn decode(f: &Fields<'_>) -> Result<ClientTelemetry, ProtocolError> {
    let event = string(required(f.event, "event")?, "event")?;
    Ok(match event.as_ref() {
        "peer-connection" => {
            let peer = string(required(f.peer, "peer")?, "peer")?;
            if peer.is_empty() || peer.len() > 64 {
                return Err(ProtocolError::invalid("peer must be a peer id"));
            }
            let outcome = match string(required(f.outcome, "outcome")?, "outcome")?.as_ref() {
                "connected" => PeerOutcome::Connected,
                "failed" => PeerOutcome::Failed,
                _ => {
                    return Err(ProtocolError::invalid(
                        "outcome must be connected or failed",
                    ));
                }
            };
            let ms = match (f.ms, outcome) {
                (Some(raw), _) => Some(millis(raw, "ms")?),
                (None, PeerOutcome::Connected) => {
                    return Err(ProtocolError::invalid("missing field ms"));
                }
                (None, PeerOutcome::Failed) => None,
            };
            let reason = match f.reason {
                Some(raw) => Some(short_code(raw, "reason")?),
                None => None,
            };
            let path = match f.path {
                Some(raw) => Some(candidate_path(raw)?),
                None => None,
            };
            ClientTelemetry::PeerConnection {
                peer: peer.into_owned(),
                outcome,
                ms,
                reason,
                path,
            }
        }
        "reconnect" => {
            let attempt = serde_json::from_str::<u32>(required(f.attempt, "attempt")?.get())
                .ok()
                .filter(|a| *a >= 1)
                .ok_or_else(|| ProtocolError::invalid("attempt must be a whole number from 1"))?;
            let outcome = match string(required(f.outcome, "outcome")?, "outcome")?.as_ref() {
                "success" => ReconnectOutcome::Success,
                "failure" => ReconnectOutcome::Failure,
                _ => return Err(ProtocolError::invalid("outcome must be success or failure")),
            };
            let downtime_ms = match f.downtime_ms {
                Some(raw) => Some(millis(raw, "downtimeMs")?),
                None => None,
            };
            ClientTelemetry::Reconnect {
                attempt,
                outcome,
                downtime_ms,
            }
        }
        "signaling-rtt" => ClientTelemetry::SignalingRtt {
            ms: millis(required(f.ms, "ms")?, "ms")?,
        },
        "connect-time" => ClientTelemetry::ConnectTime {
            ms: millis(required(f.ms, "ms")?, "ms")?,
        },
        "client-error" => {
            let code = short_code(required(f.code, "code")?, "code")?;
            let message = match f.message {
                Some(raw) => Some(
                    string(raw, "message")?
                        .chars()
                        .take(MAX_ERROR_MESSAGE_CHARS)
                        .collect(),
                ),
                None => None,
            };
            ClientTelemetry::ClientError { code, message }
        }
        _ => return Err(ProtocolError::invalid("unknown telemetry event")),
    })
}

fn millis(raw: &RawValue, name: &str) -> Result<f64, ProtocolError> {
    serde_json::from_str::<f64>(raw.get())
        .ok()
        .filter(|v| v.is_finite() && (0.0..=MAX_MS).contains(v))
        .ok_or_else(|| {
            ProtocolError::invalid(format!(
                "{name} must be a number of milliseconds from 0 to 3600000"
            ))
        })
}

fn candidate_path(raw: &RawValue) -> Result<CandidatePath, ProtocolError> {
    let text = string(raw, "path")?;
    CandidatePath::ALL
        .into_iter()
        .find(|p| p.as_str() == text)
        .ok_or_else(|| ProtocolError::invalid("path must be host, srflx, prflx or relay"))
}

/// A machine-readable code: 1 to 64 characters from `[A-Za-z0-9_.:-]`.
fn short_code(raw: &RawValue, name: &str) -> Result<String, ProtocolError> {
    let text = string(raw, name)?;
    let ok = !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if !ok {
        return Err(ProtocolError::invalid(format!(
            "{name} must be 1 to 64 characters from [A-Za-z0-9_.:-]"
        )));
    }
    Ok(text.into_owned())
}

#[cfg(test)]
mod tests {
    use crate::protocol::{ClientMessage, ErrorCode, parse};

    use super::*;

    fn ok(text: &str) -> ClientTelemetry {
        match parse(text).expect(text).message {
            ClientMessage::Telemetry(t) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn contract_examples_parse() {
        assert_eq!(
            ok(
                r#"{"type":"telemetry","event":"peer-connection","peer":"p_b2","outcome":"connected","ms":830}"#
            ),
            ClientTelemetry::PeerConnection {
                peer: "p_b2".into(),
                outcome: PeerOutcome::Connected,
                ms: Some(830.0),
                reason: None,
                path: None,
            }
        );
        assert_eq!(
            ok(
                r#"{"type":"telemetry","event":"peer-connection","peer":"p_b2","outcome":"connected","ms":830,"path":"relay"}"#
            ),
            ClientTelemetry::PeerConnection {
                peer: "p_b2".into(),
                outcome: PeerOutcome::Connected,
                ms: Some(830.0),
                reason: None,
                path: Some(CandidatePath::Relay),
            }
        );
        assert!(matches!(
            ok(
                r#"{"type":"telemetry","event":"peer-connection","peer":"p_b2","outcome":"failed","reason":"ice-failed"}"#
            ),
            ClientTelemetry::PeerConnection {
                outcome: PeerOutcome::Failed,
                ..
            }
        ));
        assert_eq!(
            ok(
                r#"{"type":"telemetry","event":"reconnect","attempt":3,"outcome":"success","downtimeMs":4100}"#
            ),
            ClientTelemetry::Reconnect {
                attempt: 3,
                outcome: ReconnectOutcome::Success,
                downtime_ms: Some(4100.0)
            }
        );
        assert_eq!(
            ok(r#"{"type":"telemetry","event":"signaling-rtt","ms":12.5}"#),
            ClientTelemetry::SignalingRtt { ms: 12.5 }
        );
        assert_eq!(
            ok(r#"{"type":"telemetry","event":"connect-time","ms":95}"#),
            ClientTelemetry::ConnectTime { ms: 95.0 }
        );
        assert_eq!(
            ok(
                r#"{"type":"telemetry","event":"client-error","code":"GETUSERMEDIA_DENIED","message":"no"}"#
            ),
            ClientTelemetry::ClientError {
                code: "GETUSERMEDIA_DENIED".into(),
                message: Some("no".into())
            }
        );
    }

    #[test]
    fn bad_telemetry_is_invalid_message() {
        for text in [
            r#"{"type":"telemetry"}"#,
            r#"{"type":"telemetry","event":"dance"}"#,
            r#"{"type":"telemetry","event":5}"#,
            r#"{"type":"telemetry","event":"peer-connection","outcome":"connected","ms":1}"#,
            r#"{"type":"telemetry","event":"peer-connection","peer":"p","outcome":"meh","ms":1}"#,
            r#"{"type":"telemetry","event":"peer-connection","peer":"p","outcome":"connected"}"#,
            r#"{"type":"telemetry","event":"peer-connection","peer":"p","outcome":"failed","reason":"a b"}"#,
            r#"{"type":"telemetry","event":"peer-connection","peer":"p","outcome":"connected","ms":1,"path":"turn"}"#,
            r#"{"type":"telemetry","event":"peer-connection","peer":"p","outcome":"connected","ms":1,"path":3}"#,
            r#"{"type":"telemetry","event":"reconnect","attempt":0,"outcome":"success"}"#,
            r#"{"type":"telemetry","event":"reconnect","attempt":1.5,"outcome":"success"}"#,
            r#"{"type":"telemetry","event":"reconnect","attempt":1,"outcome":"maybe"}"#,
            r#"{"type":"telemetry","event":"reconnect","attempt":1,"outcome":"success","downtimeMs":-1}"#,
            r#"{"type":"telemetry","event":"signaling-rtt"}"#,
            r#"{"type":"telemetry","event":"signaling-rtt","ms":"12"}"#,
            r#"{"type":"telemetry","event":"signaling-rtt","ms":-3}"#,
            r#"{"type":"telemetry","event":"connect-time","ms":1e12}"#,
            r#"{"type":"telemetry","event":"client-error"}"#,
            r#"{"type":"telemetry","event":"client-error","code":""}"#,
            r#"{"type":"telemetry","event":"client-error","code":"X","message":7}"#,
        ] {
            let e = parse(text).expect_err(text);
            assert_eq!(e.code, ErrorCode::InvalidMessage, "{text}");
            assert_eq!(e.reference.map(|r| r.as_str()), Some("telemetry"), "{text}");
        }
    }

    #[test]
    fn long_client_error_messages_are_cut() {
        let long = "x".repeat(5000);
        let text = format!(
            r#"{{"type":"telemetry","event":"client-error","code":"E","message":"{long}"}}"#
        );
        match ok(&text) {
            ClientTelemetry::ClientError { message, .. } => {
                assert_eq!(message.unwrap().len(), MAX_ERROR_MESSAGE_CHARS)
            }
            other => panic!("{other:?}"),
        }
    }
}
