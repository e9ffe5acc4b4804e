//! The cluster's part in a rehearsal (and in the end-to-end tests): a Job runner that runs each
//! chain Job's `step` in-process, exactly as the Job's pod would (same env, same
//! [`chain::run_step`]), then marks the Job Complete or Failed; and an etcd backup that
//! completes the snapshot Jobs the preflight creates from the backup CronJob.
//!
//! There is one runner: `rehearse` and `tests/support/chain.rs` both use this one.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::api::batch::v1::Job;
use sim::apiserver::TestApiServer;
// The runtime's clock: under `rehearse`'s simulated clock a Job's time is simulated time.
use tokio::time::Instant;

use crate::{
    chain::{self, Ctx, Ended, StepInput},
    drain::PodRef,
    k8s::spawn::{self, JobState},
};
use chain_core::{
    job::APP_LABEL,
    plan::{Kind, Phase, Step},
    version::Version,
};

/// The most Jobs one [`JobRunner::run_chain_concurrently`] runs: far more than any chain has, so
/// a bug that re-spawns forever still ends.
pub const MAX_JOBS: usize = 512;

/// What the runner saw of one chain Job.
#[derive(Debug, Clone)]
pub struct RanJob {
    /// Job name.
    pub name: String,
    /// Job uid.
    pub uid: String,
    /// `PHASE`.
    pub phase: Phase,
    /// `TARGET_NODE`, if any.
    pub node: Option<String>,
    /// `TARGET_VERSION`.
    pub target: Version,
    /// `KIND`.
    pub kind: Kind,
    /// `IMAGE` (passed down the chain).
    pub image: String,
    /// The node the Job's pod is pinned to (node affinity on `metadata.name`).
    pub run_on: String,
    /// Its tolerations, as `KEY:EFFECT`.
    pub tolerations: Vec<String>,
    /// How the step ended; an error as its full chain of causes.
    pub result: Result<Ended, String>,
    /// When the step started, on the runtime's clock (simulated time under `rehearse`'s
    /// simulated clock).
    pub started: Instant,
    /// Time the step took on the runtime's clock (simulated time under `rehearse`'s simulated clock).
    pub elapsed: Duration,
}

/// The inputs a chain Job's pod reads from its env, and where it is scheduled.
#[derive(Debug, Clone)]
pub struct JobEnv {
    /// What `step` would run.
    pub input: StepInput,
    /// `IMAGE`.
    pub image: String,
    /// Run-on node.
    pub run_on: String,
    /// `KEY:EFFECT` per toleration.
    pub tolerations: Vec<String>,
}

/// Reads a chain Job's env (`PHASE`, `TARGET_NODE`, `TARGET_VERSION`, `KIND`, `IMAGE`) and its
/// placement. Pure.
pub fn job_env(job: &Job) -> anyhow::Result<JobEnv> {
    let name = job.metadata.name.clone().unwrap_or_default();
    let spec = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .ok_or_else(|| anyhow::anyhow!("Job {name} has no pod template"))?;
    let container = spec.containers.first().ok_or_else(|| anyhow::anyhow!("Job {name} has no container"))?;
    let env: HashMap<String, String> = container
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| Some((e.name, e.value?)))
        .collect();
    let var = |k: &str| env.get(k).cloned().ok_or_else(|| anyhow::anyhow!("Job {name} has no env {k}"));
    let phase: Phase = var("PHASE")?.parse().map_err(|e: String| anyhow::anyhow!("Job {name}: {e}"))?;
    let step = Step::from_parts(phase, env.get("TARGET_NODE").map(String::as_str))
        .map_err(|e| anyhow::anyhow!("Job {name}: {e}"))?;
    let target: Version = var("TARGET_VERSION")?.parse()?;
    let kind: Kind = var("KIND")?.parse().map_err(|e: String| anyhow::anyhow!("Job {name}: {e}"))?;
    let run_on = chain_core::job::pinned_node(spec).unwrap_or_default();
    let tolerations = spec
        .tolerations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|t| format!("{}:{}", t.key.unwrap_or_default(), t.effect.unwrap_or_default()))
        .collect();
    Ok(JobEnv {
        input: StepInput { step, target, kind },
        image: env.get("IMAGE").cloned().unwrap_or_default(),
        run_on,
        tolerations,
    })
}

/// Plays the Job controller and the Job pods for the chain's Jobs on a [`TestApiServer`].
pub struct JobRunner {
    srv: Arc<TestApiServer>,
    namespace: String,
    done: Mutex<HashSet<String>>,
}

impl JobRunner {
    /// A runner for the chain Jobs in `namespace` (the settings' namespace).
    pub fn new(srv: Arc<TestApiServer>, namespace: impl Into<String>) -> Self {
        Self { srv, namespace: namespace.into(), done: Mutex::default() }
    }

    /// The oldest active chain Job this runner has not run yet.
    pub fn next_job(&self) -> Option<Job> {
        let done = self.done.lock().expect("runner lock");
        let mut jobs: Vec<Job> = self
            .srv
            .list::<Job>(Some(&self.namespace))
            .into_iter()
            .filter(|j| {
                j.metadata.labels.as_ref().and_then(|l| l.get("app")).map(String::as_str) == Some(APP_LABEL)
            })
            .filter(|j| spawn::job_state(j) == JobState::Active)
            .filter(|j| !done.contains(j.metadata.uid.as_deref().unwrap_or_default()))
            .collect();
        jobs.sort_by_key(|j| j.metadata.creation_timestamp.clone().map(|t| t.0));
        jobs.into_iter().next()
    }

    /// Every active chain Job this runner has not run yet, oldest first, marked as taken (so
    /// several can run at once, as their pods would with `workers.concurrency` above 1).
    pub fn take_pending(&self) -> Vec<Job> {
        let mut out = Vec::new();
        while let Some(job) = self.next_job() {
            self.done.lock().expect("runner lock").insert(job.metadata.uid.clone().unwrap_or_default());
            out.push(job);
        }
        out
    }

    /// Runs one Job's step in-process with `ctx`, as its pod would (the pod is the drain's own
    /// pod), then completes or fails the Job.
    pub async fn run_job(&self, job: &Job, mut ctx: Ctx) -> RanJob {
        let name = job.metadata.name.clone().unwrap_or_default();
        let uid = job.metadata.uid.clone().unwrap_or_default();
        self.done.lock().expect("runner lock").insert(uid.clone());
        let started = Instant::now();
        let env = match job_env(job) {
            Ok(env) => env,
            Err(e) => {
                self.srv.fail_job(&self.namespace, &name, "BadEnv");
                return RanJob {
                    name,
                    uid,
                    phase: Phase::Preflight,
                    node: None,
                    target: Version { major: 0, minor: 0, patch: 0 },
                    kind: Kind::Patch,
                    image: String::new(),
                    run_on: String::new(),
                    tolerations: vec![],
                    result: Err(format!("{e:#}")),
                    started,
                    elapsed: started.elapsed(),
                };
            }
        };
        if let Some(pod) = self.srv.job_pods(&self.namespace, &name).first() {
            ctx.self_pod = Some(PodRef::new(self.namespace.clone(), pod.clone()));
        }
        let result = chain::run_step(&ctx, &env.input).await.map_err(|e| format!("{e:#}"));
        match &result {
            Ok(_) => self.srv.complete_job(&self.namespace, &name),
            Err(_) => self.srv.fail_job(&self.namespace, &name, "BackoffLimitExceeded"),
        }
        RanJob {
            name,
            uid,
            phase: env.input.step.phase(),
            node: env.input.step.node().map(str::to_string),
            target: env.input.target,
            kind: env.input.kind,
            image: env.image,
            run_on: env.run_on,
            tolerations: env.tolerations,
            result,
            started,
            elapsed: started.elapsed(),
        }
    }

    /// Runs every chain Job as soon as it appears, beside the ones already running (as the
    /// cluster runs the worker Jobs of `workers.concurrency` above 1; with one worker at a time
    /// the chain never has two Jobs to run at once), until none is left: `ctx` builds the
    /// context of each Job, `before` sees each Job before it runs and `after` each result as
    /// it ends. Results in the order the Jobs ended.
    ///
    /// A chain Job is created only by a running Job, as its last act (it then waits until the
    /// new Job's pod has started, which the simulated Job controller does on its own), so the
    /// pending Jobs are taken whenever a Job ends: as soon as the cluster would start them
    /// (their pods take longer to start than that tail), and a Job that ends is never counted
    /// as in flight beside the Job that takes its slot.
    ///
    /// Errors: `ctx` failing, or more than [`MAX_JOBS`] Jobs (a chain that does not end).
    pub async fn run_chain_concurrently(
        &self,
        mut ctx: impl FnMut(&Job) -> anyhow::Result<Ctx>,
        mut before: impl FnMut(&Job),
        mut after: impl FnMut(&RanJob),
    ) -> anyhow::Result<Vec<RanJob>> {
        use futures::stream::{FuturesUnordered, StreamExt as _};
        let mut ran = Vec::new();
        let mut running = FuturesUnordered::new();
        let mut started = 0;
        loop {
            for job in self.take_pending() {
                started += 1;
                if started > MAX_JOBS {
                    anyhow::bail!("more than {MAX_JOBS} chain Jobs: the chain does not end");
                }
                before(&job);
                let c = ctx(&job)?;
                running.push(async move { self.run_job(&job, c).await });
            }
            let Some(r) = running.next().await else { break };
            after(&r);
            ran.push(r);
        }
        Ok(ran)
    }
}

/// The log line of a successful backup of `bytes` bytes, as the snapshot check reads it.
pub fn backup_log(bytes: u64) -> String {
    format!("snapshot saved\nBackup done: etcd-snapshot.db ({bytes} bytes)\n")
}

/// The site's etcd backup, simulated: completes every `pre-upgrade-etcd-*` Job in `namespace`,
/// its pod's log set to what `log` holds then (see [`backup_log`]). Runs until the returned
/// task is aborted.
pub fn spawn_etcd_backup(
    srv: Arc<TestApiServer>,
    namespace: String,
    log: Arc<Mutex<String>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut handled = HashSet::new();
        loop {
            for job in srv.list::<Job>(Some(&namespace)) {
                let name = job.metadata.name.clone().unwrap_or_default();
                if !name.starts_with("pre-upgrade-etcd-") || handled.contains(&name) {
                    continue;
                }
                let text = log.lock().map(|l| l.clone()).unwrap_or_default();
                for pod in srv.job_pods(&namespace, &name) {
                    srv.set_pod_log(&namespace, &pod, &text);
                }
                srv.complete_job(&namespace, &name);
                handled.insert(name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}
