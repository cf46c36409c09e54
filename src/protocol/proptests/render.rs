//! Writing a JSON value as text in one of several equivalent styles (white
//! space, escapes, key order), so that parsing is tested on every spelling.

use std::fmt::Write as _;

use proptest::prelude::*;
use serde_json::Value;

/// How a generated message is written out: escaping every character of every
/// string as `\uXXXX` (so that strings arrive owned, not borrowed), and with
/// white space between tokens or not.
#[derive(Clone, Copy, Debug)]
pub(super) struct Style {
    escape_all: bool,
    spaced: bool,
}

pub(super) fn style() -> impl Strategy<Value = Style> {
    any::<(bool, bool)>().prop_map(|(escape_all, spaced)| Style { escape_all, spaced })
}

pub(super) fn render(value: &Value, style: Style) -> String {
    let mut out = String::new();
    write_value(value, style, &mut out);
    out
}

pub(super) fn write_value(value: &Value, style: Style, out: &mut String) {
    let gap = if style.spaced { " \n\t" } else { "" };
    match value {
        Value::String(s) => write_string(s, style, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(gap);
                write_value(item, style, out);
            }
            out.push_str(gap);
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(gap);
                write_string(key, style, out);
                out.push_str(gap);
                out.push(':');
                out.push_str(gap);
                write_value(item, style, out);
            }
            out.push_str(gap);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

pub(super) fn write_string(s: &str, style: Style, out: &mut String) {
    if !style.escape_all {
        out.push_str(&Value::from(s).to_string());
        return;
    }
    out.push('"');
    for c in s.chars() {
        let mut units = [0u16; 2];
        for unit in c.encode_utf16(&mut units) {
            write!(out, "\\u{unit:04x}").unwrap();
        }
    }
    out.push('"');
}
