//! A simulated cluster for k8s-upgrade-chain: what `rehearse` runs the real chain against, and
//! what the tests drive the real `kube::Client` against.
//!
//! - [`apiserver`]: an in-process Kubernetes apiserver with the real status codes, `Status`
//!   bodies and semantics the chain depends on (eviction and PDBs, server-side apply, selectors,
//!   watches, pods that go away after their grace period, Jobs that run to Complete or Failed).
//! - [`node`]: simulated nodes behind the chain's node-execution port
//!   ([`chain_core::node_exec::NodeExec`]): they answer the chain's probes and apply what
//!   `update_k8s.sh` would change.
//! - [`http`]: loopback stand-ins for Prometheus, the Pushgateway and the apt repository.
//!
//! Nothing here is used by a chain Job in production; it ships in the binary only because
//! `rehearse` runs on it.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod apiserver;
pub mod http;
pub mod node;
