//! Fetching: the Mockstagram [`client`] over a lean keep-alive HTTP/1.1 client ([`http1`]),
//! the poll [`worker`] that drives it from the schedule queue, and the fleet's rate
//! [`ceiling`] the pollers share.

pub mod ceiling;
pub mod client;
pub(crate) mod http1;
pub mod worker;

pub use client::{FetchOutcome, MockstagramClient, UpstreamError, parse_profile};
pub use worker::{Poller, PollerMemory};
