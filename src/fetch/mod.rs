//! Fetching: the Mockstagram [`client`], the poll [`worker`] that drives it from the
//! schedule queue, and the fleet's rate [`ceiling`] the pollers share.

pub mod ceiling;
pub mod client;
pub mod worker;

pub use client::{FetchOutcome, MockstagramClient, UpstreamError, parse_profile};
pub use worker::{Poller, PollerMemory};
