//! The records detection resumes from ([`chain_core::resume`]): the upgrade-started annotation
//! on a node, and the outcome annotation a phase writes on its own Job.

use chain_core::{
    metrics::PhaseOutcome,
    resume::{OUTCOME_ANNOTATION, UPGRADE_STARTED_ANNOTATION, UpgradeStarted},
};
use k8s_openapi::api::{batch::v1::Job, core::v1::Node};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};

/// Writes [`UPGRADE_STARTED_ANNOTATION`] on `node`: from now on a failure needs an operator's
/// acknowledgement before anything retries the node.
pub async fn mark_upgrade_started(
    client: &Client,
    node: &str,
    record: &UpgradeStarted,
) -> anyhow::Result<()> {
    let patch =
        serde_json::json!({"metadata": {"annotations": {UPGRADE_STARTED_ANNOTATION: record.value()}}});
    Api::<Node>::all(client.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| anyhow::anyhow!("failed to record on node {node} that its upgrade starts: {e}"))?;
    Ok(())
}

/// Removes [`UPGRADE_STARTED_ANNOTATION`] from `node` (a no-op when absent): its upgrade was seen
/// through.
pub async fn clear_upgrade_started(client: &Client, node: &str) -> anyhow::Result<()> {
    let patch = serde_json::json!({"metadata": {"annotations": {UPGRADE_STARTED_ANNOTATION: null}}});
    Api::<Node>::all(client.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| anyhow::anyhow!("failed to remove the upgrade-started record from node {node}: {e}"))?;
    Ok(())
}

/// Writes the phase's outcome on its own Job ([`OUTCOME_ANNOTATION`]), so detection can tell a
/// halt or a refusal (both Complete) from a phase that did its work. Best effort: a failure is
/// a warning (detection then re-runs a preflight, which is safe, and decides node steps from
/// the nodes' versions).
pub async fn record_outcome(client: &Client, namespace: &str, job: &str, outcome: PhaseOutcome) {
    let patch = serde_json::json!({"metadata": {"annotations": {OUTCOME_ANNOTATION: outcome.as_str()}}});
    if let Err(e) = Api::<Job>::namespaced(client.clone(), namespace)
        .patch(job, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::warn!("failed to record the outcome {} on Job {namespace}/{job}: {e}", outcome.as_str());
    }
}
