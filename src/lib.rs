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

pub mod cli;
pub mod config;
pub mod db;
pub mod mockstagram;
pub mod shutdown;
pub mod simulator;
pub mod telemetry;
