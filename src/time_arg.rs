//! Parsing a point in time given on the command line: RFC 3339
//! (`2026-11-22T18:00:00Z`, `2026-11-22T19:00:00.250+01:00`) or
//! milliseconds since the Unix epoch, as `missive log dump` prints them.

/// Milliseconds since the Unix epoch of `s`.
pub fn parse_time_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map_err(|e| format!("{s:?}: milliseconds since the epoch: {e}"));
    }
    rfc3339(s).ok_or_else(|| {
        format!(
            "{s:?} is neither RFC 3339 (2026-11-22T18:00:00Z) nor milliseconds since the Unix epoch"
        )
    })
}

fn rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (h, mi, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut at = 19;
    let mut ms = 0i64;
    if b.get(at) == Some(&b'.') {
        let start = at + 1;
        let mut end = start;
        while b.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
        if end == start {
            return None;
        }
        // Milliseconds: the first three digits, the rest dropped.
        let digits = &s[start..end.min(start + 3)];
        ms = digits.parse::<i64>().ok()? * 10i64.pow(3 - digits.len() as u32);
        at = end;
    }
    let offset_s = match &s[at..] {
        "Z" | "z" => 0,
        o if o.len() == 6 && matches!(o.as_bytes()[0], b'+' | b'-') && o.as_bytes()[3] == b':' => {
            let oh = num(at + 1, 2)?;
            let om = num(at + 4, 2)?;
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    u64::try_from(secs * 1000 + ms).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::parse_time_ms;
    use crate::time_fmt::rfc3339_ms;

    #[test]
    fn reads_what_dump_prints_and_plain_milliseconds() {
        for ms in [0, 951_782_400_000, 1_795_332_900_123] {
            assert_eq!(parse_time_ms(&rfc3339_ms(ms)), Ok(ms));
        }
        assert_eq!(parse_time_ms("1795332900123"), Ok(1_795_332_900_123));
        assert_eq!(
            parse_time_ms("2026-11-22T08:35:00.123+01:00"),
            Ok(1_795_332_900_123)
        );
        assert_eq!(parse_time_ms("2026-11-22T07:35:00Z"), Ok(1_795_332_900_000));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-22T07:35:00",
            "-5",
        ] {
            assert!(parse_time_ms(bad).is_err(), "{bad:?}");
        }
    }
}
