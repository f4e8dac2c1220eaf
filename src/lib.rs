//! # influencer-analytics
//!
//! Tracks social-media influencers' follower metrics as time series. Data flows one way:
//!
//! ```text
//!  seed ──► schedule queue ──► poll (fetch Mockstagram) ──► point queue ──► sink ──► TimescaleDB
//!             ▲   (RabbitMQ)        │                          (RabbitMQ)                 │
//!             └──── re-enqueue ─────┘                                          API + dashboard
//! ```
//!
//! ## Layout
//! Read in this order; each stage is a module named after it.
//! - [`cli`]: the subcommands (`migrate`, `simulate`, `seed`, `poll`, `sink`, `serve`,
//!   `classify`, `run`) and how each is wired. `main.rs` only parses and calls it.
//! - [`config`]: every setting, as a flag and an environment variable, parsed once.
//! - [`telemetry`]: tracing logs and the Prometheus `/metrics` recorder.
//! - [`shutdown`]: the one cancellation signal handed to every long-running loop.
//! - [`db`]: the connection pool and the embedded migrations (`migrations/`).
//! - [`mockstagram`]: the upstream API's wire format and rules, shared by the client and the
//!   simulator.
//! - [`simulator`]: a faithful Mockstagram stand-in with fault injection, for demos and tests.
//!
//! The pipeline, in the order data flows:
//! - [`seed`]: ids from a range or a file into the registry and the schedule.
//! - [`schedule`]: slot arithmetic (offsets, next slot, skipping) and the schedule message.
//! - [`queue`]: the RabbitMQ topology (due, wait, enter, points, dead letters) and publishing
//!   with confirms.
//! - [`fetch`]: the Mockstagram client (retries, rate ceiling) and the poll worker.
//! - [`domain`]: the point-queue message: points, failures, influencers gone.
//! - [`sink`]: batching point messages into TimescaleDB, and the per-minute average.
//! - [`reconcile`]: anti-entropy: puts back influencers that fell out of the schedule.
//! - [`classify`]: the daily suspicious classification: Mockstagram's is_suspicious and the
//!   follower-spike detector.
//! - [`api`]: the HTTP API (`serve`): range queries, latest values and rank, health.
//!
//! And [`bench`]: `influencer-analytics bench <scenario>`, the performance goals measured.

pub mod api;
pub mod bench;
pub mod classify;
pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod fetch;
pub mod mockstagram;
pub mod queue;
pub mod reconcile;
pub mod schedule;
pub mod seed;
pub mod shutdown;
pub mod simulator;
pub mod sink;
pub mod telemetry;
