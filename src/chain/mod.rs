//! The chain: `detect` (the CronJob) and `step` (every chain Job, phase from `PHASE`).
//!
//! Each phase follows seed-system.md §2 step by step, with its recorded failures turned into
//! rules: the kill switch and the alert gate fail closed, Failed Jobs are re-spawned, every
//! wait has a deadline, and every exit path leaves a consistent, resumable state.
//!
//! Only two things differ between production and a rehearsal: the Kubernetes endpoint (in
//! [`Ctx::clients`]) and the node executor ([`Ctx::exec`]). There is one implementation of
//! each phase.

pub mod claims;
pub mod compat;
pub mod detect;
pub mod etcd;
pub mod nodes;
mod phases;
pub mod quiesce;
pub mod started;

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use k8s_openapi::api::{batch::v1::Job, core::v1::ObjectReference};
use kube::{Api, Resource as _};
use tracing::{info, warn};

pub use phases::run_phase;

use chain_core::{
    job::{self, JobRequest},
    killswitch::KillSwitch,
    metrics::{Grouping, Metric, PhaseOutcome, epoch_seconds},
    node_exec::{NodeExec, NodeTarget},
    plan::{self, Kind, Next, Snapshot, Step},
    resume::{self, StepWork},
    settings::Settings,
    version::Version,
};

use crate::{
    drain::PodRef,
    exit::{GateAbort, bad_input},
    k8s::{
        self, Clients,
        annotations::NamespaceAnnotations,
        events::{Events, Milestone},
        killswitch,
        spawn::{self, OnComplete, SpawnOutcome},
    },
    prometheus::AlertGate,
    pushgateway::Pushgateway,
    slack::{self, Slack},
};

/// Everything a phase talks to. Production builds it from the settings; a rehearsal swaps the
/// endpoint and the executor.
pub struct Ctx {
    pub settings: Settings,
    pub clients: Clients,
    pub exec: Arc<dyn NodeExec>,
    pub gate: AlertGate,
    pub push: Pushgateway,
    pub events: Events,
    /// Image of the chain Jobs this run spawns.
    pub image: String,
    /// The pod this process runs in, never evicted by its own drain.
    pub self_pod: Option<PodRef>,
    /// HTTP client for the apt repository probes of detection.
    pub http: reqwest::Client,
}

impl Ctx {
    /// Builds the production context: in-cluster clients, SSH, Prometheus, Pushgateway.
    pub fn new(
        settings: Settings,
        clients: Clients,
        exec: Arc<dyn NodeExec>,
        image: String,
    ) -> anyhow::Result<Self> {
        let gate = AlertGate::new(&settings.alerts).context("failed to set up the alert gate")?;
        let push =
            Pushgateway::new(&settings.pushgateway).context("failed to set up the Pushgateway client")?;
        let self_pod = crate::drain::self_pod_from_env();
        let events = Events::new(clients.api.clone(), self_pod.as_ref().map(|p| p.name.clone()));
        let http = reqwest::Client::builder()
            .timeout(settings.timeouts.probe.min(Duration::from_secs(60)))
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::limited(10))
            .build()
            .context("failed to build the HTTP client")?;
        Ok(Self { settings, clients, exec, gate, push, events, image, self_pod, http })
    }

    /// Reads the nodes and builds the planner's snapshot.
    pub async fn snapshot(&self) -> anyhow::Result<Snapshot> {
        let nodes = k8s::list_nodes(&self.clients.api).await?;
        Ok(Snapshot::from_nodes(&nodes, &self.settings.control_plane_selector())?)
    }

    /// The SSH target of a node: its InternalIP, never DNS.
    pub fn target(snap: &Snapshot, node: &str) -> anyhow::Result<NodeTarget> {
        let n = snap.node(node).ok_or_else(|| anyhow::anyhow!("node {node} does not exist"))?;
        Ok(NodeTarget::new(n.name.clone(), n.internal_ip))
    }

    /// Reads the kill switch; `Some(reason)` means halt.
    pub async fn kill_switch(&self) -> anyhow::Result<Option<String>> {
        Ok(match killswitch::check(&self.clients.api, &self.settings.namespace).await? {
            KillSwitch::Absent => None,
            KillSwitch::Present { reason } => Some(reason),
        })
    }
}

/// The inputs of one chain Job, from its env.
#[derive(Debug, Clone)]
pub struct StepInput {
    pub step: Step,
    pub target: Version,
    pub kind: Kind,
}

/// How a phase ended without an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// It did its work: spawn the next Job.
    Done,
    /// Its node was already on target: spawn the next Job.
    Skipped(String),
    /// A gate refused (held or blocked): the chain stops quietly, exit 0.
    Refused(String),
    /// The kill switch halted it: the chain stops, exit 0.
    Halted(String),
}

/// Runs one chain Job: kill switch, phase body, metrics and Events, then the next Job.
///
/// A step whose work is already done ([`resume::step_work`]: its node on target, or for
/// preflight every node) changes nothing: no annotation, metric, Event or outcome record. It
/// passes the chain on only while the chain has work left ([`resume::chain_has_work`]), so
/// re-running a completed phase after the chain finished spawns nothing either.
pub async fn run_step(ctx: &Ctx, input: &StepInput) -> anyhow::Result<Ended> {
    let step = &input.step;
    let node = step.node();
    let slack = Slack::from_config(&ctx.settings.slack, slack::phase_prefix(step.phase().as_str(), node));
    let group = Grouping::phase(step.phase().as_str(), node);

    // The kill switch first, before anything else (seed §2.0); unreadable fails closed.
    if let Some(reason) = ctx.kill_switch().await? {
        let msg = format!(
            "HALTED by kill switch before {step}: {reason}. {}",
            resume_hint(&ctx.settings.namespace, input)
        );
        warn!("{msg}");
        slack.post(&msg).await;
        let now = epoch_seconds(jiff::Timestamp::now());
        ctx.push
            .push(&group, &[Metric::PhaseFinished(now), Metric::PhaseOutcome(PhaseOutcome::Halted)])
            .await;
        let job_ref = own_job(ctx, input).await;
        record(ctx, job_ref.as_ref(), &Milestone::Halted(reason.clone())).await;
        record_outcome(ctx, job_ref.as_ref(), PhaseOutcome::Halted).await;
        release_stopped(ctx, input, &format!("halted by the kill switch: {reason}"), &slack).await;
        return Ok(Ended::Halted(reason));
    }

    let snap = ctx.snapshot().await?;
    if let Some(node) = node.filter(|n| snap.node(n).is_none()) {
        // Nodes are enumerated live: one removed since its Job was spawned is not an error.
        let why = format!("node {node} no longer exists; passing the chain on");
        warn!("{why}");
        spawn_next(ctx, input, &slack).await?;
        return Ok(Ended::Skipped(why));
    }
    step.validate(&snap)?;
    // The planner's rule on the target, before anything changes: no node newer than it (a
    // node upgraded past this chain's target since its Job was spawned is never taken back).
    chain_core::plan::check_target(&snap, input.target)?;
    // Two nodes whose Jobs would share a name: the second would be taken for done.
    chain_core::plan::check_job_names(&snap, input.target)?;
    if let StepWork::Done(why) = resume::step_work(step, &snap, input.target) {
        info!(%step, target_version = %input.target, "{why}: nothing to do");
        if node.is_some() {
            phases::repair_skipped(ctx, step, &slack).await;
            slack.post(&format!("{why}: skipping")).await;
        }
        if chain_still_has_work(ctx, &snap, input.target).await? {
            spawn_next(ctx, input, &slack).await?;
        } else {
            info!("the chain to v{} has no work left: spawning nothing", input.target);
        }
        return Ok(Ended::Skipped(why));
    }
    let job_ref = own_job(ctx, input).await;
    let started = jiff::Timestamp::now();
    ctx.push
        .push(
            &group,
            &[Metric::PhaseStarted(epoch_seconds(started)), Metric::PhaseOutcome(PhaseOutcome::Running)],
        )
        .await;
    record(ctx, job_ref.as_ref(), &Milestone::PhaseStarted { phase: step.phase().to_string() }).await;
    // `target_version`, not `target`: the JSON log line already has tracing's own `target`
    // (the module), and a duplicate key is dropped by jq and refused by strict parsers.
    info!(%step, target_version = %input.target, kind = %input.kind, "phase started");

    let result = phases::run_phase(ctx, &snap, input, &slack).await;
    let finished = Metric::PhaseFinished(epoch_seconds(jiff::Timestamp::now()));
    match result {
        Ok(ended) => {
            let (outcome, milestone) = match &ended {
                Ended::Done | Ended::Skipped(_) => {
                    (PhaseOutcome::Succeeded, Milestone::PhaseSucceeded { phase: step.phase().to_string() })
                }
                Ended::Refused(r) => (PhaseOutcome::Refused, Milestone::Refused(r.clone())),
                Ended::Halted(r) => (PhaseOutcome::Halted, Milestone::Halted(r.clone())),
            };
            ctx.push.push(&group, &[finished, Metric::PhaseOutcome(outcome)]).await;
            record(ctx, job_ref.as_ref(), &milestone).await;
            record_outcome(ctx, job_ref.as_ref(), outcome).await;
            match &ended {
                Ended::Done | Ended::Skipped(_) => spawn_next(ctx, input, &slack).await?,
                Ended::Refused(r) => {
                    info!("chain stops here (gate refused): {r}");
                    release_stopped(ctx, input, &format!("refused: {r}"), &slack).await;
                }
                Ended::Halted(r) => {
                    release_stopped(ctx, input, &format!("halted by the kill switch: {r}"), &slack).await;
                    let msg = format!(
                        "HALTED by kill switch during {step}: {r}. {}",
                        resume_hint(&ctx.settings.namespace, input)
                    );
                    warn!("{msg}");
                    slack.post(&msg).await;
                }
            }
            Ok(ended)
        }
        Err(err) => {
            ctx.push.push(&group, &[finished, Metric::PhaseOutcome(PhaseOutcome::Failed)]).await;
            let why = format!("{err:#}");
            record(ctx, job_ref.as_ref(), &Milestone::Aborted(why.clone())).await;
            record_outcome(ctx, job_ref.as_ref(), PhaseOutcome::Failed).await;
            release_stopped(ctx, input, &format!("failed: {why}"), &slack).await;
            let hint = match awaiting_ack(ctx, node).await {
                Some(started) => ack_hint(&ctx.settings.namespace, node.unwrap_or_default(), &started),
                None => resume_hint(&ctx.settings.namespace, input),
            };
            let msg = format!("ABORT {step}: {why}. {hint}");
            warn!("{msg}");
            slack.post(&msg).await;
            Err(err)
        }
    }
}

/// Whether the chain still has work after a step that had none: the in-flight record is read
/// only when every node is on target (postflight then clears it).
async fn chain_still_has_work(ctx: &Ctx, snap: &Snapshot, target: Version) -> anyhow::Result<bool> {
    if resume::chain_has_work(snap, target, false) {
        return Ok(true);
    }
    let s = &ctx.settings;
    let record =
        NamespaceAnnotations::new(ctx.clients.api.clone(), &s.namespace, &s.annotations()).read().await?;
    Ok(resume::chain_has_work(snap, target, record.is_some()))
}

/// The upgrade-started record of `node`, read back after a failure: whether the node now waits
/// for an acknowledgement.
async fn awaiting_ack(ctx: &Ctx, node: Option<&str>) -> Option<resume::UpgradeStarted> {
    let node = node?;
    let api: Api<k8s_openapi::api::core::v1::Node> = Api::all(ctx.clients.api.clone());
    match api.get_opt(node).await {
        Ok(Some(n)) => resume::UpgradeStarted::of(&n),
        Ok(None) => None,
        Err(e) => {
            warn!("failed to read node {node} after the failure: {e}");
            None
        }
    }
}

/// The command that triggers detection by hand (a Job from the detection CronJob).
pub fn trigger_detection(namespace: &str) -> String {
    format!(
        "kubectl -n {namespace} create job --from=cronjob/{} k8s-version-check-manual-$(date +%s)",
        chain_core::manifests::DETECTION_CRONJOB
    )
}

/// How an operator resumes after this Job stopped before its node's own upgrade started:
/// detection resumes the chain at this step (docs/runbook.md, "Resuming a stopped chain").
pub fn resume_hint(ns: &str, input: &StepInput) -> String {
    let name = input.step.job_name(input.target);
    format!(
        "To resume: fix the cause, then let the next detection run resume the chain at this step, or trigger it now \
         (`{}`). To re-run only this phase: `kubectl -n {ns} delete job {name} --cascade=foreground && \
         k8s-upgrade-chain render --phase {} {}--version {} | kubectl apply -f -`",
        trigger_detection(ns),
        input.step.phase(),
        input.step.node().map(|n| format!("--node {n} ")).unwrap_or_default(),
        input.target
    )
}

/// How an operator resumes after the node's own upgrade failed: nothing retries it before an
/// acknowledgement (docs/runbook.md, "Acknowledging a failed node upgrade").
pub fn ack_hint(ns: &str, node: &str, started: &resume::UpgradeStarted) -> String {
    format!(
        "Node {node} stays cordoned for a human ({}): nothing retries it until an operator acknowledges it. \
         Fix the node, then run `{}` (or `{}`), then let detection resume the chain (`{}`)",
        started.describe(),
        resume::ack_command(node),
        resume::ack_kubectl(node),
        trigger_detection(ns)
    )
}

async fn own_job(ctx: &Ctx, input: &StepInput) -> Option<ObjectReference> {
    let name = input.step.job_name(input.target);
    let api: Api<Job> = Api::namespaced(ctx.clients.api.clone(), &ctx.settings.namespace);
    match api.get_opt(&name).await {
        Ok(Some(j)) => Some(j.object_ref(&())),
        Ok(None) => None,
        Err(e) => {
            warn!("failed to read own Job {name} for Events: {e}");
            None
        }
    }
}

async fn record(ctx: &Ctx, job: Option<&ObjectReference>, m: &Milestone) {
    if let Some(r) = job {
        ctx.events.record(r, m).await;
    }
}

async fn record_outcome(ctx: &Ctx, job: Option<&ObjectReference>, outcome: PhaseOutcome) {
    if let Some(name) = job.and_then(|r| r.name.as_deref()) {
        k8s::records::record_outcome(&ctx.clients.api, &ctx.settings.namespace, name, outcome).await;
    }
}

/// Records a milestone on a node. The reference carries the node's UID, which
/// `kubectl describe node` matches events on.
pub async fn record_node(ctx: &Ctx, node: &str, m: &Milestone) {
    let api: Api<k8s_openapi::api::core::v1::Node> = Api::all(ctx.clients.api.clone());
    match api.get_opt(node).await {
        Ok(Some(n)) => {
            ctx.events.record(&n.object_ref(&()), m).await;
        }
        Ok(None) => warn!("node {node} is gone; no Event recorded"),
        Err(e) => warn!("failed to read node {node} for its Event: {e}"),
    }
}

/// With `workers.concurrency` above 1, a worker Job that stopped (failed, halted, refused)
/// releases its node and stops the claims ([`claims`]). Nothing with one worker at a time.
async fn release_stopped(ctx: &Ctx, input: &StepInput, why: &str, slack: &Slack) {
    if let (Step::Worker { node }, false) = (&input.step, ctx.settings.workers.sequential()) {
        let reason = format!("worker {node} {why}");
        Box::pin(claims::release_stopped(ctx, input.target, input.kind, node, reason, slack)).await;
    }
}

/// Renders and applies the Job after `input.step`, from a fresh snapshot.
///
/// With `workers.concurrency` above 1 the worker stage goes through [`claims::refill`]: the
/// last control-plane phase claims the first wave, and each worker Job that ends releases its
/// node and fills the slots back (the last one spawns postflight).
pub async fn spawn_next(ctx: &Ctx, input: &StepInput, slack: &Slack) -> anyhow::Result<()> {
    let snap = ctx.snapshot().await?;
    let next = plan::next_after(&snap, input.target, &input.step);
    if !ctx.settings.workers.sequential() {
        let cause = match (&input.step, &next) {
            (Step::Worker { node }, _) => Some(claims::Cause::Ended(node)),
            (_, Next::Step(Step::Worker { .. })) => Some(claims::Cause::Start),
            _ => None,
        };
        if let Some(cause) = cause {
            // Boxed: the claim's future is large, and it sits inside every phase's future.
            Box::pin(claims::refill(ctx, input.target, input.kind, cause, slack)).await?;
            return Ok(());
        }
    }
    match next {
        Next::End => {
            info!("end of the chain");
            Ok(())
        }
        Next::Step(next) => {
            let outcome = spawn_step(ctx, &snap, &next, input.target, input.kind, OnComplete::Skip).await?;
            let name = next.job_name(input.target);
            info!(job = %name, ?outcome, "next Job");
            if matches!(outcome, SpawnOutcome::Created | SpawnOutcome::Respawned { .. }) {
                slack.post(&format!("Dispatched {name} ({next})")).await;
                check_started(ctx, &name, slack).await;
            }
            Ok(())
        }
    }
}

/// Reports loudly when the Job just spawned cannot start: a warning, a Slack message and a
/// `CannotStart` Event on the Job (seed failures 18 and 36). Best effort: the phase (or
/// detection) that spawned it is done either way.
pub async fn check_started(ctx: &Ctx, job_name: &str, slack: &Slack) {
    let ns = &ctx.settings.namespace;
    match started::wait_started(&ctx.clients.api, ns, job_name, ctx.settings.timeouts.job_start).await {
        Ok(started::Start::Started) => info!(job = job_name, "next Job started"),
        Ok(started::Start::Stuck(why)) => {
            let msg = format!("WARN: Job {job_name} cannot start: {why}. The chain is stalled until it can");
            warn!("{msg}");
            slack.post(&msg).await;
            let api: Api<Job> = Api::namespaced(ctx.clients.api.clone(), ns);
            if let Ok(Some(j)) = api.get_opt(job_name).await {
                ctx.events.record(&j.object_ref(&()), &Milestone::CannotStart(why)).await;
            }
        }
        Ok(started::Start::NotYet) => warn!(
            job = job_name,
            "the next Job's pod has not started within {}",
            chain_core::duration::format(ctx.settings.timeouts.job_start)
        ),
        Err(e) => warn!("could not check that {job_name} started: {e:#}"),
    }
}

/// Renders the Job of `step` (placement from the snapshot) and applies it.
pub async fn spawn_step(
    ctx: &Ctx,
    snap: &Snapshot,
    step: &Step,
    target: Version,
    kind: Kind,
    on_complete: OnComplete,
) -> anyhow::Result<SpawnOutcome> {
    let placement = plan::placement(snap, step)?;
    let (template, origin) = crate::config::load_template(&ctx.settings).map_err(bad_input)?;
    let req = JobRequest { step, target, kind, image: &ctx.image, placement: &placement };
    let job = job::render(&ctx.settings, &template, &origin, &req).map_err(bad_input)?;
    spawn::spawn(&ctx.clients.api, &job, on_complete, ctx.settings.timeouts.job_delete).await
}

/// Fails the phase through a gate (exit 1).
pub fn abort(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(GateAbort(msg.into()))
}
