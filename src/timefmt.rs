//! Timestamps as the contracts write them: RFC 3339, UTC, milliseconds.

use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// What [`rfc3339_millis`] writes, in the `time` crate's terms.
const RFC3339_MILLIS_UTC: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// `2026-11-28T05:00:00.123Z`
pub fn rfc3339_millis(at: OffsetDateTime) -> String {
    let mut out = String::with_capacity(24);
    push_rfc3339_millis(&mut out, at);
    out
}

/// Appends `at` as [`rfc3339_millis`] writes it. Every log line starts
/// with one: the fixed-width fields are written digit by digit, which
/// costs a sixth of the `time` crate's general formatter (years outside
/// 0000 to 9999, which no clock reads, go through that formatter).
pub fn push_rfc3339_millis(out: &mut String, at: OffsetDateTime) {
    let at = at.to_offset(time::UtcOffset::UTC);
    let year = at.year();
    if !(0..=9999).contains(&year) {
        out.push_str(
            &at.format(RFC3339_MILLIS_UTC)
                .expect("formatting a UTC time cannot fail"),
        );
        return;
    }
    let (hour, minute, second, milli) = at.to_hms_milli();
    let mut text = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut value: u32| {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year as u32);
    put(5, 2, u8::from(at.month()).into());
    put(8, 2, at.day().into());
    put(11, 2, hour.into());
    put(14, 2, minute.into());
    put(17, 2, second.into());
    put(20, 3, milli.into());
    out.push_str(std::str::from_utf8(&text).expect("digits are ASCII"));
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

    #[test]
    fn writes_what_the_time_crates_formatter_writes() {
        let mut rng = rand::rng();
        let check = |at: OffsetDateTime| {
            let mut line = String::from("{");
            push_rfc3339_millis(&mut line, at);
            let utc = at.to_offset(time::UtcOffset::UTC);
            assert_eq!(line[1..], utc.format(RFC3339_MILLIS_UTC).unwrap(), "{at}");
        };
        check(OffsetDateTime::UNIX_EPOCH);
        check(parse_rfc3339("9999-12-31T23:59:59.999999999Z").unwrap());
        check(parse_rfc3339("0001-01-01T00:00:00.001+14:00").unwrap());
        check(OffsetDateTime::now_utc());
        for _ in 0..10_000 {
            let nanos: i128 = rand::Rng::random_range(&mut rng, 0..253_402_300_800_000_000_000);
            check(OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap());
        }
    }
}
