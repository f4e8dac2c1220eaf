//! What an export covers: its window of time, parsed from the command line, and the groups of
//! influencers it reads at a time.

use chrono::{DateTime, NaiveDate, Utc};

use crate::series::{DAY_MS, window_of_seconds};

/// Points a group read holds at most, about (a group of influencers is read at once and held
/// until written): 1,000 influencers for a day of minutes, one for four years.
pub const POINTS_PER_GROUP: u64 = 1_500_000;
/// Influencers a group holds at most.
pub const MAX_GROUP: usize = 1_000;

/// An export's range, epoch milliseconds, both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start_ms: i64,
    pub end_ms: i64,
}

impl Window {
    /// The range from `start_ms` to `end_ms` (default: now), both inclusive; refused when it
    /// ends before it starts.
    pub fn new(start_ms: i64, end_ms: Option<i64>) -> anyhow::Result<Self> {
        let end_ms = end_ms.unwrap_or_else(|| Utc::now().timestamp_millis());
        anyhow::ensure!(
            start_ms <= end_ms,
            "--end ({}) is before --start ({})",
            stamp(end_ms),
            stamp(start_ms)
        );
        Ok(Self { start_ms, end_ms })
    }

    /// The points an influencer polled every minute has in the window, at most.
    pub fn points_per_influencer(self) -> u64 {
        ((self.end_ms - self.start_ms) / 60_000 + 1) as u64
    }
}

fn stamp(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).map_or(ms.to_string(), |t| t.to_rfc3339())
}

/// `--start`: RFC 3339, epoch seconds, or a UTC date's first second; epoch ms.
pub fn parse_start(raw: &str) -> Result<i64, String> {
    parse_moment(raw, false)
}

/// `--end`: as `--start`, but a date means its last second (its last millisecond, as every
/// range's inclusive end: a point belongs to the second its time shows).
pub fn parse_end(raw: &str) -> Result<i64, String> {
    parse_moment(raw, true)
}

fn parse_moment(raw: &str, end: bool) -> Result<i64, String> {
    let raw = raw.trim();
    let (start_s, end_s) = if let Ok(seconds) = raw.parse::<i64>() {
        (seconds, seconds)
    } else if let Ok(date) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        let first = date.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
        let first_s = first.timestamp();
        (first_s, first_s + DAY_MS / 1000 - 1)
    } else if let Ok(time) = DateTime::parse_from_rfc3339(raw) {
        (time.timestamp(), time.timestamp())
    } else {
        return Err(
            "expected RFC 3339 (2026-12-01T00:00:00Z), epoch seconds or a date (2026-12-01)"
                .to_string(),
        );
    };
    const YEAR_10000_S: i64 = 253_402_300_800;
    if !(0..YEAR_10000_S).contains(&start_s) {
        return Err("expected a moment from 1970 to 9999".to_string());
    }
    let (start_ms, end_ms) = window_of_seconds(start_s, end_s);
    Ok(if end { end_ms } else { start_ms })
}

/// `ids` (sorted, distinct) in groups read at once: at most [`MAX_GROUP`] influencers and
/// [`POINTS_PER_GROUP`] points of `points_per_influencer` each, and an id range not much wider
/// than the group (a group's read covers every id between its first and last, so sparse ids
/// start new groups rather than read the influencers between them).
pub fn group_ids(ids: &[i64], points_per_influencer: u64) -> Vec<&[i64]> {
    let size = (POINTS_PER_GROUP / points_per_influencer.max(1)).clamp(1, MAX_GROUP as u64) as i64;
    let mut groups = Vec::new();
    let mut start = 0;
    for i in 1..=ids.len() {
        let full = i - start == size as usize;
        let far = i < ids.len() && ids[i] - ids[start] >= 2 * size;
        if i == ids.len() || full || far {
            groups.push(&ids[start..i]);
            start = i;
        }
    }
    groups
}
