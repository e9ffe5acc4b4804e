//! The chain end to end: `detect`, then every Job's `step` as it appears, on the test
//! apiserver with real sshd nodes (shim node commands), a real Pushgateway and Prometheus.

mod support;

use k8s_upgrade_chain::{
    chain::{Ended, detect::Detection},
    plan::Phase,
    spawn::SpawnOutcome,
};
use support::chain::{Cluster, Layout};

const CP_TAINT: &str = "node-role.kubernetes.io/control-plane:NoSchedule";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_chain_one_control_plane_seven_workers() {
    let c = Cluster::start(Layout {
        control_planes: &["k8s-master"],
        workers: &[
            "k8s-node1",
            "k8s-node2",
            "k8s-node3",
            "k8s-node4",
            "k8s-node5",
            "k8s-node6",
            "k8s-node10",
        ],
        running: "1.34.1",
        target: "1.34.2",
        net: 31,
    })
    .await;

    let d = c.detect().await;
    assert_eq!(
        d,
        Detection::Target {
            running: "1.34.1".parse().unwrap(),
            target: "1.34.2".parse().unwrap(),
            kind: k8s_upgrade_chain::plan::Kind::Patch,
            spawned: Some(SpawnOutcome::Created)
        }
    );
    assert_eq!(c.metric_in("k8s_upgrade_available", "k8s-version-check").await, Some(1.0));

    let ran = c.run_chain().await;
    let order: Vec<String> = ran.iter().map(|j| j.name.clone()).collect();
    for j in &ran {
        eprintln!("{} -> {:?}", j.name, j.result);
    }
    assert_eq!(
        order,
        [
            "k8s-upgrade-preflight-1-34-2",
            "k8s-upgrade-master-1-34-2",
            "k8s-upgrade-worker-1-34-2-k8s-node1",
            "k8s-upgrade-worker-1-34-2-k8s-node2",
            "k8s-upgrade-worker-1-34-2-k8s-node3",
            "k8s-upgrade-worker-1-34-2-k8s-node4",
            "k8s-upgrade-worker-1-34-2-k8s-node5",
            "k8s-upgrade-worker-1-34-2-k8s-node6",
            "k8s-upgrade-worker-1-34-2-k8s-node10",
            "k8s-upgrade-postflight-1-34-2",
        ]
    );
    for j in &ran {
        assert!(matches!(j.result, Ok(Ended::Done)), "{} failed: {:?}", j.name, j.result);
        assert_ne!(j.node.as_deref(), Some(j.run_on.as_str()), "{} runs on the node it drains", j.name);
        match j.phase {
            Phase::Worker => {
                assert_eq!(j.run_on, "k8s-master", "{}", j.name);
                assert_eq!(j.tolerations, [CP_TAINT], "{}", j.name);
            }
            _ => assert_eq!(j.run_on, "k8s-node1", "{}", j.name),
        }
        // In flight from preflight to the last worker; cleared by postflight.
        let want = if j.phase == Phase::Postflight { Some(0.0) } else { Some(1.0) };
        assert_eq!(j.in_flight, want, "in_flight after {}", j.name);
        assert_eq!(j.annotated, j.phase != Phase::Postflight, "annotations after {}", j.name);
    }
    for n in &c.nodes {
        assert_eq!(c.kubelet(&n.name), "v1.34.2", "{} on target", n.name);
        assert!(!c.cordoned(&n.name), "{} uncordoned", n.name);
    }
    let master_calls = c.node("k8s-master").calls();
    assert!(master_calls.iter().any(|l| l.starts_with("kubeadm upgrade apply v1.34.2")), "{master_calls:?}");
    let w = c.node("k8s-node10").calls();
    assert!(w.iter().any(|l| l.starts_with("kubeadm upgrade node")), "{w:?}");
    assert!(!w.iter().any(|l| l.starts_with("kubeadm upgrade apply")), "{w:?}");
    assert_eq!(c.metric("k8s_upgrade_snapshot_taken").await, Some(0.0));
    assert_eq!(c.metric("k8s_upgrade_blocked").await, Some(0.0));
    assert_eq!(c.metric("k8s_upgrade_held").await, Some(0.0));
}
