//! W3C `traceparent` values: parsing what clients send, formatting what the
//! server hands to the receivers of a relay, and fresh random ids.

use std::fmt;

use rand::RngCore;

/// A parsed W3C trace context (`00-<trace id>-<parent id>-<flags>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl TraceParent {
    /// Parses a `traceparent` header value. Version 00 must be exactly 55
    /// characters; higher versions may append fields (W3C forward rule).
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() < 55 || bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        // The fields are sliced by byte offset below: a multi-byte character
        // could straddle one of them and make the slice panic.
        if !bytes[..55].is_ascii() {
            return None;
        }
        let version = hex_byte(&text[0..2])?;
        if version == 0xff || (version == 0 && bytes.len() != 55) {
            return None;
        }
        if bytes.len() > 55 && bytes[55] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        for (i, b) in trace_id.iter_mut().enumerate() {
            *b = hex_byte(&text[3 + 2 * i..5 + 2 * i])?;
        }
        let mut span_id = [0u8; 8];
        for (i, b) in span_id.iter_mut().enumerate() {
            *b = hex_byte(&text[36 + 2 * i..38 + 2 * i])?;
        }
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        let flags = hex_byte(&text[53..55])?;
        Some(TraceParent {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }
}

impl TraceParent {
    /// The version-00 text form, `00-<trace id>-<span id>-<flags>`, without
    /// any allocation or formatting machinery (it is built for every relay).
    pub fn encode(&self) -> [u8; 55] {
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        hex::encode_to_slice(self.trace_id, &mut out[3..35]).expect("32 hex digits");
        hex::encode_to_slice(self.span_id, &mut out[36..52]).expect("16 hex digits");
        if self.sampled {
            out[54] = b'1';
        }
        out
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.encode();
        f.write_str(std::str::from_utf8(&text).expect("hex digits are ASCII"))
    }
}

/// A random, non-zero W3C span id.
pub fn random_span_id() -> [u8; 8] {
    loop {
        let id = rand::rng().next_u64().to_be_bytes();
        if id != [0; 8] {
            return id;
        }
    }
}

/// A random, non-zero W3C trace id.
pub fn random_trace_id() -> [u8; 16] {
    loop {
        let mut id = [0u8; 16];
        rand::rng().fill_bytes(&mut id);
        if id != [0; 16] {
            return id;
        }
    }
}

fn hex_byte(pair: &str) -> Option<u8> {
    // Upper-case hex is invalid in W3C trace context.
    if pair
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        u8::from_str_radix(pair, 16).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn round_trip() {
        let tp = TraceParent::parse(GOOD).unwrap();
        assert!(tp.sampled);
        assert_eq!(tp.to_string(), GOOD);
    }

    #[test]
    fn refuses_malformed() {
        assert!(TraceParent::parse("").is_none());
        assert!(TraceParent::parse(&GOOD.to_uppercase()).is_none());
        assert!(
            TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none()
        );
        assert!(
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01").is_none()
        );
        assert!(
            TraceParent::parse("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_none()
        );
        assert!(TraceParent::parse(&format!("{GOOD}-extra")).is_none());
        assert!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra")
                .is_some()
        );
    }

    /// Found by a property test: a three-byte character across the boundary
    /// of the first hex pair made `parse` slice inside it and panic, which a
    /// client could trigger with any message's `traceparent`.
    #[test]
    fn multi_byte_characters_are_refused_not_sliced() {
        let tp = "00-\u{800}00000000000000000000000000000-0000000000000000-00";
        assert_eq!(tp.len(), 55);
        assert!(TraceParent::parse(tp).is_none());
        for (i, c) in [(3, '€'), (36, '€'), (53, 'é'), (0, 'é'), (1, 'é')] {
            let mut s = String::from(GOOD);
            s.replace_range(i..i + c.len_utf8(), &c.to_string());
            assert!(TraceParent::parse(&s).is_none(), "{s}");
        }
        let text = format!(r#"{{"type":"ping","traceparent":"{tp}"}}"#);
        assert!(crate::protocol::parse(&text).unwrap().traceparent.is_none());
    }
}
