//! Flow checks: scheduled end-to-end monitoring of multi-step bank API flows.
//!
//! A flow file (TOML, one flow per file) names its steps, captures and
//! asserts ([`flow`]); the [`runner`] executes it over HTTP, timing every
//! request and redacting every secret ([`redact`]); [`report`] prints and
//! writes the result; [`schedule`] holds the pure scheduling logic (frequency
//! and jitter, retries, thresholds, quorum, maintenance windows) that the
//! server's scheduler and the agents drive; [`alerts`] delivers failure,
//! degraded, recovery and certificate-expiry alerts; [`tls`] reads a host's
//! certificate expiry. Nothing here knows HTTP servers or the store's SQL.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod env;
/// The XS2A form envelope lives in core: the Klarna connector seals forms too.
pub use bankbridge_core::envelope;
pub mod flow;
pub mod redact;
pub mod report;
pub mod runner;
pub mod schedule;
pub mod template;
pub mod tls;
