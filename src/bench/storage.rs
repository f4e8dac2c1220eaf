//! `bench storage`: bytes per stored point (heap + indexes of the hypertable), with the points
//! written by the sink's own writer in the order polling delivers them (every influencer once
//! a minute, shuffled within the minute), so the index grows as it does in production.
//! Goal ≤ 100 bytes on TimescaleDB's Apache edition (no compression).

use std::time::Instant;

use super::{Goal, Report, Scenario, bench_database, sink};
use crate::{config::DatabaseSettings, queue::points::Outcomes, sink::writer};

pub async fn run(database: &DatabaseSettings, quick: bool) -> anyhow::Result<Report> {
    let (influencers, minutes) = if quick { (20_000, 30) } else { (100_000, 60) };
    let (pool, _) = bench_database(database, "storage", true).await?;
    sink::register(&pool, influencers).await?;
    let messages = sink::point_messages(influencers, minutes);
    let started = Instant::now();
    for group in messages.chunks(10) {
        let held: Vec<Outcomes> = group
            .iter()
            .map(|bytes| Outcomes::decode(bytes))
            .collect::<Result<_, _>>()?;
        let refs: Vec<&Outcomes> = held.iter().collect();
        writer::write(&pool, &refs).await?;
    }
    let write_secs = started.elapsed().as_secs_f64();
    let as_written = sizes(&pool).await?;
    // The chunks are all in the past: compact them as the sink's job does once an hour is over.
    let compacted_chunks = crate::jobs::chunks::compact_closed_chunks(&pool).await?;
    let compacted = sizes(&pool).await?;
    let edition: String = sqlx::query_scalar("select current_setting('timescaledb.license')")
        .fetch_one(&pool)
        .await?;
    let points = compacted.points;
    pool.close().await;
    let per = |bytes: i64| bytes as f64 / points as f64;
    let (heap, index) = (compacted.heap, compacted.index);
    let mut report = Report::new(
        Scenario::Storage,
        quick,
        format!(
            "{points} points ({influencers} influencers × {minutes} minutes) written by the sink's writer in {:.0} s, in polling order (each influencer at its slot offset), then its {compacted_chunks} closed chunks compacted as the sink does once their hour is over; TimescaleDB license: {edition} (no compression).",
            write_secs
        ),
    );
    report
        .goal(
            "bytes per point (heap + indexes), closed chunks",
            per(heap + index),
            "bytes",
            Goal::AtMost(100.0),
        )
        .info("heap bytes per point", per(heap), "bytes")
        .info("index bytes per point", per(index), "bytes")
        .info(
            "bytes per point while the chunk is written",
            per(as_written.heap + as_written.index),
            "bytes",
        )
        .info("points", points as f64, "points");
    Ok(report)
}

struct Sizes {
    points: i64,
    heap: i64,
    index: i64,
}

async fn sizes(pool: &sqlx::PgPool) -> anyhow::Result<Sizes> {
    sqlx::query("vacuum analyze influencer_metrics")
        .execute(pool)
        .await?;
    let (points, heap, index): (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from influencer_metrics),
                s.table_bytes + coalesce(s.toast_bytes, 0), s.index_bytes
         from hypertable_detailed_size('influencer_metrics') s",
    )
    .fetch_one(pool)
    .await?;
    Ok(Sizes {
        points,
        heap,
        index,
    })
}
