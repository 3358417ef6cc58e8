//! hushd: a DNS sinkhole and egress filter. It answers every query for the network, forwards
//! ordinary names to upstream resolvers through a cache, and blocks or audits the vendor
//! telemetry names in its lists.
//!
//! The modules follow the query path: `listener` -> `handler` -> `policy` -> `cache` ->
//! `upstream` -> `answer`, with `config`, `reload`, `metrics` and `http` beside it and `app` as
//! the composition root. See docs/architecture.md.

pub mod answer;
pub mod app;
pub mod audit;
pub mod block_replies;
pub mod cache;
pub mod certs;
pub mod clients;
pub mod config;
pub mod config_diff;
pub mod destinations;
pub mod diagnostic;
pub mod egress;
pub mod evidence;
pub mod explain;
pub mod handler;
pub mod hit_path;
pub mod http;
pub mod https;
pub mod inflight;
pub mod limits;
pub mod listener;
pub mod lists;
pub mod manpage;
pub mod metrics;
pub mod policy;
pub mod policy_thread;
pub mod reload;
pub mod reply;
pub mod tcp;
pub mod tls;
pub mod udp;
pub mod upstream;
pub mod wire;
