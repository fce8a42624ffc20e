//! Quotas and size caps: how much one device may add in a day (documents, stored refusals), how
//! many devices a user may register in a day, and how large one change and one view may be.

use std::collections::HashMap;

use serde::Serialize;

/// Largest raw change accepted (bytes; pushed changes are plain, uncompressed chunks). The
/// largest legitimate change — a 20,000-character description — is about 60 KB.
pub const MAX_CHANGE_BYTES: usize = 256 << 10;

/// Largest materialized view (JSON bytes) a change may leave a document with.
pub const MAX_VIEW_BYTES: usize = 4 << 20;

/// Per device (or user) and day. A day is the county's civil day (its UTC offset).
#[derive(Debug, Clone, Copy)]
pub struct Quotas {
    /// New documents (reports and patrols) one device may create in a day.
    pub docs_per_device_day: u32,
    /// Devices one user may register in a day.
    pub devices_per_user_day: u32,
    /// Refusals stored per device and day (for `admin devices`); beyond it they are only counted.
    pub refusals_per_device_day: u32,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas { docs_per_device_day: 500, devices_per_user_day: 10, refusals_per_device_day: 1_000 }
    }
}

const DAY_MS: i64 = 86_400_000;

/// The start (ms since the epoch) of the civil day holding `at`, at a UTC offset in minutes.
pub fn day_start(at: i64, utc_offset_minutes: i32) -> i64 {
    let offset = i64::from(utc_offset_minutes) * 60_000;
    (at + offset).div_euclid(DAY_MS) * DAY_MS - offset
}

/// Counts per key and day, loaded once per day from the store and kept in memory after that.
#[derive(Debug, Default)]
pub struct DayCounts {
    counts: HashMap<String, (i64, u32)>,
}

impl DayCounts {
    /// Today's count for `key`: `load(day_start)` is asked the first time each day.
    pub fn get(&mut self, key: &str, day: i64, load: impl FnOnce(i64) -> u32) -> u32 {
        match self.counts.get(key) {
            Some(&(d, n)) if d == day => n,
            _ => {
                let n = load(day);
                self.counts.insert(key.to_string(), (day, n));
                n
            }
        }
    }

    pub fn add(&mut self, key: &str, day: i64) {
        let e = self.counts.entry(key.to_string()).or_insert((day, 0));
        if e.0 != day {
            *e = (day, 0);
        }
        e.1 += 1;
    }
}

/// Bytes `value` serializes to as JSON, without building the string.
pub fn json_len(value: &impl Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, value);
    c.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_follow_the_county_offset() {
        // 2026-12-02 00:30 in Beijing is 2026-12-01 16:30 UTC.
        let at = 1_796_142_600_000;
        let start = day_start(at, 480);
        assert_eq!(start, 1_796_140_800_000, "midnight in Beijing");
        assert_eq!(day_start(start - 1, 480), start - DAY_MS);
        assert_eq!(day_start(at, 0), 1_796_083_200_000);
    }

    #[test]
    fn counts_load_once_a_day_and_restart_the_next() {
        let mut c = DayCounts::default();
        assert_eq!(c.get("d", 1, |_| 5), 5);
        c.add("d", 1);
        assert_eq!(c.get("d", 1, |_| panic!("loaded once")), 6);
        assert_eq!(c.get("d", 2, |_| 0), 0);
        assert_eq!(json_len(&serde_json::json!({"a": "é"})), r#"{"a":"é"}"#.len());
    }
}
