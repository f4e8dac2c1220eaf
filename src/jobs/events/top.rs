//! `top_n` events: an influencer entered or left the top N by followers, from one minute's
//! ranking to the next. N is each of 10, 100 and 1,000 and each webhook's own (`top_n`).
//! Places are the ranking's order (most followers first, ties by id). An influencer enters at
//! place N or better, and leaves when it falls past N plus a band of 5% of N (at least 1), or
//! out of the ranking: one hovering at the line is an event, not one a minute. Only the
//! process that made a ranking looks at it; one that did not make the ranking before (it
//! starts, or takes the job over from another) takes the ranking it sees as its baseline and
//! raises nothing for it, so no change is raised twice.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;

use crate::{
    events::{EventType, NewEvent},
    jobs::ranking::{Ranking, RankingCache},
};

/// The sizes of the top every process watches, besides the webhooks' own.
pub(crate) const SIZES: [i64; 3] = [10, 100, 1_000];

/// Places past N an influencer may fall before it has left the top N.
pub(crate) fn band(n: i64) -> i64 {
    (n / 20).max(1)
}

/// Who is inside each top, as of which ranking.
#[derive(Default)]
pub(crate) struct TopWatch {
    cache: RankingCache,
    seen: Option<DateTime<Utc>>,
    inside: BTreeMap<i64, HashSet<i64>>,
}

impl TopWatch {
    /// The events of the newest ranking, if it is new since the last call.
    pub(crate) async fn on_ranking(&mut self, pool: &PgPool) -> anyhow::Result<Vec<NewEvent>> {
        let Some(ranking) = self.cache.current(pool).await? else {
            return Ok(Vec::new());
        };
        if self.seen == Some(ranking.ranked_at) {
            return Ok(Vec::new());
        }
        let mut sizes = crate::webhooks::top_sizes(pool).await?;
        sizes.extend(SIZES);
        sizes.sort_unstable();
        sizes.dedup();
        let follows = self
            .seen
            .is_some_and(|seen| ranking.ranked_at - seen < chrono::TimeDelta::seconds(90));
        if !follows {
            self.inside.clear();
        }
        self.seen = Some(ranking.ranked_at);
        // Sizes no webhook wants any more are forgotten.
        self.inside.retain(|n, _| sizes.contains(n));
        let slot_ms = ranking.ranked_at.timestamp_millis();
        let mut events = Vec::new();
        for n in sizes {
            let inside = self.inside.entry(n).or_default();
            let found = changes(&ranking, n, inside);
            if follows {
                events.extend(found.into_iter().map(|(id, data)| NewEvent {
                    kind: EventType::TopN,
                    influencer_id: id,
                    slot_ms: Some(slot_ms),
                    data,
                }));
            }
        }
        Ok(events)
    }
}

/// Who entered the top `n` of `ranking` and who left it since `inside` (which it updates),
/// with the numbers behind each.
fn changes(ranking: &Ranking, n: i64, inside: &mut HashSet<i64>) -> Vec<(i64, serde_json::Value)> {
    let mut found = Vec::new();
    let top = ranking.top_ids(n as usize);
    for (i, &id) in top.iter().enumerate() {
        if inside.insert(id) {
            found.push((id, json!({"n": n, "direction": "entered", "place": i + 1})));
        }
    }
    let limit = (n + band(n)) as usize;
    let mut left: Vec<(i64, Option<usize>)> = inside
        .iter()
        .map(|&id| (id, ranking.place_of(id)))
        .filter(|(_, place)| place.is_none_or(|p| p > limit))
        .collect();
    left.sort_unstable();
    for (id, place) in left {
        inside.remove(&id);
        found.push((id, json!({"n": n, "direction": "left", "place": place})));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranking(entries: &[(i64, i32)]) -> Ranking {
        Ranking::new(Utc::now(), entries.to_vec())
    }

    #[test]
    fn entering_and_leaving_the_top_with_a_band() {
        let mut inside = HashSet::new();
        // The top 20: ids 1..=20 with 1,000 down to 981 followers; 21 just outside.
        let mut entries: Vec<(i64, i32)> = (1..=25).map(|id| (id, 1_001 - id as i32)).collect();
        let first = changes(&ranking(&entries), 20, &mut inside);
        assert_eq!(first.len(), 20, "everyone inside enters the first time");
        // 20 drops to place 21 (inside the band of 1): nothing; 21 does not enter either.
        entries[19].1 = 979;
        entries[20].1 = 980;
        let hovering = changes(&ranking(&entries), 20, &mut inside);
        assert_eq!(hovering.len(), 1, "{hovering:?}");
        assert_eq!(hovering[0].0, 21, "21 is at place 20: it enters");
        assert_eq!(hovering[0].1["direction"], "entered");
        // 20 falls to place 25: past the band, it has left.
        entries[19].1 = 1;
        let fell = changes(&ranking(&entries), 20, &mut inside);
        assert_eq!(
            fell,
            [(20, json!({"n": 20, "direction": "left", "place": 25}))]
        );
        // An influencer no longer ranked has left too.
        entries.retain(|e| e.0 != 3);
        let gone = changes(&ranking(&entries), 20, &mut inside);
        let directions: Vec<(i64, &str)> = gone
            .iter()
            .map(|(id, d)| (*id, d["direction"].as_str().unwrap()))
            .collect();
        assert_eq!(directions, [(22, "entered"), (3, "left")], "{gone:?}");
    }
}
