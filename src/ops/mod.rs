//! The operator commands: the read-only views (what `status` and `report` read from the
//! cluster, Prometheus and the Pushgateway; their summaries are pure, in
//! [`chain_core::status`] and [`chain_core::report`]), and [`ack`], the acknowledgement of a
//! node's failed upgrade.

pub mod ack;
pub mod report;
pub mod status;
