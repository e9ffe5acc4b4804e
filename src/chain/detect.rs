//! Detection (the CronJob): find the target version, push availability metrics, and start or
//! resume the chain (seed §1).
//!
//! Which Job to spawn is [`chain_core::resume::decide`]'s decision, from the chain's Jobs and
//! the nodes: preflight for a new target (or one whose preflight never completed), else the
//! next pending step of a chain that stopped short (after a halt, a refusal, or a failure
//! before a node's own upgrade started), else postflight. A node whose own upgrade failed
//! stops everything until an operator acknowledges it; detection then pushes
//! `k8s_upgrade_awaiting_ack` for it (the `K8sUpgradeNodeAwaitingAck` alert) instead of
//! retrying. A leaked in-flight latch (seed failure 37) is cleared only when no chain
//! continues.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::{Api, api::ListParams};
use tracing::{info, warn};

use super::{Ctx, spawn_step};
use chain_core::{
    compat::Minor,
    metrics::{ChainLatch, Grouping, Metric, Scrape, epoch_seconds},
    plan::{Kind, Snapshot, Step},
    resume::{self, Decision},
    status::TARGET_NODE_ANNOTATION,
    version::Version,
};

use crate::{
    exit::bad_input,
    k8s::{
        annotations::NamespaceAnnotations,
        spawn::{self, JobState, OnComplete, SpawnOutcome},
    },
    node::probes,
    slack::{self, Slack},
};

/// A leaked in-flight latch older than this, with no chain Job active, is cleared (seed §1.2).
pub const LEAK_AGE: Duration = Duration::from_secs(12 * 3600);

/// What detection found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detection {
    /// The kill switch is present.
    Halted(String),
    /// The cluster runs the latest version there is, and no chain is in flight.
    UpToDate { running: Version },
    /// A chain to `target`: a new one, or one in flight (the namespace's in-flight record).
    Target { running: Version, target: Version, kind: Kind, action: Action },
}

/// What detection did about the chain of its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `--dry-run`: nothing spawned.
    DryRun,
    /// A chain Job is running: nothing to do.
    Running { job: String },
    /// These nodes' failed upgrades await an acknowledgement: nothing spawned, the alert fires.
    AwaitingAck { nodes: Vec<String> },
    /// The Job of `step` was applied (`outcome` says whether it replaced one).
    Spawned { step: Step, outcome: SpawnOutcome },
    /// The chain resumed at its worker stage with worker concurrency above 1: these pending
    /// workers were claimed and their Jobs applied (empty when claims stay stopped).
    ClaimedWorkers { nodes: Vec<String> },
    /// The chain reached its end.
    Finished,
}

impl Action {
    /// One line for the command's output and the rehearsal.
    pub fn describe(&self) -> String {
        match self {
            Action::DryRun => "dry run: nothing spawned".into(),
            Action::Running { job } => format!("chain Job {job} is running"),
            Action::AwaitingAck { nodes } => format!(
                "nothing spawned: the failed upgrade of {} awaits an acknowledgement (k8s-upgrade-chain ack NODE)",
                nodes.join(", ")
            ),
            Action::Spawned { step, outcome } => {
                let what = match outcome {
                    SpawnOutcome::Created => "created".to_string(),
                    SpawnOutcome::Respawned { .. } => "re-created".to_string(),
                    other => format!("{other:?}"),
                };
                format!("{step} Job {what}")
            }
            Action::ClaimedWorkers { nodes } if nodes.is_empty() => {
                "worker claims stay stopped (kill switch or blocking alert): nothing spawned".into()
            }
            Action::ClaimedWorkers { nodes } => format!("worker Jobs of {} created", nodes.join(", ")),
            Action::Finished => "the chain is finished".into(),
        }
    }
}

/// Picks the target: a newer patch of the running minor wins; a next minor only once the
/// running minor is at its latest patch (seed §1.6).
pub fn choose_target(
    running: Version,
    latest_patch: Option<Version>,
    next_minor: Option<Version>,
) -> Option<(Version, Kind)> {
    if let Some(p) = latest_patch.filter(|p| p.same_minor(&running) && *p > running) {
        return Some((p, Kind::Patch));
    }
    next_minor.filter(|m| m.major == running.major && m.minor == running.minor + 1).map(|m| (m, Kind::Minor))
}

/// The highest `Version:` of an apt `Packages` index within `minor`, Debian revision stripped.
pub fn parse_packages(text: &str, minor: Minor) -> Option<Version> {
    text.lines()
        .filter_map(|l| l.strip_prefix("Version:"))
        .filter_map(|v| v.trim().split('-').next()?.parse::<Version>().ok())
        .filter(|v| Minor::of(*v) == minor)
        .max()
}

/// Whether the reconcile should clear a leaked latch.
pub fn latch_leaked(latch: &ChainLatch, active_chain_jobs: usize, now: jiff::Timestamp) -> Option<Duration> {
    let started = latch.started_timestamp?;
    if latch.in_flight != Some(true) || active_chain_jobs > 0 || started <= 0.0 {
        return None;
    }
    let age = epoch_seconds(now) - started;
    (age > LEAK_AGE.as_secs_f64()).then(|| Duration::from_secs_f64(age))
}

/// Asks the apt repository whether `v1.<N+1>` exists, and if so its highest version. The
/// repository answers with redirects (pkgs.k8s.io: 302 for everything), which are followed
/// (seed failure 30: they were not, and no minor was ever detected).
pub async fn next_minor(ctx: &Ctx, running: Version) -> anyhow::Result<Option<Version>> {
    let next = Minor(running.major, running.minor + 1);
    let base = ctx.settings.apt_repository.as_str().trim_end_matches('/');
    let release = format!("{base}/v{next}/deb/Release");
    let head = ctx
        .http
        .head(&release)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("failed to probe {release}: {}", e.without_url()))?;
    match head.status().as_u16() {
        200 => {}
        404 | 403 => return Ok(None),
        code => anyhow::bail!("unexpected HTTP {code} from {release}"),
    }
    let packages = format!("{base}/v{next}/deb/Packages");
    let text = ctx
        .http
        .get(&packages)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| anyhow::anyhow!("failed to read {packages}: {}", e.without_url()))?
        .text()
        .await
        .map_err(|e| anyhow::anyhow!("failed to read {packages}: {e}"))?;
    Ok(parse_packages(&text, next))
}

/// Every chain Job (label `app=k8s-upgrade-chain`) in the tool's namespace.
async fn chain_jobs(ctx: &Ctx) -> anyhow::Result<Vec<Job>> {
    let api: Api<Job> = Api::namespaced(ctx.clients.api.clone(), &ctx.settings.namespace);
    let jobs = api
        .list(&ListParams::default().labels(&format!("app={}", chain_core::job::APP_LABEL)))
        .await
        .map_err(|e| anyhow::anyhow!("failed to list chain Jobs in {}: {e}", ctx.settings.namespace))?;
    Ok(jobs.items)
}

/// Clears a leaked in-flight latch (seed failure 37): the chain group's gauges and the
/// namespace's in-flight annotations. Only called when no chain continues (nothing to resume,
/// no node awaiting an acknowledgement). Best effort: failures are warnings. The chain's Jobs
/// stay: they are the resume point and the history (`status`), and expire with their TTL.
async fn reconcile(ctx: &Ctx, scrape: Option<&Scrape>, jobs: &[Job], slack: &Slack) -> bool {
    let Some(scrape) = scrape else {
        warn!("cannot read the Pushgateway, skipping the leaked-state reconcile");
        return false;
    };
    let active = jobs.iter().filter(|j| spawn::job_state(j) == JobState::Active).count();
    let Some(age) = latch_leaked(&scrape.chain_latch(), active, jiff::Timestamp::now()) else { return false };
    let msg = format!(
        "reconcile: leaked in_flight latch ({:.1} h old, no chain Job active, nothing to resume): clearing metrics and annotations",
        age.as_secs_f64() / 3600.0
    );
    warn!("{msg}");
    slack.post(&msg).await;
    if let Err(e) = ctx.push.delete_group(&Grouping::chain()).await {
        warn!("failed to delete the chain metrics group: {e}");
    }
    let ann = NamespaceAnnotations::new(
        ctx.clients.api.clone(),
        &ctx.settings.namespace,
        &ctx.settings.annotations(),
    );
    if let Err(e) = ann.clear().await {
        warn!("failed to clear the in-flight annotations: {e}");
    }
    true
}

/// Restates `k8s_upgrade_awaiting_ack` from the nodes (the cluster is the truth): 1 for each
/// node whose failed upgrade awaits an acknowledgement (unless a chain Job is working on it),
/// 0 for a node the Pushgateway still shows at 1 that no longer does (acknowledged with
/// kubectl, or the pod that failed never pushed). Best effort.
async fn restate_awaiting(ctx: &Ctx, snap: &Snapshot, jobs: &[Job], scrape: Option<&Scrape>) -> Vec<String> {
    let busy: Vec<String> = jobs
        .iter()
        .filter(|j| spawn::job_state(j) == JobState::Active)
        .filter_map(|j| j.metadata.annotations.as_ref()?.get(TARGET_NODE_ANNOTATION).cloned())
        .collect();
    let awaiting: Vec<String> =
        resume::awaiting(snap).into_iter().map(|a| a.node).filter(|n| !busy.contains(n)).collect();
    for n in &awaiting {
        ctx.push.push(&Grouping::node(n), &[Metric::AwaitingAck(true)]).await;
    }
    for n in scrape.map(Scrape::awaiting_ack_nodes).unwrap_or_default() {
        if !awaiting.contains(&n) && !busy.contains(&n) {
            ctx.push.push(&Grouping::node(&n), &[Metric::AwaitingAck(false)]).await;
        }
    }
    awaiting
}

/// Runs detection. `dry_run` does everything but spawn.
pub async fn detect(ctx: &Ctx, dry_run: bool) -> anyhow::Result<Detection> {
    let slack = Slack::from_config(&ctx.settings.slack, slack::DETECTION_PREFIX);
    if let Some(reason) = ctx.kill_switch().await? {
        slack.post(&format!("HALTED by kill switch: {reason}")).await;
        warn!("kill switch present: {reason}");
        return Ok(Detection::Halted(reason));
    }
    // Static input before anything is read or written: the Job template every spawn renders.
    if !dry_run {
        crate::config::load_template(&ctx.settings).map_err(bad_input)?;
    }

    let snap = ctx.snapshot().await?;
    let running = snap.running_version();
    let master = Ctx::target(&snap, &snap.first_control_plane().name)?;
    let latest_patch = match probes::probe_latest_patch(ctx.exec.as_ref(), &master, running).await {
        Ok(v) => v,
        Err(e) => {
            warn!("latest patch unknown (apt-cache madison on {} failed): {e}", master.node);
            None
        }
    };
    let minor = if latest_patch.is_some_and(|p| p > running) {
        None
    } else {
        match next_minor(ctx, running).await {
            Ok(v) => v,
            Err(e) => {
                warn!("next minor unknown: {e:#}");
                None
            }
        }
    };
    let chosen = choose_target(running, latest_patch, minor);
    let now = epoch_seconds(jiff::Timestamp::now());
    let available = match chosen {
        Some((t, k)) => Metric::Available {
            kind: k.to_string(),
            running: running.to_string(),
            target: t.to_string(),
            available: true,
        },
        None => Metric::Available {
            kind: "none".into(),
            running: running.to_string(),
            target: running.to_string(),
            available: false,
        },
    };
    ctx.push.push(&Grouping::detection(), &[available, Metric::VersionCheckLastRun(now)]).await;

    // The chain's state, read from the cluster (and the latch from the Pushgateway).
    let scrape = match ctx.push.read().await {
        Ok(s) => Some(s),
        Err(e) => {
            warn!("cannot read the Pushgateway: {e}");
            None
        }
    };
    let jobs = chain_jobs(ctx).await?;
    let s = &ctx.settings;
    let record =
        match NamespaceAnnotations::new(ctx.clients.api.clone(), &s.namespace, &s.annotations()).read().await
        {
            Ok(r) => r,
            Err(e) => {
                warn!("cannot read the in-flight record: {e}");
                None
            }
        };
    restate_awaiting(ctx, &snap, &jobs, scrape.as_ref()).await;

    // The chain: the detected target, else the one in flight (its postflight, or a chain whose
    // target the probes could not confirm this time).
    let chain = chosen.or_else(|| {
        record.as_ref().map(|r| r.target).filter(|t| *t >= running).map(|t| (t, Kind::between(running, t)))
    });
    let Some((target, kind)) = chain else {
        reconcile(ctx, scrape.as_ref(), &jobs, &slack).await;
        info!(%running, "no upgrade needed");
        return Ok(Detection::UpToDate { running });
    };
    // The planner's rule: a target older than any node (the newest patch of the oldest
    // kubelet's minor, on a cluster some of whose nodes run a newer minor) is a downgrade.
    chain_core::plan::check_target(&snap, target)?;
    let target_of = |action| Detection::Target { running, target, kind, action };
    info!(%running, target_version = %target, %kind, "target detected");
    if dry_run {
        slack.post(&format!("DRY_RUN — target v{target} ({kind}) detected, not spawning")).await;
        return Ok(target_of(Action::DryRun));
    }

    let decision = resume::decide(&snap, target, &jobs);
    info!("{}", decision.describe());
    match decision {
        Decision::Running { job } => Ok(target_of(Action::Running { job })),
        Decision::AwaitingAck { nodes } => {
            let msg = format!(
                "{} (see docs/runbook.md)",
                Decision::AwaitingAck { nodes: nodes.clone() }.describe()
            );
            warn!("{msg}");
            slack.post(&msg).await;
            Ok(target_of(Action::AwaitingAck { nodes: nodes.into_iter().map(|a| a.node).collect() }))
        }
        Decision::Finished => {
            reconcile(ctx, scrape.as_ref(), &jobs, &slack).await;
            Ok(target_of(Action::Finished))
        }
        Decision::Spawn { step, previous } => {
            if step != Step::Preflight {
                // The chain runs again from now: K8sUpgradeStalled measures this run, not the
                // time the chain waited (preflight stamps its own).
                ctx.push
                    .push(&Grouping::chain(), &[Metric::InFlight(true), Metric::StartedTimestamp(now)])
                    .await;
            }
            if let (Step::Worker { .. }, false) = (&step, ctx.settings.workers.sequential()) {
                // Worker concurrency: the worker stage restarts the claims (a stop reason of
                // the run that stopped is cleared) and fills every slot, as after the control
                // planes; each Job that ends refills.
                slack.post(&format!("Resuming the chain to v{target} at its workers")).await;
                let d =
                    Box::pin(super::claims::refill(ctx, target, kind, super::claims::Cause::Start, &slack))
                        .await?;
                return Ok(target_of(Action::ClaimedWorkers { nodes: d.start }));
            }
            // The step's Job may be there, Complete (halted, refused) or Failed: replace it.
            let outcome = spawn_step(ctx, &snap, &step, target, kind, OnComplete::Respawn).await?;
            let name = step.job_name(target);
            let announce = match (&step, &previous) {
                (Step::Preflight, None) => Some(format!("Spawned {name} (target v{target}, {kind})")),
                (_, Some(p)) if p.state == JobState::Failed => {
                    Some(format!("{name} exists but FAILED — deleting and re-spawning"))
                }
                // A refused or halted preflight runs again quietly (seed §1.10).
                (Step::Preflight, Some(_)) => None,
                (_, previous) => Some(format!(
                    "Resuming the chain to v{target} at {step}{}",
                    previous.as_ref().map(|p| format!(" (its Job {})", p.describe())).unwrap_or_default()
                )),
            };
            if let Some(msg) = announce {
                slack.post(&msg).await;
            }
            info!(job = %name, ?outcome, "{step} Job");
            // The Job must start like every other (seed failures 18 and 36: an image gone from
            // the registry, a taint the pinned Job did not tolerate, and nothing said so for days).
            if matches!(outcome, SpawnOutcome::Created | SpawnOutcome::Respawned { .. }) {
                super::check_started(ctx, &name, &slack).await;
            }
            Ok(target_of(Action::Spawned { step, outcome }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn patch_wins_over_minor() {
        assert_eq!(
            choose_target(v("1.34.1"), Some(v("1.34.3")), Some(v("1.35.2"))),
            Some((v("1.34.3"), Kind::Patch))
        );
        assert_eq!(
            choose_target(v("1.34.3"), Some(v("1.34.3")), Some(v("1.35.2"))),
            Some((v("1.35.2"), Kind::Minor))
        );
        assert_eq!(choose_target(v("1.34.3"), None, None), None);
        // Never skip a minor, never go backwards.
        assert_eq!(choose_target(v("1.34.3"), None, Some(v("1.36.0"))), None);
        assert_eq!(choose_target(v("1.34.3"), Some(v("1.34.1")), None), None);
    }

    #[test]
    fn packages_index() {
        let text = "Package: kubeadm\nVersion: 1.35.0-1.1\n\nPackage: kubeadm\nVersion: 1.35.2-1.1\n\nPackage: kubelet\nVersion: 1.35.10-1.1\nPackage: cri-tools\nVersion: 1.34.0-1.1\n";
        assert_eq!(parse_packages(text, Minor(1, 35)), Some(v("1.35.10")));
        assert_eq!(parse_packages("", Minor(1, 35)), None);
    }

    #[test]
    fn leaked_latch_rules() {
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let old =
            ChainLatch { in_flight: Some(true), started_timestamp: Some(1_800_000_000.0 - 13.0 * 3600.0) };
        assert!(latch_leaked(&old, 0, now).is_some());
        assert!(latch_leaked(&old, 1, now).is_none(), "an active chain Job means not leaked");
        let young = ChainLatch { started_timestamp: Some(1_800_000_000.0 - 3600.0), ..old };
        assert!(latch_leaked(&young, 0, now).is_none());
        let idle = ChainLatch { in_flight: Some(false), ..old };
        assert!(latch_leaked(&idle, 0, now).is_none());
        assert!(
            latch_leaked(&ChainLatch { in_flight: Some(true), started_timestamp: None }, 0, now).is_none()
        );
    }
}
