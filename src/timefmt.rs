//! Timestamps as the contracts write them: RFC 3339, UTC, milliseconds.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// `2026-11-28T05:00:00.123Z`
pub fn rfc3339_millis(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        ))
        .expect("formatting a UTC time cannot fail")
}

/// Reads any RFC 3339 timestamp.
pub fn parse_rfc3339(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_millis_in_utc() {
        let t = parse_rfc3339("2026-11-28T06:00:00.123456+01:00").unwrap();
        assert_eq!(rfc3339_millis(t), "2026-11-28T05:00:00.123Z");
    }
}
