//! Fixture builders that read like prose. Each builder serialises to the object it describes
//! (so `srv.insert(pod("web-1").on("n1"))` works), and `.build()` gives the JSON.
//!
//! ```
//! use sim::apiserver::fixtures::*;
//! let n = node("k8s-node2").ready().kubelet("v1.34.1").internal_ip("127.0.0.12")
//!     .taint("dedicated", "db", "NoSchedule").build();
//! let p = pod("web-1").ns("apps").on("k8s-node2").owned_by_replicaset("web-abc")
//!     .label("app", "web").build();
//! let b = pdb("web").ns("apps").min_available(2).selector(&[("app", "web")]).build();
//! assert_eq!(p["metadata"]["ownerReferences"][0]["uid"], b_uid("ReplicaSet", "apps", "web-abc"));
//! # fn b_uid(k: &str, ns: &str, n: &str) -> String { uid_for(k, ns, n) }
//! # let _ = (n, b);
//! ```
//!
//! Owner references use deterministic uids ([`uid_for`]), and the node and workload builders
//! give themselves the same uid, so a pod fixture and its ReplicaSet (or Node) line up.

use serde::{Serialize, Serializer};
use serde_json::{Map, Value, json};

/// The deterministic uid fixtures use for `kind` `ns/name` (owners and their objects).
pub fn uid_for(kind: &str, ns: &str, name: &str) -> String {
    // A stable, uuid-shaped string derived from the identity (FNV-1a, twice).
    let mut h: u64 = 0xcbf29ce484222325;
    let mut g: u64 = 0x84222325cbf29ce4;
    for b in format!("{kind}/{ns}/{name}").bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        g = (g ^ b as u64).wrapping_mul(0x100000001b3).rotate_left(7);
    }
    let s = format!("{h:016x}{g:016x}");
    format!("{}-{}-{}-{}-{}", &s[0..8], &s[8..12], &s[12..16], &s[16..20], &s[20..32])
}

/// Sets (or replaces) a status condition `typ` to True/False.
pub fn set_condition(obj: &mut Value, typ: &str, ok: bool, reason: &str) {
    let now = crate::apiserver::store::now_str();
    if !obj.get("status").is_some_and(Value::is_object) {
        obj["status"] = json!({});
    }
    let st = obj["status"].as_object_mut().unwrap();
    let conds = st.entry("conditions").or_insert_with(|| json!([]));
    if !conds.is_array() {
        *conds = json!([]);
    }
    let arr = conds.as_array_mut().unwrap();
    let status = if ok { "True" } else { "False" };
    let mut c = json!({"type": typ, "status": status, "lastTransitionTime": now});
    if !reason.is_empty() {
        c["reason"] = json!(reason);
    }
    match arr.iter_mut().find(|x| x["type"] == typ) {
        Some(x) => {
            if x["status"] == status
                && let Some(t) = x.get("lastTransitionTime")
            {
                c["lastTransitionTime"] = t.clone();
            }
            *x = c;
        }
        None => arr.push(c),
    }
}

macro_rules! serialize_via_build {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.build().serialize(s)
            }
        }
        impl $t {
            /// The object as a typed value (e.g. `k8s_openapi::api::core::v1::Pod`).
            pub fn typed<K: serde::de::DeserializeOwned>(&self) -> K {
                serde_json::from_value(self.build()).expect("fixture deserializes")
            }
        }
    };
}

fn labels_obj(pairs: &[(&str, &str)]) -> Map<String, Value> {
    pairs.iter().map(|(k, v)| (k.to_string(), json!(v))).collect()
}

// ----- nodes -----

/// A Node fixture: `node("k8s-node2").ready().kubelet("v1.34.1")`.
#[derive(Debug, Clone)]
pub struct NodeFixture {
    v: Value,
}

/// Starts a Node (no conditions, kubelet v1.33.0, no addresses).
pub fn node(name: &str) -> NodeFixture {
    NodeFixture {
        v: json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "uid": uid_for("Node", "", name), "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
            "spec": {},
            "status": {"nodeInfo": {"kubeletVersion": "v1.33.0", "kubeProxyVersion": "", "architecture": "amd64", "operatingSystem": "linux",
                "bootID": "", "containerRuntimeVersion": "containerd://1.7.0", "kernelVersion": "6.1.0", "machineID": "", "osImage": "Debian GNU/Linux 12 (bookworm)", "systemUUID": ""}},
        }),
    }
}

impl NodeFixture {
    /// Ready condition True.
    pub fn ready(mut self) -> Self {
        set_condition(&mut self.v, "Ready", true, "KubeletReady");
        self
    }
    /// Ready condition False.
    pub fn not_ready(mut self) -> Self {
        set_condition(&mut self.v, "Ready", false, "KubeletNotReady");
        self
    }
    /// `status.nodeInfo.kubeletVersion`.
    pub fn kubelet(mut self, version: &str) -> Self {
        self.v["status"]["nodeInfo"]["kubeletVersion"] = json!(version);
        self
    }
    /// Adds an InternalIP address.
    pub fn internal_ip(mut self, ip: &str) -> Self {
        self.address("InternalIP", ip);
        self
    }
    fn address(&mut self, typ: &str, a: &str) {
        let st = self.v["status"].as_object_mut().unwrap();
        let arr = st.entry("addresses").or_insert_with(|| json!([]));
        arr.as_array_mut().unwrap().push(json!({"type": typ, "address": a}));
    }
    /// Adds a taint.
    pub fn taint(mut self, key: &str, value: &str, effect: &str) -> Self {
        let spec = self.v["spec"].as_object_mut().unwrap();
        let arr = spec.entry("taints").or_insert_with(|| json!([]));
        let mut t = json!({"key": key, "effect": effect});
        if !value.is_empty() {
            t["value"] = json!(value);
        }
        arr.as_array_mut().unwrap().push(t);
        self
    }
    /// The `kubernetes.io/hostname` label the kubelet sets: its hostname, which differs from
    /// the node name when the node registered under another name (e.g. an FQDN).
    pub fn hostname(self, h: &str) -> Self {
        self.label("kubernetes.io/hostname", h)
    }
    /// `spec.unschedulable: true` (cordoned).
    pub fn unschedulable(mut self) -> Self {
        self.v["spec"]["unschedulable"] = json!(true);
        self
    }
    /// Adds a label.
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.v["metadata"]["labels"][k] = json!(v);
        self
    }
    /// Adds an annotation.
    pub fn annotation(mut self, k: &str, v: &str) -> Self {
        if !self.v["metadata"].get("annotations").is_some_and(Value::is_object) {
            self.v["metadata"]["annotations"] = json!({});
        }
        self.v["metadata"]["annotations"][k] = json!(v);
        self
    }
    /// The kubeadm control-plane label and NoSchedule taint.
    pub fn control_plane(self) -> Self {
        self.label("node-role.kubernetes.io/control-plane", "").taint(
            "node-role.kubernetes.io/control-plane",
            "",
            "NoSchedule",
        )
    }
    /// The JSON object.
    pub fn build(&self) -> Value {
        self.v.clone()
    }
}
serialize_via_build!(NodeFixture);

// ----- pods -----

/// A Pod fixture: `pod("web-1").ns("apps").on("k8s-node2").owned_by_replicaset("web-abc")`.
#[derive(Debug, Clone)]
pub struct PodFixture {
    v: Value,
    owner: Option<(String, String, String)>,
    mirror: bool,
}

/// Starts a Pod in `default`, Running and Ready, not scheduled, one container `main`.
pub fn pod(name: &str) -> PodFixture {
    let mut v = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}], "terminationGracePeriodSeconds": 30},
        "status": {"phase": "Running"},
    });
    crate::apiserver::store::running_status(&mut v);
    PodFixture { v, owner: None, mirror: false }
}

impl PodFixture {
    /// Namespace.
    pub fn ns(mut self, ns: &str) -> Self {
        self.v["metadata"]["namespace"] = json!(ns);
        self
    }
    /// Scheduled on `node` (`spec.nodeName`).
    pub fn on(mut self, node: &str) -> Self {
        self.v["spec"]["nodeName"] = json!(node);
        self
    }
    /// Controller ownerReference to an apps/v1 ReplicaSet.
    pub fn owned_by_replicaset(self, rs: &str) -> Self {
        self.owned_by("apps/v1", "ReplicaSet", rs)
    }
    /// Controller ownerReference to an apps/v1 StatefulSet.
    pub fn owned_by_statefulset(self, sts: &str) -> Self {
        self.owned_by("apps/v1", "StatefulSet", sts)
    }
    /// Controller ownerReference to an apps/v1 DaemonSet.
    pub fn owned_by_daemonset(self, ds: &str) -> Self {
        self.owned_by("apps/v1", "DaemonSet", ds)
    }
    /// Controller ownerReference to a batch/v1 Job.
    pub fn owned_by_job(self, job: &str) -> Self {
        self.owned_by("batch/v1", "Job", job)
    }
    /// Controller ownerReference to any kind (uid from [`uid_for`]).
    pub fn owned_by(mut self, api_version: &str, kind: &str, name: &str) -> Self {
        self.owner = Some((api_version.into(), kind.into(), name.into()));
        self
    }
    /// Adds labels.
    pub fn labels(mut self, pairs: &[(&str, &str)]) -> Self {
        for (k, v) in pairs {
            self = self.label(k, v);
        }
        self
    }
    /// Adds a label.
    pub fn label(mut self, k: &str, v: &str) -> Self {
        if !self.v["metadata"].get("labels").is_some_and(Value::is_object) {
            self.v["metadata"]["labels"] = json!({});
        }
        self.v["metadata"]["labels"][k] = json!(v);
        self
    }
    /// Adds an annotation.
    pub fn annotation(mut self, k: &str, v: &str) -> Self {
        if !self.v["metadata"].get("annotations").is_some_and(Value::is_object) {
            self.v["metadata"]["annotations"] = json!({});
        }
        self.v["metadata"]["annotations"][k] = json!(v);
        self
    }
    /// A static (mirror) pod: the `kubernetes.io/config.mirror` annotation and, once the pod
    /// is [`Self::on`] a node, that Node as its controller owner (as the kubelet creates them).
    pub fn mirror(mut self) -> Self {
        self.mirror = true;
        self.annotation("kubernetes.io/config.mirror", "mirror-hash")
    }
    /// `status.phase` (Ready stays as is).
    pub fn phase(mut self, phase: &str) -> Self {
        self.v["status"]["phase"] = json!(phase);
        if matches!(phase, "Succeeded" | "Failed" | "Pending") {
            set_condition(&mut self.v, "Ready", false, if phase == "Pending" { "" } else { "PodCompleted" });
            set_condition(&mut self.v, "ContainersReady", false, "");
        }
        self
    }
    /// Ready condition False (still Running).
    pub fn not_ready(mut self) -> Self {
        set_condition(&mut self.v, "Ready", false, "ContainersNotReady");
        set_condition(&mut self.v, "ContainersReady", false, "ContainersNotReady");
        self
    }
    /// `spec.terminationGracePeriodSeconds`.
    pub fn grace(mut self, secs: i64) -> Self {
        self.v["spec"]["terminationGracePeriodSeconds"] = json!(secs);
        self
    }
    /// Crash-looping: Running, its container in `CrashLoopBackOff`, Ready False, and the
    /// [`crate::apiserver::CRASH_LOOP_ANNOTATION`] (so a restart by the simulated kubelet keeps it so).
    pub fn crash_looping(mut self) -> Self {
        crate::apiserver::store::crash_loop_status(&mut self.v);
        self.annotation(crate::apiserver::CRASH_LOOP_ANNOTATION, "true")
    }
    /// Adds a finalizer (the pod then never goes away until it is removed).
    pub fn finalizer(mut self, f: &str) -> Self {
        let m = self.v["metadata"].as_object_mut().unwrap();
        let arr = m.entry("finalizers").or_insert_with(|| json!([]));
        arr.as_array_mut().unwrap().push(json!(f));
        self
    }
    /// Adds an emptyDir volume (local data, as drain tools care about).
    pub fn empty_dir(mut self, name: &str) -> Self {
        let spec = self.v["spec"].as_object_mut().unwrap();
        let arr = spec.entry("volumes").or_insert_with(|| json!([]));
        arr.as_array_mut().unwrap().push(json!({"name": name, "emptyDir": {}}));
        self
    }
    /// The JSON object.
    pub fn build(&self) -> Value {
        let mut v = self.v.clone();
        let node = v.pointer("/spec/nodeName").and_then(Value::as_str).map(String::from);
        if let (true, Some(n)) = (self.mirror, node) {
            v["metadata"]["ownerReferences"] = json!([{
                "apiVersion": "v1", "kind": "Node", "name": n, "uid": uid_for("Node", "", &n), "controller": true,
            }]);
        }
        if let Some((av, kind, name)) = &self.owner {
            let ns = v["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
            v["metadata"]["ownerReferences"] = json!([{
                "apiVersion": av, "kind": kind, "name": name, "uid": uid_for(kind, &ns, name),
                "controller": true, "blockOwnerDeletion": true,
            }]);
        }
        v
    }
}
serialize_via_build!(PodFixture);

// ----- PDBs -----

/// A PodDisruptionBudget fixture: `pdb("web").ns("apps").min_available(2).selector(&[("app","web")])`.
#[derive(Debug, Clone)]
pub struct PdbFixture {
    v: Value,
}

/// Starts a policy/v1 PDB in `default` with a null selector (matches nothing).
pub fn pdb(name: &str) -> PdbFixture {
    PdbFixture {
        v: json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name, "namespace": "default"}, "spec": {}}),
    }
}

impl PdbFixture {
    /// Namespace.
    pub fn ns(mut self, ns: &str) -> Self {
        self.v["metadata"]["namespace"] = json!(ns);
        self
    }
    /// Integer `minAvailable`.
    pub fn min_available(mut self, n: i64) -> Self {
        self.v["spec"]["minAvailable"] = json!(n);
        self
    }
    /// Percentage (or any string) `minAvailable`, e.g. `"50%"`.
    pub fn min_available_str(mut self, s: &str) -> Self {
        self.v["spec"]["minAvailable"] = json!(s);
        self
    }
    /// Integer `maxUnavailable`.
    pub fn max_unavailable(mut self, n: i64) -> Self {
        self.v["spec"]["maxUnavailable"] = json!(n);
        self
    }
    /// Percentage `maxUnavailable`, e.g. `"25%"`.
    pub fn max_unavailable_str(mut self, s: &str) -> Self {
        self.v["spec"]["maxUnavailable"] = json!(s);
        self
    }
    /// `matchLabels` selector.
    pub fn selector(mut self, pairs: &[(&str, &str)]) -> Self {
        self.v["spec"]["selector"] = json!({"matchLabels": labels_obj(pairs)});
        self
    }
    /// A full `metav1.LabelSelector` object (matchLabels / matchExpressions).
    pub fn selector_object(mut self, sel: Value) -> Self {
        self.v["spec"]["selector"] = sel;
        self
    }
    /// `selector: {}`: every pod in the namespace (policy/v1).
    pub fn select_all(mut self) -> Self {
        self.v["spec"]["selector"] = json!({});
        self
    }
    /// `unhealthyPodEvictionPolicy: AlwaysAllow`.
    pub fn always_allow(mut self) -> Self {
        self.v["spec"]["unhealthyPodEvictionPolicy"] = json!("AlwaysAllow");
        self
    }
    /// The JSON object.
    pub fn build(&self) -> Value {
        self.v.clone()
    }
}
serialize_via_build!(PdbFixture);

// ----- workloads -----

/// A workload fixture (ReplicaSet, StatefulSet, Deployment, DaemonSet).
#[derive(Debug, Clone)]
pub struct WorkloadFixture {
    v: Value,
    owner: Option<(String, String, String)>,
}

fn workload(kind: &str, name: &str) -> WorkloadFixture {
    WorkloadFixture {
        v: json!({
            "apiVersion": "apps/v1", "kind": kind,
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {}}, "template": {"metadata": {"labels": {}},
                "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}], "terminationGracePeriodSeconds": 30}}},
            "status": {},
        }),
        owner: None,
    }
}

/// Starts an apps/v1 ReplicaSet (uid from [`uid_for`]).
pub fn replicaset(name: &str) -> WorkloadFixture {
    workload("ReplicaSet", name)
}
/// Starts an apps/v1 StatefulSet (uid from [`uid_for`]).
pub fn statefulset(name: &str) -> WorkloadFixture {
    workload("StatefulSet", name)
}
/// Starts an apps/v1 Deployment (uid from [`uid_for`]).
pub fn deployment(name: &str) -> WorkloadFixture {
    workload("Deployment", name)
}
/// Starts an apps/v1 DaemonSet (uid from [`uid_for`]).
pub fn daemonset(name: &str) -> WorkloadFixture {
    let mut w = workload("DaemonSet", name);
    w.v["spec"].as_object_mut().unwrap().remove("replicas");
    w
}

impl WorkloadFixture {
    /// Namespace.
    pub fn ns(mut self, ns: &str) -> Self {
        self.v["metadata"]["namespace"] = json!(ns);
        self
    }
    /// `spec.replicas` (and `status.replicas`).
    pub fn replicas(mut self, n: i64) -> Self {
        self.v["spec"]["replicas"] = json!(n);
        self.v["status"]["replicas"] = json!(n);
        self
    }
    /// Selector `matchLabels` and template labels.
    pub fn labels(mut self, pairs: &[(&str, &str)]) -> Self {
        self.v["spec"]["selector"] = json!({"matchLabels": labels_obj(pairs)});
        self.v["spec"]["template"]["metadata"]["labels"] = Value::Object(labels_obj(pairs));
        self
    }
    /// The pod template's `terminationGracePeriodSeconds` (replacement pods get it).
    pub fn grace(mut self, secs: i64) -> Self {
        self.v["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = json!(secs);
        self
    }
    /// Its pods crash-loop: the template carries [`crate::apiserver::CRASH_LOOP_ANNOTATION`], so every
    /// replacement pod runs but never becomes Ready.
    pub fn crash_looping(mut self) -> Self {
        self.v["spec"]["template"]["metadata"]["annotations"] =
            json!({crate::apiserver::CRASH_LOOP_ANNOTATION: "true"});
        self
    }
    /// Controller ownerReference to an apps/v1 Deployment (for ReplicaSets).
    pub fn owned_by_deployment(mut self, d: &str) -> Self {
        self.owner = Some(("apps/v1".into(), "Deployment".into(), d.into()));
        self
    }
    /// The JSON object.
    pub fn build(&self) -> Value {
        let mut v = self.v.clone();
        let ns = v["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
        let kind = v["kind"].as_str().unwrap_or_default().to_string();
        let name = v["metadata"]["name"].as_str().unwrap_or_default().to_string();
        v["metadata"]["uid"] = json!(uid_for(&kind, &ns, &name));
        if let Some((av, k, n)) = &self.owner {
            v["metadata"]["ownerReferences"] = json!([{
                "apiVersion": av, "kind": k, "name": n, "uid": uid_for(k, &ns, n), "controller": true, "blockOwnerDeletion": true,
            }]);
        }
        v
    }
}
serialize_via_build!(WorkloadFixture);

// ----- small things -----

/// A Namespace.
pub fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
}

/// A ConfigMap with string data.
pub fn configmap(ns: &str, name: &str, data: &[(&str, &str)]) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, "data": labels_obj(data)})
}

/// A batch/v1 Job fixture as a client would create it (use `Api::create`, not `insert`, to
/// get the Job controller's pod).
pub fn job(ns: &str, name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": image}]}}},
    })
}
