//! The read-only operator views: what `status` and `report` read from the cluster, Prometheus
//! and the Pushgateway (their summaries are pure, in [`chain_core::status`] and
//! [`chain_core::report`]).

pub mod report;
pub mod status;
