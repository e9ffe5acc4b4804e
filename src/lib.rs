//! k8s-upgrade-chain: upgrades a kubeadm cluster node by node as a chain of Kubernetes Jobs.
//!
//! The crate is a functional core (pure planning over snapshots of the cluster: [`plan`],
//! [`job`], [`settings`]) wrapped in a thin imperative shell (one module per outside system:
//! [`cluster`], [`spawn`], [`killswitch`]). See README.md for the overview.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod alerts;
pub mod annotations;
pub mod app;
pub mod chain;
pub mod cli;
pub mod cluster;
pub mod compat;
pub mod drain;
pub mod duration;
pub mod events;
pub mod exit;
pub mod fixtures;
pub mod job;
pub mod killswitch;
pub mod manifests;
pub mod metrics;
pub mod node_exec;
pub mod plan;
pub mod probes;
pub mod rbac;
pub mod rehearse;
pub mod report;
pub mod settings;
pub mod settle;
pub mod slack;
pub mod spawn;
pub mod ssh;
pub mod status;
pub mod telemetry;
pub mod version;

/// Image of the chain Jobs when neither `--image` nor `IMAGE` is set.
pub const DEFAULT_IMAGE: &str =
    concat!("ghcr.io/k8s-upgrade-chain/k8s-upgrade-chain:", env!("CARGO_PKG_VERSION"));
