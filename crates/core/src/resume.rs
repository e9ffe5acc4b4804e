//! Where a stopped chain resumes, which nodes wait for a human, and whether a phase still has
//! work (pure).
//!
//! Detection reads the chain's Jobs and the nodes and asks [`decide`] what to do: leave a
//! running chain alone, stop for a node whose own upgrade failed until an operator
//! acknowledges it, or spawn the Job of the next pending step. Everything it needs is in the
//! cluster:
//!
//! - Each chain Job is named after its step and target ([`crate::plan::job_name`]); its
//!   conditions say Active, Complete or Failed. A halt or a refusal also ends Complete (exit 0),
//!   so a phase writes how it ended on its own Job ([`OUTCOME_ANNOTATION`]: `succeeded`,
//!   `refused`, `halted`, `failed`).
//! - A node phase writes [`UPGRADE_STARTED_ANNOTATION`] on its node right before the node's
//!   own upgrade (`update_k8s.sh`) starts, and removes it once the node is Ready on the target.
//!   Found while no chain Job runs, it means that upgrade failed or was cut short (a deadline,
//!   a killed pod): the node stays cordoned, and nothing retries it (not detection, not the
//!   Job's own pod retry, not a hand-applied Job) until an operator acknowledges it with
//!   `k8s-upgrade-chain ack NODE`, which removes the annotation. It lives on the node, not on
//!   the Job, so it survives the Job's deletion (its TTL, a cleanup). A failure before that
//!   point (alerts, the SSH check, the drain, the kill switch) leaves no annotation: the node
//!   was uncordoned, and the chain resumes at that step unattended.
//!
//! The resume point comes from the nodes' versions, not from which Jobs happen to exist:
//! preflight until a preflight of the target completed, then the first node off target in
//! chain order (control planes, the first with `kubeadm upgrade apply`, then workers), then
//! postflight until it completed. A change that runs several workers at once extends
//! [`decide`] to return more than one step; the rules per node stay the same.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::{batch::v1::Job, core::v1::Node};
use serde::Serialize;

use crate::{
    job::{JobState, job_state},
    metrics::PhaseOutcome,
    plan::{NodeView, Phase, Role, Snapshot, Step},
    version::Version,
};

/// Node annotation written before a node's own upgrade starts and removed once the node is
/// Ready on the target: `<phase> <target> <RFC 3339 time>`, e.g.
/// `worker 1.34.2 2026-11-30T10:00:00Z`.
pub const UPGRADE_STARTED_ANNOTATION: &str = "k8s-upgrade-chain/upgrade-started";

/// Job annotation with the phase's outcome (`succeeded`, `refused`, `halted`, `failed`), written
/// by the phase on its own Job when it ends.
pub const OUTCOME_ANNOTATION: &str = "k8s-upgrade-chain/outcome";

/// A node's own upgrade started and has not been seen through: what
/// [`UPGRADE_STARTED_ANNOTATION`] holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "format")]
pub enum UpgradeStarted {
    /// As the chain writes it.
    Recorded {
        /// The phase that started it (`master`, `control-plane` or `worker`).
        phase: Phase,
        /// The version it was upgrading to.
        target: Version,
        /// When it started.
        at: Timestamp,
    },
    /// Present but not in the chain's format (written by hand): it still stops the chain.
    Unreadable {
        /// The annotation's value.
        value: String,
    },
}

impl UpgradeStarted {
    /// The record of an upgrade by `phase` to `target` starting `at`.
    pub fn recorded(phase: Phase, target: Version, at: Timestamp) -> Self {
        UpgradeStarted::Recorded { phase, target, at }
    }

    /// Reads the annotation's value; anything else than the chain's format is
    /// [`UpgradeStarted::Unreadable`] (never ignored: fail closed).
    pub fn parse(value: &str) -> Self {
        let words: Vec<&str> = value.split_whitespace().collect();
        let recorded = match words.as_slice() {
            [phase, target, at] => match (phase.parse::<Phase>(), target.parse::<Version>(), at.parse()) {
                (Ok(phase), Ok(target), Ok(at)) if phase.targets_a_node() => {
                    Some(UpgradeStarted::Recorded { phase, target, at })
                }
                _ => None,
            },
            _ => None,
        };
        recorded.unwrap_or_else(|| UpgradeStarted::Unreadable { value: value.to_string() })
    }

    /// The annotation's value (the format [`UpgradeStarted::parse`] reads back).
    pub fn value(&self) -> String {
        match self {
            UpgradeStarted::Recorded { phase, target, at } => format!("{phase} {target} {at}"),
            UpgradeStarted::Unreadable { value } => value.clone(),
        }
    }

    /// The record on `node`, if it carries one.
    pub fn of(node: &Node) -> Option<Self> {
        node.metadata.annotations.as_ref()?.get(UPGRADE_STARTED_ANNOTATION).map(|v| Self::parse(v))
    }

    /// The target version, when readable.
    pub fn target(&self) -> Option<Version> {
        match self {
            UpgradeStarted::Recorded { target, .. } => Some(*target),
            UpgradeStarted::Unreadable { .. } => None,
        }
    }

    /// One line for messages: `the upgrade to v1.34.2 started at 2026-...`.
    pub fn describe(&self) -> String {
        match self {
            UpgradeStarted::Recorded { phase, target, at } => {
                format!("its upgrade to v{target} ({phase} phase) started at {at} and did not finish")
            }
            UpgradeStarted::Unreadable { value } => {
                format!("it carries {UPGRADE_STARTED_ANNOTATION}={value:?} (not written by the chain)")
            }
        }
    }
}

/// The command an operator runs to acknowledge `node`'s failed upgrade.
pub fn ack_command(node: &str) -> String {
    format!("k8s-upgrade-chain ack {node}")
}

/// The same with kubectl only.
pub fn ack_kubectl(node: &str) -> String {
    format!("kubectl annotate node {node} {UPGRADE_STARTED_ANNOTATION}-")
}

/// How a phase recorded its end on its Job, if it did.
pub fn outcome_of(job: &Job) -> Option<PhaseOutcome> {
    job.metadata.annotations.as_ref()?.get(OUTCOME_ANNOTATION).and_then(|v| PhaseOutcome::parse(v))
}

/// A chain Job as [`decide`] reads it: from its labels (`phase`, `target-version`) and its
/// `k8s-upgrade-chain/target-node` annotation, as the template writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainJob {
    /// Job name.
    pub name: String,
    /// Its phase.
    pub phase: Phase,
    /// Its target version.
    pub target: Version,
    /// Active, Complete or Failed.
    pub state: JobState,
    /// The outcome the phase recorded.
    pub outcome: Option<PhaseOutcome>,
}

impl ChainJob {
    /// Reads a chain Job; `None` for a Job without the chain's labels.
    pub fn read(job: &Job) -> Option<Self> {
        let labels = job.metadata.labels.as_ref()?;
        let phase: Phase = labels.get("phase")?.parse().ok()?;
        let target: Version = labels.get("target-version")?.replace('-', ".").parse().ok()?;
        Some(ChainJob {
            name: job.metadata.name.clone()?,
            phase,
            target,
            state: job_state(job),
            outcome: outcome_of(job),
        })
    }
}

/// The existing Job of the step [`decide`] spawns again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Previous {
    /// Its name (the step's Job name).
    pub job: String,
    /// Complete or Failed (never Active: a running chain is left alone).
    #[serde(serialize_with = "state_str")]
    pub state: JobState,
    /// How the phase said it ended.
    #[serde(serialize_with = "outcome_str")]
    pub outcome: Option<PhaseOutcome>,
}

fn state_str<S: serde::Serializer>(s: &JobState, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(match s {
        JobState::Active => "active",
        JobState::Complete => "complete",
        JobState::Failed => "failed",
    })
}

fn outcome_str<S: serde::Serializer>(o: &Option<PhaseOutcome>, ser: S) -> Result<S::Ok, S::Error> {
    match o {
        Some(o) => ser.serialize_str(o.as_str()),
        None => ser.serialize_none(),
    }
}

impl Previous {
    fn of(j: &ChainJob) -> Self {
        Previous { job: j.name.clone(), state: j.state, outcome: j.outcome }
    }

    /// `k8s-upgrade-worker-...: failed` / `...: complete (halted)`.
    pub fn describe(&self) -> String {
        let state = match self.state {
            JobState::Active => "active",
            JobState::Complete => "complete",
            JobState::Failed => "failed",
        };
        match self.outcome {
            Some(o) if self.state == JobState::Complete => format!("{}: {state} ({})", self.job, o.as_str()),
            _ => format!("{}: {state}", self.job),
        }
    }
}

/// A node whose own upgrade failed and waits for an acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Awaiting {
    /// The node.
    pub node: String,
    /// What its annotation says.
    pub started: UpgradeStarted,
}

/// What detection does about the chain of one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "decision")]
pub enum Decision {
    /// A chain Job runs (of any target): leave it alone.
    Running {
        /// The running Job.
        job: String,
    },
    /// These nodes' own upgrades failed and nobody acknowledged them: spawn nothing, alert.
    AwaitingAck {
        /// The nodes, control planes first, in natural order.
        nodes: Vec<Awaiting>,
    },
    /// Spawn the Job of `step`, replacing its Complete or Failed Job if there is one.
    Spawn {
        /// The step.
        step: Step,
        /// Its existing Job.
        previous: Option<Previous>,
    },
    /// Every node is on the target and the target's postflight completed.
    Finished,
}

impl Decision {
    /// One line for logs and Slack.
    pub fn describe(&self) -> String {
        match self {
            Decision::Running { job } => format!("chain Job {job} is running; nothing to do"),
            Decision::AwaitingAck { nodes } => {
                let list: Vec<String> = nodes
                    .iter()
                    .map(|a| format!("{} ({}; `{}`)", a.node, a.started.describe(), ack_command(&a.node)))
                    .collect();
                format!(
                    "not resuming: {} node(s) await an acknowledgement of their failed upgrade: {}",
                    nodes.len(),
                    list.join("; ")
                )
            }
            Decision::Spawn { step, previous: None } => format!("next step: {step}"),
            Decision::Spawn { step, previous: Some(p) } => {
                format!("next step: {step} (again; its Job {})", p.describe())
            }
            Decision::Finished => "the chain is finished".into(),
        }
    }
}

/// The nodes that carry [`UPGRADE_STARTED_ANNOTATION`], control planes first, natural order.
pub fn awaiting(snap: &Snapshot) -> Vec<Awaiting> {
    snap.nodes()
        .filter_map(|n| n.upgrade_started.clone().map(|started| Awaiting { node: n.name.clone(), started }))
        .collect()
}

/// The step that upgrades `node`: `master` for the first control plane, `control-plane` for
/// the others, `worker` for workers.
pub fn step_for(snap: &Snapshot, node: &NodeView) -> Step {
    match node.role {
        Role::ControlPlane if node.name == snap.first_control_plane().name => Step::master(&node.name),
        Role::ControlPlane => Step::control_plane(&node.name),
        Role::Worker => Step::worker(&node.name),
    }
}

/// What detection does about the chain of `target`, from the chain Jobs (every Job labelled
/// `app=k8s-upgrade-chain`, of any target) and the nodes. See the module doc.
pub fn decide(snap: &Snapshot, target: Version, jobs: &[Job]) -> Decision {
    // Anything running: one chain at a time (a running Job of another target included).
    let mut running: Vec<String> = jobs
        .iter()
        .filter(|j| job_state(j) == JobState::Active)
        .filter_map(|j| j.metadata.name.clone())
        .collect();
    running.sort();
    if let Some(job) = running.into_iter().next() {
        return Decision::Running { job };
    }
    let nodes = awaiting(snap);
    if !nodes.is_empty() {
        return Decision::AwaitingAck { nodes };
    }
    let chain: BTreeMap<String, ChainJob> = jobs
        .iter()
        .filter_map(ChainJob::read)
        .filter(|j| j.target == target)
        .map(|j| (j.name.clone(), j))
        .collect();
    let previous = |step: &Step| chain.get(&step.job_name(target)).map(Previous::of);
    let preflight = chain.get(&Step::Preflight.job_name(target));
    let advanced = chain.values().any(|j| j.phase != Phase::Preflight);
    let preflight_done = preflight.is_some_and(|p| {
        p.state == JobState::Complete
            && match p.outcome {
                Some(o) => o == PhaseOutcome::Succeeded,
                // Written before the outcome annotation existed: the chain advanced past it.
                None => advanced,
            }
    });
    if !preflight_done {
        return Decision::Spawn { step: Step::Preflight, previous: previous(&Step::Preflight) };
    }
    if let Some(node) = snap.off_target(target).next() {
        let step = step_for(snap, node);
        let previous = previous(&step);
        return Decision::Spawn { step, previous };
    }
    let postflight = chain.get(&Step::Postflight.job_name(target));
    match postflight {
        Some(p)
            if p.state == JobState::Complete && matches!(p.outcome, None | Some(PhaseOutcome::Succeeded)) =>
        {
            Decision::Finished
        }
        _ => Decision::Spawn { step: Step::Postflight, previous: previous(&Step::Postflight) },
    }
}

/// Whether a step still has work on this snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepWork {
    /// Run the phase.
    Todo,
    /// Its work is done: the phase changes nothing (no annotation, metric or Event), only
    /// passes the chain on when the chain still has work ([`chain_has_work`]).
    Done(String),
}

/// Whether `step` has work: preflight has none when every node is already on the target;
/// a node phase has none when its node is on the target. A node awaiting an acknowledgement
/// always has: its phase refuses to touch it. Postflight always runs (its work is to verify).
pub fn step_work(step: &Step, snap: &Snapshot, target: Version) -> StepWork {
    match step {
        Step::Preflight => {
            let off = snap.off_target(target).next().is_some();
            let awaiting = snap.nodes().any(|n| n.upgrade_started.is_some());
            if off || awaiting {
                StepWork::Todo
            } else {
                StepWork::Done(format!("every node is already on v{target}: nothing to prepare"))
            }
        }
        Step::Master { node } | Step::ControlPlane { node } | Step::Worker { node } => {
            match snap.node(node) {
                Some(n) if n.upgrade_started.is_none() && n.on_target(target) => {
                    StepWork::Done(format!("{node} already on v{target}"))
                }
                _ => StepWork::Todo,
            }
        }
        Step::Postflight => StepWork::Todo,
    }
}

/// Whether the chain of `target` still has work after a phase that had none: a node off target
/// or awaiting an acknowledgement, or the in-flight record still there (postflight has not
/// cleared it). When it has none, the phase spawns nothing.
pub fn chain_has_work(snap: &Snapshot, target: Version, in_flight: bool) -> bool {
    in_flight || snap.nodes().any(|n| !n.on_target(target) || n.upgrade_started.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        fixtures::{chain_job, node},
        settings::Settings,
    };
    use proptest::prelude::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    const T: &str = "1.34.2";

    fn snapshot(nodes: &[Node]) -> Snapshot {
        Snapshot::from_nodes(nodes, &Settings::default().control_plane_selector()).unwrap()
    }

    /// k8s-master, k8s-node1..3 on `versions` (in that order).
    fn cluster(versions: [&str; 4]) -> Vec<Node> {
        let names = ["k8s-master", "k8s-node1", "k8s-node2", "k8s-node3"];
        names
            .iter()
            .zip(versions)
            .enumerate()
            .map(|(i, (n, ver))| {
                let b = node(n).kubelet(&format!("v{ver}")).ip(&format!("10.0.0.{}", i + 1));
                if i == 0 { b.control_plane().build() } else { b.build() }
            })
            .collect()
    }

    fn mark(mut n: Node, value: &str) -> Node {
        n.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(UPGRADE_STARTED_ANNOTATION.into(), value.into());
        n
    }

    #[test]
    fn the_marker_reads_back_what_the_chain_writes_and_anything_else_is_unreadable() {
        let at: Timestamp = "2026-11-30T10:00:00Z".parse().unwrap();
        let m = UpgradeStarted::recorded(Phase::Worker, v(T), at);
        assert_eq!(m.value(), "worker 1.34.2 2026-11-30T10:00:00Z");
        assert_eq!(UpgradeStarted::parse(&m.value()), m);
        assert_eq!(m.target(), Some(v(T)));
        for odd in [
            "",
            "yes",
            "worker 1.34.2",
            "preflight 1.34.2 2026-11-30T10:00:00Z",
            "worker latest 2026-11-30T10:00:00Z",
            "worker 1.34.2 yesterday",
            "worker 1.34.2 2026-11-30T10:00:00Z extra",
        ] {
            let parsed = UpgradeStarted::parse(odd);
            assert_eq!(parsed, UpgradeStarted::Unreadable { value: odd.into() }, "{odd:?}");
            assert_eq!(parsed.value(), odd);
            assert!(parsed.describe().contains(UPGRADE_STARTED_ANNOTATION));
        }
        let n = mark(node("k8s-node1").build(), "by hand");
        assert_eq!(UpgradeStarted::of(&n), Some(UpgradeStarted::Unreadable { value: "by hand".into() }));
        assert_eq!(UpgradeStarted::of(&node("k8s-node1").build()), None);
    }

    #[test]
    fn a_fresh_target_starts_at_preflight() {
        let snap = snapshot(&cluster(["1.34.1"; 4]));
        assert_eq!(decide(&snap, v(T), &[]), Decision::Spawn { step: Step::Preflight, previous: None });
    }

    #[test]
    fn a_running_job_of_any_target_is_left_alone() {
        let snap = snapshot(&cluster(["1.34.1"; 4]));
        let other = chain_job(&Step::worker("k8s-node1"), v("1.34.3")).build();
        assert_eq!(
            decide(&snap, v(T), &[other]),
            Decision::Running { job: "k8s-upgrade-worker-1-34-3-k8s-node1".into() }
        );
    }

    #[test]
    fn a_failed_or_refused_or_halted_preflight_runs_again() {
        let snap = snapshot(&cluster(["1.34.1"; 4]));
        for (job, state, outcome) in [
            (chain_job(&Step::Preflight, v(T)).failed("BackoffLimitExceeded"), JobState::Failed, None),
            (
                chain_job(&Step::Preflight, v(T)).complete().outcome(PhaseOutcome::Refused),
                JobState::Complete,
                Some(PhaseOutcome::Refused),
            ),
            (
                chain_job(&Step::Preflight, v(T)).complete().outcome(PhaseOutcome::Halted),
                JobState::Complete,
                Some(PhaseOutcome::Halted),
            ),
            // Complete without an outcome and nothing after it: the seed's "never advanced".
            (chain_job(&Step::Preflight, v(T)).complete(), JobState::Complete, None),
        ] {
            let d = decide(&snap, v(T), &[job.build()]);
            assert_eq!(
                d,
                Decision::Spawn {
                    step: Step::Preflight,
                    previous: Some(Previous { job: "k8s-upgrade-preflight-1-34-2".into(), state, outcome })
                }
            );
        }
    }

    #[test]
    fn after_a_halt_the_chain_resumes_at_the_halted_worker_not_at_preflight() {
        let snap = snapshot(&cluster([T, T, "1.34.1", "1.34.1"]));
        let jobs = [
            chain_job(&Step::Preflight, v(T)).complete().outcome(PhaseOutcome::Succeeded).build(),
            chain_job(&Step::master("k8s-master"), v(T)).complete().outcome(PhaseOutcome::Succeeded).build(),
            chain_job(&Step::worker("k8s-node1"), v(T)).complete().outcome(PhaseOutcome::Succeeded).build(),
            chain_job(&Step::worker("k8s-node2"), v(T)).complete().outcome(PhaseOutcome::Halted).build(),
        ];
        let d = decide(&snap, v(T), &jobs);
        assert_eq!(
            d,
            Decision::Spawn {
                step: Step::worker("k8s-node2"),
                previous: Some(Previous {
                    job: "k8s-upgrade-worker-1-34-2-k8s-node2".into(),
                    state: JobState::Complete,
                    outcome: Some(PhaseOutcome::Halted)
                })
            }
        );
        assert!(d.describe().contains(
            "worker k8s-node2 (again; its Job k8s-upgrade-worker-1-34-2-k8s-node2: complete (halted))"
        ));
    }

    #[test]
    fn a_job_that_failed_before_its_node_upgrade_is_resumed() {
        let snap = snapshot(&cluster([T, T, "1.34.1", "1.34.1"]));
        let jobs = [
            chain_job(&Step::Preflight, v(T)).complete().build(),
            chain_job(&Step::worker("k8s-node2"), v(T)).failed("BackoffLimitExceeded").build(),
        ];
        match decide(&snap, v(T), &jobs) {
            Decision::Spawn { step, previous: Some(p) } => {
                assert_eq!(step, Step::worker("k8s-node2"));
                assert_eq!(p.state, JobState::Failed);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_node_whose_own_upgrade_failed_stops_everything_until_acknowledged() {
        let mut nodes = cluster([T, T, "1.34.1", "1.34.1"]);
        nodes[2] = mark(nodes[2].clone(), "worker 1.34.2 2026-11-30T10:00:00Z");
        let snap = snapshot(&nodes);
        let jobs = [
            chain_job(&Step::Preflight, v(T)).complete().build(),
            chain_job(&Step::worker("k8s-node2"), v(T)).failed("BackoffLimitExceeded").build(),
        ];
        let d = decide(&snap, v(T), &jobs);
        let Decision::AwaitingAck { nodes: awaiting } = &d else { panic!("{d:?}") };
        assert_eq!(awaiting.len(), 1);
        assert_eq!(awaiting[0].node, "k8s-node2");
        assert!(d.describe().contains("`k8s-upgrade-chain ack k8s-node2`"), "{}", d.describe());
        // Also without any Job left (its TTL passed), and for another target.
        assert!(matches!(decide(&snap, v(T), &[]), Decision::AwaitingAck { .. }));
        assert!(matches!(decide(&snap, v("1.34.3"), &[]), Decision::AwaitingAck { .. }));
        // A Job running on it (its upgrade is in progress) is not a failure.
        let running = chain_job(&Step::worker("k8s-node2"), v(T)).build();
        assert!(matches!(decide(&snap, v(T), &[running]), Decision::Running { .. }));
    }

    #[test]
    fn every_node_on_target_runs_postflight_until_it_completed() {
        let snap = snapshot(&cluster([T; 4]));
        let pre = chain_job(&Step::Preflight, v(T)).complete().outcome(PhaseOutcome::Succeeded);
        assert_eq!(
            decide(&snap, v(T), &[pre.clone().build()]),
            Decision::Spawn { step: Step::Postflight, previous: None }
        );
        let halted = chain_job(&Step::Postflight, v(T)).complete().outcome(PhaseOutcome::Halted);
        assert!(matches!(
            decide(&snap, v(T), &[pre.clone().build(), halted.build()]),
            Decision::Spawn { step: Step::Postflight, previous: Some(_) }
        ));
        let failed = chain_job(&Step::Postflight, v(T)).failed("BackoffLimitExceeded");
        assert!(matches!(
            decide(&snap, v(T), &[pre.clone().build(), failed.build()]),
            Decision::Spawn { step: Step::Postflight, previous: Some(_) }
        ));
        let done = chain_job(&Step::Postflight, v(T)).complete().outcome(PhaseOutcome::Succeeded);
        assert_eq!(decide(&snap, v(T), &[pre.build(), done.build()]), Decision::Finished);
    }

    #[test]
    fn ha_control_planes_resume_with_upgrade_node_after_the_first() {
        let nodes = vec![
            node("k8s-cp1").control_plane().kubelet("v1.34.2").ip("10.0.0.1").build(),
            node("k8s-cp2").control_plane().kubelet("v1.34.1").ip("10.0.0.2").build(),
            node("k8s-node1").kubelet("v1.34.1").ip("10.0.0.3").build(),
        ];
        let snap = snapshot(&nodes);
        let pre = chain_job(&Step::Preflight, v(T)).complete().outcome(PhaseOutcome::Succeeded).build();
        let master = chain_job(&Step::master("k8s-cp1"), v(T)).complete().build();
        assert_eq!(
            decide(&snap, v(T), &[pre.clone(), master]),
            Decision::Spawn { step: Step::control_plane("k8s-cp2"), previous: None }
        );
        // The first control plane off target again: `master` (kubeadm upgrade apply) comes first.
        let nodes = nodes
            .into_iter()
            .map(|mut n| {
                if n.metadata.name.as_deref() == Some("k8s-cp1") {
                    n.status.as_mut().unwrap().node_info.as_mut().unwrap().kubelet_version = "v1.34.1".into();
                }
                n
            })
            .collect::<Vec<_>>();
        assert_eq!(
            decide(&snapshot(&nodes), v(T), &[pre]),
            Decision::Spawn { step: Step::master("k8s-cp1"), previous: None }
        );
    }

    #[test]
    fn jobs_of_other_targets_do_not_count() {
        let snap = snapshot(&cluster([T, "1.34.1", "1.34.1", "1.34.1"]));
        let old =
            chain_job(&Step::Preflight, v("1.34.1")).complete().outcome(PhaseOutcome::Succeeded).build();
        assert_eq!(decide(&snap, v(T), &[old]), Decision::Spawn { step: Step::Preflight, previous: None });
    }

    #[test]
    fn step_work_says_when_a_phase_changes_nothing() {
        let done = snapshot(&cluster([T; 4]));
        assert!(
            matches!(step_work(&Step::Preflight, &done, v(T)), StepWork::Done(w) if w.contains("every node"))
        );
        assert!(matches!(step_work(&Step::worker("k8s-node1"), &done, v(T)), StepWork::Done(_)));
        assert_eq!(step_work(&Step::Postflight, &done, v(T)), StepWork::Todo);
        assert!(!chain_has_work(&done, v(T), false));
        assert!(chain_has_work(&done, v(T), true), "postflight has not cleared the record");

        let half = snapshot(&cluster([T, T, "1.34.1", "1.34.1"]));
        assert_eq!(step_work(&Step::Preflight, &half, v(T)), StepWork::Todo);
        assert_eq!(step_work(&Step::worker("k8s-node2"), &half, v(T)), StepWork::Todo);
        assert!(matches!(step_work(&Step::master("k8s-master"), &half, v(T)), StepWork::Done(_)));
        assert!(chain_has_work(&half, v(T), false));

        // A node on target that still carries the marker is not done: its phase refuses.
        let mut nodes = cluster([T; 4]);
        nodes[1] = mark(nodes[1].clone(), "worker 1.34.2 2026-11-30T10:00:00Z");
        let marked = snapshot(&nodes);
        assert_eq!(step_work(&Step::worker("k8s-node1"), &marked, v(T)), StepWork::Todo);
        assert_eq!(step_work(&Step::Preflight, &marked, v(T)), StepWork::Todo);
        assert!(chain_has_work(&marked, v(T), false));
    }

    /// A cluster of 1-3 control planes and 1-5 workers, each on or off the target, some marked,
    /// and chain Jobs in random states.
    fn arb_case() -> impl Strategy<Value = (Vec<Node>, Vec<Job>)> {
        let node_specs = (1usize..=3, 1usize..=5).prop_flat_map(|(cps, ws)| {
            proptest::collection::vec((any::<bool>(), prop::bool::weighted(0.1)), cps + ws)
                .prop_map(move |specs| (cps, specs))
        });
        let job_specs = proptest::collection::vec((0usize..9, 0u8..4, prop::option::of(0usize..5)), 0..6);
        (node_specs, job_specs).prop_map(|((cps, specs), job_specs)| {
            let mut nodes = Vec::new();
            for (i, (on, marked)) in specs.iter().enumerate() {
                let name = if i < cps { format!("cp{i}") } else { format!("w{}", i - cps) };
                let b = node(&name)
                    .kubelet(if *on { "v1.34.2" } else { "v1.34.1" })
                    .ip(&format!("10.0.0.{}", i + 1));
                let mut n = if i < cps { b.control_plane().build() } else { b.build() };
                if *marked {
                    n = mark(n, "worker 1.34.2 2026-11-30T10:00:00Z");
                }
                nodes.push(n);
            }
            let snap = snapshot(&nodes);
            let all: Vec<&NodeView> = snap.nodes().collect();
            let mut jobs = Vec::new();
            for (which, state, outcome) in job_specs {
                let step = match which {
                    0 => Step::Preflight,
                    1 => Step::Postflight,
                    k => step_for(&snap, all[k % all.len()]),
                };
                let mut b = chain_job(&step, v(T));
                b = match state {
                    0 => b,
                    1 => b.complete(),
                    _ => b.failed("BackoffLimitExceeded"),
                };
                if let Some(o) = outcome {
                    b = b.outcome(PhaseOutcome::ALL[o]);
                }
                if !jobs.iter().any(|j: &Job| j.metadata.name == b.clone().build().metadata.name) {
                    jobs.push(b.build());
                }
            }
            (nodes, jobs)
        })
    }

    proptest! {
        /// The rules that keep the cluster safe, whatever the Jobs and nodes say.
        #[test]
        fn decide_never_touches_what_it_must_not((nodes, jobs) in arb_case()) {
            let snap = snapshot(&nodes);
            let d = decide(&snap, v(T), &jobs);
            let active = jobs.iter().any(|j| job_state(j) == JobState::Active);
            let marked = snap.nodes().any(|n| n.upgrade_started.is_some());
            // One chain at a time.
            prop_assert_eq!(active, matches!(d, Decision::Running { .. }));
            // Nothing is spawned while a node waits for a human.
            if !active {
                prop_assert_eq!(marked, matches!(d, Decision::AwaitingAck { .. }));
            }
            match &d {
                Decision::Spawn { step, previous } => {
                    // A node step targets the first node off target, in chain order.
                    if let Some(n) = step.node() {
                        let first = snap.off_target(v(T)).next().unwrap();
                        prop_assert_eq!(n, first.name.as_str());
                        prop_assert_eq!(step, &step_for(&snap, first));
                    }
                    if let Some(p) = previous {
                        prop_assert_eq!(&p.job, &step.job_name(v(T)));
                        prop_assert_ne!(p.state, JobState::Active);
                    }
                    if *step == Step::Postflight {
                        prop_assert!(snap.off_target(v(T)).next().is_none());
                    }
                }
                Decision::Finished => prop_assert!(snap.off_target(v(T)).next().is_none()),
                _ => {}
            }
        }
    }
}
