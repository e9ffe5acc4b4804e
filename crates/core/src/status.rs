//! `status`: where the chain is and what an operator should do next.
//!
//! Pure: [`summarize`] over what the shell (the binary's `ops::status::read`) reads: the chain Jobs (label
//! `app=k8s-upgrade-chain`), the nodes, the namespace's in-flight record, the kill switch and,
//! optionally, the Pushgateway's gauges. Read-only.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::{batch::v1::Job, core::v1::Node};
use serde::Serialize;

use crate::{
    annotations::InFlight,
    job::{JobState, job_state},
    killswitch::KillSwitch,
    metrics::Scrape,
    plan::natural_cmp,
    resume::UpgradeStarted,
    settings::Settings,
    version::Version,
};

/// Annotation naming a chain Job's target node.
pub const TARGET_NODE_ANNOTATION: &str = "k8s-upgrade-chain/target-node";

/// Everything [`summarize`] looks at.
#[derive(Debug, Clone, Default)]
pub struct Inputs<'a> {
    /// Chain Jobs (label `app=k8s-upgrade-chain`) in the tool's namespace.
    pub jobs: &'a [Job],
    /// All nodes.
    pub nodes: &'a [Node],
    /// The namespace's in-flight record, if any.
    pub in_flight: Option<&'a InFlight>,
    /// The kill switch, when it could be read.
    pub kill_switch: Option<&'a KillSwitch>,
    /// The Pushgateway's gauges, when read.
    pub metrics: Option<&'a Scrape>,
    /// The worker claims on the namespace (worker concurrency above 1), when read.
    pub claims: Option<&'a crate::waves::Claims>,
    /// Problems reading any of the above (shown as warnings).
    pub read_errors: Vec<String>,
    /// The time of the reading (the core never reads the clock).
    pub now: Timestamp,
}

/// The chain as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overall {
    /// A chain Job is running.
    Running,
    /// The kill switch is present.
    Halted,
    /// A node's own upgrade failed and waits for an operator's acknowledgement: nothing
    /// resumes until `k8s-upgrade-chain ack NODE`.
    AwaitingAck,
    /// The newest Job of the chain failed.
    Failed,
    /// Nothing runs but nodes are off target.
    Stopped,
    /// Every node is on one version and nothing runs.
    Idle,
}

/// One node's place in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeState {
    /// On the target (or, with no target, on the newest version present).
    Done,
    /// A chain Job is working on it.
    Current,
    /// Not yet upgraded.
    Pending,
    /// The last Job for it failed.
    Failed,
    /// Its own upgrade failed (or was cut short) and waits for an acknowledgement.
    AwaitingAck,
}

/// One node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    /// Node or Job name.
    pub name: String,
    /// Whether it is a control-plane node.
    pub control_plane: bool,
    /// Kubelet version as reported (`v1.34.1`), or `unknown`.
    pub kubelet: String,
    /// Its place in the chain.
    pub state: NodeState,
}

/// One chain Job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobStatus {
    /// Node or Job name.
    pub name: String,
    /// The `phase` label.
    pub phase: Option<String>,
    /// The target node annotation.
    pub node: Option<String>,
    /// `active`, `complete` or `failed`.
    pub state: String,
    /// `status.startTime`, else the creation time.
    pub started: Option<Timestamp>,
}

/// Why the newest failed Job failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastError {
    /// The failed Job.
    pub job: String,
    /// The Failed condition's reason (`BackoffLimitExceeded`, `DeadlineExceeded`).
    pub reason: String,
    /// The Failed condition's message.
    pub message: String,
}

/// A node that waits for an operator's acknowledgement of its failed upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AwaitingAck {
    /// The node.
    pub node: String,
    /// What its [`crate::resume::UPGRADE_STARTED_ANNOTATION`] says.
    pub started: UpgradeStarted,
    /// The command that acknowledges it.
    pub command: String,
}

/// What `status` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// The chain as a whole.
    pub overall: Overall,
    /// The target: the in-flight record's, else the newest unfinished chain's.
    pub target: Option<Version>,
    /// The phase of the running Job, else of the newest Job.
    pub current_phase: Option<String>,
    /// The Job that phase belongs to.
    pub current_job: Option<String>,
    /// Seconds since the current Job started.
    pub seconds_in_phase: Option<i64>,
    /// Every node, control planes first, in natural order.
    pub nodes: Vec<NodeStatus>,
    /// The target's Jobs, oldest first.
    pub jobs: Vec<JobStatus>,
    /// The newest failed Job of the target, if any.
    pub last_error: Option<LastError>,
    /// Nodes whose own upgrade failed and that wait for an acknowledgement, with the command.
    pub awaiting_ack: Vec<AwaitingAck>,
    /// Kill switch reason when present.
    pub kill_switch: Option<String>,
    /// The in-flight record's start, when present.
    pub in_flight_since: Option<Timestamp>,
    /// `k8s_upgrade_blocked` / `k8s_upgrade_held` from the Pushgateway, when read.
    pub blocked: Option<bool>,
    /// `k8s_upgrade_held`, when read.
    pub held: Option<bool>,
    /// The workers in flight by the claim record (worker concurrency above 1), natural order.
    pub workers_in_flight: Vec<String>,
    /// Why the chain stopped claiming workers, when it did.
    pub worker_claims_stopped: Option<String>,
    /// Reading problems.
    pub warnings: Vec<String>,
    /// What to do next, most urgent first.
    pub next_steps: Vec<String>,
}

fn kubelet_of(node: &Node) -> Option<String> {
    node.status.as_ref()?.node_info.as_ref().map(|i| i.kubelet_version.clone())
}

fn version_of(node: &Node) -> Option<Version> {
    kubelet_of(node)?.parse().ok()
}

fn job_label<'a>(job: &'a Job, key: &str) -> Option<&'a str> {
    job.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

fn job_node(job: &Job) -> Option<String> {
    job.metadata.annotations.as_ref()?.get(TARGET_NODE_ANNOTATION).filter(|n| !n.is_empty()).cloned()
}

fn job_started(job: &Job) -> Option<Timestamp> {
    job.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .or(job.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
}

fn job_target(job: &Job) -> Option<Version> {
    job_label(job, "target-version")?.replace('-', ".").parse().ok()
}

fn failure(job: &Job) -> Option<(String, String)> {
    let c = job
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Failed" && c.status == "True")?;
    Some((c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default()))
}

fn state_name(s: JobState) -> &'static str {
    match s {
        JobState::Active => "active",
        JobState::Complete => "complete",
        JobState::Failed => "failed",
    }
}

/// Decides the chain's status (pure).
pub fn summarize(inputs: &Inputs<'_>, settings: &Settings) -> Status {
    let now = inputs.now;
    let (target, chain) = which_chain(inputs);
    let nodes = node_states(inputs, settings, target, &chain);
    let progress = Progress::of(&chain);
    let kill_switch = match inputs.kill_switch {
        Some(KillSwitch::Present { reason }) => Some(reason.clone()),
        _ => None,
    };
    let latch = |name: &str| {
        inputs.metrics.and_then(|m| {
            m.find(name, &[("job", crate::metrics::CHAIN_JOB)])
                .find(|s| s.labels.get("phase").is_none_or(|p| p.is_empty()))
                .map(|s| s.value >= 0.5)
        })
    };
    let (blocked, held) = (latch("k8s_upgrade_blocked"), latch("k8s_upgrade_held"));
    let off_target = nodes.iter().any(|n| n.state != NodeState::Done);
    let awaiting_ack: Vec<AwaitingAck> = inputs
        .nodes
        .iter()
        .filter_map(|n| {
            let name = n.metadata.name.clone()?;
            let started = UpgradeStarted::of(n)?;
            let current = nodes.iter().any(|s| s.name == name && s.state == NodeState::Current);
            (!current).then(|| AwaitingAck {
                command: crate::resume::ack_command(&name),
                node: name,
                started,
            })
        })
        .collect();
    let overall = if kill_switch.is_some() {
        Overall::Halted
    } else if progress.active.is_some() {
        Overall::Running
    } else if !awaiting_ack.is_empty() {
        Overall::AwaitingAck
    } else if progress.failure_open.is_some() {
        Overall::Failed
    } else if off_target {
        Overall::Stopped
    } else {
        Overall::Idle
    };
    let claims = target.and_then(|t| inputs.claims.filter(|c| c.target == Some(t)));
    let workers_in_flight = claims.map(|c| c.nodes()).unwrap_or_default();
    let worker_claims_stopped = claims.and_then(|c| c.stopped.clone());
    let facts =
        Facts { target, kill_switch: kill_switch.as_deref(), blocked, off_target, awaiting: &awaiting_ack };
    let mut next_steps = next_steps(inputs, &settings.namespace, &progress, &facts);
    if let Some(why) = &worker_claims_stopped {
        let trigger = format!(
            "kubectl -n {} create job --from=cronjob/{} k8s-version-check-manual-$(date +%s)",
            settings.namespace,
            crate::manifests::DETECTION_CRONJOB
        );
        next_steps.push(format!(
            "Worker claims stopped: {why}. No new worker starts; the workers in flight finish their node. Once the \
             cause is fixed (and any node awaiting an acknowledgement acknowledged), detection resumes the chain and \
             claims the workers again: {trigger}"
        ));
    }
    let current = progress.active.or(chain.last().copied());
    Status {
        overall,
        target,
        current_phase: current.and_then(|j| job_label(j, "phase")).map(String::from),
        current_job: current.and_then(|j| j.metadata.name.clone()),
        seconds_in_phase: progress.active.and_then(job_started).map(|t| now.duration_since(t).as_secs()),
        nodes,
        jobs: chain
            .iter()
            .map(|j| JobStatus {
                name: j.metadata.name.clone().unwrap_or_default(),
                phase: job_label(j, "phase").map(String::from),
                node: job_node(j),
                state: state_name(job_state(j)).into(),
                started: job_started(j),
            })
            .collect(),
        last_error: progress.last_failed.map(|j| {
            let (reason, message) = failure(j).unwrap_or_default();
            LastError { job: j.metadata.name.clone().unwrap_or_default(), reason, message }
        }),
        awaiting_ack,
        kill_switch,
        in_flight_since: inputs.in_flight.map(|f| f.since),
        blocked,
        held,
        workers_in_flight,
        worker_claims_stopped,
        warnings: inputs.read_errors.clone(),
        next_steps,
    }
}

/// The target and the Jobs of the chain that status is about, oldest first. The target is the
/// in-flight record's, else the newest Job's, unless that chain is finished history. Without a
/// target, the Jobs of the newest chain (older chains are history).
fn which_chain<'a>(inputs: &Inputs<'a>) -> (Option<Version>, Vec<&'a Job>) {
    let mut jobs: Vec<&Job> = inputs.jobs.iter().collect();
    jobs.sort_by_key(|j| (job_started(j), j.metadata.name.clone()));
    let target =
        inputs.in_flight.map(|f| f.target).or_else(|| jobs.iter().rev().find_map(|j| job_target(j))).filter(
            |t| {
                // A finished chain whose nodes are all on target is history, not a target.
                inputs.in_flight.is_some()
                    || jobs.iter().any(|j| job_target(j) == Some(*t) && job_state(j) != JobState::Complete)
                    || inputs.nodes.iter().any(|n| version_of(n) != Some(*t))
            },
        );
    let chain_target = target.or_else(|| jobs.last().and_then(|j| job_target(j)));
    let chain =
        jobs.into_iter().filter(|j| chain_target.is_none() || job_target(j) == chain_target).collect();
    (target, chain)
}

/// Each node's state: the newest Job per node decides Current or Failed; otherwise Done when on
/// the target (or, without one, on the newest version), else Pending. Control planes first,
/// then in natural order.
fn node_states(
    inputs: &Inputs<'_>,
    settings: &Settings,
    target: Option<Version>,
    chain: &[&Job],
) -> Vec<NodeStatus> {
    let selector = settings.control_plane_selector();
    let mut latest_per_node: BTreeMap<String, &Job> = BTreeMap::new();
    for j in chain {
        if let Some(n) = job_node(j) {
            latest_per_node.insert(n, j);
        }
    }
    let claimed: Vec<String> = target
        .and_then(|t| inputs.claims.filter(|c| c.target == Some(t)))
        .map(|c| c.nodes())
        .unwrap_or_default();
    let newest_version = inputs.nodes.iter().filter_map(version_of).max();
    let mut nodes: Vec<NodeStatus> = inputs
        .nodes
        .iter()
        .map(|n| {
            let name = n.metadata.name.clone().unwrap_or_default();
            let version = version_of(n);
            let on = match target {
                Some(t) => version == Some(t),
                None => version.is_some() && version == newest_version,
            };
            let state = match latest_per_node.get(&name).map(|j| job_state(j)) {
                Some(JobState::Active) => NodeState::Current,
                _ if UpgradeStarted::of(n).is_some() => NodeState::AwaitingAck,
                Some(JobState::Failed) if !on => NodeState::Failed,
                // Claimed a moment ago: its Job is being created.
                _ if claimed.contains(&name) => NodeState::Current,
                _ if on => NodeState::Done,
                _ => NodeState::Pending,
            };
            NodeStatus {
                control_plane: selector.matches(n.metadata.labels.as_ref()),
                kubelet: kubelet_of(n).unwrap_or_else(|| "unknown".into()),
                name,
                state,
            }
        })
        .collect();
    nodes.sort_by(|a, b| b.control_plane.cmp(&a.control_plane).then_with(|| natural_cmp(&a.name, &b.name)));
    nodes
}

/// Where the chain's Jobs stand.
struct Progress<'a> {
    /// The newest Job still running.
    active: Option<&'a Job>,
    /// The newest Failed Job.
    last_failed: Option<&'a Job>,
    /// [`Progress::last_failed`] while nothing newer for the same phase and node has succeeded
    /// or runs, and nothing runs at all.
    failure_open: Option<&'a Job>,
}

impl<'a> Progress<'a> {
    fn of(chain: &[&'a Job]) -> Self {
        let active = chain.iter().rev().find(|j| job_state(j) == JobState::Active).copied();
        let last_failed = chain.iter().rev().find(|j| job_state(j) == JobState::Failed).copied();
        let failure_open = last_failed.filter(|f| {
            let key = |j: &Job| (job_label(j, "phase").map(String::from), job_node(j));
            !chain.iter().any(|j| {
                key(j) == key(f) && job_started(j) > job_started(f) && job_state(j) != JobState::Failed
            }) && active.is_none()
        });
        Self { active, last_failed, failure_open }
    }
}

/// What [`next_steps`] needs beyond the Jobs.
struct Facts<'a> {
    target: Option<Version>,
    kill_switch: Option<&'a str>,
    blocked: Option<bool>,
    off_target: bool,
    awaiting: &'a [AwaitingAck],
}

/// What an operator should do next, most urgent first; "Nothing to do." when nothing.
fn next_steps(inputs: &Inputs<'_>, ns: &str, progress: &Progress<'_>, facts: &Facts<'_>) -> Vec<String> {
    let trigger = format!(
        "kubectl -n {ns} create job --from=cronjob/{} k8s-version-check-manual-$(date +%s)",
        crate::manifests::DETECTION_CRONJOB
    );
    let mut next = Vec::new();
    if let Some(reason) = facts.kill_switch {
        next.push(format!(
            "The kill switch is present (reason: {reason}); no phase starts. To resume: kubectl -n {ns} delete \
             configmap {}; then trigger detection, which resumes the chain where it stopped: {trigger}",
            crate::killswitch::NAME
        ));
    }
    for a in facts.awaiting {
        let node = &a.node;
        next.push(format!(
            "Node {node} awaits an acknowledgement: {}. It stays cordoned and nothing resumes until then. Find \
             out why (the failed Job's log; on the node: journalctl -u kubelet, /var/log/apt/history.log), fix \
             it, then acknowledge: {} (or: {}); then trigger detection, which retries {node}: {trigger}",
            a.started.describe(),
            a.command,
            crate::resume::ack_kubectl(node)
        ));
    }
    if let Some(j) = progress.active {
        let name = j.metadata.name.as_deref().unwrap_or_default();
        next.push(format!("Wait for {name}; follow it with: kubectl -n {ns} logs -f job/{name}"));
    }
    if let Some(f) = progress.failure_open {
        let name = f.metadata.name.as_deref().unwrap_or_default();
        let read = format!(
            "Read the failed Job's log: kubectl -n {ns} logs job/{name} (and kubectl -n {ns} describe job/{name}); fix \
             the cause."
        );
        let phase = job_label(f, "phase").unwrap_or_default();
        // Detection resumes the chain at the failed step (crate::resume::decide); by hand it is
        // "delete, then apply the same Job again". A node awaiting an acknowledgement is said
        // above: neither retries it before the acknowledgement.
        let node = job_node(f);
        let awaits = node.as_ref().is_some_and(|n| facts.awaiting.iter().any(|a| &a.node == n));
        let retry = match (phase, facts.target) {
            ("preflight", _) | (_, None) => format!("Then detection re-spawns it: {trigger}"),
            (phase, Some(t)) => format!(
                "Then trigger detection, which resumes the chain at this step: {trigger}; or re-run only this \
                 phase now: kubectl -n {ns} delete job {name} --cascade=foreground && k8s-upgrade-chain render \
                 --phase {phase}{} --version {t} | kubectl apply -f -",
                node.as_ref().map(|n| format!(" --node {n}")).unwrap_or_default()
            ),
        };
        if !awaits {
            next.push(format!("{read} {retry}"));
        }
    }
    if facts.blocked == Some(true) {
        next.push(
            "The upgrade is blocked by the compatibility gate: see the reasons with k8s-upgrade-chain report --dry-run"
                .into(),
        );
    }
    let idle = progress.active.is_none();
    if facts.kill_switch.is_none()
        && idle
        && progress.failure_open.is_none()
        && facts.awaiting.is_empty()
        && facts.off_target
    {
        next.push(format!(
            "Nothing is running but nodes are not on the target: trigger detection, which resumes the chain at \
             the next pending step: {trigger}"
        ));
    }
    if idle && !facts.off_target && inputs.in_flight.is_some() {
        next.push(format!(
            "Every node is on target and no chain Job runs, but the in-flight record remains on namespace {ns}: \
             detection's reconcile clears it, or see docs/runbook.md (Clearing leaked state)"
        ));
    }
    if next.is_empty() {
        next.push("Nothing to do.".into());
    }
    next
}

/// The text form of a status (pure).
pub fn text(s: &Status) -> String {
    let overall = match s.overall {
        Overall::Running => "running",
        Overall::Halted => "HALTED (kill switch)",
        Overall::AwaitingAck => "STOPPED: a node's failed upgrade awaits an acknowledgement",
        Overall::Failed => "FAILED",
        Overall::Stopped => "stopped (nodes off target, nothing running)",
        Overall::Idle => "idle",
    };
    let mut out = format!("chain:   {overall}\n");
    out.push_str(&format!("target:  {}\n", s.target.map(|t| t.to_string()).unwrap_or_else(|| "none".into())));
    if let Some(p) = &s.current_phase {
        let time = s
            .seconds_in_phase
            .map(|t| {
                format!(" for {}", crate::duration::format(std::time::Duration::from_secs(t.max(0) as u64)))
            })
            .unwrap_or_default();
        out.push_str(&format!("phase:   {p} ({}){time}\n", s.current_job.as_deref().unwrap_or("-")));
    }
    if !s.workers_in_flight.is_empty() {
        out.push_str(&format!(
            "workers: {} in flight: {}\n",
            s.workers_in_flight.len(),
            s.workers_in_flight.join(", ")
        ));
    }
    if let Some(why) = &s.worker_claims_stopped {
        out.push_str(&format!("workers: claims stopped: {why}\n"));
    }
    if let Some(since) = s.in_flight_since {
        out.push_str(&format!("in flight since {since}\n"));
    }
    if let Some(b) = s.blocked {
        out.push_str(&format!("gauges:  blocked={} held={}\n", b as u8, s.held.unwrap_or(false) as u8));
    }
    out.push_str("nodes:\n");
    for n in &s.nodes {
        let state = match n.state {
            NodeState::Done => "done",
            NodeState::Current => "CURRENT",
            NodeState::Pending => "pending",
            NodeState::Failed => "FAILED",
            NodeState::AwaitingAck => "AWAITING ACK",
        };
        let role = if n.control_plane { "control-plane" } else { "worker" };
        out.push_str(&format!("  {:<24} {:<14} {:<10} {state}\n", n.name, role, n.kubelet));
    }
    if !s.jobs.is_empty() {
        out.push_str("jobs:\n");
        for j in &s.jobs {
            out.push_str(&format!("  {:<52} {}\n", j.name, j.state));
        }
    }
    if let Some(e) = &s.last_error {
        out.push_str(&format!("last error: {} failed: {}: {}\n", e.job, e.reason, e.message));
    }
    for a in &s.awaiting_ack {
        out.push_str(&format!(
            "awaiting acknowledgement: {} ({}); acknowledge with: {}\n",
            a.node,
            a.started.describe(),
            a.command
        ));
    }
    for w in &s.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out.push_str("next:\n");
    for step in &s.next_steps {
        out.push_str(&format!("  - {step}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::batch::v1::{JobCondition, JobStatus as K8sJobStatus},
        apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    };

    use super::*;
    use crate::{fixtures::node, plan::Phase};

    const T0: &str = "2026-11-21T10:00:00Z";

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// A chain Job as the template renders it: labels, target-node annotation, start time.
    struct JobBuilder(Job);

    fn job(phase: Phase, node: Option<&str>) -> JobBuilder {
        let target: Version = "1.34.2".parse().unwrap();
        let mut annotations = BTreeMap::new();
        if let Some(n) = node {
            annotations.insert(TARGET_NODE_ANNOTATION.to_string(), n.to_string());
        }
        JobBuilder(Job {
            metadata: ObjectMeta {
                name: Some(crate::plan::job_name(phase, target, node)),
                labels: Some(BTreeMap::from([
                    ("app".to_string(), "k8s-upgrade-chain".to_string()),
                    ("phase".to_string(), phase.as_str().to_string()),
                    ("target-version".to_string(), target.label()),
                ])),
                annotations: Some(annotations),
                ..Default::default()
            },
            status: Some(K8sJobStatus { start_time: Some(Time(ts(T0))), ..Default::default() }),
            ..Default::default()
        })
    }

    impl JobBuilder {
        fn started(mut self, at: &str) -> Self {
            self.0.status.as_mut().unwrap().start_time = Some(Time(ts(at)));
            self
        }
        fn condition(mut self, type_: &str, reason: &str, message: &str) -> Self {
            self.0.status.as_mut().unwrap().conditions.get_or_insert_with(Vec::new).push(JobCondition {
                type_: type_.into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(message.into()),
                ..Default::default()
            });
            self
        }
        fn complete(self) -> Self {
            self.condition("Complete", "", "")
        }
        fn failed(self, reason: &str, message: &str) -> Self {
            self.condition("Failed", reason, message)
        }
        fn build(self) -> Job {
            self.0
        }
    }

    /// master and node1 upgraded, node2 and node3 still on 1.34.1.
    fn half_upgraded() -> Vec<Node> {
        vec![
            node("k8s-master").control_plane().kubelet("v1.34.2").build(),
            node("k8s-node1").kubelet("v1.34.2").build(),
            node("k8s-node2").kubelet("v1.34.1").build(),
            node("k8s-node3").kubelet("v1.34.1").build(),
        ]
    }

    fn done_so_far() -> Vec<Job> {
        vec![
            job(Phase::Preflight, None).started("2026-11-21T09:00:00Z").complete().build(),
            job(Phase::Master, Some("k8s-master")).started("2026-11-21T09:10:00Z").complete().build(),
            job(Phase::Worker, Some("k8s-node1")).started("2026-11-21T09:30:00Z").complete().build(),
        ]
    }

    fn summarize_with<'a>(jobs: &'a [Job], nodes: &'a [Node], extra: impl FnOnce(&mut Inputs<'a>)) -> Status {
        let mut inputs = Inputs { jobs, nodes, now: ts("2026-11-21T10:05:00Z"), ..Default::default() };
        extra(&mut inputs);
        summarize(&inputs, &Settings::default())
    }

    fn states(s: &Status) -> Vec<(&str, NodeState)> {
        s.nodes.iter().map(|n| (n.name.as_str(), n.state)).collect()
    }

    #[test]
    fn mid_chain_shows_each_node_and_the_running_phase() {
        let mut jobs = done_so_far();
        jobs.push(job(Phase::Worker, Some("k8s-node2")).started(T0).build());
        let s = summarize_with(&jobs, &half_upgraded(), |_| {});
        assert_eq!(s.overall, Overall::Running);
        assert_eq!(s.target, Some("1.34.2".parse().unwrap()));
        assert_eq!(
            states(&s),
            [
                ("k8s-master", NodeState::Done),
                ("k8s-node1", NodeState::Done),
                ("k8s-node2", NodeState::Current),
                ("k8s-node3", NodeState::Pending)
            ]
        );
        assert_eq!(s.current_phase.as_deref(), Some("worker"));
        assert_eq!(s.current_job.as_deref(), Some("k8s-upgrade-worker-1-34-2-k8s-node2"));
        assert_eq!(s.seconds_in_phase, Some(300));
        assert!(
            s.next_steps[0].contains("logs -f job/k8s-upgrade-worker-1-34-2-k8s-node2"),
            "{:?}",
            s.next_steps
        );
        let t = text(&s);
        assert!(t.contains("phase:   worker (k8s-upgrade-worker-1-34-2-k8s-node2) for 5m"), "{t}");
    }

    #[test]
    fn with_workers_in_parallel_every_current_node_is_shown() {
        let mut nodes = half_upgraded();
        nodes.push(node("k8s-node4").kubelet("v1.34.1").build());
        let mut jobs = done_so_far();
        jobs.push(job(Phase::Worker, Some("k8s-node2")).started(T0).build());
        // k8s-node3 was claimed a moment ago: its Job is not there yet.
        let mut claims = crate::waves::Claims {
            target: Some("1.34.2".parse().unwrap()),
            in_flight: [("k8s-node2", T0), ("k8s-node3", T0)]
                .into_iter()
                .map(|(n, t)| (n.into(), ts(t)))
                .collect(),
            stopped: None,
        };
        let s = summarize_with(&jobs, &nodes, |i| i.claims = Some(&claims));
        assert_eq!(
            states(&s)[2..],
            [
                ("k8s-node2", NodeState::Current),
                ("k8s-node3", NodeState::Current),
                ("k8s-node4", NodeState::Pending)
            ]
        );
        assert_eq!(s.workers_in_flight, ["k8s-node2", "k8s-node3"]);
        let t = text(&s);
        assert!(t.contains("workers: 2 in flight: k8s-node2, k8s-node3"), "{t}");
        // Claims stopped: status says why and how to resume.
        claims.stopped = Some("worker k8s-node3 failed: apt-get".into());
        let s = summarize_with(&jobs, &nodes, |i| i.claims = Some(&claims));
        let t = text(&s);
        assert!(t.contains("workers: claims stopped: worker k8s-node3 failed: apt-get"), "{t}");
        let step = s.next_steps.last().unwrap();
        assert!(
            step.contains("No new worker starts") && step.contains("create job --from=cronjob/"),
            "{step}"
        );
    }

    #[test]
    fn a_failed_job_marks_its_node_and_says_how_to_retry() {
        let mut jobs = done_so_far();
        jobs.push(
            job(Phase::Worker, Some("k8s-node2"))
                .started(T0)
                .failed("BackoffLimitExceeded", "Job has reached the specified backoff limit")
                .build(),
        );
        let s = summarize_with(&jobs, &half_upgraded(), |_| {});
        assert_eq!(s.overall, Overall::Failed);
        assert_eq!(states(&s)[2], ("k8s-node2", NodeState::Failed));
        assert_eq!(states(&s)[3], ("k8s-node3", NodeState::Pending));
        let e = s.last_error.as_ref().unwrap();
        assert_eq!(e.job, "k8s-upgrade-worker-1-34-2-k8s-node2");
        assert_eq!(e.reason, "BackoffLimitExceeded");
        assert!(e.message.contains("backoff limit"));
        assert_eq!(s.seconds_in_phase, None);
        assert!(
            s.next_steps
                .iter()
                .any(|n| n.contains("kubectl -n k8s-upgrade logs job/k8s-upgrade-worker-1-34-2-k8s-node2"))
        );
        assert!(
            s.next_steps.iter().any(|n| n.contains(
                "delete job k8s-upgrade-worker-1-34-2-k8s-node2 --cascade=foreground && k8s-upgrade-chain render \
                 --phase worker --node k8s-node2 --version 1.34.2 | kubectl apply -f -"
            )),
            "{:?}",
            s.next_steps
        );
    }

    #[test]
    fn a_node_whose_own_upgrade_failed_shows_the_acknowledgement_command() {
        let mut jobs = done_so_far();
        jobs.push(
            job(Phase::Worker, Some("k8s-node2"))
                .started(T0)
                .failed("BackoffLimitExceeded", "Job has reached the specified backoff limit")
                .build(),
        );
        let mut nodes = half_upgraded();
        nodes[2] = node("k8s-node2")
            .kubelet("v1.34.1")
            .cordoned()
            .annotation(crate::resume::UPGRADE_STARTED_ANNOTATION, "worker 1.34.2 2026-11-21T09:59:00Z")
            .build();
        let s = summarize_with(&jobs, &nodes, |_| {});
        assert_eq!(s.overall, Overall::AwaitingAck);
        assert_eq!(states(&s)[2], ("k8s-node2", NodeState::AwaitingAck));
        assert_eq!(s.awaiting_ack.len(), 1);
        assert_eq!(s.awaiting_ack[0].command, "k8s-upgrade-chain ack k8s-node2");
        let steps = s.next_steps.join("\n");
        assert!(steps.contains("then acknowledge: k8s-upgrade-chain ack k8s-node2"), "{steps}");
        assert!(
            steps.contains("kubectl annotate node k8s-node2 k8s-upgrade-chain/upgrade-started-"),
            "{steps}"
        );
        assert!(
            steps.contains("its upgrade to v1.34.2 (worker phase) started at 2026-11-21T09:59:00Z"),
            "{steps}"
        );
        // No "re-run it" for a node nothing may retry before the acknowledgement.
        assert!(!steps.contains("render --phase worker --node k8s-node2"), "{steps}");
        let t = text(&s);
        assert!(t.contains("AWAITING ACK"), "{t}");
        assert!(t.contains("acknowledge with: k8s-upgrade-chain ack k8s-node2"), "{t}");
        // While its Job runs again (after the acknowledgement), it is current, not awaiting.
        jobs.push(job(Phase::Worker, Some("k8s-node2")).started("2026-11-21T10:01:00Z").build());
        let s = summarize_with(&jobs, &nodes, |_| {});
        assert_eq!(states(&s)[2], ("k8s-node2", NodeState::Current));
        assert!(s.awaiting_ack.is_empty());
    }

    #[test]
    fn a_failed_master_job_is_shown_on_the_master() {
        let jobs = vec![
            job(Phase::Preflight, None).started("2026-11-21T09:00:00Z").complete().build(),
            job(Phase::Master, Some("k8s-master")).started(T0).failed("DeadlineExceeded", "too slow").build(),
        ];
        let nodes = crate::fixtures::cluster(1, 2, "v1.34.1");
        let s = summarize_with(&jobs, &nodes, |_| {});
        assert_eq!(s.overall, Overall::Failed);
        assert_eq!(
            states(&s),
            [
                ("k8s-master", NodeState::Failed),
                ("k8s-node1", NodeState::Pending),
                ("k8s-node2", NodeState::Pending)
            ]
        );
        assert_eq!(s.current_phase.as_deref(), Some("master"));
    }

    #[test]
    fn a_failed_preflight_is_left_to_detection() {
        let jobs = vec![job(Phase::Preflight, None).failed("BackoffLimitExceeded", "alerts firing").build()];
        let s = summarize_with(&jobs, &crate::fixtures::cluster(1, 2, "v1.34.1"), |_| {});
        assert_eq!(s.overall, Overall::Failed);
        assert!(
            s.next_steps
                .iter()
                .any(|n| n.contains("detection re-spawns it")
                    && n.contains("--from=cronjob/k8s-version-check")),
            "{:?}",
            s.next_steps
        );
        assert!(s.nodes.iter().all(|n| n.state == NodeState::Pending));
    }

    #[test]
    fn a_respawned_job_supersedes_its_failure() {
        let mut jobs = done_so_far();
        jobs.push(
            job(Phase::Worker, Some("k8s-node2"))
                .started("2026-11-21T09:40:00Z")
                .failed("BackoffLimitExceeded", "x")
                .build(),
        );
        // Same name after delete-and-respawn would replace it; a newer active Job for the node wins.
        jobs.push(job(Phase::Worker, Some("k8s-node2")).started(T0).build());
        let s = summarize_with(&jobs, &half_upgraded(), |_| {});
        assert_eq!(s.overall, Overall::Running);
        assert_eq!(states(&s)[2], ("k8s-node2", NodeState::Current));
        assert!(s.last_error.is_some(), "the old failure is still reported as history");
        assert!(!s.next_steps.iter().any(|n| n.contains("re-run it")));
    }

    #[test]
    fn kill_switch_halts_and_says_how_to_resume() {
        let ks = KillSwitch::Present { reason: "storage storm".into() };
        let s = summarize_with(&done_so_far(), &half_upgraded(), |i| i.kill_switch = Some(&ks));
        assert_eq!(s.overall, Overall::Halted);
        assert_eq!(s.kill_switch.as_deref(), Some("storage storm"));
        assert!(s.next_steps[0].contains("delete configmap k8s-upgrade-killswitch"), "{:?}", s.next_steps);
        assert!(s.next_steps[0].contains("create job --from=cronjob/k8s-version-check"));
    }

    #[test]
    fn nothing_running_with_nodes_off_target_says_trigger_detection() {
        let s = summarize_with(&done_so_far(), &half_upgraded(), |_| {});
        assert_eq!(s.overall, Overall::Stopped);
        assert_eq!(
            states(&s),
            [
                ("k8s-master", NodeState::Done),
                ("k8s-node1", NodeState::Done),
                ("k8s-node2", NodeState::Pending),
                ("k8s-node3", NodeState::Pending)
            ]
        );
        assert!(s.next_steps.iter().any(|n| n.contains("trigger detection")), "{:?}", s.next_steps);
        assert_eq!(s.current_phase.as_deref(), Some("worker"), "the newest Job's phase");
    }

    #[test]
    fn no_jobs_and_mixed_versions_marks_the_older_nodes_pending() {
        let s = summarize_with(&[], &half_upgraded(), |_| {});
        assert_eq!(s.target, None);
        assert_eq!(s.overall, Overall::Stopped);
        assert_eq!(states(&s)[2].1, NodeState::Pending);
        assert_eq!(states(&s)[0].1, NodeState::Done);
    }

    #[test]
    fn a_finished_chain_is_idle() {
        let mut jobs = done_so_far();
        jobs.push(job(Phase::Worker, Some("k8s-node2")).complete().build());
        jobs.push(job(Phase::Postflight, None).complete().build());
        let nodes = crate::fixtures::cluster(1, 2, "v1.34.2");
        let s = summarize_with(&jobs, &nodes, |_| {});
        assert_eq!(s.overall, Overall::Idle);
        assert_eq!(s.target, None, "a completed chain is history");
        assert!(states(&s).iter().all(|(_, st)| *st == NodeState::Done));
        assert_eq!(s.next_steps, ["Nothing to do."]);
    }

    #[test]
    fn an_old_chains_failure_does_not_taint_a_finished_one() {
        let mut old = job(Phase::Worker, Some("k8s-node2"))
            .started("2026-11-01T00:00:00Z")
            .failed("DeadlineExceeded", "x")
            .build();
        old.metadata.name = Some("k8s-upgrade-worker-1-34-1-k8s-node2".into());
        old.metadata.labels.as_mut().unwrap().insert("target-version".into(), "1-34-1".into());
        let jobs = vec![old, job(Phase::Postflight, None).complete().build()];
        let s = summarize_with(&jobs, &crate::fixtures::cluster(1, 2, "v1.34.2"), |_| {});
        assert_eq!(s.overall, Overall::Idle);
        assert!(s.last_error.is_none());
        assert_eq!(s.jobs.len(), 1);
    }

    #[test]
    fn leaked_in_flight_record_is_pointed_out() {
        let nodes = crate::fixtures::cluster(1, 2, "v1.34.2");
        let rec = InFlight {
            since: ts("2026-11-20T10:00:00Z"),
            target: "1.34.2".parse().unwrap(),
            snapshot_path: None,
        };
        let s = summarize_with(&[], &nodes, |i| i.in_flight = Some(&rec));
        assert_eq!(s.overall, Overall::Idle);
        assert_eq!(s.in_flight_since, Some(rec.since));
        assert!(s.next_steps.iter().any(|n| n.contains("Clearing leaked state")), "{:?}", s.next_steps);
    }

    #[test]
    fn pushgateway_gauges_show_blocked_and_read_errors_are_warnings() {
        let scrape = Scrape::parse(
            "k8s_upgrade_blocked{instance=\"\",job=\"k8s-version-upgrade\"} 1\n\
             k8s_upgrade_held{instance=\"\",job=\"k8s-version-upgrade\"} 0\n",
        );
        let nodes = crate::fixtures::cluster(1, 1, "v1.34.1");
        let s = summarize_with(&[], &nodes, |i| {
            i.metrics = Some(&scrape);
            i.read_errors = vec!["failed to read the kill switch".into()];
        });
        assert_eq!((s.blocked, s.held), (Some(true), Some(false)));
        assert!(s.next_steps.iter().any(|n| n.contains("report --dry-run")));
        assert!(text(&s).contains("warning: failed to read the kill switch"));
    }

    #[test]
    fn jobs_of_an_older_target_are_ignored() {
        let mut jobs = done_so_far();
        let mut old = job(Phase::Worker, Some("k8s-node3"))
            .started("2026-10-01T00:00:00Z")
            .failed("BackoffLimitExceeded", "old")
            .build();
        old.metadata.name = Some("k8s-upgrade-worker-1-34-1-k8s-node3".into());
        old.metadata.labels.as_mut().unwrap().insert("target-version".into(), "1-34-1".into());
        jobs.insert(0, old);
        let s = summarize_with(&jobs, &half_upgraded(), |_| {});
        assert_eq!(states(&s)[3], ("k8s-node3", NodeState::Pending));
        assert!(s.last_error.is_none());
        assert!(s.jobs.iter().all(|j| j.name.contains("1-34-2")));
    }
}
