//! One decision per pod, from one snapshot, shared by the drain and its dry run: what the
//! eviction API will answer, and what the drain does when it refuses. Pure.
//!
//! The prediction copies the order of checks of the eviction handler
//! (kubernetes `pkg/registry/core/pod/storage/eviction.go`, v1.28):
//! 1. a pod that is Pending, Succeeded, Failed or already terminating is deleted without a
//!    PodDisruptionBudget check (`canIgnorePDB`);
//! 2. more than one matching PDB is a 500 (kubernetes#75957), whatever the pod's state;
//! 3. a pod that is not Ready passes without spending the budget when its PDB has
//!    `unhealthyPodEvictionPolicy: AlwaysAllow`, or (the default, `IfHealthyBudget`) when
//!    `currentHealthy >= desiredHealthy > 0`;
//! 4. a status behind the spec (`observedGeneration < generation`) is a 429 "still being
//!    processed"; `disruptionsAllowed == 0` is a 429 naming the budget; otherwise it passes
//!    and spends one disruption.
//!
//! What the drain does about a refusal:
//! - **not Ready, the budget cannot recover** (`drain.unhealthy_fallback`, default on): delete
//!   it at once. A pod that is not Ready counts toward no PDB's `currentHealthy`, so removing
//!   it costs no availability: the reasoning behind `AlwaysAllow`, applied to the default
//!   policy only where the API refuses (e.g. three crash-looping replicas under
//!   `maxUnavailable: 25%`: 0 healthy of 2 desired, every eviction 429 forever);
//! - **deadlocked** (`0 < expectedPods <= desiredHealthy`: no disruption even at full health,
//!   e.g. one replica under `minAvailable: 1`): delete after `drain.fallback_after`;
//! - **several PDBs**: the API can never evict it, and their statuses cannot be trusted for
//!   it (the disruption controller counts a pod toward one of its PDBs only; see
//!   real-api-answers.md, "two-a"/"two-b"). Counting healthy pods from the pods themselves,
//!   delete after `drain.fallback_after` only when every covering PDB stays within its budget
//!   without the pod, or is deadlocked; otherwise wait like any refused eviction;
//! - anything else (the budget recovers as replacements become Ready, a status catching up):
//!   wait and retry.

use std::fmt;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::pdb::{self, name_of};
use super::select::{is_ready, is_terminating};

/// The settings a decision depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// How long a deadlocked or several-PDB pod must have been refused before it is deleted.
    pub fallback_after: Duration,
    /// Delete a not-Ready pod whose PDB refuses it and cannot recover (see the module docs).
    pub unhealthy_fallback: bool,
}

/// What the decision reads about the pod's surroundings.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// The PodDisruptionBudgets (any namespace; only the pod's own are considered).
    pub pdbs: &'a [PodDisruptionBudget],
    /// The pods of the pod's namespace, when read. Needed only for a pod under several PDBs,
    /// whose health is counted from the pods; `None` makes such a pod wait.
    pub pods: Option<&'a [Pod]>,
    /// The pod's namespace is being deleted.
    pub namespace_terminating: bool,
    /// When other nodes are drained at the same time (worker concurrency above 1; see
    /// [`shared_budget_short`]). `None`: one node at a time.
    pub shared_with_other_drains: Option<Shared<'a>>,
}

/// This drain among the drains running at the same time.
#[derive(Debug, Clone, Copy)]
pub struct Shared<'a> {
    /// The node drained.
    pub node: &'a str,
    /// The nodes in flight that go first (claimed earlier; ties by name) and whose drain is
    /// not over: one order every drain computes alike from the claim record
    /// ([`crate::waves::Claims::draining_ahead_of`]), so two drains deciding at the same
    /// moment never both take a pod of one PDB.
    pub ahead: &'a [String],
}

/// The per-pod decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The eviction API lets it go now.
    Evict(Pass),
    /// The eviction API refuses it now; the drain retries until it passes.
    Wait(Hold),
    /// The eviction API refuses it and will keep refusing: the drain deletes it directly once
    /// it has been refused for `after` (zero: at the first refusal).
    Delete {
        /// Which fallback, which PDBs, why.
        fallback: Fallback,
        /// How long the pod must have been refused first.
        after: Duration,
    },
    /// Its namespace is being deleted: every eviction is 403 `NamespaceTerminating`, and the
    /// namespace controller removes the pod. The drain waits for it to go.
    NamespaceTerminating,
}

/// Why the eviction API would let the pod go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pass {
    /// No PodDisruptionBudget covers it.
    NoPdb,
    /// Pending, Succeeded, Failed or terminating: no budget check (`canIgnorePDB`).
    NotRunning,
    /// Not Ready, and its PDB lets unhealthy pods go without spending the budget.
    Unhealthy {
        /// The PDB.
        pdb: String,
        /// `AlwaysAllow`, or the healthy budget of the default `IfHealthyBudget` policy.
        policy: UnhealthyPolicy,
    },
    /// Its PDB has disruptions to spare.
    Budget {
        /// The PDB.
        pdb: String,
        /// `disruptionsAllowed` before this eviction.
        allowed: i32,
    },
}

/// Which rule let a not-Ready pod go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnhealthyPolicy {
    /// `unhealthyPodEvictionPolicy: AlwaysAllow`.
    AlwaysAllow,
    /// `IfHealthyBudget` (the default): the application is within its budget.
    IfHealthyBudget {
        /// `currentHealthy`.
        healthy: i32,
        /// `desiredHealthy`.
        desired: i32,
    },
}

/// Why the eviction API refuses the pod for now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// No disruption to spare until replacements are healthy.
    Recovering {
        /// The PDB.
        pdb: String,
        /// `currentHealthy`.
        healthy: i32,
        /// `desiredHealthy`.
        desired: i32,
        /// `expectedPods`.
        expected: i32,
        /// The pod itself is not Ready (and `unhealthy_fallback` is off).
        unready: bool,
    },
    /// The PDB has no status for its current spec yet (the API answers 429 "still being
    /// processed"), has counted no pod, or reports a negative `disruptionsAllowed`.
    NoCurrentStatus {
        /// The PDB.
        pdb: String,
    },
    /// A direct deletion would take a second pod of a PDB down while another node's drain,
    /// running at the same time, has one down ([`shared_budget_short`]).
    SharedBudget {
        /// The PDBs of the deletion.
        pdbs: Vec<String>,
        /// The ones short of healthy pods off this node.
        short: Vec<String>,
    },
    /// Covered by several PDBs, at least one of which would drop below its budget.
    SeveralPdbs {
        /// Every covering PDB.
        pdbs: Vec<String>,
        /// The ones that stand in the way, with their counts.
        short: Vec<String>,
    },
}

/// The kinds of direct deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FallbackKind {
    /// A PDB that allows no disruption even at full health.
    Deadlock,
    /// Several PDBs, each within its budget without the pod.
    SeveralPdbs,
    /// A pod that is not Ready under a budget that cannot recover.
    Unhealthy,
}

/// A direct deletion: which kind, the PDBs covering the pod, and a sentence saying why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    /// Which fallback.
    pub kind: FallbackKind,
    /// The PDBs covering the pod.
    pub pdbs: Vec<String>,
    /// Why, for logs and reports.
    pub why: String,
}

/// Pending, Succeeded, Failed or terminating: the eviction API deletes it without asking any
/// PDB (`canIgnorePDB`). A pod with no phase yet counts as Pending.
pub fn ignores_budgets(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    matches!(phase, "Pending" | "Succeeded" | "Failed") || is_terminating(pod)
}

/// `spec.unhealthyPodEvictionPolicy: AlwaysAllow`. Any other value, or none, is the default
/// `IfHealthyBudget` (what the eviction handler does with it).
pub fn always_allows_unhealthy(pdb: &PodDisruptionBudget) -> bool {
    pdb.spec.as_ref().and_then(|s| s.unhealthy_pod_eviction_policy.as_deref()) == Some("AlwaysAllow")
}

/// The decision for `pod`. See the module docs.
pub fn decide(pod: &Pod, view: &View<'_>, rules: &Rules) -> Decision {
    if view.namespace_terminating {
        return Decision::NamespaceTerminating;
    }
    if ignores_budgets(pod) {
        return Decision::Evict(Pass::NotRunning);
    }
    let decision = match pdb::matching(pod, view.pdbs).as_slice() {
        [] => Decision::Evict(Pass::NoPdb),
        [one] => single(pod, one, rules),
        several => several_pdbs(pod, several, view.pods, rules),
    };
    match (decision, view.shared_with_other_drains) {
        (Decision::Delete { fallback, after }, Some(shared)) if fallback.kind != FallbackKind::Unhealthy => {
            match shared_budget_short(pod, shared, view, &fallback.pdbs) {
                Some(short) => Decision::Wait(Hold::SharedBudget { pdbs: fallback.pdbs, short }),
                None => Decision::Delete { fallback, after },
            }
        }
        (d, _) => d,
    }
}

/// With other nodes drained at the same time, a direct deletion under a PDB that allows no
/// disruption (or under several PDBs) keeps to what a drain of this node alone may do: the pods
/// of each PDB that are *not* on this node must be healthy, as many as the PDB expects less the
/// Ready pods this node holds, so the deletions take away only this node's healthy pods. A pod
/// another drain deleted a moment ago, whose replacement is not Ready yet, makes this drain
/// wait for it instead of taking a second pod down; so does that replacement when it landed on
/// this very node before its cordon: a pod here that is not Ready is no healthy pod this drain
/// takes away, it stands for the other drain's. Counted from the pods (the status may lag
/// behind a deletion). `Some` names what is short; `None`: the deletion is within what one
/// node's drain may do. The not-Ready fallback is not limited: a pod that is not Ready counts
/// toward no budget.
///
/// Two drains reading the pods at the same moment would both see every pod healthy; so a
/// drain also waits while a node that goes first ([`Shared::ahead`]) still holds a pod of the
/// PDB: of two drains, only the first deletes, and the second then sees its pod gone and
/// waits for the replacement.
pub fn shared_budget_short(
    pod: &Pod,
    shared: Shared<'_>,
    view: &View<'_>,
    pdbs: &[String],
) -> Option<Vec<String>> {
    let Some(pods) = view.pods else {
        return Some(vec!["the namespace's pods were not read".into()]);
    };
    let node = shared.node;
    let node_of = |q: &Pod| q.spec.as_ref().and_then(|s| s.node_name.clone());
    let on_node = |q: &Pod| node_of(q).as_deref() == Some(node);
    let mut short = Vec::new();
    for budget in pdb::matching(pod, view.pdbs) {
        let name = name_of(budget);
        if !pdbs.contains(&name) {
            continue;
        }
        let expected = budget.status.as_ref().map_or(0, |s| s.expected_pods);
        let selected: Vec<&Pod> = pods.iter().filter(|q| pdb::selects(budget, q)).collect();
        let healthy = |q: &Pod| is_ready(q) && !is_terminating(q);
        let healthy_here = selected.iter().filter(|q| on_node(q) && healthy(q)).count() as i32;
        let healthy_elsewhere = selected.iter().filter(|q| !on_node(q) && healthy(q)).count() as i32;
        let want = expected - healthy_here;
        let first = selected
            .iter()
            .filter(|q| !is_terminating(q))
            .filter_map(|q| node_of(q))
            .find(|n| shared.ahead.contains(n));
        if let Some(first) = first {
            short.push(format!(
                "{name} (node {first}, drained at the same time and first, still has a pod of it)"
            ));
        } else if healthy_elsewhere < want {
            short.push(format!(
                "{name} ({healthy_elsewhere} of {want} pods off this node healthy: another drain's pod is not replaced yet)"
            ));
        }
    }
    (!short.is_empty()).then_some(short)
}

fn single(pod: &Pod, budget: &PodDisruptionBudget, rules: &Rules) -> Decision {
    let name = name_of(budget);
    let st = budget.status.clone().unwrap_or_default();
    let (healthy, desired, expected) = (st.current_healthy, st.desired_healthy, st.expected_pods);
    let ready = is_ready(pod);
    if !ready {
        if always_allows_unhealthy(budget) {
            return Decision::Evict(Pass::Unhealthy { pdb: name, policy: UnhealthyPolicy::AlwaysAllow });
        }
        if healthy >= desired && desired > 0 {
            let policy = UnhealthyPolicy::IfHealthyBudget { healthy, desired };
            return Decision::Evict(Pass::Unhealthy { pdb: name, policy });
        }
    }
    let current = budget
        .status
        .as_ref()
        .is_some_and(|s| s.observed_generation.unwrap_or(0) >= budget.metadata.generation.unwrap_or(0));
    if !current || st.disruptions_allowed < 0 {
        return Decision::Wait(Hold::NoCurrentStatus { pdb: name });
    }
    if st.disruptions_allowed > 0 {
        return Decision::Evict(Pass::Budget { pdb: name, allowed: st.disruptions_allowed });
    }
    // The API answers 429 from here on.
    if !ready && rules.unhealthy_fallback {
        return Decision::Delete {
            fallback: Fallback {
                kind: FallbackKind::Unhealthy,
                why: format!(
                    "not Ready, and PodDisruptionBudget {name} cannot recover ({healthy} healthy, {desired} \
                     desired); a pod that is not Ready counts toward no budget"
                ),
                pdbs: vec![name],
            },
            after: Duration::ZERO,
        };
    }
    if expected > 0 && expected <= desired {
        return Decision::Delete {
            fallback: Fallback {
                kind: FallbackKind::Deadlock,
                why: format!(
                    "PodDisruptionBudget {name} allows no disruption even at full health ({expected} \
                     expected, {desired} desired)"
                ),
                pdbs: vec![name],
            },
            after: rules.fallback_after,
        };
    }
    if expected == 0 {
        // The controller has counted no pod, yet this one is covered: its status is behind.
        return Decision::Wait(Hold::NoCurrentStatus { pdb: name });
    }
    Decision::Wait(Hold::Recovering { pdb: name, healthy, desired, expected, unready: !ready })
}

/// `desiredHealthy` of a PDB: an integer `minAvailable` is exact from the spec; otherwise the
/// status's value (it depends on the workload's scale, which only the controller reads).
fn desired_of(budget: &PodDisruptionBudget) -> i32 {
    match budget.spec.as_ref().and_then(|s| s.min_available.as_ref()) {
        Some(IntOrString::Int(n)) => *n,
        _ => budget.status.as_ref().map_or(0, |s| s.desired_healthy),
    }
}

fn several_pdbs(
    pod: &Pod,
    covering: &[&PodDisruptionBudget],
    pods: Option<&[Pod]>,
    rules: &Rules,
) -> Decision {
    let names: Vec<String> = covering.iter().map(|p| name_of(p)).collect();
    let Some(pods) = pods else {
        return Decision::Wait(Hold::SeveralPdbs {
            pdbs: names,
            short: vec!["the namespace's pods were not read".into()],
        });
    };
    let ready = is_ready(pod);
    let me = (&pod.metadata.namespace, &pod.metadata.name);
    let mut short = Vec::new();
    for budget in covering {
        let name = name_of(budget);
        let Some(st) = budget.status.as_ref() else {
            short.push(format!("{name} has no status yet"));
            continue;
        };
        let desired = desired_of(budget);
        if st.expected_pods > 0 && st.expected_pods <= desired {
            continue; // deadlocked: it never allows a disruption, whatever the drain does
        }
        let disrupted = st.disrupted_pods.as_ref();
        // Healthy pods without this one, counted from the pods: the status may leave out a pod
        // another of its PDBs counted.
        let others = pods
            .iter()
            .filter(|q| (&q.metadata.namespace, &q.metadata.name) != me)
            .filter(|q| pdb::selects(budget, q) && is_ready(q) && !is_terminating(q))
            .filter(|q| disrupted.is_none_or(|d| !d.contains_key(q.metadata.name.as_deref().unwrap_or(""))))
            .count() as i32;
        if others >= desired || (!ready && rules.unhealthy_fallback) {
            continue;
        }
        let healthy = others + i32::from(ready);
        short.push(format!("{name} ({healthy} healthy, {desired} desired)"));
    }
    if !short.is_empty() {
        return Decision::Wait(Hold::SeveralPdbs { pdbs: names, short });
    }
    Decision::Delete {
        fallback: Fallback {
            kind: FallbackKind::SeveralPdbs,
            why: format!(
                "covered by {} PodDisruptionBudgets ({}), which the eviction API cannot evict; each \
                 stays within its budget without it",
                names.len(),
                names.join(", ")
            ),
            pdbs: names,
        },
        after: rules.fallback_after,
    }
}

impl fmt::Display for Pass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pass::NoPdb => f.write_str("no PodDisruptionBudget covers it"),
            Pass::NotRunning => {
                f.write_str("not running (or already terminating): the eviction API checks no budget")
            }
            Pass::Unhealthy { pdb, policy: UnhealthyPolicy::AlwaysAllow } => {
                write!(f, "not Ready; PodDisruptionBudget {pdb} has unhealthyPodEvictionPolicy AlwaysAllow")
            }
            Pass::Unhealthy { pdb, policy: UnhealthyPolicy::IfHealthyBudget { healthy, desired } } => write!(
                f,
                "not Ready; PodDisruptionBudget {pdb} is within its budget ({healthy} healthy, {desired} \
                 desired), so it costs no disruption"
            ),
            Pass::Budget { pdb, allowed } => {
                write!(f, "PodDisruptionBudget {pdb} allows {allowed} disruption(s)")
            }
        }
    }
}

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hold::Recovering { pdb, healthy, desired, expected, unready: false } => write!(
                f,
                "blocked by PodDisruptionBudget {pdb} ({healthy} healthy, {desired} desired, {expected} \
                 expected) until replacement pods are healthy"
            ),
            Hold::Recovering { pdb, healthy, desired, expected, unready: true } => write!(
                f,
                "not Ready, blocked by PodDisruptionBudget {pdb} ({healthy} healthy, {desired} desired, \
                 {expected} expected); drain.unhealthy_fallback is off, so it waits for the budget"
            ),
            Hold::NoCurrentStatus { pdb } => {
                write!(f, "PodDisruptionBudget {pdb} has no current status yet")
            }
            Hold::SharedBudget { pdbs, short } => write!(
                f,
                "PodDisruptionBudget {} allows no eviction, and other nodes are drained at the same time: \
                 waits until {}",
                pdbs.join(", "),
                short.join(", ")
            ),
            Hold::SeveralPdbs { pdbs, short } => write!(
                f,
                "covered by {} PodDisruptionBudgets ({}), which the eviction API cannot evict; deleting \
                 it would break {}",
                pdbs.len(),
                pdbs.join(", "),
                short.join(", ")
            ),
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Evict(p) => write!(f, "evicted: {p}"),
            Decision::Wait(h) => write!(f, "waits: {h}"),
            Decision::Delete { fallback, after } if after.is_zero() => {
                write!(f, "deleted directly: {}", fallback.why)
            }
            Decision::Delete { fallback, after } => write!(
                f,
                "deleted directly after {} of refusals: {}",
                crate::duration::format(*after),
                fallback.why
            ),
            Decision::NamespaceTerminating => f.write_str(
                "its namespace is being deleted: waited for (the namespace controller removes it)",
            ),
        }
    }
}

impl Decision {
    /// The PDB a refusal is attributed to, when there is exactly one.
    pub fn pdb(&self) -> Option<&str> {
        match self {
            Decision::Evict(Pass::Unhealthy { pdb, .. } | Pass::Budget { pdb, .. })
            | Decision::Wait(Hold::Recovering { pdb, .. } | Hold::NoCurrentStatus { pdb }) => Some(pdb),
            Decision::Delete { fallback, .. } if fallback.pdbs.len() == 1 => Some(&fallback.pdbs[0]),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drain::fixtures::{PdbFixture as _, PodFixture as _};

    const RULES: Rules = Rules { fallback_after: Duration::from_secs(60), unhealthy_fallback: true };

    fn view(pdbs: &[PodDisruptionBudget]) -> View<'_> {
        View { pdbs, pods: None, namespace_terminating: false, shared_with_other_drains: None }
    }

    fn web(n: &str) -> Pod {
        Pod::test(n).label("app", "web").owned_by_replicaset("web")
    }

    fn pdb(status: (i32, i32, i32, i32)) -> PodDisruptionBudget {
        let (a, h, d, e) = status;
        PodDisruptionBudget::test("web").selecting("app", "web").status(a, h, d, e)
    }

    #[test]
    fn no_pdb_and_not_running_pods_pass() {
        assert_eq!(decide(&web("w"), &view(&[]), &RULES), Decision::Evict(Pass::NoPdb));
        let pdbs = [pdb((0, 1, 1, 1))];
        for p in [web("w").phase("Pending"), web("w").phase("Succeeded"), web("w").terminating()] {
            assert_eq!(decide(&p, &view(&pdbs), &RULES), Decision::Evict(Pass::NotRunning));
        }
    }

    #[test]
    fn namespace_terminating_comes_first() {
        let v = View { pdbs: &[], pods: None, namespace_terminating: true, shared_with_other_drains: None };
        assert_eq!(decide(&web("w").terminating(), &v, &RULES), Decision::NamespaceTerminating);
    }

    #[test]
    fn ready_pod_spends_the_budget_or_waits() {
        assert_eq!(
            decide(&web("w"), &view(&[pdb((1, 3, 2, 3))]), &RULES),
            Decision::Evict(Pass::Budget { pdb: "web".into(), allowed: 1 })
        );
        let d = decide(&web("w"), &view(&[pdb((0, 2, 2, 3))]), &RULES);
        assert!(matches!(d, Decision::Wait(Hold::Recovering { unready: false, .. })), "{d:?}");
        assert!(d.to_string().contains("until replacement pods are healthy"), "{d}");
    }

    #[test]
    fn deadlock_is_deleted_after_the_fallback_budget() {
        let d = decide(&web("w"), &view(&[pdb((0, 1, 1, 1))]), &RULES);
        let Decision::Delete { fallback, after } = &d else { panic!("{d:?}") };
        assert_eq!((fallback.kind, *after), (FallbackKind::Deadlock, Duration::from_secs(60)));
        assert!(fallback.why.starts_with("PodDisruptionBudget web allows no disruption even at full health"));
    }

    fn on(mut pod: Pod, node: &str) -> Pod {
        pod.spec.get_or_insert_with(Default::default).node_name = Some(node.into());
        pod
    }

    #[test]
    fn with_other_drains_in_flight_a_deadlock_deletion_waits_for_their_pods_to_be_replaced() {
        // Two replicas under minAvailable 2 (deadlocked), one on each of two nodes drained at
        // the same time. k8s-node1's drain deleted web-a; its replacement is not Ready yet.
        let pdbs = [pdb((0, 1, 2, 2))];
        let b = on(web("web-b"), "k8s-node2");
        let pods = vec![on(web("web-a2").not_ready(), "k8s-node3"), b.clone()];
        let shared = View {
            pdbs: &pdbs,
            pods: Some(&pods),
            namespace_terminating: false,
            shared_with_other_drains: Some(Shared { node: "k8s-node2", ahead: &[] }),
        };
        let d = decide(&b, &shared, &RULES);
        let Decision::Wait(Hold::SharedBudget { short, .. }) = &d else { panic!("{d:?}") };
        assert_eq!(short.len(), 1, "{short:?}");
        assert!(d.to_string().contains("other nodes are drained at the same time"), "{d}");
        // One node at a time, the single-node rule stands (today's behaviour).
        let alone = View { shared_with_other_drains: None, ..shared };
        assert!(matches!(decide(&b, &alone, &RULES), Decision::Delete { .. }));
        // The replacement is Ready: every pod off k8s-node2 is healthy, the deletion goes.
        let replaced = vec![on(web("web-a2"), "k8s-node3"), b.clone()];
        let shared = View { pods: Some(&replaced), ..shared };
        let d = decide(&b, &shared, &RULES);
        assert!(
            matches!(&d, Decision::Delete { fallback, .. } if fallback.kind == FallbackKind::Deadlock),
            "{d:?}"
        );
        // Two drains deciding at once: the one behind waits while the one ahead holds a pod.
        let ahead = ["k8s-node1".to_string()];
        let both = vec![on(web("web-a"), "k8s-node1"), b.clone()];
        let behind = View {
            pods: Some(&both),
            shared_with_other_drains: Some(Shared { node: "k8s-node2", ahead: &ahead }),
            ..shared
        };
        let d = decide(&b, &behind, &RULES);
        assert!(d.to_string().contains("node k8s-node1, drained at the same time and first"), "{d}");
        let first = View {
            pods: Some(&both),
            shared_with_other_drains: Some(Shared { node: "k8s-node1", ahead: &[] }),
            ..shared
        };
        assert!(matches!(decide(&both[0], &first, &RULES), Decision::Delete { .. }));
        // Without the pods read, it waits (fail closed).
        let unread = View { pods: None, ..shared };
        assert!(matches!(decide(&b, &unread, &RULES), Decision::Wait(Hold::SharedBudget { .. })));
        // A not-Ready pod still goes at once: it counts toward no budget.
        let sick = on(web("web-b").not_ready(), "k8s-node2");
        let d = decide(&sick, &View { pdbs: &[pdb((0, 0, 2, 2))], ..shared }, &RULES);
        assert!(
            matches!(&d, Decision::Delete { fallback, .. } if fallback.kind == FallbackKind::Unhealthy),
            "{d:?}"
        );
    }

    #[test]
    fn with_other_drains_in_flight_an_unready_replacement_on_this_node_is_not_its_own_to_take() {
        // Three replicas under minAvailable 3 (deadlocked), on k8s-node1..3. k8s-node1's drain
        // deleted web-a; its replacement web-a2 landed on k8s-node2 before that node's cordon
        // and is not Ready yet. Deleting web-b now would leave 1 of 3 healthy: two nodes' worth.
        let pdbs = [pdb((0, 2, 3, 3))];
        let b = on(web("web-b"), "k8s-node2");
        let c = on(web("web-c"), "k8s-node3");
        let pods = vec![on(web("web-a2").not_ready(), "k8s-node2"), b.clone(), c.clone()];
        let ahead = ["k8s-node1".to_string()];
        let v = View {
            pdbs: &pdbs,
            pods: Some(&pods),
            namespace_terminating: false,
            shared_with_other_drains: Some(Shared { node: "k8s-node2", ahead: &ahead }),
        };
        let d = decide(&b, &v, &RULES);
        let Decision::Wait(Hold::SharedBudget { short, .. }) = &d else { panic!("{d:?}") };
        assert_eq!(
            short,
            &["web (1 of 2 pods off this node healthy: another drain's pod is not replaced yet)"]
        );
        // The replacement went (evicted from here, Pending) and its own is Ready elsewhere.
        let replaced = vec![b.clone(), c.clone(), on(web("web-a3"), "k8s-node4")];
        let d = decide(&b, &View { pods: Some(&replaced), ..v }, &RULES);
        assert!(matches!(d, Decision::Delete { .. }), "{d:?}");
        // Two Ready pods here are both this node's to take: one healthy pod off it is enough.
        let two_here = vec![b.clone(), on(web("web-b2"), "k8s-node2"), c];
        let d = decide(&b, &View { pods: Some(&two_here), ..v }, &RULES);
        assert!(matches!(d, Decision::Delete { .. }), "{d:?}");
    }

    #[test]
    fn crash_looping_pods_under_a_budget_that_cannot_recover_are_deleted_at_once() {
        // real-api-answers.md "crash": maxUnavailable 25%, 3 replicas, none Ready.
        let pdbs = [pdb((0, 0, 2, 3))];
        let d = decide(&web("w").not_ready(), &view(&pdbs), &RULES);
        let Decision::Delete { fallback, after } = &d else { panic!("{d:?}") };
        assert_eq!((fallback.kind, *after), (FallbackKind::Unhealthy, Duration::ZERO));
        assert!(
            fallback
                .why
                .starts_with("not Ready, and PodDisruptionBudget web cannot recover (0 healthy, 2 desired)")
        );
        let off = Rules { unhealthy_fallback: false, ..RULES };
        let d = decide(&web("w").not_ready(), &view(&pdbs), &off);
        assert!(matches!(d, Decision::Wait(Hold::Recovering { unready: true, .. })), "{d:?}");
        assert!(d.to_string().contains("not Ready"), "{d}");
    }

    #[test]
    fn unhealthy_policy_follows_eviction_go() {
        let always = [pdb((0, 0, 2, 3)).always_allow()];
        assert_eq!(
            decide(&web("w").not_ready(), &view(&always), &RULES),
            Decision::Evict(Pass::Unhealthy { pdb: "web".into(), policy: UnhealthyPolicy::AlwaysAllow })
        );
        // IfHealthyBudget: within budget (3 >= 3 > 0), an unready pod goes without spending it.
        assert_eq!(
            decide(&web("w").not_ready(), &view(&[pdb((0, 3, 3, 4))]), &RULES),
            Decision::Evict(Pass::Unhealthy {
                pdb: "web".into(),
                policy: UnhealthyPolicy::IfHealthyBudget { healthy: 3, desired: 3 }
            })
        );
        // desiredHealthy 0 is not "within budget": the budget check applies (a quirk upstream).
        assert_eq!(
            decide(&web("w").not_ready(), &view(&[pdb((1, 1, 0, 2))]), &RULES),
            Decision::Evict(Pass::Budget { pdb: "web".into(), allowed: 1 })
        );
        // AlwaysAllow never frees a Ready pod.
        assert!(matches!(decide(&web("w"), &view(&always), &RULES), Decision::Wait(_)));
    }

    #[test]
    fn a_lagging_or_missing_status_waits_but_always_allow_still_passes() {
        let mut lag = pdb((5, 5, 0, 5)).always_allow();
        lag.metadata.generation = Some(2);
        lag.status.as_mut().unwrap().observed_generation = Some(1);
        assert!(matches!(
            decide(&web("w"), &view(std::slice::from_ref(&lag)), &RULES),
            Decision::Wait(Hold::NoCurrentStatus { .. })
        ));
        assert!(matches!(
            decide(&web("w").not_ready(), &view(std::slice::from_ref(&lag)), &RULES),
            Decision::Evict(Pass::Unhealthy { .. })
        ));
        let none = [PodDisruptionBudget::test("web").selecting("app", "web")];
        assert!(matches!(
            decide(&web("w"), &view(&none), &RULES),
            Decision::Wait(Hold::NoCurrentStatus { .. })
        ));
        assert!(matches!(
            decide(&web("w"), &view(&[pdb((0, 0, 0, 0))]), &RULES),
            Decision::Wait(Hold::NoCurrentStatus { .. })
        ));
    }

    fn two(a: PodDisruptionBudget, b: PodDisruptionBudget) -> Vec<PodDisruptionBudget> {
        vec![a, b]
    }

    #[test]
    fn several_pdbs_delete_only_within_every_budget() {
        // Three replicas, both PDBs want 2 healthy; web-2 is not Ready.
        let a = PodDisruptionBudget::test("a").selecting("app", "web").min_available(2).status(0, 2, 2, 3);
        let b = PodDisruptionBudget::test("b").selecting("app", "web").status(0, 1, 2, 3);
        let pdbs = two(a, b);
        let mut pods = vec![web("web-0"), web("web-1"), web("web-2").not_ready()];
        let v = View {
            pdbs: &pdbs,
            pods: Some(&pods),
            namespace_terminating: false,
            shared_with_other_drains: None,
        };
        let d = decide(&pods[0], &v, &RULES);
        let Decision::Wait(Hold::SeveralPdbs { short, .. }) = &d else { panic!("{d:?}") };
        assert_eq!(short, &["a (2 healthy, 2 desired)", "b (2 healthy, 2 desired)"], "counted from the pods");
        // web-2 becomes Ready: each keeps 2 without web-0.
        pods[2] = web("web-2");
        let v = View {
            pdbs: &pdbs,
            pods: Some(&pods),
            namespace_terminating: false,
            shared_with_other_drains: None,
        };
        let d = decide(&pods[0], &v, &RULES);
        let Decision::Delete { fallback, after } = &d else { panic!("{d:?}") };
        assert_eq!(
            (fallback.kind, fallback.pdbs.clone(), *after),
            (FallbackKind::SeveralPdbs, vec!["a".into(), "b".into()], RULES.fallback_after)
        );
        // Unread pods: wait.
        let v =
            View { pdbs: &pdbs, pods: None, namespace_terminating: false, shared_with_other_drains: None };
        assert!(matches!(decide(&pods[0], &v, &RULES), Decision::Wait(Hold::SeveralPdbs { .. })));
    }

    #[test]
    fn several_pdbs_ignore_a_deadlocked_one_and_free_unready_pods() {
        // "db" has 1 replica under minAvailable 1 (deadlocked); "all" allows 1 of 1.
        let db = PodDisruptionBudget::test("db").selecting("app", "web").min_available(1).status(0, 1, 1, 1);
        let all = PodDisruptionBudget::test("all").empty_selector().status(1, 1, 0, 1);
        let pdbs = two(db, all);
        let pods = vec![web("web-0")];
        let v = View {
            pdbs: &pdbs,
            pods: Some(&pods),
            namespace_terminating: false,
            shared_with_other_drains: None,
        };
        assert!(matches!(decide(&pods[0], &v, &RULES), Decision::Delete { .. }));
        // Not Ready under two budgets it would break if it were Ready: frees nothing, costs nothing.
        let a = PodDisruptionBudget::test("a").selecting("app", "web").min_available(2).status(0, 1, 2, 3);
        let b = PodDisruptionBudget::test("b").selecting("app", "web").min_available(2).status(0, 1, 2, 3);
        let pdbs = two(a, b);
        let pods = vec![web("web-0").not_ready(), web("web-1")];
        let v = View {
            pdbs: &pdbs,
            pods: Some(&pods),
            namespace_terminating: false,
            shared_with_other_drains: None,
        };
        assert!(matches!(
            decide(&pods[0], &v, &RULES),
            Decision::Delete { fallback: Fallback { kind: FallbackKind::SeveralPdbs, .. }, .. }
        ));
        let off = Rules { unhealthy_fallback: false, ..RULES };
        assert!(matches!(decide(&pods[0], &v, &off), Decision::Wait(_)));
    }

    #[test]
    fn several_pdbs_skip_pods_being_evicted() {
        let mut a =
            PodDisruptionBudget::test("a").selecting("app", "web").min_available(1).status(0, 2, 1, 2);
        a.status.as_mut().unwrap().disrupted_pods = Some(
            [(
                "web-1".to_string(),
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
            )]
            .into(),
        );
        let b = PodDisruptionBudget::test("b").empty_selector().status(1, 2, 0, 2);
        let pdbs = two(a, b);
        let pods = vec![web("web-0"), web("web-1")];
        let v = View {
            pdbs: &pdbs,
            pods: Some(&pods),
            namespace_terminating: false,
            shared_with_other_drains: None,
        };
        assert!(
            matches!(decide(&pods[0], &v, &RULES), Decision::Wait(Hold::SeveralPdbs { .. })),
            "web-1 is on its way out"
        );
    }
}
