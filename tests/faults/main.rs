//! The fault-tolerance suite: break the pipeline's parts for real and count, per influencer and
//! slot, what was expected, stored, skipped and stored twice.
//!
//! `cargo test --release --test faults`. The scenarios that stop a database or a broker use
//! the suite's own instances (`scripts/services faults up`: a second PostgreSQL cluster on port
//! 5434 and a second RabbitMQ node on port 5673 with a short consumer_timeout), so the shared
//! services other tests use are never stopped. Scenarios run one at a time (they time slots on
//! two cores); each prints its ledger.

mod common;
mod ledger;

mod broker_restart;
mod cluster_node_loss;
mod compaction_kill;
mod compaction_lock_lost;
mod database_outage;
mod hostile_api;
mod kill_nine;
mod poison;
mod poller_stop;
mod read_only;
mod upstream_faults;
