//! The delivering role (`webhooks`, with the minutely jobs in `run` and `sink`): each
//! endpoint is sent the events it subscribes to, in id order, from its own cursor in the log.
//!
//! - A process holds an endpoint with a lease ([`LEASE`]) it renews at each step; another
//!   process takes the endpoint over when the lease runs out, so several processes share the
//!   endpoints and a crashed one's are picked up within a lease.
//! - While an endpoint answers, up to [`BATCH`] events are sent at a time, [`IN_FLIGHT`] at
//!   once; the cursor moves past each event once it and every event before it were
//!   delivered (a 2xx answer). Delivery is at least once: receivers dedupe by `webhook-id`.
//! - When an attempt fails (not a 2xx, a time-out, a refused connection, a redirect), the
//!   endpoint waits (`WEBHOOK_RETRY_FIRST`, doubling up to `WEBHOOK_RETRY_MAX`) and then
//!   tries the first undelivered event alone; after `WEBHOOK_RETRY_FOR` of failures it is
//!   disabled and says why. Each endpoint is a task of its own: one slow or dead endpoint
//!   never delays another.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use futures_util::{StreamExt, stream};
use serde::Serialize;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{address, filter_of, register_metrics, sign, types_of};
use crate::{
    config::WebhookSettings,
    events::{self, Event},
    retry::Backoff,
};

/// How long a process holds an endpoint without renewing it.
pub(crate) const LEASE: Duration = Duration::from_secs(30);
/// How often a process looks for endpoints no one holds.
const CLAIM_EVERY: Duration = Duration::from_secs(1);
/// How often an endpoint that is up to date looks for new events.
const POLL: Duration = Duration::from_millis(250);
/// Events read from the log at a time for one endpoint.
const BATCH: i64 = 100;
/// Deliveries in flight at once to one endpoint.
const IN_FLIGHT: usize = 8;

/// The delivering role of one process; see the module docs.
pub struct Deliverer {
    pool: PgPool,
    settings: WebhookSettings,
    client: reqwest::Client,
    /// This process's name in the leases.
    owner: String,
    /// The detection time (epoch seconds) of the oldest undelivered event of each endpoint
    /// held here (`None`: up to date): `webhook_delivery_lag_seconds`.
    behind: Mutex<HashMap<i64, Option<i64>>>,
}

/// What is sent: the Standard Webhooks payload shape.
#[derive(Serialize)]
struct Payload<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    /// When the event was detected, RFC 3339.
    timestamp: String,
    data: &'a Event,
}

/// One attempt's outcome.
#[derive(Debug)]
struct Outcome {
    /// Sent earlier by this process (after an event that failed): not sent again.
    already: bool,
    delivered: bool,
    status: Option<i32>,
    error: Option<String>,
    took: Duration,
}

/// An endpoint as a step reads it.
struct Held {
    url: String,
    filter: events::Filter,
    secret: String,
    delivered_through: i64,
    failures: i32,
    /// Milliseconds until the next attempt is due, when it is not yet.
    wait_ms: Option<i64>,
}

enum Step {
    Again,
    Wait(Duration),
    Stop,
}

impl Deliverer {
    /// A deliverer named `owner` in the leases (a name per process: the same one after a
    /// restart of the role takes its endpoints back at once).
    pub fn new(pool: PgPool, settings: WebhookSettings, owner: String) -> anyhow::Result<Self> {
        let resolver = address::PublicResolver {
            allow_private: settings.webhook_allow_private,
        };
        let client = crate::tls::http_client_builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(resolver.shared())
            .timeout(settings.webhook_timeout)
            .pool_max_idle_per_host(IN_FLIGHT)
            .user_agent(concat!("influencer-analytics/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            pool,
            settings,
            client,
            owner,
            behind: Mutex::default(),
        })
    }

    /// A name for this process in the leases: host, process id and a random part.
    pub fn process_name() -> String {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
        format!(
            "{host}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        )
    }

    /// Delivers until `shutdown`; an error (the database lost) ends it for a restart.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        register_metrics();
        let this = Arc::new(self);
        let mut tasks: JoinSet<i64> = JoinSet::new();
        let mut held: HashSet<i64> = HashSet::new();
        let ended = loop {
            while let Some(done) = tasks.try_join_next() {
                match done {
                    Ok(id) => {
                        held.remove(&id);
                    }
                    Err(e) => break_on_panic(e),
                }
            }
            if let Err(e) = this.claim_and_start(&mut tasks, &mut held, &shutdown).await {
                break Err(e);
            }
            this.report().await;
            tokio::select! {
                () = tokio::time::sleep(CLAIM_EVERY) => {}
                () = shutdown.cancelled() => break Ok(()),
            }
        };
        // Each endpoint's task releases its lease when it sees the shutdown.
        if ended.is_err() {
            tasks.abort_all();
        }
        while tasks.join_next().await.is_some() {}
        ended
    }

    async fn claim_and_start(
        self: &Arc<Self>,
        tasks: &mut JoinSet<i64>,
        held: &mut HashSet<i64>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let running: Vec<i64> = held.iter().copied().collect();
        let claimed = sqlx::query_scalar!(
            "update webhooks
             set lease_owner = $1, lease_until = now() + make_interval(secs => $2)
             where disabled_at is null and not (id = any($3))
               and (lease_until is null or lease_until < now() or lease_owner = $1)
             returning id",
            self.owner,
            LEASE.as_secs_f64(),
            &running,
        )
        .fetch_all(&self.pool)
        .await?;
        for id in claimed {
            tracing::info!(webhook = id, owner = %self.owner, "delivering to a webhook");
            held.insert(id);
            let (this, shutdown) = (self.clone(), shutdown.clone());
            tasks.spawn(async move {
                this.serve_endpoint(id, shutdown).await;
                id
            });
        }
        Ok(())
    }

    /// The gauges: how far behind the endpoints held here are, how many are disabled.
    async fn report(&self) {
        let now = Utc::now().timestamp();
        let oldest = self
            .behind
            .lock()
            .unwrap()
            .values()
            .flatten()
            .min()
            .copied();
        let lag = oldest.map_or(0, |detected| (now - detected).max(0));
        metrics::gauge!("webhook_delivery_lag_seconds").set(lag as f64);
        let disabled = sqlx::query_scalar!(
            r#"select count(*) as "n!" from webhooks where disabled_at is not null"#
        )
        .fetch_one(&self.pool)
        .await;
        if let Ok(disabled) = disabled {
            metrics::gauge!("webhook_endpoints_disabled").set(disabled as f64);
        }
    }

    /// Delivers to endpoint `id` until its lease is lost, it is disabled or deleted, or
    /// shutdown.
    async fn serve_endpoint(&self, id: i64, shutdown: CancellationToken) {
        let mut sent_ahead = HashSet::new();
        loop {
            let step = tokio::select! {
                step = self.step(id, &mut sent_ahead) => step,
                () = shutdown.cancelled() => Ok(Step::Stop),
            };
            let pause = match step {
                Ok(Step::Again) => continue,
                Ok(Step::Wait(pause)) => pause,
                Ok(Step::Stop) => break,
                Err(e) => {
                    tracing::warn!(webhook = id, error = %e, "webhook delivery step failed");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                () = tokio::time::sleep(pause.min(LEASE / 3)) => {}
                () = shutdown.cancelled() => break,
            }
        }
        self.behind.lock().unwrap().remove(&id);
        let _ = sqlx::query!(
            "update webhooks set lease_until = null where id = $1 and lease_owner = $2",
            id,
            self.owner
        )
        .execute(&self.pool)
        .await;
    }

    /// Renews the lease and reads the endpoint; `None` when it is no longer held here.
    async fn renew(&self, id: i64) -> sqlx::Result<Option<Held>> {
        let row = sqlx::query!(
            r#"update webhooks set lease_until = now() + make_interval(secs => $3)
               where id = $1 and lease_owner = $2 and disabled_at is null
               returning url, event_types, watchlist, top_n, secret, delivered_through, failures,
                         (extract(epoch from next_attempt_at - now()) * 1000)::bigint as "wait_ms""#,
            id,
            self.owner,
            LEASE.as_secs_f64(),
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| Held {
            url: r.url,
            filter: filter_of(&types_of(&r.event_types), r.watchlist.as_deref(), r.top_n),
            secret: r.secret,
            delivered_through: r.delivered_through,
            failures: r.failures,
            wait_ms: r.wait_ms.filter(|ms| *ms > 0),
        }))
    }

    /// One step at endpoint `id`: the next events delivered, or a wait.
    async fn step(&self, id: i64, sent_ahead: &mut HashSet<i64>) -> anyhow::Result<Step> {
        let Some(held) = self.renew(id).await? else {
            return Ok(Step::Stop);
        };
        if let Some(ms) = held.wait_ms {
            return Ok(Step::Wait(Duration::from_millis(ms as u64)));
        }
        let limit = if held.failures > 0 { 1 } else { BATCH };
        let batch = events::after(&self.pool, held.delivered_through, &held.filter, limit).await?;
        let head = batch.first().map(|e| e.detected_at);
        self.behind.lock().unwrap().insert(id, head);
        if batch.is_empty() {
            return Ok(Step::Wait(POLL));
        }
        // The futures made first: a stream of a closure's futures is not Send here.
        let sends: Vec<_> = batch
            .iter()
            .map(|event| self.send(&held, event, sent_ahead.contains(&event.id)))
            .collect();
        let outcomes: Vec<Outcome> = stream::iter(sends).buffered(IN_FLIGHT).collect().await;
        self.record_attempts(id, &held, &batch, &outcomes).await?;
        let first_failure = outcomes.iter().position(|o| !o.delivered);
        let through = match first_failure {
            Some(0) => None,
            Some(k) => Some(batch[k - 1].id),
            None => batch.last().map(|e| e.id),
        };
        if let Some(k) = first_failure {
            for (event, outcome) in batch.iter().zip(&outcomes).skip(k + 1) {
                if outcome.delivered {
                    sent_ahead.insert(event.id);
                }
            }
        }
        let through_id = through.unwrap_or(held.delivered_through);
        sent_ahead.retain(|event| *event > through_id);
        match first_failure {
            None => {
                self.advance(id, through_id).await?;
                Ok(Step::Again)
            }
            Some(k) => {
                let failures = if k == 0 { held.failures + 1 } else { 1 };
                self.fail(id, through, failures, &outcomes[k]).await
            }
        }
    }

    /// Sends `event` (unless it was sent ahead already).
    async fn send(&self, held: &Held, event: &Event, already: bool) -> Outcome {
        let started = Instant::now();
        let outcome = |delivered, status, error| Outcome {
            already,
            delivered,
            status,
            error,
            took: started.elapsed(),
        };
        if already {
            return outcome(true, None, None);
        }
        if let Some(reason) = address::refused(&held.url, self.settings.webhook_allow_private) {
            return outcome(false, None, Some(reason));
        }
        let payload = Payload {
            kind: event.kind.as_str(),
            timestamp: DateTime::from_timestamp(event.detected_at, 0)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            data: event,
        };
        let body = serde_json::to_vec(&payload).expect("an event serializes");
        let message_id = format!("evt_{}", event.id);
        let timestamp = Utc::now().timestamp();
        let signature = sign::signature(&held.secret, &message_id, timestamp, &body);
        let sent = self
            .client
            .post(&held.url)
            .header("content-type", "application/json")
            .header("webhook-id", &message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(answer) => {
                let status = answer.status();
                let location = answer.headers().get("location").cloned();
                // Read to the end, so that the connection is used again.
                let _ = answer.bytes().await;
                let code = Some(i32::from(status.as_u16()));
                match (status.is_success(), status.is_redirection()) {
                    (true, _) => outcome(true, code, None),
                    (false, true) => outcome(
                        false,
                        code,
                        Some(format!(
                            "answered {status} to {:?}: redirects are not followed",
                            location
                                .as_ref()
                                .and_then(|l| l.to_str().ok())
                                .unwrap_or("")
                        )),
                    ),
                    (false, false) => outcome(false, code, Some(format!("answered {status}"))),
                }
            }
            Err(e) => outcome(false, None, Some(describe(&e))),
        }
    }

    async fn record_attempts(
        &self,
        id: i64,
        held: &Held,
        batch: &[Event],
        outcomes: &[Outcome],
    ) -> sqlx::Result<()> {
        let (mut events, mut attempts, mut delivered) = (Vec::new(), Vec::new(), Vec::new());
        let (mut statuses, mut errors, mut took) = (Vec::new(), Vec::new(), Vec::new());
        for (i, (event, outcome)) in batch.iter().zip(outcomes).enumerate() {
            if outcome.already {
                continue;
            }
            let label = if outcome.delivered {
                "delivered"
            } else {
                "failed"
            };
            metrics::counter!("webhook_deliveries_total", "outcome" => label).increment(1);
            events.push(event.id);
            attempts.push(if i == 0 { held.failures + 1 } else { 1 });
            delivered.push(outcome.delivered);
            statuses.push(outcome.status);
            errors.push(outcome.error.clone());
            took.push(outcome.took.as_millis().min(i32::MAX as u128) as i32);
        }
        sqlx::query!(
            "insert into webhook_attempts
                 (webhook_id, event_id, attempt, delivered, status_code, error, duration_ms)
             select $1, * from unnest($2::int8[], $3::int4[], $4::bool[], $5::int4[], $6::text[], $7::int4[])",
            id,
            &events,
            &attempts,
            &delivered,
            &statuses as &[Option<i32>],
            &errors as &[Option<String>],
            &took,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn advance(&self, id: i64, through: i64) -> sqlx::Result<()> {
        sqlx::query!(
            "update webhooks
             set delivered_through = greatest(delivered_through, $3), failures = 0,
                 failing_since = null, next_attempt_at = null
             where id = $1 and lease_owner = $2",
            id,
            self.owner,
            through,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a failed attempt after delivering through `through`: the endpoint waits, or is
    /// disabled after `WEBHOOK_RETRY_FOR` of failures.
    async fn fail(
        &self,
        id: i64,
        through: Option<i64>,
        failures: i32,
        failed: &Outcome,
    ) -> anyhow::Result<Step> {
        let backoff = Backoff::exponential(
            self.settings.webhook_retry_first,
            self.settings.webhook_retry_max,
        );
        let wait = backoff.wait(failures as u32);
        let error = failed.error.clone().unwrap_or_default();
        let row = sqlx::query!(
            r#"update webhooks
               set delivered_through = greatest(delivered_through, coalesce($3, delivered_through)),
                   failures = $4,
                   failing_since = case when $3::int8 is null then coalesce(failing_since, now())
                                        else now() end,
                   next_attempt_at = now() + make_interval(secs => $5)
               where id = $1 and lease_owner = $2
               returning failing_since <= now() - make_interval(secs => $6) as "expired!",
                         floor(extract(epoch from failing_since))::bigint as "since!""#,
            id,
            self.owner,
            through,
            failures,
            wait.as_secs_f64(),
            self.settings.webhook_retry_for.as_secs_f64(),
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(Step::Stop);
        };
        tracing::warn!(webhook = id, failures, error = %error, retry_in_ms = wait.as_millis() as u64, "webhook delivery failed");
        if !row.expired {
            return Ok(Step::Wait(wait));
        }
        let since = DateTime::from_timestamp(row.since, 0).unwrap_or_default();
        let reason = format!(
            "deliveries failed since {} ({failures} attempts, WEBHOOK_RETRY_FOR={}); the last: {error}",
            since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            humantime::format_duration(self.settings.webhook_retry_for),
        );
        sqlx::query!(
            "update webhooks set disabled_at = now(), disabled_reason = $2 where id = $1",
            id,
            reason
        )
        .execute(&self.pool)
        .await?;
        tracing::error!(webhook = id, reason = %reason, "webhook disabled");
        Ok(Step::Stop)
    }
}

/// An endpoint's task panicked: that is a bug; the role's supervisor reports it.
fn break_on_panic(e: tokio::task::JoinError) {
    if e.is_panic() {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// A failed request in a line: what failed and its causes.
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    let mut text = what.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
