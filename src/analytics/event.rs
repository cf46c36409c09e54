//! What is recorded: events as the connection loop reports them, and the
//! session record the writer keeps for each connection. Stored values are
//! JSON with times as unix milliseconds (see `migrations-notes/`).
//! Relayed `data`, resume tokens and the API token have no field here.

use serde::{Deserialize, Serialize};

use super::resume_state::ResumeChange;
use crate::protocol::{ClientTelemetry, Protocol};

/// One event of a session, as the hot path hands it to the recorder.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The session (connection) id as a 128-bit ULID; 0 for server samples.
    pub session: u128,
    /// Unix milliseconds.
    pub at_ms: u64,
    /// Process-wide sequence, to order events of the same millisecond.
    pub seq: u64,
    pub kind: EventKind,
}

/// The kinds of recorded events. All but [`EventKind::End`] and
/// [`EventKind::Sample`] are stored in the session's event list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum EventKind {
    /// A WebSocket connection was accepted.
    Connect {
        peer: String,
        remote_addr: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        user_agent: Option<String>,
        /// Open connections right after this one (for peakConnections).
        #[serde(skip)]
        connections: u64,
        /// The wire protocol it speaks (left out for Chatsubo's own).
        #[serde(default, skip_serializing_if = "Protocol::is_native")]
        protocol: Protocol,
    },
    /// The peer joined a room (not a resume).
    Join {
        room: String,
        peer: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        display_name: Option<String>,
        /// Room size after the join.
        size: u64,
    },
    /// The peer left a room (leave, close, kick or the end of its grace).
    Leave {
        room: String,
        peer: String,
        reason: String,
    },
    /// The connection dropped and the resume grace began.
    Disconnect {
        room: String,
        peer: String,
        reason: String,
    },
    /// The peer took back its place with a resume token.
    Resume {
        room: String,
        peer: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        resumed_from: Option<String>,
        size: u64,
    },
    /// A join refused with ROOM_FULL.
    RoomFull { room: String },
    /// An `error` sent to the client.
    Error {
        code: String,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    /// A telemetry event the client reported.
    Telemetry(TelemetryEvent),
    /// The connection ended (not stored as an event: it closes the session).
    End {
        close_reason: CloseReason,
        messages_in: u64,
        messages_out: u64,
        errors: u64,
    },
    /// A periodic sample of open connections (for peakConnections).
    Sample { connections: u64 },
    /// A change of the resume state (kept in the `resume` tree for a
    /// restarted server; never in the session's event list).
    #[serde(skip)]
    ResumeState(ResumeChange),
}

impl EventKind {
    /// Whether the event goes into the session's event list.
    pub fn is_stored(&self) -> bool {
        !matches!(
            self,
            EventKind::End { .. } | EventKind::Sample { .. } | EventKind::ResumeState(_)
        )
    }
}

/// A telemetry event as stored: the event's name and the fields its type has.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryEvent {
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// How a connected pair connected (`relay`: through TURN).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl From<&ClientTelemetry> for TelemetryEvent {
    /// The stored form of a client telemetry event: every field it validated.
    fn from(event: &ClientTelemetry) -> Self {
        let mut stored = TelemetryEvent {
            event: event.event_name().to_string(),
            ..TelemetryEvent::default()
        };
        match event {
            ClientTelemetry::PeerConnection {
                peer,
                outcome,
                ms,
                reason,
                path,
            } => {
                stored.peer = Some(peer.clone());
                stored.outcome = Some(outcome.as_str().to_string());
                stored.ms = *ms;
                stored.reason = reason.clone();
                stored.path = path.map(|p| p.as_str().to_string());
            }
            ClientTelemetry::Reconnect {
                attempt,
                outcome,
                downtime_ms,
            } => {
                stored.attempt = Some(*attempt);
                stored.outcome = Some(outcome.as_str().to_string());
                stored.downtime_ms = *downtime_ms;
            }
            ClientTelemetry::SignalingRtt { ms } | ClientTelemetry::ConnectTime { ms } => {
                stored.ms = Some(*ms);
            }
            ClientTelemetry::ClientError { code, message } => {
                stored.code = Some(code.clone());
                stored.message = message.clone();
            }
        }
        stored
    }
}

/// How a session ended, as the API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    Left,
    Disconnected,
    Timeout,
    Kicked,
    ServerShutdown,
    ServerCrash,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Left => "left",
            CloseReason::Disconnected => "disconnected",
            CloseReason::Timeout => "timeout",
            CloseReason::Kicked => "kicked",
            CloseReason::ServerShutdown => "server_shutdown",
            CloseReason::ServerCrash => "server_crash",
        }
    }
}

/// A stored event: its time and its kind's fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Unix milliseconds.
    pub at: u64,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The stored record of one session (the value of the `sessions` tree).
///
/// From schema v4 on, a stored value leaves out what it can do without:
/// the session id (the record's key holds it; [`decode_session`] puts it
/// back), fields that are `null` and counters that are 0. Older values,
/// which have them all, read the same.
///
/// [`decode_session`]: super::codec::decode_session
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRecord {
    #[serde(default, skip_serializing)]
    pub session_id: String,
    pub peer_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub remote_addr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Unix milliseconds.
    pub connected_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_reason: Option<CloseReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub messages_in: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub messages_out: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub errors: u64,
    /// Joins of this session refused with ROOM_FULL.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub room_full_rejections: u64,
    /// The wire protocol it spoke (left out for Chatsubo's own).
    #[serde(default, skip_serializing_if = "Protocol::is_native")]
    pub protocol: Protocol,
    /// The events of the writer batch the session began in (schema v5):
    /// they go into the record, which that batch writes anyway, instead of
    /// an `events` record of their own. Later batches' events are
    /// `events` records. Never part of the API's session object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<StoredEvent>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl SessionRecord {
    /// The record of session `id`, connected at `at` and still open.
    pub fn opened(
        id: u128,
        at: u64,
        peer: &str,
        remote_addr: &str,
        user_agent: &Option<String>,
        protocol: Protocol,
    ) -> Self {
        SessionRecord {
            session_id: ulid::Ulid(id).to_string(),
            peer_id: peer.to_string(),
            room: None,
            display_name: None,
            remote_addr: remote_addr.to_string(),
            user_agent: user_agent.clone(),
            connected_at: at,
            ended_at: None,
            duration_ms: None,
            close_reason: None,
            resumed_from: None,
            messages_in: 0,
            messages_out: 0,
            errors: 0,
            room_full_rejections: 0,
            protocol,
            events: Vec::new(),
        }
    }

    /// Closes the session at `ended_at` (never before it began).
    pub fn close(&mut self, ended_at: u64, reason: CloseReason) {
        let ended_at = ended_at.max(self.connected_at);
        self.ended_at = Some(ended_at);
        self.duration_ms = Some(ended_at - self.connected_at);
        self.close_reason = Some(reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_stored_with_their_kind_and_camel_case_fields() {
        let e = StoredEvent {
            at: 5,
            kind: EventKind::Resume {
                room: "lobby".into(),
                peer: "p_1".into(),
                resumed_from: Some("01J".into()),
                size: 2,
            },
        };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"at":5,"kind":"resume","room":"lobby","peer":"p_1","resumedFrom":"01J","size":2})
        );
        let back: StoredEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
        let rf = serde_json::to_value(StoredEvent {
            at: 1,
            kind: EventKind::RoomFull { room: "r".into() },
        })
        .unwrap();
        assert_eq!(rf["kind"], "room_full");
    }
}
