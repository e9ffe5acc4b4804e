//! PodDisruptionBudget matching and the targeted fallback decision, pure.
//!
//! Matching follows policy/v1: the PDB must be in the pod's namespace; a null selector
//! matches no pod, an empty selector (`{}`) matches every pod in the namespace, and
//! `matchLabels` AND `matchExpressions` must all hold. The seed's `predrain_unstick` read
//! `matchLabels` only (seed-system.md §3), so a PDB written with `matchExpressions` was
//! matched as if it selected everything with the remaining labels.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube_core::{Selector, SelectorExt as _};

/// A PDB's selector, interpreted.
#[derive(Debug, Clone)]
pub enum PdbSelector {
    /// `selector` absent: matches no pod.
    Nothing,
    /// `selector: {}`: every pod in the namespace.
    Everything,
    /// Labels and expressions, all of which must hold.
    Labels(Selector),
    /// An operator the apiserver would have rejected; like the eviction REST handler, such a
    /// PDB matches no pod.
    Invalid(String),
}

/// Interprets the selector of a PDB.
pub fn selector_of(pdb: &PodDisruptionBudget) -> PdbSelector {
    let Some(sel) = pdb.spec.as_ref().and_then(|s| s.selector.clone()) else {
        return PdbSelector::Nothing;
    };
    let empty = sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty());
    if empty {
        return PdbSelector::Everything;
    }
    match Selector::try_from(sel) {
        Ok(s) => PdbSelector::Labels(s),
        Err(e) => PdbSelector::Invalid(e.0),
    }
}

/// Whether `pdb` covers `pod`.
pub fn selects(pdb: &PodDisruptionBudget, pod: &Pod) -> bool {
    if pdb.metadata.namespace != pod.metadata.namespace {
        return false;
    }
    match selector_of(pdb) {
        PdbSelector::Nothing | PdbSelector::Invalid(_) => false,
        PdbSelector::Everything => true,
        PdbSelector::Labels(s) => s.matches(pod.metadata.labels.as_ref().unwrap_or(&Default::default())),
    }
}

/// The PDBs covering `pod`, in input order.
pub fn matching<'a>(pod: &Pod, pdbs: &'a [PodDisruptionBudget]) -> Vec<&'a PodDisruptionBudget> {
    pdbs.iter().filter(|p| selects(p, pod)).collect()
}

/// Name of a PDB (empty when unset).
pub fn name_of(pdb: &PodDisruptionBudget) -> String {
    pdb.metadata.name.clone().unwrap_or_default()
}

/// What a PDB's status says about evicting one more pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// `disruptionsAllowed > 0`: an eviction would pass now.
    Allows(i32),
    /// Zero allowed, but the budget would allow one again once the missing pods are back
    /// (`expectedPods > desiredHealthy`): e.g. minAvailable 2 of 3 right after one eviction.
    /// Waiting is the right answer; deleting would break the budget.
    Recovering,
    /// Zero allowed even at full health (`expectedPods <= desiredHealthy`): a single replica
    /// with minAvailable 1, maxUnavailable 0, minAvailable 100%. Eviction can never pass; this
    /// is the deadlock the seed's `predrain_unstick` broke (seed-system.md §10 item 4).
    Deadlocked,
    /// No status yet, or the status lags the spec (`observedGeneration < generation`): the
    /// apiserver answers 429 with retryAfterSeconds=10 until the controller catches up.
    Unknown,
}

/// Reads the status of a PDB.
pub fn budget_of(pdb: &PodDisruptionBudget) -> Budget {
    let Some(st) = pdb.status.as_ref() else {
        return Budget::Unknown;
    };
    if let (Some(observed), Some(generation)) = (st.observed_generation, pdb.metadata.generation)
        && observed < generation
    {
        return Budget::Unknown;
    }
    if st.disruptions_allowed > 0 {
        Budget::Allows(st.disruptions_allowed)
    } else if st.expected_pods > 0 && st.expected_pods <= st.desired_healthy {
        Budget::Deadlocked
    } else if st.expected_pods == 0 {
        // The controller has not counted any pod, yet the caller found one it covers.
        Budget::Unknown
    } else {
        Budget::Recovering
    }
}

/// The PDB name in an eviction 429 cause: "The disruption budget web-pdb needs 2 healthy
/// pods and has 1 currently" or "The disruption budget web-pdb is still being processed by
/// the server." (kubernetes pkg/registry/core/pod/storage/eviction.go).
pub fn pdb_name_from_message(message: &str) -> Option<String> {
    let rest = message.split("disruption budget ").nth(1)?;
    let name: String =
        rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.').collect();
    let name = name.trim_end_matches('.').to_string();
    (!name.is_empty()).then_some(name)
}

/// What to do with a pod the eviction API keeps refusing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallback {
    /// Delete the pod directly (its own grace period); `why` goes to the log.
    Delete { pdbs: Vec<String>, why: String },
    /// Keep retrying the eviction; `why` goes to the report if the deadline passes.
    Wait { why: String },
}

/// Whether an eviction-refused pod goes to the targeted fallback.
///
/// - Covered by several PDBs (the eviction API answers 500 forever, kubernetes#75957):
///   delete once `fallback_after` has passed.
/// - Covered by a [`Budget::Deadlocked`] PDB: delete once `fallback_after` has passed.
/// - Anything else (budget allows, recovering, unknown, no PDB found): wait and retry.
pub fn fallback(
    pod: &Pod,
    pdbs: &[PodDisruptionBudget],
    blocked_for: Duration,
    fallback_after: Duration,
) -> Fallback {
    let covering = matching(pod, pdbs);
    let names: Vec<String> = covering.iter().map(|p| name_of(p)).collect();
    let due = blocked_for >= fallback_after;
    let wait_budget =
        || format!("fallback budget {} not used up yet", crate::duration::format(fallback_after));
    if covering.len() > 1 {
        return if due {
            Fallback::Delete {
                why: format!(
                    "covered by {} PodDisruptionBudgets ({}); the eviction API cannot evict it",
                    names.len(),
                    names.join(", ")
                ),
                pdbs: names,
            }
        } else {
            Fallback::Wait {
                why: format!(
                    "covered by several PodDisruptionBudgets ({}); {}",
                    names.join(", "),
                    wait_budget()
                ),
            }
        };
    }
    let Some(pdb) = covering.first() else {
        return Fallback::Wait {
            why: "eviction refused but no PodDisruptionBudget covers it now; retrying".into(),
        };
    };
    let name = name_of(pdb);
    match budget_of(pdb) {
        Budget::Deadlocked if due => Fallback::Delete {
            why: format!("PodDisruptionBudget {name} allows no disruption even at full health"),
            pdbs: names,
        },
        Budget::Deadlocked => Fallback::Wait {
            why: format!("blocked by PodDisruptionBudget {name} (deadlocked); {}", wait_budget()),
        },
        Budget::Recovering => Fallback::Wait {
            why: format!(
                "blocked by PodDisruptionBudget {name}: waiting for replacement pods to become healthy"
            ),
        },
        Budget::Allows(n) => {
            Fallback::Wait { why: format!("PodDisruptionBudget {name} allows {n} disruption(s); retrying") }
        }
        Budget::Unknown => {
            Fallback::Wait { why: format!("PodDisruptionBudget {name} has no current status yet; retrying") }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drain::fixtures::{PdbFixture as _, PodFixture as _};

    fn web() -> Pod {
        Pod::test("web-1").label("app", "web").label("tier", "front")
    }

    #[test]
    fn null_selector_matches_nothing() {
        assert!(!selects(&PodDisruptionBudget::test("p"), &web()));
        assert!(matches!(selector_of(&PodDisruptionBudget::test("p")), PdbSelector::Nothing));
    }

    #[test]
    fn empty_selector_matches_every_pod_in_its_namespace_only() {
        let pdb = PodDisruptionBudget::test("all").empty_selector();
        assert!(selects(&pdb, &web()));
        assert!(selects(&pdb, &Pod::test("unlabelled")));
        assert!(!selects(&pdb, &web().in_ns("other")));
    }

    #[test]
    fn match_labels_must_all_hold() {
        assert!(selects(&PodDisruptionBudget::test("p").selecting("app", "web"), &web()));
        assert!(selects(
            &PodDisruptionBudget::test("p").selecting("app", "web").selecting("tier", "front"),
            &web()
        ));
        assert!(!selects(
            &PodDisruptionBudget::test("p").selecting("app", "web").selecting("tier", "back"),
            &web()
        ));
        assert!(!selects(&PodDisruptionBudget::test("p").selecting("app", "web").in_ns("other"), &web()));
    }

    #[test]
    fn match_expressions_are_honoured() {
        let pdb = |op, vals: &[&str]| PodDisruptionBudget::test("p").expression("app", op, vals);
        assert!(selects(&pdb("In", &["web", "api"]), &web()));
        assert!(!selects(&pdb("In", &["api"]), &web()));
        assert!(selects(&pdb("NotIn", &["api"]), &web()));
        assert!(!selects(&pdb("NotIn", &["web"]), &web()));
        assert!(selects(&pdb("Exists", &[]), &web()));
        assert!(!selects(&pdb("DoesNotExist", &[]), &web()));
        assert!(selects(&pdb("DoesNotExist", &[]), &Pod::test("bare")));
        assert!(!selects(&pdb("Exists", &[]), &Pod::test("bare")));
    }

    #[test]
    fn labels_and_expressions_are_anded() {
        // The seed read matchLabels only and would have matched this PDB.
        let pdb = PodDisruptionBudget::test("p").selecting("app", "web").expression("tier", "In", &["back"]);
        assert!(!selects(&pdb, &web()));
        let pdb = PodDisruptionBudget::test("p").selecting("app", "web").expression("tier", "In", &["front"]);
        assert!(selects(&pdb, &web()));
    }

    #[test]
    fn expressions_only_selector_is_not_empty() {
        let pdb = PodDisruptionBudget::test("p").expression("app", "In", &["db"]);
        assert!(!selects(&pdb, &web()), "an expressions-only selector must not be treated as {{}}");
    }

    #[test]
    fn invalid_operator_matches_nothing() {
        let pdb = PodDisruptionBudget::test("p").expression("app", "Like", &["web"]);
        assert!(matches!(selector_of(&pdb), PdbSelector::Invalid(_)));
        assert!(!selects(&pdb, &web()));
    }

    #[test]
    fn matching_lists_every_covering_pdb() {
        let pdbs = vec![
            PodDisruptionBudget::test("a").selecting("app", "web"),
            PodDisruptionBudget::test("b").expression("tier", "Exists", &[]),
            PodDisruptionBudget::test("c").selecting("app", "db"),
        ];
        let names: Vec<_> = matching(&web(), &pdbs).into_iter().map(name_of).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn budget_reads_status() {
        let p = PodDisruptionBudget::test("p");
        assert_eq!(budget_of(&p), Budget::Unknown);
        assert_eq!(budget_of(&p.clone().status(1, 3, 2, 3)), Budget::Allows(1));
        assert_eq!(budget_of(&p.clone().status(0, 2, 2, 3)), Budget::Recovering);
        assert_eq!(budget_of(&p.clone().status(0, 1, 1, 1)), Budget::Deadlocked);
        assert_eq!(budget_of(&p.clone().status(0, 3, 3, 3)), Budget::Deadlocked, "maxUnavailable 0");
        assert_eq!(budget_of(&p.clone().status(0, 0, 0, 0)), Budget::Unknown);
        let mut lagging = p.status(0, 1, 1, 1);
        lagging.metadata.generation = Some(2);
        lagging.status.as_mut().unwrap().observed_generation = Some(1);
        assert_eq!(budget_of(&lagging), Budget::Unknown);
    }

    #[test]
    fn pdb_name_is_read_from_eviction_causes() {
        assert_eq!(
            pdb_name_from_message("The disruption budget web-pdb needs 2 healthy pods and has 1 currently")
                .as_deref(),
            Some("web-pdb")
        );
        assert_eq!(
            pdb_name_from_message("The disruption budget anubis.v1 is still being processed by the server.")
                .as_deref(),
            Some("anubis.v1")
        );
        assert_eq!(
            pdb_name_from_message("Cannot evict pod as it would violate the pod's disruption budget."),
            None
        );
        assert_eq!(pdb_name_from_message("too many requests"), None);
    }

    const ZERO: Duration = Duration::ZERO;

    #[test]
    fn deadlocked_single_replica_falls_back_at_once_by_default() {
        let pdbs = vec![
            PodDisruptionBudget::test("anubis").selecting("app", "web").min_available(1).status(0, 1, 1, 1),
        ];
        assert!(
            matches!(fallback(&web(), &pdbs, ZERO, ZERO), Fallback::Delete { pdbs, .. } if pdbs == ["anubis"])
        );
    }

    #[test]
    fn deadlocked_waits_for_its_budget() {
        let pdbs = vec![PodDisruptionBudget::test("anubis").selecting("app", "web").status(0, 1, 1, 1)];
        let after = Duration::from_secs(60);
        assert!(matches!(fallback(&web(), &pdbs, Duration::from_secs(59), after), Fallback::Wait { .. }));
        assert!(matches!(fallback(&web(), &pdbs, after, after), Fallback::Delete { .. }));
    }

    #[test]
    fn recovering_budget_is_never_deleted_through() {
        let pdbs = vec![
            PodDisruptionBudget::test("web").selecting("app", "web").min_available(2).status(0, 2, 2, 3),
        ];
        let f = fallback(&web(), &pdbs, Duration::from_secs(3600), ZERO);
        assert!(matches!(f, Fallback::Wait { ref why } if why.contains("replacement")), "{f:?}");
    }

    #[test]
    fn allowing_or_unknown_budget_waits() {
        let allows = vec![PodDisruptionBudget::test("web").selecting("app", "web").status(1, 3, 2, 3)];
        assert!(matches!(fallback(&web(), &allows, Duration::from_secs(3600), ZERO), Fallback::Wait { .. }));
        let unknown = vec![PodDisruptionBudget::test("web").selecting("app", "web")];
        assert!(matches!(fallback(&web(), &unknown, Duration::from_secs(3600), ZERO), Fallback::Wait { .. }));
        assert!(matches!(fallback(&web(), &[], Duration::from_secs(3600), ZERO), Fallback::Wait { .. }));
    }

    #[test]
    fn several_pdbs_fall_back_with_every_name() {
        let pdbs = vec![
            PodDisruptionBudget::test("a").selecting("app", "web").status(1, 3, 2, 3),
            PodDisruptionBudget::test("b").expression("tier", "In", &["front"]).status(1, 3, 2, 3),
        ];
        match fallback(&web(), &pdbs, ZERO, ZERO) {
            Fallback::Delete { pdbs, why } => {
                assert_eq!(pdbs, ["a", "b"]);
                assert!(why.contains("a, b"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(fallback(&web(), &pdbs, ZERO, Duration::from_secs(1)), Fallback::Wait { .. }));
    }
}
