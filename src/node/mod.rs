//! Acting on nodes. Everything reaches a node through the core's port
//! [`chain_core::node_exec::NodeExec`]: [`ssh`] implements it in production (by InternalIP,
//! host keys verified), the simulator (crate `sim`) in a rehearsal; [`probes`] are the
//! commands the chain runs through it.

pub mod probes;
pub mod ssh;
