//! The fields of a client message as they arrive: one pass over the JSON
//! keeps each as raw text, and each message type then reads the ones it has.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::ProtocolError;

/// Every field any client message may have, still as raw JSON. Unknown
/// fields are ignored so that clients may be newer than the server.
#[derive(Deserialize)]
pub(super) struct Fields<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) room: Option<&'a RawValue>,
    #[serde(rename = "displayName", borrow)]
    pub(super) display_name: Option<&'a RawValue>,
    #[serde(rename = "resumeToken", borrow)]
    pub(super) resume_token: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) to: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) data: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) id: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) traceparent: Option<&'a RawValue>,
    // Telemetry fields (see client_report.rs).
    #[serde(borrow)]
    pub(super) event: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) peer: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) outcome: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) ms: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) reason: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) attempt: Option<&'a RawValue>,
    #[serde(rename = "downtimeMs", borrow)]
    pub(super) downtime_ms: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) code: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) message: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) path: Option<&'a RawValue>,
}

pub(super) fn required<'a>(
    raw: Option<&'a RawValue>,
    name: &str,
) -> Result<&'a RawValue, ProtocolError> {
    raw.ok_or_else(|| ProtocolError::invalid(format!("missing field {name}")))
}

/// Reads a JSON string, borrowing it when it holds no escapes.
pub(super) fn string<'a>(raw: &'a RawValue, name: &str) -> Result<Cow<'a, str>, ProtocolError> {
    let wrong = || ProtocolError::invalid(format!("{name} must be a string"));
    if let Ok(s) = serde_json::from_str::<&'a str>(raw.get()) {
        return Ok(Cow::Borrowed(s));
    }
    serde_json::from_str::<String>(raw.get())
        .map(Cow::Owned)
        .map_err(|_| wrong())
}
