//! Data the benchmarks write straight into the tiers, as the sink would have (a day of points
//! for a million influencers takes minutes this way, hours through the pipeline), and the
//! clearing of what an earlier run left. Tools only (feature `tools`).

use sqlx::PgPool;

use super::inspect::TierTable;

/// Stores a point a minute for the influencers `[first_id, last_id]` over the slots `[from_s,
/// to_s]` (epoch seconds, inclusive; one statement, so best within one hour chunk), minute by
/// minute across all of them as the sink writes, fetched 150 ms after their slot. The counts
/// are hashed noise of about 3 bytes of entropy a point, like the simulator's walk, so a
/// compacted segment is as big as a real one: a formula pco could see through made 200-byte
/// day segments that cost a read nothing.
pub async fn insert_noise(
    pool: &PgPool,
    (first_id, last_id): (i64, i64),
    (from_s, to_s): (i64, i64),
) -> sqlx::Result<()> {
    sqlx::query!(
        "insert into influencer_metrics
         select id, to_timestamp(t), to_timestamp(t) + interval '150 ms',
                100000 + (hashint8(id * 100000 + t / 60) & 65535),
                1000 + ((hashint8(id * 100000 + t / 60) >> 16) & 255)
         from generate_series($1::bigint, $2, 60) t, generate_series($3::bigint, $4) id
         order by t, id",
        from_s,
        to_s,
        first_id,
        last_id
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Stores the minute starting at `minute_s` (epoch seconds) of the influencers `[first_id,
/// last_id]`: each at its own second of the minute, fetched up to a second after it, in the
/// order a fleet of fetchers would deliver them (not by influencer).
pub async fn insert_minute(
    pool: &PgPool,
    (first_id, last_id): (i64, i64),
    minute_s: i64,
) -> sqlx::Result<()> {
    sqlx::query!(
        "insert into influencer_metrics
             (influencer_id, slot, fetched_at, follower_count, following_count)
         select id, s, s + make_interval(secs => (hashint8(id + $3::bigint) & 1023) / 1000.0),
                100000 + (hashint8(id * 100000 + $3::bigint / 60) & 65535),
                1000 + ((hashint8(id * 100000 + $3::bigint / 60) >> 16) & 255)
         from generate_series($1::bigint, $2::bigint) id,
              lateral (select to_timestamp($3::bigint + (hashint8(id) & 65535) % 60) s) slot
         order by s, hashint8(id + $3::bigint * 7)",
        first_id,
        last_id,
        minute_s
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Drops what the tiers hold after `after_s` (epoch seconds: whole chunks, and the days
/// waiting to merge), and the late points of the influencers `[first_id, last_id]`.
pub async fn clear_after(
    pool: &PgPool,
    after_s: i64,
    (first_id, last_id): (i64, i64),
) -> sqlx::Result<()> {
    for table in [
        TierTable::Raw,
        TierTable::HourBlocks,
        TierTable::DaySegments,
        TierTable::SummaryPacks,
    ] {
        sqlx::query_scalar!(
            "select drop_chunks($1::text::regclass, newer_than => to_timestamp($2))",
            table.name(),
            after_s as f64
        )
        .fetch_all(pool)
        .await?;
    }
    sqlx::query!(
        "delete from compaction_days where day >= to_timestamp($1)",
        after_s as f64
    )
    .execute(pool)
    .await?;
    sqlx::query!(
        "delete from late_points where influencer_id between $1 and $2",
        first_id,
        last_id
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Empties every tier (and compaction's days).
pub async fn truncate_all(pool: &PgPool) -> sqlx::Result<()> {
    sqlx::query!(
        "truncate influencer_segments, influencer_summary_packs, influencer_hour_blocks,
                  late_points, compaction_days, influencer_metrics cascade"
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Empties the raw points.
pub async fn truncate_raw(pool: &PgPool) -> sqlx::Result<()> {
    sqlx::query!("truncate influencer_metrics")
        .execute(pool)
        .await?;
    Ok(())
}

/// How many raw points are stored.
pub async fn raw_points(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar!(r#"select count(*) as "points!" from influencer_metrics"#)
        .fetch_one(pool)
        .await
}

/// psql's `\copy` of a CSV file of raw points (`influencer_id, slot, fetched_at,
/// follower_count, following_count`) into the hot tier: the fastest a client can store them,
/// which the sink's benchmark measures itself against.
pub fn psql_copy_of_csv(path: &std::path::Path) -> String {
    format!(
        "\\copy influencer_metrics (influencer_id, slot, fetched_at, follower_count, following_count) from '{}' with (format csv)",
        path.display()
    )
}
