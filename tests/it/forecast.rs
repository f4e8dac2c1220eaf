//! `/influencer_analytics/{id}/forecast` against the stored points: the walk's drift and spread
//! are those of the daily closes the read path gives (hot tier and late points), the band and
//! the milestone follow from them.

use chrono::Utc;
use influencer_analytics::series::DAY_MS;
use reqwest::StatusCode;

use crate::api::TestApi;

/// Stores `closes[i]` as day `first + i`'s close (with an earlier point that day) and sets the
/// latest value.
async fn store_days(api: &TestApi, id: i64, first_ms: i64, closes: &[i32], latest: i32) {
    api.register(id).await;
    for (i, &close) in closes.iter().enumerate() {
        let day = first_ms + i as i64 * DAY_MS;
        api.point_at_ms(id, day + 3_600_000 + 20_000, close - 7_777, 100)
            .await;
        api.point_at_ms(id, day + 23 * 3_600_000 + 20_000, close, 100)
            .await;
    }
    sqlx::query(
        "insert into influencer_latest (influencer_id, slot, fetched_at, follower_count, following_count)
         values ($1, now() - interval '30 s', now(), $2, 100)",
    )
    .bind(id)
    .bind(latest)
    .execute(&api.db.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_forecast_follows_the_drift_and_spread_of_the_stored_daily_closes() {
    let api = TestApi::start().await;
    let today = Utc::now().timestamp_millis().div_euclid(DAY_MS) * DAY_MS;
    let first = today - 20 * DAY_MS;
    let closes: Vec<i32> = (0..20)
        .map(|i| 480_000 + 1_000 * i + (i % 3) * 700)
        .collect();
    store_days(&api, 1, first, &closes, 499_500).await;
    // A late point after day 10's close (a re-fetch that reached the sink late): the close.
    let mut closes = closes;
    sqlx::query(
        "insert into late_points (influencer_id, slot, fetched_at, follower_count, following_count)
         values (1, to_timestamp($1 / 1000.0), now(), $2, 100)",
    )
    .bind(first + 10 * DAY_MS + 23 * 3_600_000 + 1_800_000)
    .bind(closes[10] + 5_000)
    .execute(&api.db.pool)
    .await
    .unwrap();
    closes[10] += 5_000;

    let (status, _, answer) = api.get("/influencer_analytics/1/forecast?horizon=7d").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let changes: Vec<f64> = closes.windows(2).map(|w| f64::from(w[1] - w[0])).collect();
    let n = changes.len() as f64;
    let drift = changes.iter().sum::<f64>() / n;
    let sd = (changes.iter().map(|c| (c - drift).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    assert_eq!(answer["changes"], 19);
    assert!((answer["daily_drift"].as_f64().unwrap() - drift).abs() < 0.01);
    assert!((answer["daily_sd"].as_f64().unwrap() - sd).abs() < 0.01);
    assert_eq!(answer["from_followers"], 499_500);
    let expected = 499_500.0 + drift * 7.0;
    let spread = sd * (7.0 + 49.0 / n).sqrt();
    let at = &answer["at_horizon"];
    assert_eq!(at["expected"], expected.round() as i64, "{answer}");
    assert_eq!(
        at["interval_80"]["low"],
        (expected - 1.281_551_565_545 * spread).round() as i64
    );
    assert_eq!(
        at["interval_95"]["high"],
        (expected + 1.959_963_984_540 * spread).round() as i64
    );
    assert_eq!(
        at["time"].as_i64().unwrap() - answer["from_time"].as_i64().unwrap(),
        7 * 86_400
    );
    // 500,000 is a day or so away.
    let milestone = &answer["milestone"];
    assert_eq!(milestone["followers"], 500_000);
    assert_eq!(milestone["direction"], "up");
    assert_eq!(milestone["status"], "within the horizon");
    let day = |ahead: i64| {
        let from = answer["from_time"].as_i64().unwrap() * 1000;
        chrono::DateTime::from_timestamp_millis(from + ahead * DAY_MS)
            .unwrap()
            .format("%Y-%m-%d")
            .to_string()
    };
    let days_to = ((500_000.0 - 499_500.0) / drift).ceil() as i64;
    assert_eq!(milestone["expected_day"], day(days_to), "{answer}");
    assert!(answer["method"].as_str().unwrap().contains("random walk"));

    // Going down: the next milestone under the latest value, not within a week.
    let falling: Vec<i32> = (0..10).map(|i| 60_000 - 100 * i).collect();
    store_days(&api, 2, today - 10 * DAY_MS, &falling, 57_000).await;
    let (_, _, answer) = api.get("/influencer_analytics/2/forecast").await;
    assert_eq!(answer["horizon"], "30d");
    assert_eq!(answer["milestone"]["followers"], 50_000);
    assert_eq!(answer["milestone"]["direction"], "down");
    assert_eq!(answer["milestone"]["status"], "not within the horizon");
    assert_eq!(answer["milestone"]["expected_day"], serde_json::Value::Null);
}

#[tokio::test]
async fn a_forecast_needs_a_week_of_closes_and_a_known_horizon() {
    let api = TestApi::start().await;
    let today = Utc::now().timestamp_millis().div_euclid(DAY_MS) * DAY_MS;
    store_days(
        &api,
        3,
        today - 5 * DAY_MS,
        &[10_010, 10_020, 10_030, 10_040, 10_050],
        10_055,
    )
    .await;
    let (status, _, answer) = api.get("/influencer_analytics/3/forecast").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("5 closed days"));
    let (status, _, _) = api.get("/influencer_analytics/4/forecast").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, answer) = api.get("/influencer_analytics/3/forecast?horizon=5d").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
}
