//! The dashboard in a real headless Chromium, driven by playwright-core
//! (tests/browser/dashboard.mjs) against a running API with data the test inserted.

use std::{path::Path, process::Command, time::Duration};

use influencer_analytics::{
    api::ApiState,
    config::{ApiKey, ApiSettings},
    model::follower_ratio,
    roles::Roles,
};
use tokio_util::sync::CancellationToken;

use influencer_analytics::testing::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_draws_an_influencers_charts_and_latest_panel_in_a_browser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let browser = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let ready = Path::new(&browser).exists()
        && root
            .join("tests/browser/node_modules/playwright-core")
            .exists();
    if !ready {
        let why = "no Chromium or playwright-core: run scripts/browser-setup (scripts/test does)";
        assert!(std::env::var("CI").is_err(), "{why}");
        eprintln!("SKIPPED the browser test: {why}");
        return;
    }
    let db = TestDb::new().await;
    let pool = &db.pool;
    let now = chrono::Utc::now().timestamp();
    for (id, followers) in [
        (1_000_001i64, 57_166),
        (1_000_002, 90_000),
        (1_000_003, 10_000),
    ] {
        sqlx::query(
            "with added as (
                 insert into influencers (influencer_id, username, added_at)
                 values ($1, 'influencer-' || $1, now() - interval '2 hours')
                 returning influencer_id, added_at
             )
             insert into tracking_periods (influencer_id, expected_from)
             select influencer_id, added_at from added",
        )
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query("insert into influencer_latest values ($1, now(), now(), $2, 1328)")
            .bind(id)
            .bind(followers)
            .execute(pool)
            .await
            .unwrap();
    }
    // A watchlist of two of them.
    sqlx::query("insert into watchlists (name) values ('campaign')")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "insert into watchlist_members (watchlist, influencer_id) values ('campaign', 1000001), ('campaign', 1000002)",
    )
    .execute(pool)
    .await
    .unwrap();
    // The movers: an hour ago 1000001 had 1,166 followers fewer, 1000002 5,000 more and
    // 1000003 500 fewer; a mark of then (moved back an hour) and one of now.
    let shift = "case influencer_id when 1000001 then 1166 when 1000002 then -5000 else 500 end";
    sqlx::query(&format!(
        "update influencer_latest set slot = now() - interval '1 hour',
             follower_count = follower_count - {shift}"
    ))
    .execute(pool)
    .await
    .unwrap();
    influencer_analytics::jobs::movers::mark_now(pool)
        .await
        .unwrap();
    sqlx::query("update movers_marks set marked_at = marked_at - interval '1 hour'")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(&format!(
        "update influencer_latest set slot = now(), follower_count = follower_count + {shift}"
    ))
    .execute(pool)
    .await
    .unwrap();
    influencer_analytics::jobs::movers::mark_now(pool)
        .await
        .unwrap();
    // 50 minutes of points on the influencer's slot grid, but for two (a gap the page shades).
    let grid = influencer_analytics::schedule::SlotGrid::new(Duration::from_secs(60));
    let slot_ms = |minute: i64| grid.slot_at_or_after(1_000_001, (now - 60 * minute) * 1000);
    let stored_minutes: Vec<i64> = (1..=50).filter(|m| ![20, 21].contains(m)).collect();
    for &minute in &stored_minutes {
        sqlx::query(
            "insert into influencer_metrics values (1000001, to_timestamp($1), to_timestamp($1), $2, $3)",
        )
        .bind(slot_ms(minute) as f64 / 1000.0)
        .bind(50_000 + (minute * 137 % 5000) as i32)
        .bind(1300 + (minute % 40) as i32)
        .execute(pool)
        .await
        .unwrap();
    }
    // Three points of 1000002, to compare with.
    for (minute, followers) in [(40, 90_000), (30, 91_000), (10, 92_000)] {
        sqlx::query(
            "insert into influencer_metrics values (1000002, to_timestamp($1), to_timestamp($1), $2, 1300)",
        )
        .bind(grid.slot_at_or_after(1_000_002, (now - 60 * minute) * 1000) as f64 / 1000.0)
        .bind(followers)
        .execute(pool)
        .await
        .unwrap();
    }
    // A point 70 minutes ago: the start of the growth table's hour.
    sqlx::query(
        "insert into influencer_metrics values (1000001, to_timestamp($1), to_timestamp($1), 40000, 1300)",
    )
    .bind(slot_ms(70) as f64 / 1000.0)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("insert into average_followers values (date_trunc('minute', now()), 52388.7, 3)")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "insert into current_verdicts values
             (1000001, 'mockstagram', true, now(), '{\"follower_count\": 500, \"following_count\": 100}'),
             (1000001, 'spike', false, now(), '{\"z\": 3.2, \"from\": 57000, \"to\": 57166, \"at\": 1700000000}')",
    )
    .execute(pool)
        .await
        .unwrap();
    influencer_analytics::jobs::ranking::refresh(pool)
        .await
        .unwrap();

    let mut roles = Roles::new(CancellationToken::new());
    let state = ApiState::new(pool.clone(), Duration::from_secs(60));
    let addr = roles
        .serve_api(state, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = format!("http://{addr}");
    // The same data behind an API that wants a key.
    let key = "dashboard-key-0123456789";
    let keyed_state =
        ApiState::new(pool.clone(), Duration::from_secs(60)).with_limits(ApiSettings {
            api_keys: vec![ApiKey::new(key).unwrap()],
            ..ApiSettings::default()
        });
    let keyed_addr = roles
        .serve_api(keyed_state, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let keyed_base = format!("http://{keyed_addr}");

    // The live feed: one event logged before the page opens, one while it is open.
    let event = |kind, data: serde_json::Value| influencer_analytics::events::NewEvent {
        kind,
        influencer_id: 1_000_002,
        slot_ms: Some(now * 1000),
        data,
    };
    influencer_analytics::events::record(
        pool,
        &[event(
            influencer_analytics::events::EventType::Spike,
            serde_json::json!({"metric": "followers", "change": 40000, "from": 50000, "to": 90000, "z": 52.5}),
        )],
    )
    .await
    .unwrap();
    let live_pool = pool.clone();
    let live = event(
        influencer_analytics::events::EventType::Milestone,
        serde_json::json!({"milestone": 1_000_000, "direction": "up", "followers": 1_000_100}),
    );
    let logging_live = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        influencer_analytics::events::record(&live_pool, &[live])
            .await
            .unwrap();
    });

    let api_base = base.clone();
    let screenshot = root.join("target/dashboard.png");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(root.join("tests/browser/dashboard.mjs"))
            .arg(&base)
            .arg("1000001")
            .arg(&screenshot)
            .arg(&keyed_base)
            .arg(key)
            .env("CHROMIUM", browser)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    println!("the browser saw: {seen}");
    logging_live.await.unwrap();
    let feed: Vec<&str> = seen["feed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item.as_str().unwrap())
        .collect();
    assert_eq!(feed.len(), 2, "{feed:?}");
    assert!(
        feed[0].contains("milestone 1000002 passed 1,000,000 followers"),
        "the newest first: {feed:?}"
    );
    assert!(
        feed[1].contains("spike 1000002 followers +40,000 (50000 → 90000, z 52.5)"),
        "{feed:?}"
    );
    assert!(
        seen["prompt"]
            .as_str()
            .unwrap()
            .contains("Enter an influencer")
    );
    assert_eq!(seen["points"], 48);
    // The influencer view's growth, rank and forecast, as the API answers them.
    let insight = &seen["insight"];
    assert_eq!(
        insight["windows"][0],
        serde_json::json!(["1h", "40,000", "57,166", "+17,166", "+42.92%"]),
        "{insight}"
    );
    let growth: serde_json::Value = influencer_analytics::tls::http_client()
        .get(format!(
            "{api_base}/influencer_analytics/1000001/growth?days=14"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let days = growth["days"].as_array().unwrap();
    assert_eq!(
        insight["days"].as_array().unwrap().len(),
        days.len(),
        "{insight}"
    );
    let newest = days.last().unwrap()["follower_count"].as_i64().unwrap();
    assert!(
        insight["days"][0][1] == format_thousands(newest),
        "{insight} against {growth}"
    );
    assert_eq!(insight["ranks"][0][1], "#2", "{insight}");
    assert_eq!(insight["ranks"][0][2], "33.33", "{insight}");
    assert!(
        insight["forecast"]
            .as_str()
            .unwrap()
            .starts_with("not enough history"),
        "{insight}"
    );
    assert_eq!(
        insight["csvHeader"],
        "time,follower_count,following_count,follower_ratio"
    );
    assert_eq!(insight["csvRows"], 48, "the CSV holds the range shown");
    assert_eq!(insight["csvName"], "influencer-1000001.csv");
    assert!(
        insight["hash"].as_str().unwrap().contains("horizon=7d"),
        "the horizon is in the URL: {insight}"
    );
    let compared = &seen["compared"];
    assert!(
        compared["hash"]
            .as_str()
            .unwrap()
            .contains("compare=1000002&normalize=percent"),
        "{compared}"
    );
    assert_eq!(
        compared["labels"],
        serde_json::json!(["influencer-1000001", "influencer-1000002"])
    );
    // 90,000, 91,000 and 92,000 as change from the first.
    assert_eq!(
        compared["other"],
        serde_json::json!([0, 1.11, 2.22]),
        "{compared}"
    );
    // The home view's movers, as the inserted values say.
    let movers = &seen["movers"];
    assert!(
        movers["day"]
            .as_str()
            .unwrap()
            .starts_with("Not enough history yet"),
        "{movers}"
    );
    assert_eq!(
        movers["gainers"],
        serde_json::json!([
            ["influencer-1000001", "56,000", "57,166", "+1,166", "+2.08%"],
            ["influencer-1000003", "9,500", "10,000", "+500", "+5.26%"]
        ]),
        "{movers}"
    );
    assert_eq!(
        movers["losers"],
        serde_json::json!([["influencer-1000002", "95,000", "90,000", "-5,000", "-5.26%"]]),
        "{movers}"
    );
    assert!(
        movers["note"]
            .as_str()
            .unwrap()
            .contains("3 compared, 0 left out"),
        "{movers}"
    );
    assert!(
        movers["hash"].as_str().unwrap().contains("window=1h"),
        "the window is in the URL: {movers}"
    );
    // The watchlist's view: its members' latest values, total and average, its total over the
    // day, and the movers within it over the window the home view had.
    let watchlist = &seen["watchlist"];
    assert_eq!(
        watchlist["listed"],
        serde_json::json!(["campaign 2 influencers"])
    );
    assert!(
        watchlist["hash"]
            .as_str()
            .unwrap()
            .contains("watchlist=campaign")
            && watchlist["hash"].as_str().unwrap().contains("window=1h"),
        "{watchlist}"
    );
    assert_eq!(
        (
            &watchlist["members"],
            &watchlist["total"],
            &watchlist["average"]
        ),
        (
            &serde_json::json!("2"),
            &serde_json::json!("147,166"),
            &serde_json::json!("73,583")
        ),
        "{watchlist}"
    );
    let members: Vec<&[serde_json::Value]> = watchlist["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| &row.as_array().unwrap()[..3])
        .collect();
    assert_eq!(
        members,
        [
            &serde_json::json!(["influencer-1000001", "57,166", "1,328"])
                .as_array()
                .unwrap()[..],
            &serde_json::json!(["influencer-1000002", "90,000", "1,328"])
                .as_array()
                .unwrap()[..],
        ],
        "{watchlist}"
    );
    assert_eq!(
        watchlist["gainers"][0],
        serde_json::json!(["influencer-1000001", "56,000", "57,166", "+1,166"]),
        "only the list's members: {watchlist}"
    );
    assert_eq!(
        watchlist["losers"],
        serde_json::json!([["influencer-1000002", "95,000", "90,000", "-5,000"]]),
        "{watchlist}"
    );
    assert!(
        !watchlist["chart"].as_array().unwrap().is_empty(),
        "the list's total over the day: {watchlist}"
    );
    assert_eq!(
        watchlist["hidden"],
        serde_json::json!({"latest": true, "movers": true}),
        "{watchlist}"
    );
    assert_eq!(
        seen["searched"],
        serde_json::json!({"who": "· influencer-1000003", "followers": "10,000", "moversHidden": true}),
        "search by a username's start, in another case, opens the influencer"
    );
    // The gaps: the page shows what the gaps endpoint counts, and shades each run (the two
    // missing minutes, and the first ten minutes of the hour, before the points began).
    let (expected, missing) = (
        seen["expected"].as_i64().unwrap(),
        seen["missing"].as_i64().unwrap(),
    );
    assert_eq!(expected - missing, 48, "{seen}");
    assert!((59..=61).contains(&expected), "{seen}");
    assert!(seen["gapRuns"].as_i64().unwrap() >= 2, "{seen}");
    assert!(
        seen["gapsText"]
            .as_str()
            .unwrap()
            .contains(&format!("{missing} of {expected} polls missing")),
        "{seen}"
    );
    assert_eq!(
        seen["charts"],
        serde_json::json!([true, true, true, true]),
        "every chart drew"
    );
    // Each chart holds the stored series, in time order: what the test inserted, point for point.
    let minutes: Vec<i64> = stored_minutes.iter().rev().copied().collect();
    let times: Vec<i64> = minutes
        .iter()
        .map(|&m| slot_ms(m).div_euclid(1000))
        .collect();
    let followers: Vec<i32> = minutes
        .iter()
        .map(|m| 50_000 + (m * 137 % 5000) as i32)
        .collect();
    let following: Vec<i32> = minutes.iter().map(|m| 1300 + (m % 40) as i32).collect();
    let ratios: Vec<f64> = followers
        .iter()
        .zip(&following)
        .map(|(f, g)| follower_ratio(*f, *g).unwrap())
        .collect();
    let series = &seen["series"];
    assert_eq!(series["followers"], serde_json::json!([times, followers]));
    assert_eq!(series["following"], serde_json::json!([times, following]));
    assert_eq!(series["ratio"], serde_json::json!([times, ratios]));
    assert_eq!(
        series["average"][1],
        serde_json::json!([52388.7]),
        "the one stored minute"
    );
    assert_eq!(seen["followers"], "57,166");
    assert_eq!(seen["following"], "1,328");
    assert_eq!(seen["ratio"], "43.05");
    assert!(
        seen["rank"].as_str().unwrap().starts_with("#2 of 3"),
        "{}",
        seen["rank"]
    );
    assert_eq!(seen["suspicious"], "suspicious (mockstagram)");
    assert_eq!(
        seen["why"],
        "mockstagram: suspicious (followers/following = 500/100)\n\
         spike: not suspicious (largest minute change 57,000 → 57,166 at 2023-11-14 22:13 UTC, z = 3.2)"
    );
    assert!(
        seen["average"]
            .as_str()
            .unwrap()
            .contains("52,389 across 3"),
        "{}",
        seen["average"]
    );
    assert!(
        seen["unknown"]
            .as_str()
            .unwrap()
            .contains("Unknown influencer")
    );
    // Issue 18: an unknown range in the link asked the API for start_time=NaN. The default
    // view, the last day, holds the point of 70 minutes ago too.
    assert_eq!(
        seen["badRange"],
        serde_json::json!({"points": 49, "range": "86400", "message": ""}),
        "a link with an unknown range opens the default view"
    );
    // With API_KEYS the page asks for a key once, says so when one is refused, and keeps it
    // for the tab (before: every request of the page got a 401).
    let keyed = &seen["keyed"];
    assert!(
        keyed["asked"]
            .as_str()
            .unwrap()
            .contains("wants an API key"),
        "{keyed}"
    );
    assert!(
        keyed["refused"].as_str().unwrap().contains("was refused"),
        "{keyed}"
    );
    assert_eq!(keyed["points"], 48, "{keyed}");
    assert_eq!(
        keyed["afterReload"],
        serde_json::json!({"points": 48, "asked": false}),
        "{keyed}"
    );
    assert_eq!(seen["errors"], serde_json::json!([]), "no script errors");
}

/// `n` with thousands separated by commas, as the page writes it.
fn format_thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}
