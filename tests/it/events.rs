//! Events: spikes screened by the sink as it stores each point and decided on the
//! influencer's stored last two hours by the `spikes` role; the detection job over minute
//! marks (a milestone with its band, stale and recovered); the
//! log read as pages by type and watchlist, and the live stream resuming after
//! `Last-Event-ID` without a gap or a repeat.

use std::time::Duration;

use chrono::{DateTime, Utc};
use influencer_analytics::{
    config::EventSettings,
    events::{self, EventType, NewEvent},
    jobs::events::Detection,
    jobs::spikes,
    model::Point,
    queue::points::Outcomes,
    series::Snapshot,
    sink::writer,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::api::TestApi;

const MINUTE_MS: i64 = 60_000;

fn settings() -> EventSettings {
    EventSettings {
        webhooks: Default::default(),
        events_retention: Duration::from_secs(30 * 86_400),
        event_stale_slots: 5,
        event_spike_z: 10.0,
    }
}

/// Each minute's wobble, drawn anew from -500 to 500 (deterministic).
fn wobble(minute: i64) -> i32 {
    (((minute as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % 1_001) as i32 - 500
}

/// The events of the log as `(type, influencer)`, in id order.
async fn logged(api: &TestApi) -> Vec<(String, i64)> {
    let (status, _, page) = api.get("/events?after=0&limit=1000").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["influencer_id"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Stores one point through the sink's writer (which runs the spike screen).
async fn store(api: &TestApi, id: i64, slot_ms: i64, followers: i32, following: i32) {
    let outcomes = Outcomes {
        points: vec![Point {
            pk: id,
            slot_ms,
            fetched_ms: slot_ms + 20,
            follower_count: followers,
            following_count: following,
        }],
        ..Outcomes::default()
    };
    writer::write(&api.db.pool, &[&outcomes]).await.unwrap();
}

/// The candidates the screen has noted and not yet decided: `(influencer, slot ms, metrics)`.
async fn noted(api: &TestApi) -> Vec<(i64, i64, i16)> {
    sqlx::query_as(
        "select influencer_id, (extract(epoch from slot) * 1000)::bigint, metrics
         from spike_candidates order by noted_at, influencer_id",
    )
    .fetch_all(&api.db.pool)
    .await
    .unwrap()
}

/// Points stored through the sink from 45 minutes ago: influencer 1 walks at 200,000 and its
/// followers jump by 60,000 at minute 40; 2 walks the same way but its following jumps at
/// minute 5, before the screen has seen ten changes; 3 walks without a jump. Only 1's jump is
/// noted, at once, and the `spikes` role's decision logs it with its numbers and lists.
#[tokio::test]
async fn a_spike_is_screened_as_it_is_stored_and_decided_on_its_last_two_hours() {
    let api = TestApi::start().await;
    for id in 1..=3 {
        api.register(id).await;
    }
    sqlx::query("insert into watchlists (name) values ('campaign')")
        .execute(&api.db.pool)
        .await
        .unwrap();
    sqlx::query("insert into watchlist_members (watchlist, influencer_id) values ('campaign', 1)")
        .execute(&api.db.pool)
        .await
        .unwrap();
    let base = (Utc::now().timestamp_millis() / MINUTE_MS - 45) * MINUTE_MS;
    let slot = |minute: i64| base + minute * MINUTE_MS + 1_234;
    for minute in 0..40 {
        let following = 900 + if minute >= 5 { 5_000 } else { 0 };
        store(&api, 1, slot(minute), 200_000 + wobble(minute), 900).await;
        store(&api, 2, slot(minute), 300_000 + wobble(minute), following).await;
        store(&api, 3, slot(minute), 400_000 + wobble(minute + 7), 900).await;
    }
    assert_eq!(noted(&api).await, [], "neither the walk nor an early jump");
    let jumped = 200_000 + wobble(40) + 60_000;
    store(&api, 1, slot(40), jumped, 900).await;
    store(&api, 3, slot(40), 400_000 + wobble(47), 900).await;
    assert_eq!(noted(&api).await, [(1, slot(40), 1)], "noted when stored");
    let decided = spikes::decide_pending(&api.db.pool, 10.0).await.unwrap();
    assert_eq!((decided.candidates, decided.spikes), (1, 1));
    assert_eq!(noted(&api).await, [], "decided once");
    let (status, _, spikes) = api.get("/events?type=spike&watchlist=campaign").await;
    assert_eq!(status, StatusCode::OK, "{spikes}");
    let spike = &spikes["items"][0];
    assert_eq!(spike["influencer_id"], 1);
    assert_eq!(spike["watchlists"], json!(["campaign"]));
    assert_eq!(spike["data"]["metric"], "followers");
    assert_eq!(spike["data"]["from"], 200_000 + wobble(39));
    assert_eq!(spike["data"]["to"], jumped);
    assert!(spike["data"]["z"].as_f64().unwrap() >= 10.0, "{spike}");
    assert_eq!(spike["slot"], slot(40) / 1000);
    // A point of an older slot arriving late changes nothing, and is not screened.
    store(&api, 1, slot(40) - 30_000, 100_000, 900).await;
    assert_eq!(noted(&api).await, []);
    assert_eq!(logged(&api).await, [("spike".to_string(), 1)]);
}

/// A candidate the rule cannot call a spike (a jump after 15 changes: the screen has seen its
/// ten, the rule wants thirty in the two hours) is decided and dropped without an event; one
/// older than the role's limit is dropped counted.
#[tokio::test]
async fn candidates_that_are_not_spikes_or_too_old_log_nothing() {
    let api = TestApi::start().await;
    api.register(1).await;
    let base = (Utc::now().timestamp_millis() / MINUTE_MS - 20) * MINUTE_MS;
    let slot = |minute: i64| base + minute * MINUTE_MS + 1_234;
    for minute in 0..16 {
        let jump = if minute == 15 { 80_000 } else { 0 };
        store(&api, 1, slot(minute), 200_000 + wobble(minute) + jump, 900).await;
    }
    assert_eq!(noted(&api).await, [(1, slot(15), 1)]);
    let decided = spikes::decide_pending(&api.db.pool, 10.0).await.unwrap();
    assert_eq!((decided.candidates, decided.spikes), (1, 0));
    assert_eq!(logged(&api).await, []);
    sqlx::query(
        "insert into spike_candidates (influencer_id, slot, metrics, noted_at)
         values (1, now(), 1, now() - interval '10 minutes')",
    )
    .execute(&api.db.pool)
    .await
    .unwrap();
    let decided = spikes::decide_pending(&api.db.pool, 10.0).await.unwrap();
    assert_eq!((decided.candidates, decided.skipped), (0, 1));
    assert_eq!(noted(&api).await, []);
}

/// Minute marks from 45 minutes ago: 2 walks just under 1,000,000 and passes it at minute 40,
/// then hovers; 3 stops at minute 30 and comes back at 42. Each mark is observed 30 s after
/// its slots.
#[tokio::test]
async fn detection_logs_a_milestone_and_staleness_once_each() {
    let api = TestApi::start().await;
    for id in 1..=3 {
        api.register(id).await;
    }
    let base = (Utc::now().timestamp_millis() / MINUTE_MS - 45) * MINUTE_MS;
    let mut detection = Detection::new(settings());
    let mut three_at = 0;
    for minute in 0..44 {
        let slot = base + minute * MINUTE_MS + 1_234;
        let two = match minute {
            ..40 => 999_000 + wobble(minute) / 2,
            40 => 1_000_100,
            _ => 999_000,
        };
        if !(31..42).contains(&minute) {
            three_at = slot;
        }
        let mut mark = Snapshot::default();
        mark.push(1, 200_000 + wobble(minute), 900, slot);
        mark.push(2, two, 50, slot);
        mark.push(3, 5_000, 10, three_at);
        let now = DateTime::from_timestamp_millis(slot + 30_000).unwrap();
        detection.on_mark(&api.db.pool, mark, now).await.unwrap();
    }
    let kinds = logged(&api).await;
    assert_eq!(
        kinds,
        [
            ("stale".to_string(), 3),
            ("milestone".to_string(), 2),
            ("recovered".to_string(), 3),
        ],
        "in the order detected"
    );
    let (_, _, milestone) = api.get("/events?type=milestone").await;
    assert_eq!(milestone["items"][0]["data"]["milestone"], 1_000_000);
    assert_eq!(milestone["items"][0]["data"]["direction"], "up");
    assert_eq!(milestone["items"][0]["watchlists"], json!([]));
    let (_, _, other_list) = api.get("/events?watchlist=nobody").await;
    assert_eq!(other_list["items"], json!([]));
}

#[tokio::test]
async fn a_process_taking_detection_over_takes_the_logs_word_and_raises_nothing_twice() {
    let api = TestApi::start().await;
    api.register(7).await;
    // Another process logged: 7 passed 50,000 and went stale.
    events::record(
        &api.db.pool,
        &[
            NewEvent {
                kind: EventType::Milestone,
                influencer_id: 7,
                slot_ms: Some(0),
                data: json!({"milestone": 50_000, "direction": "up", "followers": 50_100}),
            },
            NewEvent {
                kind: EventType::Stale,
                influencer_id: 7,
                slot_ms: Some(0),
                data: json!({}),
            },
        ],
    )
    .await
    .unwrap();
    let now = Utc::now();
    let slot = now.timestamp_millis() - 20_000;
    let mut mark = Snapshot::default();
    mark.push(7, 48_000, 10, slot - MINUTE_MS);
    let mut detection = Detection::new(settings());
    // First sight after the takeover: nothing new is raised for the old state...
    detection.on_mark(&api.db.pool, mark, now).await.unwrap();
    // ...and the next value, in the band under 50,000 and fresh, recovers without a milestone.
    let mut next = Snapshot::default();
    next.push(7, 48_000, 10, slot);
    detection
        .on_mark(&api.db.pool, next, now + chrono::TimeDelta::seconds(60))
        .await
        .unwrap();
    let kinds = logged(&api).await;
    assert_eq!(
        kinds,
        [
            ("milestone".to_string(), 7),
            ("stale".to_string(), 7),
            ("recovered".to_string(), 7),
        ]
    );
}

#[tokio::test]
async fn bad_event_queries_are_400s_naming_the_parameter() {
    let api = TestApi::start().await;
    for (query, expected) in [
        ("type=spike,bogus", "unknown event type \"bogus\""),
        ("watchlist=-x", "Invalid watchlist name"),
        ("after=-1", "after"),
        ("influencer_id=0", "influencer_id"),
        ("top_n=0", "top_n"),
        ("limit=0", "limit"),
    ] {
        let (status, _, problem) = api.get(&format!("/events?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {problem}");
        let said = format!(
            "{} {}",
            problem["title"],
            problem["detail"].as_str().unwrap()
        );
        assert!(said.contains(expected), "{query}: {problem}");
    }
}

/// Reads a stream's events until `n` have come: `(id, type)` each.
async fn read_stream(response: &mut reqwest::Response, n: usize) -> Vec<(i64, String)> {
    let mut text = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("the stream goes on");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let id = block.lines().find_map(|l| l.strip_prefix("id: "));
            let kind = block.lines().find_map(|l| l.strip_prefix("event: "));
            if let (Some(id), Some(kind)) = (id, kind) {
                out.push((id.parse().unwrap(), kind.to_string()));
            }
        }
    }
    out
}

fn event(kind: EventType, id: i64) -> NewEvent {
    NewEvent {
        kind,
        influencer_id: id,
        slot_ms: None,
        data: json!({"n": id}),
    }
}

#[tokio::test]
async fn the_stream_resumes_after_last_event_id_and_delivers_new_events_live() {
    let api = TestApi::start().await;
    let ids = events::record(
        &api.db.pool,
        &[
            event(EventType::Spike, 1),
            event(EventType::Stale, 2),
            event(EventType::Spike, 3),
        ],
    )
    .await
    .unwrap();
    let open = |last: Option<i64>, query: &str| {
        let mut request = api
            .client
            .get(format!("{}/events{query}", api.base))
            .header("accept", "text/event-stream");
        if let Some(last) = last {
            request = request.header("last-event-id", last.to_string());
        }
        request.send()
    };
    // Resumed after the first: the two others, then one logged while it listens.
    let mut stream = open(Some(ids[0]), "").await.unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert_eq!(
        stream.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut seen = read_stream(&mut stream, 2).await;
    let live = events::record(&api.db.pool, &[event(EventType::Milestone, 4)])
        .await
        .unwrap();
    seen.extend(read_stream(&mut stream, 1).await);
    assert_eq!(
        seen,
        [
            (ids[1], "stale".to_string()),
            (ids[2], "spike".to_string()),
            (live[0], "milestone".to_string()),
        ]
    );
    drop(stream);
    // A client that dropped after the second reconnects: the rest, once each, filtered.
    let mut again = open(Some(ids[1]), "?type=spike,milestone").await.unwrap();
    assert_eq!(
        read_stream(&mut again, 2).await,
        [
            (ids[2], "spike".to_string()),
            (live[0], "milestone".to_string())
        ]
    );
    // `after=0`: from the oldest kept.
    let mut all = open(None, "?after=0").await.unwrap();
    assert_eq!(read_stream(&mut all, 4).await.len(), 4);
}

#[tokio::test]
async fn events_tail_prints_the_stream_as_json_lines() {
    let api = TestApi::start().await;
    let ids = events::record(
        &api.db.pool,
        &[event(EventType::Spike, 5), event(EventType::Verdict, 6)],
    )
    .await
    .unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_influencer-analytics"))
        .args([
            "events", "tail", "--api", &api.base, "--after", "0", "--count", "2",
        ])
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("tail ends after --count events")
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["id"], ids[0]);
    assert_eq!(lines[1]["type"], "verdict");
    assert_eq!(lines[1]["data"]["n"], 6);
}

/// `top_n`: the process that makes a ranking logs who entered or left each top (10, 100,
/// 1,000); the first ranking it sees is its baseline; `GET /events?top_n=` picks one size.
#[tokio::test]
async fn entering_and_leaving_the_top_ten_are_events_of_that_size() {
    let api = TestApi::start().await;
    for id in 1..=12 {
        api.influencer_with_latest(id, Utc::now().timestamp(), 10_000 - id as i32 * 100, 10)
            .await;
    }
    let mut detection = Detection::new(settings());
    influencer_analytics::jobs::ranking::refresh(&api.db.pool)
        .await
        .unwrap();
    assert_eq!(
        detection.on_ranking(&api.db.pool).await.unwrap(),
        0,
        "the baseline"
    );
    // 12 (place 12) jumps to the first place; 9 falls to the last, past 10 and its band of 1.
    sqlx::query(
        "update influencer_latest set follower_count = case influencer_id when 12 then 50000 else 1 end
         where influencer_id in (9, 12)",
    )
    .execute(&api.db.pool)
    .await
    .unwrap();
    influencer_analytics::jobs::ranking::refresh(&api.db.pool)
        .await
        .unwrap();
    let logged = detection.on_ranking(&api.db.pool).await.unwrap();
    let (status, _, page) = api.get("/events?type=top_n&top_n=10&after=0").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let seen: Vec<(i64, Value)> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["influencer_id"].as_i64().unwrap(), e["data"].clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (12, json!({"n": 10, "direction": "entered", "place": 1})),
            (9, json!({"n": 10, "direction": "left", "place": 12})),
        ],
        "{page}"
    );
    // The top 100 and 1,000 hold everyone: nothing changed there.
    assert_eq!(logged, 2);
    let (_, _, hundred) = api.get("/events?type=top_n&top_n=100&after=0").await;
    assert_eq!(hundred["items"], json!([]));
    // Nothing new: nothing logged.
    assert_eq!(detection.on_ranking(&api.db.pool).await.unwrap(), 0);
}
