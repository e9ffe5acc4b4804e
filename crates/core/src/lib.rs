//! The functional core of k8s-upgrade-chain: pure types and decisions over values, with no
//! I/O. This crate depends on no Kubernetes client, async runtime, HTTP or SSH library, so the
//! compiler keeps it pure; the binary crate (the imperative shell) reads the cluster, asks the
//! core what to do, and does it. See `docs/architecture.md`.
//!
//! - Inputs and rules: [`settings`] (the validated configuration), [`names`] (Kubernetes' name
//!   and label rules, [`names::NodeName`]), [`image`] (image references), [`cron`] (CronJob
//!   schedules), [`version`], [`duration`] (with the bounds of every configured duration).
//! - The chain: [`plan`] (snapshot of the nodes, steps, what comes next, where each Job runs),
//!   [`job`] (Job names, deadlines, rendering the template), [`resume`] (where a stopped chain
//!   resumes, which nodes wait for a human, whether a phase still has work), [`etcd`] (the
//!   pre-upgrade snapshot decision).
//! - Gates: [`alerts`] (which firing alerts block), [`compat`] (addon and API compatibility),
//!   [`settle`] (the quiet window), [`health`] (node health), [`killswitch`].
//! - Node operations: [`drain`] (which pods to evict, PDB arithmetic, what an answer means),
//!   [`node_ops`] (what runs on a node and how its output reads), [`node_exec`] (the port the
//!   shell implements over SSH and the simulator implements in a rehearsal).
//! - Records: [`annotations`] (the in-flight record), [`metrics`] (Pushgateway gauges).
//! - Operations: [`status`], [`report`], [`rbac`] (the one list of API calls), [`manifests`].
//! - [`redact`]: secrets kept out of messages and logs.
//! - [`fixtures`]: test builders, only with the `testing` feature.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod alerts;
pub mod annotations;
pub mod compat;
pub mod cron;
pub mod drain;
pub mod duration;
pub mod etcd;
#[cfg(any(test, feature = "testing"))]
pub mod fixtures;
pub mod health;
pub mod image;
pub mod job;
pub mod killswitch;
pub mod manifests;
pub mod metrics;
pub mod names;
pub mod node_exec;
pub mod node_ops;
pub mod plan;
#[cfg(test)]
mod properties;
pub mod rbac;
pub mod redact;
pub mod report;
pub mod resume;
pub mod settings;
pub mod settle;
pub mod status;
pub mod version;
pub mod waves;

/// Image of the chain Jobs when neither `--image` nor `IMAGE` is set.
pub const DEFAULT_IMAGE: &str =
    concat!("ghcr.io/k8s-upgrade-chain/k8s-upgrade-chain:", env!("CARGO_PKG_VERSION"));
