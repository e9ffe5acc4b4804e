//! The rehearsal's report and its projection of the real duration. Pure.

use std::time::Duration;

use serde::Serialize;

use chain_core::{duration::format as fmt_d, plan::Phase, settings::Timeouts};

/// Estimated time from a chain Job's creation to its container running on a node that has the
/// image (scheduling, volume mounts, container start): 30 s.
pub const JOB_START_OVERHEAD: Duration = Duration::from_secs(30);

/// `update_k8s.sh` on the first control plane, not simulated: apt installs, `kubeadm upgrade
/// apply` (it restarts every static pod and waits for each), kubelet restart, Ready: 6 min.
pub const MASTER_UPGRADE_ESTIMATE: Duration = Duration::from_secs(6 * 60);

/// `update_k8s.sh` on another node, not simulated: apt installs, `kubeadm upgrade node`,
/// kubelet restart, Ready: 3 min (control planes restart their static pods: 4 min).
pub const NODE_UPGRADE_ESTIMATE: Duration = Duration::from_secs(3 * 60);

/// [`NODE_UPGRADE_ESTIMATE`] for a further control plane.
pub const CONTROL_PLANE_UPGRADE_ESTIMATE: Duration = Duration::from_secs(4 * 60);

/// The etcd backup Job of the preflight, simulated here: 1 min.
pub const ETCD_SNAPSHOT_ESTIMATE: Duration = Duration::from_secs(60);

/// A pod the fallback deleted, with its PDBs and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FallbackDeleted {
    /// `namespace/name`.
    pub pod: String,
    /// The PodDisruptionBudgets covering it.
    pub pdbs: Vec<String>,
    /// Why the eviction API could never evict it.
    pub why: String,
}

/// What one chain Job did in the rehearsal.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    /// Job name.
    pub name: String,
    /// Phase.
    pub phase: Phase,
    /// Target node of the phase.
    pub node: Option<String>,
    /// Node the Job runs on.
    pub run_on: String,
    /// Its tolerations (`KEY:EFFECT`).
    pub tolerations: Vec<String>,
    /// `Done`, `Skipped: ...`, `Refused: ...`, `Halted: ...` or `FAILED: ...`.
    pub result: String,
    /// Whether the chain went on after it.
    pub ok: bool,
    /// When the Job started, on the report's clock ([`Clock`]), since detection ran.
    #[serde(with = "secs")]
    pub started: Duration,
    /// When it ended, on the same clock.
    #[serde(with = "secs")]
    pub ended: Duration,
    /// Time it took here, on the report's clock (`ended - started`).
    #[serde(with = "secs")]
    pub measured: Duration,
    /// The Jobs that ran beside it (some of their span overlaps its own; a Job that starts when
    /// another ends does not).
    pub ran_beside: Vec<String>,
    /// Kubernetes API requests its clients sent (every attempt).
    pub api_requests: usize,
    /// The scaled-down soak slept here (part of `measured`).
    #[serde(with = "secs")]
    pub simulated_soak: Duration,
    /// Pods evicted through the eviction API.
    pub evicted: Vec<String>,
    /// Evictions refused (429) and retried.
    pub eviction_refusals: usize,
    /// Pods deleted by the PDB fallback.
    pub fallback_deleted: Vec<FallbackDeleted>,
    /// Finished pods deleted by the drain.
    pub finished_deleted: Vec<String>,
    /// Longest real termination grace of the pods this Job removed.
    #[serde(with = "secs")]
    pub longest_grace: Duration,
    /// Alert-gate checks (`GET /api/v1/alerts`).
    pub alert_checks: usize,
    /// Scripts run on nodes (`node: script args`).
    pub node_actions: Vec<String>,
    /// Commands (probes) run on nodes.
    pub node_probes: usize,
    /// etcd snapshot Jobs created from the backup CronJob.
    pub etcd_snapshots: usize,
    /// The projection of this Job with the real waits.
    #[serde(with = "secs")]
    pub projected: Duration,
    /// The figures of this Job that may include work of the Jobs beside it, and why. Its own
    /// requests, evictions, deletions, node commands and alert checks are told apart (each Job
    /// has its own clients, node executor and Prometheus route prefix) and are never here.
    pub shared: Vec<String>,
}

/// The clock the Jobs' times are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Clock {
    /// The simulation's own clock (a paused tokio clock that jumps over every wait): a Job's
    /// time is the waits it went through (scaled soaks, grace periods, polls); the CPU work of
    /// the simulation costs none of it.
    Simulated,
    /// The real clock (a live copy, or a multi-thread runtime): a Job's time includes the
    /// process's work for every Job running beside it.
    Real,
}

impl Clock {
    /// `on the simulation's clock` / `on the real clock`.
    pub fn describe(self) -> &'static str {
        match self {
            Clock::Simulated => "on the simulation's clock",
            Clock::Real => "on the real clock",
        }
    }
}

/// The worker stage as it ran, and as projected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerStage {
    /// Worker Jobs run.
    pub jobs: usize,
    /// The slots: `workers.concurrency`, capped by `workers.max_unavailable` of the Ready
    /// workers.
    pub limit: usize,
    /// Most worker Jobs running at once (from their start and end).
    pub in_flight_at_most: usize,
    /// Most worker Jobs of one failure domain (`workers.topology_label`) running at once; 0
    /// when no worker carries the label.
    pub in_one_zone_at_most: usize,
    /// Most workers the chain had cordoned at once, as a watch on the Nodes saw them.
    pub cordoned_at_most: usize,
    /// Most workers of one failure domain cordoned at once, as the watch saw them.
    pub cordoned_in_one_zone_at_most: usize,
    /// From the first worker Job's start to the last one's end, on the report's clock.
    #[serde(with = "secs")]
    pub ran: Duration,
    /// The projection's scheduling ([`chain_core::waves::makespan`]) of the same Jobs' times
    /// here: equal to `ran` when the model schedules the Jobs as the chain did.
    #[serde(with = "secs")]
    pub scheduled: Duration,
    /// The stage projected with the real waits (the same scheduling of each Job's
    /// [`project`]ion).
    #[serde(with = "secs")]
    pub projected: Duration,
}

/// Most of `spans` (`[start, end)`) in progress at one instant, at least 1 when there is any: a
/// span that starts when another ends does not overlap it, and one of length zero (a Job that
/// went through no wait on the simulation's clock) overlaps none. Pure.
pub fn peak(spans: &[(Duration, Duration)]) -> usize {
    let at = |t: Duration| spans.iter().filter(|s| s.0 <= t && t < s.1).count();
    spans.iter().map(|s| at(s.0)).max().map_or(0, |n| n.max(1))
}

/// Whether two spans (`[start, end)`) overlap, as [`peak`] counts them. Pure.
pub fn overlap(a: (Duration, Duration), b: (Duration, Duration)) -> bool {
    a.0.max(b.0) < a.1.min(b.1)
}

mod secs {
    pub fn serialize<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
    }
}

/// Projects one Job with the real waits (see [`model_text`]).
pub fn project(job: &JobReport, real: &Timeouts) -> Duration {
    let work = job.measured.saturating_sub(job.simulated_soak);
    let mut d = work + JOB_START_OVERHEAD;
    if !job.ok || job.result.starts_with("Skipped") {
        return d;
    }
    d += match job.phase {
        Phase::Preflight => ETCD_SNAPSHOT_ESTIMATE,
        Phase::Master => MASTER_UPGRADE_ESTIMATE,
        Phase::ControlPlane => CONTROL_PLANE_UPGRADE_ESTIMATE,
        Phase::Worker => NODE_UPGRADE_ESTIMATE,
        Phase::Postflight => Duration::ZERO,
    };
    d += job.longest_grace;
    if job.phase == Phase::Worker {
        // The soak: one check per interval, sleeping an interval after each.
        let rounds = chain_core::alerts::soak_rounds(real.soak, real.soak_interval);
        d += real.soak_interval * rounds;
    }
    d
}

/// How the projection is computed, for the output.
pub fn model_text(real: &Timeouts, clock: Clock) -> Vec<String> {
    vec![
        match clock {
            Clock::Simulated => "model, per Job: its time here on the simulation's clock less the scaled soak: the waits it went through (polls, PDB waits for replacements, pod grace periods scaled x0.01, kubelet restart); the simulation's own CPU work costs none of it"
                .into(),
            Clock::Real => "model, per Job: the work measured here (API calls, drain, gates; pod grace periods scaled x0.01; includes the simulator's own overhead, which grows with the cluster)"
                .into(),
        },
        format!("  + {} Job start (scheduling, container start; estimate)", fmt_d(JOB_START_OVERHEAD)),
        format!(
            "  + the node upgrade script, not simulated (estimates): {} first control plane (apt, kubeadm upgrade apply), {} other control planes, {} per worker (apt, kubeadm upgrade node, kubelet restart)",
            fmt_d(MASTER_UPGRADE_ESTIMATE),
            fmt_d(CONTROL_PLANE_UPGRADE_ESTIMATE),
            fmt_d(NODE_UPGRADE_ESTIMATE)
        ),
        format!("  + {} etcd snapshot Job in preflight (estimate)", fmt_d(ETCD_SNAPSHOT_ESTIMATE)),
        "  + the longest real termination grace period among the pods each drain removed".into(),
        format!(
            "  + the real soak after each worker ({}, an alert check every {})",
            fmt_d(real.soak),
            fmt_d(real.soak_interval)
        ),
        format!(
            "assumes no blocking alert fires: each one holds a worker for up to {} (re-checked every {}); a PDB waiting on a slow-starting replacement adds that pod's start time",
            fmt_d(real.alert_wait),
            fmt_d(real.alert_interval)
        ),
        "not included: the wait for the detection CronJob's schedule, image pulls of rescheduled pods".into(),
    ]
}

/// Rounds a duration to whole seconds for display.
pub fn whole(d: Duration) -> String {
    fmt_d(Duration::from_secs(d.as_secs_f64().round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(phase: Phase, measured: u64, soak_ms: u64) -> JobReport {
        JobReport {
            name: "j".into(),
            phase,
            node: None,
            run_on: "n".into(),
            tolerations: vec![],
            result: "Done".into(),
            ok: true,
            started: Duration::ZERO,
            ended: Duration::from_secs(measured),
            measured: Duration::from_secs(measured),
            ran_beside: vec![],
            api_requests: 0,
            simulated_soak: Duration::from_millis(soak_ms),
            evicted: vec![],
            eviction_refusals: 0,
            fallback_deleted: vec![],
            finished_deleted: vec![],
            longest_grace: Duration::from_secs(30),
            alert_checks: 0,
            node_actions: vec![],
            node_probes: 0,
            etcd_snapshots: 0,
            projected: Duration::ZERO,
            shared: vec![],
        }
    }

    #[test]
    fn a_worker_gets_the_real_soak_instead_of_the_simulated_one() {
        let real = Timeouts::default();
        let w = job(Phase::Worker, 3, 1000);
        // 2 s of work + 30 s start + 3 min script + 30 s grace + 10 x 1 min soak.
        assert_eq!(project(&w, &real), Duration::from_secs(2 + 30 + 180 + 30 + 600));
    }

    fn s(a: u64, b: u64) -> (Duration, Duration) {
        (Duration::from_secs(a), Duration::from_secs(b))
    }

    #[test]
    fn jobs_one_after_another_never_overlap() {
        let one_after_another = [s(0, 5), s(5, 9), s(9, 9), s(9, 12), s(13, 13)];
        assert_eq!(peak(&one_after_another), 1);
        assert!(!overlap(s(0, 5), s(5, 9)), "a Job that starts when another ends is not beside it");
        assert_eq!(peak(&[]), 0);
    }

    #[test]
    fn jobs_that_start_together_or_inside_another_overlap() {
        // Two start together; a third starts as the first ends; a fourth inside the third.
        let spans = [s(0, 10), s(0, 4), s(10, 20), s(12, 13)];
        assert_eq!(peak(&spans), 2);
        assert!(overlap(s(0, 10), s(0, 4)));
        assert!(overlap(s(10, 20), s(12, 13)));
        assert!(!overlap(s(0, 4), s(10, 20)));
        // A Job that took no time overlaps none, wherever it is.
        assert!(!overlap(s(3, 3), s(0, 10)));
        assert!(!overlap(s(3, 3), s(3, 3)));
        assert_eq!(peak(&[s(0, 10), s(2, 8), s(3, 3)]), 2);
        assert_eq!(peak(&[s(3, 3), s(3, 3)]), 1);
    }

    proptest::proptest! {
        /// [`peak`] agrees with a count of the spans in progress at every instant of the range,
        /// and with [`overlap`] when two spans are given.
        #[test]
        fn peak_is_the_most_spans_at_one_instant(raw in proptest::collection::vec((0u64..40, 0u64..10), 0..12)) {
            let spans: Vec<(Duration, Duration)> = raw.iter().map(|&(a, len)| s(a, a + len)).collect();
            let most = (0..50u64)
                .map(|t| spans.iter().filter(|&&(a, b)| a <= Duration::from_secs(t) && Duration::from_secs(t) < b).count())
                .max()
                .unwrap_or(0);
            let want = if spans.is_empty() { 0 } else { most.max(1) };
            proptest::prop_assert_eq!(peak(&spans), want);
            if let [a, b] = spans[..] {
                proptest::prop_assert_eq!(overlap(a, b), peak(&spans) == 2);
            }
        }
    }

    #[test]
    fn the_first_control_plane_gets_the_apply_estimate_and_no_soak() {
        let real = Timeouts::default();
        assert_eq!(project(&job(Phase::Master, 2, 0), &real), Duration::from_secs(2 + 30 + 360 + 30));
    }

    #[test]
    fn skipped_and_failed_jobs_only_cost_their_work_and_start() {
        let real = Timeouts::default();
        let mut s = job(Phase::Worker, 1, 0);
        s.result = "Skipped: on target".into();
        assert_eq!(project(&s, &real), Duration::from_secs(31));
        let mut f = job(Phase::Worker, 1, 0);
        f.ok = false;
        assert_eq!(project(&f, &real), Duration::from_secs(31));
    }
}
