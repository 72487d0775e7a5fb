//! UTC timestamps for display and for `--since`/`--until` (no time-zone
//! database needed: everything is UTC, as the documents store it).

use std::time::{SystemTime, UNIX_EPOCH};

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `2026-11-26T07:38:09.123Z` (milliseconds, UTC).
pub fn format_unix_nanos(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let ms = ns.rem_euclid(1_000_000_000) / 1_000_000;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// Now, in nanoseconds since the Unix epoch.
pub fn now_unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Parses a point in time: a duration ago (`90s`, `15m`, `2h`, `7d`) or an
/// RFC 3339 UTC time (`2026-11-26T07:00:00Z`, fractional seconds allowed).
pub fn parse_time(s: &str, now_ns: i64) -> Result<i64, String> {
    let bad = || {
        format!(
            "not a time: {s:?} (expected a duration ago like 15m, 2h, 7d, or 2026-11-26T07:00:00Z)"
        )
    };
    if let Some(unit) = s.chars().last().filter(|c| "smhd".contains(*c)) {
        if let Ok(n) = s[..s.len() - 1].parse::<i64>() {
            let secs = match unit {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                _ => 86_400,
            };
            // Checked: `99999999999d` is out of range, an error (not an
            // overflow panic); so is a time before 1677 (i64 nanoseconds).
            if n < 0 {
                return Err(bad());
            }
            return n
                .checked_mul(secs * 1_000_000_000)
                .and_then(|ago| now_ns.checked_sub(ago))
                .ok_or_else(|| format!("out of range: {s:?} (too far in the past)"));
        }
    }
    let b = s.as_bytes();
    if b.len() < 20 || !s.ends_with(['Z', 'z']) || !s.is_ascii() {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| {
        let digits = &s[r];
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        digits.parse::<i64>().map_err(|_| bad())
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    // RFC 3339 5.7: the day within its month (a leap year's February has
    // 29), the seconds up to a leap second's 60.
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = match mo {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=12).contains(&mo) || !(1..=month_days).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return Err(bad());
    }
    let frac = &s[19..s.len() - 1];
    let nanos = match frac.strip_prefix('.') {
        None if frac.is_empty() => 0,
        Some(digits)
            if !digits.is_empty()
                && digits.len() <= 9
                && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            let v: i64 = digits.parse().map_err(|_| bad())?;
            v * 10i64.pow(9 - digits.len() as u32)
        }
        _ => return Err(bad()),
    };
    let days = days_from_civil(y, mo, d);
    // Nanoseconds in an i64 span 1677..2262: later dates are out of range.
    (days * 86_400 + h * 3600 + mi * 60 + se)
        .checked_mul(1_000_000_000)
        .and_then(|ns| ns.checked_add(nanos))
        .ok_or_else(|| format!("out of range: {s:?} (times must be between 1677 and 2262)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_utc() {
        let t = parse_time("2026-11-26T07:38:09.123Z", 0).unwrap();
        assert_eq!(format_unix_nanos(t), "2026-11-26T07:38:09.123Z");
        assert_eq!(parse_time("1970-01-01T00:00:00Z", 0), Ok(0));
        assert_eq!(format_unix_nanos(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            parse_time("2000-03-01T00:00:00Z", 0),
            Ok(951_868_800_000_000_000)
        );
        // Leap days exist in leap years (2000: divisible by 400).
        assert_eq!(
            parse_time("2000-02-29T00:00:00Z", 0),
            Ok(951_782_400_000_000_000)
        );
        assert!(parse_time("2028-02-29T00:00:00Z", 0).is_ok());
    }

    #[test]
    fn relative_times() {
        assert_eq!(
            parse_time("15m", 1_000 * 1_000_000_000),
            Ok(100 * 1_000_000_000)
        );
        assert_eq!(parse_time("1d", 86_400_000_000_000), Ok(0));
    }

    #[test]
    fn rejects_nonsense() {
        for s in [
            "",
            "yesterday",
            "15x",
            "2026-13-01T00:00:00Z",
            "2026-11-26T07:00:00",
            "+026-11-26T07:00:00Z",
            "2026-11-26T07:00:00.+5Z",
            "2026-11-26T07:00x00Z",
            "2026-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-11-00T00:00:00Z",
            "-15m",
            // Out of range: errors, never an overflow.
            "99999999999d",
            "9223372036854775807s",
            "9999-12-31T23:59:59Z",
        ] {
            assert!(parse_time(s, now_unix_nanos()).is_err(), "{s}");
        }
    }
}
