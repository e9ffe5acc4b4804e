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
    /// Wall time here.
    #[serde(with = "secs")]
    pub measured: Duration,
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
pub fn model_text(real: &Timeouts) -> Vec<String> {
    vec![
        "model, per Job: the work measured here (API calls, drain, gates; pod grace periods scaled x0.01; includes the simulator's own overhead, which grows with the cluster)"
            .into(),
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
            measured: Duration::from_secs(measured),
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
        }
    }

    #[test]
    fn a_worker_gets_the_real_soak_instead_of_the_simulated_one() {
        let real = Timeouts::default();
        let w = job(Phase::Worker, 3, 1000);
        // 2 s of work + 30 s start + 3 min script + 30 s grace + 10 x 1 min soak.
        assert_eq!(project(&w, &real), Duration::from_secs(2 + 30 + 180 + 30 + 600));
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
