//! The control-plane phases: `master` (`kubeadm upgrade apply` on the first control plane) and
//! `control-plane` (`kubeadm upgrade node` on each further one of an HA cluster).

use chain_core::plan::Snapshot;
use tracing::warn;

use super::{
    super::{Ctx, Ended, StepInput, abort, nodes, quiesce},
    alert_check,
    node::{
        check_before_touching, drain_for_upgrade, refuse_unacknowledged, uncordon_after_failure,
        upgrade_drained,
    },
};
use crate::{
    node::probes::{self, NodeRole},
    slack::Slack,
};

/// Refuses a control plane whose earlier upgrade awaits an acknowledgement (after restoring the
/// Deployments a killed run left quiesced); otherwise the checks (alerts, the Deployments to quiesce readable,
/// SSH and sudo on the node), then drain, quiesce, upgrade (`role` picks `apply` or `node`),
/// control-plane pods Running, alert check, post-upgrade scripts, and the quiesced Deployments
/// restored on every exit path. Nothing changes before the drain; a failure after it and before
/// the upgrade starts uncordons the node again. A control plane already on target never gets
/// here: `run_step` skips it ([`super::repair_skipped`]).
pub(super) async fn control_plane(
    ctx: &Ctx,
    snap: &Snapshot,
    input: &StepInput,
    node: &str,
    role: NodeRole,
    slack: &Slack,
) -> anyhow::Result<Ended> {
    let s = &ctx.settings;
    if let Err(refused) = refuse_unacknowledged(snap, node) {
        // A run killed between its quiesce and its restore left the Deployments at 0: they
        // come back now, not when an operator gets to the acknowledgement (seed failure 27:
        // tigera-operator at 0 for 1.5 h). The node itself stays cordoned for the operator.
        restore_quiesced(ctx, slack).await;
        return Err(refused);
    }
    slack.post(&format!("Draining {node}")).await;
    alert_check(ctx, &format!("alert check before draining {node}")).await?;
    let deployments = &s.hooks.quiesce_deployments;
    quiesce::check(&ctx.clients.api, deployments).await?;
    check_before_touching(ctx, snap, node).await?;

    if let Some(reason) = drain_for_upgrade(ctx, input.step.phase(), node).await? {
        return Ok(Ended::Halted(reason));
    }
    // Quiesce after the drain (as the seed did) and restore on every exit path, errors
    // included (seed failure 27).
    let result = async {
        if let Err(e) = quiesce::quiesce(&ctx.clients.api, &s.annotation_prefix, deployments).await {
            // The upgrade has not started: the node takes workloads again.
            let state = uncordon_after_failure(ctx, node).await;
            return Err(e.context(format!("the upgrade of node {node} did not start; {state}")));
        }
        upgrade_drained(ctx, snap, input, node, role).await?;
        let bad = nodes::control_plane_pods_not_running(&ctx.clients.api, node).await?;
        if !bad.is_empty() {
            return Err(abort(format!(
                "{} control-plane pod(s) not Running on {node}: {}",
                bad.len(),
                bad.join(", ")
            )));
        }
        alert_check(ctx, &format!("alert check after upgrading {node}")).await?;
        post_upgrade_scripts(ctx, snap, node, slack).await;
        Ok(Ended::Done)
    }
    .await;
    restore_quiesced(ctx, slack).await;
    if matches!(result, Ok(Ended::Done)) {
        slack.post(&format!("{node} on v{}, control plane Running.", input.target)).await;
    }
    result
}

/// Restores every quiesced Deployment that carries its saved replica count; failures warn.
pub(super) async fn restore_quiesced(ctx: &Ctx, slack: &Slack) {
    let s = &ctx.settings;
    for e in quiesce::restore(&ctx.clients.api, &s.annotation_prefix, &s.hooks.quiesce_deployments).await {
        warn!("{e}");
        slack.post(&format!("WARN: {e}")).await;
    }
}

/// The configured post-upgrade scripts: non-fatal, each verified when it says how.
async fn post_upgrade_scripts(ctx: &Ctx, snap: &Snapshot, node: &str, slack: &Slack) {
    let Ok(target) = Ctx::target(snap, node) else { return };
    for script in &ctx.settings.hooks.post_control_plane_scripts {
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(ctx.clients.api.clone(), &script.configmap_namespace);
        let body = match api.get_opt(&script.configmap_name).await {
            Ok(Some(cm)) => cm.data.and_then(|d| d.get(&script.configmap_key).cloned()),
            Ok(None) => None,
            Err(e) => {
                slack
                    .post(&format!(
                        "WARN: post-upgrade script {}: cannot read its ConfigMap: {e}",
                        script.name
                    ))
                    .await;
                continue;
            }
        };
        let Some(body) = body else {
            slack
                .post(&format!(
                    "WARN: post-upgrade script {}: ConfigMap {}/{} key {} missing; skipped",
                    script.name, script.configmap_namespace, script.configmap_name, script.configmap_key
                ))
                .await;
            continue;
        };
        if let Err(e) = probes::run_post_upgrade_script(ctx.exec.as_ref(), &target, &script.name, &body).await
        {
            slack.post(&format!("WARN: post-upgrade script {} failed on {node}: {e}", script.name)).await;
        }
        if let (Some(file), Some(needle)) = (&script.verify_file, &script.verify_contains) {
            match probes::probe_file_contains(ctx.exec.as_ref(), &target, file, needle).await {
                Ok(true) => {
                    slack.post(&format!("post-upgrade script {} verified on {node}", script.name)).await
                }
                Ok(false) => {
                    slack
                        .post(&format!("WARN: {file} on {node} lacks {needle:?} after {}", script.name))
                        .await
                }
                Err(e) => slack.post(&format!("WARN: could not verify {} on {node}: {e}", script.name)).await,
            };
        }
    }
}
