//! The phase bodies: preflight, control plane (`master` and `control-plane`), worker and
//! postflight. Each returns how it ended; an `Err` aborts the Job (exit 1 for a gate, 3 for
//! anything unexpected) after `run_step` has recorded it.

use std::time::Duration;

use anyhow::Context as _;
use futures::{StreamExt as _, future::join_all};
use tracing::{info, warn};

use super::{Ctx, Ended, StepInput, abort, etcd, nodes, quiesce, record_node};
use chain_core::{
    alerts::{GateVerdict, RatioVerdict, soak_rounds},
    annotations::InFlight,
    compat::{self, DeprecatedApi, Minor, Verdict},
    health,
    metrics::{Grouping, Metric, epoch_seconds},
    plan::{Kind, NodeView, Phase, PlanError, Snapshot, Step},
};

use crate::{
    drain::{self, DrainError, DrainOutcome, DrainSummary, DrainTarget, Uncordon},
    k8s::{self, annotations::NamespaceAnnotations, events::Milestone},
    node::probes::{self, AuthConfigDrift, NodeRole, PlanTarget, UpdateNode},
    slack::Slack,
};

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
        Step::Preflight => preflight(ctx, snap, input, slack).await,
        Step::Master { node } => control_plane(ctx, snap, input, node, NodeRole::Master, slack).await,
        Step::ControlPlane { node } => {
            control_plane(ctx, snap, input, node, NodeRole::ControlPlane, slack).await
        }
        Step::Worker { node } => worker(ctx, snap, input, node, slack).await,
        Step::Postflight => postflight(ctx, snap, input, slack).await,
    }
}

/// The node of a node phase in the phase's snapshot.
fn node_view<'s>(snap: &'s Snapshot, node: &str) -> anyhow::Result<&'s NodeView> {
    Ok(snap.node(node).ok_or_else(|| PlanError::UnknownNode { node: node.to_string() })?)
}

fn gate_text(v: &GateVerdict) -> String {
    match v {
        GateVerdict::Pass => "no blocking alert".into(),
        GateVerdict::Blocked { alerts } => format!("blocking alerts firing: {}", alerts.join(", ")),
        GateVerdict::Unavailable { reason } => format!("alert gate unavailable (failing closed): {reason}"),
    }
}

async fn alert_check(ctx: &Ctx, what: &str) -> anyhow::Result<()> {
    let v = ctx.gate.check_once().await;
    info!(gate = %gate_text(&v), "{what}");
    if v.blocks() { Err(abort(format!("{what}: {}", gate_text(&v)))) } else { Ok(()) }
}

// === preflight ===

async fn preflight(ctx: &Ctx, snap: &Snapshot, input: &StepInput, slack: &Slack) -> anyhow::Result<Ended> {
    let s = &ctx.settings;
    let target = input.target;
    slack.post(&format!("Starting preflight (target v{target}, {})", input.kind)).await;

    // 0. Every permission the chain will need, before anything changes (seed failure 25).
    let denied = k8s::access::verify_access(&ctx.clients.api, s).await?;
    if !denied.is_empty() {
        let list: Vec<String> = denied.iter().map(ToString::to_string).collect();
        return Err(abort(format!(
            "the service account lacks {} permission(s) the chain needs: {} (re-apply the RBAC from `k8s-upgrade-chain manifests` or terraform/)",
            list.len(),
            list.join("; ")
        )));
    }

    // 1. The compatibility gate, before any change. Each verdict pushes its gauges once: no
    // pre-reset, so the alert on k8s_upgrade_blocked does not flap (seed failure 35).
    // One read of the nodes serves the gate (which fails safe if it failed) and the checks below.
    let listed = crate::k8s::list_nodes(&ctx.clients.api).await;
    let verdict = compat_verdict(ctx, snap, input, listed.as_ref()).await;
    let chain = Grouping::chain();
    match &verdict {
        Verdict::Pass => {
            ctx.push.push(&chain, &[Metric::Blocked(false), Metric::Held(false)]).await;
            info!("compatibility gate: pass");
        }
        Verdict::Held(reasons) | Verdict::Blocked(reasons) => {
            let held = matches!(verdict, Verdict::Held(_));
            ctx.push.push(&chain, &[Metric::Blocked(!held), Metric::Held(held)]).await;
            let list: Vec<String> = reasons.iter().map(ToString::to_string).collect();
            let word = if held { "HELD" } else { "BLOCKED" };
            for r in &list {
                warn!("compatibility gate: {r}");
            }
            if !held {
                slack.post(&format!("{word} v{target}:\n{}", list.join("\n"))).await;
            }
            return Ok(Ended::Refused(format!("{word}: {}", list.join("; "))));
        }
    }

    // 2. Node health.
    let all = listed?;
    let bad = health::unhealthy(&all);
    if !bad.is_empty() {
        return Err(abort(format!("nodes unhealthy: {}", bad.join(", "))));
    }
    // 3. Alerts, once.
    alert_check(ctx, "pre-flight alert check").await?;
    // 4. Settle window: no node's Ready condition changed recently (parsed strictly).
    let settle = chain_core::settle::evaluate(&all, jiff::Timestamp::now(), s.timeouts.settle_window);
    if settle.blocks() {
        return Err(abort(format!("settle window: {settle}")));
    }

    let master = snap.first_control_plane();
    let master_t = Ctx::target(snap, &master.name)?;
    let exec = ctx.exec.as_ref();
    if master.on_target(target) {
        // Partial resume: kubeadm plan on an at-target control plane prints no apply line
        // (seed failure 28); the plan, drift and prune steps only concern a pending apply.
        slack.post(&format!("{} already on v{target}: skipping the kubeadm plan gate", master.name)).await;
    } else {
        // 5. kubeadm plan gate, with the explicit version (seed failure 33).
        match probes::probe_upgrade_plan(exec, &master_t, target).await? {
            PlanTarget::Apply(v) if v == target => info!("kubeadm upgrade plan proposes v{v}"),
            PlanTarget::Apply(v) => {
                return Err(abort(format!(
                    "kubeadm upgrade plan proposes v{v}, not the requested v{target}"
                )));
            }
            PlanTarget::NothingToApply => {
                return Err(abort(format!(
                    "kubeadm upgrade plan on {} proposes no apply for v{target}",
                    master.name
                )));
            }
        }
        // 6. OIDC drift: a warning, never a block (seed failure 34).
        match probes::probe_auth_config_drift(exec, &master_t, target).await {
            Ok(AuthConfigDrift::Dropped(line)) => {
                let msg = format!(
                    "WARN: kubeadm upgrade apply v{target} will drop --authentication-config ({line}); the post-upgrade scripts must restore it"
                );
                warn!("{msg}");
                slack.post(&msg).await;
            }
            Ok(AuthConfigDrift::Kept) => {}
            Err(e) => warn!("kubeadm upgrade diff failed (not blocking): {e}"),
        }
        // 7. Prune kubeadm scratch older than 3 days (seed failure 34: 28 GB of backups).
        match probes::prune_kubeadm_scratch(exec, &master_t).await {
            Ok(report) => info!(?report, "pruned kubeadm scratch"),
            Err(e) => warn!("pruning kubeadm scratch failed (not blocking): {e}"),
        }
    }

    // 8. Mark in flight. From here on an abort is recorded, and the detector's reconcile
    // clears a latch that leaks (seed failure 37).
    let now = jiff::Timestamp::now();
    let ann = NamespaceAnnotations::new(ctx.clients.api.clone(), &s.namespace, &s.annotations());
    ann.write(&InFlight { since: now, target, snapshot_path: None }).await?;
    ctx.push
        .push(
            &chain,
            &[
                Metric::InFlight(true),
                Metric::StartedTimestamp(epoch_seconds(now)),
                Metric::SnapshotTaken(false),
            ],
        )
        .await;

    // 9. etcd snapshot (never skipped unless the site says so explicitly).
    match &s.hooks.etcd_backup {
        Some(backup) => {
            if let Some(reason) = ctx.kill_switch().await? {
                return Ok(Ended::Halted(reason));
            }
            let snapshot =
                etcd::take_snapshot(&ctx.clients.api, backup, target, s.timeouts.etcd_snapshot).await?;
            ann.write(&InFlight { since: now, target, snapshot_path: Some(snapshot.location.clone()) })
                .await?;
            ctx.push.push(&chain, &[Metric::SnapshotTaken(true)]).await;
            slack.post(&format!("etcd snapshot at {} ({} bytes)", snapshot.location, snapshot.bytes)).await;
        }
        None if s.hooks.allow_no_etcd_snapshot => {
            warn!(
                "no etcd backup configured and hooks.allow_no_etcd_snapshot is set: upgrading without a snapshot"
            )
        }
        None => {
            return Err(abort(
                "no etcd backup configured (hooks.etcd_backup): refusing to upgrade without a snapshot; set hooks.allow_no_etcd_snapshot to accept the risk",
            ));
        }
    }

    // 10. containerd skew: the control plane must not run an older containerd than workers.
    let workers: Vec<_> =
        snap.workers.iter().map(|w| Ctx::target(snap, &w.name)).collect::<anyhow::Result<_>>()?;
    let probes_done: Vec<_> =
        futures::stream::iter(workers.iter().map(|w| probes::probe_containerd_version(exec, w)))
            .buffered(SSH_FANOUT)
            .collect()
            .await;
    let worker_versions = probes_done.into_iter().collect::<Result<Vec<_>, _>>()?;
    let master_containerd = probes::probe_containerd_version(exec, &master_t).await?;
    if let Some(to) = probes::containerd_skew_target(master_containerd, &worker_versions) {
        slack
            .post(&format!(
                "containerd on {} is {master_containerd}, workers run up to {to}: upgrading it",
                master.name
            ))
            .await;
        probes::fix_containerd_skew(exec, &master_t, to).await?;
        nodes::wait_node_ready(&ctx.clients.api, &master.name, master.kubelet, s.timeouts.node_ready).await?;
    }

    // 11. Minor upgrade: point every node's apt source at the new track.
    if input.kind == Kind::Minor {
        let all_t: Vec<_> =
            snap.nodes().map(|n| Ctx::target(snap, &n.name)).collect::<anyhow::Result<_>>()?;
        let base = s.apt_repository.as_str().trim_end_matches('/').to_string();
        let results: Vec<_> =
            futures::stream::iter(all_t.iter().map(|t| probes::rewrite_apt_repo(exec, t, target, &base)))
                .buffered(SSH_FANOUT)
                .collect()
                .await;
        for r in results {
            r?;
        }
        slack.post(&format!("apt repositories point at v{}", target.minor_track())).await;
    }
    slack.post("Preflight clean. Dispatching the control-plane Job.").await;
    Ok(Ended::Done)
}

async fn compat_verdict(
    ctx: &Ctx,
    snap: &Snapshot,
    input: &StepInput,
    nodes: Result<&Vec<k8s_openapi::api::core::v1::Node>, &anyhow::Error>,
) -> Verdict {
    let s = &ctx.settings.compat;
    let addon_images =
        join_all(s.addons.iter().map(|a| k8s::addons::read_addon_images(&ctx.clients.api, a))).await;
    let deprecated_apis = match ctx.gate.instant_query(&s.deprecated_api_query).await {
        Ok(samples) => Ok(samples
            .into_iter()
            .map(|x| DeprecatedApi {
                group: x.labels.get("group").cloned().unwrap_or_default(),
                version: x.labels.get("version").cloned().unwrap_or_default(),
                resource: x.labels.get("resource").cloned().unwrap_or_default(),
                removed_release: x.labels.get("removed_release").cloned().filter(|r| !r.is_empty()),
            })
            .collect()),
        Err(e) => Err(e.to_string()),
    };
    let nodes = match nodes {
        Ok(n) => n,
        Err(e) => {
            return Verdict::Blocked(vec![compat::Reason {
                tag: compat::Tag::Actionable,
                text: format!("gate ERROR — failing safe: {e:#}"),
            }]);
        }
    };
    let runtimes: Vec<(String, String)> = nodes
        .iter()
        .map(|n| {
            let rt = n
                .status
                .as_ref()
                .and_then(|s| s.node_info.as_ref())
                .map(|i| i.container_runtime_version.clone());
            (n.metadata.name.clone().unwrap_or_default(), rt.unwrap_or_default())
        })
        .collect();
    compat::evaluate(
        s,
        &compat::Inputs {
            target: input.target,
            running: Minor::of(snap.running_version()),
            addon_images: &addon_images,
            deprecated_apis: &deprecated_apis,
            runtimes: &runtimes,
        },
    )
}

// === draining a node, shared by control plane and worker ===

/// Drains the node; on a drain error or halt the node is uncordoned if we cordoned it (its own
/// upgrade did not start, so it should take workloads again) and the state is reported.
async fn drain_node(ctx: &Ctx, phase: Phase, node: &str) -> anyhow::Result<Option<String>> {
    record_node(ctx, node, &Milestone::DrainStarted).await;
    let target = DrainTarget {
        node: node.into(),
        namespace: ctx.settings.namespace.clone(),
        self_pod: ctx.self_pod.clone(),
    };
    let started = std::time::Instant::now();
    match drain::drain(&ctx.clients, &target, &ctx.settings.drain).await {
        Ok(report) => {
            info!("{report}");
            let sum = &report.summary;
            push_drain_metrics(ctx, phase, node, sum).await;
            record_node(ctx, node, &Milestone::Evicted(sum.evicted)).await;
            if sum.fallback_deleted > 0 {
                record_node(ctx, node, &Milestone::FallbackDeleted(sum.fallback_deleted)).await;
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

async fn push_drain_metrics(ctx: &Ctx, phase: Phase, node: &str, sum: &DrainSummary) {
    let group = Grouping::phase(phase.as_str(), Some(node));
    ctx.push
        .push(
            &group,
            &[
                Metric::DrainDuration(sum.duration),
                Metric::PodsEvicted(sum.evicted.into()),
                Metric::PodsFallbackDeleted(sum.fallback_deleted.into()),
            ],
        )
        .await;
}

async fn uncordon_after_failure(ctx: &Ctx, node: &str) -> String {
    match drain::uncordon_if_ours(&ctx.clients.api, node).await {
        Ok(Uncordon::Uncordoned) => format!("node {node} uncordoned (its upgrade had not started)"),
        Ok(Uncordon::NotOurs { cordoned: true }) => {
            format!("node {node} left cordoned (cordoned by someone else)")
        }
        Ok(Uncordon::NotOurs { cordoned: false }) => format!("node {node} is schedulable"),
        Err(e) => format!("node {node} may still be cordoned: failed to uncordon it: {e}"),
    }
}

/// Drains the node of a node phase, then re-reads the kill switch. `Some(reason)` means the
/// phase halts (the node was uncordoned again if we had cordoned it).
async fn drain_for_upgrade(ctx: &Ctx, phase: Phase, node: &str) -> anyhow::Result<Option<String>> {
    let t0 = std::time::Instant::now();
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

/// Upgrades a drained node over SSH, uncordons it and waits until it is Ready on target. A
/// failed upgrade leaves the node cordoned for a human.
async fn upgrade_drained(
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
    Ok(())
}

// === control plane ===

async fn control_plane(
    ctx: &Ctx,
    snap: &Snapshot,
    input: &StepInput,
    node: &str,
    role: NodeRole,
    slack: &Slack,
) -> anyhow::Result<Ended> {
    let s = &ctx.settings;
    let view = node_view(snap, node)?;
    if view.on_target(input.target) {
        slack.post(&format!("{node} already on v{}: skipping", input.target)).await;
        return Ok(Ended::Skipped(format!("{node} already on v{}", input.target)));
    }
    slack.post(&format!("Draining {node}")).await;
    alert_check(ctx, &format!("alert check before draining {node}")).await?;

    if let Some(reason) = drain_for_upgrade(ctx, input.step.phase(), node).await? {
        return Ok(Ended::Halted(reason));
    }
    // Quiesce after the drain (as the seed did) and restore on every exit path, errors
    // included (seed failure 27).
    let deployments = &s.hooks.quiesce_deployments;
    let result = async {
        quiesce::quiesce(&ctx.clients.api, &s.annotation_prefix, deployments).await?;
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
    for e in quiesce::restore(&ctx.clients.api, &s.annotation_prefix, deployments).await {
        warn!("{e}");
        slack.post(&format!("WARN: {e}")).await;
    }
    if matches!(result, Ok(Ended::Done)) {
        slack.post(&format!("{node} on v{}, control plane Running.", input.target)).await;
    }
    result
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

// === worker ===

async fn worker(
    ctx: &Ctx,
    snap: &Snapshot,
    input: &StepInput,
    node: &str,
    slack: &Slack,
) -> anyhow::Result<Ended> {
    let s = &ctx.settings;
    if node_view(snap, node)?.on_target(input.target) {
        slack.post(&format!("{node} already on v{}: skipping", input.target)).await;
        return Ok(Ended::Skipped(format!("{node} already on v{}", input.target)));
    }
    slack.post(&format!("Draining {node}")).await;
    let v = ctx.gate.wait_until_clear(s.timeouts.alert_wait, s.timeouts.alert_interval).await;
    if v.blocks() {
        return Err(abort(format!(
            "{node}: still blocked after {}: {}",
            chain_core::duration::format(s.timeouts.alert_wait),
            gate_text(&v)
        )));
    }
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

// === postflight ===

async fn postflight(ctx: &Ctx, _snap: &Snapshot, input: &StepInput, slack: &Slack) -> anyhow::Result<Ended> {
    let s = &ctx.settings;
    let target = input.target;
    slack.post("Running postflight").await;
    // The final guarantee that quiesced Deployments come back (seed failure 27).
    for e in quiesce::restore(&ctx.clients.api, &s.annotation_prefix, &s.hooks.quiesce_deployments).await {
        warn!("{e}");
    }
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
