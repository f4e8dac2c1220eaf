//! The query API against points the test inserts.

use std::time::Duration;

use influencer_analytics::api::{ApiState, error::Problem, router};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::TestDb;

struct TestApi {
    db: TestDb,
    base: String,
    client: reqwest::Client,
}

impl TestApi {
    async fn start() -> Self {
        let db = TestDb::new().await;
        let state = ApiState {
            pool: db.pool.clone(),
            interval: Duration::from_secs(60),
            amqp_url: None,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router(state)).await });
        Self {
            db,
            base,
            client: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> (StatusCode, String, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = response.text().await.unwrap();
        let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
        (status, content_type, value)
    }

    /// Asserts `path` answers `status` with the problem+json shape.
    async fn problem(&self, path: &str, status: StatusCode) -> Problem {
        let (got, content_type, body) = self.get(path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(content_type, "application/problem+json", "{path}");
        let problem: Problem = serde_json::from_value(body).unwrap();
        assert_eq!(problem.status, status.as_u16());
        assert!(!problem.detail.is_empty());
        problem
    }

    async fn register(&self, id: i64) {
        sqlx::query(
            "insert into influencers (influencer_id, username) values ($1, 'influencer-' || $1)",
        )
        .bind(id)
        .execute(&self.db.pool)
        .await
        .unwrap();
    }

    async fn point(&self, id: i64, epoch: i64, followers: i32, following: i32) {
        sqlx::query(
            "insert into influencer_metrics (influencer_id, slot, fetched_at, follower_count, following_count)
             values ($1, to_timestamp($2), to_timestamp($2) + interval '20 ms', $3, $4)",
        )
        .bind(id)
        .bind(epoch as f64)
        .bind(followers)
        .bind(following)
        .execute(&self.db.pool)
        .await
        .unwrap();
    }
}

const T0: i64 = 1_763_800_020; // a slot at :20 past a minute

#[tokio::test]
async fn a_range_answers_the_points_in_it_in_ascending_time() {
    let api = TestApi::start().await;
    api.register(1_000_001).await;
    for (i, (f, g)) in [(57_166, 1328), (57_300, 1330), (57_100, 1329), (58_000, 0)]
        .iter()
        .enumerate()
    {
        api.point(1_000_001, T0 + 60 * i as i64, *f, *g).await;
    }
    api.point(1_000_001, T0 + 3600, 1, 1).await; // outside the range
    let (status, _, body) = api
        .get(&format!(
            "/influencer_analytics/1000001?start_time={T0}&end_time={}",
            T0 + 180
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["influencer_id"], 1_000_001);
    assert_eq!(body["username"], "influencer-1000001");
    assert_eq!(body["start_time"], T0);
    assert_eq!(body["end_time"], T0 + 180);
    let points = body["points"].as_array().unwrap();
    assert_eq!(points.len(), 4, "both ends are inclusive");
    assert_eq!(
        points[0],
        serde_json::json!({"time": T0, "follower_count": 57166, "following_count": 1328, "follower_ratio": 43.05})
    );
    let times: Vec<i64> = points.iter().map(|p| p["time"].as_i64().unwrap()).collect();
    assert_eq!(times, [T0, T0 + 60, T0 + 120, T0 + 180]);
    assert_eq!(
        points[3]["follower_ratio"],
        Value::Null,
        "no ratio when following is 0"
    );
}

#[tokio::test]
async fn without_times_a_range_is_the_last_24_hours() {
    let api = TestApi::start().await;
    api.register(7).await;
    let now = chrono::Utc::now().timestamp();
    api.point(7, now - 2 * 86_400, 1, 1).await;
    api.point(7, now - 3600, 2, 1).await;
    let (status, _, body) = api.get("/influencer_analytics/7").await;
    assert_eq!(status, 200);
    let points = body["points"].as_array().unwrap();
    assert_eq!(points.len(), 1);
    assert_eq!(points[0]["follower_count"], 2);
    let span = body["end_time"].as_i64().unwrap() - body["start_time"].as_i64().unwrap();
    assert_eq!(span, 86_400);
}

#[tokio::test]
async fn buckets_agree_with_a_computation_over_the_same_points() {
    let api = TestApi::start().await;
    api.register(9).await;
    // 3 hours of minutes, with a pattern that makes min, max, last and avg all differ.
    let start = 1_763_798_400; // 08:00:00 UTC, an hour boundary
    let mut expected: Vec<Vec<(i32, i32)>> = vec![Vec::new(); 3];
    for minute in 0..180 {
        let followers = 100_000 + ((minute * 7919) % 1000) as i32;
        let following = 1000 + (minute % 13) as i32;
        api.point(9, start + 20 + 60 * minute, followers, following)
            .await;
        expected[(minute / 60) as usize].push((followers, following));
    }
    let (status, _, body) = api
        .get(&format!(
            "/influencer_analytics/9?start_time={start}&end_time={}&step=1h",
            start + 3 * 3600 - 1
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["step"], 3600);
    let buckets = body["points"].as_array().unwrap();
    assert_eq!(buckets.len(), 3);
    for (i, bucket) in buckets.iter().enumerate() {
        let points = &expected[i];
        assert_eq!(bucket["time"], start + 3600 * i as i64);
        assert_eq!(bucket["samples"], points.len());
        let followers: Vec<i32> = points.iter().map(|p| p.0).collect();
        let avg = followers.iter().map(|&f| f as f64).sum::<f64>() / followers.len() as f64;
        let f = &bucket["follower_count"];
        assert!((f["avg"].as_f64().unwrap() - avg).abs() < 1e-6);
        assert_eq!(f["min"], *followers.iter().min().unwrap());
        assert_eq!(f["max"], *followers.iter().max().unwrap());
        assert_eq!(f["last"], *followers.last().unwrap());
        let ratios: Vec<f64> = points.iter().map(|p| p.0 as f64 / p.1 as f64).collect();
        let r = &bucket["follower_ratio"];
        let ratio_avg = ratios.iter().sum::<f64>() / ratios.len() as f64;
        assert!((r["avg"].as_f64().unwrap() - ratio_avg).abs() < 1e-9);
        assert!((r["last"].as_f64().unwrap() - ratios.last().unwrap()).abs() < 1e-9);
        let g = &bucket["following_count"];
        assert_eq!(g["max"], points.iter().map(|p| p.1).max().unwrap());
    }
}

#[tokio::test]
async fn bad_requests_get_400_with_the_problem_shape() {
    let api = TestApi::start().await;
    api.register(1_000_001).await;
    let bad = [
        "/influencer_analytics/abc",
        "/influencer_analytics/-5",
        "/influencer_analytics/0",
        "/influencer_analytics/1.5",
        "/influencer_analytics/99999999999999999999999",
        "/influencer_analytics/1000001?start_time=2000&end_time=1000",
        "/influencer_analytics/1000001?start_time=1.5",
        "/influencer_analytics/1000001?start_time=abc",
        "/influencer_analytics/1000001?end_time=-1",
        "/influencer_analytics/1000001?end_time=99999999999999",
        "/influencer_analytics/1000001?step=7x",
        "/influencer_analytics/1000001?step=10",
        "/influencer_analytics/1000001?start=5",
        "/influencer_analytics/1000001?start_time=1&start_time=2",
        "/influencer_analytics/abc/latest",
        "/influencer_analytics/1000001/latest?x=1",
    ];
    for path in bad {
        api.problem(path, StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn a_range_too_large_for_one_answer_says_which_step_fits() {
    let api = TestApi::start().await;
    api.register(5).await;
    let problem = api
        .problem(
            &format!(
                "/influencer_analytics/5?start_time={}&end_time={T0}",
                T0 - 30 * 86_400
            ),
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert!(problem.detail.contains("step=5m"), "{}", problem.detail);
    let (status, _, _) = api
        .get(&format!(
            "/influencer_analytics/5?start_time={}&end_time={T0}&step=5m",
            T0 - 30 * 86_400
        ))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn unknown_influencers_and_routes_get_404_with_the_problem_shape() {
    let api = TestApi::start().await;
    let problem = api
        .problem("/influencer_analytics/424242", StatusCode::NOT_FOUND)
        .await;
    assert!(problem.detail.contains("424242"));
    api.problem("/influencer_analytics/424242/latest", StatusCode::NOT_FOUND)
        .await;
    api.problem("/no/such/thing", StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn latest_shows_counts_and_a_rank_that_agrees_with_brute_force() {
    let api = TestApi::start().await;
    let followers = [500, 900, 100, 900, 50_000, 7];
    for (i, f) in followers.iter().enumerate() {
        let id = 100 + i as i64;
        api.register(id).await;
        sqlx::query(
            "insert into influencer_latest (influencer_id, slot, fetched_at, follower_count, following_count)
             values ($1, to_timestamp($2), to_timestamp($2), $3, 100)",
        )
        .bind(id)
        .bind(T0 as f64)
        .bind(*f)
        .execute(&api.db.pool)
        .await
        .unwrap();
    }
    influencer_analytics::sink::writer::refresh_ranking(&api.db.pool)
        .await
        .unwrap();
    for (i, f) in followers.iter().enumerate() {
        let id = 100 + i as i64;
        let (status, _, body) = api.get(&format!("/influencer_analytics/{id}/latest")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["follower_count"], *f);
        assert_eq!(body["time"], T0);
        let better = followers.iter().filter(|&&g| g > *f).count() as i64;
        let worse = followers.iter().filter(|&&g| g < *f).count() as f64;
        assert_eq!(body["rank"]["rank"], better + 1, "influencer {id}");
        assert_eq!(body["rank"]["of"], 6);
        let percentile = (worse * 100.0 / 6.0 * 100.0).round() / 100.0;
        assert_eq!(body["rank"]["percentile"].as_f64().unwrap(), percentile);
        assert!(body["rank"]["ranked_at"].is_string());
        assert_eq!(
            body["follower_ratio"].as_f64().unwrap(),
            (*f as f64 / 100.0 * 100.0).round() / 100.0
        );
    }
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let api = TestApi::start().await;
    let (status, _, _) = api.get("/healthz").await;
    assert_eq!(status, 200);
    let (status, _, _) = api.get("/readyz").await;
    assert_eq!(status, 200);
    let (status, _, _) = api.get("/metrics").await;
    assert_eq!(status, 200);
}
