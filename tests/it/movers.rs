//! `/influencer_analytics/movers` against what is stored: the marks the movers job takes of
//! everyone's latest values (windows ending now), and the day closes compaction writes from the
//! points of every tier (past days, and the start of long windows).

use chrono::Utc;
use influencer_analytics::{
    jobs::{
        JobOutcome,
        compaction::{self, Budget},
        movers,
    },
    series::DAY_MS,
};
use reqwest::StatusCode;
use serde_json::Value;

use crate::api::TestApi;

/// Sets everyone's latest values, as the sink keeps them: `(id, followers, following, time)`.
async fn set_latest(api: &TestApi, rows: &[(i64, i32, i32, i64)]) {
    for &(id, followers, following, time) in rows {
        sqlx::query(
            "insert into influencer_latest (influencer_id, slot, fetched_at, follower_count, following_count)
             values ($1, to_timestamp($2), to_timestamp($2), $3, $4)
             on conflict (influencer_id) do update set slot = excluded.slot,
                 follower_count = excluded.follower_count, following_count = excluded.following_count",
        )
        .bind(id)
        .bind(time as f64)
        .bind(followers)
        .bind(following)
        .execute(&api.db.pool)
        .await
        .unwrap();
    }
}

/// `(influencer_id, change)` of each mover of an answer.
fn rows(answer: &Value) -> Vec<(i64, f64)> {
    answer["movers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["influencer_id"].as_i64().unwrap(),
                m["change"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn movers_of_the_last_hour_compare_two_marks_of_everyone() {
    let api = TestApi::start().await;
    for id in 1..=8 {
        api.register(id).await;
    }
    // Untracked: in neither mark, counted nowhere.
    sqlx::query(
        "update influencers set tracked = false, untracked_reason = 'test', untracked_at = now()
         where influencer_id = 8",
    )
    .execute(&api.db.pool)
    .await
    .unwrap();
    let now = Utc::now().timestamp();
    let hour_ago = now - 3_600;
    // An hour ago (the mark is moved back an hour after it is taken).
    set_latest(
        &api,
        &[
            (1, 10_000, 100, hour_ago - 30),
            (2, 20_000, 100, hour_ago - 30),
            (3, 5_000, 50, hour_ago - 40),
            (4, 500, 10, hour_ago - 40),
            // Not polled for hours before the mark: stale.
            (5, 7_000, 70, hour_ago - 4 * 3_600),
            (6, 3_000, 30, hour_ago - 20),
            (8, 1_000, 1, hour_ago - 20),
        ],
    )
    .await;
    assert_eq!(movers::mark_now(&api.db.pool).await.unwrap(), 6);
    sqlx::query("update movers_marks set marked_at = marked_at - interval '1 hour'")
        .execute(&api.db.pool)
        .await
        .unwrap();
    // Now: 7 is new (tracked since); 6 has not answered for ten minutes: stale.
    set_latest(
        &api,
        &[
            (1, 10_400, 100, now - 30),
            (2, 18_500, 120, now - 30),
            (3, 5_900, 50, now - 40),
            (4, 1_500, 10, now - 40),
            (5, 9_000, 70, now - 20),
            (6, 9_999, 30, now - 600),
            (7, 50_000, 5, now - 20),
            (8, 2_000, 1, now - 20),
        ],
    )
    .await;
    assert_eq!(
        movers::mark_if_due(&api.db.pool).await.unwrap(),
        JobOutcome::Done(7)
    );
    assert_eq!(
        movers::mark_if_due(&api.db.pool).await.unwrap(),
        JobOutcome::AlreadyDone
    );

    let (status, _, answer) = api.get("/influencer_analytics/movers?window=1h").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["compared"], 4, "{answer}");
    assert_eq!(answer["stale"], 3, "{answer}");
    assert_eq!(answer["min_followers"], 1_000);
    // 4 started under 1,000 followers: left out by default.
    assert_eq!(rows(&answer), vec![(3, 900.0), (1, 400.0)]);
    let first = &answer["movers"][0];
    assert_eq!(first["username"], "influencer-3");
    assert_eq!(first["from"]["time"], hour_ago - 40);
    assert_eq!(first["from"]["follower_count"], 5_000);
    assert_eq!(first["to"]["time"], now - 40);
    assert_eq!(first["to"]["follower_count"], 5_900);
    assert_eq!(first["percent"], 18.0);
    let as_of = chrono::DateTime::parse_from_rfc3339(answer["as_of"].as_str().unwrap()).unwrap();
    assert!((as_of.timestamp() - now).abs() <= 5, "{answer}");

    let (_, _, answer) = api
        .get("/influencer_analytics/movers?window=1h&min_followers=0&by=percent")
        .await;
    assert_eq!(rows(&answer), vec![(4, 1_000.0), (3, 900.0), (1, 400.0)]);
    assert_eq!(answer["movers"][0]["percent"], 200.0);
    let (_, _, answer) = api
        .get("/influencer_analytics/movers?window=1h&direction=losers")
        .await;
    assert_eq!(rows(&answer), vec![(2, -1_500.0)]);
    let (_, _, answer) = api
        .get("/influencer_analytics/movers?window=1h&metric=following&direction=gainers")
        .await;
    assert_eq!(rows(&answer), vec![(2, 20.0)]);

    // Pages of one, each from the previous page's cursor.
    let mut seen = Vec::new();
    let mut path = "/influencer_analytics/movers?window=1h&min_followers=0&limit=1".to_string();
    loop {
        let (status, _, page) = api.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(rows(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                path = format!(
                    "/influencer_analytics/movers?window=1h&min_followers=0&limit=1&cursor={cursor}"
                )
            }
            None => break,
        }
    }
    assert_eq!(seen, vec![(4, 1_000.0), (3, 900.0), (1, 400.0)]);

    // Within a watchlist: only its members, and they are what is counted (5 is stale).
    sqlx::query("insert into watchlists (name) values ('rivals')")
        .execute(&api.db.pool)
        .await
        .unwrap();
    sqlx::query("insert into watchlist_members (watchlist, influencer_id) values ('rivals', 2), ('rivals', 4), ('rivals', 5)")
        .execute(&api.db.pool)
        .await
        .unwrap();
    let (status, _, answer) = api
        .get("/influencer_analytics/movers?window=1h&min_followers=0&watchlist=rivals")
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(rows(&answer), vec![(4, 1_000.0)]);
    assert_eq!(
        (&answer["compared"], &answer["stale"]),
        (&2.into(), &1.into()),
        "{answer}"
    );
    let (_, _, answer) = api
        .get("/influencer_analytics/movers?window=1h&direction=losers&watchlist=rivals")
        .await;
    assert_eq!(rows(&answer), vec![(2, -1_500.0)]);
    let (status, _, answer) = api
        .get("/influencer_analytics/movers?window=1h&watchlist=nobody")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    let (status, _, answer) = api
        .get("/influencer_analytics/movers?window=1h&watchlist=no%20such")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");

    // No mark a day old yet.
    let (status, _, answer) = api.get("/influencer_analytics/movers?window=24h").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert!(
        answer["detail"].as_str().unwrap().contains("24h"),
        "{answer}"
    );
    for (query, title) in [
        (
            "window=1h&start_day=2026-12-01&end_day=2026-12-02",
            "Invalid day range",
        ),
        (
            "start_day=2026-12-02&end_day=2026-12-01",
            "Invalid day range",
        ),
        ("start_day=2026-12-02", "Invalid day range"),
        ("window=2h", "Invalid query parameter"),
        ("metric=likes", "Invalid query parameter"),
        ("start_day=2026-13-01&end_day=2026-12-01", "Invalid day"),
        ("cursor=abc", "Invalid cursor"),
    ] {
        let (status, _, answer) = api
            .get(&format!("/influencer_analytics/movers?{query}"))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {answer}");
        assert_eq!(answer["title"], title, "{query}: {answer}");
    }
}

#[tokio::test]
async fn movers_between_days_and_over_a_week_start_at_the_day_closes_compaction_writes() {
    let api = TestApi::start().await;
    let now_ms = Utc::now().timestamp_millis();
    // Two closed days that compaction merges now, and the day a 7-day window starts after.
    let d2 = compaction::latest_settled_day_ms(now_ms);
    let d1 = d2 - DAY_MS;
    let week = {
        let edge = now_ms - 7 * DAY_MS;
        edge.div_euclid(DAY_MS) * DAY_MS - DAY_MS
    };
    let mut last: std::collections::HashMap<(i64, i64), (i32, i32, i64)> = Default::default();
    for id in 1..=5_i64 {
        api.register(id).await;
        for day in [week, d1, d2] {
            // Points through the day, the last at 23:59:10 for most (stale for 5 on d1).
            let last_minute = if id == 5 && day == d1 { 1_000 } else { 1_439 };
            for minute in [0, 700, last_minute] {
                let slot_ms = day + minute * 60_000 + 10_000;
                let followers =
                    10_000 * id as i32 + (day / DAY_MS - 20_000) as i32 * id as i32 + minute as i32;
                api.point_at_ms(id, slot_ms, followers, 100 + id as i32)
                    .await;
                last.insert((id, day), (followers, 100 + id as i32, slot_ms));
            }
        }
    }
    // A late point after 1's last of d2 (a re-fetch that reached the sink late): the close.
    sqlx::query(
        "insert into late_points (influencer_id, slot, fetched_at, follower_count, following_count)
         values (1, to_timestamp($1 / 1000.0), now(), 1, 999)",
    )
    .bind(d2 + DAY_MS - 20_000)
    .execute(&api.db.pool)
    .await
    .unwrap();
    last.insert((1, d2), (1, 999, d2 + DAY_MS - 20_000));
    compaction::run(&api.db.pool, Budget::FULL, &mut |_| {})
        .await
        .unwrap();
    let stored: i64 = sqlx::query_scalar("select count(*) from influencer_day_closes")
        .fetch_one(&api.db.pool)
        .await
        .unwrap();
    assert_eq!(stored, 3, "a row a day (one batch each)");

    let day_name = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .format("%Y-%m-%d")
            .to_string()
    };
    let path = format!(
        "/influencer_analytics/movers?start_day={}&end_day={}&min_followers=0&direction=losers",
        day_name(d1),
        day_name(d2)
    );
    let (status, _, answer) = api.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // 5's close of d1 is hours before the day's end: stale.
    assert_eq!(
        (answer["compared"].clone(), answer["stale"].clone()),
        (4.into(), 1.into())
    );
    let expected_change = |id: i64| f64::from(last[&(id, d2)].0 - last[&(id, d1)].0);
    assert_eq!(rows(&answer), vec![(1, expected_change(1))], "{answer}");
    let mover = &answer["movers"][0];
    assert_eq!(mover["to"]["following_count"], 999);
    assert_eq!(mover["to"]["time"], (d2 + DAY_MS - 20_000) / 1000);
    assert_eq!(mover["from"]["time"], last[&(1, d1)].2 / 1000);
    assert_eq!(answer["start_day"], day_name(d1));
    let gainers = path.replace("losers", "gainers");
    let (_, _, answer) = api.get(&gainers).await;
    let mut expected: Vec<(i64, f64)> = (2..=4).map(|id| (id, expected_change(id))).collect();
    expected.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    assert_eq!(rows(&answer), expected, "{answer}");

    // A day never merged has no closes.
    let (status, _, answer) = api
        .get("/influencer_analytics/movers?start_day=2001-01-01&end_day=2001-01-02")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("2001-01-01"));

    // A week ending now: from the close of the day before the window's start to the mark.
    for id in 1..=5 {
        sqlx::query(
            "insert into influencer_latest (influencer_id, slot, fetched_at, follower_count, following_count)
             values ($1, now() - interval '10 s', now(), $2, 1)",
        )
        .bind(id)
        .bind(1_000_000 - id)
        .execute(&api.db.pool)
        .await
        .unwrap();
    }
    movers::mark_now(&api.db.pool).await.unwrap();
    let (status, _, answer) = api
        .get("/influencer_analytics/movers?window=7d&limit=2")
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let from_as_of =
        chrono::DateTime::parse_from_rfc3339(answer["from_as_of"].as_str().unwrap()).unwrap();
    assert_eq!(from_as_of.timestamp_millis(), week + DAY_MS);
    let change = |id: i64| f64::from(1_000_000 - id as i32 - last[&(id, week)].0);
    assert_eq!(rows(&answer), vec![(1, change(1)), (2, change(2))]);
    assert!(answer["next_cursor"].is_string());
}
