//! Watchlists: created, listed, filled with registered influencers (unknown ids reported and
//! not kept), viewed a page at a time with their latest values and totals, emptied, deleted;
//! a list holds at most 100,000; with `API_KEYS`, every watchlist endpoint wants a key.

use std::time::Duration;

use influencer_analytics::{
    api::ApiState,
    config::{ApiKey, ApiSettings},
    testing::TestDb,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::api::TestApi;

const KEY: &str = "watchlist-key-0123456789";

async fn keyed_api() -> TestApi {
    let db = TestDb::new().await;
    let state = ApiState::new(db.pool.clone(), Duration::from_secs(60)).with_limits(ApiSettings {
        api_keys: vec![ApiKey::new(KEY).unwrap()],
        ..ApiSettings::default()
    });
    TestApi::serving(db, state).await
}

/// Sends `method path` with `body` and the key; the status and the JSON answered.
async fn send(api: &TestApi, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = api
        .client
        .request(method.parse().unwrap(), format!("{}{path}", api.base))
        .bearer_auth(KEY);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn a_watchlist_is_made_filled_viewed_and_deleted() {
    let api = keyed_api().await;
    let t = 1_764_547_200; // 2025-12-01
    for (id, followers) in [(11, 1_000), (12, 3_000), (13, 8_000)] {
        api.influencer_with_latest(id, t, followers, 7).await;
    }
    api.register(14).await; // no point yet

    // Without the key: refused, nothing made.
    let response = api
        .client
        .post(format!("{}/watchlists", api.base))
        .json(&json!({"name": "campaign"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    let (status, made) = send(
        &api,
        "POST",
        "/watchlists",
        Some(json!({"name": "campaign"})),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["name"], "campaign");
    assert_eq!(made["members"], 0);
    let (status, again) = send(
        &api,
        "POST",
        "/watchlists",
        Some(json!({"name": "campaign"})),
    )
    .await;
    assert_eq!(status, 409, "{again}");
    for bad in ["", "-dash-first", "has space", &"x".repeat(65)] {
        let (status, _) = send(&api, "POST", "/watchlists", Some(json!({"name": bad}))).await;
        assert_eq!(status, 400, "{bad:?}");
    }

    let (status, added) = send(
        &api,
        "PUT",
        "/watchlists/campaign/members",
        Some(json!({"ids": [12, 11, 99, 14, 11]})),
    )
    .await;
    assert_eq!(status, 200, "{added}");
    assert_eq!(
        added,
        json!({"added": [12, 11, 14], "already_members": [], "unknown": [99]})
    );
    let (_, added) = send(
        &api,
        "PUT",
        "/watchlists/campaign/members",
        Some(json!({"ids": [13, 12]})),
    )
    .await;
    assert_eq!(
        added,
        json!({"added": [13], "already_members": [12], "unknown": []})
    );

    let (status, lists) = send(&api, "GET", "/watchlists", None).await;
    assert_eq!(status, 200);
    assert_eq!(lists["watchlists"][0]["name"], "campaign");
    assert_eq!(lists["watchlists"][0]["members"], 4);

    // The view: totals over the members with a point; a page of two, then the rest.
    let (status, view) = send(&api, "GET", "/watchlists/campaign?limit=2", None).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["members"], 4);
    assert_eq!(view["with_latest"], 3);
    assert_eq!(view["total_followers"], 12_000);
    assert_eq!(view["average_followers"], 4_000.0);
    let ids = |v: &Value| -> Vec<i64> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["influencer_id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(ids(&view), [11, 12]);
    assert_eq!(view["items"][0]["follower_count"], 1_000);
    assert_eq!(view["items"][0]["time"], t);
    assert_eq!(view["next_cursor"], "12");
    let (_, rest) = send(&api, "GET", "/watchlists/campaign?limit=2&cursor=12", None).await;
    assert_eq!(ids(&rest), [13, 14]);
    assert_eq!(rest["items"][1]["time"], Value::Null);
    assert_eq!(rest["next_cursor"], Value::Null);

    // Its followers over time: each member's last value in a bucket, summed (13 and 14 have
    // no point in the range; 12's second hour stands alone).
    for (id, at, followers, following) in [
        (11, t, 100, 1),
        (11, t + 60, 110, 1),
        (12, t + 30, 200, 2),
        (12, t + 3_605, 250, 2),
    ] {
        api.point(id, at, followers, following).await;
    }
    let path = format!(
        "/watchlists/campaign/series?start_time={t}&end_time={}&step=1h",
        t + 7_199
    );
    let (status, series) = send(&api, "GET", &path, None).await;
    assert_eq!(status, 200, "{series}");
    assert_eq!(series["members"], 4);
    assert_eq!(
        series["buckets"],
        json!([
            {"time": t, "members": 2, "total_followers": 310, "average_followers": 155.0, "total_following": 3},
            {"time": t + 3_600, "members": 1, "total_followers": 250, "average_followers": 250.0, "total_following": 2},
        ])
    );
    let (_, csv) = send(&api, "GET", &format!("{path}&format=csv"), None).await;
    assert_eq!(
        csv.as_str().unwrap().lines().collect::<Vec<_>>(),
        [
            "time,members,total_followers,average_followers,total_following",
            &format!("{t},2,310,155,3"),
            &format!("{},1,250,250,2", t + 3_600),
        ]
    );
    let (status, _) = send(&api, "GET", "/watchlists/nobody/series", None).await;
    assert_eq!(status, 404);

    // The leaderboard within the list: its members in rank order, each with its rank among
    // everyone (15 is not a member).
    api.influencer_with_latest(15, t, 5_000, 7).await;
    influencer_analytics::jobs::ranking::refresh(&api.db.pool)
        .await
        .unwrap();
    let (status, top) = send(
        &api,
        "GET",
        "/influencer_analytics/top?watchlist=campaign&limit=2",
        None,
    )
    .await;
    assert_eq!(status, 200, "{top}");
    let ranked = |v: &Value| -> Vec<(i64, i64)> {
        v["influencers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["influencer_id"].as_i64().unwrap(),
                    r["rank"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(ranked(&top), [(13, 1), (12, 3)]);
    let cursor = top["next_cursor"].as_str().unwrap().to_string();
    let (_, rest) = send(
        &api,
        "GET",
        &format!("/influencer_analytics/top?watchlist=campaign&limit=2&cursor={cursor}"),
        None,
    )
    .await;
    assert_eq!(ranked(&rest), [(11, 4)]);
    let (status, _) = send(
        &api,
        "GET",
        "/influencer_analytics/top?watchlist=nobody",
        None,
    )
    .await;
    assert_eq!(status, 404);

    let (status, removed) = send(
        &api,
        "DELETE",
        "/watchlists/campaign/members",
        Some(json!({"ids": [13, 55]})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(removed, json!({"removed": [13], "not_members": [55]}));
    let (_, view) = send(&api, "GET", "/watchlists/campaign", None).await;
    assert_eq!(view["total_followers"], 4_000);

    let (status, _) = send(&api, "DELETE", "/watchlists/campaign", None).await;
    assert_eq!(status, 204);
    for (method, path, body) in [
        ("GET", "/watchlists/campaign", None),
        ("DELETE", "/watchlists/campaign", None),
        (
            "PUT",
            "/watchlists/campaign/members",
            Some(json!({"ids": [11]})),
        ),
    ] {
        let (status, problem) = send(&api, method, path, body).await;
        assert_eq!(status, 404, "{method} {path}");
        assert!(
            problem["detail"].as_str().unwrap().contains("campaign"),
            "{problem}"
        );
    }
    // The influencers stay registered.
    let (_, lists) = send(&api, "GET", "/watchlists", None).await;
    assert_eq!(lists, json!({"watchlists": []}));
    let registered: i64 = sqlx::query_scalar("select count(*) from influencers")
        .fetch_one(&api.db.pool)
        .await
        .unwrap();
    assert_eq!(registered, 5);
}

#[tokio::test]
async fn a_watchlist_holds_at_most_100000_influencers() {
    let api = keyed_api().await;
    sqlx::query(
        "insert into influencers (influencer_id, username)
         select id, 'influencer-' || id from generate_series(1::bigint, 100001) id",
    )
    .execute(&api.db.pool)
    .await
    .unwrap();
    send(
        &api,
        "POST",
        "/watchlists",
        Some(json!({"name": "everyone"})),
    )
    .await;
    let ids: Vec<i64> = (1..=100_000).collect();
    let (status, added) = send(
        &api,
        "PUT",
        "/watchlists/everyone/members",
        Some(json!({ "ids": ids })),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(added["added"].as_array().unwrap().len(), 100_000);
    let (status, refused) = send(
        &api,
        "PUT",
        "/watchlists/everyone/members",
        Some(json!({"ids": [100_001]})),
    )
    .await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("at most 100000"),
        "{refused}"
    );
    let (_, view) = send(&api, "GET", "/watchlists/everyone?limit=1", None).await;
    assert_eq!(
        view["members"], 100_000,
        "nothing of the refused request kept"
    );
}
