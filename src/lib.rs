//! k8s-upgrade-chain: upgrades a kubeadm cluster node by node as a chain of Kubernetes Jobs.
//!
//! The crate is a functional core (pure planning over snapshots of the cluster) wrapped in a
//! thin imperative shell (one module per outside system). See README.md for the overview.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod cluster;
pub mod drain;
pub mod duration;
pub mod fixtures;
pub mod job;
pub mod killswitch;
pub mod plan;
pub mod settings;
pub mod spawn;
pub mod version;
