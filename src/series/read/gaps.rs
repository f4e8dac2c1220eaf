//! The completeness of one influencer's series over a range.

use sqlx::PgPool;

use super::{ReadError, points};
use crate::series::SeriesPoint;

/// The completeness of one influencer's series over a range: the slots its grid expected,
/// how many of them are stored, and the missing ones as runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gaps {
    pub expected: i64,
    pub stored: i64,
    /// Runs of consecutive missing slots: (first missing slot, last missing slot, how many),
    /// epoch ms.
    pub missing: Vec<(i64, i64, i64)>,
}

/// The gaps of one influencer over `[start_ms, end_ms]` on its slot grid (`first_slot` is any
/// slot of the grid; `interval_ms` its spacing). Runs past `max_runs` are left out (the counts
/// still cover them).
pub async fn gaps(
    pool: &PgPool,
    influencer_id: i64,
    (start_ms, end_ms): (i64, i64),
    grid: crate::schedule::SlotGrid,
    max_runs: usize,
) -> Result<Gaps, ReadError> {
    let stored = points(pool, influencer_id, start_ms, end_ms).await?;
    Ok(find_gaps(
        &stored,
        influencer_id,
        (start_ms, end_ms),
        grid,
        max_runs,
    ))
}

/// Walks the grid over the range against the stored slots (in order).
pub(crate) fn find_gaps(
    stored: &[SeriesPoint],
    influencer_id: i64,
    (start_ms, end_ms): (i64, i64),
    grid: crate::schedule::SlotGrid,
    max_runs: usize,
) -> Gaps {
    let mut gaps = Gaps {
        expected: 0,
        stored: 0,
        missing: Vec::new(),
    };
    let mut have = stored.iter().map(|p| p.slot_ms).peekable();
    let mut slot = grid.slot_at_or_after(influencer_id, start_ms);
    let mut run: Option<(i64, i64, i64)> = None;
    while slot <= end_ms {
        gaps.expected += 1;
        while have.next_if(|s| *s < slot).is_some() {}
        if have.next_if_eq(&slot).is_some() {
            gaps.stored += 1;
            if let Some(r) = run.take()
                && gaps.missing.len() < max_runs
            {
                gaps.missing.push(r);
            }
        } else {
            run = Some(match run {
                Some((first, _, n)) => (first, slot, n + 1),
                None => (slot, slot, 1),
            });
        }
        slot = grid.next_slot(influencer_id, slot);
    }
    if let Some(r) = run
        && gaps.missing.len() < max_runs
    {
        gaps.missing.push(r);
    }
    gaps
}
