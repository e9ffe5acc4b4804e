//! A generated cluster of any size for `rehearse --nodes N --pods-per-node M`: the built-in
//! demonstration cluster's kinds of workload, repeated and spread over the workers the way a
//! scheduler spreads replicas, so a 100-node, 5,000-pod rehearsal is one command away.
//!
//! [`Layout::generate`] decides everything (nodes, namespaces, workloads, where every replica
//! runs) as plain data, without a server; [`load`] stores it in the simulator. Per namespace
//! `team-NN`, up to [`ROUNDS_PER_NAMESPACE`] rounds of [`ROUND`] (26 pods each):
//!
//! | workload | kind | replicas | PodDisruptionBudget |
//! |---|---|---|---|
//! | `web-K` | Deployment | 3 | `minAvailable: 2` |
//! | `api-K` | Deployment | 4 | `maxUnavailable: 1` |
//! | `queue-K` | Deployment | 6 | `maxUnavailable: 25%` |
//! | `frontend-K` | Deployment | 4 | `minAvailable: 50%` |
//! | `batch-K` | Deployment | 2 | none |
//! | `db-K` | StatefulSet | 3 (60 s grace) | `maxUnavailable: 1` |
//! | `cache-K` | StatefulSet | 2 | `minAvailable: 1` |
//! | `ledger-K` | Deployment | 1 | `minAvailable: 1`: the deadlock only the drain's fallback resolves |
//! | `debug-K` | bare pod | 1 | none |
//!
//! plus, on every node, the `calico-node`, `kube-proxy` and `node-exporter` DaemonSet pods; on
//! each control plane its four static pods; CoreDNS (2 replicas); and a `static-site`
//! Deployment without a budget that takes the pods left over, so the cluster holds exactly
//! `nodes × pods-per-node` pods. Replicas go round robin over the workers, so a workload's
//! replicas land on different workers while there are enough of them, except in the first
//! round, where two `web-1` pods share a worker as in the demonstration cluster: its drain
//! waits for a replacement to be Ready before the second eviction passes.

use std::collections::BTreeMap;

use sim::apiserver::{TestApiServer, fixtures as tf};

/// The fewest nodes of a generated cluster: one control plane and one worker.
pub const MIN_NODES: u32 = 2;

/// The most nodes: Kubernetes' documented limit for one cluster ("Considerations for large
/// clusters": no more than 5,000 nodes).
pub const MAX_NODES: u32 = 5_000;

/// The most pods on one node: the kubelet's default `maxPods` (110), also the documented
/// per-node limit for large clusters.
pub const MAX_PODS_PER_NODE: u32 = 110;

/// The most pods in the cluster: the documented limit of 150,000.
pub const MAX_PODS: u64 = 150_000;

/// From this many nodes on, a generated cluster has three control planes (an HA control
/// plane, as clusters of that size run); below it, one.
pub const HA_FROM_NODES: u32 = 10;

/// DaemonSets with a pod on every node: `(namespace, name)`.
pub const DAEMONSETS: [(&str, &str); 3] =
    [("kube-system", "calico-node"), ("kube-system", "kube-proxy"), ("monitoring", "node-exporter")];

/// Static pods on every control plane (the built-in cluster's too).
pub use super::cluster::STATIC_PODS;

/// CoreDNS replicas (kubeadm's default; no PodDisruptionBudget, as kubeadm installs it).
pub const COREDNS_REPLICAS: usize = 2;

/// Rounds of [`ROUND`] per namespace: about 200 pods and 56 PodDisruptionBudgets each.
pub const ROUNDS_PER_NAMESPACE: usize = 8;

/// The termination grace period of every generated pod but the databases' (seconds).
pub const GRACE_SECONDS: i64 = 30;

/// A PodDisruptionBudget's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Integer `minAvailable`.
    MinAvailable(i64),
    /// Percentage `minAvailable`.
    MinAvailablePercent(u8),
    /// Integer `maxUnavailable`.
    MaxUnavailable(i64),
    /// Percentage `maxUnavailable`.
    MaxUnavailablePercent(u8),
}

impl Budget {
    /// How many of `replicas` healthy pods the budget lets go at once, as the disruption
    /// controller computes it (percentages rounded up, `intstr.GetScaledValueFromIntOrPercent`).
    pub fn allowed(&self, replicas: i64) -> i64 {
        let pct = |p: u8| (i64::from(p) * replicas + 99) / 100;
        let desired = match *self {
            Budget::MinAvailable(n) => n,
            Budget::MinAvailablePercent(p) => pct(p),
            Budget::MaxUnavailable(n) => replicas - n,
            Budget::MaxUnavailablePercent(p) => replicas - pct(p),
        };
        (replicas - desired.max(0)).max(0)
    }
}

/// The controller of a generated workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    /// A Deployment with one ReplicaSet.
    Deployment,
    /// A StatefulSet (pods `<name>-<ordinal>`).
    StatefulSet,
    /// A pod without a controller.
    BarePod,
}

/// One workload of the generated cluster and where its replicas run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// Namespace.
    pub namespace: String,
    /// Name (also its `app` label and its PDB's name).
    pub name: String,
    /// Controller.
    pub kind: WorkloadKind,
    /// Its PodDisruptionBudget, if any.
    pub budget: Option<Budget>,
    /// `terminationGracePeriodSeconds` of its pods.
    pub grace_seconds: i64,
    /// The worker (index into [`Layout::workers`]) of each replica, in replica order.
    pub on: Vec<usize>,
}

/// One entry of [`ROUND`]: base name, kind, replicas, budget, grace period.
type Template = (&'static str, WorkloadKind, usize, Option<Budget>, i64);

/// One round of workloads (26 pods): the demonstration cluster's kinds, with each kind of
/// PodDisruptionBudget.
pub const ROUND: [Template; 9] = [
    ("web", WorkloadKind::Deployment, 3, Some(Budget::MinAvailable(2)), GRACE_SECONDS),
    ("api", WorkloadKind::Deployment, 4, Some(Budget::MaxUnavailable(1)), GRACE_SECONDS),
    ("queue", WorkloadKind::Deployment, 6, Some(Budget::MaxUnavailablePercent(25)), GRACE_SECONDS),
    ("frontend", WorkloadKind::Deployment, 4, Some(Budget::MinAvailablePercent(50)), GRACE_SECONDS),
    ("batch", WorkloadKind::Deployment, 2, None, GRACE_SECONDS),
    ("db", WorkloadKind::StatefulSet, 3, Some(Budget::MaxUnavailable(1)), 60),
    ("cache", WorkloadKind::StatefulSet, 2, Some(Budget::MinAvailable(1)), GRACE_SECONDS),
    ("ledger", WorkloadKind::Deployment, 1, Some(Budget::MinAvailable(1)), GRACE_SECONDS),
    ("debug", WorkloadKind::BarePod, 1, None, GRACE_SECONDS),
];

/// Pods in one [`ROUND`].
pub const ROUND_PODS: usize = {
    let mut n = 0;
    let mut i = 0;
    while i < ROUND.len() {
        n += ROUND[i].2;
        i += 1;
    }
    n
};

/// The smallest number of workload pods a generated cluster needs: CoreDNS and one round.
pub const MIN_WORKLOAD_PODS: u64 = (COREDNS_REPLICAS + ROUND_PODS) as u64;

/// The size of a generated cluster: nodes and pods per node on average. Only sizes the
/// generator can lay out within Kubernetes' documented limits can be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterSize {
    nodes: u32,
    pods_per_node: u32,
}

/// Why a [`ClusterSize`] is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Nodes outside [`MIN_NODES`]..=[`MAX_NODES`].
    #[error(
        "--nodes {0}: a generated cluster has {MIN_NODES} to {MAX_NODES} nodes (one control plane and a worker at least; 5,000 is Kubernetes' documented limit)"
    )]
    Nodes(u32),
    /// More than [`MAX_PODS`] pods.
    #[error(
        "--nodes {nodes} --pods-per-node {pods_per_node}: {total} pods, above Kubernetes' documented limit of {MAX_PODS} per cluster"
    )]
    TooManyPods { nodes: u32, pods_per_node: u32, total: u64 },
    /// Not enough pods for CoreDNS and one workload of each kind.
    #[error(
        "--nodes {nodes} --pods-per-node {pods_per_node}: after the DaemonSet and static pods, {left} pod(s) are left for workloads; the generator needs at least {MIN_WORKLOAD_PODS} (CoreDNS and one workload of each kind): raise --pods-per-node"
    )]
    TooFewPods { nodes: u32, pods_per_node: u32, left: u64 },
    /// A worker would carry more than [`MAX_PODS_PER_NODE`] pods.
    #[error(
        "--nodes {nodes} --pods-per-node {pods_per_node}: each worker would carry up to {per_worker} pods (the control planes only run their static and DaemonSet pods), above the kubelet's default maxPods of {MAX_PODS_PER_NODE}: lower --pods-per-node or add nodes"
    )]
    TooManyPerWorker { nodes: u32, pods_per_node: u32, per_worker: u64 },
}

impl ClusterSize {
    /// `nodes` nodes holding `nodes × pods_per_node` pods in all; refused outside Kubernetes'
    /// documented limits (5,000 nodes, 110 pods per node, 150,000 pods) or when too few pods
    /// are left for one workload of each kind.
    pub fn new(nodes: u32, pods_per_node: u32) -> Result<Self, SizeError> {
        if !(MIN_NODES..=MAX_NODES).contains(&nodes) {
            return Err(SizeError::Nodes(nodes));
        }
        let total = u64::from(nodes) * u64::from(pods_per_node);
        if total > MAX_PODS {
            return Err(SizeError::TooManyPods { nodes, pods_per_node, total });
        }
        let size = Self { nodes, pods_per_node };
        let left = total.saturating_sub(size.fixed_pods());
        if left < MIN_WORKLOAD_PODS {
            return Err(SizeError::TooFewPods { nodes, pods_per_node, left });
        }
        // Round robin spreads the workload pods evenly (one more where the division leaves a
        // remainder), plus the one worker that carries two web-1 pods.
        let workers = u64::from(size.workers());
        let per_worker = DAEMONSETS.len() as u64 + left.div_ceil(workers) + 1;
        if per_worker > u64::from(MAX_PODS_PER_NODE) {
            return Err(SizeError::TooManyPerWorker { nodes, pods_per_node, per_worker });
        }
        Ok(size)
    }

    /// Nodes in all.
    pub fn nodes(&self) -> u32 {
        self.nodes
    }

    /// Pods per node on average.
    pub fn pods_per_node(&self) -> u32 {
        self.pods_per_node
    }

    /// Pods in all.
    pub fn pods(&self) -> u64 {
        u64::from(self.nodes) * u64::from(self.pods_per_node)
    }

    /// Control-plane nodes: 3 from [`HA_FROM_NODES`] nodes on, else 1.
    pub fn control_planes(&self) -> u32 {
        if self.nodes >= HA_FROM_NODES { 3 } else { 1 }
    }

    /// Worker nodes.
    pub fn workers(&self) -> u32 {
        self.nodes - self.control_planes()
    }

    /// DaemonSet pods on every node and static pods on every control plane.
    fn fixed_pods(&self) -> u64 {
        u64::from(self.nodes) * DAEMONSETS.len() as u64
            + u64::from(self.control_planes()) * STATIC_PODS.len() as u64
    }
}

impl std::fmt::Display for ClusterSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} nodes ({} control plane{}, {} workers), {} pods",
            self.nodes,
            self.control_planes(),
            if self.control_planes() == 1 { "" } else { "s" },
            self.workers(),
            self.pods()
        )
    }
}

/// Everything a generated cluster holds, decided without a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The size it was generated for.
    pub size: ClusterSize,
    /// Control-plane node names (`k8s-cp1`, ...).
    pub control_planes: Vec<String>,
    /// Worker node names (`k8s-node1`, ...).
    pub workers: Vec<String>,
    /// Application namespaces (`team-01`, ...).
    pub namespaces: Vec<String>,
    /// CoreDNS, the application workloads and bare pods, and the leftover `static-site`.
    pub workloads: Vec<Workload>,
}

impl Layout {
    /// Lays out a cluster of `size`: see the module documentation.
    pub fn generate(size: ClusterSize) -> Self {
        let control_planes: Vec<String> = (1..=size.control_planes()).map(|i| format!("k8s-cp{i}")).collect();
        let workers: Vec<String> = (1..=size.workers()).map(|i| format!("k8s-node{i}")).collect();
        let w = workers.len();
        let mut cursor = 0usize;
        let mut place = |n: usize| -> Vec<usize> {
            let on = (0..n).map(|j| (cursor + j) % w).collect();
            cursor = (cursor + n) % w;
            on
        };
        let mut workloads = vec![Workload {
            namespace: "kube-system".into(),
            name: "coredns".into(),
            kind: WorkloadKind::Deployment,
            budget: None,
            grace_seconds: GRACE_SECONDS,
            on: place(COREDNS_REPLICAS),
        }];
        let budget = size.pods() - size.fixed_pods() - COREDNS_REPLICAS as u64;
        let rounds = usize::try_from(budget / ROUND_PODS as u64).expect("bounded by MAX_PODS");
        let left = usize::try_from(budget % ROUND_PODS as u64).expect("below one round");
        let mut namespaces = Vec::new();
        for r in 0..rounds {
            let ns = format!("team-{:02}", r / ROUNDS_PER_NAMESPACE + 1);
            if namespaces.last() != Some(&ns) {
                namespaces.push(ns.clone());
            }
            let k = r % ROUNDS_PER_NAMESPACE + 1;
            for (base, kind, replicas, budget, grace) in ROUND {
                let on = if r == 0 && base == "web" && w > 1 {
                    // Two replicas on one worker, as after a node came back: that drain waits
                    // for the first pod's replacement before its budget lets the second go.
                    let first = place(replicas - 1);
                    std::iter::once(first[0]).chain(first).collect()
                } else {
                    place(replicas)
                };
                workloads.push(Workload {
                    namespace: ns.clone(),
                    name: format!("{base}-{k}"),
                    kind,
                    budget,
                    grace_seconds: grace,
                    on,
                });
            }
        }
        if left > 0 {
            let ns = namespaces.last().cloned().unwrap_or_else(|| "default".into());
            workloads.push(Workload {
                namespace: ns,
                name: "static-site".into(),
                kind: WorkloadKind::Deployment,
                budget: None,
                grace_seconds: GRACE_SECONDS,
                on: place(left),
            });
        }
        Self { size, control_planes, workers, namespaces, workloads }
    }

    /// Pods per node, every node (control planes first), in node order.
    pub fn pods_per_node(&self) -> Vec<(String, usize)> {
        let fixed = DAEMONSETS.len();
        let mut counts: Vec<(String, usize)> = self
            .control_planes
            .iter()
            .map(|n| (n.clone(), fixed + STATIC_PODS.len()))
            .chain(self.workers.iter().map(|n| (n.clone(), fixed)))
            .collect();
        let cps = self.control_planes.len();
        for w in &self.workloads {
            for &i in &w.on {
                counts[cps + i].1 += 1;
            }
        }
        counts
    }

    /// Pods in all.
    pub fn pods(&self) -> usize {
        self.pods_per_node().iter().map(|(_, n)| n).sum()
    }

    /// Workloads per PodDisruptionBudget rule, for the progress line.
    pub fn budgets(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for b in self.workloads.iter().filter_map(|w| w.budget) {
            let key = match b {
                Budget::MinAvailable(n) => format!("minAvailable {n}"),
                Budget::MinAvailablePercent(p) => format!("minAvailable {p}%"),
                Budget::MaxUnavailable(n) => format!("maxUnavailable {n}"),
                Budget::MaxUnavailablePercent(p) => format!("maxUnavailable {p}%"),
            };
            *m.entry(key).or_insert(0) += 1;
        }
        m
    }

    /// One line saying what the cluster holds.
    pub fn describe(&self) -> String {
        let count = |k: WorkloadKind| self.workloads.iter().filter(|w| w.kind == k).count();
        let deadlocks = self
            .workloads
            .iter()
            .filter(|w| w.budget.is_some_and(|b| b.allowed(w.on.len() as i64) == 0))
            .count();
        let budgets: Vec<String> = self.budgets().iter().map(|(k, n)| format!("{n} {k}")).collect();
        format!(
            "Generated cluster: {}; {} namespaces; {} Deployments, {} StatefulSets, {} bare pods; PodDisruptionBudgets: {} ({deadlocks} single-replica deadlocks the drain's fallback resolves); {} DaemonSets on every node; static control-plane pods",
            self.size,
            self.namespaces.len(),
            count(WorkloadKind::Deployment),
            count(WorkloadKind::StatefulSet),
            count(WorkloadKind::BarePod),
            budgets.join(", "),
            DAEMONSETS.len(),
        )
    }
}

/// A `pod-template-hash`-like name part: 10 characters of apimachinery's `rand.String`
/// alphabet, derived from `seed` so every run generates the same names.
fn hash_name(seed: &str, len: usize) -> String {
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h: u64 = 0xcbf29ce484222325;
    for b in seed.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    (0..len)
        .map(|_| {
            let c = ALPHA[(h % ALPHA.len() as u64) as usize] as char;
            h = (h / ALPHA.len() as u64) ^ h.rotate_left(29).wrapping_mul(0x9e3779b97f4a7c15);
            c
        })
        .collect()
}

/// The ReplicaSet's pod name suffix for replica `i`: five characters, distinct for every
/// `i` below 27^5 (a multiplication by a number prime to 27^5 is a bijection on its residues).
fn pod_suffix(i: usize) -> String {
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    const SPACE: u64 = 27u64.pow(5);
    let mut x = (i as u64).wrapping_mul(7_919).wrapping_add(1_234_567) % SPACE;
    let mut s = [0u8; 5];
    for c in s.iter_mut().rev() {
        *c = ALPHA[(x % 27) as usize];
        x /= 27;
    }
    String::from_utf8(s.to_vec()).expect("ASCII")
}

/// IPv4 addresses from 198.18.0.0/15 (RFC 2544, benchmarking): nothing is ever sent to them,
/// the node executor is simulated.
fn node_ip(i: usize) -> String {
    format!("198.18.{}.{}", 1 + i / 250, 1 + i % 250)
}

/// Zones the nodes are spread over (`topology.kubernetes.io/zone`).
const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];

/// Stores `layout` in the simulator, every node on `running` (e.g. `1.34.1`).
pub fn load(srv: &TestApiServer, layout: &Layout, running: &str) {
    for ns in ["kube-system", "default", "monitoring"]
        .iter()
        .copied()
        .chain(layout.namespaces.iter().map(String::as_str))
    {
        srv.insert(tf::namespace(ns));
    }
    let kubelet = format!("v{running}");
    let nodes =
        layout.control_planes.iter().map(|n| (n, true)).chain(layout.workers.iter().map(|n| (n, false)));
    for (i, (name, cp)) in nodes.enumerate() {
        let mut node = tf::node(name)
            .ready()
            .kubelet(&kubelet)
            .internal_ip(&node_ip(i))
            .label("topology.kubernetes.io/zone", ZONES[i % ZONES.len()]);
        if cp {
            node = node.control_plane();
        }
        srv.insert(node.build());
        super::cluster::settled(srv, name);
        for (ns, ds) in DAEMONSETS {
            let pod = format!("{ds}-{}", hash_name(&format!("{ds}/{name}"), 5));
            srv.insert(tf::pod(&pod).ns(ns).on(name).owned_by_daemonset(ds).labels(&[("app", ds)]).build());
        }
        if cp {
            super::cluster::static_pods(srv, name);
        }
    }
    for (ns, ds) in DAEMONSETS {
        srv.insert(tf::daemonset(ds).ns(ns).labels(&[("app", ds)]).build());
    }
    for w in &layout.workloads {
        let labels = [("app", w.name.as_str())];
        let node = |i: usize| layout.workers[i].as_str();
        match w.kind {
            WorkloadKind::Deployment => {
                let rs = format!("{}-{}", w.name, hash_name(&format!("{}/{}", w.namespace, w.name), 10));
                let replicas = w.on.len() as i64;
                srv.insert(
                    tf::deployment(&w.name)
                        .ns(&w.namespace)
                        .replicas(replicas)
                        .labels(&labels)
                        .grace(w.grace_seconds)
                        .build(),
                );
                srv.insert(
                    tf::replicaset(&rs)
                        .ns(&w.namespace)
                        .replicas(replicas)
                        .labels(&labels)
                        .grace(w.grace_seconds)
                        .owned_by_deployment(&w.name)
                        .build(),
                );
                for (i, &on) in w.on.iter().enumerate() {
                    srv.insert(
                        tf::pod(&format!("{rs}-{}", pod_suffix(i)))
                            .ns(&w.namespace)
                            .on(node(on))
                            .owned_by_replicaset(&rs)
                            .labels(&labels)
                            .grace(w.grace_seconds)
                            .build(),
                    );
                }
            }
            WorkloadKind::StatefulSet => {
                srv.insert(
                    tf::statefulset(&w.name)
                        .ns(&w.namespace)
                        .replicas(w.on.len() as i64)
                        .labels(&labels)
                        .grace(w.grace_seconds)
                        .build(),
                );
                for (i, &on) in w.on.iter().enumerate() {
                    srv.insert(
                        tf::pod(&format!("{}-{i}", w.name))
                            .ns(&w.namespace)
                            .on(node(on))
                            .owned_by_statefulset(&w.name)
                            .labels(&labels)
                            .grace(w.grace_seconds)
                            .build(),
                    );
                }
            }
            WorkloadKind::BarePod => {
                for &on in &w.on {
                    srv.insert(
                        tf::pod(&w.name)
                            .ns(&w.namespace)
                            .on(node(on))
                            .labels(&labels)
                            .grace(w.grace_seconds)
                            .build(),
                    );
                }
            }
        }
        if let Some(b) = w.budget {
            let pdb = tf::pdb(&w.name).ns(&w.namespace).selector(&labels);
            let pdb = match b {
                Budget::MinAvailable(n) => pdb.min_available(n),
                Budget::MinAvailablePercent(p) => pdb.min_available_str(&format!("{p}%")),
                Budget::MaxUnavailable(n) => pdb.max_unavailable(n),
                Budget::MaxUnavailablePercent(p) => pdb.max_unavailable_str(&format!("{p}%")),
            };
            srv.insert(pdb.build());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(nodes: u32, ppn: u32) -> ClusterSize {
        ClusterSize::new(nodes, ppn).unwrap()
    }

    #[test]
    fn a_100_node_cluster_holds_5000_pods_on_three_control_planes_and_97_workers() {
        let l = Layout::generate(size(100, 50));
        assert_eq!(l.control_planes, ["k8s-cp1", "k8s-cp2", "k8s-cp3"]);
        assert_eq!(l.workers.len(), 97);
        assert_eq!(l.workers.last().unwrap(), "k8s-node97");
        assert_eq!(l.pods(), 5000);
        let counts = l.pods_per_node();
        assert!(counts.iter().all(|(_, n)| *n <= MAX_PODS_PER_NODE as usize), "{counts:?}");
        assert_eq!(counts[0].1, DAEMONSETS.len() + STATIC_PODS.len());
        // Spread: every worker carries workload pods, within two of each other.
        let workers: Vec<usize> = counts[3..].iter().map(|(_, n)| *n).collect();
        let (min, max) = (workers.iter().min().unwrap(), workers.iter().max().unwrap());
        assert!(max - min <= 2 && *min > DAEMONSETS.len(), "{workers:?}");
    }

    #[test]
    fn every_kind_of_workload_and_budget_is_there() {
        let l = Layout::generate(size(100, 50));
        for kind in [WorkloadKind::Deployment, WorkloadKind::StatefulSet, WorkloadKind::BarePod] {
            assert!(l.workloads.iter().any(|w| w.kind == kind), "{kind:?}");
        }
        let budgets = l.budgets();
        for k in
            ["minAvailable 2", "minAvailable 1", "minAvailable 50%", "maxUnavailable 1", "maxUnavailable 25%"]
        {
            assert!(budgets.contains_key(k), "{k} in {budgets:?}");
        }
        let deadlocked: Vec<&Workload> = l
            .workloads
            .iter()
            .filter(|w| w.budget.is_some_and(|b| b.allowed(w.on.len() as i64) == 0))
            .collect();
        assert!(!deadlocked.is_empty());
        assert!(deadlocked.iter().all(|w| w.name.starts_with("ledger-") && w.on.len() == 1));
        assert!(l.describe().contains("single-replica deadlocks"), "{}", l.describe());
    }

    #[test]
    fn replicas_go_to_different_workers_except_the_two_web_pods_that_wait() {
        let l = Layout::generate(size(100, 50));
        let shared: Vec<&Workload> = l
            .workloads
            .iter()
            .filter(|w| {
                let mut on = w.on.clone();
                on.sort();
                on.dedup();
                on.len() < w.on.len()
            })
            .collect();
        assert_eq!(shared.len(), 1, "{shared:?}");
        assert_eq!((shared[0].namespace.as_str(), shared[0].name.as_str()), ("team-01", "web-1"));
        assert_eq!(shared[0].on[0], shared[0].on[1]);
    }

    #[test]
    fn budgets_other_than_the_deadlock_allow_a_disruption_at_the_start() {
        let l = Layout::generate(size(100, 50));
        for w in l.workloads.iter().filter(|w| !w.name.starts_with("ledger-")) {
            if let Some(b) = w.budget {
                assert!(b.allowed(w.on.len() as i64) >= 1, "{w:?}");
            }
        }
        assert_eq!(Budget::MinAvailablePercent(50).allowed(4), 2);
        assert_eq!(Budget::MaxUnavailablePercent(25).allowed(6), 2);
        assert_eq!(Budget::MinAvailable(1).allowed(1), 0);
    }

    /// Every accepted size lays out exactly `nodes × pods-per-node` pods with no node above
    /// the kubelet's limit, every workload on existing workers, and the deadlock case present;
    /// every refused size is refused for a reason the layout would have hit.
    #[test]
    fn every_accepted_size_lays_out_exactly_and_within_the_limits() {
        let mut accepted = 0;
        for nodes in (2..=40).chain([97, 100, 101, 250, 1000]) {
            for ppn in [1, 5, 10, 14, 15, 19, 20, 30, 50, 80, 100, 104, 105, 110] {
                let Ok(s) = ClusterSize::new(nodes, ppn) else { continue };
                accepted += 1;
                let l = Layout::generate(s);
                assert_eq!(l.pods() as u64, s.pods(), "{s}");
                assert_eq!((l.control_planes.len() + l.workers.len()) as u32, nodes);
                let max = l.pods_per_node().iter().map(|(_, n)| *n).max().unwrap();
                assert!(max <= MAX_PODS_PER_NODE as usize, "{s}: {max}");
                assert!(l.workloads.iter().all(|w| w.on.iter().all(|&i| i < l.workers.len())));
                assert!(l.workloads.iter().any(|w| w.name == "ledger-1"), "{s}");
            }
        }
        assert!(accepted > 300, "{accepted}");
    }

    #[test]
    fn sizes_outside_the_limits_are_refused_with_the_limit() {
        let e = |n, p| ClusterSize::new(n, p).unwrap_err().to_string();
        assert!(e(1, 50).contains("2 to 5000 nodes"), "{}", e(1, 50));
        assert!(e(5001, 10).contains("2 to 5000 nodes"));
        assert!(e(5000, 31).contains("150000"), "{}", e(5000, 31));
        assert!(e(2, 10).contains("at least 28"), "{}", e(2, 10));
        assert!(e(5, 110).contains("maxPods of 110"), "{}", e(5, 110));
        assert_eq!(size(5, 10).control_planes(), 1);
        assert_eq!(size(10, 10).control_planes(), 3);
        assert_eq!(size(100, 50).to_string(), "100 nodes (3 control planes, 97 workers), 5000 pods");
    }

    #[test]
    fn generated_names_are_stable_and_distinct() {
        assert_eq!(hash_name("team-01/web-1", 10), hash_name("team-01/web-1", 10));
        assert_ne!(hash_name("team-01/web-1", 10), hash_name("team-01/web-2", 10));
        let suffixes: std::collections::HashSet<String> = (0..5000).map(pod_suffix).collect();
        assert_eq!(suffixes.len(), 5000);
        assert_eq!(node_ip(0), "198.18.1.1");
        assert_eq!(node_ip(4999), "198.18.20.250");
    }
}
