//! Which pods a drain evicts, deletes, waits for, skips or refuses: kubectl's drain filters
//! (`k8s.io/kubectl/pkg/drain/filters.go`) as one pure function over a pod list.
//!
//! Differences from kubectl, on purpose:
//! - DaemonSet pods are always skipped (`--ignore-daemonsets` is implied: a node upgrade
//!   keeps them), mirror pods always skipped.
//! - Finished pods (Succeeded/Failed) are deleted directly instead of evicted: the eviction
//!   API skips the PDB check for them anyway (eviction.go), so a DELETE says the same thing
//!   more plainly.
//! - Pods already terminating are waited for, not evicted again (evicting them returns 200
//!   at once server-side; the request would be wasted).
//! - The chain's own Job pod is never touched (seed-system.md §10 item 3: the agent drained
//!   its own node and died mid-upgrade).

use std::collections::BTreeSet;
use std::fmt;

use k8s_openapi::api::core::v1::Pod;

/// The label every pod of the chain's own Jobs carries.
pub const SELF_LABEL: (&str, &str) = ("app", "k8s-upgrade-chain");

/// Annotation the kubelet puts on the API mirror of a static pod.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// A pod named by namespace and name (and UID when known), for reports and errors.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodRef {
    /// Namespace of the pod.
    pub namespace: String,
    /// Name of the pod.
    pub name: String,
    /// UID of the pod; empty when unknown.
    pub uid: String,
}

impl PodRef {
    /// Namespace and name, no UID.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into(), uid: String::new() }
    }

    /// The reference of a pod object.
    pub fn of(pod: &Pod) -> Self {
        Self {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        }
    }

    /// Same namespace and name (UIDs ignored).
    pub fn same_name(&self, other: &PodRef) -> bool {
        self.namespace == other.namespace && self.name == other.name
    }
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Knobs of the pure selection, mirroring kubectl's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainPolicy {
    /// `--force`: evict pods that no controller will recreate (bare pods, orphaned
    /// DaemonSet pods). Default true, as in the seed.
    pub force: bool,
    /// `--delete-emptydir-data`: evict pods with emptyDir volumes. Default true.
    pub delete_emptydir_data: bool,
    /// The pod running this drain (from `POD_NAMESPACE`/`POD_NAME`), never evicted.
    pub self_pod: Option<PodRef>,
}

impl Default for DrainPolicy {
    fn default() -> Self {
        Self { force: true, delete_emptydir_data: true, self_pod: None }
    }
}

/// Why a pod stays on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// Owned by a DaemonSet that still exists; it tolerates the cordon and is upgraded in place.
    DaemonSet { name: String },
    /// The API mirror of a static pod; only the kubelet can remove it.
    Mirror,
    /// The chain's own Job pod (by `POD_NAME` or by the `app=k8s-upgrade-chain` label).
    OwnPod,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::DaemonSet { name } => write!(f, "managed by DaemonSet {name}"),
            SkipReason::Mirror => write!(f, "mirror of a static pod"),
            SkipReason::OwnPod => write!(f, "the upgrade chain's own pod"),
        }
    }
}

/// Why a drain refuses to start (kubectl: an error-status pod aborts before any eviction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefuseReason {
    /// No controller would recreate it and `force` is off.
    NoController,
    /// Its DaemonSet is gone and `force` is off.
    OrphanedDaemonSet { name: String },
    /// It has emptyDir data and `delete_emptydir_data` is off.
    EmptyDirData,
}

impl fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefuseReason::NoController => {
                write!(f, "declares no controller (set force to evict it anyway)")
            }
            RefuseReason::OrphanedDaemonSet { name } => {
                write!(f, "belongs to DaemonSet {name}, which no longer exists (set force to delete it)")
            }
            RefuseReason::EmptyDirData => {
                write!(f, "has emptyDir data (set delete_emptydir_data to evict it anyway)")
            }
        }
    }
}

/// The decision for every pod on a node.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// To evict through the eviction API (PDBs apply).
    pub evict: Vec<Pod>,
    /// Finished pods, deleted directly.
    pub delete: Vec<Pod>,
    /// Already terminating: only waited for.
    pub terminating: Vec<Pod>,
    /// Left alone, with the reason.
    pub skip: Vec<(PodRef, SkipReason)>,
    /// Pods that stop the drain before any eviction.
    pub refuse: Vec<(PodRef, RefuseReason)>,
    /// Evicted anyway, with kubectl's warning (bare pods and orphaned DaemonSet pods under force).
    pub warnings: Vec<(PodRef, String)>,
}

impl Selection {
    /// Pods the drain must see gone: evicted, deleted or already terminating.
    pub fn to_remove(&self) -> usize {
        self.evict.len() + self.delete.len() + self.terminating.len()
    }
}

/// The controller owner reference of a pod, as `(kind, name)`.
pub fn controller_of(pod: &Pod) -> Option<(&str, &str)> {
    pod.metadata
        .owner_references
        .as_deref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| (o.kind.as_str(), o.name.as_str()))
}

/// Succeeded or Failed.
pub fn is_finished(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded") | Some("Failed"))
}

/// Has a deletion timestamp.
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// The Ready condition is True (`podutil.IsPodReady`, what the disruption controller counts as
/// healthy and the eviction API as not unhealthy). A pod with no conditions is not Ready.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The API mirror of a static pod.
pub fn is_mirror(pod: &Pod) -> bool {
    pod.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(MIRROR_ANNOTATION))
}

/// Uses at least one emptyDir volume.
pub fn has_emptydir(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|vs| vs.iter().any(|v| v.empty_dir.is_some()))
}

/// The chain's own pod: named in the policy, or labelled `app=k8s-upgrade-chain`.
pub fn is_own_pod(pod: &Pod, policy: &DrainPolicy) -> bool {
    let by_name = policy.self_pod.as_ref().is_some_and(|me| me.same_name(&PodRef::of(pod)));
    let by_label =
        pod.metadata.labels.as_ref().and_then(|l| l.get(SELF_LABEL.0)).is_some_and(|v| v == SELF_LABEL.1);
    by_name || by_label
}

/// Sorts every pod into one bucket. `missing_daemonsets` holds `(namespace, name)` of the
/// DaemonSets that owner references point at but that no longer exist.
///
/// Order of the checks follows kubectl (first match wins), with the own-pod guard first.
pub fn select(
    pods: impl IntoIterator<Item = Pod>,
    policy: &DrainPolicy,
    missing_daemonsets: &BTreeSet<(String, String)>,
) -> Selection {
    let mut out = Selection::default();
    for pod in pods {
        let key = PodRef::of(&pod);
        if is_own_pod(&pod, policy) {
            out.skip.push((key, SkipReason::OwnPod));
            continue;
        }
        if is_mirror(&pod) {
            out.skip.push((key, SkipReason::Mirror));
            continue;
        }
        if is_terminating(&pod) {
            out.terminating.push(pod);
            continue;
        }
        let finished = is_finished(&pod);
        let controller = controller_of(&pod).map(|(k, n)| (k.to_string(), n.to_string()));
        if let Some((kind, name)) = &controller
            && kind == "DaemonSet"
            && !finished
        {
            if !missing_daemonsets.contains(&(key.namespace.clone(), name.clone())) {
                out.skip.push((key, SkipReason::DaemonSet { name: name.clone() }));
            } else if policy.force {
                out.warnings
                    .push((key, format!("DaemonSet {name} no longer exists; evicting the orphaned pod")));
                out.evict.push(pod);
            } else {
                out.refuse.push((key, RefuseReason::OrphanedDaemonSet { name: name.clone() }));
            }
            continue;
        }
        if finished {
            out.delete.push(pod);
            continue;
        }
        if has_emptydir(&pod) && !policy.delete_emptydir_data {
            out.refuse.push((key, RefuseReason::EmptyDirData));
            continue;
        }
        if controller.is_none() {
            if !policy.force {
                out.refuse.push((key, RefuseReason::NoController));
                continue;
            }
            out.warnings.push((key, "declares no controller; nothing will recreate it".to_string()));
        }
        out.evict.push(pod);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drain::fixtures::PodFixture as _;

    fn names(pods: &[Pod]) -> Vec<String> {
        pods.iter().map(|p| PodRef::of(p).to_string()).collect()
    }

    fn run(pods: Vec<Pod>, policy: &DrainPolicy) -> Selection {
        select(pods, policy, &BTreeSet::new())
    }

    #[test]
    fn replicaset_pod_is_evicted() {
        let s = run(vec![Pod::test("web-1").owned_by_replicaset("web")], &DrainPolicy::default());
        assert_eq!(names(&s.evict), ["default/web-1"]);
        assert!(s.skip.is_empty() && s.refuse.is_empty() && s.warnings.is_empty());
    }

    #[test]
    fn daemonset_pod_is_skipped() {
        let s = run(vec![Pod::test("calico-x").owned_by_daemonset("calico")], &DrainPolicy::default());
        assert!(s.evict.is_empty());
        assert_eq!(
            s.skip,
            [(PodRef::of(&Pod::test("calico-x")), SkipReason::DaemonSet { name: "calico".into() })]
        );
    }

    #[test]
    fn finished_daemonset_pod_is_deleted() {
        let s =
            run(vec![Pod::test("ds-done").owned_by_daemonset("ds").phase("Failed")], &DrainPolicy::default());
        assert_eq!(names(&s.delete), ["default/ds-done"]);
    }

    #[test]
    fn orphaned_daemonset_pod_needs_force() {
        let missing = BTreeSet::from([("default".to_string(), "gone".to_string())]);
        let pod = || Pod::test("orphan").owned_by_daemonset("gone");
        let forced = select(vec![pod()], &DrainPolicy::default(), &missing);
        assert_eq!(names(&forced.evict), ["default/orphan"]);
        assert_eq!(forced.warnings.len(), 1);
        let unforced = select(vec![pod()], &DrainPolicy { force: false, ..DrainPolicy::default() }, &missing);
        assert!(unforced.evict.is_empty());
        assert_eq!(unforced.refuse[0].1, RefuseReason::OrphanedDaemonSet { name: "gone".into() });
    }

    #[test]
    fn daemonset_in_another_namespace_does_not_orphan() {
        let missing = BTreeSet::from([("other".to_string(), "calico".to_string())]);
        let s = select(
            vec![Pod::test("calico-x").owned_by_daemonset("calico")],
            &DrainPolicy::default(),
            &missing,
        );
        assert!(matches!(s.skip[0].1, SkipReason::DaemonSet { .. }));
    }

    #[test]
    fn mirror_pod_is_skipped_even_when_finished() {
        let s = run(
            vec![Pod::test("kube-apiserver-n1").mirror(), Pod::test("etcd-n1").mirror().phase("Succeeded")],
            &DrainPolicy::default(),
        );
        assert_eq!(s.skip.iter().filter(|(_, r)| *r == SkipReason::Mirror).count(), 2);
        assert!(s.delete.is_empty() && s.evict.is_empty());
    }

    #[test]
    fn finished_pods_are_deleted_not_evicted() {
        let s = run(
            vec![
                Pod::test("job-ok").owned_by_job("backup").phase("Succeeded"),
                Pod::test("bare-failed").phase("Failed"),
            ],
            &DrainPolicy { force: false, delete_emptydir_data: false, self_pod: None },
        );
        assert_eq!(names(&s.delete), ["default/job-ok", "default/bare-failed"]);
        assert!(s.refuse.is_empty(), "finished pods pass every filter, as in kubectl");
    }

    #[test]
    fn bare_pod_is_evicted_with_a_warning_under_force() {
        let s = run(vec![Pod::test("bare")], &DrainPolicy::default());
        assert_eq!(names(&s.evict), ["default/bare"]);
        assert_eq!(s.warnings.len(), 1);
    }

    #[test]
    fn bare_pod_is_refused_without_force() {
        let s = run(vec![Pod::test("bare")], &DrainPolicy { force: false, ..DrainPolicy::default() });
        assert!(s.evict.is_empty());
        assert_eq!(s.refuse[0].1, RefuseReason::NoController);
    }

    #[test]
    fn emptydir_pod_follows_its_flag() {
        let pod = || Pod::test("cache").owned_by_replicaset("cache").with_emptydir();
        assert_eq!(names(&run(vec![pod()], &DrainPolicy::default()).evict), ["default/cache"]);
        let s = run(vec![pod()], &DrainPolicy { delete_emptydir_data: false, ..DrainPolicy::default() });
        assert_eq!(s.refuse[0].1, RefuseReason::EmptyDirData);
    }

    #[test]
    fn emptydir_check_comes_before_controller_check() {
        let s = run(
            vec![Pod::test("bare-cache").with_emptydir()],
            &DrainPolicy { force: false, delete_emptydir_data: false, self_pod: None },
        );
        assert_eq!(s.refuse[0].1, RefuseReason::EmptyDirData);
    }

    #[test]
    fn terminating_pod_is_only_waited_for() {
        let s =
            run(vec![Pod::test("leaving").owned_by_replicaset("web").terminating()], &DrainPolicy::default());
        assert_eq!(names(&s.terminating), ["default/leaving"]);
        assert!(s.evict.is_empty());
        assert_eq!(s.to_remove(), 1);
    }

    #[test]
    fn own_pod_is_never_evicted_by_name() {
        let policy =
            DrainPolicy { self_pod: Some(PodRef::new("upgrade", "worker-n2-abc")), ..DrainPolicy::default() };
        let s = run(
            vec![
                Pod::test("worker-n2-abc").in_ns("upgrade").owned_by_job("worker-n2"),
                Pod::test("worker-n2-abc").owned_by_job("other"),
            ],
            &policy,
        );
        assert_eq!(s.skip.len(), 1);
        assert_eq!(s.skip[0].0.to_string(), "upgrade/worker-n2-abc");
        assert_eq!(s.skip[0].1, SkipReason::OwnPod);
        assert_eq!(names(&s.evict), ["default/worker-n2-abc"], "same name in another namespace is not us");
    }

    #[test]
    fn own_pod_is_never_evicted_by_label_even_if_finished_or_bare() {
        let s = run(
            vec![
                Pod::test("chain-a").label("app", "k8s-upgrade-chain"),
                Pod::test("chain-b").label("app", "k8s-upgrade-chain").phase("Succeeded"),
                Pod::test("other").label("app", "k8s-upgrade-chainx").owned_by_replicaset("x"),
            ],
            &DrainPolicy::default(),
        );
        assert_eq!(s.skip.iter().filter(|(_, r)| *r == SkipReason::OwnPod).count(), 2);
        assert_eq!(names(&s.evict), ["default/other"]);
    }

    #[test]
    fn a_mixed_node_sorts_every_pod_once() {
        let pods = vec![
            Pod::test("web-1").owned_by_replicaset("web"),
            Pod::test("db-0").owned_by_statefulset("db"),
            Pod::test("calico-x").owned_by_daemonset("calico"),
            Pod::test("kube-proxy-n1").mirror(),
            Pod::test("job-ok").owned_by_job("j").phase("Succeeded"),
            Pod::test("bare"),
            Pod::test("leaving").owned_by_replicaset("web").terminating(),
        ];
        let s = run(pods, &DrainPolicy::default());
        assert_eq!(names(&s.evict), ["default/web-1", "default/db-0", "default/bare"]);
        assert_eq!(names(&s.delete), ["default/job-ok"]);
        assert_eq!(names(&s.terminating), ["default/leaving"]);
        assert_eq!(s.skip.len(), 2);
        assert_eq!(s.evict.len() + s.delete.len() + s.terminating.len() + s.skip.len() + s.refuse.len(), 7);
    }

    #[test]
    fn reasons_read_well() {
        assert_eq!(
            SkipReason::DaemonSet { name: "calico".into() }.to_string(),
            "managed by DaemonSet calico"
        );
        assert!(RefuseReason::NoController.to_string().contains("force"));
        assert_eq!(PodRef::new("ns", "p").to_string(), "ns/p");
    }
}
