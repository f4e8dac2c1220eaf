//! The growth and compare endpoints under load, on the influencers with a year of history:
//! growth at a fixed rate from 50 clients (p99 ≤ 20 ms) and at full speed; compare of 10
//! influencers over 30 days at step=1h, at 100 requests a second (p99 ≤ 100 ms).

use sqlx::PgPool;

use super::{DAY_START, MINUTES, RANGE_CLIENTS, Setup, load, quantile};
use crate::{
    bench::{Goal, Report, ms},
    model::splitmix,
};

/// Growth requests a second at the fixed load (a tenth with `--quick`).
const GROWTH_RATE: f64 = 500.0;
/// Compare requests a second, and the influencers each compares.
const COMPARE_RATE: f64 = 100.0;
const COMPARED: u64 = 10;
/// Clients of the compare load.
const COMPARE_CLIENTS: usize = 20;

/// What the loads measured.
pub(super) struct Analytics {
    growth_fixed: load::Load,
    growth_full: load::Load,
    compare: load::Load,
    quick: bool,
}

/// The last minute of the dataset's day, epoch seconds: where the history influencers' latest
/// values are put, so that every growth window ends inside their stored points.
const LAST_SLOT_S: i64 = DAY_START + MINUTES * 60 - 60;

/// Moves the history influencers' latest values to the end of the dataset's day (their points
/// end there): each growth window (1 h to 365 d) then starts among stored points, a day
/// segment decoded for each.
async fn latest_at_the_end_of_history(pool: &PgPool, with_history: i64) -> sqlx::Result<()> {
    sqlx::query!(
        "update influencer_latest set slot = to_timestamp($2), fetched_at = to_timestamp($2)
         where influencer_id >= 1000000 and influencer_id < 1000000 + $1::bigint",
        with_history,
        LAST_SLOT_S as f64,
    )
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn measure(setup: &Setup, quick: bool) -> anyhow::Result<Analytics> {
    latest_at_the_end_of_history(&setup.pool, setup.with_history).await?;
    let scale = if quick { 0.1 } else { 1.0 };
    let with_history = setup.with_history as u64;
    let base = setup.server_base.clone();
    let growth_url = move |client: usize, i: u64| {
        let id = 1_000_000 + splitmix((client as u64) << 40 | i) % with_history;
        format!("{base}/influencer_analytics/{id}/growth")
    };
    let half = setup.duration / 2;
    let growth_fixed = load::run_at_rate(
        RANGE_CLIENTS,
        GROWTH_RATE * scale,
        half,
        growth_url.clone(),
        load::success,
    )
    .await?;
    let growth_full = load::run(RANGE_CLIENTS, half, growth_url, load::success).await?;
    let base = setup.server_base.clone();
    let start = LAST_SLOT_S - 30 * 86_400;
    let compare = load::run_at_rate(
        COMPARE_CLIENTS,
        COMPARE_RATE * scale,
        half,
        move |client, i| {
            let first = splitmix((client as u64) << 40 | i);
            let ids: Vec<String> = (0..COMPARED)
                .map(|k| (1_000_000 + splitmix(first + k) % with_history).to_string())
                .collect();
            format!(
                "{base}/influencer_analytics/compare?ids={}&start_time={start}&end_time={LAST_SLOT_S}&step=3600",
                ids.join(",")
            )
        },
        load::success,
    )
    .await?;
    for (what, load) in [
        ("growth", &growth_fixed),
        ("growth", &growth_full),
        ("compare", &compare),
    ] {
        anyhow::ensure!(load.errors == 0, "{} {what} requests failed", load.errors);
    }
    Ok(Analytics {
        growth_fixed,
        growth_full,
        compare,
        quick,
    })
}

impl Analytics {
    pub(super) fn report(mut self, report: &mut Report) {
        let scale = if self.quick { 0.1 } else { 1.0 };
        let p = |load: &mut load::Load, q| ms(quantile(&mut load.latencies, q));
        report
            .goal(
                &format!(
                    "growth p99 at {} requests/s from {RANGE_CLIENTS} clients (every window covered: a day segment decoded each)",
                    GROWTH_RATE * scale
                ),
                p(&mut self.growth_fixed, 0.99),
                "ms",
                Goal::AtMost(20.0),
            )
            .info("growth p50 at that rate", p(&mut self.growth_fixed, 0.5), "ms")
            .info(
                "growth requests answered a second at that rate",
                self.growth_fixed.rate(),
                "requests/s",
            )
            .info(
                &format!("growth at full speed from {RANGE_CLIENTS} clients: requests a second"),
                self.growth_full.rate(),
                "requests/s",
            )
            .info("growth at full speed: p99", p(&mut self.growth_full, 0.99), "ms")
            .goal(
                &format!(
                    "compare of {COMPARED} influencers, 30 days at step=1h, p99 at {} requests/s",
                    COMPARE_RATE * scale
                ),
                p(&mut self.compare, 0.99),
                "ms",
                Goal::AtMost(100.0),
            )
            .info("compare p50 at that rate", p(&mut self.compare, 0.5), "ms")
            .info(
                "compare requests answered a second at that rate",
                self.compare.rate(),
                "requests/s",
            );
    }
}
