//! Eviction outcomes as values, the retry delay, and the drain's summary: pure.

use std::time::Duration;

use kube_core::Status;

use super::decide::FallbackKind;
use super::select::PodRef;

/// What one eviction request achieved. Expected outcomes only; anything else is an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvictOutcome {
    /// 200/201: the pod is now terminating.
    Evicted,
    /// 404: the pod (or its namespace) is already gone.
    Gone,
    /// 429: a PodDisruptionBudget (named when the cause says so) or API priority and
    /// fairness refused; retry after `retry_after` (the server's `retryAfterSeconds`) at least.
    /// Also the 403 the eviction handler answers for a PDB whose status it cannot trust
    /// (negative `disruptionsAllowed`, too many `disruptedPods`): the disruption controller
    /// corrects those, so it is a wait too.
    Blocked { pdb: Option<String>, message: String, retry_after: Option<Duration> },
    /// 500 "more than one PodDisruptionBudget": the eviction API will never evict this pod
    /// (kubernetes#75957). `pdbs` is filled in by matching selectors, sorted.
    MultiplePdbs { pdbs: Vec<String> },
    /// 403 with the `NamespaceTerminating` cause: the namespace is being deleted, every create
    /// in it (an eviction too) is refused by the NamespaceLifecycle admission plugin, and the
    /// namespace controller deletes the pod itself. Wait for it (kubectl retries too).
    NamespaceTerminating { namespace: String },
}

/// How a refused eviction (an API `Status`) is handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusClass {
    /// An expected outcome (gone, blocked, several PDBs, namespace being deleted).
    Outcome(EvictOutcome),
    /// Worth retrying: 408, 409, 5xx other than multi-PDB.
    Transient,
    /// Not worth retrying: stops the drain with an error naming the pod. 400 and 422 (a
    /// request we built wrong), 401, 403 other than the two outcomes (RBAC), 405, 415, ...
    Fatal,
}

/// Classifies the `Status` of a refused eviction POST (transport errors are always transient;
/// the shell sees those before it has a `Status`).
///
/// The 4xx answers, reviewed against kubernetes eviction.go and the admission chain:
/// 404 gone; 429 wait; 403 `NamespaceTerminating` wait for the namespace controller; 403 on a
/// `poddisruptionbudget` wait; 408 (request timeout) and 409 (the handler's own conflict
/// retries ran out, or a stale precondition) transient; every other 4xx is fatal.
pub fn classify_status(status: &Status) -> StatusClass {
    let causes = status.details.as_ref().map(|d| d.causes.as_slice()).unwrap_or_default();
    match status.code {
        404 => StatusClass::Outcome(EvictOutcome::Gone),
        429 => StatusClass::Outcome(blocked(status)),
        403 if causes.iter().any(|c| c.reason == "NamespaceTerminating") => {
            let namespace = causes
                .iter()
                .find(|c| c.reason == "NamespaceTerminating")
                .and_then(|c| c.message.strip_prefix("namespace "))
                .and_then(|m| m.strip_suffix(" is being terminated"))
                .unwrap_or_default()
                .to_string();
            StatusClass::Outcome(EvictOutcome::NamespaceTerminating { namespace })
        }
        403 if status.details.as_ref().is_some_and(|d| d.kind == "poddisruptionbudget") => {
            StatusClass::Outcome(EvictOutcome::Blocked {
                pdb: status.details.as_ref().map(|d| d.name.clone()).filter(|n| !n.is_empty()),
                message: status.message.clone(),
                retry_after: None,
            })
        }
        500 if status.message.contains("more than one PodDisruptionBudget") => {
            StatusClass::Outcome(EvictOutcome::MultiplePdbs { pdbs: Vec::new() })
        }
        408 | 409 | 500..=599 => StatusClass::Transient,
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
    /// Eviction refused by this PDB (name unknown: API priority and fairness or unnamed
    /// cause); `why` is the drain's reading of the refusal (e.g. the pod is not Ready).
    Blocked { pdb: Option<String>, message: String, since: Duration, why: Option<String> },
    /// Eviction refused because several PDBs cover the pod; `why` says which budget stands in
    /// the way.
    MultiplePdbs { pdbs: Vec<String>, why: Option<String> },
    /// Evicted or deleted, still terminating (e.g. a finalizer or a long grace period).
    Terminating { finalizers: Vec<String> },
    /// Its namespace is being deleted; the namespace controller has not deleted it yet.
    NamespaceTerminating { namespace: String },
    /// The last attempt failed with a transient error.
    Failing { error: String },
}

/// How a pod the drain had to remove left the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// Through the eviction API, after `refusals` refused attempts.
    Evicted {
        /// Refused attempts before it passed.
        refusals: u32,
    },
    /// Deleted directly by a fallback.
    Deleted(FallbackKind),
    /// A finished pod, deleted.
    DeletedFinished,
    /// It was already terminating when the drain started.
    WasTerminating,
    /// Its namespace was being deleted; the drain waited for it.
    NamespaceTerminating,
    /// Gone before any request of the drain removed it (404, or it vanished).
    Vanished,
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
            Remaining::Blocked { pdb, message, since, why } => {
                let since = crate::duration::format(Duration::from_secs(since.as_secs()));
                match pdb {
                    Some(p) => write!(
                        f,
                        "{pod}: eviction blocked by PodDisruptionBudget {p} for {since} ({message})"
                    )?,
                    None => write!(f, "{pod}: eviction refused (429) for {since} ({message})")?,
                }
                match why {
                    Some(w) => write!(f, "; {w}"),
                    None => Ok(()),
                }
            }
            Remaining::MultiplePdbs { pdbs, why: None } => {
                write!(f, "{pod}: covered by several PodDisruptionBudgets ({})", pdbs.join(", "))
            }
            Remaining::MultiplePdbs { why: Some(w), .. } => write!(f, "{pod}: {w}"),
            Remaining::NamespaceTerminating { namespace } => write!(
                f,
                "{pod}: namespace {namespace} is being deleted; waiting for the namespace controller to delete the pod"
            ),
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
    /// Pods deleted by the targeted PDB fallback (deadlocked PDB, several PDBs).
    pub fallback_deleted: u32,
    /// Pods deleted because they were not Ready under a PDB that could not recover.
    pub unhealthy_deleted: u32,
    /// Pods whose namespace was being deleted (waited for, not evicted).
    pub namespace_terminating: u32,
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
            "evicted {}, deleted by PDB fallback {}, deleted as not Ready {}, finished pods deleted {}, \
             already terminating {}, in namespaces being deleted {}, skipped {}, remaining {}; {} eviction \
             request(s), {} refused; PDB-blocked for {:.1}s; took {:.1}s",
            self.evicted,
            self.fallback_deleted,
            self.unhealthy_deleted,
            self.deleted_finished,
            self.already_terminating,
            self.namespace_terminating,
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
        assert_eq!(api(400, "bad", None), StatusClass::Fatal);
        assert_eq!(api(401, "Unauthorized", None), StatusClass::Fatal);
        assert_eq!(api(408, "timeout", None), StatusClass::Transient);
        assert_eq!(api(409, "conflict", None), StatusClass::Transient);
    }

    #[test]
    fn namespace_terminating_403_is_a_wait() {
        // The body a v1.28.7 apiserver sent (real-api-answers.md, case 7).
        let details: StatusDetails = serde_json::from_value(serde_json::json!({
            "name": "web-8844c9497-bkqgg", "kind": "pods",
            "causes": [{"reason": "NamespaceTerminating", "message": "namespace b is being terminated", "field": "metadata.namespace"}]
        }))
        .unwrap();
        let msg = "pods \"web-8844c9497-bkqgg\" is forbidden: unable to create new content in namespace b because it is being terminated";
        assert_eq!(
            outcome(api(403, msg, Some(details))),
            EvictOutcome::NamespaceTerminating { namespace: "b".into() }
        );
    }

    #[test]
    fn pdb_forbidden_403_is_a_wait() {
        let details: StatusDetails = serde_json::from_value(
            serde_json::json!({"name": "web", "group": "policy", "kind": "poddisruptionbudget"}),
        )
        .unwrap();
        let msg = "poddisruptionbudget.policy \"web\" is forbidden: pdb disruptions allowed is negative";
        assert_eq!(
            outcome(api(403, msg, Some(details))),
            EvictOutcome::Blocked { pdb: Some("web".into()), message: msg.into(), retry_after: None }
        );
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
            why: Remaining::Blocked {
                pdb: Some("web".into()),
                message: "needs 2".into(),
                since: S(90),
                why: None,
            },
        };
        assert_eq!(
            r.to_string(),
            "ns/web-1: eviction blocked by PodDisruptionBudget web for 1m30s (needs 2)"
        );
        let r = RemainingPod {
            pod: pod.clone(),
            why: Remaining::Blocked {
                pdb: Some("web".into()),
                message: "needs 2".into(),
                since: S(2),
                why: Some("not Ready".into()),
            },
        };
        assert_eq!(
            r.to_string(),
            "ns/web-1: eviction blocked by PodDisruptionBudget web for 2s (needs 2); not Ready"
        );
        let r = RemainingPod {
            pod: pod.clone(),
            why: Remaining::NamespaceTerminating { namespace: "ns".into() },
        };
        assert!(r.to_string().starts_with("ns/web-1: namespace ns is being deleted"), "{r}");
        let r =
            RemainingPod { pod, why: Remaining::Terminating { finalizers: vec!["example.com/hold".into()] } };
        assert_eq!(r.to_string(), "ns/web-1: terminating, held by finalizers example.com/hold");
    }
}
