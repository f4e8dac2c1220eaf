//! `bench webhooks`: events logged at a steady rate (10,000 a minute) and delivered by the
//! `webhooks` role to 10 receivers on this machine, one of them down for a stretch (10 of 15
//! minutes; 1 of 3 with `--quick`). Reports each event's time from its logging to its first
//! 2xx receipt (p50, p99) at the endpoints that stayed up, while the other was down and while
//! all were up; that every event reached every endpoint; how long the returning endpoint
//! took to drain its backlog; the duplicates received; and the bench process's CPU (the
//! deliverer, the receivers and the writer together) per thousand deliveries.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, extract::State, http::HeaderMap, http::StatusCode};
use tokio_util::sync::CancellationToken;

use super::{Goal, Report, Scenario, bench_database, ms, procs, quantile};
use crate::{
    config::{DatabaseSettings, WebhookSettings},
    events::{self, EventType, NewEvent},
    webhooks::{self, Deliverer, NewWebhook},
};

const ENDPOINTS: usize = 10;
const PER_MINUTE: u64 = 10_000;
/// Events are logged in a batch every this long.
const TICK: Duration = Duration::from_millis(100);

/// A receiver: when each event first reached it.
#[derive(Clone, Default)]
struct Receiver {
    down: Arc<AtomicBool>,
    first: Arc<Mutex<HashMap<i64, Instant>>>,
    duplicates: Arc<AtomicU64>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap) -> StatusCode {
    if r.down.load(Ordering::Relaxed) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("evt_")?.parse::<i64>().ok());
    let Some(id) = id else {
        return StatusCode::BAD_REQUEST;
    };
    let mut first = r.first.lock().unwrap();
    if first.insert(id, Instant::now()).is_some() {
        r.duplicates.fetch_add(1, Ordering::Relaxed);
    }
    StatusCode::NO_CONTENT
}

async fn start_receiver() -> anyhow::Result<(Receiver, String)> {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let app = Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((receiver, url))
}

/// The run's shape: how long events are logged, and when the first endpoint is down.
struct Plan {
    run: Duration,
    down_from: Duration,
    down_until: Duration,
}

impl Plan {
    fn new(quick: bool) -> Self {
        match quick {
            true => Plan {
                run: Duration::from_secs(180),
                down_from: Duration::from_secs(30),
                down_until: Duration::from_secs(90),
            },
            false => Plan {
                run: Duration::from_secs(900),
                down_from: Duration::from_secs(120),
                down_until: Duration::from_secs(720),
            },
        }
    }
}

/// The receivers, each with its webhook.
async fn receivers(pool: &sqlx::PgPool) -> anyhow::Result<Vec<Receiver>> {
    let mut receivers = Vec::new();
    for _ in 0..ENDPOINTS {
        let (receiver, url) = start_receiver().await?;
        let new = NewWebhook {
            url,
            events: Vec::new(),
            watchlist: None,
            top_n: 100,
        };
        webhooks::create(pool, &new).await?;
        receivers.push(receiver);
    }
    Ok(receivers)
}

pub async fn run(database: &DatabaseSettings, quick: bool) -> anyhow::Result<Report> {
    let plan = Plan::new(quick);
    let (pool, _bench) = bench_database(database, "webhooks", true).await?;
    let receivers = receivers(&pool).await?;
    let settings = WebhookSettings {
        webhook_allow_private: true,
        ..WebhookSettings::default()
    };
    let stop = CancellationToken::new();
    let deliverer = Deliverer::new(pool.clone(), settings, Deliverer::process_name())?;
    let delivering = tokio::spawn(deliverer.run(stop.clone()));
    let cpu_before = procs::cpu_seconds(std::process::id()).unwrap_or(0.0);
    let started = Instant::now();
    let logged = log_events(&pool, &plan, &receivers[0]).await?;
    let returned_at = started + plan.down_until;
    let drained = wait_for_all(&receivers, &logged, Duration::from_secs(600)).await;
    let cpu = procs::cpu_seconds(std::process::id()).unwrap_or(0.0) - cpu_before;
    stop.cancel();
    delivering.await??;
    let mut out = Report::new(
        Scenario::Webhooks,
        quick,
        format!(
            "{PER_MINUTE} events a minute for {} s to {ENDPOINTS} receivers on this machine (default WEBHOOK_* settings, WEBHOOK_ALLOW_PRIVATE on); endpoint 1 answers 503 from {} s to {} s",
            plan.run.as_secs(),
            plan.down_from.as_secs(),
            plan.down_until.as_secs()
        ),
    );
    figures(&mut out, &plan, started, &logged, &receivers);
    completeness(&mut out, &logged, &receivers, returned_at, drained);
    out.info(
        "bench process CPU a thousand deliveries",
        cpu * 1000.0 / (logged.len() * ENDPOINTS) as f64,
        "s",
    );
    Ok(out)
}

/// Whether every endpoint got every event, how long the returning one took to drain its
/// backlog, and the duplicates.
fn completeness(
    out: &mut Report,
    logged: &HashMap<i64, Instant>,
    receivers: &[Receiver],
    returned_at: Instant,
    drained: bool,
) {
    let missing: usize = receivers
        .iter()
        .map(|r| {
            let first = r.first.lock().unwrap();
            logged.keys().filter(|id| !first.contains_key(id)).count()
        })
        .sum();
    // The backlog: the events logged before endpoint 1 came back.
    let backlog_done = {
        let first = receivers[0].first.lock().unwrap();
        logged
            .iter()
            .filter(|(_, at)| **at < returned_at)
            .filter_map(|(id, _)| first.get(id))
            .max()
            .copied()
    };
    let drain = backlog_done.map_or(f64::NAN, |t| {
        t.saturating_duration_since(returned_at).as_secs_f64()
    });
    out.info("events logged", logged.len() as f64, "events")
        .goal(
            "deliveries missing after the drain",
            missing as f64,
            "deliveries",
            Goal::AtMost(0.0),
        )
        .info(
            "endpoint 1: its backlog received, after its return",
            drain,
            "s",
        )
        .info("all delivered", f64::from(u8::from(drained)), "yes = 1")
        .info(
            "duplicates received",
            receivers
                .iter()
                .map(|r| r.duplicates.load(Ordering::Relaxed))
                .sum::<u64>() as f64,
            "deliveries",
        );
}

/// Logs `PER_MINUTE` events a minute for the plan's run, with endpoint 1 down as it says;
/// each event's id and when its logging returned.
async fn log_events(
    pool: &sqlx::PgPool,
    plan: &Plan,
    first: &Receiver,
) -> anyhow::Result<HashMap<i64, Instant>> {
    let per_second = PER_MINUTE as f64 / 60.0;
    let started = Instant::now();
    let mut logged = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    let mut n = 0i64;
    while started.elapsed() < plan.run {
        tick.tick().await;
        let elapsed = started.elapsed();
        first.down.store(
            elapsed >= plan.down_from && elapsed < plan.down_until,
            Ordering::Relaxed,
        );
        // As many as are due by now, so that the rate holds whatever the tick's rounding.
        let per_tick = (elapsed.as_secs_f64() * per_second) as i64 - n;
        let batch: Vec<NewEvent> = (0..per_tick)
            .map(|i| NewEvent {
                kind: EventType::Spike,
                influencer_id: 1_000_000 + (n + i) % 1_000_000,
                slot_ms: Some(chrono::Utc::now().timestamp_millis()),
                data: serde_json::json!({"metric": "followers", "change": 40_000 + i}),
            })
            .collect();
        n += per_tick;
        let ids = events::record(pool, &batch).await?;
        let at = Instant::now();
        logged.extend(ids.into_iter().map(|id| (id, at)));
    }
    first.down.store(false, Ordering::Relaxed);
    Ok(logged)
}

/// Waits until every receiver has every event, or `within`; whether they all had.
async fn wait_for_all(
    receivers: &[Receiver],
    logged: &HashMap<i64, Instant>,
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let done = receivers
            .iter()
            .all(|r| r.first.lock().unwrap().len() >= logged.len());
        if done {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// The endpoints that stayed up: logging to receipt, while endpoint 1 was down and while all
/// were up.
fn figures(
    out: &mut Report,
    plan: &Plan,
    started: Instant,
    logged: &HashMap<i64, Instant>,
    receivers: &[Receiver],
) {
    let (mut during, mut outside) = (Vec::new(), Vec::new());
    for receiver in &receivers[1..] {
        let first = receiver.first.lock().unwrap();
        for (id, at) in logged {
            let Some(got) = first.get(id) else { continue };
            let since_start = at.saturating_duration_since(started);
            let latency = got.saturating_duration_since(*at);
            if since_start >= plan.down_from && since_start < plan.down_until {
                during.push(latency);
            } else {
                outside.push(latency);
            }
        }
    }
    for (label, samples) in [("all up", &mut outside), ("endpoint 1 down", &mut during)] {
        out.info(
            &format!("others, {label}: logged to received p50"),
            ms(quantile(samples, 0.5)),
            "ms",
        )
        .goal(
            &format!("others, {label}: logged to received p99"),
            ms(quantile(samples, 0.99)),
            "ms",
            Goal::AtMost(5_000.0),
        );
    }
}
