//! teller's service, independent of how it is started:
//!
//! - [`service`]: decide a transfer, record an event (transport-neutral);
//! - [`api`]: the HTTP API over hyper, with admission and probes;
//! - [`workers`]: the threads guest calls run on;
//! - [`metrics`], [`log`]: what operators see;
//! - [`config`]: the policy parameters (`teller.toml`).

#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod log;
pub mod metrics;
pub mod policy_set;
pub mod service;
pub mod workers;
