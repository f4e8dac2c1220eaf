//! Settings: every knob of every role, from a flag or the environment variable of the same name.
//!
//! Each group is a `clap::Args` struct that the roles flatten into their own command, so `poll`
//! takes exactly the settings `poll` needs and `--help` lists them with their variables. The
//! defaults point at what `scripts/services up` starts, so nothing needs configuring on a fresh
//! machine.
//!
//! Values are parsed here, once, into types that cannot be wrong later ([`ServiceUrl`],
//! [`Duration`]). A bad value stops the program with one line naming the setting (see
//! [`crate::cli::one_line_usage_error`]).

use std::{fmt, net::SocketAddr, str::FromStr, time::Duration};

use clap::Args;

use crate::tls::CaFile;

mod service_url;
mod webhooks;

pub(crate) use service_url::postgres_url;
pub use service_url::{BrokerUrls, ServiceUrl};
use service_url::{amqp_url, ca_file_for, http_url};
pub use webhooks::WebhookSettings;

/// Parses a duration written like `60s`, `2s`, `500ms`, `1m` or `1h30m`.
pub fn duration(raw: &str) -> Result<Duration, String> {
    let expected = "expected a duration such as 60s, 2s, 500ms or 1m";
    let parsed = humantime::parse_duration(raw.trim()).map_err(|_| expected.to_string())?;
    if parsed.is_zero() {
        return Err(format!("{expected}, greater than zero"));
    }
    Ok(parsed)
}

/// The shortest `POLL_INTERVAL`: one influencer's polls of a UTC day are one day segment,
/// which holds at most 2^20 points (`series::codec::MAX_POINTS`); at 82 ms a day is 1,053,659
/// slots, at 83 ms 1,040,964.
pub(crate) const MIN_POLL_INTERVAL: Duration = Duration::from_millis(83);

/// A poll interval: a [`duration`] of at least [`MIN_POLL_INTERVAL`].
pub(crate) fn poll_interval(raw: &str) -> Result<Duration, String> {
    let interval = duration(raw)?;
    if interval < MIN_POLL_INTERVAL {
        return Err(format!(
            "expected at least {} (a day of one influencer's polls must fit one day segment of 1,048,576 points)",
            humantime::format_duration(MIN_POLL_INTERVAL)
        ));
    }
    Ok(interval)
}

fn socket_addr(raw: &str) -> Result<SocketAddr, String> {
    SocketAddr::from_str(raw.trim())
        .map_err(|_| "expected an address and port such as 127.0.0.1:8080 or 0.0.0.0:0".into())
}

/// A share between 0 and 1, e.g. `0.05` for 5%.
pub fn share(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err("expected a share between 0 and 1, such as 0.05".into()),
    }
}

/// A non-negative scale factor, e.g. `0` (no delay), `1` (as the real server), `0.01`.
pub(crate) fn scale(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err("expected a number ≥ 0, such as 1 (real delays) or 0 (none)".into()),
    }
}

/// A whole number ≥ 1.
pub(crate) fn positive(raw: &str) -> Result<u64, String> {
    match raw.trim().parse::<u64>() {
        Ok(v) if v >= 1 => Ok(v),
        _ => Err("expected a whole number ≥ 1".into()),
    }
}

/// Where the TimescaleDB database is.
#[derive(Args, Debug, Clone)]
pub struct DatabaseSettings {
    /// PostgreSQL URL of the TimescaleDB database; the database is created if missing.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5433/influencer_analytics",
        value_parser = postgres_url
    )]
    pub database_url: ServiceUrl,

    /// Connections in the database pool.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value = "16", value_parser = positive)]
    pub database_pool_size: u64,
}

/// Where the RabbitMQ broker is, and the names of our queues on it.
#[derive(Args, Debug, Clone)]
pub struct BrokerSettings {
    /// AMQP URL of the RabbitMQ broker; for a cluster, its nodes comma-separated (tried in
    /// order; after the first, `host:port` alone takes the first's scheme, user and vhost).
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        value_parser = amqp_url
    )]
    pub amqp_url: BrokerUrls,

    /// Prefix of every exchange and queue name, so several deployments (or tests) share a broker.
    #[arg(long, env = "QUEUE_PREFIX", default_value = "influencer_analytics", value_parser = queue_prefix)]
    pub queue_prefix: String,

    /// Type of the queues: `classic` (fastest on one node) or `quorum` (replicated across a
    /// cluster's nodes, with a delivery limit for poison messages). A queue's type cannot
    /// change: switching needs new queues (drained and deleted, or another QUEUE_PREFIX).
    #[arg(long, env = "QUEUE_TYPE", value_enum, default_value_t = QueueType::Classic)]
    pub queue_type: QueueType,

    /// With QUEUE_TYPE=quorum: a schedule batch or point message handed back more than this
    /// many times (its consumer crashed holding it, or returned it unprocessed) is
    /// dead-lettered (`<prefix>.schedule.dead`, `<prefix>.points.dead`) instead of looping.
    #[arg(long, env = "QUEUE_DELIVERY_LIMIT", default_value = "20", value_parser = positive_u32)]
    pub queue_delivery_limit: u32,

    /// PEM file of CA certificates trusted for an `amqps://` AMQP_URL, besides the system's
    /// (a broker whose certificate a private CA signed).
    #[arg(long, env = "AMQP_CA_FILE", value_parser = crate::tls::ca_file)]
    pub amqp_ca_file: Option<CaFile>,
}

/// An error a setting's value causes, which no retry can fix (the broker's queues were
/// declared otherwise, say): a role that meets it ends, and the process exits naming it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Misconfigured(pub String);

impl Misconfigured {
    /// Whether `error` or one of its causes is a misconfiguration.
    pub(crate) fn is_cause_of(error: &anyhow::Error) -> bool {
        error.chain().any(|cause| cause.is::<Self>())
    }
}

/// RabbitMQ's queue types this project declares.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueType {
    #[default]
    Classic,
    Quorum,
}

impl QueueType {
    /// As QUEUE_TYPE spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Quorum => "quorum",
        }
    }
}

impl BrokerSettings {
    /// The broker at `amqp_url`, queues under `queue_prefix`, other settings at their defaults.
    pub fn new(amqp_url: impl Into<BrokerUrls>, queue_prefix: impl Into<String>) -> Self {
        Self {
            amqp_url: amqp_url.into(),
            queue_prefix: queue_prefix.into(),
            queue_type: QueueType::Classic,
            queue_delivery_limit: 20,
            amqp_ca_file: None,
        }
    }

    /// `AMQP_CA_FILE`, if set and `AMQP_URL` uses TLS; set beside a plain URL, it is an error.
    pub(crate) fn ca_file(&self) -> Result<Option<&CaFile>, Misconfigured> {
        ca_file_for(
            self.amqp_ca_file.as_ref(),
            "AMQP_CA_FILE",
            self.amqp_url.first(),
            "AMQP_URL",
            "amqps",
            "use amqps:// (port 5671 by default)",
        )
    }
}

fn positive_u32(raw: &str) -> Result<u32, String> {
    positive(raw)
        .and_then(|v| u32::try_from(v).map_err(|_| "expected a whole number up to 2^32-1".into()))
}

fn queue_prefix(raw: &str) -> Result<String, String> {
    let ok = !raw.is_empty()
        && raw.len() <= 100
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(raw.to_string())
    } else {
        Err("expected 1–100 characters of letters, digits, '_', '-' or '.'".into())
    }
}

/// The Mockstagram API we poll.
#[derive(Args, Debug, Clone)]
pub struct UpstreamSettings {
    /// Base URL of the Mockstagram API (the real server or `influencer-analytics simulate`).
    #[arg(long, env = "MOCKSTAGRAM_URL", default_value = "http://127.0.0.1:3000", value_parser = http_url)]
    pub mockstagram_url: ServiceUrl,

    /// Ceiling on requests per second to Mockstagram for the whole fleet: each poller takes
    /// its share, this divided by the pollers consuming the schedule (bursts of at most a
    /// tenth of a second's worth); unset means no ceiling.
    #[arg(long, env = "MOCKSTAGRAM_RPS", value_parser = positive)]
    pub mockstagram_rps: Option<u64>,

    /// Time-out of one request to Mockstagram (a timed-out request is retried).
    #[arg(long, env = "MOCKSTAGRAM_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub mockstagram_timeout: Duration,

    /// Requests to Mockstagram in flight at once, at most, per process.
    #[arg(long, env = "MOCKSTAGRAM_CONCURRENCY", default_value = "256", value_parser = positive)]
    pub mockstagram_concurrency: u64,

    /// PEM file of CA certificates trusted for an `https://` MOCKSTAGRAM_URL, besides the
    /// system's (a server whose certificate a private CA signed).
    #[arg(long, env = "MOCKSTAGRAM_CA_FILE", value_parser = crate::tls::ca_file)]
    pub mockstagram_ca_file: Option<CaFile>,
}

impl UpstreamSettings {
    /// `MOCKSTAGRAM_CA_FILE`, if set and `MOCKSTAGRAM_URL` uses TLS; set beside a plain URL,
    /// it is an error.
    pub(crate) fn ca_file(&self) -> Result<Option<&CaFile>, Misconfigured> {
        ca_file_for(
            self.mockstagram_ca_file.as_ref(),
            "MOCKSTAGRAM_CA_FILE",
            &self.mockstagram_url,
            "MOCKSTAGRAM_URL",
            "https",
            "use https://",
        )
    }
}

/// How often each influencer is polled.
#[derive(Args, Debug, Clone)]
pub(crate) struct ScheduleSettings {
    /// Time between two polls of one influencer (e.g. 60s; short values such as 2s for tests).
    #[arg(long, env = "POLL_INTERVAL", default_value = "60s", value_parser = poll_interval)]
    pub poll_interval: Duration,
}

/// How long the stored series are kept.
#[derive(Args, Debug, Clone)]
pub struct StorageSettings {
    /// Points, the average series, the classification history and recorded fetch failures
    /// older than this are dropped (at least 1 day; e.g. 400days, 90days).
    #[arg(long, env = "RETENTION", default_value = "400days", value_parser = retention)]
    pub retention: Duration,
    /// The share of the time compaction may work (0.05 to 1): after each step it rests so its
    /// steps fill at most this share, leaving the cores to polling and the sink; 1 works
    /// without rest.
    #[arg(long, env = "COMPACTION_PACE", default_value = "0.4", value_parser = pace)]
    pub compaction_pace: f64,
    /// Points of a closed hour compaction holds in memory at once, 32 bytes each (the default
    /// is 128 MB); an hour is read in as many scans of it as this takes (15 for 1,000,000
    /// influencers at the default), so less memory costs the database more reading.
    #[arg(long, env = "COMPACTION_PASS_POINTS", default_value_t = DEFAULT_COMPACTION_PASS_POINTS, value_parser = positive_usize)]
    pub compaction_pass_points: usize,
    #[command(flatten)]
    pub events: EventSettings,
}

/// How events are detected and how long the log keeps them (run with the minutely jobs).
#[derive(Args, Debug, Clone)]
pub struct EventSettings {
    /// Events detected longer ago than this are dropped from the log (e.g. 30days, 7days).
    #[arg(long, env = "EVENTS_RETENTION", default_value = "30days", value_parser = events_retention)]
    pub events_retention: Duration,
    /// Slots of its own interval without a stored point before an influencer is `stale`.
    #[arg(long, env = "EVENT_STALE_SLOTS", default_value = "5", value_parser = positive_u32)]
    pub event_stale_slots: u32,
    /// A change this many robust standard deviations (MAD × 1.4826) from the influencer's
    /// median change of the last two hours is a `spike` (e.g. 10; at least 3).
    #[arg(long, env = "EVENT_SPIKE_Z", default_value = "10", value_parser = event_spike_z)]
    pub event_spike_z: f64,
    #[command(flatten)]
    pub webhooks: WebhookSettings,
}

fn events_retention(raw: &str) -> Result<Duration, String> {
    let value = duration(raw)?;
    if value < Duration::from_secs(3600) {
        return Err("expected at least 1 hour (e.g. 30days)".into());
    }
    Ok(value)
}

fn event_spike_z(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(z) if (3.0..=1000.0).contains(&z) => Ok(z),
        _ => Err("expected a number of standard deviations from 3 to 1000 (e.g. 10)".into()),
    }
}

/// `COMPACTION_PASS_POINTS`' default.
pub(crate) const DEFAULT_COMPACTION_PASS_POINTS: usize = 4_000_000;

fn pace(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(share) if (0.05..=1.0).contains(&share) => Ok(share),
        _ => Err("expected a share of the time from 0.05 to 1 (e.g. 0.4)".into()),
    }
}

fn retention(raw: &str) -> Result<Duration, String> {
    let value = duration(raw)?;
    if value < Duration::from_secs(86_400) {
        return Err("expected at least 1 day (e.g. 400days): compaction needs the last day".into());
    }
    Ok(value)
}

/// How the sink batches its writes.
#[derive(Args, Debug, Clone)]
pub struct SinkSettings {
    /// A batch is written once it holds this many rows...
    #[arg(long, env = "SINK_BATCH_ROWS", default_value = "5000", value_parser = positive_usize)]
    pub sink_batch_rows: usize,

    /// ...or this long after its first row came.
    #[arg(long, env = "SINK_BATCH_WAIT", default_value = "1s", value_parser = duration)]
    pub sink_batch_wait: Duration,

    /// Point messages the sink holds unacked at most (each up to 500 points).
    #[arg(long, env = "SINK_PREFETCH", default_value = "200", value_parser = positive_u16)]
    pub sink_prefetch: u16,

    /// While the database is down, held messages go back to the queue after this long (keep
    /// it below RabbitMQ's consumer_timeout, 30 min by default).
    #[arg(long, env = "SINK_MAX_HOLD", default_value = "10m", value_parser = duration)]
    pub sink_max_hold: Duration,
}

fn positive_usize(raw: &str) -> Result<usize, String> {
    positive(raw).map(|v| v as usize)
}

fn positive_u16(raw: &str) -> Result<u16, String> {
    match raw.trim().parse::<u16>() {
        Ok(v) if v >= 1 => Ok(v),
        _ => Err("expected a whole number from 1 to 65535".into()),
    }
}

/// The daily suspicious classification.
#[derive(Args, Debug, Clone)]
pub struct ClassifySettings {
    /// Questions to is_suspicious in flight at once (each takes about a second upstream).
    #[arg(long, env = "CLASSIFY_CONCURRENCY", default_value = "1000", value_parser = positive_usize)]
    pub classify_concurrency: usize,

    /// UTC time of day at which the long-running process starts the daily pass (HH:MM).
    #[arg(long, env = "CLASSIFY_AT", default_value = "00:00", value_parser = time_of_day)]
    pub classify_at: chrono::NaiveTime,

    /// The spike detector flags a minute-over-minute follower change at least this many
    /// robust standard deviations (MAD × 1.4826) from the influencer's median change of the day.
    #[arg(long, env = "SPIKE_Z", default_value = "10", value_parser = spike_z)]
    pub spike_z: f64,
}

/// A UTC time of day, `HH:MM` (or `HH:MM:SS`).
pub(crate) fn time_of_day(raw: &str) -> Result<chrono::NaiveTime, String> {
    let raw = raw.trim();
    chrono::NaiveTime::parse_from_str(raw, "%H:%M")
        .or_else(|_| chrono::NaiveTime::parse_from_str(raw, "%H:%M:%S"))
        .map_err(|_| "expected a UTC time of day such as 00:00 or 03:30".into())
}

fn spike_z(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 3.0 => Ok(v),
        _ => Err("expected a number ≥ 3, such as 10 (lower values flag ordinary noise)".into()),
    }
}

/// The HTTP listener of a long-running role.
#[derive(Args, Debug, Clone)]
pub(crate) struct ListenSettings {
    /// Address the HTTP API (and /metrics) listens on; port 0 picks a free port.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080", value_parser = socket_addr)]
    pub listen_addr: SocketAddr,
}

/// A key that grants access to the API's data endpoints. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// A key as `API_KEYS` takes it (at least 16 visible ASCII characters).
    pub fn new(raw: &str) -> Result<Self, String> {
        api_key(raw)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

fn api_key(raw: &str) -> Result<ApiKey, String> {
    let key = raw.trim();
    if key.len() < 16 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "expected keys of at least 16 visible ASCII characters, comma-separated (e.g. from `openssl rand -hex 16`)"
                .into(),
        );
    }
    Ok(ApiKey(key.to_string()))
}

/// How the query API guards and bounds its requests (src/api/limits.rs).
#[derive(Args, Debug, Clone)]
pub struct ApiSettings {
    /// Keys that grant access to the data endpoints (/influencer_analytics/...), sent as
    /// `Authorization: Bearer <key>`; comma-separated. Unset: the API is open (the demo).
    #[arg(long, env = "API_KEYS", value_delimiter = ',', value_parser = api_key)]
    pub api_keys: Vec<ApiKey>,
    /// Requests answered at once at most; one more is answered 503 with Retry-After.
    #[arg(long, env = "API_MAX_IN_FLIGHT", default_value = "256", value_parser = positive_usize)]
    pub api_max_in_flight: usize,
    /// Longest time a request may take before it is answered 503.
    #[arg(long, env = "API_REQUEST_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub api_request_timeout: Duration,
    /// Longest time the database may spend on one of the API's statements (PostgreSQL's
    /// statement_timeout on the API's connections).
    #[arg(long, env = "API_STATEMENT_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub api_statement_timeout: Duration,
    /// Web origins whose pages may call the API from a browser (CORS), comma-separated, such
    /// as `https://dash.example.com`; `*` allows any. Unset: no cross-origin access (the
    /// dashboard is served by the API itself and needs none).
    #[arg(long, env = "API_CORS_ORIGINS", value_delimiter = ',', value_parser = cors_origin)]
    pub api_cors_origins: Vec<CorsOrigin>,
    /// PostgreSQL URL of a streaming replica (hot standby) of DATABASE_URL's database: the
    /// API's reads go there while it answers and keeps up (READ_MAX_LAG), else to the primary.
    /// Unset: every read goes to DATABASE_URL.
    #[arg(long, env = "DATABASE_READ_URL", value_parser = postgres_url)]
    pub database_read_url: Option<ServiceUrl>,
    /// With DATABASE_READ_URL: the replica's replay lag past which reads go to the primary
    /// (until it is back within it).
    #[arg(long, env = "READ_MAX_LAG", default_value = "5s", value_parser = duration)]
    pub read_max_lag: Duration,
}

/// A web origin allowed to call the API from a browser (`API_CORS_ORIGINS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigin {
    /// `*`: any origin.
    Any,
    /// `scheme://host[:port]`, as browsers send it in `Origin`.
    Exact(String),
}

fn cors_origin(raw: &str) -> Result<CorsOrigin, String> {
    let raw = raw.trim();
    if raw == "*" {
        return Ok(CorsOrigin::Any);
    }
    let expected = "expected origins such as https://dash.example.com or http://localhost:5173 (scheme, host and port only), comma-separated, or *";
    let url = url::Url::parse(raw).map_err(|_| expected.to_string())?;
    let bare = url.path() == "/" && !raw.ends_with('/') && url.query().is_none();
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() || !bare {
        return Err(expected.into());
    }
    // Url spells the origin as browsers do (lower-case host, no default port).
    Ok(CorsOrigin::Exact(url.origin().ascii_serialization()))
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            api_keys: Vec::new(),
            api_max_in_flight: 256,
            api_request_timeout: Duration::from_secs(10),
            api_statement_timeout: Duration::from_secs(5),
            api_cors_origins: Vec::new(),
            database_read_url: None,
            read_max_lag: Duration::from_secs(5),
        }
    }
}

/// Settings of the Mockstagram simulator.
#[derive(Args, Debug, Clone)]
pub struct SimulatorSettings {
    /// Address the simulator listens on. Default: for `simulate`, 127.0.0.1:3000 (where
    /// MOCKSTAGRAM_URL points by default); for `run --simulate`, a free port of 127.0.0.1 (only
    /// its own poller calls it).
    #[arg(long = "listen", env = "SIMULATOR_LISTEN", value_parser = socket_addr)]
    pub listen: Option<SocketAddr>,

    /// Number of influencers; their pks run from 1000000 upwards.
    #[arg(long, env = "SIMULATOR_POPULATION", default_value = "1000000", value_parser = positive)]
    pub population: u64,

    /// Random seed: the same seed gives the same population and the same walk. Unset: random.
    #[arg(long, env = "SIMULATOR_SEED")]
    pub seed: Option<u64>,

    /// Scale of is_suspicious's delay (about 1 s ± 1 s on the real server): 0 answers at once.
    #[arg(long, env = "SIMULATOR_DELAY_SCALE", default_value = "1", value_parser = scale)]
    pub delay_scale: f64,

    /// Profile answers a second at most, the rest queued, as a saturated server does (the real
    /// server reached about 4,100/s on the development box). Unset: as fast as it can.
    #[arg(long, env = "SIMULATOR_CAPACITY", value_parser = positive)]
    pub capacity: Option<u64>,

    /// PEM certificate chain (its own certificate first) to serve HTTPS with, as a real
    /// server behind TLS; needs SIMULATOR_TLS_KEY_FILE. Unset: plain HTTP.
    #[arg(long, env = "SIMULATOR_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<std::path::PathBuf>,

    /// PEM private key of SIMULATOR_TLS_CERT_FILE's certificate.
    #[arg(long, env = "SIMULATOR_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<std::path::PathBuf>,

    /// Share of the influencers that stage the follow/unfollow seesaw: their following count
    /// is 10,000 higher every other three hours (docs/mockstagram.md). 0: none.
    #[arg(long, env = "SIMULATOR_CHURN_SHARE", default_value = "0", value_parser = share)]
    pub churn_share: f64,
    /// Share of the influencers that stage follower spikes: 150,000 more followers at once,
    /// and as many fewer `SIMULATOR_SPIKE_EVERY` later, back and forth (docs/mockstagram.md).
    /// 0: none.
    #[arg(long, env = "SIMULATOR_SPIKE_SHARE", default_value = "0", value_parser = share)]
    pub spike_share: f64,
    /// How long a staged spike's level holds before it jumps back (e.g. `3h`, `30s`).
    #[arg(long, env = "SIMULATOR_SPIKE_EVERY", default_value = "3h", value_parser = duration)]
    pub spike_every: Duration,

    #[command(flatten)]
    pub faults: FaultSettings,
}

/// Faults the simulator injects into `GET /api/v1/influencers/{pk}`, for tests.
#[derive(Args, Debug, Clone, Default)]
pub struct FaultSettings {
    /// Share of answers that are HTTP 500 with an internal error (retryable, unlike a not-found).
    #[arg(long, env = "SIMULATOR_FAULT_ERROR", default_value = "0", value_parser = share)]
    pub fault_error: f64,

    /// Share of answers that are HTTP 429 with a Retry-After header.
    #[arg(long, env = "SIMULATOR_FAULT_THROTTLE", default_value = "0", value_parser = share)]
    pub fault_throttle: f64,

    /// Retry-After of injected 429s.
    #[arg(long, env = "SIMULATOR_RETRY_AFTER", default_value = "1s", value_parser = duration)]
    pub retry_after: Duration,

    /// Share of answers held back for --slow-delay (past a client's time-out).
    #[arg(long, env = "SIMULATOR_FAULT_SLOW", default_value = "0", value_parser = share)]
    pub fault_slow: f64,

    /// How long a slow answer is held back.
    #[arg(long, env = "SIMULATOR_SLOW_DELAY", default_value = "10s", value_parser = duration)]
    pub slow_delay: Duration,

    /// Share of answers with a malformed body (bad JSON, missing field, wrong type, negative count).
    #[arg(long, env = "SIMULATOR_FAULT_MALFORMED", default_value = "0", value_parser = share)]
    pub fault_malformed: f64,
}

#[cfg(test)]
mod tests;
