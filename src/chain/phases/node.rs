//! Draining a node and upgrading it, shared by the control-plane and worker phases.

use anyhow::Context as _;
use chain_core::{
    metrics::{Grouping, Metric},
    plan::{Phase, Snapshot},
    resume::{self, UpgradeStarted},
};
use tracing::{info, warn};

use super::super::{Ctx, StepInput, abort, nodes, record_node};
use crate::{
    drain::{self, DrainError, DrainOutcome, DrainSummary, DrainTarget, Uncordon},
    k8s::{events::Milestone, records},
    node::probes::{self, NodeRole, UpdateNode},
};

/// Drains the node; on a drain error or halt the node is uncordoned if we cordoned it (its own
/// upgrade did not start, so it should take workloads again) and the state is reported.
async fn drain_node(ctx: &Ctx, phase: Phase, node: &str) -> anyhow::Result<Option<String>> {
    record_node(ctx, node, &Milestone::DrainStarted).await;
    let target = DrainTarget {
        node: node.into(),
        namespace: ctx.settings.namespace.clone(),
        self_pod: ctx.self_pod.clone(),
    };
    let started = tokio::time::Instant::now();
    // Worker drains run side by side with worker concurrency above 1.
    let shared = (phase == Phase::Worker && !ctx.settings.workers.sequential())
        .then(|| chain_core::waves::ClaimKeys::new(&ctx.settings.annotation_prefix));
    match drain::drain_shared(&ctx.clients, &target, &ctx.settings.drain, shared).await {
        Ok(report) => {
            info!("{report}");
            let sum = &report.summary;
            push_drain_metrics(ctx, phase, node, sum).await;
            record_node(ctx, node, &Milestone::Evicted(sum.evicted)).await;
            // Pods deleted as not Ready are direct deletions too.
            let deleted = sum.fallback_deleted + sum.unhealthy_deleted;
            if deleted > 0 {
                record_node(ctx, node, &Milestone::FallbackDeleted(deleted)).await;
            }
            match report.outcome {
                DrainOutcome::Drained => Ok(None),
                DrainOutcome::Halted { reason, remaining } => {
                    let state = uncordon_after_failure(ctx, node).await;
                    warn!(
                        "drain of {node} halted by the kill switch with {} pod(s) remaining; {state}",
                        remaining.len()
                    );
                    Ok(Some(reason))
                }
            }
        }
        Err(e) => {
            let sum = match &e {
                DrainError::Timeout { summary, .. } => (**summary).clone(),
                _ => DrainSummary { duration: started.elapsed(), ..Default::default() },
            };
            push_drain_metrics(ctx, phase, node, &sum).await;
            let state = uncordon_after_failure(ctx, node).await;
            Err(anyhow::Error::new(e).context(format!("drain of node {node} failed; {state}")))
        }
    }
}

/// The drain's figures, in the phase's Pushgateway group.
async fn push_drain_metrics(ctx: &Ctx, phase: Phase, node: &str, sum: &DrainSummary) {
    let group = Grouping::phase(phase.as_str(), Some(node));
    ctx.push
        .push(
            &group,
            &[
                Metric::DrainDuration(sum.duration),
                Metric::PodsEvicted(sum.evicted.into()),
                Metric::PodsFallbackDeleted((sum.fallback_deleted + sum.unhealthy_deleted).into()),
            ],
        )
        .await;
}

/// Uncordons a node whose own upgrade did not start (only if the chain cordoned it); says
/// what state it was left in.
pub(super) async fn uncordon_after_failure(ctx: &Ctx, node: &str) -> String {
    match drain::uncordon_if_ours(&ctx.clients.api, node).await {
        Ok(Uncordon::Uncordoned) => format!("node {node} uncordoned (its upgrade had not started)"),
        Ok(Uncordon::NotOurs { cordoned: true }) => {
            format!("node {node} left cordoned (cordoned by someone else)")
        }
        Ok(Uncordon::NotOurs { cordoned: false }) => format!("node {node} is schedulable"),
        Err(e) => format!("node {node} may still be cordoned: failed to uncordon it: {e}"),
    }
}

/// A node phase whose node is already on target skips its work. A run killed after the
/// upgrade but before its uncordon (activeDeadlineSeconds, SIGKILL) left the node cordoned:
/// uncordon it if the chain cordoned it, or the node stays out of service and, for the only
/// control plane, the next worker Job has nowhere to run.
pub(super) async fn uncordon_on_skip(ctx: &Ctx, node: &str) {
    match drain::uncordon_if_ours(&ctx.clients.api, node).await {
        Ok(Uncordon::Uncordoned) => {
            info!(node, "already on target and cordoned by an earlier run: uncordoned");
            record_node(ctx, node, &Milestone::Uncordoned).await;
        }
        Ok(Uncordon::NotOurs { .. }) => {}
        Err(e) => warn!("node {node} may still be cordoned: failed to uncordon it: {e}"),
    }
}

/// Refuses a node whose own upgrade failed earlier and was not acknowledged (the Job's own pod
/// retry, a resumed chain, a hand-applied Job): nothing touches it until an operator runs
/// `k8s-upgrade-chain ack NODE` (chain_core::resume).
pub(super) fn refuse_unacknowledged(snap: &Snapshot, node: &str) -> anyhow::Result<()> {
    match snap.node(node).and_then(|n| n.upgrade_started.as_ref()) {
        None => Ok(()),
        Some(started) => Err(abort(format!(
            "node {node} awaits an acknowledgement: {}; the chain does not touch it again until an operator \
             runs `{}`",
            started.describe(),
            resume::ack_command(node)
        ))),
    }
}

/// Checks, before anything changes, that the node's upgrade can run: an SSH session with the
/// host key verified and a trivial command through sudo (issue 17: a changed host key was found
/// only after the drain).
pub(super) async fn check_before_touching(ctx: &Ctx, snap: &Snapshot, node: &str) -> anyhow::Result<()> {
    let target = Ctx::target(snap, node)?;
    probes::check_reachable(ctx.exec.as_ref(), &target).await.with_context(|| {
        format!("node {node} cannot be reached for its upgrade; nothing was changed on it")
    })?;
    info!(node, "SSH and sudo check passed");
    Ok(())
}

/// Drains the node of a node phase, then re-reads the kill switch. `Some(reason)` means the
/// phase halts (the node was uncordoned again if we had cordoned it).
pub(super) async fn drain_for_upgrade(ctx: &Ctx, phase: Phase, node: &str) -> anyhow::Result<Option<String>> {
    let t0 = tokio::time::Instant::now();
    if let Some(reason) = drain_node(ctx, phase, node).await? {
        return Ok(Some(reason));
    }
    info!(node, took = ?t0.elapsed(), "drained");
    if let Some(reason) = ctx.kill_switch().await? {
        let state = uncordon_after_failure(ctx, node).await;
        warn!("kill switch before the upgrade of {node}: {state}");
        return Ok(Some(reason));
    }
    Ok(None)
}

/// Upgrades a drained node over SSH, uncordons it and waits until it is Ready on target.
///
/// Right before `update_k8s.sh` starts, the node gets its upgrade-started record
/// (chain_core::resume): from there a failure leaves the node cordoned for a human, pushes
/// `k8s_upgrade_awaiting_ack 1`, and nothing retries the node until an operator acknowledges
/// it. The record goes once the node is Ready on the target. If writing it fails, the upgrade
/// has not started: the node is uncordoned again.
pub(super) async fn upgrade_drained(
    ctx: &Ctx,
    snap: &Snapshot,
    input: &StepInput,
    node: &str,
    role: NodeRole,
) -> anyhow::Result<()> {
    let s = &ctx.settings;
    let target = Ctx::target(snap, node)?;
    let update = UpdateNode {
        role,
        release: input.target,
        preserve_kubelet_keys: s.hooks.preserve_kubelet_keys.clone(),
        apt_base: Some(s.apt_repository.as_str().trim_end_matches('/').to_string()),
    };
    let started = UpgradeStarted::recorded(input.step.phase(), input.target, jiff::Timestamp::now());
    if let Err(e) = records::mark_upgrade_started(&ctx.clients.api, node, &started).await {
        let state = uncordon_after_failure(ctx, node).await;
        return Err(e.context(format!("the upgrade of node {node} did not start; {state}")));
    }
    let seen_through = async {
        probes::update_node(ctx.exec.as_ref(), &target, &update, s.ssh.command_timeout)
            .await
            .with_context(|| format!("upgrade of node {node} failed; it stays cordoned for a human"))?;
        record_node(ctx, node, &Milestone::UpgradeRan(input.target)).await;
        match drain::uncordon_if_ours(&ctx.clients.api, node).await? {
            Uncordon::Uncordoned => record_node(ctx, node, &Milestone::Uncordoned).await,
            Uncordon::NotOurs { cordoned } => {
                info!(node, cordoned, "not uncordoning: the chain did not cordon it")
            }
        }
        nodes::wait_node_ready(&ctx.clients.api, node, input.target, s.timeouts.node_ready).await?;
        record_node(ctx, node, &Milestone::NodeReady(input.target)).await;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = seen_through {
        // The node's own upgrade started and did not finish: a human decides what happens next.
        ctx.push.push(&Grouping::node(node), &[Metric::AwaitingAck(true)]).await;
        record_node(ctx, node, &Milestone::AwaitingAck(started.describe())).await;
        return Err(e);
    }
    records::clear_upgrade_started(&ctx.clients.api, node).await?;
    Ok(())
}
