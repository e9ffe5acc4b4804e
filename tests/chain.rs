//! The chain end to end: `detect`, then every Job's `step` as it appears, on the test
//! apiserver with real sshd nodes (shim node commands), a real Pushgateway and Prometheus.

mod support;

use std::time::Duration;

use chain_core::{
    compat::{Addon, AddonKind, Minor},
    plan::{Kind, Phase, Step},
};
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Namespace, PodSpec},
};
use k8s_upgrade_chain::{
    chain::{Ended, detect::Detection},
    k8s::spawn::{OnComplete, SpawnOutcome},
};
use sim::apiserver::fixtures as tf;
use support::chain::{Cluster, Layout, NS};

fn small(net: u8) -> Layout<'static> {
    Layout {
        control_planes: &["k8s-master"],
        workers: &["k8s-node1", "k8s-node2", "k8s-node3", "k8s-node4"],
        running: "1.34.1",
        target: "1.34.2",
        net,
    }
}

/// Applies the Job of `step` as an operator would with `render | kubectl apply`.
async fn spawn(c: &Cluster, step: Step, target: &str, kind: Kind) -> SpawnOutcome {
    let ctx = c.ctx();
    let snap = ctx.snapshot().await.unwrap();
    k8s_upgrade_chain::chain::spawn_step(&ctx, &snap, &step, target.parse().unwrap(), kind, OnComplete::Skip)
        .await
        .unwrap()
}

async fn outcome(c: &Cluster, phase: &str, node: &str, outcome: &str) -> Option<f64> {
    let text = c.pgw.metrics_text().await;
    chain_core::metrics::Scrape::parse(&text)
        .value("k8s_upgrade_phase_outcome", &[("phase", phase), ("node", node), ("outcome", outcome)])
}

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
            kind: Kind::Patch,
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
    // Progress is visible in `kubectl describe`: Events on the node and on the Job.
    let events = c.srv.list::<k8s_openapi::api::events::v1::Event>(None);
    let reasons = |kind: &str, name: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| {
                e.regarding
                    .as_ref()
                    .is_some_and(|r| r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name))
            })
            .filter_map(|e| e.reason.clone())
            .collect()
    };
    let node_reasons = reasons("Node", "k8s-node10");
    for want in ["DrainStarted", "PodsEvicted", "UpgradeRan", "Uncordoned", "NodeReady", "SoakDone"] {
        assert!(node_reasons.iter().any(|r| r == want), "{want} missing on node: {node_reasons:?}");
    }
    assert!(
        events.iter().any(|e| e
            .regarding
            .as_ref()
            .and_then(|r| r.uid.as_deref())
            .is_some_and(|u| !u.is_empty()))
    );
    let job_reasons = reasons("Job", "k8s-upgrade-worker-1-34-2-k8s-node10");
    assert!(
        job_reasons.contains(&"PhaseStarted".to_string())
            && job_reasons.contains(&"PhaseSucceeded".to_string()),
        "{job_reasons:?}"
    );
    // The quiesced Deployment came back after the control-plane upgrade.
    let op: k8s_openapi::api::apps::v1::Deployment =
        c.srv.get(Some("tigera-operator"), "tigera-operator").unwrap();
    assert_eq!(op.spec.unwrap().replicas, Some(1));
    assert!(!op.metadata.annotations.unwrap_or_default().contains_key("k8s-upgrade-chain/quiesced-replicas"));
    assert_eq!(c.metric("k8s_upgrade_snapshot_taken").await, Some(0.0));
    assert_eq!(c.metric("k8s_upgrade_blocked").await, Some(0.0));
    assert_eq!(c.metric("k8s_upgrade_held").await, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubeadm_failure_on_a_worker_stops_the_chain_with_the_node_cordoned() {
    let c = Cluster::start(small(32)).await;
    c.node("k8s-node3").set_state("apt_get_fails", "");
    c.detect().await;
    let ran = c.run_chain().await;
    let last = ran.last().unwrap();
    assert_eq!(last.name, "k8s-upgrade-worker-1-34-2-k8s-node3");
    let err = last.result.as_ref().unwrap_err();
    assert!(err.contains("k8s-node3") && err.contains("stays cordoned"), "{err}");
    assert!(c.cordoned("k8s-node3"), "the node whose upgrade failed stays cordoned");
    assert!(!c.cordoned("k8s-node2") && !c.cordoned("k8s-node4"));
    assert_eq!(c.kubelet("k8s-node2"), "v1.34.2");
    assert_eq!(c.kubelet("k8s-node4"), "v1.34.1", "the chain did not move on");
    assert!(!c.chain_jobs().iter().any(|j| j.ends_with("k8s-node4")), "{:?}", c.chain_jobs());
    // State is clear: still in flight (the alert on it fires), the failure recorded.
    assert_eq!(c.metric("k8s_upgrade_in_flight").await, Some(1.0));
    assert_eq!(outcome(&c, "worker", "k8s-node3", "failed").await, Some(1.0));
    assert_eq!(outcome(&c, "worker", "k8s-node2", "succeeded").await, Some(1.0));
    let job: k8s_openapi::api::batch::v1::Job =
        c.srv.get(Some(NS), "k8s-upgrade-worker-1-34-2-k8s-node3").unwrap();
    assert_eq!(
        k8s_upgrade_chain::k8s::spawn::job_state(&job),
        k8s_upgrade_chain::k8s::spawn::JobState::Failed
    );

    // The operator fixes the node and re-runs its phase: the Failed Job is replaced and the
    // chain converges from there.
    std::fs::remove_file(c.node("k8s-node3").state().join("apt_get_fails")).unwrap();
    let out = spawn(&c, Step::worker("k8s-node3"), "1.34.2", Kind::Patch).await;
    assert!(matches!(out, SpawnOutcome::Respawned { .. }), "{out:?}");
    let ran = c.run_chain().await;
    let names: Vec<&str> = ran.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "k8s-upgrade-worker-1-34-2-k8s-node3",
            "k8s-upgrade-worker-1-34-2-k8s-node4",
            "k8s-upgrade-postflight-1-34-2"
        ]
    );
    assert!(ran.iter().all(|j| j.result.is_ok()), "{ran:?}");
    assert!(!c.cordoned("k8s-node3"));
    assert_eq!(c.metric("k8s_upgrade_in_flight").await, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_switch_mid_chain_halts_cleanly() {
    let c = Cluster::start(small(33)).await;
    c.detect().await;
    let srv = c.srv.clone();
    let ran = c
        .run_chain_with(|name| {
            if name.ends_with("k8s-node2") {
                srv.insert(tf::configmap(NS, "k8s-upgrade-killswitch", &[("reason", "storage storm")]));
            }
        })
        .await;
    let last = ran.last().unwrap();
    assert_eq!(last.name, "k8s-upgrade-worker-1-34-2-k8s-node2");
    assert_eq!(last.result, Ok(Ended::Halted("storage storm".into())));
    assert!(!c.cordoned("k8s-node2"), "halted before touching the node");
    assert_eq!(c.kubelet("k8s-node2"), "v1.34.1");
    assert!(!c.chain_jobs().iter().any(|j| j.ends_with("k8s-node3")), "nothing spawned after the halt");
    assert_eq!(outcome(&c, "worker", "k8s-node2", "halted").await, Some(1.0));
    // Detection halts too while the switch is there.
    assert_eq!(c.detect().await, Detection::Halted("storage storm".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_compatibility_verdict_stops_quietly() {
    let c = Cluster::start(small(34)).await;
    c.srv.insert(tf::namespace("nvidia"));
    c.srv.insert(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "gpu-operator", "namespace": "nvidia"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "gpu-operator"}},
                 "template": {"metadata": {"labels": {"app": "gpu-operator"}},
                              "spec": {"containers": [{"name": "op", "image": "nvcr.io/nvidia/gpu-operator:v25.10.0"}]}}}
    }));
    let mut settings = c.settings.clone();
    settings.compat.addons.push(Addon {
        name: "gpu-operator".into(),
        namespace: "nvidia".into(),
        kind: AddonKind::Deployment,
        resource: "gpu-operator".into(),
        image_re: r"gpu-operator:v(\d+\.\d+)".into(),
        max_k8s: [(Minor(25, 10), Minor(1, 34)), (Minor(26, 3), Minor(1, 35))].into(),
        pinned: true,
        pin_reason: Some("driver coupling".into()),
    });
    let ctx = c.ctx_with(settings.clone());
    let snap = ctx.snapshot().await.unwrap();
    let target = "1.35.0".parse().unwrap();
    k8s_upgrade_chain::chain::spawn_step(
        &ctx,
        &snap,
        &Step::Preflight,
        target,
        Kind::Minor,
        OnComplete::Skip,
    )
    .await
    .unwrap();
    let job =
        c.srv.get::<k8s_openapi::api::batch::v1::Job>(Some(NS), "k8s-upgrade-preflight-1-35-0").unwrap();
    let ran = c.run_job_with(&job, settings).await;
    match &ran.result {
        Ok(Ended::Refused(r)) => assert!(r.starts_with("HELD") && r.contains("[PINNED] gpu-operator"), "{r}"),
        other => panic!("expected a held refusal, got {other:?}"),
    }
    assert_eq!(c.metric("k8s_upgrade_held").await, Some(1.0));
    assert_eq!(c.metric("k8s_upgrade_blocked").await, Some(0.0));
    assert_eq!(c.metric("k8s_upgrade_in_flight").await, None, "refused before anything changed");
    assert_eq!(c.chain_jobs(), ["k8s-upgrade-preflight-1-35-0"], "no master Job");
    assert!(
        c.node("k8s-master").calls().iter().all(|l| !l.starts_with("kubeadm")),
        "nothing ran on the nodes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_preflight_is_respawned_by_detection() {
    let c = Cluster::start(small(35)).await;
    c.pgw.push_raw("test-switch", "k8s_test_block 1\n").await;
    c.prom.wait_for_alerts(&[("TestClusterCritical", "firing")]).await;
    c.detect().await;
    let ran = c.run_chain().await;
    assert_eq!(ran.len(), 1);
    let err = ran[0].result.as_ref().unwrap_err();
    assert!(err.contains("TestClusterCritical"), "{err}");

    c.pgw.push_raw("test-switch", "k8s_test_block 0\n").await;
    c.prom.wait_for_not_firing("TestClusterCritical").await;
    match c.detect().await {
        Detection::Target { spawned: Some(SpawnOutcome::Respawned { .. }), .. } => {}
        other => panic!("expected the Failed preflight to be re-spawned, got {other:?}"),
    }
    let ran = c.run_chain().await;
    assert_eq!(ran.len(), 1 + 1 + 4 + 1);
    assert!(ran.iter().all(|j| j.result.is_ok()), "{ran:?}");
    assert_eq!(c.kubelet("k8s-node4"), "v1.34.2");
    // A Complete preflight whose chain advanced is left alone by the next detection.
    match c.detect().await {
        Detection::UpToDate { .. } => {}
        other => panic!("expected up to date, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn detection_reconciles_a_leaked_latch() {
    let c = Cluster::start(small(36)).await;
    let started = jiff::Timestamp::now().as_second() - 13 * 3600;
    c.pgw
        .push_raw(
            "k8s-version-upgrade",
            &format!("k8s_upgrade_in_flight 1\nk8s_upgrade_started_timestamp {started}\n"),
        )
        .await;
    c.srv.modify::<Namespace>(None, NS, |ns| {
        ns["metadata"]["annotations"] = serde_json::json!({
            "k8s-upgrade-chain/in-flight": "2026-01-01T00:00:00Z",
            "k8s-upgrade-chain/target": "1.34.2",
        });
    });
    // A stale chain Job from the interrupted run, no longer active.
    c.srv.insert(tf::job(NS, "k8s-upgrade-worker-1-34-2-k8s-node1", "img").as_object().cloned().map(|mut j| {
        j.insert("metadata".into(), serde_json::json!({"name": "k8s-upgrade-worker-1-34-2-k8s-node1", "namespace": NS, "labels": {"app": "k8s-upgrade-chain"}}));
        serde_json::Value::Object(j)
    }).unwrap());
    c.srv.complete_job(NS, "k8s-upgrade-worker-1-34-2-k8s-node1");

    c.detect().await;
    assert_eq!(c.metric("k8s_upgrade_in_flight").await, None, "the chain group was deleted");
    let ns: Namespace = c.srv.get(None, NS).unwrap();
    let ann = ns.metadata.annotations.unwrap_or_default();
    assert!(!ann.keys().any(|k| k.starts_with("k8s-upgrade-chain/")), "{ann:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        c.chain_jobs(),
        ["k8s-upgrade-preflight-1-34-2"],
        "old chain Jobs deleted, a fresh chain started"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ha_control_plane_upgrades_one_at_a_time_before_workers() {
    let c = Cluster::start(Layout {
        control_planes: &["k8s-cp1", "k8s-cp2", "k8s-cp3"],
        workers: &["k8s-node1", "k8s-node2"],
        running: "1.34.1",
        target: "1.34.2",
        net: 37,
    })
    .await;
    c.detect().await;
    let ran = c.run_chain().await;
    let order: Vec<&str> = ran.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(
        order,
        [
            "k8s-upgrade-preflight-1-34-2",
            "k8s-upgrade-master-1-34-2",
            "k8s-upgrade-control-plane-1-34-2-k8s-cp2",
            "k8s-upgrade-control-plane-1-34-2-k8s-cp3",
            "k8s-upgrade-worker-1-34-2-k8s-node1",
            "k8s-upgrade-worker-1-34-2-k8s-node2",
            "k8s-upgrade-postflight-1-34-2",
        ]
    );
    assert!(ran.iter().all(|j| j.result.is_ok()), "{ran:?}");
    assert!(c.node("k8s-cp1").calls().iter().any(|l| l.starts_with("kubeadm upgrade apply v1.34.2")));
    for cp in ["k8s-cp2", "k8s-cp3"] {
        let calls = c.node(cp).calls();
        assert!(calls.iter().any(|l| l.starts_with("kubeadm upgrade node")), "{cp}: {calls:?}");
        assert!(!calls.iter().any(|l| l.starts_with("kubeadm upgrade apply")), "{cp}: {calls:?}");
    }
    let w = ran.iter().find(|j| j.phase == Phase::Worker).unwrap();
    assert_eq!(w.run_on, "k8s-cp1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rerunning_a_completed_phase_is_safe() {
    let c = Cluster::start(Layout { workers: &["k8s-node1", "k8s-node2"], ..small(38) }).await;
    c.detect().await;
    let ran = c.run_chain().await;
    assert!(ran.iter().all(|j| j.result.is_ok()), "{ran:?}");
    let calls_before = c.node("k8s-node2").calls().len();
    let jobs_before = c.chain_jobs();

    // The operator re-runs node2's phase by hand.
    let input = k8s_upgrade_chain::chain::StepInput {
        step: Step::worker("k8s-node2"),
        target: "1.34.2".parse().unwrap(),
        kind: Kind::Patch,
    };
    let ended = k8s_upgrade_chain::chain::run_step(&c.ctx(), &input).await.unwrap();
    assert!(matches!(ended, Ended::Skipped(_)), "{ended:?}");
    assert_eq!(c.node("k8s-node2").calls().len(), calls_before, "nothing ran on the node");
    assert!(!c.cordoned("k8s-node2"));
    assert_eq!(c.chain_jobs(), jobs_before, "the Complete postflight was not re-spawned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_minor_upgrade_is_detected_through_redirects_and_runs() {
    let mut c = Cluster::start(Layout {
        control_planes: &["k8s-master"],
        workers: &["k8s-node1", "k8s-node2"],
        running: "1.34.2",
        target: "1.35.3",
        net: 39,
    })
    .await;
    let repo = support::chain::AptRepo::start(&[("1.35", &["1.35.0", "1.35.3", "1.35.1"])]).await;
    c.settings.apt_repository = repo.url.parse().unwrap();
    let d = k8s_upgrade_chain::chain::detect::detect(&c.ctx(), false).await.unwrap();
    assert_eq!(
        d,
        Detection::Target {
            running: "1.34.2".parse().unwrap(),
            target: "1.35.3".parse().unwrap(),
            kind: Kind::Minor,
            spawned: Some(SpawnOutcome::Created)
        }
    );
    let ran = c.run_chain().await;
    assert_eq!(ran.len(), 5, "{ran:?}");
    assert!(ran.iter().all(|j| j.result.is_ok()), "{ran:?}");
    for n in &c.nodes {
        assert_eq!(c.kubelet(&n.name), "v1.35.3");
    }
    assert!(c.node("k8s-master").calls().iter().any(|l| l.starts_with("kubeadm upgrade apply v1.35.3")));

    // A repository without the next minor: nothing to do.
    let empty = support::chain::AptRepo::start(&[]).await;
    c.settings.apt_repository = empty.url.parse().unwrap();
    let d = k8s_upgrade_chain::chain::detect::detect(&c.ctx(), true).await.unwrap();
    assert_eq!(d, Detection::UpToDate { running: "1.35.3".parse().unwrap() });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_control_plane_upgrade_restores_quiesced_deployments() {
    let c = Cluster::start(small(40)).await;
    c.node("k8s-master").set_state("apply_failures", "3");
    c.detect().await;
    let ran = c.run_chain().await;
    let last = ran.last().unwrap();
    assert_eq!(last.name, "k8s-upgrade-master-1-34-2");
    assert!(last.result.is_err(), "{:?}", last.result);
    // Seed failure 27: the operator stayed at 0 replicas after a failed control-plane phase.
    let op: k8s_openapi::api::apps::v1::Deployment =
        c.srv.get(Some("tigera-operator"), "tigera-operator").unwrap();
    assert_eq!(op.spec.unwrap().replicas, Some(1), "restored on the error path");
    assert!(c.cordoned("k8s-master"), "its own upgrade failed: it stays cordoned");
    let calls = c.node("k8s-master").calls();
    assert_eq!(calls.iter().filter(|l| l.starts_with("kubeadm upgrade apply")).count(), 3, "{calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preflight_refuses_inside_the_settle_window_and_without_prometheus() {
    let c = Cluster::start(small(41)).await;
    c.detect().await;
    let job =
        c.srv.get::<k8s_openapi::api::batch::v1::Job>(Some(NS), "k8s-upgrade-preflight-1-34-2").unwrap();
    // The simulated nodes turned Ready seconds ago: inside the default 10-minute window.
    let mut settings = c.settings.clone();
    settings.timeouts.settle_window = Duration::from_secs(600);
    let ran = c.run_job_with(&job, settings).await;
    let err = ran.result.unwrap_err();
    assert!(err.contains("settle window") && err.contains("k8s-node1"), "{err}");
    assert_eq!(c.metric("k8s_upgrade_in_flight").await, None, "aborted before marking in flight");

    // Prometheus unreachable: the alert gate fails closed (the seed ran on).
    spawn(&c, Step::Preflight, "1.34.2", Kind::Patch).await;
    let job =
        c.srv.get::<k8s_openapi::api::batch::v1::Job>(Some(NS), "k8s-upgrade-preflight-1-34-2").unwrap();
    let mut settings = c.settings.clone();
    settings.alerts.prometheus_url = "http://127.0.0.1:9/".parse().unwrap();
    let ran = c.run_job_with(&job, settings).await;
    match ran.result {
        Ok(Ended::Refused(r)) => assert!(r.contains("could not query Prometheus"), "{r}"),
        other => panic!("expected a blocked refusal, got {other:?}"),
    }
    assert_eq!(c.metric("k8s_upgrade_blocked").await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_empty_etcd_snapshot_aborts_before_any_node_is_touched() {
    let c = Cluster::start(small(42)).await;
    *c.backup_log.lock().unwrap() = "Backup done: etcd-snapshot.db (512 bytes)\n".into();
    c.detect().await;
    let ran = c.run_chain().await;
    assert_eq!(ran.len(), 1);
    let err = ran[0].result.as_ref().unwrap_err();
    assert!(err.contains("512 bytes") && err.contains("1024"), "{err}");
    // In flight without a snapshot: exactly what EtcdPreUpgradeSnapshotMissing alerts on.
    assert_eq!(c.metric("k8s_upgrade_in_flight").await, Some(1.0));
    assert_eq!(c.metric("k8s_upgrade_snapshot_taken").await, Some(0.0));
    assert!(c.nodes.iter().all(|n| !n.calls().iter().any(|l| l.starts_with("kubeadm upgrade apply"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partial_chain_resumes_without_redoing_finished_nodes() {
    let c = Cluster::start(small(43)).await;
    // A previous run upgraded the control plane and node1, then stopped.
    c.srv.set_kubelet_version("k8s-master", "v1.34.2");
    c.srv.set_kubelet_version("k8s-node1", "v1.34.2");
    // The post-upgrade script must not run either: the control plane is not upgraded again.
    let mut settings = c.settings.clone();
    settings.hooks.post_control_plane_scripts = c.oidc_restore();
    k8s_upgrade_chain::chain::detect::detect(&c.ctx_with(settings), false).await.unwrap();
    let ran = c.run_chain().await;
    let names: Vec<&str> = ran.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "k8s-upgrade-preflight-1-34-2",
            "k8s-upgrade-master-1-34-2",
            "k8s-upgrade-worker-1-34-2-k8s-node2",
            "k8s-upgrade-worker-1-34-2-k8s-node3",
            "k8s-upgrade-worker-1-34-2-k8s-node4",
            "k8s-upgrade-postflight-1-34-2",
        ]
    );
    assert!(matches!(ran[1].result, Ok(Ended::Skipped(_))), "{:?}", ran[1].result);
    let master = c.node("k8s-master").calls();
    // Seed failure 28: kubeadm plan on an at-target control plane prints no apply line.
    assert!(!master.iter().any(|l| l.starts_with("kubeadm")), "{master:?}");
    assert!(!master.iter().any(|l| l.contains("oidc-restore-marker")), "{master:?}");
    assert!(c.node("k8s-node1").calls().iter().all(|l| !l.starts_with("kubeadm")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn post_upgrade_scripts_run_on_the_upgraded_control_plane() {
    let mut c = Cluster::start(Layout { workers: &["k8s-node1"], ..small(44) }).await;
    c.settings.hooks.post_control_plane_scripts = c.oidc_restore();
    c.detect().await;
    let ran = c.run_chain().await;
    assert!(ran.iter().all(|j| j.result.is_ok()), "{ran:?}");
    let master = c.node("k8s-master").calls();
    let apply = master.iter().position(|l| l.starts_with("kubeadm upgrade apply")).unwrap();
    let script = master.iter().position(|l| l.contains("oidc-restore-marker")).expect("the script ran");
    assert!(script > apply, "after the upgrade: {master:?}");
    assert!(!c.node("k8s-node1").calls().iter().any(|l| l.contains("oidc-restore-marker")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_removed_mid_chain_is_passed_over() {
    let c = Cluster::start(small(45)).await;
    c.detect().await;
    let srv = c.srv.clone();
    let ran = c
        .run_chain_with(|name| {
            if name.ends_with("k8s-node3") {
                srv.remove::<k8s_openapi::api::core::v1::Node>(None, "k8s-node3");
            }
        })
        .await;
    let names: Vec<&str> = ran.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names.len(), 7, "{names:?}");
    let node3 = ran.iter().find(|j| j.name.ends_with("k8s-node3")).unwrap();
    assert!(
        matches!(&node3.result, Ok(Ended::Skipped(why)) if why.contains("no longer exists")),
        "{:?}",
        node3.result
    );
    assert!(ran.iter().all(|j| j.result.is_ok()), "{ran:?}");
    assert_eq!(c.kubelet("k8s-node4"), "v1.34.2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_rbac_stops_preflight_before_anything_changes() {
    let c = Cluster::start(small(46)).await;
    // Seed failure 25: without pods/log the etcd check aborted after the latch was set.
    c.srv.deny("get", "", "pods/log");
    c.detect().await;
    let ran = c.run_chain().await;
    assert_eq!(ran.len(), 1);
    let err = ran[0].result.as_ref().unwrap_err();
    assert!(err.contains("lacks 1 permission") && err.contains("get core/pods/log"), "{err}");
    assert_eq!(c.metric("k8s_upgrade_in_flight").await, None, "nothing marked in flight");
    // Detection's apt-cache query is all that ran on a node.
    assert!(
        c.nodes.iter().flat_map(|n| n.calls()).all(|l| l.starts_with("apt-") || l.starts_with("sudo")),
        "nothing changed on any node"
    );
}

/// The site's `job.template` override: the built-in template plus a marker annotation, so
/// every Job rendered from it can be told apart.
fn site_template() -> String {
    let marked = chain_core::job::BUILTIN_TEMPLATE.replacen(
        "  annotations:\n",
        "  annotations:\n    site.example/template: override\n",
        1,
    );
    assert_ne!(marked, chain_core::job::BUILTIN_TEMPLATE);
    marked
}

/// Installs the chain's objects as `manifests` prints them for `settings` with `template` in
/// the config ConfigMap, and returns the detection CronJob's pod spec.
fn install(c: &Cluster, settings: &chain_core::settings::Settings, template: Option<&str>) -> PodSpec {
    use chain_core::manifests::{self, Options};
    let opts = Options {
        image: support::chain::IMAGE.into(),
        schedule: manifests::DEFAULT_SCHEDULE.into(),
        report_schedule: manifests::DEFAULT_REPORT_SCHEDULE.into(),
        dry_run: false,
        enabled: true,
        config_yaml: manifests::config_yaml(settings),
        job_template: template.map(|t| (settings.job.template.clone().unwrap(), t.to_string())),
    };
    let objects = manifests::objects(settings, &opts);
    for cm in objects.iter().filter(|o| o["kind"] == "ConfigMap") {
        c.srv.insert(cm.clone());
    }
    let cronjob = objects.iter().find(|o| o["metadata"]["name"] == manifests::DETECTION_CRONJOB).unwrap();
    serde_json::from_value(cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"].clone()).unwrap()
}

fn marked(job: &Job) -> bool {
    job.metadata.annotations.as_ref().and_then(|a| a.get("site.example/template")).map(String::as_str)
        == Some("override")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_template_override_renders_every_job_of_the_chain() {
    let c = Cluster::start(Layout { workers: &["k8s-node1", "k8s-node2"], ..small(47) }).await;
    let mut settings = c.settings.clone();
    settings.job.template = Some("site-job.yaml.j2".into());
    let detection = install(&c, &settings, Some(&site_template()));

    // Detection runs with what its CronJob's pod mounts, and renders preflight from the override.
    let root = tempfile::tempdir().unwrap();
    let in_pod = c.settings_in_pod(&detection, root.path()).unwrap();
    assert_eq!(
        in_pod.job.template.as_deref().map(std::path::Path::new),
        Some(root.path().join("etc/k8s-upgrade-chain/site-job.yaml.j2").as_path())
    );
    let d = k8s_upgrade_chain::chain::detect::detect(&c.ctx_with(in_pod), false).await.unwrap();
    assert!(matches!(d, Detection::Target { spawned: Some(SpawnOutcome::Created), .. }), "{d:?}");

    // Each chain Job, spawned from the override, renders the next one from the same override,
    // read through its own config mount.
    let ran = c.run_chain_in_pods().await;
    let order: Vec<&str> = ran.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(
        order,
        [
            "k8s-upgrade-preflight-1-34-2",
            "k8s-upgrade-master-1-34-2",
            "k8s-upgrade-worker-1-34-2-k8s-node1",
            "k8s-upgrade-worker-1-34-2-k8s-node2",
            "k8s-upgrade-postflight-1-34-2",
        ]
    );
    for j in &ran {
        assert!(matches!(j.result, Ok(Ended::Done)), "{} failed: {:?}", j.name, j.result);
    }
    let jobs = c.srv.list::<Job>(Some(NS));
    let chain: Vec<&Job> =
        jobs.iter().filter(|j| order.contains(&j.metadata.name.as_deref().unwrap())).collect();
    assert_eq!(chain.len(), order.len());
    for j in chain {
        assert!(marked(j), "{} was not rendered from the override", j.metadata.name.as_deref().unwrap());
    }
    for n in &c.nodes {
        assert_eq!(c.kubelet(&n.name), "v1.34.2", "{} on target", n.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_override_without_the_config_mount_stops_at_the_first_job() {
    let c = Cluster::start(Layout { workers: &["k8s-node1"], ..small(48) }).await;
    let mut settings = c.settings.clone();
    settings.job.template = Some("site-job.yaml.j2".into());
    // The override drops the config mount: its Jobs cannot read the config, nor the override.
    let template = site_template().replacen(
        "            - name: config\n              mountPath: /etc/k8s-upgrade-chain\n              readOnly: true\n",
        "",
        1,
    );
    assert_ne!(template, site_template());
    let detection = install(&c, &settings, Some(&template));
    let root = tempfile::tempdir().unwrap();
    let in_pod = c.settings_in_pod(&detection, root.path()).unwrap();
    k8s_upgrade_chain::chain::detect::detect(&c.ctx_with(in_pod), false).await.unwrap();
    let ran = c.run_chain_in_pods().await;
    assert_eq!(ran.len(), 1, "{ran:?}");
    assert_eq!(ran[0].name, "k8s-upgrade-preflight-1-34-2");
    let err = ran[0].result.as_ref().unwrap_err();
    assert!(err.contains("/etc/k8s-upgrade-chain/config.yaml is not mounted"), "{err}");

    // And a config naming a template the ConfigMap lacks stops detection (exit 2, bad input).
    install(&c, &settings, None);
    let root = tempfile::tempdir().unwrap();
    let in_pod = c.settings_in_pod(&detection, root.path()).unwrap();
    let err = k8s_upgrade_chain::chain::detect::detect(&c.ctx_with(in_pod), false).await.unwrap_err();
    assert!(format!("{err:#}").contains("site-job.yaml.j2"), "{err:#}");
}
