//! A board of movers: two snapshots of everyone (a window's start and end), paired by
//! influencer, and their orders by change, each sorted once when first asked for and kept
//! with the board.

use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{model::follower_ratio, series::Snapshot};

/// Which count a mover is ranked by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    #[default]
    Followers,
    Following,
    /// followerCount / followingCount (to the hundredth, as `latest` answers it).
    Ratio,
}

/// Ranked by the change itself or by the change in percent of the starting value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum By {
    #[default]
    Absolute,
    Percent,
}

/// Gainers (change above 0, the largest first) or losers (below 0, the largest fall first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Gainers,
    Losers,
}

/// A side of a window: a snapshot and the moment it stands for (a mark's time, or a day's
/// end for its closes), epoch ms.
#[derive(Debug, Clone)]
pub(crate) struct Side {
    pub snapshot: Arc<Snapshot>,
    pub at_ms: i64,
}

impl Side {
    /// Whether the value at `i` is near this side's moment: taken at most `tolerance_ms` before
    /// it (and not after it).
    fn near(&self, i: usize, tolerance_ms: i64) -> bool {
        let t = self.snapshot.times_ms[i];
        t <= self.at_ms && t >= self.at_ms - tolerance_ms
    }
}

/// One influencer's value at a side: `(time_ms, followers, following)`.
pub(crate) type Value = (i64, i32, i32);

/// Two sides paired by influencer.
pub(crate) struct Board {
    pub from: Side,
    pub to: Side,
    /// (index in `from`, index in `to`) of each influencer with a value near both sides, by id.
    pairs: Vec<(u32, u32)>,
    /// Influencers of the end's snapshot left out: no value near one of the sides.
    pub stale: usize,
    /// Orders by [`order_slot`], each sorted when first asked for.
    orders: [OnceLock<Vec<Keyed>>; 12],
}

/// A position in an order: the sort key and the index of the pair.
#[derive(Debug, Clone, Copy)]
struct Keyed {
    key: f64,
    id: i64,
    pair: u32,
}

/// A mover as a page lists it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Mover {
    pub influencer_id: i64,
    pub from: Value,
    pub to: Value,
    /// What it is ranked by: the change, or the change in percent of the start.
    pub key: f64,
}

fn order_slot(metric: Metric, by: By, direction: Direction) -> usize {
    metric as usize * 4 + by as usize * 2 + direction as usize
}

/// The change of `metric` from `from` to `to`, absolute or in percent of `from` (to the
/// hundredth); none where it has no value (a ratio without following, a percent of 0).
pub(crate) fn change(metric: Metric, by: By, from: Value, to: Value) -> Option<f64> {
    let (a, b) = match metric {
        Metric::Followers => (f64::from(from.1), f64::from(to.1)),
        Metric::Following => (f64::from(from.2), f64::from(to.2)),
        Metric::Ratio => (follower_ratio(from.1, from.2)?, follower_ratio(to.1, to.2)?),
    };
    let change = b - a;
    match by {
        By::Absolute if metric == Metric::Ratio => Some((change * 100.0).round() / 100.0),
        By::Absolute => Some(change),
        By::Percent if a == 0.0 => None,
        By::Percent => Some((change * 10_000.0 / a).round() / 100.0),
    }
}

impl Board {
    /// Pairs every influencer of `to` with its value in `from`; one without a value within
    /// `tolerance_ms` before either side's moment is counted stale and left out.
    pub fn new(from: Side, to: Side, tolerance_ms: i64) -> Self {
        let (f, t) = (&from.snapshot, &to.snapshot);
        let mut pairs = Vec::with_capacity(t.len());
        let mut stale = 0;
        let mut j = 0;
        for i in 0..t.len() {
            let id = t.ids[i];
            while j < f.len() && f.ids[j] < id {
                j += 1;
            }
            let paired = j < f.len() && f.ids[j] == id;
            if paired && to.near(i, tolerance_ms) && from.near(j, tolerance_ms) {
                pairs.push((j as u32, i as u32));
            } else {
                stale += 1;
            }
        }
        Self {
            from,
            to,
            pairs,
            stale,
            orders: Default::default(),
        }
    }

    /// How many influencers are compared.
    pub fn compared(&self) -> usize {
        self.pairs.len()
    }

    /// How many of `members` (sorted ids) are compared.
    pub fn compared_among(&self, members: &[i64]) -> usize {
        let ids = &self.to.snapshot.ids;
        members
            .iter()
            .filter(|&&id| {
                self.pairs
                    .binary_search_by_key(&id, |&(_, t)| ids[t as usize])
                    .is_ok()
            })
            .count()
    }

    fn values(&self, pair: u32) -> (i64, Value, Value) {
        let (f, t) = self.pairs[pair as usize];
        let (from, to) = (&self.from.snapshot, &self.to.snapshot);
        let (f, t) = (f as usize, t as usize);
        (
            to.ids[t],
            (from.times_ms[f], from.followers[f], from.following[f]),
            (to.times_ms[t], to.followers[t], to.following[t]),
        )
    }

    /// The movers in `direction`'s order: by key (the largest gain, or the largest fall,
    /// first), ties by id.
    fn order(&self, metric: Metric, by: By, direction: Direction) -> &[Keyed] {
        self.orders[order_slot(metric, by, direction)].get_or_init(|| {
            let mut keyed: Vec<Keyed> = (0..self.pairs.len() as u32)
                .filter_map(|pair| {
                    let (id, from, to) = self.values(pair);
                    let key = change(metric, by, from, to)?;
                    let moved = match direction {
                        Direction::Gainers => key > 0.0,
                        Direction::Losers => key < 0.0,
                    };
                    moved.then_some(Keyed { key, id, pair })
                })
                .collect();
            keyed.sort_unstable_by(|a, b| before(direction, (a.key, a.id), (b.key, b.id)));
            keyed
        })
    }

    /// Up to `limit` movers after `after` (the `(key, id)` of the previous page's last), of
    /// those that started with at least `min_followers` followers.
    #[cfg(test)]
    pub fn page(
        &self,
        order: (Metric, By, Direction),
        min_followers: i32,
        after: Option<(f64, i64)>,
        limit: usize,
    ) -> Vec<Mover> {
        self.page_within(order, min_followers, after, limit, None)
    }

    /// As [`Self::page`], of only `only`'s influencers (sorted ids: a watchlist's members)
    /// when given.
    pub fn page_within(
        &self,
        (metric, by, direction): (Metric, By, Direction),
        min_followers: i32,
        after: Option<(f64, i64)>,
        limit: usize,
        only: Option<&[i64]>,
    ) -> Vec<Mover> {
        let order = self.order(metric, by, direction);
        let start = after.map_or(0, |after| {
            order.partition_point(|k| before(direction, (k.key, k.id), after).is_le())
        });
        order[start..]
            .iter()
            .filter_map(|k| {
                if only.is_some_and(|members| members.binary_search(&k.id).is_err()) {
                    return None;
                }
                let (influencer_id, from, to) = self.values(k.pair);
                (from.1 >= min_followers).then_some(Mover {
                    influencer_id,
                    from,
                    to,
                    key: k.key,
                })
            })
            .take(limit)
            .collect()
    }
}

/// The order of two (key, id) in a direction: gainers by key descending, losers ascending,
/// ties by id ascending.
fn before(direction: Direction, a: (f64, i64), b: (f64, i64)) -> std::cmp::Ordering {
    let by_key = match direction {
        Direction::Gainers => b.0.total_cmp(&a.0),
        Direction::Losers => a.0.total_cmp(&b.0),
    };
    by_key.then(a.1.cmp(&b.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;
    const HOUR: i64 = 3_600_000;

    /// Rows `(id, followers, following, time)`.
    fn side(at_ms: i64, rows: &[(i64, i32, i32, i64)]) -> Side {
        Side {
            snapshot: Arc::new(Snapshot::from_rows(rows.to_vec())),
            at_ms,
        }
    }

    fn board() -> Board {
        let from = side(
            NOW - HOUR,
            &[
                (1, 10_000, 100, NOW - HOUR - 30_000),
                (2, 10_000, 100, NOW - HOUR - 30_000),
                (3, 5_000, 50, NOW - HOUR - 30_000),
                (4, 500, 10, NOW - HOUR - 30_000),
                // Not polled near the start: stale.
                (5, 8_000, 80, NOW - 2 * HOUR),
                (6, 20_000, 0, NOW - HOUR - 1),
                (8, 9_000, 90, NOW - HOUR - 1),
            ],
        );
        let to = side(
            NOW,
            &[
                (1, 10_500, 100, NOW - 10_000),
                (2, 9_000, 110, NOW - 10_000),
                (3, 5_500, 50, NOW - 20_000),
                (4, 900, 10, NOW - 20_000),
                (5, 9_000, 80, NOW - 20_000),
                (6, 20_000, 5, NOW - 1),
                // Not in the start's snapshot (tracked since): stale.
                (7, 1_000_000, 10, NOW - 1),
                // Not polled near the end: stale.
                (8, 9_900, 90, NOW - HOUR),
            ],
        );
        Board::new(from, to, 180_000)
    }

    fn ids(movers: &[Mover]) -> Vec<i64> {
        movers.iter().map(|m| m.influencer_id).collect()
    }

    #[test]
    fn only_values_near_both_ends_are_compared() {
        let b = board();
        assert_eq!((b.compared(), b.stale), (5, 3));
    }

    #[test]
    fn gainers_and_losers_by_change_and_by_percent() {
        let b = board();
        let gainers = (Metric::Followers, By::Absolute, Direction::Gainers);
        let page = b.page(gainers, 0, None, 10);
        // 1: +500, 3: +500, 4: +400 (ties by id); 6 did not move, 2 fell.
        assert_eq!(ids(&page), vec![1, 3, 4]);
        assert_eq!(page[0].from, (NOW - HOUR - 30_000, 10_000, 100));
        assert_eq!(page[0].to, (NOW - 10_000, 10_500, 100));
        assert_eq!(page[0].key, 500.0);
        let by_percent = b.page(
            (Metric::Followers, By::Percent, Direction::Gainers),
            0,
            None,
            10,
        );
        // 4: +80%, 3: +10%, 1: +5%.
        assert_eq!(ids(&by_percent), vec![4, 3, 1]);
        assert_eq!(by_percent[0].key, 80.0);
        let losers = b.page(
            (Metric::Followers, By::Absolute, Direction::Losers),
            0,
            None,
            10,
        );
        assert_eq!(ids(&losers), vec![2]);
        assert_eq!(losers[0].key, -1_000.0);
        let following = b.page(
            (Metric::Following, By::Absolute, Direction::Gainers),
            0,
            None,
            10,
        );
        assert_eq!(ids(&following), vec![2, 6]);
        // The ratio: 1: 100 → 105; 2: 100 → 81.82; 6 has no ratio at the start.
        let ratio = b.page(
            (Metric::Ratio, By::Absolute, Direction::Gainers),
            0,
            None,
            10,
        );
        assert_eq!(ids(&ratio), vec![4, 3, 1]);
        assert_eq!(ratio[2].key, 5.0);
        let fallen = b.page((Metric::Ratio, By::Percent, Direction::Losers), 0, None, 10);
        assert_eq!(ids(&fallen), vec![2]);
        assert_eq!(fallen[0].key, -18.18);
    }

    #[test]
    fn min_followers_counts_the_start_and_pages_follow_the_cursor() {
        let b = board();
        let gainers = (Metric::Followers, By::Absolute, Direction::Gainers);
        assert_eq!(ids(&b.page(gainers, 1_000, None, 10)), vec![1, 3]);
        assert_eq!(ids(&b.page(gainers, 10_000, None, 10)), vec![1]);
        let first = b.page(gainers, 0, None, 1);
        assert_eq!(ids(&first), vec![1]);
        let after = |m: &Mover| Some((m.key, m.influencer_id));
        let second = b.page(gainers, 0, after(&first[0]), 1);
        assert_eq!(ids(&second), vec![3]);
        let third = b.page(gainers, 0, after(&second[0]), 5);
        assert_eq!(ids(&third), vec![4]);
        assert!(b.page(gainers, 0, after(&third[0]), 5).is_empty());
        // A cursor between keys (the snapshot changed under it) starts after it.
        assert_eq!(ids(&b.page(gainers, 0, Some((450.0, 0)), 5)), vec![4]);
        let losers = (Metric::Followers, By::Absolute, Direction::Losers);
        assert!(b.page(losers, 0, Some((-1_000.0, 2)), 5).is_empty());
    }

    #[test]
    fn within_a_watchlist_only_its_members_move_and_are_counted() {
        let b = board();
        let gainers = (Metric::Followers, By::Absolute, Direction::Gainers);
        // 7 and 8 are stale, 99 was never in a snapshot: none of them compared.
        let members = [3, 4, 7, 8, 99];
        assert_eq!(
            ids(&b.page_within(gainers, 0, None, 10, Some(&members))),
            vec![3, 4]
        );
        let first = b.page_within(gainers, 0, None, 1, Some(&members));
        let after = Some((first[0].key, first[0].influencer_id));
        assert_eq!(
            ids(&b.page_within(gainers, 0, after, 10, Some(&members))),
            vec![4]
        );
        assert_eq!(b.compared_among(&members), 2);
        assert_eq!(b.compared_among(&[]), 0);
    }

    #[test]
    fn changes_without_a_base_have_no_percent() {
        let (from, to) = ((0, 0, 0), (0, 10, 0));
        assert_eq!(
            change(Metric::Followers, By::Absolute, from, to),
            Some(10.0)
        );
        assert_eq!(change(Metric::Followers, By::Percent, from, to), None);
        assert_eq!(change(Metric::Ratio, By::Absolute, from, to), None);
        assert_eq!(
            change(Metric::Following, By::Percent, (0, 1, 3), (0, 1, 4)),
            Some(33.33)
        );
    }
}
