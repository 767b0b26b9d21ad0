//! Vietnam time: the contract writes every time with `+07:00`.

use jiff::Timestamp;
use jiff::tz::{Offset, TimeZone};

/// UTC+7, Vietnam's only offset (no daylight saving).
pub fn vietnam() -> TimeZone {
    TimeZone::fixed(Offset::constant(7))
}

/// RFC 3339 with `+07:00`, seconds precision.
pub fn format_vietnam(ts: Timestamp) -> String {
    ts.to_zoned(vietnam())
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

/// Parses an RFC 3339 time that carries an offset.
pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    s.parse::<Timestamp>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_in_vietnam_time() {
        let ts = parse_rfc3339("2026-11-27T10:00:00Z").unwrap();
        assert_eq!(format_vietnam(ts), "2026-11-27T17:00:00+07:00");
    }

    #[test]
    fn times_without_offset_are_refused() {
        assert!(parse_rfc3339("2026-11-27T17:00:00").is_none());
    }
}
