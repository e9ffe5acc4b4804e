//! Planner tests: table-driven, over fixture clusters that read like prose.

use chain_core::{
    fixtures::{cluster, node},
    plan::{self, Next, Phase, PlanError, Snapshot, Step, chain, natural_cmp, next_after, placement},
    settings::ControlPlaneSelector,
    version::Version,
};
use k8s_openapi::api::core::v1::Node;

fn v(s: &str) -> Version {
    s.parse().unwrap()
}

fn snapshot(nodes: &[Node]) -> Result<Snapshot, PlanError> {
    Snapshot::from_nodes(
        nodes,
        &ControlPlaneSelector::parse("node-role.kubernetes.io/control-plane").unwrap(),
    )
}

/// The chain as compact lines: `phase node@run-on [tolerations] (skip)`.
fn describe(nodes: &[Node], target: &str) -> Vec<String> {
    let snap = snapshot(nodes).unwrap();
    chain(&snap, v(target))
        .unwrap()
        .into_iter()
        .map(|j| {
            let tol: Vec<String> = j
                .placement
                .tolerations
                .iter()
                .map(|t| format!("{}:{}", t.key.as_deref().unwrap_or(""), t.effect.as_deref().unwrap_or("")))
                .collect();
            format!(
                "{}{} @{}{}{}",
                j.step.phase(),
                j.step.node().map(|n| format!(" {n}")).unwrap_or_default(),
                j.placement.run_on,
                if tol.is_empty() { String::new() } else { format!(" [{}]", tol.join(",")) },
                if j.skip { " (skip)" } else { "" }
            )
        })
        .collect()
}

const CP: &str = "node-role.kubernetes.io/control-plane:NoSchedule";

#[test]
fn one_control_plane_and_four_workers() {
    let nodes = cluster(1, 4, "v1.34.1");
    assert_eq!(
        describe(&nodes, "1.34.2"),
        vec![
            "preflight @k8s-node1".to_string(),
            "master k8s-master @k8s-node1".into(),
            format!("worker k8s-node1 @k8s-master [{CP}]"),
            format!("worker k8s-node2 @k8s-master [{CP}]"),
            format!("worker k8s-node3 @k8s-master [{CP}]"),
            format!("worker k8s-node4 @k8s-master [{CP}]"),
            "postflight @k8s-node1".into(),
        ]
    );
}

#[test]
fn workers_in_natural_order_with_node10() {
    // The seed's 1+7 cluster: node1..node6 and node10. A lexical sort put node10 before node2.
    let mut nodes = cluster(1, 6, "1.34.1");
    nodes.push(node("k8s-node10").kubelet("1.34.1").ip("10.0.0.20").build());
    nodes.reverse();
    let lines = describe(&nodes, "1.34.2");
    let workers: Vec<&str> =
        lines.iter().filter(|l| l.starts_with("worker")).map(|l| l.split(' ').nth(1).unwrap()).collect();
    assert_eq!(
        workers,
        ["k8s-node1", "k8s-node2", "k8s-node3", "k8s-node4", "k8s-node5", "k8s-node6", "k8s-node10"]
    );
    assert_eq!(lines.len(), 1 + 1 + 7 + 1);
}

#[test]
fn ha_control_plane_three_plus_three() {
    let nodes = cluster(3, 3, "v1.34.1");
    assert_eq!(
        describe(&nodes, "1.35.0"),
        vec![
            "preflight @k8s-node1".to_string(),
            "master k8s-cp1 @k8s-node1".into(),
            "control-plane k8s-cp2 @k8s-node1".into(),
            "control-plane k8s-cp3 @k8s-node1".into(),
            format!("worker k8s-node1 @k8s-cp1 [{CP}]"),
            format!("worker k8s-node2 @k8s-cp1 [{CP}]"),
            format!("worker k8s-node3 @k8s-cp1 [{CP}]"),
            "postflight @k8s-node1".into(),
        ]
    );
    assert_eq!(Phase::Master.script_role(), Some("master"));
    assert_eq!(Phase::ControlPlane.script_role(), Some("control-plane"));
}

#[test]
fn tainted_run_on_nodes_get_matching_tolerations() {
    // node1 carries the GPU taint (seed failure 36) and a NoExecute taint; lifecycle taints and
    // PreferNoSchedule are not tolerated.
    let nodes = vec![
        node("k8s-master")
            .control_plane()
            .kubelet("1.34.1")
            .ip("10.0.0.1")
            .taint("dedicated", "NoExecute")
            .build(),
        node("k8s-node1")
            .kubelet("1.34.1")
            .ip("10.0.0.11")
            .taint("nvidia.com/gpu", "NoSchedule")
            .taint("nvidia.com/gpu", "NoSchedule")
            .taint("soft", "PreferNoSchedule")
            .taint("node.kubernetes.io/disk-pressure", "NoSchedule")
            .build(),
        node("k8s-node2").kubelet("1.34.1").ip("10.0.0.12").build(),
    ];
    // A worker without a scheduling taint exists: the chain runs there, not on the GPU node.
    assert_eq!(
        describe(&nodes, "1.34.2"),
        vec![
            "preflight @k8s-node2".to_string(),
            "master k8s-master @k8s-node2".into(),
            format!("worker k8s-node1 @k8s-master [{CP},dedicated:NoExecute]"),
            format!("worker k8s-node2 @k8s-master [{CP},dedicated:NoExecute]"),
            "postflight @k8s-node2".into(),
        ]
    );
    // Every worker tainted: the first one, with tolerations for its taints.
    let nodes: Vec<Node> = nodes
        .into_iter()
        .map(|mut n| {
            if n.metadata.name.as_deref() == Some("k8s-node2") {
                let t = k8s_openapi::api::core::v1::Taint {
                    key: "dedicated".into(),
                    effect: "NoSchedule".into(),
                    ..Default::default()
                };
                n.spec.get_or_insert_default().taints.get_or_insert_default().push(t);
            }
            n
        })
        .collect();
    assert_eq!(
        describe(&nodes, "1.34.2"),
        vec![
            "preflight @k8s-node1 [nvidia.com/gpu:NoSchedule]".to_string(),
            "master k8s-master @k8s-node1 [nvidia.com/gpu:NoSchedule]".into(),
            format!("worker k8s-node1 @k8s-master [{CP},dedicated:NoExecute]"),
            format!("worker k8s-node2 @k8s-master [{CP},dedicated:NoExecute]"),
            "postflight @k8s-node1 [nvidia.com/gpu:NoSchedule]".into(),
        ]
    );
    let snap = snapshot(&nodes).unwrap();
    let p = placement(&snap, &Step::Preflight).unwrap();
    assert!(p.tolerations.iter().all(|t| t.operator.as_deref() == Some("Exists")));
}

#[test]
fn cordoned_or_not_ready_workers_are_not_run_on() {
    let nodes = vec![
        node("k8s-master").control_plane().kubelet("1.34.1").ip("10.0.0.1").build(),
        node("k8s-node1").kubelet("1.34.1").ip("10.0.0.11").cordoned().build(),
        node("k8s-node2").kubelet("1.34.1").ip("10.0.0.12").not_ready().build(),
        node("k8s-node3").kubelet("1.34.1").ip("10.0.0.13").build(),
    ];
    let snap = snapshot(&nodes).unwrap();
    assert_eq!(placement(&snap, &Step::Preflight).unwrap().run_on, "k8s-node3");
    // A worker Job for node3 itself still runs on the control plane, never on node3.
    assert_eq!(placement(&snap, &Step::worker("k8s-node3")).unwrap().run_on, "k8s-master");
}

#[test]
fn no_schedulable_worker_is_a_clear_error() {
    let nodes = vec![
        node("k8s-master").control_plane().kubelet("1.34.1").ip("10.0.0.1").build(),
        node("k8s-node1").kubelet("1.34.1").ip("10.0.0.11").cordoned().build(),
    ];
    let snap = snapshot(&nodes).unwrap();
    let e = placement(&snap, &Step::master("k8s-master")).unwrap_err();
    assert_eq!(e, PlanError::NoSchedulableWorker { phase: Phase::Master });
    // Postflight falls back to the control plane.
    assert_eq!(placement(&snap, &Step::Postflight).unwrap().run_on, "k8s-master");
}

#[test]
fn partial_runs_skip_nodes_already_on_target() {
    // Master and node2 done, node1 and node3 not: the chain resumes without re-draining.
    let nodes = vec![
        node("k8s-master").control_plane().kubelet("v1.34.2").ip("10.0.0.1").build(),
        node("k8s-node1").kubelet("v1.34.1").ip("10.0.0.11").build(),
        node("k8s-node2").kubelet("1.34.2").ip("10.0.0.12").build(),
        node("k8s-node3").kubelet("v1.34.1").ip("10.0.0.13").build(),
    ];
    assert_eq!(
        describe(&nodes, "1.34.2"),
        vec![
            "preflight @k8s-node1".to_string(),
            "master k8s-master @k8s-node1 (skip)".into(),
            format!("worker k8s-node1 @k8s-master [{CP}]"),
            format!("worker k8s-node3 @k8s-master [{CP}]"),
            "postflight @k8s-node1".into(),
        ]
    );
    let snap = snapshot(&nodes).unwrap();
    assert_eq!(snap.running_version(), v("1.34.1"), "the oldest kubelet is the running version");
    let off: Vec<_> = snap.off_target(v("1.34.2")).map(|n| n.name.as_str()).collect();
    assert_eq!(off, ["k8s-node1", "k8s-node3"]);
}

#[test]
fn everything_on_target_goes_straight_to_postflight() {
    let nodes = cluster(1, 2, "v1.34.2");
    assert_eq!(
        describe(&nodes, "1.34.2"),
        vec!["preflight @k8s-node1", "master k8s-master @k8s-node1 (skip)", "postflight @k8s-node1"]
    );
}

#[test]
fn next_after_each_phase_skips_the_node_just_upgraded() {
    // node2's own Job ran, but the snapshot may still show it off target: it must not be
    // picked again (the seed excluded TARGET_NODE for the same reason).
    let nodes = cluster(1, 3, "1.34.1");
    let snap = snapshot(&nodes).unwrap();
    let t = v("1.34.2");
    let cases: &[(Step, Next)] = &[
        (Step::Preflight, Next::Step(Step::master("k8s-master"))),
        (Step::master("k8s-master"), Next::Step(Step::worker("k8s-node1"))),
        (Step::worker("k8s-node1"), Next::Step(Step::worker("k8s-node2"))),
        (Step::worker("k8s-node2"), Next::Step(Step::worker("k8s-node1"))),
        (Step::Postflight, Next::End),
    ];
    for (done, want) in cases {
        assert_eq!(&next_after(&snap, t, done), want, "after {done}");
    }
    // The last pending worker leads to postflight ("none found" is not an error: seed failure 26).
    let nodes = vec![
        node("k8s-master").control_plane().kubelet("1.34.2").ip("10.0.0.1").build(),
        node("k8s-node1").kubelet("1.34.2").ip("10.0.0.11").build(),
        node("k8s-node2").kubelet("1.34.1").ip("10.0.0.12").build(),
    ];
    let snap = snapshot(&nodes).unwrap();
    assert_eq!(next_after(&snap, t, &Step::worker("k8s-node2")), Next::Step(Step::Postflight));
}

#[test]
fn bad_clusters_give_clear_errors() {
    let e = snapshot(&[]).unwrap_err();
    assert_eq!(e, PlanError::NoNodes);

    let e = snapshot(&[node("solo").control_plane().ip("10.0.0.1").build()]).unwrap_err();
    assert!(e.to_string().contains("single-node cluster (solo)"), "{e}");

    let e = snapshot(&cluster(2, 0, "1.34.1")).unwrap_err();
    assert!(e.to_string().contains("no worker") && e.to_string().contains("k8s-cp1, k8s-cp2"), "{e}");

    let e = snapshot(&cluster(0, 2, "1.34.1")).unwrap_err();
    assert!(e.to_string().contains("control-plane label"), "{e}");

    let mut nodes = cluster(1, 2, "1.34.1");
    nodes.push(node("k8s-node9").kubelet("1.34.1").build());
    let e = snapshot(&nodes).unwrap_err();
    assert_eq!(e, PlanError::MissingInternalIp { node: "k8s-node9".into() });
    assert!(e.to_string().contains("k8s-node9 has no InternalIP"));

    let mut nodes = cluster(1, 2, "1.34.1");
    nodes.push(node("k8s-node9").kubelet("1.34").ip("10.0.0.9").build());
    let e = snapshot(&nodes).unwrap_err();
    assert!(e.to_string().contains("k8s-node9") && e.to_string().contains("\"1.34\""), "{e}");

    let mut nodes = cluster(1, 2, "1.34.1");
    nodes.push(node("k8s-node9").kubelet("1.34.1").ip("k8s-node9.lan").build());
    let e = snapshot(&nodes).unwrap_err();
    assert!(matches!(e, PlanError::BadInternalIp { .. }), "{e}");
}

#[test]
fn ipv6_internal_ips_work() {
    let nodes = vec![
        node("cp").control_plane().kubelet("1.34.1").ip("fd00::1").build(),
        node("w1").kubelet("1.34.1").ip("fd00::11").ip("10.0.0.11").build(),
    ];
    let snap = snapshot(&nodes).unwrap();
    assert_eq!(snap.node("w1").unwrap().internal_ip.to_string(), "fd00::11");
    assert!(snap.node("cp").unwrap().internal_ip.is_ipv6());
}

#[test]
fn steps_are_validated_against_the_cluster() {
    let snap = snapshot(&cluster(1, 2, "1.34.1")).unwrap();
    let err = |s: Step| s.validate(&snap).unwrap_err().to_string();
    let pair = |p: Phase, n: Option<&str>| Step::from_parts(p, n).unwrap_err().to_string();
    assert!(pair(Phase::Worker, None).contains("needs a target node"));
    assert!(pair(Phase::Master, Some("")).contains("needs a target node"));
    assert!(err(Step::worker("k8s-node7")).contains("k8s-node7 does not exist"));
    assert!(err(Step::worker("k8s-master")).contains("control-plane node"));
    assert!(err(Step::master("k8s-node1")).contains("worker"));
    assert!(pair(Phase::Preflight, Some("k8s-node1")).contains("takes no target node"));
    assert_eq!(Step::from_parts(Phase::Worker, Some("k8s-node2")).unwrap(), Step::worker("k8s-node2"));
    assert!(Step::worker("k8s-node2").validate(&snap).is_ok());
}

#[test]
fn phase_and_kind_parse_strictly() {
    for p in Phase::ALL {
        assert_eq!(p.as_str().parse::<Phase>().unwrap(), p);
    }
    assert!("Worker".parse::<Phase>().unwrap_err().contains("unknown phase \"Worker\""));
    assert_eq!(plan::Kind::between(v("1.34.1"), v("1.34.5")), plan::Kind::Patch);
    assert_eq!(plan::Kind::between(v("1.34.5"), v("1.35.0")), plan::Kind::Minor);
    assert!("major".parse::<plan::Kind>().is_err());
}

#[test]
fn natural_order() {
    use std::cmp::Ordering::*;
    let cases = [
        ("k8s-node2", "k8s-node10", Less),
        ("k8s-node10", "k8s-node9", Greater),
        ("node-a", "node-b", Less),
        ("w02", "w2", Greater),
        ("w2", "w2", Equal),
        ("rack1-n10", "rack2-n1", Less),
        ("n99999999999999999999999", "n100000000000000000000000", Less),
    ];
    for (a, b, want) in cases {
        assert_eq!(natural_cmp(a, b), want, "{a} vs {b}");
    }
}
