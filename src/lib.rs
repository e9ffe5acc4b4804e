//! k8s-upgrade-chain: upgrades a kubeadm cluster node by node as a chain of Kubernetes Jobs.
//!
//! This crate is the imperative shell around the functional core ([`chain_core`]): it reads
//! the cluster and the nodes, asks the core what to do, does it, records it, and spawns the
//! next Job. See `docs/architecture.md` for the layers and how one phase flows through them.
//!
//! - One module per outside system, each thin: [`k8s`] (the Kubernetes API: clients, Job
//!   apply, kill switch, Events, annotations, access review), [`node`] (nodes, over SSH:
//!   the executor and the probes), [`prometheus`] (the alert gate), [`pushgateway`],
//!   [`slack`], [`http`] (the HTTP client they share), [`config`] (the config and template
//!   files).
//! - [`drain`]: the drain engine (the PDB-aware eviction loop) around the core's drain policy.
//! - [`chain`]: the orchestration: `detect` and each phase.
//! - [`ops`]: the read-only `status` and `report`.
//! - [`rehearse`]: the whole chain on a simulated cluster (crate `sim`).
//! - [`cli`] (raw flags), [`args`] (the one validation step: raw flags, env, config and input
//!   files into validated arguments, before anything connects), [`commands`] (each command),
//!   [`exit`] (exit codes), [`telemetry`].
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod args;
pub mod chain;
pub mod cli;
pub mod commands;
pub mod config;
pub mod drain;
pub mod exit;
pub mod http;
pub mod k8s;
pub mod node;
pub mod ops;
pub mod prometheus;
pub mod pushgateway;
pub mod rehearse;
pub mod slack;
pub mod telemetry;
