//! The project's own suspicious signal: sudden follower jumps.
//!
//! Bought followers arrive at once. For each influencer the detector takes the last day's
//! points, the change from each point to the next (divided by √(slots elapsed), so a change
//! across a gap of missed slots is compared as a random walk would move in that time), and
//! scores every change with a **robust z-score**: its distance from the median change in units
//! of the median absolute deviation (MAD × 1.4826, which equals the standard deviation for
//! normally distributed changes; never below the mean absolute deviation × 1.2533, the same
//! estimate for normal changes, for counts that
//! mostly do not move). Median and MAD ignore the jump itself, so one bought batch of
//! followers stands out against the influencer's own usual variation, whatever its size.
//!
//! An influencer is flagged when its largest |z| reaches [`SpikeRule::z_threshold`]. Drops
//! count as well as rises (a purge of fake followers is a signal too); the detail says which.
//!
//! The scan is CPU-bound over a million series, so it runs on rayon, a chunk of influencers at
//! a time, while the next chunk is read from the database.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use rayon::prelude::*;
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{Pass, VerdictRow, write_verdicts};

pub(crate) const SOURCE: &str = "spike";

/// Influencers read, judged and stored per step (a day of 1-minute points each: about
/// 1.4 million points per chunk).
const CHUNK: i64 = 1000;

/// The window judged: the day before the pass started.
const WINDOW: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// Scale factor from MAD to standard deviation for normally distributed data.
const MAD_TO_SIGMA: f64 = 1.482_6;

/// The same from the mean absolute deviation (√(π/2)).
const MEAN_DEVIATION_TO_SIGMA: f64 = 1.253_3;

/// How the detector decides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpikeRule {
    /// A change at least this many robust standard deviations from the median is a spike.
    pub z_threshold: f64,
    /// Fewer changes than this in the window: no verdict (not enough history to know what
    /// is usual).
    pub min_changes: usize,
    /// The spread is never taken below this share of the influencer's median followerCount
    /// (nor below one follower), so an account that barely moves is not flagged for a few
    /// followers more.
    pub min_relative_spread: f64,
}

impl Default for SpikeRule {
    fn default() -> Self {
        Self {
            z_threshold: 10.0,
            min_changes: 60,
            min_relative_spread: 1e-4,
        }
    }
}

/// The numbers behind a verdict: the largest change of the window and what it was compared
/// with. Stored as the verdict's `detail`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpikeFinding {
    pub suspicious: bool,
    /// Robust z-score of the largest change (signed: negative for a drop).
    pub z: f64,
    /// followerCount before and after the largest change, and the slot (epoch seconds) of
    /// the point after it.
    pub from: i32,
    pub to: i32,
    pub at: i64,
    /// Median per-slot change and the robust spread (MAD × 1.4826, floored) it was scored with.
    pub median_change: f64,
    pub spread: f64,
    /// Changes in the window.
    pub changes: usize,
}

/// Judges one influencer's series: `slots` (epoch seconds, ascending) and the followerCount
/// at each. `interval` is the polling interval in seconds. `None` when the window holds fewer
/// than `rule.min_changes` changes.
pub fn judge(
    slots: &[i64],
    followers: &[i32],
    interval: i64,
    rule: &SpikeRule,
) -> Option<SpikeFinding> {
    let scored = Scored::of(slots, followers, interval, rule)?;
    let index = (0..scored.changes.len())
        .max_by(|&a, &b| scored.z(a).abs().total_cmp(&scored.z(b).abs()))
        .expect("at least one change");
    Some(scored.finding(index, slots, followers, rule))
}

/// As [`judge`], the window's last change only (the live detector asks whether the newest
/// point is a spike, against the changes before it).
pub fn judge_last(
    slots: &[i64],
    values: &[i32],
    interval: i64,
    rule: &SpikeRule,
) -> Option<SpikeFinding> {
    let scored = Scored::of(slots, values, interval, rule)?;
    Some(scored.finding(scored.changes.len() - 1, slots, values, rule))
}

/// A window's per-slot changes, their median and their robust spread.
struct Scored {
    changes: Vec<f64>,
    median_change: f64,
    spread: f64,
}

impl Scored {
    fn of(slots: &[i64], values: &[i32], interval: i64, rule: &SpikeRule) -> Option<Self> {
        debug_assert_eq!(slots.len(), values.len());
        let n = slots.len().min(values.len());
        if n < 2 || n - 1 < rule.min_changes {
            return None;
        }
        let interval = interval.max(1) as f64;
        // Per-slot changes: a random walk moves √k times as far in k slots.
        let changes: Vec<f64> = (1..n)
            .map(|i| {
                let elapsed = ((slots[i] - slots[i - 1]) as f64 / interval).max(1.0);
                (values[i] as f64 - values[i - 1] as f64) / elapsed.sqrt()
            })
            .collect();
        let mut scratch = changes.clone();
        let median_change = median(&mut scratch);
        for (d, c) in scratch.iter_mut().zip(&changes) {
            *d = (c - median_change).abs();
        }
        let mean_deviation = scratch.iter().sum::<f64>() / scratch.len() as f64;
        let mad = median(&mut scratch);
        let mut levels: Vec<f64> = values[..n].iter().map(|&f| f as f64).collect();
        let level = median(&mut levels).abs();
        // The mean absolute deviation as a floor: where most changes are nothing (a count
        // held at a floor, an account that moves now and then) the MAD is 0 and the first
        // ordinary move would score in the hundreds.
        let spread = (mad * MAD_TO_SIGMA)
            .max(mean_deviation * MEAN_DEVIATION_TO_SIGMA)
            .max(level * rule.min_relative_spread)
            .max(1.0);
        Some(Self {
            changes,
            median_change,
            spread,
        })
    }

    fn z(&self, index: usize) -> f64 {
        (self.changes[index] - self.median_change) / self.spread
    }

    fn finding(
        &self,
        index: usize,
        slots: &[i64],
        values: &[i32],
        rule: &SpikeRule,
    ) -> SpikeFinding {
        let z = self.z(index);
        SpikeFinding {
            suspicious: z.abs() >= rule.z_threshold,
            z: (z * 100.0).round() / 100.0,
            from: values[index],
            to: values[index + 1],
            at: slots[index + 1],
            median_change: (self.median_change * 100.0).round() / 100.0,
            spread: (self.spread * 100.0).round() / 100.0,
            changes: self.changes.len(),
        }
    }
}

/// What the stage did in this run.
#[derive(Debug, Default)]
pub(crate) struct Scanned {
    pub judged: u64,
    pub flagged: u64,
    /// Every tracked influencer has been scanned in this pass.
    pub done: bool,
}

/// One chunk of influencers read from the database: their series over the window, and the
/// last influencer id the chunk covers (`None`: no tracked influencer left).
struct Chunk {
    last_id: Option<i64>,
    series: Vec<Series>,
}

/// One influencer's day: its id, slots (epoch seconds), followers and following.
type Series = (i64, Vec<i64>, Vec<i32>, Vec<i32>);

/// Scans every tracked influencer's day before the pass, in id order from the pass's cursor.
/// While one chunk is judged (on rayon) and stored, the next is read.
pub(crate) async fn scan(
    pool: &PgPool,
    pass: &Pass,
    interval: Duration,
    rule: &SpikeRule,
    shutdown: CancellationToken,
) -> anyhow::Result<Scanned> {
    if pass.spike_done {
        return Ok(Scanned {
            done: true,
            ..Scanned::default()
        });
    }
    let window = (pass.started_at - WINDOW, pass.started_at);
    let counts = sqlx::query!(
        r#"select count(*) as "total!", count(*) filter (where influencer_id <= $1) as "done_before!"
         from influencers where tracked"#,
        pass.spike_cursor,
    )
    .fetch_one(pool)
    .await?;
    let (total, done_before) = (counts.total, counts.done_before);
    metrics::gauge!("classification_pass_total", "source" => SOURCE).set(total as f64);
    metrics::gauge!("classification_pass_done", "source" => SOURCE).set(done_before as f64);
    let interval = interval.as_secs().max(1) as i64;
    let mut scanned = Scanned::default();
    let mut reading = Some(tokio::spawn(read_chunk(
        pool.clone(),
        pass.spike_cursor,
        window,
    )));
    while let Some(next) = reading.take() {
        let chunk = next.await.context("spike chunk reader")??;
        let Some(last_id) = chunk.last_id else {
            scanned.done = true;
            break;
        };
        if !shutdown.is_cancelled() {
            reading = Some(tokio::spawn(read_chunk(pool.clone(), last_id, window)));
        }
        let scanned_here = chunk.series.len();
        let (rows, churn) = judge_all(chunk.series, interval, *rule).await?;
        let flagged = rows.iter().filter(|r| r.suspicious).count() as i64;
        store_chunk(pool, pass.id, last_id, (&rows, &churn), flagged).await?;
        tracing::debug!(
            last_id,
            scanned_here,
            judged = rows.len(),
            flagged,
            "spike chunk stored"
        );
        scanned.judged += rows.len() as u64;
        scanned.flagged += flagged as u64;
    }
    if scanned.done {
        sqlx::query!(
            "update classification_passes set spike_finished_at = now() where pass_id = $1",
            pass.id
        )
        .execute(pool)
        .await?;
    }
    Ok(scanned)
}

/// Judges a chunk's series on rayon: a verdict row for each influencer with enough points,
/// of the spike rule and of the churn rule ([`super::churn`]) on the same day.
async fn judge_all(
    series: Vec<Series>,
    interval: i64,
    rule: SpikeRule,
) -> anyhow::Result<(Vec<VerdictRow>, Vec<VerdictRow>)> {
    tokio::task::spawn_blocking(move || {
        let spikes = series
            .par_iter()
            .filter_map(|(pk, slots, followers, following)| {
                let finding = judge(slots, followers, interval, &rule)?;
                Some(VerdictRow {
                    pk: *pk,
                    suspicious: finding.suspicious,
                    follower_count: followers.last().copied(),
                    following_count: following.last().copied(),
                    detail: serde_json::to_string(&finding).expect("finding serializes"),
                })
            })
            .collect();
        let churn = series
            .par_iter()
            .filter_map(|(pk, slots, followers, following)| {
                let finding = super::churn::judge(slots, following, interval)?;
                Some(VerdictRow {
                    pk: *pk,
                    suspicious: finding.suspicious,
                    follower_count: followers.last().copied(),
                    following_count: following.last().copied(),
                    detail: serde_json::to_string(&finding).expect("finding serializes"),
                })
            })
            .collect();
        (spikes, churn)
    })
    .await
    .context("spike and churn judging")
}

/// Stores a chunk's verdicts, the spike rule's and the churn rule's, and moves the pass's
/// cursor past `last_id`, in one transaction.
async fn store_chunk(
    pool: &PgPool,
    pass_id: i64,
    last_id: i64,
    (rows, churn): (&[VerdictRow], &[VerdictRow]),
    flagged: i64,
) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    write_verdicts(&mut tx, pass_id, SOURCE, rows).await?;
    write_verdicts(&mut tx, pass_id, super::churn::SOURCE, churn).await?;
    let covered: i64 = sqlx::query_scalar!(
        "with progress as (
             update classification_passes set spike_cursor = $2,
                 spike_judged = spike_judged + $3, spike_flagged = spike_flagged + $4
             where pass_id = $1)
         select count(*) as \"covered!\" from influencers where tracked and influencer_id <= $2",
        pass_id,
        last_id,
        rows.len() as i64,
        flagged
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    metrics::gauge!("classification_pass_done", "source" => SOURCE).set(covered as f64);
    Ok(())
}

/// Reads the next [`CHUNK`] tracked influencers after `after` and their points in `window`.
async fn read_chunk(
    pool: PgPool,
    after: i64,
    window: (DateTime<Utc>, DateTime<Utc>),
) -> anyhow::Result<Chunk> {
    let last_id: Option<i64> = sqlx::query_scalar!(
        "select max(influencer_id) from (
             select influencer_id from influencers
             where tracked and influencer_id > $1 order by influencer_id limit $2) c",
        after,
        CHUNK
    )
    .fetch_one(&pool)
    .await?;
    let Some(last) = last_id else {
        return Ok(Chunk {
            last_id: None,
            series: Vec::new(),
        });
    };
    let tracked: Vec<i64> = sqlx::query_scalar!(
        "select influencer_id from influencers
         where tracked and influencer_id > $1 and influencer_id <= $2 order by 1",
        after,
        last
    )
    .fetch_all(&pool)
    .await?;
    // Both tiers, through the one read path; the window's end is exclusive.
    let points = crate::series::read::window(
        &pool,
        (after + 1, last),
        window.0.timestamp_millis(),
        window.1.timestamp_millis() - 1,
    )
    .await
    .context("cannot read the points the spike detector judges")?;
    let series = points
        .into_iter()
        .filter(|(id, _)| tracked.binary_search(id).is_ok())
        .map(|(id, points)| {
            let times = points.iter().map(|p| p.slot_ms.div_euclid(1000)).collect();
            let followers = points.iter().map(|p| p.follower_count).collect();
            let following = points.iter().map(|p| p.following_count).collect();
            (id, times, followers, following)
        })
        .collect();
    Ok(Chunk {
        last_id: Some(last),
        series,
    })
}

/// The median of `values` (reordered in place). `values` must not be empty.
fn median(values: &mut [f64]) -> f64 {
    let odd = values.len() % 2 == 1;
    let (below, upper, _) = values.select_nth_unstable_by(values.len() / 2, f64::total_cmp);
    let upper = *upper;
    if odd {
        upper
    } else {
        let lower = below.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lower + upper) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::{FaultSettings, SimulatorSettings},
        mockstagram::FIRST_PK,
        simulator::Simulator,
    };

    const MINUTE: i64 = 60;
    const DAY_OF_SLOTS: usize = 1440;

    fn minutes(n: usize) -> Vec<i64> {
        (0..n as i64).map(|i| 1_700_000_000 + i * MINUTE).collect()
    }

    #[test]
    fn median_of_odd_and_even_lengths() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut [5.0]), 5.0);
    }

    #[test]
    fn too_few_changes_give_no_verdict() {
        let rule = SpikeRule::default();
        let followers = vec![100_000; rule.min_changes];
        assert_eq!(
            judge(&minutes(rule.min_changes), &followers, MINUTE, &rule),
            None
        );
        let followers = vec![100_000; rule.min_changes + 1];
        assert!(judge(&minutes(rule.min_changes + 1), &followers, MINUTE, &rule).is_some());
    }

    #[test]
    fn a_jump_far_outside_the_usual_variation_is_flagged_with_its_numbers() {
        // ±100 a minute, then +50,000 at minute 700.
        let mut followers: Vec<i32> = (0..DAY_OF_SLOTS as i32)
            .map(|i| 200_000 + if i % 2 == 0 { 100 } else { -100 })
            .collect();
        for f in &mut followers[700..] {
            *f += 50_000;
        }
        let slots = minutes(DAY_OF_SLOTS);
        let finding = judge(&slots, &followers, MINUTE, &SpikeRule::default()).unwrap();
        assert!(finding.suspicious, "{finding:?}");
        assert_eq!(finding.at, slots[700]);
        assert_eq!(
            finding.to - finding.from,
            50_000 + 200,
            "the jump, from a minute at -100 to one at +100"
        );
        assert!(finding.z > 100.0, "{finding:?}");
        assert_eq!(finding.changes, DAY_OF_SLOTS - 1);
    }

    #[test]
    fn a_drop_is_flagged_with_a_negative_score() {
        let mut followers: Vec<i32> = (0..300).map(|i| 80_000 + (i % 7) * 300).collect();
        for f in &mut followers[150..] {
            *f -= 40_000;
        }
        let finding = judge(&minutes(300), &followers, MINUTE, &SpikeRule::default()).unwrap();
        assert!(finding.suspicious && finding.z < 0.0, "{finding:?}");
    }

    #[test]
    fn a_change_across_missed_slots_is_scaled_as_a_walk_would_move() {
        use rand::{Rng, SeedableRng, rngs::SmallRng};
        // A walk of up to ±1000 a minute (spread about 750), and one move of 10,000: in one
        // minute a spike; across 16 minutes (15 missed slots) 2,500 per √slot, ordinary.
        let mut rng = SmallRng::seed_from_u64(3);
        let mut slots = minutes(200);
        let mut followers = vec![100_000i32];
        for i in 1..200 {
            let step = if i == 100 {
                10_000
            } else {
                rng.random_range(-1000..=1000)
            };
            followers.push(followers[i - 1] + step);
        }
        let one_minute = judge(&slots, &followers, MINUTE, &SpikeRule::default()).unwrap();
        assert!(one_minute.suspicious, "{one_minute:?}");
        for s in &mut slots[100..] {
            *s += 15 * MINUTE;
        }
        let across_gap = judge(&slots, &followers, MINUTE, &SpikeRule::default()).unwrap();
        assert!(!across_gap.suspicious, "{across_gap:?}");
    }

    #[test]
    fn a_flat_account_is_not_flagged_for_a_handful_of_followers() {
        // Never moves, then +15 followers: below 1e-4 of 1,000,000 × 10.
        let mut followers = vec![1_000_000; 500];
        followers[400..].iter_mut().for_each(|f| *f += 15);
        let finding = judge(&minutes(500), &followers, MINUTE, &SpikeRule::default()).unwrap();
        assert!(!finding.suspicious, "{finding:?}");
        // ... but +2,000 in a minute is 20 floored spreads: flagged.
        followers[450..].iter_mut().for_each(|f| *f += 2000);
        let finding = judge(&minutes(500), &followers, MINUTE, &SpikeRule::default()).unwrap();
        assert!(finding.suspicious, "{finding:?}");
    }

    /// A count held at a floor most of the time (the upstream's following walk at its floor
    /// of 50: half the steps go nowhere, the others up by |N(0,1)| × 100): most changes are 0,
    /// so the MAD is 0, yet an ordinary step off the floor is no spike.
    #[test]
    fn a_walk_held_at_a_floor_is_not_flagged_when_it_leaves_it() {
        use rand::{Rng, SeedableRng, rngs::SmallRng};
        use rand_distr::StandardNormal;
        let rule = SpikeRule {
            min_changes: 30,
            ..SpikeRule::default()
        };
        // As the live detector asks: each new point of the first hour against those before.
        let mut flagged = 0;
        for seed in 0..2_000 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut following = vec![50i32];
            for i in 1..60 {
                let step: f64 = rng.sample(StandardNormal);
                following.push((following[i - 1] + (step * 100.0).round() as i32).max(50));
            }
            for n in 31..=60 {
                let finding = judge_last(&minutes(n), &following[..n], MINUTE, &rule).unwrap();
                flagged += usize::from(finding.suspicious);
            }
        }
        assert_eq!(flagged, 0, "of 2,000 walks' 30 newest points each");
    }

    /// The simulator's random walk (one step a minute, from the documented population) over a
    /// whole day: the detector must stay quiet. 20,000 influencers × 1,439 changes.
    #[test]
    fn the_simulators_random_walk_over_a_day_is_not_flagged() {
        let population = 20_000;
        let sim = Simulator::new(&SimulatorSettings {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            population,
            seed: Some(7),
            delay_scale: 0.0,
            churn_share: 0.0,
            spike_share: 0.0,
            spike_every: std::time::Duration::from_secs(3 * 3600),
            capacity: None,
            tls_cert_file: None,
            tls_key_file: None,
            faults: FaultSettings::default(),
        });
        let slots = minutes(DAY_OF_SLOTS);
        let rule = SpikeRule::default();
        let scores: Vec<f64> = (0..population as i64)
            .into_par_iter()
            .map(|i| {
                let pk = FIRST_PK + i;
                let followers: Vec<i32> = (0..DAY_OF_SLOTS)
                    .map(|_| sim.step(pk).unwrap().0 as i32)
                    .collect();
                judge(&slots, &followers, MINUTE, &rule).unwrap().z.abs()
            })
            .collect();
        let flagged = scores.iter().filter(|z| **z >= rule.z_threshold).count();
        let worst = scores.iter().copied().fold(0.0, f64::max);
        println!("random walk: {flagged} of {population} flagged, largest |z| {worst:.2}");
        assert_eq!(flagged, 0, "largest |z| {worst}");
    }
}
