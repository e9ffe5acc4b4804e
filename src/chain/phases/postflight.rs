//! The postflight phase: every node on target, smoke tests, then the in-flight record cleared.

use std::time::Duration;

use chain_core::{
    alerts::RatioVerdict,
    metrics::{Grouping, Metric},
    plan::Snapshot,
};
use tracing::warn;

use super::{
    super::{Ctx, Ended, StepInput, abort, nodes, quiesce},
    gate_text,
};
use crate::{k8s::annotations::NamespaceAnnotations, slack::Slack};

/// Checks every node is on target and runs the smoke tests (reads only), then restores
/// quiesced Deployments (the backstop, on every exit path of the checks); only when the checks
/// passed does it clear the in-flight record.
pub(super) async fn postflight(
    ctx: &Ctx,
    _snap: &Snapshot,
    input: &StepInput,
    slack: &Slack,
) -> anyhow::Result<Ended> {
    let s = &ctx.settings;
    let target = input.target;
    slack.post("Running postflight").await;
    let checks = checks(ctx, target, slack).await;
    // The final guarantee that quiesced Deployments come back (seed failure 27), after the
    // reads and whatever they found.
    for e in quiesce::restore(&ctx.clients.api, &s.annotation_prefix, &s.hooks.quiesce_deployments).await {
        warn!("{e}");
    }
    let ratio_text = checks?;
    let ann = NamespaceAnnotations::new(ctx.clients.api.clone(), &s.namespace, &s.annotations());
    if let Err(e) = ann.clear().await {
        warn!("failed to clear the in-flight annotations: {e}");
    }
    ctx.push.push(&Grouping::chain(), &Metric::chain_cleared()).await;
    slack
        .post(&format!(
            ":white_check_mark: K8s upgrade complete: cluster on v{target} (pod-ready ratio {ratio_text})"
        ))
        .await;
    Ok(Ended::Done)
}

/// Every node on target, the alert and pod-ready reads, the smoke tests. Changes nothing;
/// returns the pod-ready ratio as text for the final message.
async fn checks(ctx: &Ctx, target: chain_core::version::Version, slack: &Slack) -> anyhow::Result<String> {
    let s = &ctx.settings;
    // Read the nodes again: the snapshot of the phase start may predate the last worker.
    let snap = ctx.snapshot().await?;
    let off: Vec<String> = snap.off_target(target).map(|n| format!("{} (v{})", n.name, n.kubelet)).collect();
    if !off.is_empty() {
        return Err(abort(format!("{} node(s) off target v{target}: {}", off.len(), off.join(", "))));
    }
    let v = ctx.gate.check_once().await;
    if v.blocks() {
        slack.post(&format!("WARN: {}", gate_text(&v))).await;
    }
    let (ratio, ratio_verdict) = ctx.gate.pod_ready().await;
    let ratio_text = ratio.map_or("unknown".to_string(), |r| format!("{r:.3}"));
    let mut failures = nodes::health_endpoints(&ctx.clients.api).await;
    if let Some(name) = s.hooks.smoke_dns_name.as_deref().filter(|n| !n.is_empty())
        && let Err(e) = nodes::resolve(name, Duration::from_secs(10)).await
    {
        failures.push(e);
    }
    failures.extend(nodes::system_pods_not_running(&ctx.clients.api).await?);
    if let RatioVerdict::TooLow { ratio, min } = ratio_verdict {
        failures.push(format!("pod-ready ratio {ratio:.3} is below the minimum {min}"));
    } else if let RatioVerdict::Unknown { min } = ratio_verdict {
        failures.push(format!("pod-ready ratio unknown with a minimum of {min} configured"));
    }
    if !failures.is_empty() {
        return Err(abort(format!(
            "smoke tests FAILED — halting for a human (no rollback; kubeadm cannot downgrade): {}",
            failures.join("; ")
        )));
    }
    Ok(ratio_text)
}
