//! Kubernetes Events for each milestone, on the chain Job and on the Node, so that
//! `kubectl describe job/...` and `kubectl describe node/...` show the upgrade's progress.
//!
//! Events are written through kube's [`Recorder`] (events.k8s.io/v1; `kubectl describe` reads
//! them through the core v1 view of the same objects). Reporting controller:
//! `k8s-upgrade-chain`. Events for a cluster-scoped object (a Node) are created in the
//! `default` namespace, as the kubelet's are, so RBAC needs `create` (and `patch`, for
//! repeated events) on `events.k8s.io/events` in `default` and in the tool's namespace.
//!
//! An Event failure is a warning only: progress reporting must never fail a phase.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use chain_core::version::Version;

/// The `reportingController` of every Event.
pub const REPORTING_CONTROLLER: &str = "k8s-upgrade-chain";

/// A point in a phase worth showing in `kubectl describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Milestone {
    /// The phase started its work.
    PhaseStarted {
        /// Phase name (`preflight`, `master`, `worker`, `postflight`).
        phase: String,
    },
    /// The node was cordoned and its drain began.
    DrainStarted,
    /// The drain evicted this many pods.
    Evicted(u32),
    /// This many pods were deleted after eviction stayed blocked past its deadline.
    FallbackDeleted(u32),
    /// The node's kubeadm/kubelet upgrade ran to this version.
    UpgradeRan(Version),
    /// The node reported Ready at this version.
    NodeReady(Version),
    /// The node was uncordoned.
    Uncordoned,
    /// The post-upgrade soak finished without blocking alerts.
    SoakDone,
    /// The phase finished its work.
    PhaseSucceeded {
        /// Phase name.
        phase: String,
    },
    /// A gate refused; nothing was changed.
    Refused(String),
    /// The kill switch halted the phase.
    Halted(String),
    /// The phase aborted.
    Aborted(String),
    /// The Job's pod cannot start (unschedulable, or its image cannot be pulled): recorded on
    /// the Job by the phase (or detection) that spawned it (seed failures 18 and 36).
    CannotStart(String),
    /// The node's own upgrade did not finish; it waits for an operator's acknowledgement.
    AwaitingAck(String),
    /// An operator acknowledged the node's failed upgrade (`k8s-upgrade-chain ack`).
    Acknowledged(String),
}

impl Milestone {
    /// Pure: the Event for this milestone (type, reason, action, note).
    pub fn event(&self) -> Event {
        use Milestone::*;
        let (type_, reason, action, note) = match self {
            PhaseStarted { phase } => {
                (EventType::Normal, "PhaseStarted", "Start", format!("{phase} phase started"))
            }
            DrainStarted => {
                (EventType::Normal, "DrainStarted", "Drain", "cordoned; drain started".to_string())
            }
            Evicted(n) => (EventType::Normal, "PodsEvicted", "Drain", format!("evicted {n} pod(s)")),
            FallbackDeleted(n) => (
                EventType::Warning,
                "PodsFallbackDeleted",
                "Drain",
                format!("deleted {n} pod(s) whose eviction stayed blocked past the deadline"),
            ),
            UpgradeRan(v) => {
                (EventType::Normal, "UpgradeRan", "Upgrade", format!("node upgrade to v{v} ran"))
            }
            NodeReady(v) => (EventType::Normal, "NodeReady", "WaitReady", format!("node Ready at v{v}")),
            Uncordoned => (EventType::Normal, "Uncordoned", "Uncordon", "node uncordoned".to_string()),
            SoakDone => {
                (EventType::Normal, "SoakDone", "Soak", "soak finished with no blocking alerts".to_string())
            }
            PhaseSucceeded { phase } => {
                (EventType::Normal, "PhaseSucceeded", "Finish", format!("{phase} phase succeeded"))
            }
            Refused(why) => {
                (EventType::Normal, "Refused", "Gate", format!("refused, nothing changed: {why}"))
            }
            Halted(why) => {
                (EventType::Warning, "Halted", "KillSwitch", format!("halted by the kill switch: {why}"))
            }
            Aborted(why) => (EventType::Warning, "Aborted", "Abort", format!("aborted: {why}")),
            CannotStart(why) => {
                (EventType::Warning, "CannotStart", "Start", format!("the Job's pod cannot start: {why}"))
            }
            AwaitingAck(what) => (
                EventType::Warning,
                "UpgradeAwaitingAck",
                "Upgrade",
                format!(
                    "the node's upgrade did not finish ({what}); it stays cordoned and nothing retries it \
                     until an operator runs `k8s-upgrade-chain ack` for it"
                ),
            ),
            Acknowledged(what) => (
                EventType::Normal,
                "UpgradeAcknowledged",
                "Acknowledge",
                format!("failed upgrade acknowledged ({what}); detection may retry the node"),
            ),
        };
        Event {
            type_,
            reason: reason.into(),
            note: Some(truncate_note(note)),
            action: action.into(),
            secondary: None,
        }
    }
}

/// Event notes are limited to 1 kB by the API; keep under it on a char boundary.
fn truncate_note(note: String) -> String {
    const MAX: usize = 1000;
    if note.len() <= MAX {
        return note;
    }
    let mut end = MAX - 3;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &note[..end])
}

/// Whether an Event got through. Failure has been logged as a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    /// The apiserver accepted it.
    Recorded,
    /// It did not; the phase goes on.
    Failed {
        /// Why.
        reason: String,
    },
}

/// Publishes milestone Events. Keep one per process: the recorder folds repeats of the same
/// event into a series instead of creating new objects.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    /// A recorder reporting as [`REPORTING_CONTROLLER`]; `instance` is e.g. the pod name.
    pub fn new(client: Client, instance: Option<String>) -> Self {
        let reporter = Reporter { controller: REPORTING_CONTROLLER.into(), instance };
        Self { recorder: Recorder::new(client, reporter) }
    }

    /// Records `milestone` on `regarding` (a Job or a Node). Never fails: a problem is logged
    /// as a warning and returned.
    pub async fn record(&self, regarding: &ObjectReference, milestone: &Milestone) -> EventOutcome {
        match self.recorder.publish(&milestone.event(), regarding).await {
            Ok(()) => EventOutcome::Recorded,
            Err(e) => {
                let what = format!(
                    "{} {}",
                    regarding.kind.as_deref().unwrap_or("object"),
                    match &regarding.namespace {
                        Some(ns) => format!("{ns}/{}", regarding.name.as_deref().unwrap_or("?")),
                        None => regarding.name.clone().unwrap_or_else(|| "?".into()),
                    }
                );
                let reason = format!("failed to record event {:?} on {what}: {e}", milestone.event().reason);
                tracing::warn!("{reason} (events are best-effort; carrying on)");
                EventOutcome::Failed { reason }
            }
        }
    }
}

/// One-shot form of [`Events::record`] (builds a recorder per call; prefer [`Events`] in loops).
pub async fn record(client: &Client, regarding: &ObjectReference, milestone: Milestone) -> EventOutcome {
    Events::new(client.clone(), None).record(regarding, &milestone).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milestones_map_to_reasons_and_notes() {
        let e = Milestone::Evicted(7).event();
        assert_eq!(
            (e.type_, e.reason.as_str(), e.note.as_deref()),
            (EventType::Normal, "PodsEvicted", Some("evicted 7 pod(s)"))
        );
        let e = Milestone::Aborted("smoke tests failed".into()).event();
        assert_eq!(e.type_, EventType::Warning);
        assert_eq!(e.note.as_deref(), Some("aborted: smoke tests failed"));
        let e = Milestone::NodeReady(Version::new(1, 34, 2)).event();
        assert_eq!(e.note.as_deref(), Some("node Ready at v1.34.2"));
    }

    #[test]
    fn reasons_are_short_pascal_case() {
        let all = [
            Milestone::PhaseStarted { phase: "worker".into() },
            Milestone::DrainStarted,
            Milestone::Evicted(1),
            Milestone::FallbackDeleted(1),
            Milestone::UpgradeRan(Version::new(1, 34, 2)),
            Milestone::NodeReady(Version::new(1, 34, 2)),
            Milestone::Uncordoned,
            Milestone::SoakDone,
            Milestone::PhaseSucceeded { phase: "worker".into() },
            Milestone::Refused("x".into()),
            Milestone::Halted("x".into()),
            Milestone::Aborted("x".into()),
            Milestone::CannotStart("x".into()),
        ];
        for m in all {
            let e = m.event();
            assert!(
                e.reason.len() <= 128 && e.reason.chars().all(|c| c.is_ascii_alphabetic()),
                "{}",
                e.reason
            );
            assert!(e.reason.starts_with(|c: char| c.is_ascii_uppercase()));
        }
    }

    #[test]
    fn long_notes_are_truncated_on_a_char_boundary() {
        let e = Milestone::Aborted("é".repeat(800)).event();
        let note = e.note.unwrap();
        assert!(note.len() <= 1000 && note.ends_with("..."));
    }
}
