//! The time series of every influencer, in two tiers, and the one read path over both.
//!
//! - **Hot**: `influencer_metrics`, the raw points the sink writes (one row a point, in hour
//!   chunks), and `late_points`, points that reached the sink after their hour had closed.
//! - **Cold**: `influencer_hour_blocks`, the closed hours: one row per hour and block of
//!   [`BLOCK_MEMBERS`] consecutive influencers, each member's points encoded ([`codec`]); then
//!   `influencer_segments`, one row per influencer per closed UTC day, its points encoded, and
//!   its [`Summary`] in `influencer_summary_packs`, one row per influencer and 28 days
//!   ([`pack`]); and each influencer's last point of each closed day in
//!   `influencer_day_closes`, one [`Snapshot`] per batch of influencers ([`closes`]).
//!
//! Compaction (`jobs::compaction`) moves points from hot to cold through [`store`]; every reader
//! (the range API, the dashboard, the gaps endpoint, the spike detector, the benchmarks) goes
//! through [`read`], which answers the same before and after a compaction.
//!
//! A slot stored in both tiers (a point delivered again after its hour was compacted) is
//! answered once, with the value stored first: the segment's.

/// Influencers per row of `influencer_hour_blocks` (migration 0005): member `i` of block `b`
/// is influencer `b * 64 + i`, so `influencer_id >> 6` and `influencer_id & 63` in SQL.
pub(crate) const BLOCK_MEMBERS: usize = 64;

/// The block and member index of an influencer (as SQL's `>> 6` and `& 63`: negative ids too).
pub(crate) fn block_of(influencer_id: i64) -> (i64, usize) {
    (influencer_id >> 6, (influencer_id & 63) as usize)
}

/// The influencer of member `member` of block `block`.
pub(crate) fn member_of(block: i64, member: usize) -> i64 {
    (block << 6) + member as i64
}

/// A segment's period, epoch ms: `(start, end)`, end exclusive.
pub(crate) type Period = (i64, i64);

/// Epoch milliseconds as a `timestamptz` to bind (the epoch itself past chrono's range, which
/// no slot reaches).
pub fn at(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or(chrono::DateTime::UNIX_EPOCH)
}

pub mod closes;
pub mod codec;
pub mod compact;
#[cfg(feature = "tools")]
pub mod fixtures;
pub mod hot;
pub mod inspect;
pub mod pack;
pub mod ranks;
pub mod read;
pub mod retention;
pub mod snapshot;
pub mod store;

pub use codec::SeriesPoint;
pub use snapshot::Snapshot;

/// A closed hour is compacted once it has been over this long (late points have landed).
pub(crate) const SETTLE_MS: i64 = 10 * 60_000;

/// The sink writes a point whose slot is older than this into `late_points` rather than
/// `influencer_metrics`: half the settle time, so a write into a chunk never races its
/// compaction (whatever the clocks of the sink and the database disagree by, up to 5 minutes).
pub(crate) const LATE_AFTER_MS: i64 = SETTLE_MS / 2;

/// One hour and one UTC day, in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

/// The milliseconds `[start_s, end_s]` (epoch seconds, both inclusive) cover: a point belongs
/// to the second its `time` shows, so the window ends at the end of `end_s`'s last
/// millisecond. Every reader asked for a range in seconds (raw, buckets, gaps, the average)
/// turns it into milliseconds here: slots carry a millisecond offset within the interval
/// (`schedule::SlotGrid`), and `end_s * 1000` left out a point whose time was `end_s`.
pub(crate) fn window_of_seconds(start_s: i64, end_s: i64) -> (i64, i64) {
    (
        start_s.saturating_mul(1000),
        end_s.saturating_mul(1000).saturating_add(999),
    )
}

/// The number of `step_ms` buckets (aligned as [`bucket_of`] aligns them) that
/// `[start_ms, end_ms]` touches: an unaligned range holds one more than its span divided by the
/// step.
pub(crate) fn buckets_touched(start_ms: i64, end_ms: i64, step_ms: i64) -> i64 {
    if end_ms < start_ms {
        return 0;
    }
    (bucket_of(end_ms, step_ms) - bucket_of(start_ms, step_ms)) / step_ms + 1
}

/// `time_bucket`'s default origin (Monday 2000-01-03 00:00 UTC) in epoch milliseconds: buckets
/// are aligned as TimescaleDB aligned them when the database computed them.
const BUCKET_ORIGIN_MS: i64 = 946_857_600_000;

/// The start (epoch ms) of the `step_ms` bucket holding `t_ms`.
pub(crate) fn bucket_of(t_ms: i64, step_ms: i64) -> i64 {
    BUCKET_ORIGIN_MS + (t_ms - BUCKET_ORIGIN_MS).div_euclid(step_ms) * step_ms
}

/// The follower/following ratio a bucket's statistics use (unrounded; none when nobody is
/// followed).
fn ratio(p: &SeriesPoint) -> Option<f64> {
    ratio_of(p.follower_count, p.following_count)
}

/// followers ÷ following, none when following is 0.
fn ratio_of(followers: i32, following: i32) -> Option<f64> {
    (following != 0).then(|| f64::from(followers) / f64::from(following))
}

/// A sum of floating-point ratios that comes out the same bit for bit whether it is computed
/// from points or from the sums stored in hour and day segments: points are summed per hour in
/// slot order, hours per UTC day, days in order. (A flat sum would depend on which segments a
/// bucket happened to read whole.)
#[derive(Debug, Clone, Copy, Default)]
pub struct NestedSum {
    total: f64,
    day: Option<(i64, f64)>,
    hour: Option<(i64, f64)>,
}

impl NestedSum {
    pub fn over(points: &[SeriesPoint]) -> Self {
        let mut sum = Self::default();
        for p in points {
            if let Some(r) = ratio(p) {
                sum.add_point(p.slot_ms, r);
            }
        }
        sum
    }

    fn flush_hour(&mut self) {
        if let Some((hour, s)) = self.hour.take() {
            self.add_to_day(hour.div_euclid(DAY_MS) * DAY_MS, s);
        }
    }

    fn add_to_day(&mut self, day: i64, s: f64) {
        match &mut self.day {
            Some((d, sum)) if *d == day => *sum += s,
            _ => {
                self.flush_day();
                self.day = Some((day, s));
            }
        }
    }

    fn flush_day(&mut self) {
        if let Some((_, s)) = self.day.take() {
            self.total += s;
        }
    }

    pub fn add_point(&mut self, slot_ms: i64, value: f64) {
        match &mut self.hour {
            Some((h, sum)) if slot_ms >= *h && slot_ms < *h + HOUR_MS => *sum += value,
            _ => {
                self.flush_hour();
                self.hour = Some((slot_ms.div_euclid(HOUR_MS) * HOUR_MS, value));
            }
        }
    }

    /// Adds `values`, all of the hour of `slot_ms`, in order: the same as [`Self::add_point`]
    /// for each, without the hour looked up value by value (a run of a step of an hour or less).
    fn add_hour_run(&mut self, slot_ms: i64, mut values: impl Iterator<Item = f64>) {
        let Some(first) = values.next() else {
            return;
        };
        self.add_point(slot_ms, first);
        let (_, sum) = self.hour.as_mut().expect("add_point sets the hour");
        for value in values {
            *sum += value;
        }
    }

    /// Adds a segment's stored sum: an hour's (`span_ms` = an hour) or a day's.
    pub(crate) fn add_segment(&mut self, period_start_ms: i64, span_ms: i64, sum: f64) {
        self.flush_hour();
        if span_ms >= DAY_MS {
            self.flush_day();
            self.total += sum;
        } else {
            self.add_to_day(period_start_ms.div_euclid(DAY_MS) * DAY_MS, sum);
        }
    }

    pub fn total(mut self) -> f64 {
        self.flush_hour();
        self.flush_day();
        self.total
    }
}

/// What a day segment's summary (in its summary pack, [`pack`]) says about its points besides
/// the points themselves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub points: i32,
    pub first_slot_ms: i64,
    pub last_slot_ms: i64,
    pub follower_sum: i64,
    pub follower_min: i32,
    pub follower_max: i32,
    pub follower_last: i32,
    pub following_sum: i64,
    pub following_min: i32,
    pub following_max: i32,
    pub following_last: i32,
    pub ratio_points: i32,
    pub ratio_min: Option<f64>,
    pub ratio_max: Option<f64>,
    pub ratio_sum: Option<f64>,
}

impl Summary {
    /// The summary of points in slot order (at least one).
    pub fn of(points: &[SeriesPoint]) -> Self {
        let mut acc = Aggregate::default();
        acc.add_points(points);
        acc.summary().expect("a segment has at least one point")
    }
}

/// Statistics of one count over a bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats<T> {
    pub avg: f64,
    pub min: T,
    pub max: T,
    pub last: T,
}

/// One bucket of a range: its start (epoch seconds), how many points it holds, and the
/// statistics of each count and of the ratio (none when the last point follows nobody, or no
/// point does).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketStats {
    pub time: i64,
    pub samples: i64,
    pub follower_count: Stats<i32>,
    pub following_count: Stats<i32>,
    pub follower_ratio: Option<Stats<f64>>,
}

#[derive(Debug, Clone, Copy)]
struct CountAcc {
    sum: i64,
    min: i32,
    max: i32,
    last: i32,
}

impl CountAcc {
    /// One value.
    fn new(v: i32) -> Self {
        Self {
            sum: i64::from(v),
            min: v,
            max: v,
            last: v,
        }
    }

    /// Adds what comes after: its sum, extremes, and its last value as the new last.
    fn merge(&mut self, later: Self) {
        self.sum += later.sum;
        self.min = self.min.min(later.min);
        self.max = self.max.max(later.max);
        self.last = later.last;
    }
}

/// The least and the greatest of a run's ratios, and how many there are, each extreme kept in
/// two places taken in turn: a ratio is compared with the extreme of the ratio before last,
/// so one comparison need not wait for the previous one (in a single chain, the fold's
/// slowest part for a month at step=1h). No ratio is NaN, so the order they are compared in
/// does not change the extremes.
#[derive(Debug)]
struct RatioExtremes {
    least: [f64; 2],
    greatest: [f64; 2],
    n: i64,
}

impl Default for RatioExtremes {
    fn default() -> Self {
        Self {
            least: [f64::INFINITY; 2],
            greatest: [f64::NEG_INFINITY; 2],
            n: 0,
        }
    }
}

impl RatioExtremes {
    #[inline(always)]
    fn add(&mut self, ratio: f64) {
        let [least_a, least_b] = self.least;
        self.least = [least_b, least_a.min(ratio)];
        let [greatest_a, greatest_b] = self.greatest;
        self.greatest = [greatest_b, greatest_a.max(ratio)];
        self.n += 1;
    }

    /// The least, the greatest and the number of ratios; none for no ratio.
    fn finish(self) -> Option<(f64, f64, i64)> {
        let [least_a, least_b] = self.least;
        let [greatest_a, greatest_b] = self.greatest;
        (self.n > 0).then_some((least_a.min(least_b), greatest_a.max(greatest_b), self.n))
    }
}

/// Points and segment summaries folded together, in slot order.
#[derive(Debug, Clone, Default)]
pub struct Aggregate {
    samples: i64,
    first_slot_ms: i64,
    last_slot_ms: i64,
    counts: Option<(CountAcc, CountAcc)>,
    ratio_points: i64,
    ratio_min: f64,
    ratio_max: f64,
    ratio_sum: NestedSum,
}

impl Aggregate {
    /// Adds counts that start at `first_slot_ms` and end at `last_slot_ms`.
    fn add_counts(
        &mut self,
        followers: CountAcc,
        following: CountAcc,
        first_slot_ms: i64,
        last_slot_ms: i64,
    ) {
        match &mut self.counts {
            None => {
                self.counts = Some((followers, following));
                self.first_slot_ms = first_slot_ms;
            }
            Some((f, g)) => {
                f.merge(followers);
                g.merge(following);
            }
        }
        self.last_slot_ms = last_slot_ms;
    }

    pub fn add_point(&mut self, p: &SeriesPoint) {
        let (f, g) = (
            CountAcc::new(p.follower_count),
            CountAcc::new(p.following_count),
        );
        self.add_counts(f, g, p.slot_ms, p.slot_ms);
        self.samples += 1;
        if let Some(r) = ratio(p) {
            self.add_ratio(r, r, 1);
            self.ratio_sum.add_point(p.slot_ms, r);
        }
    }

    /// Adds points in slot order, all after those added so far: the same as [`Self::add_point`]
    /// for each, with the counts folded in one pass the compiler can vectorise.
    pub(crate) fn add_points(&mut self, points: &[SeriesPoint]) {
        self.add_run(
            points.len(),
            |i| points[i].slot_ms,
            |i| points[i].follower_count,
            |i| points[i].following_count,
        );
    }

    /// [`Self::add_points`] for a run of decoded columns (a segment's, as
    /// [`codec::Columns::counts`] gives them), point `i` at `slot(i)`: a month at step=1h
    /// folds 43,200 points without zipping them into points first.
    pub(crate) fn add_columns(
        &mut self,
        followers: &[i32],
        following: &[i32],
        slot: impl Fn(usize) -> i64,
    ) {
        let n = followers.len().min(following.len());
        let (followers, following) = (&followers[..n], &following[..n]);
        self.add_run(n, slot, |i| followers[i], |i| following[i]);
    }

    /// `n` points in slot order, point `i` at `slot(i)` with its two counts.
    #[inline(always)]
    fn add_run(
        &mut self,
        n: usize,
        slot: impl Fn(usize) -> i64,
        follower: impl Fn(usize) -> i32,
        following: impl Fn(usize) -> i32,
    ) {
        if n == 0 {
            return;
        }
        let (mut f, mut g) = (CountAcc::new(follower(0)), CountAcc::new(following(0)));
        for i in 1..n {
            let (fv, gv) = (follower(i), following(i));
            f.sum += i64::from(fv);
            f.min = f.min.min(fv);
            f.max = f.max.max(fv);
            g.sum += i64::from(gv);
            g.min = g.min.min(gv);
            g.max = g.max.max(gv);
        }
        (f.last, g.last) = (follower(n - 1), following(n - 1));
        self.add_counts(f, g, slot(0), slot(n - 1));
        self.samples += n as i64;
        let mut extremes = RatioExtremes::default();
        let ratios = (0..n)
            .filter_map(|i| ratio_of(follower(i), following(i)).map(|r| (i, r)))
            .inspect(|&(_, r)| extremes.add(r));
        if slot(0).div_euclid(HOUR_MS) == slot(n - 1).div_euclid(HOUR_MS) {
            // One hour (every run of a step of an hour or less): its sum taken in slot order as
            // `NestedSum::add_point` takes it, without the hour looked up point by point.
            self.ratio_sum.add_hour_run(slot(0), ratios.map(|(_, r)| r));
        } else {
            for (i, r) in ratios {
                self.ratio_sum.add_point(slot(i), r);
            }
        }
        if let Some((min, max, n)) = extremes.finish() {
            self.add_ratio(min, max, n);
        }
    }

    fn add_ratio(&mut self, min: f64, max: f64, n: i64) {
        if self.ratio_points == 0 {
            (self.ratio_min, self.ratio_max) = (min, max);
        } else {
            self.ratio_min = self.ratio_min.min(min);
            self.ratio_max = self.ratio_max.max(max);
        }
        self.ratio_points += n;
    }

    /// Adds a whole segment by its summary (its points come after those added so far).
    pub(crate) fn add_summary(&mut self, period_start_ms: i64, span_ms: i64, s: &Summary) {
        let followers = CountAcc {
            sum: s.follower_sum,
            min: s.follower_min,
            max: s.follower_max,
            last: s.follower_last,
        };
        let following = CountAcc {
            sum: s.following_sum,
            min: s.following_min,
            max: s.following_max,
            last: s.following_last,
        };
        self.add_counts(followers, following, s.first_slot_ms, s.last_slot_ms);
        self.samples += i64::from(s.points);
        if let (Some(min), Some(max), Some(sum)) = (s.ratio_min, s.ratio_max, s.ratio_sum) {
            self.add_ratio(min, max, i64::from(s.ratio_points));
            self.ratio_sum.add_segment(period_start_ms, span_ms, sum);
        }
    }

    /// The summary of what was added; none if nothing was.
    pub fn summary(&self) -> Option<Summary> {
        let (f, g) = self.counts?;
        let has_ratio = self.ratio_points > 0;
        Some(Summary {
            points: self.samples as i32,
            first_slot_ms: self.first_slot_ms,
            last_slot_ms: self.last_slot_ms,
            follower_sum: f.sum,
            follower_min: f.min,
            follower_max: f.max,
            follower_last: f.last,
            following_sum: g.sum,
            following_min: g.min,
            following_max: g.max,
            following_last: g.last,
            ratio_points: self.ratio_points as i32,
            ratio_min: has_ratio.then_some(self.ratio_min),
            ratio_max: has_ratio.then_some(self.ratio_max),
            ratio_sum: has_ratio.then(|| self.ratio_sum.total()),
        })
    }

    /// The bucket's statistics; none if nothing was added.
    pub fn bucket(&self, time_ms: i64) -> Option<BucketStats> {
        let (f, g) = self.counts?;
        let n = self.samples as f64;
        let ratio_last = (g.last != 0).then(|| f64::from(f.last) / f64::from(g.last));
        let follower_ratio = match ratio_last {
            Some(last) if self.ratio_points > 0 => Some(Stats {
                avg: self.ratio_sum.total() / self.ratio_points as f64,
                min: self.ratio_min,
                max: self.ratio_max,
                last,
            }),
            _ => None,
        };
        Some(BucketStats {
            time: time_ms.div_euclid(1000),
            samples: self.samples,
            follower_count: Stats {
                avg: f.sum as f64 / n,
                min: f.min,
                max: f.max,
                last: f.last,
            },
            following_count: Stats {
                avg: g.sum as f64 / n,
                min: g.min,
                max: g.max,
                last: g.last,
            },
            follower_ratio,
        })
    }
}

#[cfg(test)]
mod tests;
