//! `rehearse`: the whole chain, end to end, against a simulated cluster.
//!
//! One code path: the rehearsal runs the same `detect` and `step` code as production, Job by
//! Job, as the cluster would run them ([`runner`]). Only the Kubernetes endpoint (the in-process
//! apiserver, [`sim::apiserver`]) and the node executor ([`sim::node::SimExec`] instead of SSH)
//! differ, plus loopback stand-ins for Prometheus, the Pushgateway and the apt repository
//! ([`sim::http`]). The waits and soaks are scaled down; the summary projects the duration with
//! the real ones.
//!
//! With [`Source::Live`] the simulator starts from a read-only copy of a live cluster
//! ([`cluster::copy_live`]): nothing is ever written to it.

pub mod cluster;
pub mod generated;
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

use report::{FallbackDeleted, JobReport};

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
    /// Every Job, in order.
    pub jobs: Vec<JobReport>,
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
    let _clock = SimulatedClock::start(!matches!(opts.source, Source::Live(_)));
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

    let make_ctx =
        || Ctx::new(settings.clone(), Clients::from_config(srv.config())?, exec.clone(), opts.image.clone());
    let detection = chain::detect::detect(&make_ctx()?, false).await?;
    let detection_text = match &detection {
        Detection::Halted(r) => format!("halted by the kill switch: {r}"),
        Detection::UpToDate { running } => format!("no upgrade found (running v{running})"),
        Detection::Target { running, target, kind, action } => {
            format!("target v{target} ({kind} from v{running}); {}", action.describe())
        }
    };
    progress(&format!("detect: {detection_text}"));

    let runner = runner::JobRunner::new(srv.clone(), settings.namespace.clone());
    let observing: RefCell<Option<Observe>> = RefCell::new(None);
    let jobs: RefCell<Vec<JobReport>> = RefCell::new(Vec::new());
    runner
        .run_chain(
            make_ctx,
            |job| {
                let n = jobs.borrow().len() + 1;
                progress(&job_header(n, job));
                let node = runner::job_env(job).ok().and_then(|e| e.input.step.node().map(str::to_string));
                *observing.borrow_mut() = Some(Observe::start(&srv, &prom, &exec, node.as_deref()));
            },
            |ran| {
                let Some(o) = observing.borrow_mut().take() else { return };
                let mut r = o.finish(&srv, &prom, &exec, ran, &settings.timeouts);
                r.projected = report::project(&r, &real);
                for line in job_lines(&r) {
                    progress(&line);
                }
                jobs.borrow_mut().push(r);
            },
        )
        .await?;
    let jobs = jobs.into_inner();
    let completed = jobs.last().is_some_and(|j| j.phase == Phase::Postflight && j.ok);
    let nodes: Vec<k8s_openapi::api::core::v1::Node> = srv.list(None);
    let (projected, workers_model) = project_chain(&jobs, &nodes, &settings);
    let zones = chain_core::waves::zones(&nodes, &settings.workers.topology_label);
    let ready_workers = nodes
        .iter()
        .filter(|n| node_is_ready(n))
        .count()
        .saturating_sub(settings_control_planes(&nodes, &settings));
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
        jobs,
        completed,
        wall: wall.elapsed(),
        projected,
        model: {
            let mut m = report::model_text(&real);
            m.push(workers_model);
            m
        },
        zones,
        ready_workers,
    };
    Ok(report)
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
    let (workers, others): (Vec<&JobReport>, Vec<&JobReport>) =
        jobs.iter().partition(|j| j.phase == Phase::Worker && j.node.is_some());
    let times: Vec<chain_core::waves::WorkerTime> = workers
        .iter()
        .map(|j| {
            let node = j.node.clone().unwrap_or_default();
            chain_core::waves::WorkerTime { zone: zones.get(&node).cloned(), node, took: j.projected }
        })
        .collect();
    let limit = w.limit(ready_workers, ready_workers);
    let total =
        others.iter().map(|j| j.projected).sum::<Duration>() + chain_core::waves::makespan(&times, limit);
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

/// What the cluster looked like when a Job started, to tell what the Job did.
struct Observe {
    requests: usize,
    alert_checks: usize,
    calls: usize,
    /// The pods the Job may remove, as they were when it started: a node Job's drain only
    /// removes the pods on its node; other Jobs see every pod.
    pods: HashMap<(String, String), Pod>,
    /// Every pod of the namespaces where one of `pods` is under several PDBs: the drain's
    /// decision counts such a pod's budgets from the pods (`drain::decide::View::pods`).
    ns_pods: HashMap<String, Vec<Pod>>,
    pdbs: Vec<PodDisruptionBudget>,
    snapshots: usize,
}

fn snapshot_jobs(srv: &TestApiServer) -> usize {
    srv.list::<k8s_openapi::api::batch::v1::Job>(None)
        .iter()
        .filter(|j| j.metadata.name.as_deref().is_some_and(|n| n.starts_with("pre-upgrade-etcd-")))
        .count()
}

impl Observe {
    fn start(
        srv: &TestApiServer,
        prom: &sim::http::Prometheus,
        exec: &sim::node::SimExec,
        node: Option<&str>,
    ) -> Self {
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
        Self {
            requests: srv.request_count(),
            alert_checks: prom.alert_checks(),
            calls: exec.calls().len(),
            pods,
            ns_pods,
            pdbs,
            snapshots: snapshot_jobs(srv),
        }
    }

    fn finish(
        self,
        srv: &TestApiServer,
        prom: &sim::http::Prometheus,
        exec: &sim::node::SimExec,
        ran: &runner::RanJob,
        sim: &Timeouts,
    ) -> JobReport {
        let mut evicted = Vec::new();
        let mut refusals = 0;
        let mut fallback_deleted = Vec::new();
        let mut finished_deleted = Vec::new();
        let mut grace = 0i64;
        for r in &srv.requests_since(self.requests) {
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
        let calls = exec.calls();
        let new_calls = &calls[self.calls.min(calls.len())..];
        let is_script = |w: &str| {
            ["update_k8s.sh", "containerd-skew-fix", "apt-repo-rewrite"].iter().any(|s| w.starts_with(s))
        };
        let node_actions: Vec<String> = new_calls
            .iter()
            .filter(|c| is_script(&c.what))
            .map(|c| {
                // The apt base is long and the same everywhere: keep the line readable.
                let what = c.what.split(" --apt-base").next().unwrap_or_default();
                format!("{}: {what}", c.node)
            })
            .collect();
        let node_probes = new_calls.iter().filter(|c| !is_script(&c.what)).count();
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
            measured: ran.elapsed,
            simulated_soak,
            evicted,
            eviction_refusals: refusals,
            fallback_deleted,
            finished_deleted,
            longest_grace: Duration::from_secs(grace.max(0) as u64),
            alert_checks: prom.alert_checks() - self.alert_checks,
            node_actions,
            node_probes,
            etcd_snapshots: snapshot_jobs(srv) - self.snapshots,
            projected: Duration::ZERO,
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

fn job_lines(r: &JobReport) -> Vec<String> {
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
    out.push(format!("    -> {} in {:.1}s", r.result, r.measured.as_secs_f64()));
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
    let header = ["JOB", "RUNS ON", "RESULT", "HERE", "PROJECTED"].map(String::from);
    let rows: Vec<[String; 5]> = r
        .jobs
        .iter()
        .map(|j| {
            [
                format!("{}{}", j.phase, j.node.as_deref().map(|n| format!(" {n}")).unwrap_or_default()),
                j.run_on.clone(),
                j.result.chars().take(60).collect(),
                format!("{:.1}s", j.measured.as_secs_f64()),
                report::whole(j.projected),
            ]
        })
        .collect();
    let mut widths = [0usize; 5];
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
    s.push_str(&format!("  rehearsal wall time: {:.1}s\n", r.wall.as_secs_f64()));
    s.push_str(&format!("  projected duration with the real waits: {}\n", report::whole(r.projected)));
    for m in &r.model {
        s.push_str(&format!("    {m}\n"));
    }
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
