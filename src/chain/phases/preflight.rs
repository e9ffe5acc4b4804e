//! The preflight phase, as a list of named gates and preparations (seed-system.md §2.1).
//!
//! The gates come first and change nothing: the static settings (the etcd snapshot decision),
//! the access review, compatibility, node health, alerts, the settle window, the etcd backup
//! CronJob, the kubeadm plan, and SSH and sudo on every node (with containerd's version). The
//! first that refuses ends the phase quietly (held or blocked) and the first that fails aborts
//! it (exit 1). Only then does preflight mark the chain in flight and prepare the cluster
//! (etcd snapshot, kubeadm scratch prune, containerd skew fix, apt repositories): from that
//! point an abort is recorded, and detection resumes the chain (issue 17: it used to mark the
//! chain in flight, then refuse over a setting it could have read first).

use chain_core::{
    annotations::InFlight,
    compat::{self, Minor, Verdict},
    etcd::SnapshotPolicy,
    health,
    metrics::{Grouping, Metric, epoch_seconds},
    plan::{Kind, Snapshot},
    version::Version,
};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Node;
use tracing::{info, warn};

use super::{
    super::{Ctx, Ended, StepInput, abort, etcd, nodes},
    SSH_FANOUT, alert_check,
};
use crate::{
    k8s::{self, annotations::NamespaceAnnotations},
    node::probes::{self, AuthConfigDrift, PlanTarget},
    slack::Slack,
};

/// The gates, then the preparations; see the module doc.
pub(super) async fn preflight(
    ctx: &Ctx,
    snap: &Snapshot,
    input: &StepInput,
    slack: &Slack,
) -> anyhow::Result<Ended> {
    let target = input.target;

    // The gates: nothing changes until every one has passed. Settings first: they need no
    // cluster at all.
    let snapshot_policy = snapshot_policy_gate(ctx)?;
    access_review(ctx).await?;
    // One read of the nodes serves the compatibility gate (which fails safe if it failed) and
    // the health and settle gates.
    let nodes = k8s::list_nodes(&ctx.clients.api).await;
    if let Some(refusal) = compatibility_gate(ctx, snap, input, nodes.as_ref(), slack).await {
        return Ok(Ended::Refused(refusal));
    }
    // Only now: a held verdict, re-run every week until upstream catches up, says nothing to
    // Slack at all (seed failure 35).
    slack.post(&format!("Starting preflight (target v{target}, {})", input.kind)).await;
    let nodes = nodes?;
    node_health_gate(&nodes)?;
    alert_check(ctx, "pre-flight alert check").await?;
    settle_gate(ctx, &nodes)?;
    if let SnapshotPolicy::Take(backup) = snapshot_policy {
        etcd::check_backup(&ctx.clients.api, backup).await?;
    }
    kubeadm_plan_gate(ctx, snap, target, slack).await?;
    let skew = nodes_gate(ctx, snap).await?;

    // The preparations: from here on the cluster changes.
    let record = mark_in_flight(ctx, target, snapshot_policy).await?;
    if let Some(reason) = etcd_snapshot(ctx, &record, snapshot_policy, slack).await? {
        return Ok(Ended::Halted(reason));
    }
    prune_kubeadm_scratch(ctx, snap, target).await;
    containerd_skew(ctx, snap, skew, slack).await?;
    if input.kind == Kind::Minor {
        apt_repositories(ctx, snap, target, slack).await?;
    }
    slack.post("Preflight clean. Dispatching the control-plane Job.").await;
    Ok(Ended::Done)
}

// === the gates ===

/// The pre-upgrade etcd snapshot decision, from the settings alone: refusing needs no cluster,
/// so it comes before anything is read or written.
fn snapshot_policy_gate(ctx: &Ctx) -> anyhow::Result<SnapshotPolicy<'_>> {
    let policy = chain_core::etcd::policy(&ctx.settings.hooks);
    match policy {
        SnapshotPolicy::Refuse => Err(abort(chain_core::etcd::REFUSAL)),
        SnapshotPolicy::OptedOut => {
            warn!(
                "no etcd backup configured and hooks.allow_no_etcd_snapshot is set: upgrading without a snapshot"
            );
            Ok(policy)
        }
        SnapshotPolicy::Take(_) => Ok(policy),
    }
}

/// Every permission the chain will need, asked of the apiserver before anything changes (seed
/// failure 25: a missing rule aborted a preflight after the latch was set).
async fn access_review(ctx: &Ctx) -> anyhow::Result<()> {
    let denied = k8s::access::verify_access(&ctx.clients.api, &ctx.settings).await?;
    if denied.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = denied.iter().map(ToString::to_string).collect();
    Err(abort(format!(
        "the service account lacks {} permission(s) the chain needs: {} (re-apply the RBAC from `k8s-upgrade-chain manifests` or terraform/)",
        list.len(),
        list.join("; ")
    )))
}

/// The compatibility gate. `Some(refusal)` ends the chain quietly (held or blocked). Each
/// verdict pushes its gauges once, with no pre-reset, so the alert on `k8s_upgrade_blocked`
/// does not flap (seed failure 35); a held verdict posts nothing to Slack.
async fn compatibility_gate(
    ctx: &Ctx,
    snap: &Snapshot,
    input: &StepInput,
    nodes: Result<&Vec<Node>, &anyhow::Error>,
    slack: &Slack,
) -> Option<String> {
    let verdict = match nodes {
        Ok(nodes) => {
            let running = Minor::of(snap.running_version());
            super::super::compat::verdict(
                &ctx.clients.api,
                Ok(&ctx.gate),
                &ctx.settings.compat,
                input.target,
                running,
                nodes,
            )
            .await
        }
        Err(e) => Verdict::Blocked(vec![compat::Reason {
            tag: compat::Tag::Actionable,
            text: format!("gate ERROR — failing safe: {e:#}"),
        }]),
    };
    let chain = Grouping::chain();
    let (held, reasons) = match verdict {
        Verdict::Pass => {
            ctx.push.push(&chain, &[Metric::Blocked(false), Metric::Held(false)]).await;
            info!("compatibility gate: pass");
            return None;
        }
        Verdict::Held(reasons) => (true, reasons),
        Verdict::Blocked(reasons) => (false, reasons),
    };
    ctx.push.push(&chain, &[Metric::Blocked(!held), Metric::Held(held)]).await;
    let list: Vec<String> = reasons.iter().map(ToString::to_string).collect();
    let word = if held { "HELD" } else { "BLOCKED" };
    for r in &list {
        warn!("compatibility gate: {r}");
    }
    if !held {
        slack.post(&format!("{word} v{}:\n{}", input.target, list.join("\n"))).await;
    }
    Some(format!("{word}: {}", list.join("; ")))
}

/// Every node Ready, without memory or disk pressure.
fn node_health_gate(nodes: &[Node]) -> anyhow::Result<()> {
    let bad = health::unhealthy(nodes);
    if bad.is_empty() { Ok(()) } else { Err(abort(format!("nodes unhealthy: {}", bad.join(", ")))) }
}

/// No node's Ready condition changed within the settle window (timestamps parsed strictly:
/// seed failure 23 was a parser that silently skipped them).
fn settle_gate(ctx: &Ctx, nodes: &[Node]) -> anyhow::Result<()> {
    let settle =
        chain_core::settle::evaluate(nodes, jiff::Timestamp::now(), ctx.settings.timeouts.settle_window);
    if settle.blocks() { Err(abort(format!("settle window: {settle}"))) } else { Ok(()) }
}

/// `kubeadm upgrade plan v<target>` on the first control plane must propose exactly the target
/// (seed failure 33: without the explicit version it proposes only patches). Also warns when
/// the apply would drop `--authentication-config`, which never blocks (seed failure 34).
/// Skipped when that control plane is already on target: the plan then prints no apply line
/// (seed failure 28, the partial resume). Both only read.
async fn kubeadm_plan_gate(ctx: &Ctx, snap: &Snapshot, target: Version, slack: &Slack) -> anyhow::Result<()> {
    let master = snap.first_control_plane();
    if master.on_target(target) {
        slack.post(&format!("{} already on v{target}: skipping the kubeadm plan gate", master.name)).await;
        return Ok(());
    }
    let master_t = Ctx::target(snap, &master.name)?;
    let exec = ctx.exec.as_ref();
    match probes::probe_upgrade_plan(exec, &master_t, target).await? {
        PlanTarget::Apply(v) if v == target => info!("kubeadm upgrade plan proposes v{v}"),
        PlanTarget::Apply(v) => {
            return Err(abort(format!("kubeadm upgrade plan proposes v{v}, not the requested v{target}")));
        }
        PlanTarget::NothingToApply => {
            return Err(abort(format!(
                "kubeadm upgrade plan on {} proposes no apply for v{target}",
                master.name
            )));
        }
    }
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
    Ok(())
}

/// Every node answers over SSH (host key verified) and runs a command through sudo, as every
/// later phase and the apt rewrite of a minor upgrade will; the workers' and the first control
/// plane's containerd versions are read on the way. Returns the containerd version the first
/// control plane must be raised to, if any.
async fn nodes_gate(ctx: &Ctx, snap: &Snapshot) -> anyhow::Result<Option<Version>> {
    let exec = ctx.exec.as_ref();
    let all: Vec<_> = snap.nodes().map(|n| Ctx::target(snap, &n.name)).collect::<anyhow::Result<_>>()?;
    let checked: Vec<_> = futures::stream::iter(all.iter().map(|t| probes::check_reachable(exec, t)))
        .buffered(SSH_FANOUT)
        .collect()
        .await;
    for (t, r) in all.iter().zip(checked) {
        r.map_err(|e| anyhow::anyhow!("node {} cannot be reached for the upgrade: {e}", t.node))?;
    }
    let master = snap.first_control_plane();
    let master_t = Ctx::target(snap, &master.name)?;
    let workers: Vec<_> =
        snap.workers.iter().map(|w| Ctx::target(snap, &w.name)).collect::<anyhow::Result<_>>()?;
    let probed: Vec<_> =
        futures::stream::iter(workers.iter().map(|w| probes::probe_containerd_version(exec, w)))
            .buffered(SSH_FANOUT)
            .collect()
            .await;
    let worker_versions = probed.into_iter().collect::<Result<Vec<_>, _>>()?;
    let master_containerd = probes::probe_containerd_version(exec, &master_t).await?;
    Ok(probes::containerd_skew_target(master_containerd, &worker_versions).inspect(|to| {
        info!(
            "containerd on {} is {master_containerd}, workers run up to {to}: preflight will upgrade it",
            master.name
        );
    }))
}

// === the preparations ===

/// Marks the chain in flight: the namespace annotations and the chain's gauges, with
/// `k8s_upgrade_snapshot_skipped` saying whether the site opted out of the snapshot (the
/// `EtcdPreUpgradeSnapshotMissing` alert does not page for that decision).
async fn mark_in_flight(ctx: &Ctx, target: Version, policy: SnapshotPolicy<'_>) -> anyhow::Result<InFlight> {
    let s = &ctx.settings;
    let record = InFlight { since: jiff::Timestamp::now(), target, snapshot_path: None };
    NamespaceAnnotations::new(ctx.clients.api.clone(), &s.namespace, &s.annotations()).write(&record).await?;
    ctx.push
        .push(
            &Grouping::chain(),
            &[
                Metric::InFlight(true),
                Metric::StartedTimestamp(epoch_seconds(record.since)),
                Metric::SnapshotTaken(false),
                Metric::SnapshotSkipped(policy.skipped()),
            ],
        )
        .await;
    Ok(record)
}

/// The pre-upgrade etcd snapshot, never skipped unless the site says so explicitly (the policy
/// was decided by the first gate). Returns the kill switch's reason if it appeared before the
/// snapshot.
async fn etcd_snapshot(
    ctx: &Ctx,
    record: &InFlight,
    policy: SnapshotPolicy<'_>,
    slack: &Slack,
) -> anyhow::Result<Option<String>> {
    let s = &ctx.settings;
    let backup = match policy {
        SnapshotPolicy::Take(backup) => backup,
        SnapshotPolicy::OptedOut => return Ok(None),
        // The first gate refused already; kept total so no path skips the snapshot silently.
        SnapshotPolicy::Refuse => return Err(abort(chain_core::etcd::REFUSAL)),
    };
    if let Some(reason) = ctx.kill_switch().await? {
        return Ok(Some(reason));
    }
    let snapshot =
        etcd::take_snapshot(&ctx.clients.api, backup, record.target, s.timeouts.etcd_snapshot).await?;
    let with_path = InFlight { snapshot_path: Some(snapshot.location.clone()), ..record.clone() };
    NamespaceAnnotations::new(ctx.clients.api.clone(), &s.namespace, &s.annotations())
        .write(&with_path)
        .await?;
    ctx.push.push(&Grouping::chain(), &[Metric::SnapshotTaken(true)]).await;
    slack.post(&format!("etcd snapshot at {} ({} bytes)", snapshot.location, snapshot.bytes)).await;
    Ok(None)
}

/// kubeadm scratch older than 3 days on the first control plane (seed failure 34: 28 GB of
/// backups starved etcd). Never blocks; skipped when that control plane is already on target.
async fn prune_kubeadm_scratch(ctx: &Ctx, snap: &Snapshot, target: Version) {
    let master = snap.first_control_plane();
    if master.on_target(target) {
        return;
    }
    let Ok(master_t) = Ctx::target(snap, &master.name) else { return };
    match probes::prune_kubeadm_scratch(ctx.exec.as_ref(), &master_t).await {
        Ok(report) => info!(?report, "pruned kubeadm scratch"),
        Err(e) => warn!("pruning kubeadm scratch failed (not blocking): {e}"),
    }
}

/// The control plane must not run an older containerd than the workers (`to`, from the nodes
/// gate): upgrade it and wait until it is Ready again.
async fn containerd_skew(
    ctx: &Ctx,
    snap: &Snapshot,
    to: Option<Version>,
    slack: &Slack,
) -> anyhow::Result<()> {
    let exec = ctx.exec.as_ref();
    let Some(to) = to else { return Ok(()) };
    let master = snap.first_control_plane();
    let master_t = Ctx::target(snap, &master.name)?;
    slack.post(&format!("containerd on {} is older than the workers' {to}: upgrading it", master.name)).await;
    probes::fix_containerd_skew(exec, &master_t, to).await?;
    nodes::wait_node_ready(&ctx.clients.api, &master.name, master.kubelet, ctx.settings.timeouts.node_ready)
        .await?;
    Ok(())
}

/// A minor upgrade: point every node's apt source at the new track.
async fn apt_repositories(ctx: &Ctx, snap: &Snapshot, target: Version, slack: &Slack) -> anyhow::Result<()> {
    let exec = ctx.exec.as_ref();
    let all: Vec<_> = snap.nodes().map(|n| Ctx::target(snap, &n.name)).collect::<anyhow::Result<_>>()?;
    let base = ctx.settings.apt_repository.as_str().trim_end_matches('/').to_string();
    let results: Vec<_> =
        futures::stream::iter(all.iter().map(|t| probes::rewrite_apt_repo(exec, t, target, &base)))
            .buffered(SSH_FANOUT)
            .collect()
            .await;
    for r in results {
        r?;
    }
    slack.post(&format!("apt repositories point at v{}", target.minor_track())).await;
    Ok(())
}
