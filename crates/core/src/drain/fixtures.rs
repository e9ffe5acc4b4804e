//! Test fixtures that read like prose: `Pod::test("web-1").owned_by_replicaset("web")`.

use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, Pod, PodCondition, PodSpec, PodStatus, Volume};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub trait PodFixture: Sized {
    fn test(name: &str) -> Self;
    fn in_ns(self, ns: &str) -> Self;
    fn label(self, k: &str, v: &str) -> Self;
    fn owned_by(self, kind: &str, name: &str) -> Self;
    fn owned_by_replicaset(self, name: &str) -> Self {
        self.owned_by("ReplicaSet", name)
    }
    fn owned_by_daemonset(self, name: &str) -> Self {
        self.owned_by("DaemonSet", name)
    }
    fn owned_by_statefulset(self, name: &str) -> Self {
        self.owned_by("StatefulSet", name)
    }
    fn owned_by_job(self, name: &str) -> Self {
        self.owned_by("Job", name)
    }
    fn mirror(self) -> Self;
    fn phase(self, phase: &str) -> Self;
    fn with_emptydir(self) -> Self;
    fn terminating(self) -> Self;
    /// Running with the Ready condition False.
    fn not_ready(self) -> Self;
}

impl PodFixture for Pod {
    fn test(name: &str) -> Self {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(PodSpec { node_name: Some("k8s-node1".into()), ..Default::default() }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }
    fn in_ns(mut self, ns: &str) -> Self {
        self.metadata.namespace = Some(ns.into());
        self
    }
    fn label(mut self, k: &str, v: &str) -> Self {
        self.metadata.labels.get_or_insert_with(Default::default).insert(k.into(), v.into());
        self
    }
    fn owned_by(mut self, kind: &str, name: &str) -> Self {
        self.metadata.owner_references.get_or_insert_with(Vec::new).push(OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            controller: Some(true),
            block_owner_deletion: Some(true),
        });
        self
    }
    fn mirror(mut self) -> Self {
        self.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(super::select::MIRROR_ANNOTATION.into(), "hash".into());
        self
    }
    fn phase(mut self, phase: &str) -> Self {
        self.status.get_or_insert_with(Default::default).phase = Some(phase.into());
        self
    }
    fn with_emptydir(mut self) -> Self {
        self.spec.get_or_insert_with(Default::default).volumes.get_or_insert_with(Vec::new).push(Volume {
            name: "scratch".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
        self
    }
    fn terminating(mut self) -> Self {
        self.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        self
    }
    fn not_ready(mut self) -> Self {
        let status = self.status.get_or_insert_with(Default::default);
        status.conditions.get_or_insert_with(Vec::new).retain(|c| c.type_ != "Ready");
        status.conditions.as_mut().unwrap().push(PodCondition {
            type_: "Ready".into(),
            status: "False".into(),
            ..Default::default()
        });
        self
    }
}

pub trait PdbFixture: Sized {
    fn test(name: &str) -> Self;
    fn in_ns(self, ns: &str) -> Self;
    /// `matchLabels` entry (creates the selector).
    fn selecting(self, k: &str, v: &str) -> Self;
    /// A `matchExpressions` entry (creates the selector).
    fn expression(self, key: &str, op: &str, values: &[&str]) -> Self;
    /// `selector: {}`.
    fn empty_selector(self) -> Self;
    fn min_available(self, n: i32) -> Self;
    /// `unhealthyPodEvictionPolicy: AlwaysAllow`.
    fn always_allow(self) -> Self;
    /// Status as the disruption controller would write it.
    fn status(self, allowed: i32, current_healthy: i32, desired_healthy: i32, expected: i32) -> Self;
}

impl PdbFixture for PodDisruptionBudget {
    fn test(name: &str) -> Self {
        PodDisruptionBudget {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodDisruptionBudgetSpec::default()),
            status: None,
        }
    }
    fn in_ns(mut self, ns: &str) -> Self {
        self.metadata.namespace = Some(ns.into());
        self
    }
    fn selecting(mut self, k: &str, v: &str) -> Self {
        let sel =
            self.spec.get_or_insert_with(Default::default).selector.get_or_insert_with(Default::default);
        sel.match_labels.get_or_insert_with(Default::default).insert(k.into(), v.into());
        self
    }
    fn expression(mut self, key: &str, op: &str, values: &[&str]) -> Self {
        let sel =
            self.spec.get_or_insert_with(Default::default).selector.get_or_insert_with(Default::default);
        sel.match_expressions.get_or_insert_with(Vec::new).push(LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        });
        self
    }
    fn empty_selector(mut self) -> Self {
        self.spec.get_or_insert_with(Default::default).selector = Some(LabelSelector::default());
        self
    }
    fn min_available(mut self, n: i32) -> Self {
        self.spec.get_or_insert_with(Default::default).min_available = Some(IntOrString::Int(n));
        self
    }
    fn always_allow(mut self) -> Self {
        self.spec.get_or_insert_with(Default::default).unhealthy_pod_eviction_policy =
            Some("AlwaysAllow".into());
        self
    }
    fn status(mut self, allowed: i32, current_healthy: i32, desired_healthy: i32, expected: i32) -> Self {
        self.status = Some(PodDisruptionBudgetStatus {
            disruptions_allowed: allowed,
            current_healthy,
            desired_healthy,
            expected_pods: expected,
            ..Default::default()
        });
        self
    }
}
