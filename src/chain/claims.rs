//! Worker claims with `workers.concurrency` above 1: the shell of [`chain_core::waves`].
//!
//! The record of the workers in flight lives in annotations on the tool's namespace. Every
//! change is a JSON merge patch carrying the `metadata.resourceVersion` the decision was made
//! from, so the apiserver applies it only if nobody wrote in between (409 Conflict otherwise,
//! and this side reads again, decides again and retries). That is what makes two worker Jobs
//! ending together safe: they never claim the same node and never exceed the limit.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context as _;
use chain_core::{
    job::job_state,
    plan::{Kind, Snapshot, Step},
    version::Version,
    waves::{ClaimKeys, Claims, Decision, JobSeen, Refill, Then},
};
use k8s_openapi::api::{batch::v1::Job, core::v1::Namespace};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams},
};
use tracing::{info, warn};

use super::{Ctx, check_started, phases::gate_text, spawn_step};
use crate::{
    k8s::{self, spawn::OnComplete},
    slack::Slack,
};

/// How long one claim may take, conflicts and retries included: far more than any number of
/// Jobs ending together needs (each conflict means another Job's claim went through).
pub const CLAIM_DEADLINE: Duration = Duration::from_secs(120);

/// Why the worker slots are (re)filled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause<'a> {
    /// The worker stage starts (after the last control plane) or resumes: a stop reason from
    /// an earlier attempt is cleared, and claims whose Job is not running are dropped.
    Start,
    /// The worker Job of this node ended with its work done (or skipped): release and refill.
    Ended(&'a str),
    /// The worker Job of this node failed, was halted or refused: release it and stop claiming.
    Stopped {
        /// The node.
        node: &'a str,
        /// Why, as the record and `status` show it.
        reason: String,
    },
}

/// Releases and claims per `cause`, then spawns the Job of every worker claimed (and
/// postflight after the last worker). Returns the decision that was written.
pub async fn refill(
    ctx: &Ctx,
    target: Version,
    kind: Kind,
    cause: Cause<'_>,
    slack: &Slack,
) -> anyhow::Result<Decision> {
    let (finished, mut stop) = match &cause {
        Cause::Start => (None, None),
        Cause::Ended(n) => (Some(*n), None),
        Cause::Stopped { node, reason } => (Some(*node), Some(reason.clone())),
    };
    // No refill while the kill switch is present or a blocking alert fires (both fail
    // closed). Read once, before the claim: a stop found here is written into the record.
    if stop.is_none() {
        if let Some(reason) = ctx.kill_switch().await? {
            stop = Some(format!("kill switch present: {reason}"));
        } else {
            let v = ctx.gate.check_once().await;
            if v.blocks() {
                stop = Some(format!("no refill: {}", gate_text(&v)));
            }
        }
    }
    let (decision, snap) = claim(ctx, target, finished, stop, cause == Cause::Start).await?;
    info!(
        start = ?decision.start,
        in_flight = ?decision.claims.nodes(),
        then = ?decision.then,
        "worker claims"
    );
    for node in &decision.start {
        let step = Step::worker(node);
        // A claimed node was checked pending under the claim: a Complete or Failed Job of an
        // earlier attempt is replaced.
        let outcome = match spawn_step(ctx, &snap, &step, target, kind, OnComplete::Respawn).await {
            Ok(o) => o,
            Err(e) => {
                let err = e.context(format!("failed to spawn the worker Job of {node} (claimed)"));
                // Its claim stays (no Job holds it), and nobody claims any more: the chain
                // stops when the workers in flight end, and `status` shows why.
                let reason = format!("{err:#}");
                if let Err(w) = claim(ctx, target, None, Some(reason), false).await {
                    warn!("failed to record the stop in the worker claims: {w:#}");
                }
                return Err(err);
            }
        };
        let name = step.job_name(target);
        info!(job = %name, ?outcome, "worker Job");
        slack.post(&format!("Dispatched {name} ({step})")).await;
    }
    for node in &decision.start {
        check_started(ctx, &Step::worker(node).job_name(target), slack).await;
    }
    match &decision.then {
        Then::Postflight => {
            let step = Step::Postflight;
            let outcome = spawn_step(ctx, &snap, &step, target, kind, OnComplete::Skip).await?;
            let name = step.job_name(target);
            info!(job = %name, ?outcome, "next Job");
            slack.post(&format!("Dispatched {name} ({step})")).await;
            check_started(ctx, &name, slack).await;
        }
        Then::Continue => {}
        Then::Stopped { reason } => {
            let left = decision.claims.nodes();
            let msg = if left.is_empty() {
                format!("Worker claims stopped ({reason}); no worker in flight. The chain stops here")
            } else {
                format!(
                    "Worker claims stopped ({reason}); {} still in flight finish their node and stop",
                    left.join(", ")
                )
            };
            warn!("{msg}");
            slack.post(&msg).await;
        }
    }
    Ok(decision)
}

/// Reads the record, decides and writes it back guarded by its resourceVersion, again until
/// the write goes through (or [`CLAIM_DEADLINE`] passes).
async fn claim(
    ctx: &Ctx,
    target: Version,
    finished: Option<&str>,
    stop: Option<String>,
    restart: bool,
) -> anyhow::Result<(Decision, Snapshot)> {
    let s = &ctx.settings;
    let keys = ClaimKeys::new(&s.annotation_prefix);
    let ns_api: Api<Namespace> = Api::all(ctx.clients.api.clone());
    let jobs_api: Api<Job> = Api::namespaced(ctx.clients.api.clone(), &s.namespace);
    let deadline = tokio::time::Instant::now() + CLAIM_DEADLINE;
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let ns = ns_api
            .get(&s.namespace)
            .await
            .with_context(|| format!("failed to read the worker claims on namespace {}", s.namespace))?;
        let rv = ns.metadata.resource_version.clone().unwrap_or_default();
        let claims = Claims::parse(&keys, &ns.metadata.annotations.clone().unwrap_or_default())
            .map_err(|e| anyhow::anyhow!("namespace {}: {e}", s.namespace))?;
        let nodes = k8s::list_nodes(&ctx.clients.api).await?;
        let snap = Snapshot::from_nodes(&nodes, &s.control_plane_selector())?;
        let zones = chain_core::waves::zones(&nodes, &s.workers.topology_label);
        let jobs = worker_jobs(&jobs_api, &snap, target).await?;
        let decision = Refill {
            snap: &snap,
            zones: &zones,
            target,
            settings: &s.workers,
            claims,
            finished,
            stop: stop.clone(),
            jobs: &jobs,
            restart,
            now: jiff::Timestamp::now(),
        }
        .decide();
        let patch = decision.claims.patch(&keys, &rv);
        match ns_api.patch(&s.namespace, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => return Ok((decision, snap)),
            Err(kube::Error::Api(e)) if e.code == 409 && tokio::time::Instant::now() < deadline => {
                // Another Job's claim went through first: decide again from its result.
                info!(attempt, "worker claims changed since read (409 Conflict); deciding again");
                tokio::time::sleep(jitter(attempt)).await;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "failed to write the worker claims on namespace {} (attempt {attempt})",
                    s.namespace
                )));
            }
        }
    }
}

/// A short, growing, jittered pause between attempts (10 ms to about 1 s), so Jobs that
/// conflicted do not collide again in lockstep.
fn jitter(attempt: u32) -> Duration {
    let nanos = u64::from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos(),
    );
    let base = 10u64 << attempt.min(6);
    Duration::from_millis(base + nanos % base)
}

/// The worker Jobs of `target`, by node.
async fn worker_jobs(
    api: &Api<Job>,
    snap: &Snapshot,
    target: Version,
) -> anyhow::Result<BTreeMap<String, JobSeen>> {
    let list = api
        .list(&ListParams::default().labels(&format!("app={}", chain_core::job::APP_LABEL)))
        .await
        .context("failed to list the chain Jobs")?;
    let by_name: BTreeMap<String, &Job> =
        list.items.iter().filter_map(|j| Some((j.metadata.name.clone()?, j))).collect();
    Ok(snap
        .workers
        .iter()
        .filter_map(|w| {
            let job = by_name.get(&Step::worker(&w.name).job_name(target))?;
            let created = job.metadata.creation_timestamp.as_ref()?.0;
            Some((w.name.clone(), JobSeen { state: job_state(job), created }))
        })
        .collect())
}

/// Releases `node` with a stop reason after its Job failed, was halted or refused. Best
/// effort: the phase has already failed; a warning says when the record could not be written
/// (the Job's Failed state then stops the other workers' refills).
pub async fn release_stopped(
    ctx: &Ctx,
    target: Version,
    kind: Kind,
    node: &str,
    reason: String,
    slack: &Slack,
) {
    if let Err(e) = refill(ctx, target, kind, Cause::Stopped { node, reason }, slack).await {
        warn!("failed to record the stop in the worker claims: {e:#}");
    }
}
