//! The phase bodies: preflight, control plane (`master` and `control-plane`), worker and
//! postflight. Each returns how it ended; an `Err` aborts the Job (exit 1 for a gate, 3 for
//! anything unexpected) after `run_step` has recorded it.

mod control_plane;
mod node;
mod postflight;
mod preflight;
mod worker;

use chain_core::{
    alerts::GateVerdict,
    plan::{Snapshot, Step},
};
use tracing::info;

use super::{Ctx, Ended, StepInput, abort};
use crate::{node::probes::NodeRole, slack::Slack};

/// SSH sessions a fleet-wide probe keeps open at once (containerd versions, apt sources).
const SSH_FANOUT: usize = 16;

/// Dispatches to the phase body.
pub async fn run_phase(
    ctx: &Ctx,
    snap: &Snapshot,
    input: &StepInput,
    slack: &Slack,
) -> anyhow::Result<Ended> {
    match &input.step {
        Step::Preflight => preflight::preflight(ctx, snap, input, slack).await,
        Step::Master { node } => {
            control_plane::control_plane(ctx, snap, input, node, NodeRole::Master, slack).await
        }
        Step::ControlPlane { node } => {
            control_plane::control_plane(ctx, snap, input, node, NodeRole::ControlPlane, slack).await
        }
        Step::Worker { node } => worker::worker(ctx, snap, input, node, slack).await,
        Step::Postflight => postflight::postflight(ctx, snap, input, slack).await,
    }
}

/// What a node phase whose work is already done still repairs before it passes the chain on:
/// a retry after the Job was killed between its quiesce and its restore, or between the upgrade
/// and the uncordon, finds the node on target. Restore the Deployments an earlier run quiesced
/// (seed failure 27: tigera-operator at 0 for 1.5 h when the retry skipped the phase that would
/// have restored it) and uncordon the node if the chain cordoned it. Both only undo what the
/// chain itself recorded.
pub(super) async fn repair_skipped(ctx: &Ctx, step: &Step, slack: &Slack) {
    match step {
        Step::Master { node } | Step::ControlPlane { node } => {
            control_plane::restore_quiesced(ctx, slack).await;
            node::uncordon_on_skip(ctx, node).await;
        }
        Step::Worker { node } => node::uncordon_on_skip(ctx, node).await,
        Step::Preflight | Step::Postflight => {}
    }
}

/// The alert gate's verdict as one line for logs and messages.
pub(super) fn gate_text(v: &GateVerdict) -> String {
    match v {
        GateVerdict::Pass => "no blocking alert".into(),
        GateVerdict::Blocked { alerts } => format!("blocking alerts firing: {}", alerts.join(", ")),
        GateVerdict::Unavailable { reason } => format!("alert gate unavailable (failing closed): {reason}"),
    }
}

/// One alert check; a blocking verdict aborts the phase (exit 1).
async fn alert_check(ctx: &Ctx, what: &str) -> anyhow::Result<()> {
    let v = ctx.gate.check_once().await;
    info!(gate = %gate_text(&v), "{what}");
    if v.blocks() { Err(abort(format!("{what}: {}", gate_text(&v)))) } else { Ok(()) }
}
