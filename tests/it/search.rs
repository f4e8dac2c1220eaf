//! `/influencer_analytics/search`: by the start of a username, whatever its case, or by id.

use reqwest::StatusCode;
use serde_json::Value;

use crate::api::TestApi;

fn found(answer: &Value) -> Vec<(i64, String)> {
    answer["influencers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["influencer_id"].as_i64().unwrap(),
                f["username"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn search_finds_username_prefixes_in_any_case_and_ids_first() {
    let api = TestApi::start().await;
    for (id, name) in [
        (1, "Alice"),
        (2, "alicia_k"),
        (3, "ALIBABA"),
        (4, "bob"),
        (5, "al_ex"),
        (42, "zed"),
        (7, "42nd_street"),
        (8, "ålborg"),
    ] {
        sqlx::query("insert into influencers (influencer_id, username) values ($1, $2)")
            .bind(id)
            .bind(name)
            .execute(&api.db.pool)
            .await
            .unwrap();
    }
    sqlx::query(
        "insert into influencer_latest (influencer_id, slot, fetched_at, follower_count, following_count)
         values (1, now(), now(), 1234, 5)",
    )
    .execute(&api.db.pool)
    .await
    .unwrap();
    let api = &api;
    let search = |q: &str| {
        let path = format!("/influencer_analytics/search?{q}");
        async move {
            let (status, _, answer) = api.get(&path).await;
            assert_eq!(status, StatusCode::OK, "{path}: {answer}");
            answer
        }
    };
    let answer = search("q=aLi").await;
    assert_eq!(
        found(&answer),
        vec![
            (3, "ALIBABA".to_string()),
            (1, "Alice".to_string()),
            (2, "alicia_k".to_string())
        ]
    );
    assert_eq!(answer["influencers"][1]["follower_count"], 1234);
    assert_eq!(answer["influencers"][0]["follower_count"], Value::Null);
    assert_eq!(answer["influencers"][0]["tracked"], true);
    // `_` and `%` are plain characters.
    assert_eq!(
        found(&search("q=al_").await),
        vec![(5, "al_ex".to_string())]
    );
    assert!(found(&search("q=al%25").await).is_empty());
    assert_eq!(
        found(&search("q=%C3%85L").await),
        vec![(8, "ålborg".to_string())]
    );
    // An id: its own match first, then names that start with it.
    assert_eq!(
        found(&search("q=42").await),
        vec![(42, "zed".to_string()), (7, "42nd_street".to_string())]
    );
    assert_eq!(
        found(&search("q=42&limit=1").await),
        vec![(42, "zed".to_string())]
    );
    assert_eq!(found(&search("q=ali&limit=2").await).len(), 2);
    assert!(found(&search("q=nobody").await).is_empty());
    assert!(found(&search("q=a%00").await).is_empty());
    for (query, title) in [
        ("q=", "Invalid q"),
        ("", "Invalid query parameter"),
        ("q=a&limit=0", "Invalid limit"),
    ] {
        let (status, _, answer) = api
            .get(&format!("/influencer_analytics/search?{query}"))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {answer}");
        assert_eq!(answer["title"], title, "{query}: {answer}");
    }
    let long = "a".repeat(101);
    let (status, _, _) = api
        .get(&format!("/influencer_analytics/search?q={long}"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
