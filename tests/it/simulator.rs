//! The simulator against the real server's contract (docs/mockstagram.md), over HTTP.

use std::time::{Duration, Instant};

use influencer_analytics::{
    config::FaultSettings,
    mockstagram::{Profile, SuspiciousResponse},
    simulator::{FOLLOWER_FLOOR, FOLLOWING_FLOOR},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use influencer_analytics::testing::{TestSimulator, simulator_settings};

async fn get(sim: &TestSimulator, pk: &str) -> reqwest::Response {
    influencer_analytics::tls::http_client()
        .get(sim.url(&format!("/api/v1/influencers/{pk}")))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_known_pk_answers_its_profile_as_the_real_server_does() {
    let sim = TestSimulator::start(simulator_settings(1000, 1)).await;
    let response = get(&sim, "1000000").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["keep-alive"], "timeout=5");
    let body = response.text().await.unwrap();
    let value: serde_json::Value = serde_json::from_str(&body).unwrap();
    let keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        ["followerCount", "followingCount", "pk", "username"].map(String::from)
    );
    let profile: Profile = serde_json::from_str(&body).unwrap();
    assert_eq!(profile.pk, 1_000_000);
    assert_eq!(profile.username, "influencer-1000000");
    assert!((80..=100).contains(&body.len()), "about 90 bytes: {body}");
}

#[tokio::test]
async fn unknown_and_non_numeric_pks_answer_500_influencer_not_found() {
    let sim = TestSimulator::start(simulator_settings(1000, 1)).await;
    for pk in [
        "abc",
        "999999",
        "1001000",
        "-1000000",
        "1000000.5",
        "%201000000",
    ] {
        let response = get(&sim, pk).await;
        assert_eq!(response.status(), 500, "pk {pk}");
        assert_eq!(
            response.text().await.unwrap(),
            r#"{"error":{"name":"InfluencerNotFoundError"}}"#,
            "pk {pk}"
        );
    }
}

#[tokio::test]
async fn every_call_moves_the_walk_and_keeps_the_floors() {
    let sim = TestSimulator::start(simulator_settings(10, 2)).await;
    let client = influencer_analytics::tls::http_client();
    let mut seen = Vec::new();
    for _ in 0..300 {
        let profile: Profile = client
            .get(sim.url("/api/v1/influencers/1000003"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(profile.follower_count >= FOLLOWER_FLOOR);
        assert!(profile.following_count >= FOLLOWING_FLOOR);
        seen.push((profile.follower_count, profile.following_count));
    }
    let changes = seen.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(
        changes >= 290,
        "two calls return different numbers ({changes}/299)"
    );
    assert_eq!(sim.simulator.calls(1_000_003), Some(300));
}

#[tokio::test]
async fn the_same_seed_answers_the_same_numbers() {
    let a = TestSimulator::start(simulator_settings(100, 99)).await;
    let b = TestSimulator::start(simulator_settings(100, 99)).await;
    let c = TestSimulator::start(simulator_settings(100, 100)).await;
    let mut answers = Vec::new();
    for sim in [&a, &b, &c] {
        let mut bodies = Vec::new();
        for pk in ["1000005", "1000005", "1000042"] {
            bodies.push(get(sim, pk).await.text().await.unwrap());
        }
        answers.push(bodies);
    }
    assert_eq!(answers[0], answers[1]);
    assert_ne!(answers[0], answers[2]);
}

async fn classify(sim: &TestSimulator, body: serde_json::Value) -> SuspiciousResponse {
    influencer_analytics::tls::http_client()
        .post(sim.url("/api/v1/influencers/is_suspicious"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn is_suspicious_applies_the_ratio_rule() {
    let sim = TestSimulator::start(simulator_settings(10, 1)).await;
    let ask = |followers: i64, following: i64| {
        serde_json::json!({"pk": 1000001, "username": "influencer-1000001",
                           "followerCount": followers, "followingCount": following})
    };
    let r = classify(&sim, ask(57166, 10_136)).await;
    assert_eq!(r.pk, 1_000_001);
    assert!(r.suspicious, "57166/10136 = 5.64");
    assert!(
        !classify(&sim, ask(57166, 10_135)).await.suspicious,
        "5.6403"
    );
    assert!(!classify(&sim, ask(100_000, 1000)).await.suspicious);
    let no_counts = classify(&sim, serde_json::json!({"pk": 1000001})).await;
    assert!(
        !no_counts.suspicious,
        "a body without the counts is not suspicious"
    );
}

#[tokio::test]
async fn is_suspicious_waits_about_a_second_at_scale_one() {
    let mut settings = simulator_settings(10, 1);
    settings.delay_scale = 1.0;
    let sim = TestSimulator::start(settings).await;
    let started = Instant::now();
    let asks = (0..40).map(|_| classify(&sim, serde_json::json!({"pk": 1000001})));
    futures_util::future::join_all(asks).await;
    // 40 in flight at once: the slowest of 40 draws of 1 s ± 1 s is well past 1 s, and
    // nothing waits for another, so the whole lot ends within a few seconds.
    let elapsed = started.elapsed();
    assert!(
        elapsed > Duration::from_millis(1500) && elapsed < Duration::from_secs(8),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn injected_faults_look_like_a_real_apis_faults() {
    let sim = TestSimulator::start(simulator_settings(10, 1)).await;
    sim.simulator.faults().set(&FaultSettings {
        fault_throttle: 1.0,
        retry_after: Duration::from_secs(3),
        ..FaultSettings::default()
    });
    let response = get(&sim, "1000001").await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "3");

    sim.simulator.faults().set(&FaultSettings {
        fault_error: 1.0,
        ..FaultSettings::default()
    });
    let response = get(&sim, "1000001").await;
    assert_eq!(response.status(), 500);
    let body = response.text().await.unwrap();
    assert!(
        !body.contains("InfluencerNotFoundError"),
        "retryable, not a not-found: {body}"
    );

    sim.simulator.faults().set(&FaultSettings {
        fault_malformed: 1.0,
        ..FaultSettings::default()
    });
    for _ in 0..20 {
        let response = get(&sim, "1000001").await;
        assert_eq!(response.status(), 200);
        let body = response.text().await.unwrap();
        assert!(
            serde_json::from_str::<Profile>(&body)
                .map(|p| p.follower_count < 0)
                .unwrap_or(true),
            "a malformed body must not parse as a valid profile: {body}"
        );
    }

    sim.simulator.faults().set(&FaultSettings {
        fault_slow: 1.0,
        slow_delay: Duration::from_secs(2),
        ..FaultSettings::default()
    });
    let client = influencer_analytics::tls::http_client_builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let error = client
        .get(sim.url("/api/v1/influencers/1000001"))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error}");

    sim.simulator.faults().set(&FaultSettings::default());
    assert_eq!(get(&sim, "1000001").await.status(), 200);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_five_seconds() {
    let sim = TestSimulator::start(simulator_settings(10, 1)).await;
    let mut stream = tokio::net::TcpStream::connect(sim.addr).await.unwrap();
    stream
        .write_all(b"GET /api/v1/influencers/1000001 HTTP/1.1\r\nHost: sim\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = [0u8; 1024];
    let n = stream.read(&mut buffer).await.unwrap();
    assert!(buffer[..n].starts_with(b"HTTP/1.1 200"));
    let idle = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(15), stream.read(&mut buffer))
        .await
        .expect("closed before 15 s")
        .unwrap_or(0);
    assert_eq!(n, 0, "the server closes the connection");
    let waited = idle.elapsed();
    assert!(
        waited >= Duration::from_millis(4500) && waited < Duration::from_secs(7),
        "{waited:?}"
    );
}
