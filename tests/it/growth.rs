//! `/influencer_analytics/{id}/growth` against points stored in every tier: compacted hours
//! and days, raw minutes, and late points.

use chrono::{TimeZone, Utc};
use influencer_analytics::jobs::compaction::{self, Budget};
use reqwest::StatusCode;

use crate::api::TestApi;

const DAY: i64 = 86_400;

/// What the stored points say, computed here: the last point at or before `at` and not more
/// than a day before it.
fn last_at_or_before(points: &[(i64, i32, i32)], at: i64) -> Option<(i64, i32, i32)> {
    points
        .iter()
        .filter(|p| p.0 <= at && p.0 >= at - DAY)
        .max_by_key(|p| p.0)
        .copied()
}

#[tokio::test]
async fn growth_windows_and_daily_gains_agree_with_the_points_in_every_tier() {
    let api = TestApi::start().await;
    let id = 31;
    api.register(id).await;
    let now = Utc::now().timestamp();
    let to = now - now % 60 - 60 + 20; // last minute's slot, at :20
    let today = now - now.rem_euclid(DAY);
    let mut points: Vec<(i64, i32, i32)> = Vec::new();
    // Three points a day over the twelve days before today, growing day by day, at :25 past
    // a minute (so that none falls in the second before a window's start, at :19).
    for d in 1..=12_i64 {
        for (k, offset) in [25, 43_225, 86_365].into_iter().enumerate() {
            let followers = 100_000 + (12 - d as i32) * 1_000 + k as i32 * 10;
            points.push((today - d * DAY + offset, followers, 500 + d as i32));
        }
    }
    // A point a second before the start of each window but 24 h (ten minutes before: a late
    // point comes nearer) and 30 d (none in the day before it).
    for (n, seconds) in [3_600, DAY, 7 * DAY, 90 * DAY, 365 * DAY]
        .into_iter()
        .enumerate()
    {
        let before = if seconds == DAY { 600 } else { 1 };
        points.push((
            to - seconds - before,
            90_000 - 1_000 * n as i32,
            400 + n as i32,
        ));
    }
    // The last minutes, raw.
    for (n, at) in [to - 120, to - 60, to].into_iter().enumerate() {
        points.push((at, 120_000 + n as i32 * 7, 510));
    }
    for &(at, followers, following) in &points {
        api.point(id, at, followers, following).await;
    }
    // Closed hours and days into segments; the current hour stays raw.
    compaction::run(&api.db.pool, Budget::FULL, &mut |_| {})
        .await
        .unwrap();
    // Late points: a re-fetch of a stored slot (the first stored answer stays) and a slot of
    // its own, nearer the 24 h window's start than the point before it.
    for (at, followers) in [(to - 7 * DAY - 1, 1), (to - DAY - 1, 77_777)] {
        sqlx::query(
            "insert into late_points (influencer_id, slot, fetched_at, follower_count, following_count)
             values ($1, to_timestamp($2), now(), $3, 450)",
        )
        .bind(id)
        .bind(at as f64)
        .bind(followers)
        .execute(&api.db.pool)
        .await
        .unwrap();
    }
    points.push((to - DAY - 1, 77_777, 450));
    sqlx::query(
        "insert into influencer_latest (influencer_id, slot, fetched_at, follower_count, following_count)
         values ($1, to_timestamp($2), to_timestamp($2), $3, 510)",
    )
    .bind(id)
    .bind(to as f64)
    .bind(120_014)
    .execute(&api.db.pool)
    .await
    .unwrap();

    let (status, _, body) = api
        .get(&format!("/influencer_analytics/{id}/growth?days=10"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["latest"]["time"], to);
    assert_eq!(body["latest"]["follower_count"], 120_014);
    let windows = body["windows"].as_array().unwrap();
    let names: Vec<&str> = windows
        .iter()
        .map(|w| w["window"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["1h", "24h", "7d", "90d", "365d"], "{body}");
    for w in windows {
        let seconds = w["seconds"].as_i64().unwrap();
        let from = last_at_or_before(&points, to - seconds).unwrap();
        assert_eq!(w["from"]["time"], from.0, "{w}");
        assert_eq!(w["from"]["follower_count"], from.1, "{w}");
        assert_eq!(w["from"]["following_count"], from.2, "{w}");
        assert_eq!(w["followers"]["change"], 120_014 - i64::from(from.1), "{w}");
        assert_eq!(w["following"]["change"], 510 - i64::from(from.2), "{w}");
        let percent = (120_014 - i64::from(from.1)) as f64 * 100.0 / f64::from(from.1);
        assert!((w["followers"]["percent"].as_f64().unwrap() - percent).abs() < 0.006);
    }
    assert_eq!(
        windows[1]["from"]["follower_count"], 77_777,
        "the late point"
    );
    assert_eq!(
        windows[2]["from"]["follower_count"], 88_000,
        "the first answer"
    );

    // Each of the last ten UTC days' close, and its change from the day before's.
    let close = |day: i64| {
        points
            .iter()
            .filter(|p| p.0 >= day && p.0 < day + DAY)
            .max_by_key(|p| p.0)
            .copied()
    };
    let days = body["days"].as_array().unwrap();
    let expected: Vec<i64> = (0..10)
        .map(|n| today - (9 - n) * DAY)
        .filter(|&day| close(day).is_some())
        .collect();
    assert_eq!(days.len(), expected.len(), "{body}");
    for (row, &day) in days.iter().zip(&expected) {
        let (_, followers, following) = close(day).unwrap();
        let date = Utc
            .timestamp_opt(day, 0)
            .unwrap()
            .format("%Y-%m-%d")
            .to_string();
        assert_eq!(row["day"], date);
        assert_eq!(row["closed"], day < today);
        assert_eq!(row["follower_count"], followers, "{row}");
        assert_eq!(row["following_count"], following, "{row}");
        let before = close(day - DAY).map(|p| i64::from(followers) - i64::from(p.1));
        assert_eq!(row["follower_change"].as_i64(), before, "{row}");
    }
}

#[tokio::test]
async fn growth_without_points_is_empty_and_bad_requests_are_refused() {
    let api = TestApi::start().await;
    api.register(5).await;
    let (status, _, body) = api.get("/influencer_analytics/5/growth").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["latest"].is_null());
    assert_eq!(body["windows"], serde_json::json!([]));
    assert_eq!(body["days"], serde_json::json!([]));
    for path in [
        "/influencer_analytics/5/growth?days=0",
        "/influencer_analytics/5/growth?days=401",
        "/influencer_analytics/5/growth?days=x",
        "/influencer_analytics/5/growth?window=1h",
    ] {
        let (status, _, body) = api.get(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
    }
    let (status, _, _) = api.get("/influencer_analytics/6/growth").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
