//! Event detection, once a minute on the movers mark, in the process that took it: the
//! [`Detector`]'s rules (milestones, staleness) over everyone's newest values, then the events
//! logged (spikes are decided as the data arrives: [`super::spikes`]). A process that did not take the previous minute's mark first warms its detector on
//! the marks of the last half hour and takes the log's word for milestones and staleness, so
//! detection moves between processes without raising anything twice.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::{
    config::EventSettings,
    events::{
        self,
        detect::{Detector, Rules},
    },
    series::Snapshot,
};

use super::movers;

mod top;

/// The marks a process warms its detector on when it takes detection over.
const WARM_MARKS: chrono::TimeDelta = chrono::TimeDelta::minutes(30);

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
        events::record(pool, &observed.events).await?;
        Ok(Detected {
            events: observed.events.len(),
        })
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
