//! The query API against points the test inserts.

use std::time::Duration;

use influencer_analytics::{
    api::{ApiState, error::Problem},
    config::{ApiKey, ApiSettings, CorsOrigin, ServiceUrl},
    roles::Roles,
};
use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use influencer_analytics::testing::TestDb;

/// The API served as `serve` serves it (its role, on port 0), over a database of its own.
pub(crate) struct TestApi {
    pub(crate) db: TestDb,
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    _roles: Roles,
}

impl TestApi {
    pub(crate) async fn start() -> Self {
        Self::polled_every(Duration::from_secs(60)).await
    }

    /// The API of a pipeline that polls every `interval`.
    async fn polled_every(interval: Duration) -> Self {
        let db = TestDb::new().await;
        let state = ApiState::new(db.pool.clone(), interval);
        Self::serving(db, state).await
    }

    /// The API guarded and bounded as `settings` say, its pool as `serve` opens it.
    async fn limited(settings: ApiSettings) -> Self {
        let db = TestDb::new().await;
        let pool =
            influencer_analytics::db::open_api_pool(&db.settings, settings.api_statement_timeout)
                .await
                .unwrap();
        let state = ApiState::new(pool, Duration::from_secs(60)).with_limits(settings);
        Self::serving(db, state).await
    }

    pub(crate) async fn serving(db: TestDb, state: ApiState) -> Self {
        let mut roles = Roles::new(CancellationToken::new());
        let addr = roles
            .serve_api(state, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        Self {
            db,
            base: format!("http://{addr}"),
            client: influencer_analytics::tls::http_client(),
            _roles: roles,
        }
    }

    pub(crate) async fn get(&self, path: &str) -> (StatusCode, String, Value) {
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

    pub(crate) async fn register(&self, id: i64) {
        sqlx::query(
            "insert into influencers (influencer_id, username) values ($1, 'influencer-' || $1)",
        )
        .bind(id)
        .execute(&self.db.pool)
        .await
        .unwrap();
    }

    /// Registers `id` with latest counts at epoch `time`.
    pub(crate) async fn influencer_with_latest(
        &self,
        id: i64,
        time: i64,
        followers: i32,
        following: i32,
    ) {
        self.register(id).await;
        sqlx::query(
            "insert into influencer_latest (influencer_id, slot, fetched_at, follower_count, following_count)
             values ($1, to_timestamp($2), to_timestamp($2), $3, $4)",
        )
        .bind(id)
        .bind(time as f64)
        .bind(followers)
        .bind(following)
        .execute(&self.db.pool)
        .await
        .unwrap();
    }

    pub(crate) async fn point(&self, id: i64, epoch: i64, followers: i32, following: i32) {
        self.point_at_ms(id, epoch * 1000, followers, following)
            .await;
    }

    /// A point at a slot of epoch milliseconds (a real slot's offset within its second).
    pub(crate) async fn point_at_ms(&self, id: i64, slot_ms: i64, followers: i32, following: i32) {
        sqlx::query(
            "insert into influencer_metrics (influencer_id, slot, fetched_at, follower_count, following_count)
             values ($1, to_timestamp($2 / 1000.0), to_timestamp($2 / 1000.0) + interval '20 ms', $3, $4)",
        )
        .bind(id)
        .bind(slot_ms)
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
    sqlx::query(
        "insert into tracking_periods (influencer_id, expected_from) values (1000001, to_timestamp($1))",
    )
    .bind((T0 - 3600) as f64)
    .execute(&api.db.pool)
    .await
    .unwrap();
    // The slots the schedule gives this influencer: a millisecond offset within the minute.
    let grid = influencer_analytics::schedule::SlotGrid::new(Duration::from_secs(60));
    let slot0 = grid.slot_at_or_after(1_000_001, T0 * 1000);
    assert_ne!(
        slot0 % 1000,
        0,
        "a slot of the real grid, not a whole second"
    );
    for (i, (f, g)) in [(57_166, 1328), (57_300, 1330), (57_100, 1329), (58_000, 0)]
        .iter()
        .enumerate()
    {
        api.point_at_ms(1_000_001, slot0 + 60_000 * i as i64, *f, *g)
            .await;
    }
    api.point_at_ms(1_000_001, slot0 + 3_600_000, 1, 1).await; // outside the range
    let t0 = slot0.div_euclid(1000);
    let (status, _, body) = api
        .get(&format!(
            "/influencer_analytics/1000001?start_time={t0}&end_time={}",
            t0 + 180
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["influencer_id"], 1_000_001);
    assert_eq!(body["username"], "influencer-1000001");
    assert_eq!(body["start_time"], t0);
    assert_eq!(body["end_time"], t0 + 180);
    let points = body["points"].as_array().unwrap();
    assert_eq!(points.len(), 4, "both ends are inclusive: {body}");
    assert_eq!(
        points[0],
        serde_json::json!({"time": t0, "follower_count": 57166, "following_count": 1328, "follower_ratio": 43.05})
    );
    let times: Vec<i64> = points.iter().map(|p| p["time"].as_i64().unwrap()).collect();
    assert_eq!(times, [t0, t0 + 60, t0 + 120, t0 + 180]);
    // One rule for every reader: the range of the one second a point's time shows holds it,
    // raw, in a bucket, and in /gaps.
    let last = t0 + 180;
    let one = format!("start_time={last}&end_time={last}");
    let (_, _, raw) = api
        .get(&format!("/influencer_analytics/1000001?{one}"))
        .await;
    assert_eq!(raw["points"].as_array().unwrap().len(), 1, "{raw}");
    assert_eq!(raw["points"][0]["time"], last);
    let (_, _, bucket) = api
        .get(&format!("/influencer_analytics/1000001?{one}&step=60"))
        .await;
    assert_eq!(bucket["points"][0]["samples"], 1, "{bucket}");
    let (_, _, gaps) = api
        .get(&format!("/influencer_analytics/1000001/gaps?{one}"))
        .await;
    assert_eq!(gaps["stored"], 1, "{gaps}");
    assert_eq!(
        points[3]["follower_ratio"],
        Value::Null,
        "no ratio when following is 0"
    );
}

#[tokio::test]
async fn the_range_and_latest_agree_on_a_ratio_that_ends_in_half_a_hundredth() {
    // 23 / 40 = 0.575 exactly: 0.58 rounded half away from zero, 0.57 had /latest divided in
    // floating point (0.57499…) while the range rounded a numeric.
    let api = TestApi::start().await;
    api.influencer_with_latest(1_000_009, T0, 23, 40).await;
    api.point(1_000_009, T0, 23, 40).await;
    let (status, _, range) = api
        .get(&format!(
            "/influencer_analytics/1000009?start_time={T0}&end_time={T0}"
        ))
        .await;
    assert_eq!(status, 200, "{range}");
    assert_eq!(range["points"][0]["follower_ratio"], 0.58);
    let (status, _, latest) = api.get("/influencer_analytics/1000009/latest").await;
    assert_eq!(status, 200, "{latest}");
    assert_eq!(latest["follower_ratio"], 0.58);
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
        api.influencer_with_latest(id, T0, *f, 100).await;
    }
    influencer_analytics::jobs::ranking::refresh(&api.db.pool)
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

/// Issue 37, item 12: the ranking is one snapshot a minute that each API process reads once;
/// a newer one is read at the next request, and an influencer untracked since leaves it.
#[tokio::test]
async fn the_api_answers_from_the_newest_ranking_stored() {
    let api = TestApi::start().await;
    for (id, followers) in [(1_i64, 100), (2, 200), (3, 300)] {
        api.influencer_with_latest(id, T0, followers, 10).await;
    }
    let rank = || async {
        influencer_analytics::jobs::ranking::refresh(&api.db.pool)
            .await
            .unwrap();
        let (_, _, body) = api.get("/influencer_analytics/1/latest").await;
        let (_, _, top) = api.get("/influencer_analytics/top?limit=10").await;
        let order: Vec<i64> = top["influencers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["influencer_id"].as_i64().unwrap())
            .collect();
        (
            body["rank"]["rank"].as_i64(),
            body["rank"]["of"].as_i64(),
            order,
        )
    };
    assert_eq!(rank().await, (Some(3), Some(3), vec![3, 2, 1]));
    // 1 overtakes everyone, 3 is untracked.
    sqlx::query("update influencer_latest set follower_count = 1000 where influencer_id = 1")
        .execute(&api.db.pool)
        .await
        .unwrap();
    sqlx::query(
        "update influencers set tracked = false, untracked_reason = 'test' where influencer_id = 3",
    )
    .execute(&api.db.pool)
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(rank().await, (Some(1), Some(2), vec![1, 2]));
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

#[tokio::test]
async fn readiness_fails_naming_the_dependency_that_cannot_be_reached_and_health_names_the_roles() {
    let db = TestDb::new().await;
    // A port nothing listens on: the broker is "down".
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let broker = ServiceUrl::parse(
        &format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        &["amqp"],
    )
    .unwrap();
    let mut roles = Roles::new(CancellationToken::new());
    let state = ApiState::new(db.pool.clone(), Duration::from_secs(60)).with_broker(broker);
    let addr = roles
        .serve_api(state, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = influencer_analytics::tls::http_client();
    let ready = client
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let problem: Problem = ready.json().await.unwrap();
    assert!(problem.detail.contains("broker"), "{}", problem.detail);
    assert!(!problem.detail.contains("database"), "{}", problem.detail);
    let health: Value = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        health["status"], "ok",
        "liveness does not depend on the broker"
    );
    assert_eq!(health["roles"]["serve"]["state"], "running", "{health}");
}

#[tokio::test]
async fn the_average_series_and_its_current_value_agree_with_the_stored_minutes() {
    let api = TestApi::start().await;
    let start = 1_763_798_400;
    // Four minutes; the influencer count changes, so a bucket's average is weighted.
    let minutes = [(100.0, 10), (200.0, 30), (300.0, 10), (1000.0, 50)];
    for (i, (avg, n)) in minutes.iter().enumerate() {
        sqlx::query("insert into average_followers values (to_timestamp($1), $2, $3)")
            .bind((start + 60 * i as i64) as f64)
            .bind(avg)
            .bind(*n as i64)
            .execute(&api.db.pool)
            .await
            .unwrap();
    }
    let range = format!("start_time={start}&end_time={}", start + 239);
    let (status, _, body) = api
        .get(&format!("/influencer_analytics/average?{range}"))
        .await;
    assert_eq!(status, 200, "{body}");
    let points = body["points"].as_array().unwrap();
    assert_eq!(points.len(), 4);
    let times: Vec<i64> = points.iter().map(|p| p["time"].as_i64().unwrap()).collect();
    assert_eq!(times, [start, start + 60, start + 120, start + 180]);
    assert_eq!(points[1]["avg_follower_count"], 200.0);
    assert_eq!(points[1]["influencers"], 30);
    assert_eq!(body["current"]["avg_follower_count"], 1000.0);
    assert_eq!(body["current"]["influencers"], 50);
    assert_eq!(body["current"]["time"], start + 180);

    let (_, _, body) = api
        .get(&format!("/influencer_analytics/average?{range}&step=5m"))
        .await;
    let buckets = body["points"].as_array().unwrap();
    assert_eq!(buckets.len(), 1);
    assert_eq!(buckets[0]["time"], start);
    assert_eq!(buckets[0]["influencers"], 50);
    let weighted = (100.0 * 10.0 + 200.0 * 30.0 + 300.0 * 10.0 + 1000.0 * 50.0) / 100.0;
    assert!((buckets[0]["avg_follower_count"].as_f64().unwrap() - weighted).abs() < 1e-9);
    api.problem(
        "/influencer_analytics/average?step=1x",
        StatusCode::BAD_REQUEST,
    )
    .await;
    api.problem(
        "/influencer_analytics/average?start_time=9&end_time=1",
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[tokio::test]
async fn the_leaderboard_pages_through_every_ranked_influencer_in_order() {
    let api = TestApi::start().await;
    let followers: Vec<i32> = (0..25).map(|i| 1000 + (i * 37) % 11 * 100).collect();
    for (i, f) in followers.iter().enumerate() {
        let id = 500 + i as i64;
        api.influencer_with_latest(id, T0, *f, 10).await;
    }
    influencer_analytics::jobs::ranking::refresh(&api.db.pool)
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, _, body) = api
            .get(&format!("/influencer_analytics/top?limit=7{cursor}"))
            .await;
        assert_eq!(status, 200, "{body}");
        for r in body["influencers"].as_array().unwrap() {
            seen.push((
                r["follower_count"].as_i64().unwrap(),
                r["influencer_id"].as_i64().unwrap(),
            ));
        }
        match body["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    let mut expected: Vec<(i64, i64)> = followers
        .iter()
        .enumerate()
        .map(|(i, f)| (*f as i64, 500 + i as i64))
        .collect();
    expected.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    assert_eq!(
        seen, expected,
        "every influencer once, most followers first"
    );
    for bad in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "cursor=abc",
        "cursor=1",
        "cursor=1.2.3",
        "page=2",
    ] {
        api.problem(
            &format!("/influencer_analytics/top?{bad}"),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
}

#[tokio::test]
async fn the_suspicious_list_shows_who_is_flagged_and_by_which_classifier() {
    let api = TestApi::start().await;
    for id in [11, 12, 13, 14] {
        api.register(id).await;
    }
    let verdicts = [
        (11, "mockstagram", true),
        (11, "spike", true),
        (12, "mockstagram", false),
        (13, "spike", true),
        (14, "mockstagram", true),
    ];
    for (id, source, suspicious) in verdicts {
        let detail = match source {
            "spike" => {
                serde_json::json!({"z": 42.5, "from": 100_000, "to": 400_000, "at": 1_700_000_000})
            }
            _ => serde_json::json!({"follower_count": 500, "following_count": 100}),
        };
        sqlx::query("insert into current_verdicts values ($1, $2, $3, now(), $4)")
            .bind(id as i64)
            .bind(source)
            .bind(suspicious)
            .bind(detail)
            .execute(&api.db.pool)
            .await
            .unwrap();
    }
    let (status, _, body) = api.get("/influencer_analytics/suspicious?limit=2").await;
    assert_eq!(status, 200, "{body}");
    let page: Vec<(i64, Value)> = body["influencers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["influencer_id"].as_i64().unwrap(), s["sources"].clone()))
        .collect();
    assert_eq!(
        page,
        [
            (11, serde_json::json!(["mockstagram", "spike"])),
            (13, serde_json::json!(["spike"]))
        ]
    );
    let next = body["next_cursor"].as_str().unwrap();
    let (_, _, body) = api
        .get(&format!(
            "/influencer_analytics/suspicious?limit=2&cursor={next}"
        ))
        .await;
    let ids: Vec<i64> = body["influencers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["influencer_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [14]);
    assert!(body["next_cursor"].is_null());
    assert_eq!(
        body["influencers"][0]["reasons"],
        serde_json::json!({"mockstagram": {"follower_count": 500, "following_count": 100}})
    );
    let (_, _, first_page) = api.get("/influencer_analytics/suspicious?limit=1").await;
    assert_eq!(
        first_page["influencers"][0]["reasons"]["spike"]["z"], 42.5,
        "the list says why each source flagged it: {first_page}"
    );
    let (_, _, latest) = api.get("/influencer_analytics/11/latest").await;
    let verdicts = latest["suspicious"].as_array().unwrap();
    assert_eq!(verdicts.len(), 2);
    assert_eq!(verdicts[1]["source"], "spike");
    assert_eq!(verdicts[1]["detail"]["to"], 400_000, "{latest}");
}

#[tokio::test]
async fn the_openapi_document_lists_every_endpoint_and_the_docs_page_is_served() {
    let api = TestApi::start().await;
    let (status, _, doc) = api.get("/openapi.json").await;
    assert_eq!(status, 200);
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for path in [
        "/influencer_analytics/{id}",
        "/influencer_analytics/{id}/latest",
        "/influencer_analytics/average",
        "/influencer_analytics/top",
        "/influencer_analytics/suspicious",
        "/watchlists",
        "/watchlists/{name}",
        "/watchlists/{name}/members",
        "/watchlists/{name}/series",
        "/events",
        "/webhooks",
        "/webhooks/{id}",
        "/webhooks/{id}/enable",
        "/webhooks/{id}/deliveries",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(paths.contains(&path), "{path} missing from {paths:?}");
    }
    let params = &doc["paths"]["/influencer_analytics/{id}"]["get"]["parameters"];
    let names: Vec<&str> = params
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["id", "start_time", "end_time", "step", "format"]);
    let (status, content_type, _) = api.get("/docs/").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/html"), "{content_type}");
}

/// Schemathesis (PyPI; `scripts/test` installs it) generates requests from the OpenAPI document
/// and checks every answer against it: no 5xx, every answer in its documented shape, and no
/// request the document calls valid rejected (`tests/schemathesis/hooks.py`: only the two
/// documented rules that relate parameters to each other may answer 400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_the_openapi_document_calls_valid_is_accepted() {
    // `POST /influencers` schedules through a broker of the test's own.
    let queues = influencer_analytics::testing::TestBroker::new().await;
    let db = TestDb::new().await;
    let state = ApiState::new(db.pool.clone(), Duration::from_secs(60))
        .with_scheduler(queues.settings.clone());
    let api = TestApi::serving(db, state).await;
    for (i, id) in [1_i64, 2, 1_000_000].into_iter().enumerate() {
        api.influencer_with_latest(id, T0, 1000 + i as i32, 10)
            .await;
        api.point(id, T0 - 60, 990, 10).await;
    }
    influencer_analytics::jobs::ranking::refresh(&api.db.pool)
        .await
        .unwrap();
    let hooks = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis");
    let output = tokio::process::Command::new("schemathesis")
        .args(["run", &format!("{}/openapi.json", api.base)])
        .args(["--url", &api.base, "--checks", "all"])
        .args(["--exclude-checks", "positive_data_acceptance"])
        // Its stateful phase links `POST /influencers`' `ids` (an array) to `{id}`, and counts
        // `DELETE /influencers/{id}` as deleting a resource: it ends a stretch of tracking
        // and keeps the record, which `GET /influencers/{id}` goes on answering by design.
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "60", "--seed", "20261123", "--no-color"])
        .env("PYTHONPATH", hooks)
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .output()
        .await
        .expect("schemathesis is installed (scripts/test installs it: pip install schemathesis)");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found requests the API answers against its document:\n{report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("Tested: 32"), "{report}");
}

/// Issue 18: at a poll interval under 9 s the default day held more than 10,000 points and a
/// request without a range was a 400, even for an influencer never tracked.
#[tokio::test]
async fn a_range_without_times_always_answers_and_an_unknown_influencer_is_a_404() {
    let api = TestApi::polled_every(Duration::from_secs(2)).await;
    api.register(1_000_001).await;
    let now = chrono::Utc::now().timestamp();
    api.point(1_000_001, now - 10, 500, 10).await;
    let (status, _, body) = api.get("/influencer_analytics/1000001").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["points"].as_array().unwrap().len(), 1, "{body}");
    let span = body["end_time"].as_i64().unwrap() - body["start_time"].as_i64().unwrap();
    assert_eq!(span, 9_999 * 2, "as much of the day as one answer holds");
    api.problem("/influencer_analytics/424242", StatusCode::NOT_FOUND)
        .await;
}

/// The API keeps the names of registered influencers, never the absence of one: an
/// influencer registered after a 404 is answered at once, and a kept name is the registry's.
#[tokio::test]
async fn an_influencer_registered_after_a_404_is_answered_at_once() {
    let api = TestApi::start().await;
    let range = "/influencer_analytics/1000009?start_time=0&end_time=60";
    api.problem(range, StatusCode::NOT_FOUND).await;
    api.register(1_000_009).await;
    for _ in 0..2 {
        let (status, _, body) = api.get(range).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["username"], "influencer-1000009", "{body}");
    }
}

/// Issue 18: a rank cursor past i32 was truncated (`as i32`) and the list started again.
#[tokio::test]
async fn a_leaderboard_cursor_past_every_rank_is_an_empty_page() {
    let api = TestApi::start().await;
    for (i, followers) in [300, 200, 100].into_iter().enumerate() {
        api.influencer_with_latest(700 + i as i64, T0, followers, 10)
            .await;
    }
    influencer_analytics::jobs::ranking::refresh(&api.db.pool)
        .await
        .unwrap();
    // 2^32 + 1: truncated to i32 it was rank 1, and ranks 2 and 3 came back.
    let (status, _, body) = api
        .get("/influencer_analytics/top?cursor=4294967297.0")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["influencers"], serde_json::json!([]), "{body}");
}

/// Issue 18: API keys, when configured, guard the data endpoints (401 problem+json with
/// `WWW-Authenticate: Bearer` without a right one); health and readiness stay open.
#[tokio::test]
async fn api_keys_guard_the_data_endpoints_and_leave_health_open() {
    let key = "k3y-0123456789abcdef";
    let api = TestApi::limited(ApiSettings {
        api_keys: vec![
            ApiKey::new("another-key-0123456789").unwrap(),
            ApiKey::new(key).unwrap(),
        ],
        ..ApiSettings::default()
    })
    .await;
    let client = influencer_analytics::tls::http_client();
    let average = format!("{}/influencer_analytics/average", api.base);
    for authorization in [None, Some("Bearer wrong-key-0123456789"), Some(key)] {
        let mut request = client.get(&average);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{authorization:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Problem = response.json().await.unwrap();
        assert!(problem.detail.contains("API key"), "{}", problem.detail);
    }
    let response = client.get(&average).bearer_auth(key).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let response = client
        .get(format!("{}/influencer_analytics/1000001", api.base))
        .bearer_auth("another-key-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404, "a right key reaches the handler");
    for open in ["/healthz", "/readyz", "/openapi.json"] {
        let (status, _, _) = api.get(open).await;
        assert_eq!(status, 200, "{open}");
    }
    assert!(ApiKey::new("short").is_err());
}

/// Issue 37: an open /healthz says which role is restarting, not its error (which names the
/// database's host, user and database); a key holder's /healthz says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_tells_role_errors_to_key_holders_only() {
    use influencer_analytics::roles::Restart;
    let key = "operator-key-0123456789";
    let db = TestDb::new().await;
    let state = ApiState::new(db.pool.clone(), Duration::from_secs(60)).with_limits(ApiSettings {
        api_keys: vec![ApiKey::new(key).unwrap()],
        ..ApiSettings::default()
    });
    let mut roles = Roles::new(CancellationToken::new());
    roles.spawn("sink", Restart::OnFailure, || {
        Box::pin(async {
            anyhow::bail!("postgres://analytics@db.internal:5432/influencer_analytics refused")
        })
    });
    let addr = roles
        .serve_api(state, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = influencer_analytics::tls::http_client();
    let url = format!("http://{addr}/healthz");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (open, held) = loop {
        let open = client.get(&url).send().await.unwrap();
        let open = (open.status(), open.text().await.unwrap());
        let held = client.get(&url).bearer_auth(key).send().await.unwrap();
        let held = held.text().await.unwrap();
        if open.1.contains("restarting") || std::time::Instant::now() > deadline {
            break (open, held);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(open.0, 200, "{}", open.1);
    let body: Value = serde_json::from_str(&open.1).unwrap();
    assert_eq!(body["roles"]["sink"]["state"], "restarting", "{body}");
    assert!(!open.1.contains("db.internal"), "{}", open.1);
    assert!(!open.1.contains("analytics@"), "{}", open.1);
    assert!(held.contains("db.internal"), "{held}");
    let wrong = client
        .get(&url)
        .bearer_auth("wrong-key-0123456789")
        .send()
        .await
        .unwrap();
    assert!(!wrong.text().await.unwrap().contains("db.internal"));
}

/// Holds an exclusive lock on the registry, so that every data request waits on it.
async fn block_the_registry(db: &TestDb) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("lock table influencers in access exclusive mode")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

/// Issue 18: every request is bounded. One over the in-flight cap is answered at once with 503
/// problem+json and Retry-After; one that takes longer than the request timeout is answered
/// 503 at the timeout, and the API answers normally afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_cap_or_the_time_limit_are_answered_503() {
    let api = TestApi::limited(ApiSettings {
        api_max_in_flight: 1,
        api_request_timeout: Duration::from_millis(1500),
        api_statement_timeout: Duration::from_secs(30),
        ..ApiSettings::default()
    })
    .await;
    let lock = block_the_registry(&api.db).await;
    let slow = tokio::spawn({
        let url = format!("{}/influencer_analytics/1000001", api.base);
        async move {
            let started = std::time::Instant::now();
            let response = influencer_analytics::tls::http_client()
                .get(url)
                .send()
                .await
                .unwrap();
            (
                response.status(),
                response.text().await.unwrap(),
                started.elapsed(),
            )
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = influencer_analytics::tls::http_client();
    let shed = client
        .get(format!("{}/influencer_analytics/1000002", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(shed.status(), 503);
    assert_eq!(shed.headers()["retry-after"], "1");
    let problem: Problem = shed.json().await.unwrap();
    assert!(
        problem.detail.contains("API_MAX_IN_FLIGHT"),
        "{}",
        problem.detail
    );

    // The probes are not counted by the cap: a busy API is not an unready one.
    for probe in ["/healthz", "/readyz"] {
        let (status, _, body) = api.get(probe).await;
        assert_eq!(status, 200, "{probe} while the cap is full: {body}");
    }

    let (status, body, took) = slow.await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("API_REQUEST_TIMEOUT"), "{body}");
    assert!(
        took < Duration::from_secs(10),
        "answered at the timeout, not when the lock went: {took:?}"
    );
    lock.rollback().await.unwrap();
    let (status, _, _) = api.get("/influencer_analytics/1000001").await;
    assert_eq!(status, 404, "the API answers again");
}

/// Issue 18: the API's statements are cut short by PostgreSQL at API_STATEMENT_TIMEOUT, which
/// the API answers with 503 problem+json (it answered 500 for any cancelled statement).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_over_the_statement_timeout_is_cancelled_and_answered_503() {
    let api = TestApi::limited(ApiSettings {
        api_statement_timeout: Duration::from_millis(300),
        ..ApiSettings::default()
    })
    .await;
    let lock = block_the_registry(&api.db).await;
    let problem = api
        .problem(
            "/influencer_analytics/1000001",
            StatusCode::SERVICE_UNAVAILABLE,
        )
        .await;
    assert!(
        problem.detail.contains("API_STATEMENT_TIMEOUT"),
        "{}",
        problem.detail
    );
    lock.rollback().await.unwrap();
}

/// Issue 18: a request id is taken from `x-request-id` or made, and returned; requests are
/// counted and timed per route template, never per raw path.
#[tokio::test]
async fn request_ids_are_returned_and_requests_are_counted_per_route() {
    let api = TestApi::start().await;
    let client = influencer_analytics::tls::http_client();
    // The id `path` is answered with when the request sends `sent`.
    let answered_id = async |path: &str, sent: &str| {
        let response = client
            .get(format!("{}{path}", api.base))
            .header("x-request-id", sent)
            .send()
            .await
            .unwrap();
        response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        answered_id("/influencer_analytics/1000009", "trace-me-42").await,
        "trace-me-42"
    );
    let made = answered_id("/healthz", "bad id with spaces").await;
    assert_eq!(made.len(), 16, "{made}");
    assert!(made.bytes().all(|b| b.is_ascii_hexdigit()), "{made}");

    let (_, _, metrics) = api.get("/metrics").await;
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains(r#"http_requests_total{route="/influencer_analytics/{id}",status="404"}"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"http_request_duration_seconds_count{route="/influencer_analytics/{id}"}"#)
            || metrics.contains(
                r#"http_request_duration_seconds_bucket{route="/influencer_analytics/{id}""#
            ),
        "{metrics}"
    );
    assert!(!metrics.contains("1000009"), "no raw path in the labels");
}

/// Issue 18: CORS is configurable. A browser's preflight from an origin in API_CORS_ORIGINS is
/// answered without an API key (browsers send none with it) and allows the key's header; the
/// answer to the real request names the origin and exposes x-request-id. Another origin gets no
/// CORS headers, and without the setting no origin does.
#[tokio::test]
async fn cors_lets_only_the_configured_origins_read_the_api() {
    let key = "k3y-0123456789abcdef";
    let dashboard = "https://dash.example.com";
    let api = TestApi::limited(ApiSettings {
        api_keys: vec![ApiKey::new(key).unwrap()],
        api_cors_origins: vec![CorsOrigin::Exact(dashboard.into())],
        ..ApiSettings::default()
    })
    .await;
    let client = influencer_analytics::tls::http_client();
    let average = format!("{}/influencer_analytics/average", api.base);
    let preflight = |origin: &str| {
        client
            .request(reqwest::Method::OPTIONS, &average)
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = preflight(dashboard).await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let headers = allowed.headers();
    assert_eq!(headers["access-control-allow-origin"], dashboard);
    let allow_headers = headers["access-control-allow-headers"].to_str().unwrap();
    assert!(allow_headers.contains("authorization"), "{allow_headers}");
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("GET")
    );

    let stranger = preflight("https://evil.example.net").await.unwrap();
    assert!(
        !stranger
            .headers()
            .contains_key("access-control-allow-origin")
    );

    let response = client
        .get(&average)
        .header("origin", dashboard)
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], dashboard);
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    assert!(exposed.contains("x-request-id"), "{exposed}");

    let closed = TestApi::start().await;
    let response = client
        .get(format!("{}/influencer_analytics/average", closed.base))
        .header("origin", dashboard)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );
}

/// The API's pool (`db::open_api_pool`) over `test_db`, with one connection.
async fn api_pool_of_one(test_db: &TestDb) -> sqlx::PgPool {
    use influencer_analytics::{config::DatabaseSettings, db};
    let settings = DatabaseSettings {
        database_pool_size: 1,
        ..test_db.settings.clone()
    };
    db::open_api_pool(&settings, Duration::from_secs(5))
        .await
        .unwrap()
}

#[tokio::test]
async fn an_api_connection_broken_while_idle_is_replaced_before_a_request_uses_it() {
    use influencer_analytics::db;
    let test_db = TestDb::new().await;
    let pool = api_pool_of_one(&test_db).await;
    let backend = "select pg_backend_pid()";
    let pid: i32 = sqlx::query_scalar(backend).fetch_one(&pool).await.unwrap();
    // The connection is back in the pool (its release checks it) before it is killed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed: bool = sqlx::query_scalar("select pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&test_db.pool)
        .await
        .unwrap();
    assert!(killed);
    tokio::time::sleep(db::API_CHECK_AFTER_IDLE + Duration::from_millis(300)).await;
    let replaced: i32 = sqlx::query_scalar(backend)
        .fetch_one(&pool)
        .await
        .expect("a connection that broke while idle is checked and replaced, not handed out");
    assert_ne!(replaced, pid);
}

#[tokio::test]
async fn api_connections_choose_chunks_when_planning_not_at_every_start() {
    let test_db = TestDb::new().await;
    let pool = api_pool_of_one(&test_db).await;
    for (setting, expected) in [
        ("plan_cache_mode", "force_generic_plan"),
        ("timescaledb.enable_chunk_append", "off"),
        ("timescaledb.enable_constraint_aware_append", "off"),
    ] {
        let value: String = sqlx::query_scalar(&format!("show {setting}"))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(value, expected, "{setting}");
    }
    // A generic plan over the day segments, bounded by constants besides its parameters, holds
    // only the chunks the constants reach: none of the three created here for other months.
    for month in ["2025-01-05", "2025-03-05", "2025-06-05"] {
        sqlx::query(
            "insert into influencer_segments (influencer_id, period_start, period_end, points,
                lateness_max_ms, lateness_p99_ms, data_head, data_tail)
             values (1, $1::timestamptz, $1::timestamptz + interval '1 day', 1, 0, 0, '',
                '\\x00')",
        )
        .bind(month)
        .execute(&test_db.pool)
        .await
        .unwrap();
    }
    let mut connection = pool.acquire().await.unwrap();
    sqlx::query(
        "prepare window_read(bigint, timestamptz) as
         select period_start from influencer_segments
         where influencer_id = $1 and period_start >= $2
           and period_start >= '2025-02-20' and period_start < '2025-04-01'",
    )
    .execute(&mut *connection)
    .await
    .unwrap();
    let plan: Vec<String> = sqlx::query_scalar("explain execute window_read(1, '2025-03-01')")
        .fetch_all(&mut *connection)
        .await
        .unwrap();
    let plan = plan.join("\n");
    let chunks = plan.matches(" on _hyper_").count();
    assert_eq!(chunks, 1, "one chunk in the plan:\n{plan}");
    assert!(!plan.contains("ChunkAppend"), "{plan}");
}

/// Schedule messages waiting in the test's queues (due, wait and delay queues).
async fn schedule_messages(queues: &influencer_analytics::testing::TestBroker) -> u32 {
    let t = &queues.broker.topology;
    let mut names = vec![t.due.clone(), t.wait.clone()];
    names.extend(t.delays.iter().map(|d| d.name.clone()));
    let mut total = 0;
    for name in names {
        total += queues.broker.ready_count(&name).await.unwrap();
    }
    total
}

/// Issue 37, item 11: starting and stopping tracking without a shell. `POST /influencers`
/// registers and schedules as `seed` does and says which ids were new; `DELETE
/// /influencers/{id}` ends the stretch of tracking with its reason and keeps the history;
/// `GET /influencers/{id}` shows both; tracking again is allowed. With `API_KEYS`, all three
/// want a key.
#[tokio::test]
async fn influencers_are_tracked_and_untracked_through_the_api() {
    let key = "registry-key-0123456789";
    let queues = influencer_analytics::testing::TestBroker::new().await;
    let db = TestDb::new().await;
    let state = ApiState::new(db.pool.clone(), Duration::from_secs(60))
        .with_limits(ApiSettings {
            api_keys: vec![ApiKey::new(key).unwrap()],
            ..ApiSettings::default()
        })
        .with_scheduler(queues.settings.clone());
    let api = TestApi::serving(db, state).await;
    let client = influencer_analytics::tls::http_client();
    let url = |path: &str| format!("{}{path}", api.base);
    let post = |ids: Value| {
        client
            .post(url("/influencers"))
            .bearer_auth(key)
            .json(&serde_json::json!({ "ids": ids }))
            .send()
    };

    let response = client
        .post(url("/influencers"))
        .json(&serde_json::json!({"ids": [1_000_001]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "a write without a key");
    assert_eq!(schedule_messages(&queues).await, 0);

    let response = post(serde_json::json!([1_000_001, 1_000_002, 1_000_001]))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"new": [1_000_001, 1_000_002], "tracked_again": [], "already_tracked": []})
    );
    let scheduled = schedule_messages(&queues).await;
    assert!(scheduled >= 1, "the new ids were scheduled");
    let body: Value = post(serde_json::json!([1_000_002]))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["already_tracked"], serde_json::json!([1_000_002]));
    assert_eq!(
        schedule_messages(&queues).await,
        scheduled,
        "nobody scheduled twice"
    );

    let delete = |path: &str| client.delete(url(path)).bearer_auth(key).send();
    let response = delete("/influencers/1000002?reason=campaign%20ended")
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let record: Value = response.json().await.unwrap();
    assert_eq!(record["tracked"], false, "{record}");
    assert_eq!(record["untracked_reason"], "campaign ended");
    let stretches = record["stretches"].as_array().unwrap();
    assert_eq!(stretches.len(), 1);
    assert!(stretches[0]["to"].is_i64(), "{record}");
    assert_eq!(stretches[0]["stop_reason"], "campaign ended");
    // Again: answered as it is, nothing changed.
    let again: Value = delete("/influencers/1000002?reason=other")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again, record);
    assert_eq!(delete("/influencers/42").await.unwrap().status(), 404);
    let long_reason = format!("/influencers/1000001?reason={}", "x".repeat(201));
    assert_eq!(delete(&long_reason).await.unwrap().status(), 400);

    // Tracked again: a second stretch, open.
    let body: Value = post(serde_json::json!([1_000_002]))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["tracked_again"], serde_json::json!([1_000_002]));
    let record: Value = client
        .get(url("/influencers/1000002"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(record["tracked"], true);
    assert_eq!(record["stretches"].as_array().unwrap().len(), 2);
    assert!(record["stretches"][1]["to"].is_null(), "{record}");

    // Bad bodies are 400s that say what was wrong, and change nothing.
    for body in [
        serde_json::json!({"ids": []}),
        serde_json::json!({"ids": [0]}),
        serde_json::json!({"ids": "1000001"}),
        serde_json::json!({"id": [1_000_003]}),
    ] {
        let response = client
            .post(url("/influencers"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    let registered: i64 = sqlx::query_scalar("select count(*) from influencers")
        .fetch_one(&api.db.pool)
        .await
        .unwrap();
    assert_eq!(registered, 2);
}

/// An API without a broker (none configured) answers `POST /influencers` with a 503 that says
/// so, and registers nobody.
#[tokio::test]
async fn tracking_without_a_broker_is_refused_whole() {
    let api = TestApi::start().await;
    let response = influencer_analytics::tls::http_client()
        .post(format!("{}/influencers", api.base))
        .json(&serde_json::json!({"ids": [1_000_001]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let registered: i64 = sqlx::query_scalar("select count(*) from influencers")
        .fetch_one(&api.db.pool)
        .await
        .unwrap();
    assert_eq!(registered, 0);
}
