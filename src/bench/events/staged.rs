//! `bench events`' staged part: jumps the simulator plants, found by the pipeline's own
//! detection (the sink's screen, the `spikes` role, the minute-mark rules) and delivered by
//! the `webhooks` role to a receiver here; see [`super`].

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Router, extract::State, http::HeaderMap, http::StatusCode};
use tokio_util::sync::CancellationToken;

use super::{BATCH, Z, mark_of, minute_of, register, simulated};
use crate::{
    bench::{Goal, Report, bench_database, quantile},
    config::{DatabaseSettings, WebhookSettings},
    events::{
        EventType,
        detect::{Detector, MILESTONE_BAND, MILESTONES, Rules},
    },
    jobs::spikes,
    mockstagram::FIRST_PK,
    model::Point,
    queue::points::Outcomes,
    simulator::Simulator,
    sink::writer,
    webhooks::{self, Deliverer, NewWebhook},
};

/// Minutes after the start before a jump counts: the rule wants 30 changes in its window.
const WARM_MINUTES: i64 = 32;

/// What the staged run found.
pub(super) struct Staged {
    pub setup: String,
    latencies: Vec<Duration>,
    found: usize,
    missed: usize,
    false_alarms: usize,
    influencer_days: f64,
    milestones_found: usize,
    milestones_missed: usize,
    milestones_extra: usize,
}

impl Staged {
    pub(super) fn report(&self, out: &mut Report) {
        let mut latencies = self.latencies.clone();
        let p50 = quantile(&mut latencies, 0.5).as_secs_f64();
        let p99 = quantile(&mut latencies, 0.99).as_secs_f64();
        let recall = self.found as f64 / (self.found + self.missed).max(1) as f64;
        out.info(
            "spikes received by the webhook receiver",
            self.latencies.len() as f64,
            "events",
        )
        .info("stored → received, p50", p50, "s")
        .goal("stored → received, p99", p99, "s", Goal::AtMost(5.0))
        .info("staged jumps found", self.found as f64, "jumps")
        .info("staged jumps missed", self.missed as f64, "jumps")
        .goal("spike recall", recall, "ratio", Goal::AtLeast(0.95))
        .info(
            "spikes not staged (false alarms)",
            self.false_alarms as f64,
            "events",
        )
        .info(
            "false alarms per 1,000,000 influencer-days",
            self.false_alarms as f64 * 1e6 / self.influencer_days,
            "events",
        )
        .info(
            "milestone crossings found",
            self.milestones_found as f64,
            "crossings",
        )
        .goal(
            "milestone crossings missed",
            self.milestones_missed as f64,
            "crossings",
            Goal::AtMost(0.0),
        )
        .goal(
            "milestone events not crossings",
            self.milestones_extra as f64,
            "events",
            Goal::AtMost(0.0),
        );
    }
}

/// The run's shape.
struct Plan {
    population: usize,
    minutes: i64,
    every: Duration,
    share: f64,
    /// Wall time a simulated minute takes.
    pace: Duration,
}

/// A receiver: when each spike (by influencer and slot) first reached it.
#[derive(Clone, Default)]
struct Receiver {
    first: Arc<Mutex<HashMap<(i64, i64), Instant>>>,
}

async fn receive(State(r): State<Receiver>, _: HeaderMap, body: String) -> StatusCode {
    let Ok(payload) = serde_json::from_str::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let event = &payload["data"];
    let (Some(id), Some(slot)) = (event["influencer_id"].as_i64(), event["slot"].as_i64()) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut first = r.first.lock().unwrap();
    first.entry((id, slot)).or_insert_with(Instant::now);
    StatusCode::NO_CONTENT
}

async fn start_receiver(pool: &sqlx::PgPool) -> anyhow::Result<Receiver> {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let app = Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let new = NewWebhook {
        url,
        events: vec![EventType::Spike],
        watchlist: None,
        top_n: 100,
    };
    webhooks::create(pool, &new).await?;
    Ok(receiver)
}

pub(super) async fn run(database: &DatabaseSettings, quick: bool) -> anyhow::Result<Staged> {
    let plan = match quick {
        true => Plan {
            population: 5_000,
            minutes: 150,
            every: Duration::from_secs(40 * 60),
            share: 0.02,
            pace: Duration::from_millis(500),
        },
        false => Plan {
            population: 20_000,
            minutes: 360,
            every: Duration::from_secs(3600),
            share: 0.02,
            pace: Duration::from_secs(1),
        },
    };
    let (pool, _bench) = bench_database(database, "events_staged", true).await?;
    register(&pool, plan.population as i64).await?;
    let receiver = start_receiver(&pool).await?;
    let stop = CancellationToken::new();
    let settings = WebhookSettings {
        webhook_allow_private: true,
        ..WebhookSettings::default()
    };
    let deliverer = Deliverer::new(pool.clone(), settings, Deliverer::process_name())?;
    let delivering = tokio::spawn(deliverer.run(stop.clone()));
    let deciding = tokio::spawn(spikes::run(pool.clone(), Z, stop.clone()));
    let sim = Simulator::new(&simulated(plan.population, plan.share, plan.every));
    let start_ms = (chrono::Utc::now().timestamp_millis() / 60_000 - plan.minutes - 1) * 60_000;
    let written = write_paced(&pool, &sim, &plan, start_ms).await?;
    // The last candidates decided and delivered.
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.cancel();
    delivering.await??;
    deciding.await??;
    let logged = logged_spikes(&pool).await?;
    let mut staged = judge(&sim, &plan, start_ms, &logged);
    staged.latencies = latencies(&receiver, &written, &logged, start_ms);
    (
        staged.milestones_found,
        staged.milestones_missed,
        staged.milestones_extra,
    ) = written.milestones;
    Ok(staged)
}

/// What writing the minutes gave: when each (minute, batch) was committed, and the milestone
/// rules' record against the walk's own crossings.
struct Written {
    committed: HashMap<(i64, usize), Instant>,
    milestones: (usize, usize, usize),
}

async fn write_paced(
    pool: &sqlx::PgPool,
    sim: &Simulator,
    plan: &Plan,
    start_ms: i64,
) -> anyhow::Result<Written> {
    let mut committed = HashMap::new();
    let mut detector = Detector::new(Rules { stale_slots: 5 });
    let mut crossings = Crossings::default();
    let (mut raised, mut walked) = (BTreeMap::new(), BTreeMap::new());
    let started = Instant::now();
    for minute in 0..plan.minutes {
        tokio::time::sleep_until((started + plan.pace * minute as u32).into()).await;
        let slot_ms = start_ms + minute * 60_000;
        let points = minute_of(sim, plan.population, slot_ms);
        for (b, batch) in points.chunks(BATCH / 2).enumerate() {
            let outcomes = Outcomes {
                points: batch.to_vec(),
                ..Outcomes::default()
            };
            writer::write_with_cutoff(pool, &[&outcomes], i64::MIN).await?;
            committed.insert((minute, b), Instant::now());
        }
        let observed = detector.observe(&mark_of(&points), slot_ms + 30_000, false);
        for e in observed
            .events
            .iter()
            .filter(|e| e.kind == EventType::Milestone)
        {
            let key = (
                e.influencer_id,
                e.data["milestone"].as_i64().unwrap_or(0),
                e.data["direction"] == "up",
            );
            *raised.entry(key).or_insert(0usize) += 1;
        }
        crossings.walk(&points, &mut walked);
    }
    let milestones = compare(&raised, &walked);
    Ok(Written {
        committed,
        milestones,
    })
}

/// Each influencer's milestones, followed line by line as docs/events.md defines them (a line
/// reached from below is `up`; `down` once more than the band under a line passed upward),
/// written apart from the detector's level stack so the two check each other.
#[derive(Default)]
struct Crossings {
    /// (influencer, line) → passed upward and not left.
    passed: HashMap<(i64, i64), bool>,
}

impl Crossings {
    fn walk(&mut self, points: &[Point], out: &mut BTreeMap<(i64, i64, bool), usize>) {
        for p in points {
            let value = i64::from(p.follower_count);
            for line in MILESTONES {
                let band = line as f64 * (1.0 - MILESTONE_BAND);
                match self.passed.get(&(p.pk, line)).copied() {
                    // First sight: the lines at or under the value are passed, no event.
                    None => {
                        self.passed.insert((p.pk, line), value >= line);
                    }
                    Some(false) if value >= line => {
                        self.passed.insert((p.pk, line), true);
                        *out.entry((p.pk, line, true)).or_insert(0) += 1;
                    }
                    Some(true) if (value as f64) < band => {
                        self.passed.insert((p.pk, line), false);
                        *out.entry((p.pk, line, false)).or_insert(0) += 1;
                    }
                    _ => {}
                }
            }
        }
    }
}

/// (found, missed, extra) of the raised milestone events against the walk's crossings.
fn compare(
    raised: &BTreeMap<(i64, i64, bool), usize>,
    walked: &BTreeMap<(i64, i64, bool), usize>,
) -> (usize, usize, usize) {
    let keys: HashSet<_> = raised.keys().chain(walked.keys()).collect();
    let (mut found, mut missed, mut extra) = (0, 0, 0);
    for key in keys {
        let (r, w) = (
            raised.get(key).copied().unwrap_or(0),
            walked.get(key).copied().unwrap_or(0),
        );
        found += r.min(w);
        missed += w.saturating_sub(r);
        extra += r.saturating_sub(w);
    }
    (found, missed, extra)
}

/// The spikes in the log: (influencer, slot in epoch seconds).
async fn logged_spikes(pool: &sqlx::PgPool) -> sqlx::Result<Vec<(i64, i64)>> {
    let rows = sqlx::query!(
        r#"select influencer_id as "influencer_id!",
                  floor(extract(epoch from slot))::bigint as "slot!"
           from events where type = 'spike' order by id"#
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.influencer_id, r.slot))
        .collect())
}

/// The staged jumps after the warm-up found and missed, and the spikes that were no jump.
fn judge(sim: &Simulator, plan: &Plan, start_ms: i64, logged: &[(i64, i64)]) -> Staged {
    let end_ms = start_ms + plan.minutes * 60_000;
    // The slot (epoch s) of each staged jump: the first minute at or after it.
    let mut jumps: HashMap<(i64, i64), bool> = HashMap::new();
    for i in 0..plan.population as i64 {
        let pk = FIRST_PK + i;
        for t in sim.spike_times(pk, start_ms + 1, end_ms) {
            let minute = (t - start_ms + 59_999) / 60_000;
            if minute >= plan.minutes {
                continue; // after the last minute written
            }
            jumps.insert(
                (pk, (start_ms + minute * 60_000) / 1000),
                minute >= WARM_MINUTES,
            );
        }
    }
    let seen: HashSet<(i64, i64)> = logged.iter().copied().collect();
    let counted = |k: &(i64, i64)| jumps.get(k).copied().unwrap_or(false);
    let found = jumps
        .keys()
        .filter(|k| counted(k) && seen.contains(k))
        .count();
    let missed = jumps
        .keys()
        .filter(|k| counted(k) && !seen.contains(k))
        .count();
    let false_alarms = seen.iter().filter(|k| !jumps.contains_key(k)).count();
    let examples: Vec<_> = jumps
        .keys()
        .filter(|k| counted(k) && !seen.contains(k))
        .take(10)
        .collect();
    tracing::info!(
        ?examples,
        "bench events: staged jumps missed (influencer, slot)"
    );
    Staged {
        setup: format!(
            "{} influencers, {} minutes written a minute every {} ms, {}% staging jumps of 150,000 followers every {} min; jumps after minute {WARM_MINUTES} counted",
            plan.population,
            plan.minutes,
            plan.pace.as_millis(),
            plan.share * 100.0,
            plan.every.as_secs() / 60
        ),
        latencies: Vec::new(),
        found,
        missed,
        false_alarms,
        influencer_days: plan.population as f64 * plan.minutes as f64 / 1440.0,
        milestones_found: 0,
        milestones_missed: 0,
        milestones_extra: 0,
    }
}

/// For each spike received: from the commit of the write that stored its point to its receipt.
fn latencies(
    receiver: &Receiver,
    written: &Written,
    logged: &[(i64, i64)],
    start_ms: i64,
) -> Vec<Duration> {
    let first = receiver.first.lock().unwrap();
    logged
        .iter()
        .filter_map(|&(pk, slot)| {
            let minute = (slot * 1000 - start_ms) / 60_000;
            let batch = ((pk - FIRST_PK) as usize) / (BATCH / 2);
            let stored = written.committed.get(&(minute, batch))?;
            Some(first.get(&(pk, slot))?.saturating_duration_since(*stored))
        })
        .collect()
}
