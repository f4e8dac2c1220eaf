//! # influencer-analytics
//!
//! Tracks social-media influencers' follower metrics as time series. Data flows one way:
//!
//! ```text
//!  seed ──► schedule queue ──► poll (fetch Mockstagram) ──► point queue ──► sink ──► TimescaleDB
//!             ▲   (RabbitMQ)        │                          (RabbitMQ)                 │
//!             └──── re-enqueue ─────┘                               jobs ◄──┤    API + dashboard
//! ```
//!
//! ## Layout
//! Read in this order; each stage is a module named after it. Dependencies point one way: from
//! the command line down to the stages, and from the stages down to shared types
//! (`ARCHITECTURE.md` has the map; `tests/architecture.rs` keeps it true).
//! - [`cli`]: the subcommands, each one short function that parses and hands over.
//!   `main.rs` only parses and calls it.
//! - [`roles`]: builds and supervises the long-running roles (poll, reconcile, sink, jobs,
//!   classify, the HTTP servers), for the binary and the tests alike.
//! - [`config`]: every setting, as a flag and an environment variable, parsed once.
//! - [`telemetry`]: tracing logs and the Prometheus `/metrics` recorder; [`health`]: each
//!   role's state for `/healthz`.
//! - [`shutdown`]: the one cancellation signal handed to every long-running loop; [`retry`]: the
//!   one backoff policy of every retrying loop.
//! - [`tls`]: rustls for every connection (PostgreSQL, RabbitMQ, Mockstagram) and the
//!   simulator's HTTPS; a CA of one's own per connection.
//! - [`db`]: the connection pool and the embedded migrations (`migrations/`).
//! - [`model`]: the shared types: a point, a failed poll, the follower ratio.
//! - [`mockstagram`]: the upstream API's wire format and rules.
//!
//! The pipeline, in the order data flows:
//! - [`seed`]: ids from a range or a file into the registry and the schedule.
//! - [`schedule`]: slot arithmetic (offsets, next slot, skipping) and the schedule message.
//! - [`queue`]: the RabbitMQ topology (due, wait, enter, points, dead letters), publishing
//!   with confirms, and the point-queue message ([`queue::points`]).
//! - [`fetch`]: the Mockstagram client (retries, rate ceiling) and the poll worker.
//! - [`sink`]: batching point messages into TimescaleDB (the hot tier).
//! - [`series`]: the two storage tiers: raw points, then compact per-influencer segments of
//!   closed hours and days; the one read path every reader uses.
//! - [`reconcile`]: anti-entropy: puts back influencers that fell out of the schedule.
//! - [`jobs`]: periodic work, each one process at a time: the average, the ranking,
//!   compaction, retention and the daily classification.
//! - [`classify`]: the suspicious classification: Mockstagram's is_suspicious and the
//!   follower-spike detector.
//! - [`api`]: the HTTP API (`serve`): range queries, latest values and rank, health.
//! - [`export`]: every point of chosen influencers over a range as a CSV or Parquet file.
//!
//! With the `tools` feature (on by default), outside the production core:
//! `simulator`, a faithful Mockstagram stand-in with fault injection (`simulate`, and
//! `run --simulate`), `bench`, the performance goals measured (`bench <scenario>`), and
//! `testing`, the support the test binaries share.
//! `cargo build --no-default-features` builds the service without them.

pub mod api;
#[cfg(feature = "tools")]
pub mod bench;
pub mod classify;
pub mod cli;
pub mod config;
pub mod db;
pub mod events;
pub(crate) mod export;
pub mod fetch;
pub mod health;
pub mod jobs;
pub mod mockstagram;
pub mod model;
pub mod queue;
pub mod reconcile;
pub mod registry;
pub(crate) mod retry;
pub mod roles;
pub mod schedule;
pub mod seed;
pub mod series;
pub(crate) mod shutdown;
#[cfg(feature = "tools")]
pub mod simulator;
pub mod sink;
pub mod telemetry;
#[cfg(feature = "tools")]
pub mod testing;
pub mod tls;
pub(crate) mod webhooks;
