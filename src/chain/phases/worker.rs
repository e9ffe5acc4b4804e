//! The worker phase: wait for the alerts to clear, drain, upgrade, check the DaemonSets, soak.

use chain_core::{
    alerts::soak_rounds,
    plan::{Phase, Snapshot},
};

use super::{
    super::{Ctx, Ended, StepInput, abort, nodes, record_node},
    gate_text,
    node::{check_before_touching, drain_for_upgrade, refuse_unacknowledged, upgrade_drained},
};
use crate::{k8s::events::Milestone, node::probes::NodeRole, slack::Slack};

/// Refuses a worker whose earlier upgrade awaits an acknowledgement; otherwise waits for the alerts to clear, checks SSH and sudo on the node, drains,
/// upgrades, warns on missing DaemonSet pods and soaks. Nothing changes before the drain. A
/// worker already on target never gets here: `run_step` skips it ([`super::repair_skipped`]).
pub(super) async fn worker(
    ctx: &Ctx,
    snap: &Snapshot,
    input: &StepInput,
    node: &str,
    slack: &Slack,
) -> anyhow::Result<Ended> {
    let s = &ctx.settings;
    refuse_unacknowledged(snap, node)?;
    slack.post(&format!("Draining {node}")).await;
    let v = ctx.gate.wait_until_clear(s.timeouts.alert_wait, s.timeouts.alert_interval).await;
    if v.blocks() {
        return Err(abort(format!(
            "{node}: still blocked after {}: {}",
            chain_core::duration::format(s.timeouts.alert_wait),
            gate_text(&v)
        )));
    }
    check_before_touching(ctx, snap, node).await?;
    if let Some(reason) = drain_for_upgrade(ctx, Phase::Worker, node).await? {
        return Ok(Ended::Halted(reason));
    }
    upgrade_drained(ctx, snap, input, node, NodeRole::Worker).await?;
    let missing = nodes::missing_daemonset_pods(&ctx.clients.api, node, &s.hooks.expected_daemonsets).await?;
    if !missing.is_empty() {
        slack.post(&format!("WARN: no Running {} pod on {node}", missing.join(", "))).await;
    }
    // Soak: an alert check every interval for the soak time.
    let rounds = soak_rounds(s.timeouts.soak, s.timeouts.soak_interval);
    for i in 0..rounds {
        let v = ctx.gate.check_once().await;
        if v.blocks() {
            return Err(abort(format!("{node} mid-soak ({}/{rounds}): {}", i + 1, gate_text(&v))));
        }
        tokio::time::sleep(s.timeouts.soak_interval).await;
    }
    record_node(ctx, node, &Milestone::SoakDone).await;
    slack
        .post(&format!(
            "{node} on v{}. Soaked clean ({}).",
            input.target,
            chain_core::duration::format(s.timeouts.soak)
        ))
        .await;
    Ok(Ended::Done)
}
