//! Builders for Kubernetes objects that read like prose, for tests and benchmarks (feature
//! `testing`):
//!
//! ```text
//! node("k8s-node2").worker().kubelet("v1.34.1").ip("10.0.0.12").taint("nvidia.com/gpu", "NoSchedule").build()
//! ```

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        batch::v1::{Job, JobCondition, JobStatus},
        core::v1::{Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo, Taint},
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::Timestamp,
};

/// Label that marks control-plane nodes by default.
pub const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";

/// Starts a Node builder: a Ready worker on v1.34.0 with no address until `.ip()`.
pub fn node(name: &str) -> NodeBuilder {
    NodeBuilder {
        name: name.into(),
        labels: BTreeMap::from([("kubernetes.io/hostname".to_string(), name.to_string())]),
        kubelet: "v1.34.0".into(),
        ips: vec![],
        taints: vec![],
        unschedulable: false,
        ready: true,
        ready_since: None,
        containerd: "containerd://2.0.5".into(),
        annotations: BTreeMap::new(),
    }
}

/// A Node under construction.
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    name: String,
    labels: BTreeMap<String, String>,
    kubelet: String,
    ips: Vec<String>,
    taints: Vec<Taint>,
    unschedulable: bool,
    ready: bool,
    ready_since: Option<Timestamp>,
    containerd: String,
    annotations: BTreeMap<String, String>,
}

impl NodeBuilder {
    /// Labels it a control-plane node and taints it as kubeadm does.
    pub fn control_plane(mut self) -> Self {
        self.labels.insert(CONTROL_PLANE_LABEL.into(), String::new());
        self.taint(CONTROL_PLANE_LABEL, "NoSchedule")
    }

    /// A worker (the default): no control-plane label.
    pub fn worker(mut self) -> Self {
        self.labels.remove(CONTROL_PLANE_LABEL);
        self
    }

    /// `status.nodeInfo.kubeletVersion`, verbatim.
    pub fn kubelet(mut self, v: &str) -> Self {
        self.kubelet = v.into();
        self
    }

    /// Adds an InternalIP address.
    pub fn ip(mut self, ip: &str) -> Self {
        self.ips.push(ip.into());
        self
    }

    /// Adds a taint with no value.
    pub fn taint(mut self, key: &str, effect: &str) -> Self {
        self.taints.push(Taint { key: key.into(), effect: effect.into(), ..Default::default() });
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// `spec.unschedulable: true`.
    pub fn cordoned(mut self) -> Self {
        self.unschedulable = true;
        self
    }

    /// Ready condition `False`.
    pub fn not_ready(mut self) -> Self {
        self.ready = false;
        self
    }

    /// The Ready condition's `lastTransitionTime`.
    pub fn ready_since(mut self, t: Timestamp) -> Self {
        self.ready_since = Some(t);
        self
    }

    /// `status.nodeInfo.containerRuntimeVersion`.
    pub fn containerd(mut self, v: &str) -> Self {
        self.containerd = format!("containerd://{v}");
        self
    }

    /// An annotation on the node.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    pub fn build(self) -> Node {
        let since = self.ready_since.unwrap_or_else(|| Timestamp::from_second(1_700_000_000).unwrap());
        Node {
            metadata: ObjectMeta {
                name: Some(self.name),
                labels: Some(self.labels),
                annotations: (!self.annotations.is_empty()).then_some(self.annotations),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                unschedulable: self.unschedulable.then_some(true),
                taints: (!self.taints.is_empty()).then_some(self.taints),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(
                    self.ips
                        .into_iter()
                        .map(|address| NodeAddress { address, type_: "InternalIP".into() })
                        .collect(),
                ),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if self.ready { "True" } else { "False" }.into(),
                    last_transition_time: Some(Time(since)),
                    ..Default::default()
                }]),
                node_info: Some(NodeSystemInfo {
                    kubelet_version: self.kubelet,
                    container_runtime_version: self.containerd,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }
}

/// Starts a chain Job builder for `step` and `target`, as the template renders it (labels
/// `app`, `phase`, `target-version`; the target-node annotation), started and still active.
pub fn chain_job(step: &crate::plan::Step, target: crate::version::Version) -> JobBuilder {
    let mut annotations = BTreeMap::new();
    if let Some(n) = step.node() {
        annotations.insert(crate::status::TARGET_NODE_ANNOTATION.to_string(), n.to_string());
    }
    JobBuilder(Job {
        metadata: ObjectMeta {
            name: Some(step.job_name(target)),
            labels: Some(BTreeMap::from([
                ("app".to_string(), crate::job::APP_LABEL.to_string()),
                ("phase".to_string(), step.phase().as_str().to_string()),
                ("target-version".to_string(), target.label()),
            ])),
            annotations: Some(annotations),
            ..Default::default()
        },
        status: Some(JobStatus {
            start_time: Some(Time(Timestamp::from_second(1_700_000_000).unwrap())),
            active: Some(1),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// A chain Job under construction (see [`chain_job`]).
#[derive(Debug, Clone)]
pub struct JobBuilder(Job);

impl JobBuilder {
    fn condition(mut self, type_: &str, reason: &str) -> Self {
        let status = self.0.status.get_or_insert_with(Default::default);
        status.active = None;
        status.conditions.get_or_insert_with(Vec::new).push(JobCondition {
            type_: type_.into(),
            status: "True".into(),
            reason: (!reason.is_empty()).then(|| reason.to_string()),
            ..Default::default()
        });
        self
    }

    /// It completed (condition Complete).
    pub fn complete(self) -> Self {
        self.condition("Complete", "")
    }

    /// It failed for good with `reason` (`BackoffLimitExceeded`, `DeadlineExceeded`).
    pub fn failed(self, reason: &str) -> Self {
        self.condition("Failed", reason)
    }

    /// The outcome its phase recorded ([`crate::resume::OUTCOME_ANNOTATION`]).
    pub fn outcome(mut self, o: crate::metrics::PhaseOutcome) -> Self {
        self.0
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(crate::resume::OUTCOME_ANNOTATION.into(), o.as_str().into());
        self
    }

    pub fn build(self) -> Job {
        self.0
    }
}

/// A cluster of `control_planes` + `workers` nodes named like the seed cluster's
/// (`k8s-master`, or `k8s-cp1`.. for HA; `k8s-node1`..), all Ready on `kubelet`, with InternalIPs
/// `10.0.0.x`.
pub fn cluster(control_planes: usize, workers: usize, kubelet: &str) -> Vec<Node> {
    let mut out = Vec::new();
    for i in 1..=control_planes {
        let name = if control_planes == 1 { "k8s-master".to_string() } else { format!("k8s-cp{i}") };
        out.push(node(&name).control_plane().kubelet(kubelet).ip(&format!("10.0.0.{i}")).build());
    }
    for i in 1..=workers {
        out.push(
            node(&format!("k8s-node{i}"))
                .kubelet(kubelet)
                .ip(&format!("10.0.{}.{}", 1 + i / 250, 10 + i % 240))
                .build(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_reads_like_its_description() {
        let n = node("k8s-node2")
            .worker()
            .kubelet("v1.34.1")
            .ip("10.0.0.12")
            .taint("nvidia.com/gpu", "NoSchedule")
            .build();
        assert_eq!(n.metadata.name.as_deref(), Some("k8s-node2"));
        let status = n.status.unwrap();
        assert_eq!(status.node_info.unwrap().kubelet_version, "v1.34.1");
        assert_eq!(status.addresses.unwrap()[0].address, "10.0.0.12");
        assert_eq!(n.spec.unwrap().taints.unwrap()[0].key, "nvidia.com/gpu");
    }
}
