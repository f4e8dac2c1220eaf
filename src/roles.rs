//! The long-running roles and their supervision: poll, reconcile, sink, jobs, the daily
//! classification and the HTTP servers, built the same way by the binary's subcommands and by
//! the tests.
//!
//! A [`Roles`] set starts each role as a task of its own and watches it:
//! - a role that fails with an error (a lost broker or database connection) is started again
//!   after a pause ([`RESTART_BACKOFF`]), counted in `role_restarts_total{role,reason="error"}`;
//! - a role that panics is reported and started again too (`reason="panic"`), up to
//!   [`MAX_QUICK_PANICS`] panics in a row that each came soon after its start: a role that
//!   cannot run without panicking ends the process rather than spinning;
//! - a role that cannot go on (an HTTP server whose listener failed, repeated panics, a
//!   misconfiguration no retry can fix ([`Misconfigured`]), or a role that ended by itself
//!   before shutdown) cancels the others, and [`Roles::wait`] returns the
//!   error, so the process exits with a non-zero status naming the role.
//!
//! Each role's state is in [`RoleHealth`], which every `/healthz` reports.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    time::{Duration, Instant},
};

use anyhow::Context;
use axum::Router;
use chrono::NaiveTime;
use sqlx::PgPool;
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    api::{self, ApiState},
    classify::PassSettings,
    config::{BrokerSettings, Misconfigured, SinkSettings, StorageSettings, WebhookSettings},
    fetch::{MockstagramClient, Poller, PollerMemory},
    health::{RoleHealth, RoleState},
    jobs,
    queue::Broker,
    reconcile,
    retry::Backoff,
    sink::Sink,
    telemetry,
    webhooks::Deliverer,
};

/// The pause before starting a failed role again: growing from 250 ms to 2 s while attempts
/// keep failing at once, and back to the first after an attempt that ran a while (a role that
/// worked for a minute and then lost the broker should be back within a second or two of the
/// broker's return, not after a long pause from an outage ago).
const RESTART_BACKOFF: Backoff =
    Backoff::exponential(Duration::from_millis(250), Duration::from_secs(2));
const RAN_A_WHILE: Duration = Duration::from_secs(10);

/// Panics in a row, each within [`RAN_A_WHILE`] of its start, after which a role is given up.
pub(crate) const MAX_QUICK_PANICS: u32 = 5;

/// Failures in a row after an attempt that ran `ran_for`: an attempt that ran a while starts
/// the count again.
fn failures_in_a_row(failures: u32, ran_for: Duration) -> u32 {
    if ran_for >= RAN_A_WHILE {
        1
    } else {
        failures + 1
    }
}

/// A role process's `/readyz` answer: 200 when every role runs (each has what it needs: a
/// role that lost its database or broker is restarting until it is back), else 503
/// problem+json naming the roles that do not run and their states (the errors are in the
/// log: an open probe must not learn the database's host or user from them).
fn readiness_response(health: &RoleHealth) -> axum::response::Response {
    use axum::response::IntoResponse;
    let down = health.not_running();
    if down.is_empty() {
        return (axum::http::StatusCode::OK, "ready").into_response();
    }
    let detail = down
        .iter()
        .map(|(role, why)| format!("{role} is {why}"))
        .collect::<Vec<_>>()
        .join("; ");
    api::error::ApiError::Unavailable(format!("not ready: {detail}")).into_response()
}

/// Whether a role is started again after it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// After an error or a panic (roles that hold a connection that can be lost).
    OnFailure,
    /// Never: its failure ends the process (an HTTP server owns its bound listener).
    Never,
}

type Attempt = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// How a role's supervision ended.
enum RoleEnd {
    Stopped,
    Failed(anyhow::Error),
}

/// The roles of one process, supervised; see the module docs.
pub struct Roles {
    tasks: JoinSet<(&'static str, RoleEnd)>,
    shutdown: CancellationToken,
    health: RoleHealth,
}

impl Roles {
    /// Roles that stop when `shutdown` is cancelled (and cancel it when one cannot go on).
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            tasks: JoinSet::new(),
            shutdown,
            health: RoleHealth::default(),
        }
    }

    pub fn health(&self) -> RoleHealth {
        self.health.clone()
    }

    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Starts `role`: each attempt is a fresh future from `attempt`, run as a task of its own.
    pub fn spawn<F>(&mut self, role: &'static str, restart: Restart, attempt: F)
    where
        F: FnMut() -> Attempt + Send + 'static,
    {
        self.health.set(role, RoleState::Running);
        // At 0 from the start, so that an alert on their increase sees the first restart.
        for reason in ["error", "panic"] {
            metrics::counter!("role_restarts_total", "role" => role, "reason" => reason)
                .increment(0);
        }
        let (shutdown, health) = (self.shutdown.clone(), self.health.clone());
        self.tasks.spawn(async move {
            let end = supervise(role, restart, attempt, &shutdown, &health).await;
            health.set(
                role,
                match &end {
                    RoleEnd::Stopped => RoleState::Stopped,
                    RoleEnd::Failed(e) => RoleState::Failed {
                        error: format!("{e:#}"),
                    },
                },
            );
            (role, end)
        });
    }

    /// The poller: fetches each scheduled influencer once per interval. Its memory of the slots
    /// it handled outlives reconnections; the returned handle reads its counters.
    pub fn poll(
        &mut self,
        pool: PgPool,
        broker: BrokerSettings,
        client: MockstagramClient,
        interval: Duration,
    ) -> PollerMemory {
        let memory = PollerMemory::new(interval, crate::registry::Registry::new(pool));
        let (handle, shutdown) = (memory.clone(), self.shutdown.clone());
        self.spawn("poll", Restart::OnFailure, move || {
            let (broker, client, memory, shutdown) = (
                broker.clone(),
                client.clone(),
                memory.clone(),
                shutdown.clone(),
            );
            Box::pin(async move {
                let connection = Broker::connect(&broker).await?;
                let result = Poller::remembering(connection.clone(), client, interval, memory)
                    .run(shutdown)
                    .await;
                connection.close().await;
                result
            })
        });
        handle
    }

    /// The reconciler: puts influencers that fell out of the schedule back, every 5 intervals.
    pub fn reconcile(&mut self, pool: PgPool, broker: BrokerSettings, interval: Duration) {
        let shutdown = self.shutdown.clone();
        self.spawn("reconcile", Restart::OnFailure, move || {
            let (pool, broker, shutdown) = (pool.clone(), broker.clone(), shutdown.clone());
            Box::pin(async move {
                let connection = Broker::connect(&broker).await?;
                let result =
                    reconcile::run(pool, connection.clone(), interval, interval * 5, shutdown)
                        .await;
                connection.close().await;
                result
            })
        });
    }

    /// The sink: point-queue messages into TimescaleDB in batches.
    pub fn sink(&mut self, pool: PgPool, broker: BrokerSettings, settings: SinkSettings) {
        let shutdown = self.shutdown.clone();
        self.spawn("sink", Restart::OnFailure, move || {
            let (pool, broker, settings, shutdown) = (
                pool.clone(),
                broker.clone(),
                settings.clone(),
                shutdown.clone(),
            );
            Box::pin(async move {
                let connection = Broker::connect(&broker).await?;
                let result = Sink::new(pool, connection.clone(), settings)
                    .run(shutdown)
                    .await;
                connection.close().await;
                result
            })
        });
    }

    /// The minutely jobs: average, ranking, compaction and retention
    /// ([`jobs::run_minutely`]).
    pub fn jobs(&mut self, pool: PgPool, storage: StorageSettings) {
        let shutdown = self.shutdown.clone();
        self.spawn("jobs", Restart::OnFailure, move || {
            let (pool, storage, shutdown) = (pool.clone(), storage.clone(), shutdown.clone());
            Box::pin(async move {
                jobs::run_minutely(pool, storage, shutdown).await;
                Ok(())
            })
        });
    }

    /// The webhooks' deliveries ([`Deliverer`]), under one name for this process's leases.
    pub fn webhooks(&mut self, pool: PgPool, settings: WebhookSettings) {
        let shutdown = self.shutdown.clone();
        let owner = Deliverer::process_name();
        self.spawn("webhooks", Restart::OnFailure, move || {
            let deliverer = Deliverer::new(pool.clone(), settings.clone(), owner.clone());
            let shutdown = shutdown.clone();
            Box::pin(async move { deliverer?.run(shutdown).await })
        });
    }

    /// Decides the spike candidates the sink's screen notes, as they come
    /// ([`crate::jobs::spikes`]); `z` is `EVENT_SPIKE_Z`.
    pub fn spikes(&mut self, pool: PgPool, z: f64) {
        let shutdown = self.shutdown.clone();
        self.spawn("spikes", Restart::OnFailure, move || {
            let (pool, shutdown) = (pool.clone(), shutdown.clone());
            Box::pin(crate::jobs::spikes::run(pool, z, shutdown))
        });
    }

    /// The daily classification pass at `at` (UTC); its first look is `first_look` after start.
    pub fn daily_classification(
        &mut self,
        pool: PgPool,
        client: MockstagramClient,
        settings: PassSettings,
        at: NaiveTime,
        first_look: Duration,
    ) {
        let shutdown = self.shutdown.clone();
        let mut first_look = Some(first_look);
        self.spawn("classify", Restart::OnFailure, move || {
            let (pool, client, settings, shutdown) = (
                pool.clone(),
                client.clone(),
                settings.clone(),
                shutdown.clone(),
            );
            let wait = first_look.take().unwrap_or(Duration::ZERO);
            Box::pin(async move {
                jobs::daily_classification::run(pool, client, settings, at, wait, shutdown).await;
                Ok(())
            })
        });
    }

    /// Serves `router` on `addr` until shutdown, as the role `role`. Binding happens now, so a
    /// taken address is reported at once, naming `setting`; returns the bound address (port 0
    /// picks one).
    pub async fn serve(
        &mut self,
        role: &'static str,
        router: Router,
        addr: SocketAddr,
        setting: &'static str,
    ) -> anyhow::Result<SocketAddr> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {setting}={addr}"))?;
        let bound = listener.local_addr()?;
        tracing::info!(role, addr = %bound, "HTTP listening");
        let mut listener = Some(listener);
        let shutdown = self.shutdown.clone();
        self.spawn(role, Restart::Never, move || {
            let listener = listener.take();
            let (router, shutdown) = (router.clone(), shutdown.clone());
            Box::pin(async move {
                let listener = listener.context("the listener was already used")?;
                axum::serve(listener, router)
                    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                    .await
                    .with_context(|| format!("the HTTP server on {setting}={bound} failed"))?;
                anyhow::ensure!(
                    shutdown.is_cancelled(),
                    "the HTTP server on {setting}={bound} stopped by itself"
                );
                Ok(())
            })
        });
        Ok(bound)
    }

    /// Serves the API and dashboard (the role `serve`) on `addr` (`LISTEN_ADDR`); its
    /// `/healthz` reports these roles.
    pub async fn serve_api(
        &mut self,
        state: ApiState,
        addr: SocketAddr,
    ) -> anyhow::Result<SocketAddr> {
        let router = api::router(state.with_health(self.health()));
        self.serve("serve", router, addr, "LISTEN_ADDR").await
    }

    /// Serves a role's `/metrics`, `/healthz` and `/readyz` on `addr` (`METRICS_ADDR`).
    pub async fn serve_ops(&mut self, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
        let (health, readiness) = (self.health(), self.health());
        let router = telemetry::metrics_router()
            .route(
                "/healthz",
                axum::routing::get(move || {
                    let health = health.clone();
                    async move { health.response(crate::health::Detail::States) }
                }),
            )
            .route(
                "/readyz",
                axum::routing::get(move || {
                    let health = readiness.clone();
                    async move { readiness_response(&health) }
                }),
            );
        self.serve("metrics", router, addr, "METRICS_ADDR").await
    }

    /// Waits until every role has ended. The first role that could not go on cancels the
    /// others and is the error returned.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut first_failure: Option<anyhow::Error> = None;
        while let Some(joined) = self.tasks.join_next().await {
            let (role, end) = match joined {
                Ok(ended) => ended,
                // supervise() itself does not panic; a cancelled runtime ends here.
                Err(e) => ("supervisor", RoleEnd::Failed(anyhow::anyhow!("{e}"))),
            };
            match end {
                RoleEnd::Stopped => tracing::debug!(role, "role stopped"),
                RoleEnd::Failed(e) => {
                    tracing::error!(
                        role,
                        error = format!("{e:#}"),
                        "role cannot go on; stopping the process"
                    );
                    self.shutdown.cancel();
                    first_failure.get_or_insert(e.context(format!("the {role} role failed")));
                }
            }
        }
        match first_failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Runs attempts of one role until shutdown, or until it cannot go on (see the module docs).
async fn supervise<F>(
    role: &'static str,
    restart: Restart,
    mut attempt: F,
    shutdown: &CancellationToken,
    health: &RoleHealth,
) -> RoleEnd
where
    F: FnMut() -> Attempt,
{
    let (mut failures, mut quick_panics) = (0u32, 0u32);
    loop {
        let started = Instant::now();
        let outcome = tokio::spawn(attempt()).await;
        let ran_for = started.elapsed();
        let (reason, error) = match outcome {
            Ok(Ok(())) if shutdown.is_cancelled() => return RoleEnd::Stopped,
            Ok(Ok(())) => {
                return RoleEnd::Failed(anyhow::anyhow!("it ended before shutdown"));
            }
            Ok(Err(e)) if shutdown.is_cancelled() => {
                tracing::warn!(
                    role,
                    error = format!("{e:#}"),
                    "stopped with an error during shutdown"
                );
                return RoleEnd::Stopped;
            }
            Ok(Err(e)) if Misconfigured::is_cause_of(&e) => return RoleEnd::Failed(e),
            Ok(Err(e)) => {
                quick_panics = 0;
                ("error", e)
            }
            Err(joined) if joined.is_panic() => {
                quick_panics = if ran_for < RAN_A_WHILE {
                    quick_panics + 1
                } else {
                    1
                };
                let message = panic_message(joined.into_panic());
                ("panic", anyhow::anyhow!("panicked: {message}"))
            }
            Err(joined) => return RoleEnd::Failed(anyhow::anyhow!("{joined}")),
        };
        if restart == Restart::Never {
            return RoleEnd::Failed(error);
        }
        if quick_panics >= MAX_QUICK_PANICS {
            return RoleEnd::Failed(error.context(format!(
                "{quick_panics} panics in a row, each within {RAN_A_WHILE:?} of its start"
            )));
        }
        failures = failures_in_a_row(failures, ran_for);
        let pause = RESTART_BACKOFF.wait(failures);
        metrics::counter!("role_restarts_total", "role" => role, "reason" => reason).increment(1);
        tracing::error!(
            role,
            reason,
            error = format!("{error:#}"),
            retry_in_ms = pause.as_millis() as u64,
            "role failed; starting it again"
        );
        health.set(
            role,
            RoleState::Restarting {
                error: format!("{error:#}"),
            },
        );
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shutdown.cancelled() => return RoleEnd::Stopped,
        }
        health.set(role, RoleState::Running);
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests;
