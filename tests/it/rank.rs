//! `/influencer_analytics/{id}/rank` against what is stored: each closed day ranked from the
//! day closes compaction writes from the points of every tier (late points included), and each
//! hour ranked by the ranking job from everyone's latest values.

use chrono::Utc;
use influencer_analytics::{
    jobs::{
        JobOutcome,
        compaction::{self, Budget},
        ranking,
    },
    series::DAY_MS,
};
use reqwest::StatusCode;
use serde_json::Value;

use crate::api::TestApi;

/// `(day, rank, percentile, ranked)` of each day of an answer.
fn days(answer: &Value) -> Vec<(String, i64, f64, i64)> {
    answer["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["day"].as_str().unwrap().to_string(),
                d["rank"].as_i64().unwrap(),
                d["percentile"].as_f64().unwrap(),
                d["ranked"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn day_name(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string()
}

#[tokio::test]
async fn a_rank_history_ranks_each_closed_day_by_its_closes_and_each_hour_by_the_latest() {
    let api = TestApi::start().await;
    let now_ms = Utc::now().timestamp_millis();
    let d2 = compaction::latest_settled_day_ms(now_ms);
    let d1 = d2 - DAY_MS;
    // Followers at each day's points (the last is the close): 1 leads d1 and falls to last on
    // d2 by a late point; 2 and 3 tie on d2; 4 has no point on d2.
    let plan: [(i64, [i32; 2], [i32; 2]); 4] = [
        (1, [90_000, 80_000], [75_000, 70_000]),
        (2, [10_000, 20_000], [30_000, 40_000]),
        (3, [15_000, 30_000], [35_000, 40_000]),
        (4, [5_000, 10_000], [0, 0]),
    ];
    for (id, first, second) in plan {
        api.register(id).await;
        for (day, values) in [(d1, first), (d2, second)] {
            if values == [0, 0] {
                continue;
            }
            for (minute, followers) in [(60, values[0]), (1_430, values[1])] {
                api.point_at_ms(id, day + minute * 60_000 + 20_000, followers, 100)
                    .await;
            }
        }
    }
    // A point of 1 after its last of d2 that reached the sink after the hour closed.
    sqlx::query(
        "insert into late_points (influencer_id, slot, fetched_at, follower_count, following_count)
         values (1, to_timestamp($1 / 1000.0), now(), 1_000, 100)",
    )
    .bind(d2 + 1_439 * 60_000)
    .execute(&api.db.pool)
    .await
    .unwrap();
    compaction::run(&api.db.pool, Budget::FULL, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(
        ranking::rank_closed_days(&api.db.pool).await.unwrap(),
        JobOutcome::Done(2)
    );
    assert_eq!(
        ranking::rank_closed_days(&api.db.pool).await.unwrap(),
        JobOutcome::AlreadyDone
    );

    let (status, _, answer) = api.get("/influencer_analytics/1/rank").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // d1: 80,000 > 30,000 > 20,000 > 10,000; d2: 40,000 = 40,000 > 1,000 (4 not ranked).
    assert_eq!(
        days(&answer),
        vec![(day_name(d1), 1, 75.0, 4), (day_name(d2), 3, 0.0, 3),]
    );
    assert_eq!(answer["days"][0]["time"], (d1 + DAY_MS) / 1000);
    let (_, _, answer) = api.get("/influencer_analytics/2/rank").await;
    assert_eq!(
        days(&answer),
        vec![(day_name(d1), 3, 25.0, 4), (day_name(d2), 1, 33.33, 3)]
    );
    let (_, _, answer) = api.get("/influencer_analytics/3/rank").await;
    assert_eq!(days(&answer)[1], (day_name(d2), 1, 33.33, 3));
    let (_, _, answer) = api.get("/influencer_analytics/4/rank").await;
    assert_eq!(days(&answer), vec![(day_name(d1), 4, 0.0, 4)]);
    // Both ends inclusive, at the day's close.
    let close = (d1 + DAY_MS) / 1000;
    let path = format!("/influencer_analytics/2/rank?start_time={close}&end_time={close}");
    let (_, _, answer) = api.get(&path).await;
    assert_eq!(days(&answer), vec![(day_name(d1), 3, 25.0, 4)]);
    let path = format!("/influencer_analytics/2/rank?start_time={}", close + 1);
    let (_, _, answer) = api.get(&path).await;
    assert_eq!(days(&answer).len(), 1);

    // The hour: the ranking job ranks everyone's latest values on its first run of the hour,
    // and not again within it.
    assert_eq!(answer["hours"].as_array().unwrap().len(), 0, "{answer}");
    for (id, followers) in [(1, 500), (2, 600), (3, 700), (4, 600)] {
        sqlx::query(
            "insert into influencer_latest (influencer_id, slot, fetched_at, follower_count, following_count)
             values ($1, now(), now(), $2, 1)
             on conflict (influencer_id) do update set follower_count = excluded.follower_count",
        )
        .bind(id)
        .bind(followers)
        .execute(&api.db.pool)
        .await
        .unwrap();
    }
    ranking::refresh(&api.db.pool).await.unwrap();
    sqlx::query("update influencer_latest set follower_count = 1 where influencer_id = 3")
        .execute(&api.db.pool)
        .await
        .unwrap();
    ranking::refresh(&api.db.pool).await.unwrap();
    let (_, _, answer) = api.get("/influencer_analytics/3/rank").await;
    let hours = answer["hours"].as_array().unwrap();
    assert_eq!(hours.len(), 1, "{answer}");
    assert_eq!(
        (hours[0]["rank"].as_i64(), hours[0]["ranked"].as_i64()),
        (Some(1), Some(4))
    );
    assert_eq!(hours[0]["time"].as_i64().unwrap() % 3_600, 0);
    let (_, _, answer) = api.get("/influencer_analytics/4/rank").await;
    assert_eq!(answer["hours"][0]["rank"], 2);
    assert_eq!(answer["hours"][0]["percentile"], 25.0);

    // Retention takes a day's ranks with its closes.
    let stored = |kind: &'static str| {
        let pool = api.db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("select count(*) from rank_moments where kind = $1")
                .bind(kind)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!((stored("day").await, stored("hour").await), (2, 1));
    let blocks: i64 = sqlx::query_scalar("select count(*) from rank_blocks")
        .fetch_one(&api.db.pool)
        .await
        .unwrap();
    assert_eq!(blocks, 3, "a block a moment: all ids in one");
    let keep =
        std::time::Duration::from_millis((Utc::now().timestamp_millis() - d2) as u64 - 3_600_000);
    influencer_analytics::jobs::retention::apply(&api.db.pool, keep)
        .await
        .unwrap();
    assert_eq!((stored("day").await, stored("hour").await), (1, 1));
}

#[tokio::test]
async fn a_rank_history_refuses_bad_ranges_and_unknown_influencers() {
    let api = TestApi::start().await;
    api.register(7).await;
    let (status, _, answer) = api.get("/influencer_analytics/7/rank").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["days"], serde_json::json!([]));
    let (status, _, answer) = api
        .get("/influencer_analytics/7/rank?start_time=20&end_time=10")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["title"], "Invalid time range");
    let (status, _, _) = api.get("/influencer_analytics/8/rank").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, answer) = api.get("/influencer_analytics/7/rank?start_time=x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
}

#[tokio::test]
async fn a_full_block_of_ids_is_read_back_six_bytes_at_a_time() {
    let api = TestApi::start().await;
    // Ids 2,660 to 3,989 (one block, dense) and 3,990 to 4,019 (the next, sparse); followers
    // spread with ties.
    sqlx::raw_sql(
        "insert into influencers (influencer_id, username)
         select id, 'influencer-' || id from generate_series(2660, 4019) id;
         insert into influencer_latest (influencer_id, slot, fetched_at, follower_count, following_count)
         select id, now(), now(), (id * 7919) % 613, 1 from generate_series(2660, 4019) id",
    )
    .execute(&api.db.pool)
    .await
    .unwrap();
    ranking::refresh(&api.db.pool).await.unwrap();
    let dense: Vec<bool> = sqlx::query_scalar("select dense from rank_blocks order by block")
        .fetch_all(&api.db.pool)
        .await
        .unwrap();
    assert_eq!(dense, vec![true, false]);
    let followers = |id: i64| (id * 7919) % 613;
    for id in [2660, 2661, 3500, 3989, 3990, 4019] {
        let more = (2660..=4019)
            .filter(|&o| followers(o) > followers(id))
            .count() as i64;
        let fewer = (2660..=4019)
            .filter(|&o| followers(o) < followers(id))
            .count() as f64;
        let (status, _, answer) = api.get(&format!("/influencer_analytics/{id}/rank")).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let hour = &answer["hours"][0];
        assert_eq!(hour["rank"].as_i64(), Some(more + 1), "{id}: {answer}");
        let percentile = (fewer * 10_000.0 / 1_360.0).round() / 100.0;
        assert_eq!(hour["percentile"].as_f64(), Some(percentile), "{id}");
        assert_eq!(hour["ranked"], 1_360);
    }
}

#[tokio::test]
async fn days_merged_before_the_closes_were_kept_get_them_from_the_packs() {
    let api = TestApi::start().await;
    let now_ms = Utc::now().timestamp_millis();
    let d2 = compaction::latest_settled_day_ms(now_ms);
    let d1 = d2 - DAY_MS;
    for id in 1..=3_i64 {
        api.register(id).await;
        for day in [d1, d2] {
            for minute in [100, 1_200 + id] {
                let followers = (id * 1_000 + minute + day / DAY_MS % 100) as i32;
                api.point_at_ms(id, day + minute * 60_000 + 20_000, followers, 7)
                    .await;
            }
        }
    }
    compaction::run(&api.db.pool, Budget::FULL, &mut |_| {})
        .await
        .unwrap();
    let closes = |pool: sqlx::PgPool| async move {
        sqlx::query_as::<_, (chrono::DateTime<Utc>, i64, i32, Vec<u8>)>(
            "select day, first_id, influencers, data from influencer_day_closes order by day, first_id",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let written = closes(api.db.pool.clone()).await;
    assert_eq!(written.len(), 2);
    // As if merged by a version before the closes: none, then the backfill.
    sqlx::query("delete from influencer_day_closes")
        .execute(&api.db.pool)
        .await
        .unwrap();
    let filled = influencer_analytics::series::closes::backfill(&api.db.pool, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(filled, vec![d1, d2]);
    assert_eq!(
        closes(api.db.pool.clone()).await,
        written,
        "the same closes"
    );
    let again = influencer_analytics::series::closes::backfill(&api.db.pool, &mut |_| {})
        .await
        .unwrap();
    assert!(again.is_empty());
    // And the days are ranked from them.
    assert_eq!(
        ranking::rank_closed_days(&api.db.pool).await.unwrap(),
        JobOutcome::Done(2)
    );
    let (_, _, answer) = api.get("/influencer_analytics/3/rank").await;
    assert_eq!(days(&answer)[1], (day_name(d2), 1, 66.67, 3));
}
