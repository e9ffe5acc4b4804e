//! Eviction outcomes as values, the retry delay, and the drain's summary: pure.

use std::time::Duration;

use kube_core::Status;

use super::select::PodRef;

/// What one eviction request achieved. Expected outcomes only; anything else is an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvictOutcome {
    /// 200/201: the pod is now terminating.
    Evicted,
    /// 404: the pod is already gone.
    Gone,
    /// 429: a PodDisruptionBudget (named when the cause says so) or API priority and
    /// fairness refused; retry after `retry_after` (the server's `retryAfterSeconds`) at least.
    Blocked { pdb: Option<String>, message: String, retry_after: Option<Duration> },
    /// 500 "more than one PodDisruptionBudget": the eviction API will never evict this pod
    /// (kubernetes#75957). `pdbs` is filled in by matching selectors, sorted.
    MultiplePdbs { pdbs: Vec<String> },
}

/// How a refused eviction (an API `Status`) is handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusClass {
    /// An expected outcome (gone, blocked, several PDBs).
    Outcome(EvictOutcome),
    /// Worth retrying: 5xx other than multi-PDB, 409.
    Transient,
    /// Not worth retrying: stops the drain with an error naming the pod.
    Fatal,
}

/// Classifies the `Status` of a refused eviction POST (transport errors are always transient;
/// the shell sees those before it has a `Status`).
pub fn classify_status(status: &Status) -> StatusClass {
    match status.code {
        404 => StatusClass::Outcome(EvictOutcome::Gone),
        429 => StatusClass::Outcome(blocked(status)),
        500 if status.message.contains("more than one PodDisruptionBudget") => {
            StatusClass::Outcome(EvictOutcome::MultiplePdbs { pdbs: Vec::new() })
        }
        409 | 500..=599 => StatusClass::Transient,
        _ => StatusClass::Fatal,
    }
}

fn blocked(status: &Status) -> EvictOutcome {
    let details = status.details.as_ref();
    let causes = details.map(|d| d.causes.as_slice()).unwrap_or_default();
    let cause = causes.iter().find(|c| c.reason == "DisruptionBudget");
    let pdb = cause.and_then(|c| super::pdb::pdb_name_from_message(&c.message));
    let message = cause.map(|c| c.message.clone()).unwrap_or_else(|| status.message.clone());
    let retry_after =
        details.map(|d| d.retry_after_seconds).filter(|s| *s > 0).map(|s| Duration::from_secs(s.into()));
    EvictOutcome::Blocked { pdb, message, retry_after }
}

/// The floor under every retry delay: kubectl's library default of zero made kured spin
/// (kubeone#4181); we never retry sooner than this.
pub const MIN_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Delay before retry number `attempt` (0-based): `min * 2^attempt` capped at `max`, jittered
/// by ±25 % with `jitter` in `[0, 1)`, kept within `[max(min, 1 s), max]`, and never shorter
/// than the server's `retry_after`.
pub fn retry_delay(
    attempt: u32,
    retry_after: Option<Duration>,
    min: Duration,
    max: Duration,
    jitter: f64,
) -> Duration {
    let min = min.max(MIN_RETRY_DELAY);
    let max = max.max(min);
    let base = min.saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX)).min(max);
    let factor = 0.75 + 0.5 * jitter.clamp(0.0, 1.0);
    let jittered = base.mul_f64(factor).clamp(min, max);
    retry_after.map_or(jittered, |r| jittered.max(r))
}

/// Why a pod was still on the node when the drain stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remaining {
    /// Not yet asked to leave.
    NotStarted,
    /// Eviction refused by this PDB (name unknown: API priority and fairness or unnamed cause).
    Blocked { pdb: Option<String>, message: String, since: Duration },
    /// Eviction refused because several PDBs cover the pod.
    MultiplePdbs { pdbs: Vec<String> },
    /// Evicted or deleted, still terminating (e.g. a finalizer or a long grace period).
    Terminating { finalizers: Vec<String> },
    /// The last attempt failed with a transient error.
    Failing { error: String },
}

/// A pod still on the node, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemainingPod {
    /// The pod.
    pub pod: PodRef,
    /// Why it is still there.
    pub why: Remaining,
}

impl std::fmt::Display for RemainingPod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pod = &self.pod;
        match &self.why {
            Remaining::NotStarted => write!(f, "{pod}: not evicted yet"),
            Remaining::Blocked { pdb: Some(p), message, since } => write!(
                f,
                "{pod}: eviction blocked by PodDisruptionBudget {p} for {} ({message})",
                crate::duration::format(Duration::from_secs(since.as_secs()))
            ),
            Remaining::Blocked { pdb: None, message, since } => write!(
                f,
                "{pod}: eviction refused (429) for {} ({message})",
                crate::duration::format(Duration::from_secs(since.as_secs()))
            ),
            Remaining::MultiplePdbs { pdbs } => {
                write!(f, "{pod}: covered by several PodDisruptionBudgets ({})", pdbs.join(", "))
            }
            Remaining::Terminating { finalizers } if finalizers.is_empty() => {
                write!(f, "{pod}: terminating")
            }
            Remaining::Terminating { finalizers } => {
                write!(f, "{pod}: terminating, held by finalizers {}", finalizers.join(", "))
            }
            Remaining::Failing { error } => {
                write!(f, "{pod}: last eviction attempt failed: {error}")
            }
        }
    }
}

/// Counts and times of one drain, for logs and the metrics module.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainSummary {
    /// Pods evicted through the eviction API (including 404 already gone).
    pub evicted: u32,
    /// Pods deleted by the targeted PDB fallback.
    pub fallback_deleted: u32,
    /// Finished (Succeeded/Failed) pods deleted.
    pub deleted_finished: u32,
    /// Pods already terminating when the drain started.
    pub already_terminating: u32,
    /// Pods left alone (DaemonSet, mirror, own pod).
    pub skipped: u32,
    /// Eviction requests sent (first tries and retries).
    pub eviction_requests: u32,
    /// Eviction requests refused with 429 or 500 multi-PDB.
    pub eviction_refusals: u32,
    /// Wall time during which at least one pod was blocked by a PDB.
    pub blocked_time: Duration,
    /// Wall time of the drain, cordon included.
    pub duration: Duration,
    /// Pods still on the node when the drain ended (0 on success).
    pub remaining: u32,
}

impl std::fmt::Display for DrainSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "evicted {}, deleted by PDB fallback {}, finished pods deleted {}, already terminating {}, skipped {}, \
             remaining {}; {} eviction request(s), {} refused; PDB-blocked for {:.1}s; took {:.1}s",
            self.evicted,
            self.fallback_deleted,
            self.deleted_finished,
            self.already_terminating,
            self.skipped,
            self.remaining,
            self.eviction_requests,
            self.eviction_refusals,
            self.blocked_time.as_secs_f64(),
            self.duration.as_secs_f64()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_core::response::StatusDetails;

    fn api(code: u16, message: &str, details: Option<StatusDetails>) -> StatusClass {
        classify_status(&Status { code, message: message.into(), details, ..Status::failure(message, "") })
    }

    fn outcome(class: StatusClass) -> EvictOutcome {
        match class {
            StatusClass::Outcome(o) => o,
            other => panic!("expected an outcome, got {other:?}"),
        }
    }

    #[test]
    fn success_and_404() {
        assert_eq!(outcome(api(404, "pods \"x\" not found", None)), EvictOutcome::Gone);
    }

    #[test]
    fn pdb_429_names_the_budget_and_keeps_retry_after() {
        // The body the apiserver sends (eviction.go), as JSON.
        let details: StatusDetails = serde_json::from_value(serde_json::json!({
            "causes": [{
                "reason": "DisruptionBudget",
                "message": "The disruption budget web needs 2 healthy pods and has 2 currently"
            }],
            "retryAfterSeconds": 10
        }))
        .unwrap();
        let out = outcome(api(
            429,
            "Cannot evict pod as it would violate the pod's disruption budget.",
            Some(details),
        ));
        assert_eq!(
            out,
            EvictOutcome::Blocked {
                pdb: Some("web".into()),
                message: "The disruption budget web needs 2 healthy pods and has 2 currently".into(),
                retry_after: Some(Duration::from_secs(10)),
            }
        );
    }

    #[test]
    fn bare_429_is_blocked_without_a_name() {
        let out = outcome(api(429, "Too many requests", None));
        assert_eq!(
            out,
            EvictOutcome::Blocked { pdb: None, message: "Too many requests".into(), retry_after: None }
        );
    }

    #[test]
    fn multi_pdb_500_is_an_outcome_other_500_is_transient() {
        let msg = "Internal error occurred: This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.";
        assert_eq!(outcome(api(500, msg, None)), EvictOutcome::MultiplePdbs { pdbs: vec![] });
        assert_eq!(api(500, "etcd timeout", None), StatusClass::Transient);
        assert_eq!(api(503, "unavailable", None), StatusClass::Transient);
    }

    #[test]
    fn forbidden_is_fatal() {
        assert_eq!(api(403, "forbidden", None), StatusClass::Fatal);
        assert_eq!(api(422, "invalid", None), StatusClass::Fatal);
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn retry_delay_is_never_below_one_second() {
        for attempt in 0..5 {
            for j in [0.0, 0.5, 0.999] {
                assert!(retry_delay(attempt, None, Duration::ZERO, Duration::ZERO, j) >= S(1));
                assert!(retry_delay(attempt, None, Duration::from_millis(10), S(5), j) >= S(1));
            }
        }
    }

    #[test]
    fn retry_delay_grows_and_is_capped() {
        assert_eq!(retry_delay(0, None, S(1), S(5), 0.5), S(1));
        assert_eq!(retry_delay(1, None, S(1), S(5), 0.5), S(2));
        assert_eq!(retry_delay(2, None, S(1), S(5), 0.5), S(4));
        assert_eq!(retry_delay(3, None, S(1), S(5), 0.5), S(5));
        assert_eq!(retry_delay(60, None, S(1), S(5), 0.999), S(5));
        assert_eq!(retry_delay(2, None, S(1), S(5), 0.0), S(3));
    }

    #[test]
    fn retry_delay_honours_retry_after() {
        assert_eq!(retry_delay(0, Some(S(10)), S(1), S(5), 0.5), S(10));
        assert_eq!(retry_delay(3, Some(S(2)), S(1), S(5), 0.5), S(5));
    }

    #[test]
    fn remaining_pods_say_why() {
        let pod = PodRef::new("ns", "web-1");
        let r = RemainingPod {
            pod: pod.clone(),
            why: Remaining::Blocked { pdb: Some("web".into()), message: "needs 2".into(), since: S(90) },
        };
        assert_eq!(
            r.to_string(),
            "ns/web-1: eviction blocked by PodDisruptionBudget web for 1m30s (needs 2)"
        );
        let r =
            RemainingPod { pod, why: Remaining::Terminating { finalizers: vec!["example.com/hold".into()] } };
        assert_eq!(r.to_string(), "ns/web-1: terminating, held by finalizers example.com/hold");
    }
}
