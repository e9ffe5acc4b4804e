//! Probes and fixes run on nodes over [`crate::node_exec::NodeExec`].
