//! Folding points, segments' decoded columns and whole segments' summaries into buckets.

use super::hot::merge;
use crate::series::{Aggregate, BucketStats, Period, SeriesPoint, Summary, bucket_of, codec};

/// Folds decoded points, hot points and whole segments (by their summaries, in period order)
/// into buckets, in time order, taking from the lists as they come (each bucket's run of
/// points is folded in one pass).
pub fn fold_buckets(
    decoded: Vec<SeriesPoint>,
    wholes: Vec<(Period, Summary)>,
    hot_points: &[SeriesPoint],
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
) -> Vec<BucketStats> {
    let merged = merge(decoded, hot_points.to_vec(), start_ms, end_ms);
    let mut points = merged.as_slice();
    let mut folder = Folder::new(step_ms);
    for (period, summary) in &wholes {
        // A whole segment goes after the points up to its first slot (that one included).
        let before = points.partition_point(|p| p.slot_ms <= summary.first_slot_ms);
        folder.add_points(&points[..before]);
        points = &points[before..];
        folder.add_summary(*period, summary);
    }
    folder.add_points(points);
    folder.finish()
}

/// Buckets filled in time order: runs of points, runs of a segment's decoded columns and whole
/// segments' summaries, each after all that came before.
pub(super) struct Folder {
    step_ms: i64,
    done: Vec<BucketStats>,
    current: Option<(i64, Aggregate)>,
}

impl Folder {
    pub(super) fn new(step_ms: i64) -> Self {
        Self {
            step_ms,
            done: Vec::new(),
            current: None,
        }
    }

    /// The end of the bucket `time` falls in and its aggregate: the current one (checked
    /// without dividing: most points are in it), or a new one once the current is closed.
    fn bucket_at(&mut self, time: i64) -> (i64, &mut Aggregate) {
        let step_ms = self.step_ms;
        if self
            .current
            .as_ref()
            .is_none_or(|(b, _)| time < *b || time >= *b + step_ms)
        {
            if let Some((b, acc)) = self.current.take() {
                self.done.extend(acc.bucket(b));
            }
            self.current = Some((bucket_of(time, step_ms), Aggregate::default()));
        }
        let (bucket, acc) = self.current.as_mut().expect("set above");
        (*bucket + step_ms, acc)
    }

    /// Points in slot order.
    pub(super) fn add_points(&mut self, mut points: &[SeriesPoint]) {
        while let Some(first) = points.first() {
            let (end, acc) = self.bucket_at(first.slot_ms);
            let run = points.partition_point(|p| p.slot_ms < end).max(1);
            acc.add_points(&points[..run]);
            points = &points[run..];
        }
    }

    /// The points `range` of a segment's decoded columns.
    pub(super) fn add_columns(&mut self, columns: &codec::Columns, range: std::ops::Range<usize>) {
        let mut i = range.start;
        while i < range.end {
            let (end, acc) = self.bucket_at(columns.slot(i));
            let run_end = columns.first_at_or_after(end).clamp(i + 1, range.end);
            let (followers, following) = columns.counts(i..run_end);
            acc.add_columns(followers, following, |k| columns.slot(i + k));
            i = run_end;
        }
    }

    /// A whole segment, by its summary.
    pub(super) fn add_summary(&mut self, (start, end): Period, summary: &Summary) {
        let (_, acc) = self.bucket_at(summary.first_slot_ms);
        acc.add_summary(start, end - start, summary);
    }

    pub(super) fn finish(mut self) -> Vec<BucketStats> {
        if let Some((b, acc)) = self.current.take() {
            self.done.extend(acc.bucket(b));
        }
        self.done
    }
}
