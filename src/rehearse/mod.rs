//! `rehearse`: the whole chain, end to end, against a simulated cluster.
//!
//! One code path: the rehearsal runs the same `detect` and `step` code as production, each Job
//! as soon as it appears, beside the running ones, as the cluster would run them ([`runner`]:
//! with `workers.concurrency` above 1 the worker Jobs run side by side); each Job's report is
//! made from what that Job sent ([`record`]). Only the Kubernetes endpoint (the in-process
//! apiserver, [`sim::apiserver`]) and the node executor ([`sim::node::SimExec`] instead of SSH)
//! differ, plus loopback stand-ins for Prometheus, the Pushgateway and the apt repository
//! ([`sim::http`]). The waits and soaks are scaled down; the summary projects the duration with
//! the real ones.
//!
//! With [`Source::Live`] the simulator starts from a read-only copy of a live cluster
//! ([`cluster::copy_live`]): nothing is ever written to it.

pub mod cluster;
pub mod generated;
pub mod record;
pub mod report;
pub mod runner;

use std::{
    cell::RefCell,
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::{core::v1::Pod, policy::v1::PodDisruptionBudget};
use serde::Serialize;
use sim::apiserver::TestApiServer;

use crate::{
    chain::{self, Ctx, Ended, detect::Detection},
    drain::{self, DrainTarget, pdb},
    exit::bad_input,
    k8s::Clients,
};
use chain_core::{
    plan::{Kind, Phase, Snapshot},
    settings::{EtcdBackup, Settings, Timeouts},
    version::Version,
};

use report::{Clock, FallbackDeleted, JobReport, WorkerStage};

/// What the built-in cluster runs.
pub const BUILTIN_RUNNING: Version = Version::new(1, 34, 1);

/// Default speed-up of the waits and soaks: 600 (a 10 min soak takes 1 s).
pub const DEFAULT_SPEED: f64 = 600.0;

/// How long a simulated kubelet restart takes before the node reports its new version.
pub const KUBELET_RESTART: Duration = Duration::from_millis(200);

/// The simulator's grace-period scale: a 30 s grace ends after 300 ms.
pub const GRACE_SCALE: f64 = 0.01;

/// Where the rehearsal's cluster comes from.
pub enum Source {
    /// The built-in demonstration cluster (1 control plane, 4 workers on [`BUILTIN_RUNNING`]).
    Builtin,
    /// A generated cluster of this size on [`BUILTIN_RUNNING`] ([`generated`]).
    Generated(generated::ClusterSize),
    /// A read-only copy of a live cluster.
    Live(Clients),
}

/// How to rehearse.
pub struct Options {
    /// The cluster.
    pub source: Source,
    /// Target version; default: the next patch of the running version.
    pub version: Option<Version>,
    /// Waits and soaks are divided by this. Default [`DEFAULT_SPEED`].
    pub speed: f64,
    /// Image named in the chain Jobs.
    pub image: String,
}

/// One node's drain as predicted from the starting state (a dry run of the real drain engine).
#[derive(Debug, Clone, Serialize)]
pub struct DrainPrediction {
    /// Node.
    pub node: String,
    /// Pods the drain would evict.
    pub evict: usize,
    /// Pods the fallback would delete, with PDBs and why.
    pub fallback: Vec<FallbackDeleted>,
    /// PDBs the drain would wait on (`pdb: pod`).
    pub waits: Vec<String>,
    /// Pods that would make the drain refuse to start, and why.
    pub refuse: Vec<String>,
}

/// What a rehearsal did and projects.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `built-in`, `generated (N nodes, P pods)` or `live cluster copy`.
    pub source: String,
    /// The oldest kubelet.
    pub running: Version,
    /// The target.
    pub target: Version,
    /// Patch or minor.
    pub kind: Kind,
    /// The target was not given and is hypothetical (the next patch).
    pub hypothetical_target: bool,
    /// Objects copied from the live cluster.
    pub copied: Option<cluster::CopySummary>,
    /// Per-node drain predictions from the starting state.
    pub drains: Vec<DrainPrediction>,
    /// What detection said.
    pub detection: String,
    /// The clock of the Jobs' times.
    pub clock: Clock,
    /// Every Job, in the order they started.
    pub jobs: Vec<JobReport>,
    /// The worker stage as it ran and as projected; `None` when no worker Job ran.
    pub workers: Option<WorkerStage>,
    /// The chain ran to the end of postflight.
    pub completed: bool,
    /// Wall time of the rehearsal.
    #[serde(serialize_with = "secs")]
    pub wall: Duration,
    /// Projected duration with the real waits.
    #[serde(serialize_with = "secs")]
    pub projected: Duration,
    /// How the projection is computed.
    pub model: Vec<String>,
    /// The nodes' failure domains (`workers.topology_label`), for [`project`].
    #[serde(skip)]
    pub zones: std::collections::BTreeMap<String, String>,
    /// Ready workers at the end, for [`project`].
    #[serde(skip)]
    pub ready_workers: usize,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

/// The built-in cluster's etcd backup CronJob, which stands in for `hooks.etcd_backup` when the
/// given config names none (the demonstration cluster comes with one; see [`simulated_settings`]).
pub fn builtin_etcd_backup() -> EtcdBackup {
    EtcdBackup {
        namespace: "kube-system".into(),
        cronjob: "etcd-backup".into(),
        container: Some("backup".into()),
        location_prefix: "simulated://etcd-backup/".into(),
        min_bytes: 1024,
    }
}

/// The settings the chain runs with in the simulator: the site's (namespace, labels, hooks,
/// drain policy, Job template, the etcd snapshot policy) with the simulator's endpoints, Slack
/// off, the waits and soaks divided by `speed`, and every deadline bounded so a stuck rehearsal
/// ends.
///
/// Every preflight decision the settings drive stays the site's: a copy of a live cluster
/// without `hooks.etcd_backup` (and without `hooks.allow_no_etcd_snapshot`) stops at preflight
/// as the real chain would (issue 17: a simulated backup used to be injected). Only the
/// built-in demonstration cluster (`builtin`), which has a backup CronJob of its own, uses it
/// when the config names none.
pub fn simulated_settings(
    site: &Settings,
    speed: f64,
    prometheus: &url::Url,
    pushgateway: &url::Url,
    apt: &url::Url,
    builtin: bool,
) -> Settings {
    let mut s = site.clone();
    let scale =
        |d: Duration| Duration::from_secs_f64(d.as_secs_f64() / speed.max(1.0)).max(Duration::from_millis(1));
    let cap = |d: Duration, max: u64| d.min(Duration::from_secs(max));
    s.alerts.prometheus_url = prometheus.clone();
    s.pushgateway.url = pushgateway.clone();
    s.apt_repository = apt.clone();
    // A rehearsal never notifies anyone.
    s.slack.webhook_file = "/nonexistent/k8s-upgrade-chain-rehearsal/slack_webhook".into();
    let t = &mut s.timeouts;
    t.soak = scale(t.soak);
    t.soak_interval = scale(t.soak_interval);
    t.alert_wait = scale(t.alert_wait);
    t.alert_interval = scale(t.alert_interval);
    t.node_ready = cap(t.node_ready, 30);
    t.etcd_snapshot = cap(t.etcd_snapshot, 30);
    t.job_delete = cap(t.job_delete, 30);
    t.probe = cap(t.probe, 30);
    // settle_window is not a wait but a check against the nodes' real timestamps: kept.
    // Not scaled: the simulated apiserver's own work grows with the cluster (on a copy of 1000
    // pods a drain took 15-30 s here), and a drain timing out in the simulator would be a false
    // alarm. Bounded all the same.
    s.drain.timeout = cap(s.drain.timeout, 300);
    s.drain.fallback_after = scale(s.drain.fallback_after);
    // The cluster's DNS is not reachable from here; the smoke test resolves a local name.
    s.hooks.smoke_dns_name = Some("localhost".into());
    if builtin && s.hooks.etcd_backup.is_none() {
        s.hooks.etcd_backup = Some(builtin_etcd_backup());
    }
    s
}

/// What a rehearsal on a cluster of its own says when it lends the config its etcd backup
/// CronJob (QA B4): the successful snapshot it shows would be a stop at preflight in a real
/// chain with this config. `None` when the config names a backup, allows none, or the
/// rehearsal runs on a copy of the live cluster (which lends nothing).
pub fn builtin_backup_note(site: &Settings, builtin: bool) -> Option<&'static str> {
    (builtin && site.hooks.etcd_backup.is_none() && !site.hooks.allow_no_etcd_snapshot).then_some(
        "Note: the built-in cluster brings its own etcd backup CronJob; your config names none \
         (hooks.etcd_backup), so a real chain would stop at preflight unless \
         hooks.allow_no_etcd_snapshot is set",
    )
}

/// The target when none is given: the next patch of `running`.
pub fn default_target(running: Version) -> Version {
    Version::new(running.major, running.minor, running.patch + 1)
}

/// Refuses targets the chain cannot reach (downgrades of any node, skipped minors: the
/// planner's one rule, [`chain_core::plan::check_target`]) and a target every node already
/// runs ([`chain_core::plan::up_to_date`]: `plan` says "nothing to do" for it; a rehearsal of
/// no upgrade is bad input, exit 2).
pub fn check_target(snap: &Snapshot, target: Version) -> anyhow::Result<Kind> {
    let kind = chain_core::plan::check_target(snap, target).map_err(bad_input)?;
    if chain_core::plan::up_to_date(snap, target) {
        return Err(bad_input(anyhow::anyhow!(
            "nothing to do: every node is on v{target}, so there is no upgrade to rehearse (target version {target} is not newer than the running version {})",
            snap.running_version()
        )));
    }
    Ok(kind)
}

/// The simulation's clock while alive: on a current-thread runtime, tokio's clock is paused
/// and jumps ahead whenever every task waits on a timer, so a scaled wait (soak, grace period,
/// kubelet restart, poll interval) costs no wall time and the rehearsal's wall time is the
/// work done. Everything the simulation waits on lives in this process (the in-process
/// apiserver, the simulated nodes and backup, loopback Prometheus, Pushgateway and apt over
/// loopback TCP, whose bytes are readable as soon as they are written), so a jump never
/// overtakes a reply. Measured durations use `tokio::time::Instant`, so the Jobs' times are
/// the same simulated times as on the real clock. On a multi-thread runtime (which cannot
/// pause its clock) and for a live copy (whose apiserver answers in real time) the real clock
/// runs.
struct SimulatedClock {
    paused: bool,
}

impl SimulatedClock {
    fn start(wanted: bool) -> Self {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let paused =
            wanted && Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::CurrentThread);
        if paused {
            tokio::time::pause();
        }
        Self { paused }
    }
}

impl Drop for SimulatedClock {
    fn drop(&mut self) {
        if self.paused {
            tokio::time::resume();
        }
    }
}

/// Runs a rehearsal, calling `progress` with each line of progress as it happens.
///
/// On a current-thread runtime the simulation runs on a simulated clock (see
/// `SimulatedClock`): the `k8s-upgrade-chain rehearse` command and the rehearse benchmark run
/// it so.
pub async fn rehearse(
    site: &Settings,
    opts: Options,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> anyhow::Result<Report> {
    let wall = Instant::now();
    let real = site.timeouts.clone();
    // The built-in and generated clusters are ours: no drain predictions from a copy.
    let builtin = matches!(opts.source, Source::Builtin | Source::Generated(_));
    let srv = Arc::new(
        TestApiServer::builder()
            .time_scale(GRACE_SCALE)
            .pod_start_delay(Duration::from_millis(50))
            .server_version(&format!("v{BUILTIN_RUNNING}"))
            .start()
            .await,
    );
    let copied = match &opts.source {
        Source::Builtin => {
            cluster::load_builtin(&srv, &BUILTIN_RUNNING.to_string());
            progress(&format!(
                "Built-in cluster: {} (control plane) and {} on v{BUILTIN_RUNNING}; Deployments with PDBs (web: 3 replicas, minAvailable 2; billing: 1 replica, minAvailable 1), a StatefulSet, DaemonSets on every node, a bare pod, static control-plane pods",
                cluster::BUILTIN_CONTROL_PLANE,
                cluster::BUILTIN_WORKERS.join(", ")
            ));
            None
        }
        Source::Generated(size) => {
            let layout = generated::Layout::generate(*size);
            generated::load(&srv, &layout, &BUILTIN_RUNNING.to_string());
            progress(&layout.describe());
            None
        }
        Source::Live(live) => {
            let summary = cluster::copy_live(&live.api, &srv, site).await?;
            let counts: Vec<String> = summary.counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
            progress(&format!("Copied the live cluster (read-only): {}", counts.join(", ")));
            Some(summary)
        }
    };
    // From here on nothing outside this process is read, except a live copy's cluster, which
    // keeps the real clock.
    let sim_clock = SimulatedClock::start(!matches!(opts.source, Source::Live(_)));
    if srv.get::<k8s_openapi::api::core::v1::Namespace>(None, &site.namespace).is_none() {
        srv.insert(sim::apiserver::fixtures::namespace(&site.namespace));
    }

    let sim_clients = Clients::from_config(srv.config())?;
    let nodes = crate::k8s::list_nodes(&sim_clients.api).await?;
    let snap = Snapshot::from_nodes(&nodes, &site.control_plane_selector())?;
    let running = snap.running_version();
    let hypothetical = opts.version.is_none();
    let target = opts.version.unwrap_or_else(|| default_target(running));
    let kind = check_target(&snap, target)?;
    progress(&format!(
        "Target v{target} ({kind} upgrade from v{running}){}",
        if hypothetical && !builtin { " — hypothetical: the next patch, no --version given" } else { "" }
    ));

    let prom = sim::http::Prometheus::start().await?;
    let pgw = sim::http::Pushgateway::start().await?;
    let mut repo = vec![running, target];
    repo.dedup();
    let apt = sim::http::apt_repository(vec![target]).await?;
    let settings = simulated_settings(site, opts.speed, &prom.server.url, &pgw.server.url, &apt.url, builtin);
    if let Some(note) = builtin_backup_note(site, builtin) {
        progress(note);
    }
    settings.validate("rehearsal settings")?;
    if builtin {
        cluster::load_backup_cronjob(&srv, &settings);
    }
    let backup_ns = settings.hooks.etcd_backup.as_ref().map(|b| b.namespace.clone()).unwrap_or_default();
    let log = Arc::new(std::sync::Mutex::new(runner::backup_log(4 << 20)));
    let backup = runner::spawn_etcd_backup(srv.clone(), backup_ns, log);
    let _backup = AbortOnDrop(backup);
    let exec = Arc::new(sim::node::SimExec::new(srv.clone(), repo, Version::new(1, 7, 27), KUBELET_RESTART));

    // Drains predicted from the starting state by the real drain engine's dry run.
    let mut drains = Vec::new();
    if !builtin {
        for n in snap.nodes() {
            let t =
                DrainTarget { node: n.name.clone(), namespace: settings.namespace.clone(), self_pod: None };
            let dry = drain::dry_run(&sim_clients, &t, &settings.drain).await?;
            let p = prediction(&dry);
            progress(&prediction_line(&p));
            drains.push(p);
        }
    }

    // The clock of the Jobs' times: zero when detection runs.
    let clock = if sim_clock.paused { Clock::Simulated } else { Clock::Real };
    let epoch = tokio::time::Instant::now();
    let detect_ctx =
        Ctx::new(settings.clone(), Clients::from_config(srv.config())?, exec.clone(), opts.image.clone())?;
    let detection = chain::detect::detect(&detect_ctx, false).await?;
    let detection_text = match &detection {
        Detection::Halted(r) => format!("halted by the kill switch: {r}"),
        Detection::UpToDate { running } => format!("no upgrade found (running v{running})"),
        Detection::Target { running, target, kind, action } => {
            format!("target v{target} ({kind} from v{running}); {}", action.describe())
        }
    };
    progress(&format!("detect: {detection_text}"));

    // What the apiserver shows of the workers in flight: every cordon, as a watch sees it.
    let cordons = record::CordonWatch::start(sim_clients.api.clone(), &settings, WATCH_START).await?;
    let runner = runner::JobRunner::new(srv.clone(), settings.namespace.clone());
    let nodes_exec: Arc<dyn chain_core::node_exec::NodeExec> = exec.clone();
    let watching: RefCell<Watching> = RefCell::new(Watching::default());
    let since_epoch = |t: tokio::time::Instant| t.saturating_duration_since(epoch);
    runner
        .run_chain_concurrently(
            |job| {
                let w = watching.borrow();
                let r = w.running.get(&uid_of(job)).expect("the runner shows each Job before running it");
                let mut s = settings.clone();
                s.alerts.prometheus_url = prom.url_under(&r.prom_prefix);
                Ctx::new(s, r.log.clients(srv.config())?, r.log.exec(nodes_exec.clone()), opts.image.clone())
            },
            |job| {
                let mut w = watching.borrow_mut();
                w.started += 1;
                let n = w.started;
                progress(&job_header(n, job));
                w.last_shown = n;
                let env = runner::job_env(job).ok();
                let node = env.as_ref().and_then(|e| e.input.step.node().map(str::to_string));
                let name = job.metadata.name.clone().unwrap_or_default();
                let running = Running {
                    n,
                    title: env.map_or_else(|| name.clone(), |e| e.input.step.to_string()),
                    start: since_epoch(tokio::time::Instant::now()),
                    prom_prefix: format!("/job/{name}"),
                    observe: Observe::start(&srv, node.as_deref()),
                    log: record::JobLog::default(),
                };
                w.running.insert(uid_of(job), running);
            },
            |ran| {
                let mut w = watching.borrow_mut();
                let Some(r) = w.running.remove(&ran.uid) else { return };
                let started = since_epoch(ran.started);
                let span = (started, started + ran.elapsed);
                let checks = prom.alert_checks_under(&r.prom_prefix);
                let mut job = r.observe.finish(&srv, &r.log, checks, ran, span, &settings.timeouts);
                job.projected = report::project(&job, &real);
                // The Jobs beside it so far (the final list is made once every Job has ended).
                let beside =
                    w.running.values().filter(|o| report::overlap(span, (o.start, Duration::MAX))).count()
                        + w.ended.iter().filter(|(_, e)| report::overlap(span, (e.started, e.ended))).count();
                if w.last_shown != r.n {
                    progress(&format!("[{}] {} ended:", r.n, r.title));
                }
                for line in job_lines(&job, beside) {
                    progress(&line);
                }
                w.last_shown = r.n;
                w.ended.push((r.n, job));
            },
        )
        .await?;
    let mut ended = watching.into_inner().ended;
    ended.sort_by_key(|(n, _)| *n);
    let mut jobs: Vec<JobReport> = ended.into_iter().map(|(_, j)| j).collect();
    let spans: Vec<(Duration, Duration)> = jobs.iter().map(|j| (j.started, j.ended)).collect();
    for (i, span) in spans.iter().enumerate() {
        let beside: Vec<String> = (0..jobs.len())
            .filter(|&k| k != i && report::overlap(*span, spans[k]))
            .map(|k| jobs[k].name.clone())
            .collect();
        jobs[i].ran_beside = beside;
        jobs[i].shared = shared_figures(&jobs[i], clock);
    }
    let completed = jobs.last().is_some_and(|j| j.phase == Phase::Postflight && j.ok);
    let nodes: Vec<k8s_openapi::api::core::v1::Node> = srv.list(None);
    let (projected, workers_model) = project_chain(&jobs, &nodes, &settings);
    let zones = chain_core::waves::zones(&nodes, &settings.workers.topology_label);
    let ready_workers = nodes
        .iter()
        .filter(|n| node_is_ready(n))
        .count()
        .saturating_sub(settings_control_planes(&nodes, &settings));
    let workers =
        worker_stage(&jobs, &zones, settings.workers.limit(ready_workers, ready_workers), cordons.peak());
    let report = Report {
        source: match &opts.source {
            Source::Builtin => "built-in".into(),
            Source::Generated(size) => format!("generated ({} nodes, {} pods)", size.nodes(), size.pods()),
            Source::Live(_) => "live cluster copy".into(),
        },
        running,
        target,
        kind,
        hypothetical_target: hypothetical,
        copied,
        drains,
        detection: detection_text,
        clock,
        jobs,
        workers,
        completed,
        wall: wall.elapsed(),
        projected,
        model: {
            let mut m = report::model_text(&real, clock);
            m.push(workers_model);
            m
        },
        zones,
        ready_workers,
    };
    Ok(report)
}

/// How long the watch on the simulated cluster's Nodes may take to list them.
const WATCH_START: Duration = Duration::from_secs(30);

/// The chain's Jobs as the rehearsal runs them.
#[derive(Default)]
struct Watching {
    /// Jobs started so far: the `[n]` of the next one.
    started: usize,
    /// The `[n]` of the Job whose lines were shown last: a Job's lines at its end get a header
    /// when other lines came in between.
    last_shown: usize,
    /// By Job uid.
    running: HashMap<String, Running>,
    /// `[n]` and report of each Job that ended, in the order they ended.
    ended: Vec<(usize, JobReport)>,
}

/// A running Job and what the rehearsal records of it.
struct Running {
    n: usize,
    /// `worker k8s-node1`.
    title: String,
    /// On the report's clock.
    start: Duration,
    /// Its own route prefix on the simulated Prometheus.
    prom_prefix: String,
    observe: Observe,
    log: record::JobLog,
}

fn uid_of(job: &k8s_openapi::api::batch::v1::Job) -> String {
    job.metadata.uid.clone().unwrap_or_default()
}

/// The figures of a Job that may include the work of the Jobs beside it ([`JobReport::shared`]).
fn shared_figures(job: &JobReport, clock: Clock) -> Vec<String> {
    let n = job.ran_beside.len();
    if n == 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    if clock == Clock::Real {
        out.push(format!(
            "time: on the real clock, it includes this process's work for the {n} Job(s) beside it"
        ));
    }
    if job.etcd_snapshots > 0 {
        out.push(format!("etcd snapshots: counted over the cluster while {n} other Job(s) ran"));
    }
    if !job.fallback_deleted.is_empty() {
        out.push(
            "why the PDB fallback deleted: the drain's decision made again on the pods and PDBs as they were when this Job started; the Jobs beside it changed them since"
                .into(),
        );
    }
    out
}

/// The worker stage from the Jobs' spans, the failure domains, the slots and the cordon watch.
fn worker_stage(
    jobs: &[JobReport],
    zones: &std::collections::BTreeMap<String, String>,
    limit: usize,
    cordons: record::CordonPeak,
) -> Option<WorkerStage> {
    let workers: Vec<&JobReport> = jobs.iter().filter(|j| j.phase == Phase::Worker).collect();
    let first = workers.iter().map(|j| j.started).min()?;
    let last = workers.iter().map(|j| j.ended).max()?;
    let span = |j: &&JobReport| (j.started, j.ended);
    let mut by_zone: std::collections::BTreeMap<&str, Vec<(Duration, Duration)>> = Default::default();
    for j in &workers {
        if let Some(zone) = j.node.as_ref().and_then(|n| zones.get(n)) {
            by_zone.entry(zone).or_default().push(span(j));
        }
    }
    Some(WorkerStage {
        jobs: workers.len(),
        limit,
        in_flight_at_most: report::peak(&workers.iter().map(span).collect::<Vec<_>>()),
        in_one_zone_at_most: by_zone.values().map(|s| report::peak(s)).max().unwrap_or(0),
        cordoned_at_most: cordons.workers,
        cordoned_in_one_zone_at_most: cordons.in_one_zone,
        ran: last - first,
        scheduled: worker_makespan(jobs, zones, limit, |j| j.measured),
        projected: worker_makespan(jobs, zones, limit, |j| j.projected),
    })
}

/// The chain's projected duration: every Job but the workers one after another, and the worker
/// Jobs' projections scheduled on the slots of `workers.concurrency` / `max_unavailable` with
/// the zone rule, as the claims run them ([`chain_core::waves::makespan`]). With one worker at
/// a time that is the plain sum. Returns the duration and the model line that says so.
pub fn project_chain(
    jobs: &[JobReport],
    nodes: &[k8s_openapi::api::core::v1::Node],
    settings: &Settings,
) -> (Duration, String) {
    let ready = nodes
        .iter()
        .filter(|n| node_is_ready(n))
        .count()
        .saturating_sub(settings_control_planes(nodes, settings));
    let zones = chain_core::waves::zones(nodes, &settings.workers.topology_label);
    project(jobs, &zones, ready, &settings.workers)
}

/// [`project_chain`] from the failure domains ([`chain_core::waves::zones`]) and the number of
/// Ready workers, under any worker settings (the benchmark projects several). Pure.
pub fn project(
    jobs: &[JobReport],
    zones: &std::collections::BTreeMap<String, String>,
    ready_workers: usize,
    w: &chain_core::waves::WorkerSettings,
) -> (Duration, String) {
    let others = jobs.iter().filter(|j| !(j.phase == Phase::Worker && j.node.is_some()));
    // At the end of a rehearsal every Ready worker is uncordoned: all are schedulable.
    let limit = w.limit(ready_workers, ready_workers);
    let total =
        others.map(|j| j.projected).sum::<Duration>() + worker_makespan(jobs, zones, limit, |j| j.projected);
    let line = if w.sequential() {
        "  the worker Jobs one after another (workers.concurrency 1)".to_string()
    } else {
        format!(
            "  the worker Jobs {limit} at a time (workers.concurrency {}{}), never two nodes with one {} value at once: each Job that ends starts the next pending one",
            w.concurrency.get(),
            w.max_unavailable.map(|m| format!(", max_unavailable {m}")).unwrap_or_default(),
            w.topology_label.as_str()
        )
    };
    (total, line)
}

/// How long the worker Jobs of `jobs` take with `limit` slots, never two of one failure domain
/// at once, each taking `took(job)`: [`chain_core::waves::makespan`] with the workers pending
/// in natural order of their nodes, the order the claims take them. Pure.
pub fn worker_makespan(
    jobs: &[JobReport],
    zones: &std::collections::BTreeMap<String, String>,
    limit: usize,
    took: impl Fn(&JobReport) -> Duration,
) -> Duration {
    let mut workers: Vec<(&str, &JobReport)> = jobs
        .iter()
        .filter(|j| j.phase == Phase::Worker)
        .filter_map(|j| Some((j.node.as_deref()?, j)))
        .collect();
    workers.sort_by(|a, b| chain_core::plan::natural_cmp(a.0, b.0));
    let times: Vec<chain_core::waves::WorkerTime> = workers
        .iter()
        .map(|(node, j)| chain_core::waves::WorkerTime {
            node: node.to_string(),
            zone: zones.get(*node).cloned(),
            took: took(j),
        })
        .collect();
    chain_core::waves::makespan(&times, limit)
}

fn node_is_ready(n: &k8s_openapi::api::core::v1::Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn settings_control_planes(nodes: &[k8s_openapi::api::core::v1::Node], settings: &Settings) -> usize {
    let sel = settings.control_plane_selector();
    nodes.iter().filter(|n| sel.matches(n.metadata.labels.as_ref()) && node_is_ready(n)).count()
}

fn job_header(n: usize, job: &k8s_openapi::api::batch::v1::Job) -> String {
    let name = job.metadata.name.as_deref().unwrap_or_default();
    match runner::job_env(job) {
        Ok(env) => format!(
            "[{n}] {}{}: Job {name} runs on {}{}",
            env.input.step.phase(),
            env.input.step.node().map(|n| format!(" {n}")).unwrap_or_default(),
            env.run_on,
            if env.tolerations.is_empty() {
                String::new()
            } else {
                format!(", tolerating {}", env.tolerations.join(", "))
            }
        ),
        Err(e) => format!("[{n}] Job {name}: {e:#}"),
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the cluster looked like when a Job started, to tell what the Job did (from what the Job
/// itself sent: its [`record::JobLog`]).
struct Observe {
    /// The pods the Job may remove, as they were when it started: a node Job's drain only
    /// removes the pods on its node; other Jobs see every pod.
    pods: HashMap<(String, String), Pod>,
    /// Every pod of the namespaces where one of `pods` is under several PDBs: the drain's
    /// decision counts such a pod's budgets from the pods (`drain::decide::View::pods`).
    ns_pods: HashMap<String, Vec<Pod>>,
    pdbs: Vec<PodDisruptionBudget>,
    /// etcd snapshot Jobs in the cluster (a count over the cluster, not the Job's own).
    snapshots: usize,
}

fn snapshot_jobs(srv: &TestApiServer) -> usize {
    srv.list::<k8s_openapi::api::batch::v1::Job>(None)
        .iter()
        .filter(|j| j.metadata.name.as_deref().is_some_and(|n| n.starts_with("pre-upgrade-etcd-")))
        .count()
}

impl Observe {
    fn start(srv: &TestApiServer, node: Option<&str>) -> Self {
        // Copying every pod for each Job made a rehearsal quadratic in the cluster's size.
        let listed: Vec<Pod> = match node {
            Some(node) => srv.list_where(None, |p| {
                p.pointer("/spec/nodeName").and_then(serde_json::Value::as_str) == Some(node)
            }),
            None => srv.list(None),
        };
        let pdbs: Vec<PodDisruptionBudget> = srv.list(None);
        let mut ns_pods = HashMap::new();
        for p in &listed {
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            if !ns_pods.contains_key(&ns) && pdb::matching(p, &pdbs).len() > 1 {
                let all: Vec<Pod> = srv.list(Some(&ns));
                ns_pods.insert(ns, all);
            }
        }
        let pods = listed
            .into_iter()
            .map(|p| {
                (
                    (
                        p.metadata.namespace.clone().unwrap_or_default(),
                        p.metadata.name.clone().unwrap_or_default(),
                    ),
                    p,
                )
            })
            .collect();
        Self { pods, ns_pods, pdbs, snapshots: snapshot_jobs(srv) }
    }

    /// The Job's report from what it sent (`log`), its own alert checks, how it ended and its
    /// span on the report's clock (`[start, end)`).
    fn finish(
        self,
        srv: &TestApiServer,
        log: &record::JobLog,
        alert_checks: usize,
        ran: &runner::RanJob,
        span: (Duration, Duration),
        sim: &Timeouts,
    ) -> JobReport {
        let mut evicted = Vec::new();
        let mut refusals = 0;
        let mut fallback_deleted = Vec::new();
        let mut finished_deleted = Vec::new();
        let mut grace = 0i64;
        let api = log.api_calls();
        for r in &api {
            let Some((ns, name, sub)) = pod_path(&r.path) else { continue };
            let key = (ns.clone(), name.clone());
            let pod = self.pods.get(&key);
            let id = format!("{ns}/{name}");
            match (r.method.as_str(), sub.as_deref(), r.status) {
                ("POST", Some("eviction"), 200 | 201) if !evicted.contains(&id) => {
                    evicted.push(id);
                    grace = grace.max(pod.map_or(0, grace_of));
                }
                ("POST", Some("eviction"), 429 | 500) => refusals += 1,
                ("DELETE", None, 200 | 202) => {
                    let finished = pod.is_some_and(drain::select::is_finished);
                    if finished {
                        finished_deleted.push(id);
                    } else if let Some(pod) = pod {
                        grace = grace.max(grace_of(pod));
                        // The drain's own decision, on the state this Job started from.
                        let view = drain::decide::View {
                            pdbs: &self.pdbs,
                            pods: self.ns_pods.get(&ns).map(Vec::as_slice),
                            namespace_terminating: false,
                            shared_with_other_drains: None,
                        };
                        let rules = drain::Rules { fallback_after: Duration::ZERO, unhealthy_fallback: true };
                        let (pdbs, why) = match drain::decide::decide(pod, &view, &rules) {
                            drain::Decision::Delete { fallback, .. } => (fallback.pdbs, fallback.why),
                            other => (
                                pdb::matching(pod, &self.pdbs).into_iter().map(pdb::name_of).collect(),
                                other.to_string(),
                            ),
                        };
                        fallback_deleted.push(FallbackDeleted { pod: id, pdbs, why });
                    }
                }
                _ => {}
            }
        }
        let calls = log.node_calls();
        let is_script = |w: &str| {
            ["update_k8s.sh", "containerd-skew-fix", "apt-repo-rewrite"].iter().any(|s| w.starts_with(s))
        };
        let node_actions: Vec<String> = calls
            .iter()
            .filter(|c| is_script(&c.what))
            .map(|c| {
                // The apt base is long and the same everywhere: keep the line readable.
                let what = c.what.split(" --apt-base").next().unwrap_or_default();
                format!("{}: {what}", c.node)
            })
            .collect();
        let node_probes = calls.iter().filter(|c| !is_script(&c.what)).count();
        let (result, ok) = match &ran.result {
            Ok(Ended::Done) => ("Done".to_string(), true),
            Ok(Ended::Skipped(r)) => (format!("Skipped: {r}"), true),
            Ok(Ended::Refused(r)) => (format!("Refused: {r}"), false),
            Ok(Ended::Halted(r)) => (format!("Halted: {r}"), false),
            Err(e) => (format!("FAILED: {e}"), false),
        };
        let simulated_soak = if ran.phase == Phase::Worker && ok && !result.starts_with("Skipped") {
            sim.soak_interval * chain_core::alerts::soak_rounds(sim.soak, sim.soak_interval)
        } else {
            Duration::ZERO
        };
        JobReport {
            name: ran.name.clone(),
            phase: ran.phase,
            node: ran.node.clone(),
            run_on: ran.run_on.clone(),
            tolerations: ran.tolerations.clone(),
            result,
            ok,
            started: span.0,
            ended: span.1,
            measured: ran.elapsed,
            ran_beside: Vec::new(),
            api_requests: api.len(),
            simulated_soak,
            evicted,
            eviction_refusals: refusals,
            fallback_deleted,
            finished_deleted,
            longest_grace: Duration::from_secs(grace.max(0) as u64),
            alert_checks,
            node_actions,
            node_probes,
            etcd_snapshots: snapshot_jobs(srv).saturating_sub(self.snapshots),
            projected: Duration::ZERO,
            shared: Vec::new(),
        }
    }
}

fn grace_of(p: &Pod) -> i64 {
    p.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30)
}

/// `/api/v1/namespaces/<ns>/pods/<name>[/<sub>]` (query stripped).
fn pod_path(path: &str) -> Option<(String, String, Option<String>)> {
    let path = path.split('?').next()?;
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let mut it = rest.split('/');
    let (ns, kind, name, sub) = (it.next()?, it.next()?, it.next()?, it.next());
    (kind == "pods").then(|| (ns.to_string(), name.to_string(), sub.map(String::from)))
}

fn prediction(dry: &drain::DryRunReport) -> DrainPrediction {
    let mut fallback = Vec::new();
    let mut waits = Vec::new();
    for e in &dry.evict {
        match &e.decision {
            drain::Decision::Evict(_) => {}
            drain::Decision::Delete { fallback: f, .. } => fallback.push(FallbackDeleted {
                pod: e.pod.to_string(),
                pdbs: f.pdbs.clone(),
                why: f.why.clone(),
            }),
            drain::Decision::Wait(h) => waits.push(format!("{}: {h}", e.pod)),
            drain::Decision::NamespaceTerminating => {
                waits.push(format!("{}: its namespace is being deleted", e.pod))
            }
        }
    }
    DrainPrediction {
        node: dry.node.clone(),
        evict: dry.evict.len(),
        fallback,
        waits,
        refuse: dry.refuse.iter().map(|(p, why)| format!("{p} {why}")).collect(),
    }
}

fn prediction_line(p: &DrainPrediction) -> String {
    let mut s = format!("drain of {} (predicted from the copy): {} pod(s) to evict", p.node, p.evict);
    if p.refuse.is_empty() && p.fallback.is_empty() && p.waits.is_empty() {
        s.push_str("; no PDB blocks");
    }
    for r in &p.refuse {
        s.push_str(&format!("\n    REFUSES to start: {r}"));
    }
    for f in &p.fallback {
        s.push_str(&format!(
            "\n    blocks: {} by PDB {} ({}); the fallback would delete it",
            f.pod,
            f.pdbs.join(" + "),
            f.why
        ));
    }
    for w in &p.waits {
        s.push_str(&format!("\n    waits: {w}"));
    }
    s
}

/// A Job's lines at its end; `beside`: how many Jobs ran beside it.
fn job_lines(r: &JobReport, beside: usize) -> Vec<String> {
    let mut out = Vec::new();
    if !r.evicted.is_empty() {
        const SHOWN: usize = 12;
        let mut pods = r.evicted.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
        if r.evicted.len() > SHOWN {
            pods.push_str(&format!(" and {} more", r.evicted.len() - SHOWN));
        }
        out.push(format!(
            "    evicted {}: {pods}{}",
            r.evicted.len(),
            if r.eviction_refusals > 0 {
                format!(" ({} eviction(s) refused by a PDB and retried)", r.eviction_refusals)
            } else {
                String::new()
            }
        ));
    }
    for f in &r.fallback_deleted {
        out.push(format!("    PDB fallback deleted {} (PDB {}: {})", f.pod, f.pdbs.join(" + "), f.why));
    }
    if !r.finished_deleted.is_empty() {
        out.push(format!("    deleted finished pods: {}", r.finished_deleted.join(", ")));
    }
    for a in &r.node_actions {
        out.push(format!("    node {a}"));
    }
    if r.etcd_snapshots > 0 {
        out.push(
            "    etcd snapshot: Job created from the backup CronJob, completed by the simulated backup"
                .into(),
        );
    }
    if r.alert_checks > 0 {
        out.push(format!("    alert gate: {} check(s), no blocking alert", r.alert_checks));
    }
    out.push(format!(
        "    -> {} in {:.1}s ({:.1}s to {:.1}s){}",
        r.result,
        r.measured.as_secs_f64(),
        r.started.as_secs_f64(),
        r.ended.as_secs_f64(),
        if beside > 0 { format!(", beside {beside} other Job(s)") } else { String::new() }
    ));
    out
}

/// The summary printed at the end of a rehearsal.
pub fn summary_text(r: &Report) -> String {
    let mut s = String::from("\nSummary\n");
    s.push_str(&format!(
        "  {} rehearsal of v{} -> v{} ({}): {} Job(s), {}\n",
        r.source,
        r.running,
        r.target,
        r.kind,
        r.jobs.len(),
        if r.completed { "chain completed".to_string() } else { "chain STOPPED before the end".to_string() }
    ));
    s.push_str(&format!(
        "  times {} (START, END: since detection ran; TOOK: END - START)\n",
        r.clock.describe()
    ));
    let header = ["JOB", "RUNS ON", "RESULT", "START", "END", "TOOK", "PROJECTED"].map(String::from);
    let rows: Vec<[String; 7]> = r
        .jobs
        .iter()
        .map(|j| {
            [
                job_title(j),
                j.run_on.clone(),
                j.result.chars().take(60).collect(),
                format!("{:.1}s", j.started.as_secs_f64()),
                format!("{:.1}s", j.ended.as_secs_f64()),
                format!("{:.1}s", j.measured.as_secs_f64()),
                report::whole(j.projected),
            ]
        })
        .collect();
    let mut widths = [0usize; 7];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        s.push_str(&format!("  {}\n", line.join("  ").trim_end()));
    }
    let evicted: usize = r.jobs.iter().map(|j| j.evicted.len()).sum();
    let deleted: Vec<String> = r
        .jobs
        .iter()
        .flat_map(|j| j.fallback_deleted.iter().map(|f| format!("{} (PDB {})", f.pod, f.pdbs.join(" + "))))
        .collect();
    s.push_str(&format!("  pods evicted: {evicted}\n"));
    s.push_str(&format!(
        "  pods deleted by the PDB fallback: {}{}\n",
        deleted.len(),
        if deleted.is_empty() { String::new() } else { format!(": {}", deleted.join(", ")) }
    ));
    let tolerations: Vec<String> = {
        let mut t: Vec<String> = r.jobs.iter().flat_map(|j| j.tolerations.clone()).collect();
        t.sort();
        t.dedup();
        t
    };
    if !tolerations.is_empty() {
        s.push_str(&format!("  tolerations the Jobs carry: {}\n", tolerations.join(", ")));
    }
    if let Some(w) = &r.workers {
        s.push_str(&worker_stage_text(w, r.clock));
    }
    // Each kind of shared figure once, with the Jobs it applies to.
    let mut shared: Vec<(&str, Vec<String>)> = Vec::new();
    for j in &r.jobs {
        for f in &j.shared {
            let title = job_title(j);
            match shared.iter_mut().find(|(g, _)| g == f) {
                Some((_, jobs)) => jobs.push(title),
                None => shared.push((f, vec![title])),
            }
        }
    }
    if !shared.is_empty() {
        s.push_str("  figures that may include the work of the Jobs beside them:\n");
        for (f, jobs) in shared {
            s.push_str(&format!("    {f} ({})\n", jobs.join(", ")));
        }
    }
    s.push_str(&format!("  rehearsal wall time: {:.1}s\n", r.wall.as_secs_f64()));
    s.push_str(&format!("  projected duration with the real waits: {}\n", report::whole(r.projected)));
    for m in &r.model {
        s.push_str(&format!("    {m}\n"));
    }
    s
}

/// `worker k8s-node1`, `preflight`.
fn job_title(j: &JobReport) -> String {
    format!("{}{}", j.phase, j.node.as_deref().map(|n| format!(" {n}")).unwrap_or_default())
}

/// The worker stage's lines of the summary.
fn worker_stage_text(w: &WorkerStage, clock: Clock) -> String {
    let mut s = format!(
        "  worker stage: {} worker Job(s), at most {} running at once (limit {}), {}\n",
        w.jobs,
        w.in_flight_at_most,
        w.limit,
        match w.in_one_zone_at_most {
            0 => "no zone labels".to_string(),
            1 => "never two of one zone at once".to_string(),
            n => format!("at most {n} of one zone at once"),
        }
    );
    s.push_str(&format!(
        "    a watch on the Nodes saw at most {} worker(s) cordoned at once{}\n",
        w.cordoned_at_most,
        if w.cordoned_in_one_zone_at_most > 0 {
            format!(", at most {} of one zone", w.cordoned_in_one_zone_at_most)
        } else {
            String::new()
        }
    ));
    s.push_str(&format!(
        "    {}: {:.1}s from the first worker Job's start to the last one's end; the projection's scheduling of the same Jobs' times: {:.1}s\n",
        clock.describe(),
        w.ran.as_secs_f64(),
        w.scheduled.as_secs_f64()
    ));
    s.push_str(&format!("    projected with the real waits: {}\n", report::whole(w.projected)));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_must_move_forward_one_minor_at_most() {
        let v = |s: &str| s.parse::<Version>().unwrap();
        let on = |versions: [&str; 3]| {
            let nodes = [("cp1", true), ("w1", false), ("w2", false)]
                .iter()
                .zip(versions)
                .enumerate()
                .map(|(i, ((name, cp), ver))| {
                    let b = chain_core::fixtures::node(name).kubelet(ver).ip(&format!("10.0.0.{}", i + 1));
                    if *cp { b.control_plane().build() } else { b.build() }
                })
                .collect::<Vec<_>>();
            Snapshot::from_nodes(&nodes, &Settings::default().control_plane_selector()).unwrap()
        };
        let same = on(["1.34.1", "1.34.1", "1.34.1"]);
        assert_eq!(check_target(&same, v("1.34.2")).unwrap(), Kind::Patch);
        assert_eq!(check_target(&same, v("1.35.0")).unwrap(), Kind::Minor);
        let e = check_target(&same, v("1.34.1")).unwrap_err().to_string();
        assert!(e.contains("nothing to do: every node is on v1.34.1"), "{e}");
        assert!(check_target(&same, v("1.36.0")).is_err());
        // QA A4: a node newer than the target is refused, naming it.
        let e = check_target(&on(["1.35.0", "1.35.0", "1.34.5"]), v("1.34.6")).unwrap_err().to_string();
        assert!(e.contains("cp1 (v1.35.0), w1 (v1.35.0)"), "{e}");
        assert_eq!(default_target(v("1.34.9")), v("1.34.10"));
    }

    #[test]
    fn pod_paths_name_the_pod_and_subresource() {
        assert_eq!(
            pod_path("/api/v1/namespaces/apps/pods/web-1/eviction"),
            Some(("apps".into(), "web-1".into(), Some("eviction".into())))
        );
        assert_eq!(
            pod_path("/api/v1/namespaces/apps/pods/web-1?gracePeriodSeconds=3"),
            Some(("apps".into(), "web-1".into(), None))
        );
        assert_eq!(pod_path("/api/v1/namespaces/apps/configmaps/x"), None);
    }

    #[test]
    fn simulated_settings_scale_waits_and_keep_the_site_policy() {
        let site = Settings { namespace: "upgrades".into(), ..Settings::default() };
        let u: url::Url = "http://127.0.0.1:1/".parse().unwrap();
        let s = simulated_settings(&site, 600.0, &u, &u, &u, true);
        assert_eq!(s.namespace, "upgrades");
        assert_eq!(s.timeouts.soak, Duration::from_secs(1));
        assert_eq!(s.timeouts.soak_interval, Duration::from_millis(100));
        assert_eq!(s.timeouts.settle_window, site.timeouts.settle_window);
        assert_eq!(s.hooks.etcd_backup, Some(builtin_etcd_backup()), "the built-in cluster's own backup");
        // A live cluster's copy keeps the site's snapshot policy: no backup invented.
        let live = simulated_settings(&site, 600.0, &u, &u, &u, false);
        assert_eq!(live.hooks.etcd_backup, None);
        assert_eq!(chain_core::etcd::policy(&live.hooks), chain_core::etcd::SnapshotPolicy::Refuse);
        assert_eq!(s.alerts.prometheus_url, u);
        assert!(s.slack.webhook_file.starts_with("/nonexistent"));
        s.validate("test").unwrap();
    }

    /// QA B4: lending the built-in backup is said, unless the config names one or allows none.
    #[test]
    fn the_lent_etcd_backup_is_said() {
        let site = Settings::default();
        let note = builtin_backup_note(&site, true).unwrap();
        assert!(
            note.contains("would stop at preflight unless hooks.allow_no_etcd_snapshot is set"),
            "{note}"
        );
        assert_eq!(builtin_backup_note(&site, false), None, "a copy of the live cluster lends nothing");
        let mut named = site.clone();
        named.hooks.etcd_backup = Some(builtin_etcd_backup());
        assert_eq!(builtin_backup_note(&named, true), None);
        let mut allowed = site.clone();
        allowed.hooks.allow_no_etcd_snapshot = true;
        assert_eq!(builtin_backup_note(&allowed, true), None);
    }
}
