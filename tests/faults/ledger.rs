//! The count after a scenario: per influencer and slot on its grid, what was expected, stored,
//! recorded as a failed fetch, skipped (neither), and stored twice.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

#[derive(Debug, Default)]
pub struct Ledger {
    pub influencers: usize,
    /// Slots on the influencers' grids inside the window.
    pub expected: u64,
    pub stored: u64,
    /// Fetches that gave no point and say why (fetch_failures).
    pub failed: u64,
    /// Slots with neither a point nor a recorded failure: (pk, slot in ms).
    pub skipped: Vec<(i64, i64)>,
    /// Stored twice: a second row for a slot (the unique key forbids it), or a point off the
    /// influencer's grid (a slot computed anew, e.g. after a restart, that is not one of its
    /// slots).
    pub doubled: u64,
    /// Influencers without a single point (their grid is unknown; all their slots count as
    /// skipped).
    pub never_stored: usize,
}

impl Ledger {
    /// Counts the slots in `[from, to]` of every influencer in `pks`.
    pub async fn count(
        pool: &PgPool,
        pks: std::ops::Range<i64>,
        interval: std::time::Duration,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Self {
        let step = interval.as_millis() as i64;
        let (from, to) = (from.timestamp_millis(), to.timestamp_millis());
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "select influencer_id, (extract(epoch from slot) * 1000)::bigint
             from influencer_metrics order by influencer_id, slot",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        let failures: Vec<(i64, i64)> = sqlx::query_as(
            "select influencer_id, (extract(epoch from slot) * 1000)::bigint from fetch_failures",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        let same_slot_twice: i64 = sqlx::query_scalar(
            "select coalesce(sum(n - 1), 0)::bigint from
               (select count(*) as n from influencer_metrics group by influencer_id, slot) c",
        )
        .fetch_one(pool)
        .await
        .unwrap();

        let mut points: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for (pk, slot) in rows {
            points.entry(pk).or_default().push(slot);
        }
        let failed: std::collections::HashSet<(i64, i64)> = failures.into_iter().collect();
        let mut ledger = Ledger {
            doubled: same_slot_twice as u64,
            ..Ledger::default()
        };
        for pk in pks {
            ledger.influencers += 1;
            let Some(points) = points.get(&pk) else {
                ledger.never_stored += 1;
                let n = ((to - from) / step).max(0) as u64;
                ledger.expected += n;
                ledger
                    .skipped
                    .extend((0..n as i64).map(|k| (pk, from + k * step)));
                continue;
            };
            let phase = points[0].rem_euclid(step);
            let stored: std::collections::HashSet<i64> = points.iter().copied().collect();
            let first = from + (phase - from).rem_euclid(step);
            let mut slot = first;
            while slot <= to {
                ledger.expected += 1;
                if stored.contains(&slot) {
                    ledger.stored += 1;
                } else if failed.contains(&(pk, slot)) {
                    ledger.failed += 1;
                } else {
                    ledger.skipped.push((pk, slot));
                }
                slot += step;
            }
            ledger.doubled += points
                .iter()
                .filter(|&&p| p >= from && p <= to && p.rem_euclid(step) != phase)
                .count() as u64;
        }
        ledger
    }

    /// Every slot expected is stored, none twice, and no fetch failed.
    pub fn assert_every_slot_stored_once(&self) {
        assert_eq!(self.doubled, 0, "slots stored twice");
        assert_eq!(self.failed, 0, "fetches failed");
        assert_eq!(
            self.stored,
            self.expected,
            "lost slots: {:?}",
            &self.skipped[..self.skipped.len().min(10)]
        );
    }

    pub fn print(&self, scenario: &str) {
        crate::common::report(
            scenario,
            format!(
                "{scenario}: {} influencers: expected {} slots, stored {}, failed and recorded {}, \
             skipped {}, stored twice {}{}",
                self.influencers,
                self.expected,
                self.stored,
                self.failed,
                self.skipped.len(),
                self.doubled,
                if self.never_stored > 0 {
                    format!(", {} influencers never stored", self.never_stored)
                } else {
                    String::new()
                }
            ),
        );
    }
}
