//! Fetching: the Mockstagram [`client`] and the poll [`worker`] that drives it from the
//! schedule queue.

pub mod client;
pub mod worker;

pub use client::{FetchOutcome, MockstagramClient, UpstreamError, parse_profile};
pub use worker::{Poller, PollerMemory};
