//! Civil time in the organisation's zone: the date and minute a person reads for an instant, and
//! the instant a local date starts. Pure arithmetic on milliseconds and a fixed UTC offset.

/// Civil date (year, month, day) and minute of the day of `ms` (since the epoch) at `offset_ms`
/// from UTC.
pub fn civil(ms: i64, offset_ms: i64) -> (i64, i64, i64, i64) {
    let secs = (ms + offset_ms).div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 60)
}

/// Days since the epoch of a civil date.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD HH:MM` of `ms` at `offset_ms` from UTC: what a person reads, no zone letter.
pub fn minute(ms: i64, offset_ms: i64) -> String {
    let (y, m, d, min) = civil(ms, offset_ms);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", min / 60, min % 60)
}

/// The instant local midnight starts the date `YYYY-MM-DD` at `offset_ms` from UTC; `None` for
/// anything that is not such a date (2026-02-31 included).
pub fn day_start(date: &str, offset_ms: i64) -> Option<i64> {
    let s = date.trim();
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let ms = days_from_civil(y, m, d) * 86_400_000 - offset_ms;
    let (y2, m2, d2, _) = civil(ms, offset_ms);
    ((y2, m2, d2) == (y, m, d)).then_some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beijing_midnight_and_minutes() {
        let offset = 8 * 3_600_000;
        // 2026-11-26 00:00 in Beijing is 2026-11-25 16:00 UTC.
        let start = day_start("2026-11-26", offset).unwrap();
        assert_eq!(start, 1_795_651_200_000 - offset);
        assert_eq!(minute(start, offset), "2026-11-26 00:00");
        assert_eq!(minute(start - 60_000, offset), "2026-11-25 23:59");
        assert_eq!(minute(start, 0), "2026-11-25 16:00");
        assert_eq!(day_start("2026-02-31", offset), None);
        assert_eq!(day_start("26-1-1", offset), None);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
    }
}
