//! Points merged into the segments that cover them, in three steps: the segments already
//! stored over the points' hours are loaded, a pure plan decides each segment's new points
//! ([`plan`], tested on its own), and the plan is written.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::{MergeReport, RawPoint, Segment, p99, upsert};
use crate::series::{DAY_MS, HOUR_MS, SeriesPoint, at, codec};

/// A segment stored over some of the points' hours, as loaded.
pub struct StoredSegment {
    pub influencer_id: i64,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub lateness_max_ms: i32,
    pub lateness_p99_ms: i32,
    pub data: Vec<u8>,
}

/// Merges points (sorted by influencer, then slot; no slot twice) into the segments that cover
/// them: the influencer's existing hour or day segment, else a new hour segment. A slot a
/// segment already holds keeps the segment's value. `look_up` = false skips the search for
/// existing segments (the caller knows there are none).
pub async fn merge(
    tx: &mut PgConnection,
    points: &[RawPoint],
    look_up: bool,
) -> anyhow::Result<MergeReport> {
    if points.is_empty() {
        return Ok(MergeReport::default());
    }
    let stored = if look_up {
        load(tx, points).await?
    } else {
        Vec::new()
    };
    let plan = plan(stored, points)?;
    write(tx, &plan).await?;
    Ok(plan.report)
}

/// The stored segments (day segments and members of hour blocks) of the points' influencers
/// overlapping the points' span of slots.
async fn load(tx: &mut PgConnection, points: &[RawPoint]) -> sqlx::Result<Vec<StoredSegment>> {
    let mut ids: Vec<i64> = points.iter().map(|p| p.influencer_id).collect();
    ids.dedup();
    let (lo, hi) = points.iter().fold((i64::MAX, i64::MIN), |(lo, hi), p| {
        (lo.min(p.point.slot_ms), hi.max(p.point.slot_ms))
    });
    sqlx::query_as!(
        StoredSegment,
        r#"select influencer_id as "influencer_id!", period_start as "period_start!",
                period_end as "period_end!", lateness_max_ms as "lateness_max_ms!",
                lateness_p99_ms as "lateness_p99_ms!", data_head || data_tail as "data!"
         from influencer_segments
         where influencer_id = any($1)
           and period_start > $2::timestamptz - interval '1 day' and period_start <= $3
           and period_end > $2
         union all
         select s.id, b.period_start, b.period_start + interval '1 hour',
                b.lateness_max_ms[(s.id & 63) + 1], b.lateness_p99_ms[(s.id & 63) + 1],
                hour_member_bytes(b.data_head, b.data_tail,
                                  b.offsets[(s.id & 63) + 1], b.offsets[(s.id & 63) + 2])
         from unnest($1::bigint[]) s(id)
         join influencer_hour_blocks b on b.block = s.id >> 6
         where b.period_start > $2 - interval '1 hour' and b.period_start <= $3
           and b.points[(s.id & 63) + 1] > 0
         order by 1, 2"#,
        &ids,
        at(lo),
        at(hi),
    )
    .fetch_all(&mut *tx)
    .await
}

/// What a merge will write: the segments with new points, the UTC days (their starts, epoch
/// ms) that got a new hour segment, and the counts.
#[derive(Debug)]
pub struct MergePlan {
    pub segments: Vec<Segment>,
    pub new_days: Vec<i64>,
    pub report: MergeReport,
}

/// A segment the points go to: stored (with its points) or new.
struct Target {
    end_ms: i64,
    stored: Vec<SeriesPoint>,
    lateness_max: i32,
    lateness_p99: i32,
    new: Vec<SeriesPoint>,
    new_lateness: Vec<i32>,
}

impl Target {
    fn new(end_ms: i64) -> Self {
        Self {
            end_ms,
            stored: Vec::new(),
            lateness_max: 0,
            lateness_p99: 0,
            new: Vec::new(),
            new_lateness: Vec::new(),
        }
    }
}

/// Which segment each point goes to and what each segment becomes: no database, so tested on
/// its own. `points` sorted by influencer, then slot, no slot twice.
pub fn plan(
    stored: Vec<StoredSegment>,
    points: &[RawPoint],
) -> Result<MergePlan, codec::CodecError> {
    let mut targets = targets_of(stored)?;
    // Points go to their segment a run at a time: an influencer's points in one hour, which
    // an existing segment (an hour or a day) covers whole or not at all.
    for run in points.chunk_by(|a, b| {
        a.influencer_id == b.influencer_id
            && a.point.slot_ms.div_euclid(HOUR_MS) == b.point.slot_ms.div_euclid(HOUR_MS)
    }) {
        let (id, slot) = (run[0].influencer_id, run[0].point.slot_ms);
        // The existing segment covering the hour: the latest one starting at or before it.
        let covering = targets
            .range((id, i64::MIN)..=(id, slot))
            .next_back()
            .filter(|(_, t)| t.end_ms > slot)
            .map(|(k, _)| *k);
        let key = covering.unwrap_or((id, slot.div_euclid(HOUR_MS) * HOUR_MS));
        let target = targets
            .entry(key)
            .or_insert_with(|| Target::new(key.1 + HOUR_MS));
        target.new.extend(run.iter().map(|p| p.point));
        target
            .new_lateness
            .extend(run.iter().map(|p| p.lateness_ms));
    }
    let mut plan = MergePlan {
        segments: Vec::new(),
        new_days: Vec::new(),
        report: MergeReport::default(),
    };
    for ((influencer_id, start_ms), target) in targets {
        if target.new.is_empty() {
            continue;
        }
        if target.stored.is_empty() && target.end_ms - start_ms < DAY_MS {
            plan.new_days.push(start_ms.div_euclid(DAY_MS) * DAY_MS);
        }
        if let Some(segment) = merged(influencer_id, start_ms, target, &mut plan.report)? {
            plan.segments.push(segment);
        }
    }
    plan.report.segments = plan.segments.len() as u64;
    plan.report.bytes = plan.segments.iter().map(|s| s.data.len() as u64).sum();
    plan.new_days.sort_unstable();
    plan.new_days.dedup();
    Ok(plan)
}

/// The stored segments as targets keyed by (influencer, period start).
fn targets_of(
    stored: Vec<StoredSegment>,
) -> Result<BTreeMap<(i64, i64), Target>, codec::CodecError> {
    let mut targets = BTreeMap::new();
    for row in stored {
        let mut target = Target::new(row.period_end.timestamp_millis());
        target.stored = codec::decode(&row.data)?;
        target.lateness_max = row.lateness_max_ms;
        target.lateness_p99 = row.lateness_p99_ms;
        targets.insert(
            (row.influencer_id, row.period_start.timestamp_millis()),
            target,
        );
    }
    Ok(targets)
}

/// A target's segment with its new points (a slot it holds keeps its value), counted in
/// `report`; `None` if every new point was stored already.
fn merged(
    influencer_id: i64,
    start_ms: i64,
    mut target: Target,
    report: &mut MergeReport,
) -> Result<Option<Segment>, codec::CodecError> {
    let mut merged = std::mem::take(&mut target.stored);
    let before = merged.len();
    let fresh: Vec<SeriesPoint> = target
        .new
        .iter()
        .filter(|n| {
            merged
                .binary_search_by_key(&n.slot_ms, |s| s.slot_ms)
                .is_err()
        })
        .copied()
        .collect();
    merged.extend(fresh);
    merged.sort_by_key(|p| p.slot_ms);
    let added = (merged.len() - before) as u64;
    report.points += added;
    report.duplicates += target.new.len() as u64 - added;
    if added == 0 {
        return Ok(None);
    }
    let lateness_max = target
        .new_lateness
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .max(target.lateness_max);
    let lateness_p99 = p99(&mut target.new_lateness).max(target.lateness_p99);
    Segment::new(
        influencer_id,
        (start_ms, target.end_ms),
        &merged,
        lateness_max,
        lateness_p99,
    )
    .map(Some)
}

/// Writes a plan: its segments, and its new days for the day merge to find.
async fn write(tx: &mut PgConnection, plan: &MergePlan) -> anyhow::Result<()> {
    upsert(tx, &plan.segments).await?;
    if !plan.new_days.is_empty() {
        let days: Vec<DateTime<Utc>> = plan.new_days.iter().map(|&day| at(day)).collect();
        sqlx::query!(
            "insert into compaction_days (day) select unnest($1::timestamptz[])
             on conflict (day) do update set merged_at = null",
            &days
        )
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}
