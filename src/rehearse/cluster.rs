//! What the simulated apiserver holds: the built-in demonstration cluster, or a read-only copy
//! of a live cluster.

use std::collections::BTreeSet;

use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
    batch::v1::CronJob,
    core::v1::{ConfigMap, Namespace, Node, Pod},
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, Client,
    api::{ListParams, ObjectList},
};
use serde_json::{Value, json};
use sim::apiserver::{TestApiServer, fixtures as tf};

use chain_core::settings::Settings;

/// The built-in cluster's control plane.
pub const BUILTIN_CONTROL_PLANE: &str = "k8s-master";
/// The built-in cluster's workers.
pub const BUILTIN_WORKERS: [&str; 4] = ["k8s-node1", "k8s-node2", "k8s-node3", "k8s-node4"];

/// Real termination grace of the built-in workloads (the simulator scales it down).
pub const BUILTIN_GRACE_SECONDS: i64 = 30;

/// Marks every node's Ready condition as having changed an hour ago: a freshly inserted node
/// would otherwise look like it just flapped to the preflight settle window.
pub(crate) fn settled(srv: &TestApiServer, node: &str) {
    let hour_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(3600);
    srv.modify::<Node>(None, node, |n| {
        if let Some(conds) = n.pointer_mut("/status/conditions").and_then(Value::as_array_mut) {
            for c in conds {
                c["lastTransitionTime"] = json!(hour_ago.to_string());
                c["lastHeartbeatTime"] = json!(hour_ago.to_string());
            }
        }
    });
}

/// Static pods on every control plane.
pub const STATIC_PODS: [&str; 4] = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"];

/// The static control-plane pods kubeadm runs on a control plane, as the kubelet mirrors them
/// (owned by the Node, labelled `tier=control-plane`).
pub(crate) fn static_pods(srv: &TestApiServer, node: &str) {
    for c in STATIC_PODS {
        srv.insert(
            tf::pod(&format!("{c}-{node}"))
                .ns("kube-system")
                .on(node)
                .mirror()
                .owned_by("v1", "Node", node)
                .labels(&[("tier", "control-plane"), ("component", c)])
                .build(),
        );
    }
}

/// Loads the built-in cluster, every node on `running`: one control plane and four workers;
/// Calico, kube-proxy and node-exporter DaemonSet pods on every node; static control-plane pods;
/// CoreDNS; a 3-replica Deployment with a minAvailable 2 PDB (two of its pods on one node, so a
/// drain waits for a replacement); a single-replica Deployment with a minAvailable 1 PDB (a
/// deadlock only the PDB fallback resolves); a 2-replica StatefulSet with maxUnavailable 1; a
/// bare pod.
pub fn load_builtin(srv: &TestApiServer, running: &str) {
    for ns in ["kube-system", "default", "apps", "monitoring"] {
        srv.insert(tf::namespace(ns));
    }
    let kubelet = format!("v{running}");
    let nodes: Vec<(&str, bool)> = std::iter::once((BUILTIN_CONTROL_PLANE, true))
        .chain(BUILTIN_WORKERS.iter().map(|w| (*w, false)))
        .collect();
    for (i, (name, cp)) in nodes.iter().enumerate() {
        // TEST-NET-1 addresses: nothing is ever sent to them (the node executor is simulated).
        let mut node = tf::node(name).ready().kubelet(&kubelet).internal_ip(&format!("192.0.2.{}", 10 + i));
        if *cp {
            node = node.control_plane();
        }
        srv.insert(node.build());
        settled(srv, name);
        for (ns, ds) in
            [("kube-system", "calico-node"), ("kube-system", "kube-proxy"), ("monitoring", "node-exporter")]
        {
            srv.insert(
                tf::pod(&format!("{ds}-{}", short(name))).ns(ns).on(name).owned_by_daemonset(ds).build(),
            );
        }
        if *cp {
            static_pods(srv, name);
        }
    }
    for (ns, ds) in
        [("kube-system", "calico-node"), ("kube-system", "kube-proxy"), ("monitoring", "node-exporter")]
    {
        srv.insert(tf::daemonset(ds).ns(ns).labels(&[("app", ds)]).build());
    }
    let [w1, w2, w3, w4] = BUILTIN_WORKERS;
    deployment(srv, "kube-system", "coredns", "5d78c9869d", &[("k8s-app", "kube-dns")], &[w1, w2]);
    deployment(srv, "apps", "web", "7c5ddbdf54", &[("app", "web")], &[w1, w1, w2]);
    srv.insert(tf::pdb("web").ns("apps").min_available(2).selector(&[("app", "web")]).build());
    deployment(srv, "apps", "billing", "6f9b7d8c4d", &[("app", "billing")], &[w3]);
    srv.insert(tf::pdb("billing").ns("apps").min_available(1).selector(&[("app", "billing")]).build());
    srv.insert(
        tf::statefulset("cache")
            .ns("apps")
            .replicas(2)
            .labels(&[("app", "cache")])
            .grace(BUILTIN_GRACE_SECONDS)
            .build(),
    );
    for (i, node) in [w3, w4].iter().enumerate() {
        srv.insert(
            tf::pod(&format!("cache-{i}"))
                .ns("apps")
                .on(node)
                .owned_by_statefulset("cache")
                .labels(&[("app", "cache")])
                .grace(BUILTIN_GRACE_SECONDS)
                .build(),
        );
    }
    srv.insert(tf::pdb("cache").ns("apps").max_unavailable(1).selector(&[("app", "cache")]).build());
    srv.insert(tf::pod("debug-shell").ns("default").on(w2).grace(BUILTIN_GRACE_SECONDS).build());
}

fn short(node: &str) -> String {
    // DaemonSet pod names end in a random suffix; a readable stand-in keeps the output clear.
    node.trim_start_matches("k8s-").to_string()
}

/// A Deployment, its ReplicaSet `<name>-<hash>` and one pod per entry of `on`.
fn deployment(srv: &TestApiServer, ns: &str, name: &str, hash: &str, labels: &[(&str, &str)], on: &[&str]) {
    let rs = format!("{name}-{hash}");
    let replicas = on.len() as i64;
    srv.insert(
        tf::deployment(name).ns(ns).replicas(replicas).labels(labels).grace(BUILTIN_GRACE_SECONDS).build(),
    );
    srv.insert(
        tf::replicaset(&rs)
            .ns(ns)
            .replicas(replicas)
            .labels(labels)
            .grace(BUILTIN_GRACE_SECONDS)
            .owned_by_deployment(name)
            .build(),
    );
    for (i, node) in on.iter().enumerate() {
        srv.insert(
            tf::pod(&format!("{rs}-{}", POD_SUFFIXES[i % POD_SUFFIXES.len()]))
                .ns(ns)
                .on(node)
                .owned_by_replicaset(&rs)
                .labels(labels)
                .grace(BUILTIN_GRACE_SECONDS)
                .build(),
        );
    }
}

const POD_SUFFIXES: [&str; 4] = ["x7k2p", "m4q9t", "b8z3w", "r5n6v"];

/// The built-in cluster's etcd backup CronJob, at the namespace and name `settings` name (the
/// caller fills in [`super::builtin_etcd_backup`] when the config has none). A copy of a live
/// cluster has the site's own CronJob instead ([`copy_live`]).
pub fn load_backup_cronjob(srv: &TestApiServer, settings: &Settings) {
    let Some(b) = &settings.hooks.etcd_backup else { return };
    srv.insert(json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": b.cronjob, "namespace": b.namespace},
        "spec": {"schedule": "0 */6 * * *", "jobTemplate": {"spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": b.container.clone().unwrap_or_else(|| "backup".into()), "image": "rehearsal/etcd-backup:simulated"}]}}}}}
    }));
}

/// What [`copy_live`] copied.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CopySummary {
    /// Objects copied, per kind.
    pub counts: Vec<(String, usize)>,
    /// ConfigMaps the hooks name (post-upgrade scripts, kill switch) that were copied.
    pub configmaps: Vec<String>,
}

async fn list_all<K>(api: &Api<K>, what: &str) -> anyhow::Result<Vec<K>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut out = Vec::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let page: ObjectList<K> = api
            .list(&params)
            .await
            .map_err(|e| anyhow::anyhow!("failed to list {what} in the live cluster: {e}"))?;
        out.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(out),
        }
    }
}

/// Drops what the server manages (resourceVersion, managedFields, generation, selfLink) so the
/// simulator stores the object as new; uids stay, so ownerReferences still line up.
pub fn strip(mut v: Value) -> Value {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in ["resourceVersion", "managedFields", "generation", "selfLink"] {
            meta.remove(k);
        }
    }
    v
}

fn insert_all<K: serde::Serialize>(srv: &TestApiServer, items: &[K]) -> usize {
    for item in items {
        srv.insert(strip(serde_json::to_value(item).expect("objects serialize")));
    }
    items.len()
}

/// Copies a live cluster into the simulator, READ-ONLY (list and get, nothing else): nodes
/// (taints included), namespaces, pods, PDBs, ReplicaSets, Deployments, StatefulSets,
/// DaemonSets, the ConfigMaps the settings name (post-upgrade scripts, the kill switch) and the
/// etcd backup CronJob `hooks.etcd_backup` names (its Job runs simulated; when the CronJob is
/// missing, the rehearsal's preflight stops on it as the real one does). Jobs and Secrets are
/// not copied: the chain's Jobs are the simulator's own. The calls are in
/// `chain_core::rbac::CALLS` (the list calls of [`chain_core::rbac::Scope::Rehearse`], the rest
/// the chain's own grants).
pub async fn copy_live(
    live: &Client,
    srv: &TestApiServer,
    settings: &Settings,
) -> anyhow::Result<CopySummary> {
    let mut counts = Vec::new();
    let namespaces = list_all(&Api::<Namespace>::all(live.clone()), "namespaces").await?;
    counts.push(("namespaces".into(), insert_all(srv, &namespaces)));
    let nodes = list_all(&Api::<Node>::all(live.clone()), "nodes").await?;
    counts.push(("nodes".into(), insert_all(srv, &nodes)));
    // Owners before their pods, PDBs after them (their status is recomputed from the pods).
    let deployments = list_all(&Api::<Deployment>::all(live.clone()), "Deployments").await?;
    counts.push(("Deployments".into(), insert_all(srv, &deployments)));
    let replicasets = list_all(&Api::<ReplicaSet>::all(live.clone()), "ReplicaSets").await?;
    counts.push(("ReplicaSets".into(), insert_all(srv, &replicasets)));
    let statefulsets = list_all(&Api::<StatefulSet>::all(live.clone()), "StatefulSets").await?;
    counts.push(("StatefulSets".into(), insert_all(srv, &statefulsets)));
    let daemonsets = list_all(&Api::<DaemonSet>::all(live.clone()), "DaemonSets").await?;
    counts.push(("DaemonSets".into(), insert_all(srv, &daemonsets)));
    let pods = list_all(&Api::<Pod>::all(live.clone()), "pods").await?;
    counts.push(("pods".into(), insert_all(srv, &pods)));
    let pdbs = list_all(&Api::<PodDisruptionBudget>::all(live.clone()), "PodDisruptionBudgets").await?;
    counts.push(("PodDisruptionBudgets".into(), insert_all(srv, &pdbs)));

    let mut wanted: BTreeSet<(String, String)> = settings
        .hooks
        .post_control_plane_scripts
        .iter()
        .map(|s| (s.configmap_namespace.clone(), s.configmap_name.clone()))
        .collect();
    wanted.insert((settings.namespace.clone(), chain_core::killswitch::NAME.to_string()));
    if let Some(b) = &settings.hooks.etcd_backup {
        let api: Api<CronJob> = Api::namespaced(live.clone(), &b.namespace);
        let cj = api.get_opt(&b.cronjob).await.map_err(|e| {
            anyhow::anyhow!(
                "failed to read the etcd backup CronJob {}/{} in the live cluster: {e}",
                b.namespace,
                b.cronjob
            )
        })?;
        counts.push(("etcd backup CronJobs".into(), usize::from(cj.is_some())));
        if let Some(cj) = cj {
            srv.insert(strip(serde_json::to_value(&cj).expect("objects serialize")));
        }
    }
    let mut configmaps = Vec::new();
    for (ns, name) in wanted {
        let api: Api<ConfigMap> = Api::namespaced(live.clone(), &ns);
        let cm = api
            .get_opt(&name)
            .await
            .map_err(|e| anyhow::anyhow!("failed to read ConfigMap {ns}/{name} in the live cluster: {e}"))?;
        if let Some(cm) = cm {
            srv.insert(strip(serde_json::to_value(&cm).expect("objects serialize")));
            configmaps.push(format!("{ns}/{name}"));
        }
    }
    Ok(CopySummary { counts, configmaps })
}
