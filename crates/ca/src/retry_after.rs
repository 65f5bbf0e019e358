//! Reading the `Retry-After` header puppetserver sends with 503 (and a proxy with 429).

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};

/// The wait a `Retry-After` value asks for: delay-seconds or an HTTP-date
/// (RFC 9110 §10.2.3, in any of its three formats, read by `httpdate`). A date in
/// the past means "now" (zero).
pub(crate) fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::from(now))
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 4, 0, 0).unwrap()
    }

    #[test]
    fn seconds() {
        assert_eq!(
            parse_retry_after("120", now()),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now()), Some(Duration::ZERO));
    }

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_retry_after("Sun, 22 Nov 2026 04:00:30 GMT", now()),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 22 Nov 2026 03:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn the_obsolete_http_date_formats_are_read_too() {
        // RFC 850 and asctime, which RFC 9110 still asks recipients to accept.
        assert_eq!(
            parse_retry_after("Sunday, 22-Nov-26 04:01:00 GMT", now()),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Sun Nov 22 04:00:05 2026", now()),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn garbage_is_ignored() {
        assert_eq!(parse_retry_after("soon", now()), None);
        assert_eq!(parse_retry_after("-5", now()), None);
        assert_eq!(parse_retry_after("", now()), None);
    }
}
