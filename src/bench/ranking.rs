//! `bench ranking`: the minutely ranking job at 1,000,000 tracked influencers (`--quick`:
//! 100,000). The job writes one snapshot of the ranking (migration 0012); before, it deleted
//! and inserted a row per influencer with its rank. Both run here on the same rows, in turns,
//! three times each, and the report gives the snapshot's time ÷ the rows' (goal ≤ 0.25), and
//! what an API process pays to read a new snapshot and to answer a rank from it.

use std::time::{Duration, Instant};

use super::{Goal, Report, Scenario, bench_database};
use crate::{
    config::DatabaseSettings,
    jobs::ranking::{self, RankingCache},
};

/// The job before the snapshot: every row of the ranking deleted and inserted again.
const REBUILD_ROWS: [&str; 2] = [
    "delete from bench_rank_rows",
    "insert into bench_rank_rows (influencer_id, rank, fewer, follower_count, ranked_at)
     select l.influencer_id,
            rank() over (order by l.follower_count desc),
            rank() over (order by l.follower_count) - 1,
            l.follower_count, now()
     from influencer_latest l join influencers i using (influencer_id)
     where i.tracked",
];

pub async fn run(database: &DatabaseSettings, quick: bool) -> anyhow::Result<Report> {
    let influencers: i64 = if quick { 100_000 } else { 1_000_000 };
    let (pool, _) = bench_database(database, "ranking", true).await?;
    populate(&pool, influencers).await?;

    let (mut snapshot, mut rows) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let started = Instant::now();
        ranking::refresh(&pool).await?;
        snapshot.push(started.elapsed());
        let started = Instant::now();
        let mut tx = pool.begin().await?;
        for statement in REBUILD_ROWS {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        rows.push(started.elapsed());
    }
    let cache = RankingCache::default();
    let started = Instant::now();
    let ranking = cache
        .current(&pool)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no ranking stored"))?;
    let load = started.elapsed();
    anyhow::ensure!(
        ranking.len() as i64 == influencers,
        "ranked {} of {influencers}",
        ranking.len()
    );
    let started = Instant::now();
    let lookups = 100_000;
    for i in 0..lookups {
        let id = 1_000_000 + (i * 7919) % influencers;
        anyhow::ensure!(ranking.standing(id).is_some(), "{id} is not ranked");
    }
    let lookup = started.elapsed() / lookups as u32;
    let bytes: i64 = sqlx::query_scalar!(
        r#"select octet_length(entries)::bigint as "bytes!" from ranking_runs"#
    )
    .fetch_one(&pool)
    .await?;
    pool.close().await;

    let (snapshot, rows) = (median(&mut snapshot), median(&mut rows));
    let mut out = Report::new(
        Scenario::Ranking,
        quick,
        format!(
            "{influencers} tracked influencers; the ranking job (one snapshot) and the job before it (a row per influencer deleted and inserted, with its index) in turns, three times each on the same rows; medians. The job, PostgreSQL and this process share the 2 cores."
        ),
    );
    out.ratio(
        "ranking job ÷ rewriting a row per influencer",
        snapshot / rows,
        rows,
        Goal::AtMost(0.25),
    )
    .info("ranking job (snapshot)", snapshot, "s")
    .info("rewriting a row per influencer (before)", rows, "s")
    .info("snapshot size", bytes as f64 / 1e6, "MB")
    .info(
        "an API process reading a new snapshot",
        load.as_secs_f64(),
        "s",
    )
    .info("a rank from the snapshot", lookup.as_secs_f64() * 1e6, "µs");
    Ok(out)
}

/// `influencers` tracked influencers with a latest value each, and the table the job before
/// the snapshot rewrote (`bench_rank_rows`, as `influencer_ranks` was).
async fn populate(pool: &sqlx::PgPool, influencers: i64) -> anyhow::Result<()> {
    super::register_with_latest(pool, influencers).await?;
    sqlx::query!(
        "create table bench_rank_rows (
             influencer_id bigint primary key, rank integer not null, fewer integer not null,
             follower_count integer not null, ranked_at timestamptz not null)"
    )
    .execute(pool)
    .await?;
    sqlx::query!("create index on bench_rank_rows (rank, influencer_id)")
        .execute(pool)
        .await?;
    sqlx::query!("vacuum analyze influencer_latest, influencers")
        .execute(pool)
        .await?;

    Ok(())
}

fn median(times: &mut [Duration]) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64()
}
