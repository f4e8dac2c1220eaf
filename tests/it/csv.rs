//! CSV answers (`format=csv` or `Accept: text/csv`): a header row, then a row a point or item,
//! with the same numbers as the JSON answer of the same query.

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::Value;

use crate::api::TestApi;

/// The CSV answer of `path`: its header row and the other rows, split on commas (the fields
/// here hold none), after checking the content type and the file name offered.
async fn csv(api: &TestApi, path: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let response = api
        .client
        .get(format!("{}{path}", api.base))
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8", "{path}");
    let disposition = headers["content-disposition"].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\""),
        "{disposition}"
    );
    let body = response.text().await.unwrap();
    assert!(body.ends_with("\r\n"), "{body}");
    let mut lines = body.split("\r\n").filter(|l| !l.is_empty());
    let header = lines.next().unwrap().split(',').map(String::from).collect();
    let rows = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    (header, rows)
}

/// Fields equal as numbers where both are (CSV writes `200` where JSON writes `200.0`).
fn same(row: &[String], expected: &[String]) -> bool {
    row.len() == expected.len()
        && row
            .iter()
            .zip(expected)
            .all(|(a, b)| match (a.parse::<f64>(), b.parse::<f64>()) {
                (Ok(x), Ok(y)) => x == y,
                _ => a == b,
            })
}

fn number(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        v => v.to_string().trim_matches('"').to_string(),
    }
}

#[tokio::test]
async fn every_list_and_series_answers_csv_with_the_numbers_of_its_json() {
    let api = TestApi::start().await;
    let now = Utc::now().timestamp();
    let t0 = now - now.rem_euclid(60) - 3_600;
    for id in 1..=3 {
        api.register(id).await;
        for m in 0..10 {
            api.point(
                id,
                t0 + m * 60,
                10_000 * id as i32 + 7 * m as i32,
                100 + m as i32,
            )
            .await;
        }
    }
    sqlx::query(
        "insert into influencer_latest (influencer_id, slot, fetched_at, follower_count, following_count)
         select influencer_id, now(), now(), 10000 * influencer_id, 3 from influencers",
    )
    .execute(&api.db.pool)
    .await
    .unwrap();
    influencer_analytics::jobs::ranking::refresh(&api.db.pool)
        .await
        .unwrap();
    let range = format!("start_time={t0}&end_time={}", t0 + 600);

    // A raw range: a row a point.
    let path = format!("/influencer_analytics/2?{range}");
    let (_, _, json) = api.get(&path).await;
    let (header, rows) = csv(&api, &path).await;
    assert_eq!(
        header,
        [
            "time",
            "follower_count",
            "following_count",
            "follower_ratio"
        ]
    );
    let points = json["points"].as_array().unwrap();
    assert_eq!(rows.len(), 10);
    for (row, p) in rows.iter().zip(points) {
        let expected: Vec<String> = [
            "time",
            "follower_count",
            "following_count",
            "follower_ratio",
        ]
        .iter()
        .map(|k| number(&p[k]))
        .collect();
        assert!(same(row, &expected), "{row:?} against {expected:?}");
    }
    // Buckets: a column a statistic; `format=csv` as well as Accept.
    let path = format!("/influencer_analytics/2?{range}&step=5m&format=csv");
    let (status, content_type, body) = api.get(&path).await;
    assert_eq!(
        (status, content_type.as_str()),
        (StatusCode::OK, "text/csv; charset=utf-8")
    );
    let body = body.as_str().unwrap().to_string();
    let (_, _, json) = api.get(&path.replace("format=csv", "format=json")).await;
    let lines: Vec<&str> = body.lines().collect();
    assert!(lines[0].starts_with("time,samples,follower_count_avg,follower_count_min"));
    assert_eq!(lines.len(), 1 + json["points"].as_array().unwrap().len());
    let first = &json["points"][0];
    let fields: Vec<String> = lines[1].split(',').take(4).map(String::from).collect();
    let expected: Vec<String> = [
        &first["time"],
        &first["samples"],
        &first["follower_count"]["avg"],
        &first["follower_count"]["min"],
    ]
    .into_iter()
    .map(number)
    .collect();
    assert!(same(&fields, &expected), "{body}");

    // Compare: a row per bucket and series.
    let path = format!("/influencer_analytics/compare?ids=1,3&{range}&step=5m");
    let (header, rows) = csv(&api, &path).await;
    assert_eq!(header[..3], ["time", "influencer_id", "username"]);
    let (_, _, json) = api.get(&path).await;
    assert_eq!(rows.len(), 2 * json["times"].as_array().unwrap().len());
    assert_eq!(rows[1][1], "3");
    assert!(same(
        &rows[1][3..4],
        &[number(&json["series"][1]["follower_count"][0])]
    ));

    // The leaderboard, the rank history, the growth table, the average.
    let (header, rows) = csv(&api, "/influencer_analytics/top?limit=2").await;
    assert_eq!(
        header,
        ["rank", "influencer_id", "username", "follower_count"]
    );
    assert_eq!(
        rows,
        [
            ["1", "3", "influencer-3", "30000"],
            ["2", "2", "influencer-2", "20000"]
        ]
    );
    let (header, rows) = csv(&api, "/influencer_analytics/1/rank").await;
    assert_eq!(
        header,
        ["kind", "time", "day", "rank", "percentile", "ranked"]
    );
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0][0].as_str(), &rows[0][3..]),
        ("hour", &["3".to_string(), "0".into(), "3".into()][..])
    );
    let (header, rows) = csv(&api, "/influencer_analytics/1/growth?days=2").await;
    assert_eq!(header[0], "day");
    let (_, _, json) = api.get("/influencer_analytics/1/growth?days=2").await;
    assert_eq!(rows.len(), json["days"].as_array().unwrap().len());
    let (header, _) = csv(&api, "/influencer_analytics/average").await;
    assert_eq!(header, ["time", "avg_follower_count", "influencers"]);
    let (header, rows) = csv(&api, "/influencer_analytics/suspicious").await;
    assert_eq!(header[..2], ["influencer_id", "username"]);
    assert!(rows.is_empty());

    // JSON when Accept prefers it, and a bad format is a 400.
    let response = api
        .client
        .get(format!("{}/influencer_analytics/top", api.base))
        .header("accept", "application/json, text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/json");
    let (status, _, _) = api.get("/influencer_analytics/top?format=xml").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
