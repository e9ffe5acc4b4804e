//! PodDisruptionBudget matching, pure (the per-pod decision is in [`super::decide`]).
//!
//! Matching follows policy/v1: the PDB must be in the pod's namespace; a null selector
//! matches no pod, an empty selector (`{}`) matches every pod in the namespace, and
//! `matchLabels` AND `matchExpressions` must all hold. The seed's `predrain_unstick` read
//! `matchLabels` only (seed-system.md §3), so a PDB written with `matchExpressions` was
//! matched as if it selected everything with the remaining labels.

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
}
