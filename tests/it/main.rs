//! Integration tests against the real TimescaleDB and RabbitMQ that `scripts/services up` starts.
//! Each test is alone: its own database, its own simulator on port 0.

mod api;
mod broker;
mod classify;
mod cli;
mod compare;
mod compose;
mod csv;
mod dashboard;
mod events;
mod export;
mod forecast;
mod growth;
mod jobs;
mod monitoring;
mod movers;
mod pipeline;
mod rank;
mod replica;
mod schema;
mod search;
mod simulator;
mod storage;
mod tls;
mod watchlists;
mod webhooks;
