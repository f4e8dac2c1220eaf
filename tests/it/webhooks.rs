//! Webhooks end to end: endpoints created over the API, events written to the log, the
//! `webhooks` role delivering them to receivers run here. Signatures are checked with the
//! Standard Webhooks specification's own Python library (PyPI's `standardwebhooks`, which
//! `scripts/test` installs); retries come in order with growing waits; a dead or slow endpoint
//! does not hold the others back and drains its backlog when it returns; one that fails for
//! WEBHOOK_RETRY_FOR is disabled and says why.

use std::{
    collections::BTreeSet,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode as AxumStatus},
    response::IntoResponse,
};
use influencer_analytics::{
    api::ApiState,
    config::WebhookSettings,
    events::{self, EventType, NewEvent},
    roles::Roles,
    testing::TestDb,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::api::TestApi;

/// How a receiver answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Ok,
    /// 503 to everything.
    Down,
    /// 503 to the first n requests, then 204.
    FailFirst(usize),
    /// 204 after this long.
    Slow(Duration),
    /// 302 to elsewhere.
    Redirect,
}

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    id: String,
    timestamp: String,
    signature: String,
    body: String,
    answered_ok: bool,
}

#[derive(Clone)]
struct Receiver {
    url: String,
    mode: Arc<Mutex<Mode>>,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(mode: Mode) -> Self {
        let receiver = Receiver {
            url: String::new(),
            mode: Arc::new(Mutex::new(mode)),
            got: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, ..receiver }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// The event ids it answered 2xx to, deduplicated as a receiver does (by `webhook-id`).
    fn delivered(&self) -> BTreeSet<String> {
        self.got()
            .into_iter()
            .filter(|r| r.answered_ok)
            .map(|r| r.id)
            .collect()
    }

    async fn wait_for(&self, count: usize, within: Duration) -> BTreeSet<String> {
        let deadline = Instant::now() + within;
        loop {
            let delivered = self.delivered();
            if delivered.len() >= count || Instant::now() > deadline {
                return delivered;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let mode = *receiver.mode.lock().unwrap();
    let seen = receiver.got.lock().unwrap().len();
    let status = match mode {
        Mode::Ok => AxumStatus::NO_CONTENT,
        Mode::Down => AxumStatus::SERVICE_UNAVAILABLE,
        Mode::FailFirst(n) if seen < n => AxumStatus::SERVICE_UNAVAILABLE,
        Mode::FailFirst(_) => AxumStatus::NO_CONTENT,
        Mode::Slow(pause) => {
            tokio::time::sleep(pause).await;
            AxumStatus::NO_CONTENT
        }
        Mode::Redirect => AxumStatus::FOUND,
    };
    receiver.got.lock().unwrap().push(Received {
        at: Instant::now(),
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: String::from_utf8(body.to_vec()).unwrap(),
        answered_ok: status.is_success(),
    });
    if status == AxumStatus::FOUND {
        return (status, [("location", "http://127.0.0.1:9/elsewhere")]).into_response();
    }
    status.into_response()
}

fn quick_retries() -> WebhookSettings {
    WebhookSettings {
        webhook_allow_private: true,
        webhook_timeout: Duration::from_secs(10),
        webhook_retry_first: Duration::from_millis(100),
        webhook_retry_max: Duration::from_millis(400),
        webhook_retry_for: Duration::from_secs(3600),
    }
}

/// The API, and the `webhooks` role delivering as `settings` say.
async fn start(settings: WebhookSettings) -> (TestApi, Roles) {
    let db = TestDb::new().await;
    let state = ApiState::new(db.pool.clone(), Duration::from_secs(60)).with_webhooks(&settings);
    let api = TestApi::serving(db, state).await;
    let mut roles = Roles::new(CancellationToken::new());
    roles.webhooks(api.db.pool.clone(), settings);
    (api, roles)
}

async fn post(api: &TestApi, path: &str, body: Value) -> (StatusCode, Value) {
    let answer = api
        .client
        .post(format!("{}{path}", api.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    (status, answer.json().await.unwrap_or(Value::Null))
}

/// Creates a webhook; its id and secret.
async fn subscribe(api: &TestApi, body: Value) -> (i64, String) {
    let (status, created) = post(api, "/webhooks", body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    (
        created["id"].as_i64().unwrap(),
        created["secret"].as_str().unwrap().to_string(),
    )
}

fn event(kind: EventType, influencer_id: i64, n: i64) -> NewEvent {
    NewEvent {
        kind,
        influencer_id,
        slot_ms: Some(1_700_000_000_000 + n * 60_000),
        data: json!({"n": n}),
    }
}

/// Checks every request's signature with the Standard Webhooks library; how many it
/// accepted. One request is also sent with its body altered, which must be refused.
fn verified_by_the_standard_library(secret: &str, got: &[Received], dir: &Path) -> usize {
    let requests: Vec<Value> = got
        .iter()
        .map(|r| {
            json!({"id": r.id, "timestamp": r.timestamp, "signature": r.signature, "body": r.body})
        })
        .collect();
    let file = dir.join("requests.json");
    std::fs::write(&file, serde_json::to_vec(&requests).unwrap()).unwrap();
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
secret, path = sys.argv[1], sys.argv[2]
hook = Webhook(secret)
accepted = 0
for r in json.load(open(path)):
    headers = {"webhook-id": r["id"], "webhook-timestamp": r["timestamp"], "webhook-signature": r["signature"]}
    hook.verify(r["body"], headers)
    accepted += 1
    try:
        hook.verify(r["body"] + " ", headers)
        sys.exit("an altered body was accepted")
    except WebhookVerificationError:
        pass
print(accepted)
"#;
    let output = std::process::Command::new("python3")
        .args(["-c", script, secret, file.to_str().unwrap()])
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "standardwebhooks (python3 -m pip install standardwebhooks): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn deliveries_are_signed_retried_with_growing_waits_and_filtered() {
    let (api, _roles) = start(quick_retries()).await;
    for id in 1..=2 {
        api.register(id).await;
    }
    post(&api, "/watchlists", json!({"name": "campaign"})).await;
    let (status, _) = put(&api, "/watchlists/campaign/members", json!({"ids": [2]})).await;
    assert_eq!(status, StatusCode::OK);
    // Events before a webhook exists are not sent to it.
    events::record(&api.db.pool, &[event(EventType::Spike, 1, 0)])
        .await
        .unwrap();
    let all = Receiver::start(Mode::FailFirst(5)).await;
    let (all_id, secret) = subscribe(&api, json!({"url": all.url})).await;
    let milestones = Receiver::start(Mode::Ok).await;
    let (_, _) = subscribe(
        &api,
        json!({"url": milestones.url, "events": ["milestone"], "watchlist": "campaign"}),
    )
    .await;
    let logged = events::record(
        &api.db.pool,
        &[
            event(EventType::Spike, 1, 1),
            event(EventType::Milestone, 2, 2),
            event(EventType::Milestone, 1, 3),
        ],
    )
    .await
    .unwrap();
    let expected: BTreeSet<String> = logged.iter().map(|id| format!("evt_{id}")).collect();
    assert_eq!(all.wait_for(3, Duration::from_secs(30)).await, expected);
    let only = milestones.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(only, BTreeSet::from([format!("evt_{}", logged[1])]));

    // The first three attempts were the batch (refused); then the first event alone, again
    // and again, each wait twice the last (100, 200, 400 ms) until it was taken.
    let got = all.got();
    let first = format!("evt_{}", logged[0]);
    let retries: Vec<&Received> = got[3..].iter().take_while(|r| r.id == first).collect();
    assert_eq!(
        retries.len(),
        3,
        "{:?}",
        got.iter().map(|r| &r.id).collect::<Vec<_>>()
    );
    assert!(retries[2].answered_ok && !retries[1].answered_ok);
    let waits = [
        retries[0].at - got[2].at,
        retries[1].at - retries[0].at,
        retries[2].at - retries[1].at,
    ];
    for (wait, least) in waits.iter().zip([100, 200, 400]) {
        assert!(*wait >= Duration::from_millis(least - 5), "{waits:?}");
    }
    let body: Value = serde_json::from_str(&retries[2].body).unwrap();
    assert_eq!(body["type"], "spike");
    assert_eq!(body["data"]["id"], logged[0]);
    assert_eq!(body["data"]["influencer_id"], 1);
    assert_eq!(body["data"]["data"]["n"], 1);
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        verified_by_the_standard_library(&secret, &got, dir.path()),
        got.len()
    );

    // The attempts, newest first: the first event's four, numbered.
    let (status, _, page) = api
        .get(&format!("/webhooks/{all_id}/deliveries?limit=1000"))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let of_first: Vec<(i64, bool, Option<i64>)> = page["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["event_id"] == logged[0])
        .map(|d| {
            (
                d["attempt"].as_i64().unwrap(),
                d["delivered"].as_bool().unwrap(),
                d["status_code"].as_i64(),
            )
        })
        .collect();
    assert_eq!(
        of_first,
        [
            (4, true, Some(204)),
            (3, false, Some(503)),
            (2, false, Some(503)),
            (1, false, Some(503))
        ]
    );
    let (_, _, view) = api.get(&format!("/webhooks/{all_id}")).await;
    assert_eq!(view["status"], "active");
    assert_eq!(view["delivered_through"], logged[2]);
    assert!(
        view.get("secret").is_none(),
        "the secret is shown once: {view}"
    );
}

async fn put(api: &TestApi, path: &str, body: Value) -> (StatusCode, Value) {
    let answer = api
        .client
        .put(format!("{}{path}", api.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    (status, answer.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_dead_or_slow_endpoint_does_not_hold_the_others_and_drains_when_back() {
    let (api, _roles) = start(quick_retries()).await;
    api.register(1).await;
    let dead = Receiver::start(Mode::Down).await;
    let slow = Receiver::start(Mode::Slow(Duration::from_secs(2))).await;
    let healthy = Receiver::start(Mode::Ok).await;
    for receiver in [&dead, &slow, &healthy] {
        subscribe(&api, json!({"url": receiver.url})).await;
    }
    let batch: Vec<NewEvent> = (0..40).map(|n| event(EventType::Spike, 1, n)).collect();
    let logged = events::record(&api.db.pool, &batch).await.unwrap();
    let healthy_got = healthy.wait_for(40, Duration::from_secs(30)).await;
    assert_eq!(healthy_got.len(), 40);
    // Meanwhile the dead one delivered nothing and the slow one at most its first batch.
    assert!(dead.delivered().is_empty());
    assert!(slow.delivered().len() < 40, "{}", slow.delivered().len());
    dead.set(Mode::Ok);
    assert_eq!(
        dead.wait_for(40, Duration::from_secs(30)).await,
        healthy_got
    );
    assert_eq!(
        slow.wait_for(40, Duration::from_secs(60)).await,
        healthy_got
    );
    // Each endpoint's cursor moves past the last event (once the deliverer has recorded what
    // the receiver already has: a moment after the last answer).
    let last = *logged.last().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let list = loop {
        let (_, _, list) = api.get("/webhooks").await;
        let through: Vec<i64> = list["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|view| view["delivered_through"].as_i64().unwrap())
            .collect();
        if through.iter().all(|t| *t == last) || Instant::now() > deadline {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for view in list["webhooks"].as_array().unwrap() {
        assert_eq!(view["delivered_through"], last, "{view}");
        assert_eq!(view["status"], "active", "{view}");
    }
}

#[tokio::test]
async fn an_endpoint_failing_for_retry_for_is_disabled_and_can_be_enabled() {
    let settings = WebhookSettings {
        webhook_retry_for: Duration::from_secs(1),
        ..quick_retries()
    };
    let (api, _roles) = start(settings).await;
    api.register(1).await;
    let receiver = Receiver::start(Mode::Redirect).await;
    let (id, _) = subscribe(&api, json!({"url": receiver.url, "events": ["stale"]})).await;
    let logged = events::record(&api.db.pool, &[event(EventType::Stale, 1, 0)])
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let view = loop {
        let (_, _, view) = api.get(&format!("/webhooks/{id}")).await;
        if view["status"] == "disabled" || Instant::now() > deadline {
            break view;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(view["status"], "disabled", "{view}");
    let reason = view["disabled_reason"].as_str().unwrap();
    assert!(reason.contains("redirects are not followed"), "{reason}");
    assert!(reason.contains("WEBHOOK_RETRY_FOR=1s"), "{reason}");
    // Disabled: nothing more is sent.
    let sent = receiver.got().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.got().len(), sent);
    // Enabled again, it resumes with the event it was not sent.
    receiver.set(Mode::Ok);
    let (status, view) = post(&api, &format!("/webhooks/{id}/enable"), json!({})).await;
    assert_eq!(
        (status, view["status"].as_str()),
        (StatusCode::OK, Some("active"))
    );
    let delivered = receiver.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(delivered, BTreeSet::from([format!("evt_{}", logged[0])]));
}

#[tokio::test]
async fn the_api_checks_webhooks_and_shows_the_secret_once() {
    let db = TestDb::new().await;
    let state = ApiState::new(db.pool.clone(), Duration::from_secs(60));
    let api = TestApi::serving(db, state).await;
    let refused = |url: &str| json!({"url": url});
    for (body, status, says) in [
        (
            refused("http://127.0.0.1:9/hook"),
            StatusCode::BAD_REQUEST,
            "WEBHOOK_ALLOW_PRIVATE",
        ),
        (
            refused("http://169.254.169.254/"),
            StatusCode::BAD_REQUEST,
            "WEBHOOK_ALLOW_PRIVATE",
        ),
        (
            refused("ftp://example.com/"),
            StatusCode::BAD_REQUEST,
            "scheme",
        ),
        (
            json!({"url": "https://example.com/in", "events": ["spikes"]}),
            StatusCode::BAD_REQUEST,
            "unknown variant",
        ),
        (
            json!({"url": "https://example.com/in", "top_n": 0}),
            StatusCode::BAD_REQUEST,
            "top_n",
        ),
        (
            json!({"url": "https://example.com/in", "watchlist": "nobody"}),
            StatusCode::NOT_FOUND,
            "nobody",
        ),
    ] {
        let (got, problem) = post(&api, "/webhooks", body.clone()).await;
        assert_eq!(got, status, "{body}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(says),
            "{problem}"
        );
    }
    post(&api, "/watchlists", json!({"name": "campaign"})).await;
    let body = json!({"url": "https://example.com/in", "events": ["spike", "milestone"], "watchlist": "campaign"});
    let (status, created) = post(&api, "/webhooks", body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    // A whole number written as 50.0 is a whole number (schemathesis found the 400 it got).
    let fifty = json!({"url": "https://example.com/top", "top_n": 50.0});
    let (status, top) = post(&api, "/webhooks", fifty).await;
    assert_eq!(
        (status, &top["top_n"]),
        (StatusCode::CREATED, &json!(50)),
        "{top}"
    );
    let (status, _) = post(
        &api,
        "/webhooks",
        json!({"url": "https://example.com/x", "top_n": 2.5}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(created["events"], json!(["spike", "milestone"]));
    assert_eq!(
        created["top_n"], 100,
        "the top 100's top_n events by default"
    );
    let id = created["id"].as_i64().unwrap();
    let (_, _, list) = api.get("/webhooks").await;
    assert_eq!(list["webhooks"][0]["id"], id);
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 2);
    assert!(list["webhooks"][0].get("secret").is_none(), "{list}");
    // The watchlist cannot go while a webhook is sent its events.
    let delete = |path: String| api.client.delete(format!("{}{path}", api.base)).send();
    let answer = delete("/watchlists/campaign".into()).await.unwrap();
    assert_eq!(answer.status(), StatusCode::CONFLICT);
    assert_eq!(
        delete(format!("/webhooks/{id}")).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        delete(format!("/webhooks/{id}")).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        delete("/watchlists/campaign".into())
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    let (status, _, _) = api.get(&format!("/webhooks/{id}/deliveries")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = api.get("/webhooks/abc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// A spike the simulator stages travels the whole pipeline: polled every second, queued,
/// stored by the sink (whose screen notes it in the same write), decided by the `spikes` role
/// on the stored history, delivered signed. No minutely job runs here: only the path as the
/// data arrives can find it. The event names a staged jump's first slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_spike_reaches_a_receiver_through_the_pipeline() {
    use influencer_analytics::{
        config::{ServiceUrl, SinkSettings, UpstreamSettings},
        fetch::MockstagramClient,
        seed,
        testing::{TestBroker, TestSimulator, simulator_settings},
    };
    let (api, mut roles) = start(quick_retries()).await;
    let queues = TestBroker::new().await;
    let sim = TestSimulator::start(influencer_analytics::config::SimulatorSettings {
        spike_share: 1.0,
        spike_every: Duration::from_secs(40),
        ..simulator_settings(3, 5)
    })
    .await;
    let interval = Duration::from_secs(1);
    let pks = [1_000_000, 1_000_001, 1_000_002];
    seed::seed(&api.db.pool, &queues.broker, interval, &pks)
        .await
        .unwrap();
    let receiver = Receiver::start(Mode::Ok).await;
    let (_, secret) = subscribe(&api, json!({"url": receiver.url, "events": ["spike"]})).await;
    let started_ms = chrono::Utc::now().timestamp_millis();
    let upstream = UpstreamSettings {
        mockstagram_url: ServiceUrl::parse(&format!("http://{}", sim.addr), &["http"]).unwrap(),
        mockstagram_rps: None,
        mockstagram_timeout: Duration::from_millis(400),
        mockstagram_concurrency: 8,
        mockstagram_ca_file: None,
    };
    let pool = api.db.pool.clone();
    let client = MockstagramClient::new(&upstream).unwrap();
    roles.poll(pool.clone(), queues.settings.clone(), client, interval);
    let sink = SinkSettings {
        sink_batch_rows: 5000,
        sink_batch_wait: Duration::from_millis(100),
        sink_prefetch: 200,
        sink_max_hold: Duration::from_secs(600),
    };
    roles.sink(pool.clone(), queues.settings.clone(), sink);
    roles.spikes(pool.clone(), 10.0);
    // Thirty changes first (the rule's least), then each pk jumps every 40 s.
    let got = receiver.wait_for(1, Duration::from_secs(150)).await;
    assert!(!got.is_empty(), "no spike delivered in 150 s");
    let dir = tempfile::tempdir().unwrap();
    let first = receiver.got()[0].clone();
    assert_eq!(
        verified_by_the_standard_library(&secret, std::slice::from_ref(&first), dir.path()),
        1
    );
    let body: Value = serde_json::from_str(&first.body).unwrap();
    let event = &body["data"];
    assert_eq!(body["type"], "spike", "{body}");
    assert_eq!(event["data"]["metric"], "followers", "{body}");
    let change = event["data"]["change"].as_i64().unwrap();
    assert!(
        change.abs() > 100_000,
        "the staged 150,000, give or take the walk: {body}"
    );
    let pk = event["influencer_id"].as_i64().unwrap();
    let slot_ms = event["slot"].as_i64().unwrap() * 1000;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let jumps = sim.simulator.spike_times(pk, started_ms, now_ms);
    assert!(
        // (the slot is given in whole seconds, and its fetch comes a little after it)
        jumps
            .iter()
            .any(|&t| (-1_000..2_000).contains(&(slot_ms - t))),
        "slot {slot_ms} is not within a poll of a staged jump {jumps:?}: {body}"
    );
    roles.shutdown().cancel();
    roles.wait().await.unwrap();
}
