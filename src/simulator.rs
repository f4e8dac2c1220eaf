//! The Mockstagram simulator: a stand-in for the upstream API that behaves as the real server
//! does (`docs/mockstagram.md`), for demos, tests and benchmarks.
//!
//! What it copies from the real server:
//! - the population: pks `1000000..1000000+N`, usernames `influencer-<pk>`, initial counts
//!   `max(100000·(1+N(0,1)), 5000)` and `max(1000·(1+N(0,1)), 50)`;
//! - the random walk on every `GET`: followers `+= 10000·N(0,1)` (floor 5000), following
//!   `+= 100·N(0,1)` (floor 50), rounded;
//! - HTTP 500 `{"error":{"name":"InfluencerNotFoundError"}}` for an unknown or non-numeric pk;
//! - `is_suspicious`: ratio ≤ 5.64, `false` without counts, delayed 1000 + 1000·N(0,1) ms;
//! - HTTP/1.1 keep-alive with `Keep-Alive: timeout=5`: an idle connection is closed after 5 s,
//!   which is what makes a client's pooled connection race the close.
//!
//! Determinism: with a seed, every draw comes from `hash(seed, pk, call number of that pk)`, so
//! the n-th answer for a pk is the same whatever the interleaving of requests across pks.
//!
//! Staged behaviour (for detection's tests): a share of the pks (`SIMULATOR_CHURN_SHARE`)
//! follow and unfollow 10,000 accounts every other three hours ([`Simulator::churns`]);
//! another share (`SIMULATOR_SPIKE_SHARE`) gains 150,000 followers at once and loses them again
//! `SIMULATOR_SPIKE_EVERY` later, back and forth ([`Simulator::spikes`]).
//!
//! Faults (for tests), drawn per `GET`: a share of retryable 500s, 429s with `Retry-After`,
//! answers slower than a client's time-out, and malformed bodies. They can be changed while it
//! runs through [`Faults`].

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use rand::{Rng, SeedableRng, rngs::SmallRng};
use rand_distr::StandardNormal;
use rayon::prelude::*;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::model::splitmix;
use crate::{
    config::{FaultSettings, SimulatorSettings},
    mockstagram::{self, FIRST_PK, IS_SUSPICIOUS_PATH, NOT_FOUND_ERROR},
};

/// Floors of the random walk, as on the real server.
pub const FOLLOWER_FLOOR: i64 = 5000;
pub const FOLLOWING_FLOOR: i64 = 50;

/// How long the real server keeps an idle keep-alive connection open.
pub(crate) const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// One influencer's state. `calls` numbers the GETs, which keys the deterministic draws.
#[derive(Debug, Clone, Copy)]
struct Walker {
    follower_count: i64,
    following_count: i64,
    calls: u64,
}

/// Faults injected into `GET` answers; each share is between 0 and 1. Changeable at run time.
#[derive(Debug, Default)]
pub struct Faults {
    error: AtomicU64,
    throttle: AtomicU64,
    slow: AtomicU64,
    malformed: AtomicU64,
    retry_after_ms: AtomicU64,
    slow_delay_ms: AtomicU64,
}

impl Faults {
    pub fn set(&self, settings: &FaultSettings) {
        let store = |cell: &AtomicU64, v: f64| cell.store(v.to_bits(), Ordering::Relaxed);
        store(&self.error, settings.fault_error);
        store(&self.throttle, settings.fault_throttle);
        store(&self.slow, settings.fault_slow);
        store(&self.malformed, settings.fault_malformed);
        self.retry_after_ms
            .store(settings.retry_after.as_millis() as u64, Ordering::Relaxed);
        self.slow_delay_ms
            .store(settings.slow_delay.as_millis() as u64, Ordering::Relaxed);
    }

    fn share(cell: &AtomicU64) -> f64 {
        f64::from_bits(cell.load(Ordering::Relaxed))
    }

    /// Which fault, if any, this answer gets.
    fn draw(&self) -> Option<Fault> {
        let shares = [
            (Self::share(&self.error), Fault::Error),
            (Self::share(&self.throttle), Fault::Throttle),
            (Self::share(&self.slow), Fault::Slow),
            (Self::share(&self.malformed), Fault::Malformed),
        ];
        if shares.iter().all(|(s, _)| *s <= 0.0) {
            return None;
        }
        let mut u: f64 = rand::random();
        for (share, fault) in shares {
            if u < share {
                return Some(fault);
            }
            u -= share;
        }
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Error,
    Throttle,
    Slow,
    Malformed,
}

struct Inner {
    seed: u64,
    /// Share of the pks that stage the follow/unfollow seesaw ([`Simulator::churns`]).
    churn_share: f64,
    /// Share of the pks that stage follower spikes ([`Simulator::spikes`]), and how often.
    spike_share: f64,
    spike_every_ms: i64,
    delay_scale: f64,
    influencers: Vec<Mutex<Walker>>,
    faults: Faults,
    /// The profile endpoint's ceiling (`--capacity`): requests wait for their turn.
    capacity: Option<governor::DefaultDirectRateLimiter>,
    requests: AtomicU64,
    questions: AtomicU64,
}

/// A simulated Mockstagram. Cheap to clone; clones share the population.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

impl Simulator {
    /// Builds the population (in parallel: a million influencers take a few milliseconds).
    pub fn new(settings: &SimulatorSettings) -> Self {
        let seed = settings.seed.unwrap_or_else(rand::random);
        let influencers = (0..settings.population)
            .into_par_iter()
            .map(|i| {
                let pk = FIRST_PK + i as i64;
                let mut rng = draws(seed, pk, u64::MAX);
                let n1: f64 = rng.sample(StandardNormal);
                let n2: f64 = rng.sample(StandardNormal);
                Mutex::new(Walker {
                    follower_count: ((100_000.0 * (1.0 + n1)).round() as i64).max(FOLLOWER_FLOOR),
                    following_count: ((1000.0 * (1.0 + n2)).round() as i64).max(FOLLOWING_FLOOR),
                    calls: 0,
                })
            })
            .collect();
        let faults = Faults::default();
        faults.set(&settings.faults);
        Self {
            inner: Arc::new(Inner {
                seed,
                churn_share: settings.churn_share,
                spike_share: settings.spike_share,
                spike_every_ms: (settings.spike_every.as_millis() as i64).max(1),
                delay_scale: settings.delay_scale,
                influencers,
                faults,
                capacity: settings.capacity.map(|per_second| {
                    let per_second =
                        std::num::NonZeroU32::new(per_second.min(u32::MAX as u64) as u32)
                            .unwrap_or(std::num::NonZeroU32::MIN);
                    // A hundredth of a second's worth at once: a steady server, not bursts.
                    let burst = std::num::NonZeroU32::new(per_second.get() / 100)
                        .unwrap_or(std::num::NonZeroU32::MIN);
                    governor::RateLimiter::direct(
                        governor::Quota::per_second(per_second).allow_burst(burst),
                    )
                }),
                requests: AtomicU64::new(0),
                questions: AtomicU64::new(0),
            }),
        }
    }

    /// The faults it injects; tests change them while it runs.
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    /// How many `GET`s this pk has answered (with its data), or `None` for an unknown pk.
    pub fn calls(&self, pk: i64) -> Option<u64> {
        self.walker(pk)
            .map(|w| w.lock().expect("walker lock").calls)
    }

    /// `is_suspicious` requests received.
    pub fn questions(&self) -> u64 {
        self.inner.questions.load(Ordering::Relaxed)
    }

    /// Every request answered, whatever the outcome.
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    fn walker(&self, pk: i64) -> Option<&Mutex<Walker>> {
        let index = usize::try_from(pk.checked_sub(FIRST_PK)?).ok()?;
        self.inner.influencers.get(index)
    }

    /// Advances the pk's random walk and returns its new counts: what one `GET` does.
    pub fn step(&self, pk: i64) -> Option<(i64, i64)> {
        self.step_at(pk, chrono::Utc::now().timestamp_millis())
    }

    /// [`Self::step`] as if asked at `now_ms` (what a churner stages depends on the time).
    pub fn step_at(&self, pk: i64, now_ms: i64) -> Option<(i64, i64)> {
        let walker = self.walker(pk)?;
        let mut w = walker.lock().expect("walker lock");
        let mut rng = draws(self.inner.seed, pk, w.calls);
        let n1: f64 = rng.sample(StandardNormal);
        let n2: f64 = rng.sample(StandardNormal);
        w.follower_count =
            ((w.follower_count as f64 + 10_000.0 * n1).round() as i64).max(FOLLOWER_FLOOR);
        w.following_count =
            ((w.following_count as f64 + 100.0 * n2).round() as i64).max(FOLLOWING_FLOOR);
        w.calls += 1;
        let churned = self.churned(pk, now_ms);
        let spiked = self.spiked(pk, now_ms);
        Some((w.follower_count + spiked, w.following_count + churned))
    }

    /// The HTTP API: both Mockstagram endpoints.
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                IS_SUSPICIOUS_PATH,
                get(not_found_for_get_is_suspicious).post(is_suspicious),
            )
            .route("/api/v1/influencers/{pk}", get(profile))
            .with_state(self.clone())
    }

    /// Serves `router` (the simulator's, perhaps with more routes) on `listener` until `shutdown`,
    /// closing connections idle for 5 s as the real server does.
    /// With `tls`, it serves HTTPS.
    pub async fn serve(
        router: Router,
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        serve_http1(router, listener, KEEP_ALIVE_TIMEOUT, tls, shutdown).await
    }
}

/// `simulate`: serves the simulator on `settings.listen` until `shutdown`.
pub async fn run(settings: SimulatorSettings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let simulator = Simulator::new(&settings);
    let tls = match (&settings.tls_cert_file, &settings.tls_key_file) {
        (Some(certificate), Some(key)) => Some(crate::tls::server_config(
            certificate,
            key,
            "SIMULATOR_TLS_CERT_FILE/SIMULATOR_TLS_KEY_FILE",
        )?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = bind(&settings, SIMULATE_LISTEN).await?;
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        population = settings.population,
        seed = ?settings.seed,
        delay_scale = settings.delay_scale,
        tls = tls.is_some(),
        build_ms = started.elapsed().as_millis() as u64,
        "Mockstagram simulator listening"
    );
    println!(
        "Mockstagram simulator at {scheme}://{addr} (pks {}..={}; metrics at /metrics)",
        FIRST_PK,
        FIRST_PK + settings.population as i64 - 1
    );
    let router = simulator.router().merge(crate::telemetry::metrics_router());
    Simulator::serve(router, listener, tls, shutdown).await?;
    Ok(())
}

/// Starts a simulator on `settings.listen` in the background (`run --simulate`); returns its
/// address.
pub async fn start(
    settings: &SimulatorSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<std::net::SocketAddr> {
    if settings.tls_cert_file.is_some() {
        anyhow::bail!(
            "SIMULATOR_TLS_CERT_FILE is for `simulate`: `run --simulate` calls its own simulator over loopback in plain HTTP; unset it, or run `simulate` beside `run` with MOCKSTAGRAM_URL=https://..."
        );
    }
    let simulator = Simulator::new(settings);
    let listener = bind(settings, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = Simulator::serve(simulator.router(), listener, None, shutdown).await {
            tracing::error!(error = %e, "the simulator stopped");
        }
    });
    Ok(addr)
}

/// Where `simulate` listens unless SIMULATOR_LISTEN says otherwise: MOCKSTAGRAM_URL's default.
pub(crate) const SIMULATE_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 3000);

/// Binds SIMULATOR_LISTEN, or `default` when it is not set.
async fn bind(settings: &SimulatorSettings, default: SocketAddr) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    let addr = settings.listen.unwrap_or(default);
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on SIMULATOR_LISTEN={addr}"))
}

/// The deterministic random source for one draw: `hash(seed, pk, call)`.
fn draws(seed: u64, pk: i64, call: u64) -> SmallRng {
    SmallRng::seed_from_u64(splitmix(seed ^ splitmix(pk as u64 ^ splitmix(call))))
}

fn json(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    response
}

fn not_found() -> Response {
    metrics::counter!("simulator_requests_total", "outcome" => "not_found").increment(1);
    json(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!(r#"{{"error":{{"name":"{NOT_FOUND_ERROR}"}}}}"#),
    )
}

/// The real server routes `GET .../is_suspicious` to the profile endpoint: not a number.
async fn not_found_for_get_is_suspicious(State(sim): State<Simulator>) -> Response {
    sim.inner.requests.fetch_add(1, Ordering::Relaxed);
    not_found()
}

/// `GET /api/v1/influencers/{pk}`.
async fn profile(State(sim): State<Simulator>, Path(raw_pk): Path<String>) -> Response {
    if let Some(capacity) = &sim.inner.capacity {
        capacity.until_ready().await;
    }
    sim.inner.requests.fetch_add(1, Ordering::Relaxed);
    let fault = sim.inner.faults.draw();
    match fault {
        Some(Fault::Error) => {
            metrics::counter!("simulator_requests_total", "outcome" => "fault_error").increment(1);
            return json(
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"error":{"name":"InternalServerError"}}"#.into(),
            );
        }
        Some(Fault::Throttle) => {
            metrics::counter!("simulator_requests_total", "outcome" => "fault_throttle")
                .increment(1);
            let ms = sim.inner.faults.retry_after_ms.load(Ordering::Relaxed);
            let mut response = json(
                StatusCode::TOO_MANY_REQUESTS,
                r#"{"error":{"name":"TooManyRequestsError"}}"#.into(),
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(ms.div_ceil(1000).max(1)),
            );
            return response;
        }
        Some(Fault::Slow) => {
            metrics::counter!("simulator_requests_total", "outcome" => "fault_slow").increment(1);
            let ms = sim.inner.faults.slow_delay_ms.load(Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        _ => {}
    }
    // Only plain digits are a pk; the real server answers anything else as not found.
    let pk = match raw_pk.parse::<i64>() {
        Ok(pk) if raw_pk.bytes().all(|b| b.is_ascii_digit()) => pk,
        _ => return not_found(),
    };
    let Some((followers, following)) = sim.step(pk) else {
        return not_found();
    };
    if fault == Some(Fault::Malformed) {
        metrics::counter!("simulator_requests_total", "outcome" => "fault_malformed").increment(1);
        let body = match rand::random::<u8>() % 4 {
            0 => format!(r#"{{"pk":{pk},"username":"influencer-{pk}","followerCou"#),
            1 => {
                format!(r#"{{"pk":{pk},"username":"influencer-{pk}","followerCount":{followers}}}"#)
            }
            2 => format!(
                r#"{{"pk":{pk},"username":"influencer-{pk}","followerCount":"{followers}","followingCount":{following}}}"#
            ),
            _ => format!(
                r#"{{"pk":{pk},"username":"influencer-{pk}","followerCount":-{followers},"followingCount":{following}}}"#
            ),
        };
        return json(StatusCode::OK, body);
    }
    if fault != Some(Fault::Slow) {
        metrics::counter!("simulator_requests_total", "outcome" => "ok").increment(1);
    }
    json(
        StatusCode::OK,
        format!(
            r#"{{"pk":{pk},"username":"influencer-{pk}","followerCount":{followers},"followingCount":{following}}}"#
        ),
    )
}

/// `POST /api/v1/influencers/is_suspicious`: the ratio rule, after the server's delay.
async fn is_suspicious(State(sim): State<Simulator>, body: Bytes) -> Response {
    sim.inner.requests.fetch_add(1, Ordering::Relaxed);
    sim.inner.questions.fetch_add(1, Ordering::Relaxed);
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        metrics::counter!("simulator_requests_total", "outcome" => "bad_request").increment(1);
        return json(
            StatusCode::BAD_REQUEST,
            r#"{"error":{"name":"BadRequestError"}}"#.into(),
        );
    };
    let delay_ms = {
        let n: f64 = rand::rng().sample(StandardNormal);
        ((1000.0 + 1000.0 * n) * sim.inner.delay_scale).max(0.0)
    };
    if delay_ms > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(delay_ms / 1000.0)).await;
    }
    let count = |name: &str| value.get(name).and_then(serde_json::Value::as_i64);
    let suspicious = match (count("followerCount"), count("followingCount")) {
        (Some(followers), Some(following)) => mockstagram::is_suspicious(followers, following),
        _ => false,
    };
    metrics::counter!("simulator_requests_total", "outcome" => "classified").increment(1);
    let answer = mockstagram::SuspiciousResponse {
        pk: value.get("pk").cloned().unwrap_or(serde_json::Value::Null),
        suspicious,
    };
    json(
        StatusCode::OK,
        serde_json::to_string(&answer).expect("a response serialises"),
    )
}

/// Serves HTTP/1.1 with keep-alive, closing a connection that sends no request for `idle`;
/// with `tls`, over TLS (a handshake not done within `idle` closes the connection).
///
/// axum's own `serve` has no idle time-out; hyper's header-read time-out, which runs while a
/// kept-alive connection waits for its next request, gives exactly the real server's behaviour.
pub(crate) async fn serve_http1(
    router: Router,
    listener: TcpListener,
    idle: Duration,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    use hyper_util::{
        rt::{TokioIo, TokioTimer},
        service::TowerToHyperService,
    };
    loop {
        let (stream, _peer): (_, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let (shutdown, acceptor) = (shutdown.clone(), acceptor.clone());
        tokio::spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(idle)
                .keep_alive(true);
            let served = async move {
                match acceptor {
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                    Some(acceptor) => {
                        match tokio::time::timeout(idle, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                            Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    }
                }
            };
            tokio::select! {
                () = served => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}

mod staged;
pub use staged::{CHURN_AMOUNT, CHURN_HALF_PERIOD_MS, SPIKE_AMOUNT};

#[cfg(test)]
mod tests;
