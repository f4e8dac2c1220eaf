//! Where the API's reads go: the primary (DATABASE_URL), or a streaming replica
//! (DATABASE_READ_URL) while it answers and its replay lag stays within READ_MAX_LAG.
//!
//! A watcher asks the replica every second how far it has replayed, against the primary's
//! WAL position: a replica that has replayed everything the primary wrote is 0 s behind;
//! otherwise it is behind by the age of the last transaction it replayed (PostgreSQL's
//! `pg_last_xact_replay_timestamp`), an upper bound of how old its newest data can be. Writes
//! (tracking, watchlists, webhooks) always go to the primary.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::config::{ApiSettings, DatabaseSettings};

/// How often the replica's lag is read.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// A watch that takes longer than this counts the replica as down.
const WATCH_TIMEOUT: Duration = Duration::from_secs(2);

/// The pools the API reads from.
#[derive(Clone)]
pub struct Reads {
    primary: PgPool,
    replica: Option<Arc<Replica>>,
}

struct Replica {
    pool: PgPool,
    max_lag: Duration,
    state: Mutex<ReplicaState>,
}

/// What the last watch of the replica found.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplicaState {
    /// Not watched yet: reads go to the primary until the first watch.
    Unknown,
    /// Answering, `lag` behind the primary.
    Answering { lag: Duration },
    /// Not answering (down, refusing, or not a standby), with why.
    Down(String),
}

/// Where one read goes and how stale its answer can be.
pub struct ReadTarget<'a> {
    pub pool: &'a PgPool,
    /// The replica's lag when the read goes there; `None` on the primary.
    pub staleness: Option<Duration>,
}

impl ReadTarget<'_> {
    /// The staleness in seconds as answers carry it: 0 on the primary.
    pub fn staleness_seconds(&self) -> f64 {
        self.staleness
            .map_or(0.0, |lag| (lag.as_secs_f64() * 1000.0).round() / 1000.0)
    }
}

impl Reads {
    /// Every read on `primary`.
    pub fn primary(primary: PgPool) -> Self {
        Self {
            primary,
            replica: None,
        }
    }

    /// As `serve` and `run` read: on DATABASE_READ_URL's replica while it keeps within
    /// READ_MAX_LAG, else on the primary's `pool`.
    pub fn for_api(
        pool: &PgPool,
        database: &DatabaseSettings,
        api: &ApiSettings,
    ) -> anyhow::Result<Self> {
        Ok(match &api.database_read_url {
            None => Self::primary(pool.clone()),
            Some(url) => {
                let replica = crate::db::open_replica_pool(
                    url,
                    database.database_pool_size,
                    api.api_statement_timeout,
                )?;
                tracing::info!(replica = %url, "reads on the replica while it keeps within READ_MAX_LAG");
                Self::with_replica(pool.clone(), replica, api.read_max_lag)
            }
        })
    }

    /// Reads on `replica` while it keeps within `max_lag`; starts its watcher (which ends when
    /// the last clone of this is dropped).
    pub fn with_replica(primary: PgPool, replica: PgPool, max_lag: Duration) -> Self {
        let replica = Arc::new(Replica {
            pool: replica,
            max_lag,
            state: Mutex::new(ReplicaState::Unknown),
        });
        tokio::spawn(watch(Arc::downgrade(&replica), primary.clone()));
        Self {
            primary,
            replica: Some(replica),
        }
    }

    /// Where a read goes now.
    pub fn target(&self) -> ReadTarget<'_> {
        match &self.replica {
            Some(replica) => match replica.state() {
                ReplicaState::Answering { lag } if lag <= replica.max_lag => ReadTarget {
                    pool: &replica.pool,
                    staleness: Some(lag),
                },
                _ => self.on_primary(),
            },
            None => self.on_primary(),
        }
    }

    /// The pool a read goes to now.
    pub fn pool(&self) -> &PgPool {
        self.target().pool
    }

    fn on_primary(&self) -> ReadTarget<'_> {
        ReadTarget {
            pool: &self.primary,
            staleness: None,
        }
    }

    /// For `/readyz`: where reads go and why; `None` without a replica.
    pub fn describe(&self) -> Option<String> {
        let replica = self.replica.as_ref()?;
        let max = replica.max_lag.as_secs_f64();
        Some(match replica.state() {
            ReplicaState::Answering { lag } if lag <= replica.max_lag => format!(
                "reads on the replica, {:.3} s behind the primary",
                lag.as_secs_f64()
            ),
            ReplicaState::Answering { lag } => format!(
                "reads on the primary: the replica is {:.1} s behind, past READ_MAX_LAG {max} s",
                lag.as_secs_f64()
            ),
            ReplicaState::Down(why) => {
                format!(
                    "reads on the primary: the replica (DATABASE_READ_URL) does not answer: {why}"
                )
            }
            ReplicaState::Unknown => {
                "reads on the primary until the replica's lag is first read".to_string()
            }
        })
    }

    /// The replica's last watched state; `None` without a replica.
    pub fn replica_state(&self) -> Option<ReplicaState> {
        self.replica.as_ref().map(|r| r.state())
    }
}

impl Replica {
    fn state(&self) -> ReplicaState {
        self.state.lock().expect("not poisoned").clone()
    }

    fn set(&self, state: ReplicaState) {
        let serving = matches!(state, ReplicaState::Answering { lag } if lag <= self.max_lag);
        metrics::gauge!("api_replica_serving").set(if serving { 1.0 } else { 0.0 });
        if let ReplicaState::Answering { lag } = state {
            metrics::gauge!("api_replica_lag_seconds").set(lag.as_secs_f64());
        }
        let mut current = self.state.lock().expect("not poisoned");
        let was_serving =
            matches!(*current, ReplicaState::Answering { lag } if lag <= self.max_lag);
        if was_serving != serving {
            match &state {
                ReplicaState::Answering { lag } if serving => {
                    tracing::info!(lag_s = lag.as_secs_f64(), "reads move to the replica")
                }
                ReplicaState::Answering { lag } => tracing::warn!(
                    lag_s = lag.as_secs_f64(),
                    max_lag_s = self.max_lag.as_secs_f64(),
                    "the replica lags past READ_MAX_LAG: reads move to the primary"
                ),
                ReplicaState::Down(why) => tracing::warn!(
                    error = %why,
                    "the replica does not answer: reads move to the primary"
                ),
                ReplicaState::Unknown => {}
            }
        }
        *current = state;
    }
}

/// Reads the replica's lag every second while the API keeps it.
async fn watch(replica: Weak<Replica>, primary: PgPool) {
    let mut every = tokio::time::interval(WATCH_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut primary_positions = Positions::default();
    loop {
        every.tick().await;
        let Some(replica) = replica.upgrade() else {
            return;
        };
        let asked = lag(&mut primary_positions, &primary, &replica.pool);
        let state = match tokio::time::timeout(WATCH_TIMEOUT, asked).await {
            Ok(Ok(lag)) => ReplicaState::Answering { lag },
            Ok(Err(e)) => ReplicaState::Down(e.to_string()),
            Err(_) => ReplicaState::Down(format!("no answer within {} s", WATCH_TIMEOUT.as_secs())),
        };
        replica.set(state);
    }
}

/// The primary's WAL positions of the last watches, oldest first: the replica is behind by at
/// most the time since the newest of them it has replayed.
#[derive(Default)]
struct Positions(std::collections::VecDeque<(Instant, u64)>);

/// Watches kept: ten minutes of them.
const POSITIONS_KEPT: usize = 600;

impl Positions {
    fn push(&mut self, at: Instant, lsn: u64) {
        if self.0.len() == POSITIONS_KEPT {
            self.0.pop_front();
        }
        self.0.push_back((at, lsn));
    }

    /// How far behind a replica that has replayed up to `replayed` is at `now`: the time since
    /// the primary was last seen at or before that position; `None` when it is behind every
    /// position kept.
    fn behind(&self, replayed: u64, now: Instant) -> Option<Duration> {
        self.0
            .iter()
            .rev()
            .find(|(_, lsn)| *lsn <= replayed)
            .map(|(at, _)| now.saturating_duration_since(*at))
    }
}

/// A `pg_lsn` as PostgreSQL spells it (`16/B374D848`): a 64-bit WAL position.
fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.split_once('/')?;
    Some((u64::from_str_radix(high, 16).ok()? << 32) | u64::from_str_radix(low, 16).ok()?)
}

/// How far the replica is behind the primary: the primary's position is read first, then what
/// the replica has replayed, so a replica that keeps up is behind by the moments between the
/// two reads. Behind every position kept, it is as old as the last transaction it replayed.
async fn lag(
    positions: &mut Positions,
    primary: &PgPool,
    replica: &PgPool,
) -> anyhow::Result<Duration> {
    let primary_lsn = sqlx::query_scalar!(r#"select pg_current_wal_lsn()::text as "lsn!""#)
        .fetch_one(primary)
        .await?;
    let lsn = parse_lsn(&primary_lsn).ok_or_else(|| {
        anyhow::anyhow!("the primary's WAL position {primary_lsn} is not a pg_lsn")
    })?;
    positions.push(Instant::now(), lsn);
    let row = sqlx::query!(
        r#"select pg_is_in_recovery() as "standby!",
                  pg_last_wal_replay_lsn()::text as replayed,
                  extract(epoch from now() - pg_last_xact_replay_timestamp())::float8 as behind"#,
    )
    .fetch_one(replica)
    .await?;
    if !row.standby {
        anyhow::bail!("DATABASE_READ_URL is not a standby (pg_is_in_recovery() is false)");
    }
    let replayed = row
        .replayed
        .as_deref()
        .and_then(parse_lsn)
        .ok_or_else(|| anyhow::anyhow!("the replica has replayed nothing yet"))?;
    if let Some(behind) = positions.behind(replayed, Instant::now()) {
        return Ok(behind);
    }
    let behind = row.behind.unwrap_or(f64::MAX).max(0.0);
    Ok(Duration::try_from_secs_f64(behind).unwrap_or(Duration::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wal_position_is_read_as_postgresql_spells_it() {
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374_D848));
        assert_eq!(parse_lsn("16"), None);
        assert_eq!(parse_lsn("x/1"), None);
    }

    #[test]
    fn the_lag_is_the_time_since_the_newest_primary_position_replayed() {
        let start = Instant::now();
        let mut positions = Positions::default();
        for (second, lsn) in [(0, 100), (1, 200), (2, 300), (3, 400)] {
            positions.push(start + Duration::from_secs(second), lsn);
        }
        let now = start + Duration::from_millis(3_010);
        // replayed everything the primary had when last asked: behind by the moments since
        assert_eq!(positions.behind(400, now), Some(Duration::from_millis(10)));
        assert_eq!(positions.behind(450, now), Some(Duration::from_millis(10)));
        // replayed what the primary had two watches ago (and a little more)
        assert_eq!(
            positions.behind(250, now),
            Some(Duration::from_millis(2_010))
        );
        // behind every position kept: unknown here
        assert_eq!(positions.behind(99, now), None);
    }

    #[test]
    fn positions_keep_the_last_ten_minutes() {
        let start = Instant::now();
        let mut positions = Positions::default();
        for k in 0..(POSITIONS_KEPT as u64 + 5) {
            positions.push(start + Duration::from_secs(k), k);
        }
        assert_eq!(positions.0.len(), POSITIONS_KEPT);
        assert_eq!(positions.0.front().unwrap().1, 5);
    }
}
