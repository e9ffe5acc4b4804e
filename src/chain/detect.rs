//! Detection (the CronJob): find the target version, push availability metrics, reconcile
//! leaked state, and start the chain by applying the preflight Job (seed §1).

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::{
    Api,
    api::{DeleteParams, ListParams, PropagationPolicy},
};
use tracing::{info, warn};

use super::{Ctx, spawn_step};
use chain_core::{
    compat::Minor,
    metrics::{ChainLatch, Grouping, Metric, epoch_seconds},
    plan::{self, Kind, Phase, Step},
    version::Version,
};

use crate::{
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
    /// The cluster runs the latest version there is.
    UpToDate { running: Version },
    /// A target exists; `spawned` says what happened to the preflight Job.
    Target { running: Version, target: Version, kind: Kind, spawned: Option<SpawnOutcome> },
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

/// Clears a leaked in-flight latch (seed failure 37). Best effort: failures are warnings.
pub async fn reconcile(ctx: &Ctx, slack: &Slack) -> anyhow::Result<bool> {
    let latch = match ctx.push.read().await {
        Ok(scrape) => scrape.chain_latch(),
        Err(e) => {
            warn!("cannot read the Pushgateway, skipping the leaked-state reconcile: {e}");
            return Ok(false);
        }
    };
    let jobs = chain_jobs(ctx).await?;
    let active = jobs.iter().filter(|j| j.status.as_ref().and_then(|s| s.active).unwrap_or(0) >= 1).count();
    let Some(age) = latch_leaked(&latch, active, jiff::Timestamp::now()) else { return Ok(false) };
    let msg = format!(
        "reconcile: leaked in_flight latch ({:.1} h old, no chain Job active): clearing metrics, annotations and chain Jobs",
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
    let api: Api<Job> = Api::namespaced(ctx.clients.api.clone(), &ctx.settings.namespace);
    let dp = DeleteParams { propagation_policy: Some(PropagationPolicy::Foreground), ..Default::default() };
    for j in jobs {
        let name = j.metadata.name.unwrap_or_default();
        if let Err(e) = api.delete(&name, &dp).await {
            warn!("failed to delete chain Job {name}: {e}");
        }
    }
    Ok(true)
}

/// Runs detection. `dry_run` does everything but spawn.
pub async fn detect(ctx: &Ctx, dry_run: bool) -> anyhow::Result<Detection> {
    let slack = Slack::from_config(&ctx.settings.slack, slack::DETECTION_PREFIX);
    if let Some(reason) = ctx.kill_switch().await? {
        slack.post(&format!("HALTED by kill switch: {reason}")).await;
        warn!("kill switch present: {reason}");
        return Ok(Detection::Halted(reason));
    }
    reconcile(ctx, &slack).await?;

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
    let Some((target, kind)) = chosen else {
        info!(%running, "no upgrade needed");
        return Ok(Detection::UpToDate { running });
    };
    info!(%running, target_version = %target, %kind, "target detected");
    if dry_run {
        slack.post(&format!("DRY_RUN — target v{target} ({kind}) detected, not spawning")).await;
        return Ok(Detection::Target { running, target, kind, spawned: None });
    }

    // Idempotency for Job 0: a Failed preflight is re-spawned (announced); a Complete one
    // whose chain never advanced (the gate refused, or a kill switch stopped it) is re-spawned
    // silently; anything else is left alone.
    let jobs: Api<Job> = Api::namespaced(ctx.clients.api.clone(), &ctx.settings.namespace);
    let preflight_name = Step::Preflight.job_name(target);
    let existing = jobs
        .get_opt(&preflight_name)
        .await
        .map_err(|e| anyhow::anyhow!("failed to read Job {preflight_name}: {e}"))?;
    let (on_complete, announce) = match existing.as_ref().map(spawn::job_state) {
        None => (OnComplete::Skip, true),
        Some(JobState::Failed) => {
            slack.post(&format!("{preflight_name} exists but FAILED — deleting and re-spawning")).await;
            (OnComplete::Skip, true)
        }
        Some(JobState::Complete) => {
            let master_name = plan::job_name(Phase::Master, target, None);
            let advanced = jobs
                .get_opt(&master_name)
                .await
                .map_err(|e| anyhow::anyhow!("failed to read Job {master_name}: {e}"))?
                .is_some();
            if advanced { (OnComplete::Skip, false) } else { (OnComplete::Respawn, false) }
        }
        Some(JobState::Active) => (OnComplete::Skip, false),
    };
    let outcome = spawn_step(ctx, &snap, &Step::Preflight, target, kind, on_complete).await?;
    let spawned = matches!(outcome, SpawnOutcome::Created | SpawnOutcome::Respawned { .. });
    if announce && spawned {
        slack.post(&format!("Spawned {preflight_name} (target v{target}, {kind})")).await;
    }
    info!(job = %preflight_name, ?outcome, "preflight Job");
    // Job 0 must start like every other (seed failures 18 and 36: an image gone from the
    // registry, a taint the pinned Job did not tolerate, and nothing said so for days).
    if spawned {
        super::check_started(ctx, &preflight_name, &slack).await;
    }
    Ok(Detection::Target { running, target, kind, spawned: Some(outcome) })
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
