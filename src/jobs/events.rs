//! Event detection, once a minute on the movers mark, in the process that took it: the
//! [`Detector`]'s rules over everyone's newest values, then each spike candidate decided on
//! its last two hours (the daily detector's robust rule, `EVENT_SPIKE_Z`), then the events
//! logged. A process that did not take the previous minute's mark first warms its detector on
//! the marks of the last half hour and takes the log's word for milestones and staleness, so
//! detection moves between processes without raising anything twice.

use chrono::{DateTime, Utc};
use futures_util::{StreamExt, stream};
use serde_json::json;
use sqlx::PgPool;

use crate::{
    classify::spike::{SpikeRule, judge_last},
    config::EventSettings,
    events::{
        self, EventType, NewEvent,
        detect::{Candidate, Detector, Metric, Rules},
    },
    series::{self, Snapshot},
};

use super::movers;

mod top;

/// The marks a process warms its detector on when it takes detection over.
const WARM_MARKS: chrono::TimeDelta = chrono::TimeDelta::minutes(30);

/// The window a spike candidate is decided on.
const SPIKE_WINDOW_MS: i64 = 2 * 3600 * 1000;

/// Candidates decided at once (each one read of two hours of one influencer).
const DECIDING: usize = 8;

/// At most this many candidates are decided a minute; the rest are counted
/// (`event_candidates_skipped_total`) and logged, never silently dropped.
const MAX_CANDIDATES: usize = 2_000;

/// What a process keeps between minutes.
pub struct Detection {
    settings: EventSettings,
    top: top::TopWatch,
    detector: Option<Detector>,
    /// When this process's detector last saw a mark.
    last_mark: Option<DateTime<Utc>>,
}

/// What one run found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Detected {
    pub events: usize,
    pub candidates: usize,
    pub spikes: usize,
}

impl Detection {
    pub fn new(settings: EventSettings) -> Self {
        events::register_metrics();
        Self {
            settings,
            top: top::TopWatch::default(),
            detector: None,
            last_mark: None,
        }
    }

    /// Logs who entered or left each top N in the ranking this process just made; how many.
    pub async fn on_ranking(&mut self, pool: &PgPool) -> anyhow::Result<usize> {
        let found = self.top.on_ranking(pool).await?;
        events::record(pool, &found).await?;
        Ok(found.len())
    }

    /// Runs the rules on `mark`, taken by this process at `now`.
    pub async fn on_mark(
        &mut self,
        pool: &PgPool,
        mark: Snapshot,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Detected> {
        let fresh = self
            .last_mark
            .is_some_and(|last| now - last < chrono::TimeDelta::seconds(90));
        let mut detector = match (self.detector.take(), fresh) {
            (Some(detector), true) => detector,
            _ => self.warm(pool, now).await?,
        };
        let now_ms = now.timestamp_millis();
        let (detector, observed) = tokio::task::spawn_blocking(move || {
            let observed = detector.observe(&mark, now_ms, false);
            (detector, observed)
        })
        .await?;
        self.detector = Some(detector);
        self.last_mark = Some(now);
        let mut found = observed.events;
        let candidates = observed.candidates.len();
        let spikes = decide(pool, observed.candidates, self.settings.event_spike_z).await;
        let detected = Detected {
            events: found.len() + spikes.len(),
            candidates,
            spikes: spikes.len(),
        };
        found.extend(spikes);
        events::record(pool, &found).await?;
        Ok(detected)
    }

    /// A detector that has learned from the last half hour's marks and the log.
    async fn warm(&self, pool: &PgPool, now: DateTime<Utc>) -> anyhow::Result<Detector> {
        let rules = Rules {
            stale_slots: self.settings.event_stale_slots,
        };
        let marks = movers::since(pool, now - WARM_MARKS).await?;
        let remembered = events::remembered(pool).await?;
        tracing::info!(
            marks = marks.len(),
            "event detection taken over: warming on the recent marks"
        );
        let detector = tokio::task::spawn_blocking(move || {
            let mut detector = Detector::new(rules);
            for (at, mark) in &marks {
                detector.observe(mark, at.timestamp_millis(), true);
            }
            detector.remember(remembered);
            detector
        })
        .await?;
        Ok(detector)
    }
}

/// The candidates that are spikes by the robust rule over their last two hours, as events.
async fn decide(pool: &PgPool, mut candidates: Vec<Candidate>, z: f64) -> Vec<NewEvent> {
    if candidates.len() > MAX_CANDIDATES {
        let skipped = candidates.len() - MAX_CANDIDATES;
        metrics::counter!("event_candidates_skipped_total").increment(skipped as u64);
        tracing::warn!(
            candidates = candidates.len(),
            skipped,
            "more spike candidates than a minute decides; the largest changes first"
        );
        candidates.sort_by_key(|c| std::cmp::Reverse((i64::from(c.to) - i64::from(c.from)).abs()));
        candidates.truncate(MAX_CANDIDATES);
    }
    let rule = SpikeRule {
        z_threshold: z,
        min_changes: 30,
        min_relative_spread: SpikeRule::default().min_relative_spread,
    };
    stream::iter(candidates)
        .map(|candidate| async move {
            match decide_one(pool, &candidate, &rule).await {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(
                        influencer_id = candidate.influencer_id,
                        error = format!("{e:#}"),
                        "cannot read a spike candidate's last two hours"
                    );
                    None
                }
            }
        })
        .buffer_unordered(DECIDING)
        .filter_map(|event| async move { event })
        .collect()
        .await
}

async fn decide_one(
    pool: &PgPool,
    candidate: &Candidate,
    rule: &SpikeRule,
) -> anyhow::Result<Option<NewEvent>> {
    let end = candidate.slot_ms;
    let points =
        series::read::points(pool, candidate.influencer_id, end - SPIKE_WINDOW_MS, end).await?;
    let slots: Vec<i64> = points.iter().map(|p| p.slot_ms / 1000).collect();
    let values: Vec<i32> = points
        .iter()
        .map(|p| match candidate.metric {
            Metric::Followers => p.follower_count,
            Metric::Following => p.following_count,
        })
        .collect();
    // The interval: the smallest step between two of its slots.
    let interval = slots
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|&d| d > 0)
        .min();
    let Some(finding) = interval.and_then(|i| judge_last(&slots, &values, i, rule)) else {
        return Ok(None);
    };
    if !finding.suspicious || finding.at * 1000 / 1000 != end / 1000 {
        return Ok(None);
    }
    Ok(Some(NewEvent {
        kind: EventType::Spike,
        influencer_id: candidate.influencer_id,
        slot_ms: Some(end),
        data: json!({
            "metric": candidate.metric,
            "from": finding.from,
            "to": finding.to,
            "change": i64::from(finding.to) - i64::from(finding.from),
            "z": finding.z,
            "median_change": finding.median_change,
            "spread": finding.spread,
            "changes": finding.changes,
        }),
    }))
}
