//! `/influencer_analytics/compare` against points stored in both tiers.

use influencer_analytics::jobs::compaction::{self, Budget};
use reqwest::StatusCode;

use crate::api::TestApi;

const START: i64 = 1_763_798_400; // 08:00:00 UTC, an hour boundary

#[tokio::test]
async fn compared_series_share_buckets_and_agree_with_the_points() {
    let api = TestApi::start().await;
    // (id, minutes with a point in each of three hours): 12 has no point in the second hour.
    let plan: [(i64, [i64; 3]); 3] = [(11, [60, 60, 60]), (12, [30, 0, 45]), (13, [5, 5, 5])];
    // Each hour's last followers and following, per influencer (None: no point that hour).
    let mut closes = vec![Vec::new(); plan.len()];
    for (id, _) in plan {
        api.register(id).await;
    }
    for hour in 0..3 {
        if hour == 2 {
            // The first two hours into segments; the third stays raw.
            compaction::run(&api.db.pool, Budget::FULL, &mut |_| {})
                .await
                .unwrap();
        }
        for (n, (id, minutes)) in plan.iter().enumerate() {
            let mut last = None;
            for minute in 0..minutes[hour] {
                let at = START + hour as i64 * 3600 + minute * 60 + 20;
                let followers = (id * 1_000 + hour as i64 * 100 + minute) as i32;
                let following = 50 + (*id as i32 % 3) * (hour as i32);
                api.point(*id, at, followers, following).await;
                last = Some((followers, following));
            }
            closes[n].push(last);
        }
    }

    let end = START + 3 * 3600 - 1;
    let path = format!(
        "/influencer_analytics/compare?ids=11,12,13,12&start_time={START}&end_time={end}&step=1h"
    );
    let (status, _, body) = api.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["step"], 3600);
    assert_eq!(
        body["times"],
        serde_json::json!([START, START + 3600, START + 7200])
    );
    let series = body["series"].as_array().unwrap();
    let ids: Vec<i64> = series
        .iter()
        .map(|s| s["influencer_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [11, 12, 13], "an id given twice counts once");
    for (s, own) in series.iter().zip(&closes) {
        assert_eq!(s["username"], format!("influencer-{}", s["influencer_id"]));
        for (hour, close) in own.iter().enumerate() {
            let followers = s["follower_count"][hour].as_f64();
            let following = s["following_count"][hour].as_f64();
            assert_eq!(followers, close.map(|c| f64::from(c.0)), "{s}");
            assert_eq!(following, close.map(|c| f64::from(c.1)), "{s}");
            let ratio = close.map(|c| (f64::from(c.0) / f64::from(c.1) * 100.0).round() / 100.0);
            assert_eq!(s["follower_ratio"][hour].as_f64(), ratio, "{s}");
        }
    }

    // In percent of each one's first bucket.
    let (status, _, body) = api.get(&format!("{path}&normalize=percent")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["normalize"], "percent");
    for (s, own) in body["series"].as_array().unwrap().iter().zip(&closes) {
        let first = f64::from(own[0].unwrap().0);
        for (hour, close) in own.iter().enumerate() {
            let expected =
                close.map(|c| ((f64::from(c.0) - first) * 10_000.0 / first).round() / 100.0);
            assert_eq!(s["follower_count"][hour].as_f64(), expected, "{s}");
        }
        assert_eq!(s["follower_count"][0], 0.0);
    }
}

#[tokio::test]
async fn a_comparison_names_unknown_ids_and_refuses_too_many() {
    let api = TestApi::start().await;
    api.register(1).await;
    let (status, _, body) = api.get("/influencer_analytics/compare?ids=1,777,778").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("777, 778"),
        "{body}"
    );
    let many: Vec<String> = (1..=21).map(|i| i.to_string()).collect();
    let (status, _, body) = api
        .get(&format!(
            "/influencer_analytics/compare?ids={}",
            many.join(",")
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["title"], "Invalid ids");
    for bad in ["ids=1&normalize=log", "ids=", "step=1h"] {
        let (status, _, body) = api
            .get(&format!("/influencer_analytics/compare?{bad}"))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    // Without a step: the smallest usual one within 1,000 buckets (a day: 5 minutes).
    let (status, _, body) = api.get("/influencer_analytics/compare?ids=1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["step"], 300);
    assert_eq!(body["times"], serde_json::json!([]));
}
