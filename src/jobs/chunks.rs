//! Compaction of closed chunks: rebuilds the unique (influencer_id, slot) index of every
//! influencer_metrics chunk whose hour is over.
//!
//! While a chunk is written, points of a million influencers land at random places of its
//! index, and B-tree page splits leave its pages about 70% full. Once the hour is over the chunk
//! only gets the rare late point, so a rebuild packs the index to 90% (about 31 instead of 39
//! bytes per point). `REINDEX CONCURRENTLY` blocks neither readers nor writers.
//!
//! Run by the minutely jobs ([`super::run_minutely`]); a session advisory lock lets one process
//! at a time do it.

use sqlx::PgPool;

use crate::db::SessionLock;

/// Advisory lock key: "compact" in ASCII.
const LOCK_KEY: i64 = 0x63_6f6d_7061_6374;

/// A chunk is compacted once its time range ended this long ago (late points have landed).
const SETTLE: &str = "10 minutes";

/// Compacts the chunks that are due; returns how many.
pub async fn compact_closed_chunks(pool: &PgPool) -> anyhow::Result<usize> {
    let Some(lock) = SessionLock::try_take(pool, LOCK_KEY).await? else {
        return Ok(0);
    };
    let result = compact_under_lock(pool).await;
    lock.release().await;
    result
}

async fn compact_under_lock(pool: &PgPool) -> anyhow::Result<usize> {
    let due: Vec<(String, String, String)> = sqlx::query_as(&format!(
        "select c.chunk_schema, c.chunk_name, i.indexname
         from timescaledb_information.chunks c
         join pg_indexes i on i.schemaname = c.chunk_schema and i.tablename = c.chunk_name
         where c.hypertable_name = 'influencer_metrics'
           and c.range_end <= now() - interval '{SETTLE}'
           and not exists (select 1 from compacted_chunks d where d.chunk_name = c.chunk_name)
         order by c.range_end"
    ))
    .fetch_all(pool)
    .await?;
    let mut chunks: Vec<&str> = Vec::new();
    for (schema, chunk, index) in &due {
        let started = std::time::Instant::now();
        sqlx::query(&format!(
            "reindex index concurrently {}.{}",
            quote(schema),
            quote(index)
        ))
        .execute(pool)
        .await?;
        tracing::info!(
            chunk,
            index,
            seconds = started.elapsed().as_secs_f64(),
            "chunk index compacted"
        );
        if chunks.last() != Some(&chunk.as_str()) {
            chunks.push(chunk);
        }
    }
    for chunk in &chunks {
        sqlx::query("insert into compacted_chunks (chunk_name) values ($1) on conflict do nothing")
            .bind(chunk)
            .execute(pool)
            .await?;
    }
    metrics::counter!("chunks_compacted_total").increment(chunks.len() as u64);
    Ok(chunks.len())
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
