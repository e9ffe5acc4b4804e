//! `rehearse`: the built-in rehearsal runs every phase to the end; `--from-cluster` rehearses
//! on a read-only copy of a "live" cluster (a `sim::apiserver` instance) and never writes to it; and the
//! binary runs as a new user would run it.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use assert_cmd::Command;
use chain_core::{plan::Phase, settings::Settings};
use k8s_openapi::api::core::v1::Node;
use k8s_upgrade_chain::{
    k8s::Clients,
    rehearse::{self, Options, Source},
};
use sim::apiserver::{TestApiServer, fixtures as tf};

fn options(source: Source, version: Option<&str>) -> Options {
    Options {
        source,
        version: version.map(|v| v.parse().unwrap()),
        speed: rehearse::DEFAULT_SPEED,
        image: "registry.local/k8s-upgrade-chain:test".into(),
    }
}

/// Collects progress lines.
fn collector() -> (Arc<Mutex<Vec<String>>>, impl Fn(&str) + Send + Sync) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = lines.clone();
    (lines, move |s: &str| l.lock().unwrap().push(s.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_builtin_rehearsal_runs_every_phase_and_resolves_the_pdb_deadlock() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (lines, progress) = collector();
    let report =
        rehearse::rehearse(&Settings::default(), options(Source::Builtin, None), &progress).await.unwrap();
    let out = lines.lock().unwrap().join("\n");
    assert!(report.completed, "{out}");
    let steps: Vec<(Phase, Option<&str>)> =
        report.jobs.iter().map(|j| (j.phase, j.node.as_deref())).collect();
    assert_eq!(
        steps,
        [
            (Phase::Preflight, None),
            (Phase::Master, Some("k8s-master")),
            (Phase::Worker, Some("k8s-node1")),
            (Phase::Worker, Some("k8s-node2")),
            (Phase::Worker, Some("k8s-node3")),
            (Phase::Worker, Some("k8s-node4")),
            (Phase::Postflight, None),
        ]
    );
    assert_eq!(report.target.to_string(), "1.34.2");
    for j in &report.jobs {
        assert_eq!(j.result, "Done", "{}", j.name);
        assert_ne!(j.node.as_deref(), Some(j.run_on.as_str()), "{} runs on the node it drains", j.name);
    }
    // The single-replica Deployment's PDB (minAvailable 1) is a deadlock: the fallback deletes it.
    let node3 = &report.jobs[4];
    assert_eq!(node3.fallback_deleted.len(), 1, "{out}");
    assert!(node3.fallback_deleted[0].pod.starts_with("apps/billing-"), "{:?}", node3.fallback_deleted);
    assert_eq!(node3.fallback_deleted[0].pdbs, ["billing"]);
    // The 3-replica minAvailable 2 PDB makes node1's second web pod wait for a replacement.
    let node1 = &report.jobs[2];
    assert!(node1.eviction_refusals >= 1, "{node1:?}");
    assert_eq!(node1.evicted.iter().filter(|p| p.starts_with("apps/web-")).count(), 2, "{node1:?}");
    assert!(report.jobs[0].etcd_snapshots == 1, "preflight took the etcd snapshot");
    assert!(report.projected > report.wall, "the projection uses the real waits");

    for want in [
        "[1] preflight: Job k8s-upgrade-preflight-1-34-2 runs on k8s-node1",
        "[2] master k8s-master",
        "node k8s-master: update_k8s.sh --role master --release 1.34.2",
        "worker k8s-node1: Job k8s-upgrade-worker-1-34-2-k8s-node1 runs on k8s-master, tolerating node-role.kubernetes.io/control-plane:NoSchedule",
        "[6] worker k8s-node4",
        "[7] postflight",
        "PDB fallback deleted apps/billing-",
        "alert gate:",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let summary = rehearse::summary_text(&report);
    for want in [
        "Summary",
        "chain completed",
        "pods evicted:",
        "(PDB billing)",
        "projected duration with the real waits",
        "model, per Job",
    ] {
        assert!(summary.contains(want), "missing {want:?} in:\n{summary}");
    }
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["jobs"].as_array().unwrap().len(), 7);
    assert_eq!(json["completed"], true);
}

/// The site's etcd backup in the "live" cluster: CronJob kube-system/etcd-backup.
fn site_backup() -> chain_core::settings::EtcdBackup {
    chain_core::settings::EtcdBackup {
        namespace: "kube-system".into(),
        cronjob: "etcd-backup".into(),
        container: Some("backup".into()),
        location_prefix: "nfs://nas:/srv/etcd-backup/".into(),
        min_bytes: 1024,
    }
}

/// A site config naming the live cluster's etcd backup CronJob.
fn site() -> Settings {
    let mut s = Settings::default();
    s.hooks.etcd_backup = Some(site_backup());
    s
}

/// A "live" cluster: one control plane, three workers (the first with a GPU NoSchedule taint),
/// a single-replica Deployment whose PDB says minAvailable 1 on k8s-node2, CoreDNS, DaemonSet
/// and static control-plane pods, and the site's etcd backup CronJob.
async fn live_cluster() -> TestApiServer {
    let srv = TestApiServer::start().await;
    for ns in ["kube-system", "apps", "k8s-upgrade"] {
        srv.insert(tf::namespace(ns));
    }
    let hour_ago = (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(3600)).to_string();
    for (i, name) in ["k8s-cp", "k8s-node1", "k8s-node2", "k8s-node3"].iter().enumerate() {
        let mut n = tf::node(name).ready().kubelet("v1.34.1").internal_ip(&format!("10.1.0.{}", 10 + i));
        if i == 0 {
            n = n.control_plane();
        }
        if *name == "k8s-node1" {
            n = n.taint("nvidia.com/gpu", "present", "NoSchedule");
        }
        srv.insert(n.build());
        srv.modify::<Node>(None, name, |n| {
            for c in n["status"]["conditions"].as_array_mut().unwrap() {
                c["lastTransitionTime"] = serde_json::json!(hour_ago);
            }
        });
        srv.insert(
            tf::pod(&format!("kube-proxy-{i}"))
                .ns("kube-system")
                .on(name)
                .owned_by_daemonset("kube-proxy")
                .build(),
        );
        srv.insert(
            tf::pod(&format!("calico-node-{i}"))
                .ns("kube-system")
                .on(name)
                .owned_by_daemonset("calico-node")
                .build(),
        );
    }
    for ds in ["kube-proxy", "calico-node"] {
        srv.insert(tf::daemonset(ds).ns("kube-system").build());
    }
    for c in ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"] {
        srv.insert(
            tf::pod(&format!("{c}-k8s-cp"))
                .ns("kube-system")
                .on("k8s-cp")
                .mirror()
                .owned_by("v1", "Node", "k8s-cp")
                .labels(&[("tier", "control-plane"), ("component", c)])
                .build(),
        );
    }
    srv.insert(
        tf::replicaset("coredns-5d78c9869d")
            .ns("kube-system")
            .replicas(1)
            .labels(&[("k8s-app", "kube-dns")])
            .build(),
    );
    srv.insert(
        tf::pod("coredns-5d78c9869d-abcde")
            .ns("kube-system")
            .on("k8s-node3")
            .owned_by_replicaset("coredns-5d78c9869d")
            .labels(&[("k8s-app", "kube-dns")])
            .build(),
    );
    srv.insert(tf::deployment("ledger").ns("apps").replicas(1).labels(&[("app", "ledger")]).build());
    srv.insert(
        tf::replicaset("ledger-6b7f9c")
            .ns("apps")
            .replicas(1)
            .labels(&[("app", "ledger")])
            .owned_by_deployment("ledger")
            .build(),
    );
    srv.insert(
        tf::pod("ledger-6b7f9c-q2w3e")
            .ns("apps")
            .on("k8s-node2")
            .owned_by_replicaset("ledger-6b7f9c")
            .labels(&[("app", "ledger")])
            .build(),
    );
    srv.insert(tf::pdb("ledger").ns("apps").min_available(1).selector(&[("app", "ledger")]).build());
    srv.insert(serde_json::json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "etcd-backup", "namespace": "kube-system"},
        "spec": {"schedule": "0 */6 * * *", "jobTemplate": {"spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "backup", "image": "registry.site/etcd-backup:3.5"}]}}}}}
    }));
    srv
}

fn assert_read_only(live: &TestApiServer) {
    let requests = live.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert!(matches!(r.verb.as_str(), "get" | "list" | "watch"), "the live cluster got a write: {r:?}");
        assert_eq!(r.method, "GET", "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn from_cluster_rehearses_on_a_read_only_copy() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let live = live_cluster().await;
    live.reset_requests();
    let clients = Clients::from_config(live.config()).unwrap();
    let (lines, progress) = collector();
    let report =
        rehearse::rehearse(&site(), options(Source::Live(clients), Some("1.34.2")), &progress).await.unwrap();
    let out = lines.lock().unwrap().join("\n");
    // Shown with --nocapture: what a user of --from-cluster sees.
    println!("{out}{}", rehearse::summary_text(&report));
    assert!(report.completed, "{out}");
    assert_eq!(report.jobs.len(), 1 + 1 + 3 + 1, "one Job per phase and worker");
    assert!(!report.hypothetical_target);

    // The drain of k8s-node2 is predicted to block on the deadlocked PDB, and the fallback
    // deletes the pod when the rehearsal drains it.
    let node2 = report.drains.iter().find(|d| d.node == "k8s-node2").unwrap();
    assert_eq!(node2.fallback.len(), 1, "{node2:?}");
    assert_eq!(node2.fallback[0].pod, "apps/ledger-6b7f9c-q2w3e");
    assert_eq!(node2.fallback[0].pdbs, ["ledger"]);
    assert!(out.contains("blocks: apps/ledger-6b7f9c-q2w3e by PDB ledger"), "{out}");
    let w2 = report.jobs.iter().find(|j| j.node.as_deref() == Some("k8s-node2")).unwrap();
    assert_eq!(w2.fallback_deleted.len(), 1, "{w2:?}");
    assert_eq!(w2.fallback_deleted[0].pod, "apps/ledger-6b7f9c-q2w3e");
    assert!(out.contains("PDB fallback deleted apps/ledger-6b7f9c-q2w3e (PDB ledger"), "{out}");

    // The chain's own Jobs prefer a worker without a scheduling taint over the GPU worker
    // k8s-node1 (plan::placement); worker Jobs run on the control plane.
    let pre = &report.jobs[0];
    assert_eq!(pre.run_on, "k8s-node2");
    assert!(pre.tolerations.is_empty(), "{:?}", pre.tolerations);
    assert!(out.contains("[1] preflight: Job k8s-upgrade-preflight-1-34-2 runs on k8s-node2\n"), "{out}");
    let w1 = report.jobs.iter().find(|j| j.node.as_deref() == Some("k8s-node1")).unwrap();
    assert_eq!(w1.run_on, "k8s-cp");
    assert!(!rehearse::summary_text(&report).contains("nvidia.com/gpu:NoSchedule"));
    // The snapshot came from the site's own backup CronJob, copied from the live cluster.
    assert_eq!(report.jobs[0].etcd_snapshots, 1);
    assert!(out.contains("1 etcd backup CronJobs"), "{out}");

    assert_read_only(&live);
    // The live cluster is as it was: nothing upgraded, cordoned or evicted there.
    let n2: Node = live.get(None, "k8s-node2").unwrap();
    assert_eq!(n2.status.unwrap().node_info.unwrap().kubelet_version, "v1.34.1");
    assert!(live.get::<k8s_openapi::api::core::v1::Pod>(Some("apps"), "ledger-6b7f9c-q2w3e").is_some());
}

#[test]
fn the_binary_rehearses_the_builtin_cluster() {
    let out = Command::cargo_bin("k8s-upgrade-chain")
        .unwrap()
        .arg("rehearse")
        .env_remove("TARGET_VERSION")
        .env_remove("CONFIG")
        .env_remove("OUTPUT")
        .env_remove("FROM_CLUSTER")
        .env_remove("REHEARSE_SPEED")
        .env_remove("REHEARSE_NODES")
        .env_remove("REHEARSE_PODS_PER_NODE")
        .env("RUST_LOG", "warn")
        .timeout(Duration::from_secs(300))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "preflight",
        "master k8s-master",
        "worker k8s-node1",
        "worker k8s-node2",
        "worker k8s-node3",
        "worker k8s-node4",
        "postflight",
        "Summary",
        "projected duration with the real waits",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_binary_rehearses_from_a_kubeconfig_without_writing() {
    let live = live_cluster().await;
    live.reset_requests();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("site.yaml");
    std::fs::write(
        &config,
        "hooks:\n  etcd_backup:\n    namespace: kube-system\n    cronjob: etcd-backup\n    container: backup\n",
    )
    .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: live\n  cluster:\n    server: {}\ncontexts:\n- name: live\n  context:\n    cluster: live\n    user: me\nusers:\n- name: me\n  user: {{}}\ncurrent-context: live\n",
            live.url()
        ),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::cargo_bin("k8s-upgrade-chain")
            .unwrap()
            .args(["rehearse", "--from-cluster", "-o", "json"])
            .env("KUBECONFIG", &kubeconfig)
            .env("CONFIG", &config)
            .env_remove("TARGET_VERSION")
            .env_remove("OUTPUT")
            .env_remove("REHEARSE_SPEED")
            .env_remove("OUTPUT")
            .env_remove("FROM_CLUSTER")
            .env_remove("REHEARSE_SPEED")
            .env("RUST_LOG", "warn")
            .timeout(Duration::from_secs(300))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["target"], "1.34.2", "the next patch");
    assert_eq!(report["hypothetical_target"], true);
    assert_eq!(report["completed"], true);
    assert_eq!(report["jobs"].as_array().unwrap().len(), 6);
    assert_read_only(&live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_minor_target_is_detected_through_the_simulated_apt_repository() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (lines, progress) = collector();
    let report =
        rehearse::rehearse(&Settings::default(), options(Source::Builtin, Some("1.35.0")), &progress)
            .await
            .unwrap();
    let out = lines.lock().unwrap().join("\n");
    assert!(report.completed, "{out}");
    assert_eq!(report.kind, chain_core::plan::Kind::Minor);
    assert!(out.contains("detect: target v1.35.0 (minor from v1.34.1)"), "{out}");
    // Preflight points every node's apt source at the new minor.
    let rewrites = report.jobs[0].node_actions.iter().filter(|a| a.contains("apt-repo-rewrite 1.35")).count();
    assert_eq!(rewrites, 5, "{:?}", report.jobs[0].node_actions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unhealthy_live_node_stops_the_rehearsal_at_preflight() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let live = live_cluster().await;
    live.set_node_ready("k8s-node3", false);
    let clients = Clients::from_config(live.config()).unwrap();
    let (_lines, progress) = collector();
    let report =
        rehearse::rehearse(&site(), options(Source::Live(clients), Some("1.34.2")), &progress).await.unwrap();
    assert!(!report.completed);
    assert_eq!(report.jobs.len(), 1, "{:?}", report.jobs);
    assert!(report.jobs[0].result.contains("k8s-node3 (not Ready)"), "{}", report.jobs[0].result);
    assert!(rehearse::summary_text(&report).contains("chain STOPPED before the end"));
}

/// A generated cluster rehearses to the end on a current-thread runtime, where the simulation
/// runs on the simulated clock (as the `rehearse` command runs it): every worker is drained and
/// upgraded, the single-replica deadlocks go through the fallback, and each worker Job's time
/// on the simulation's clock still holds its scaled soak (the clock advanced through the waits
/// instead of the waits being skipped).
#[tokio::test(flavor = "current_thread")]
async fn a_generated_cluster_rehearses_to_the_end_on_the_simulated_clock() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let size = rehearse::generated::ClusterSize::new(12, 20).unwrap();
    let (_lines, progress) = collector();
    let report = rehearse::rehearse(&Settings::default(), options(Source::Generated(size), None), &progress)
        .await
        .unwrap();
    assert!(report.completed, "{}", rehearse::summary_text(&report));
    assert_eq!(report.source, "generated (12 nodes, 240 pods)");
    let workers: Vec<_> = report.jobs.iter().filter(|j| j.phase == Phase::Worker).collect();
    assert_eq!(workers.len(), 9, "12 nodes: 3 control planes and 9 workers");
    for w in &workers {
        assert_eq!(w.result, "Done", "{}", w.name);
        assert!(w.simulated_soak >= Duration::from_secs(1), "{}: soak {:?}", w.name, w.simulated_soak);
        assert!(
            w.measured >= w.simulated_soak,
            "{}: {:?} on the clock, soak {:?}",
            w.name,
            w.measured,
            w.simulated_soak
        );
        assert!(w.alert_checks >= 10, "{}: {} alert checks", w.name, w.alert_checks);
    }
    let evicted: usize = workers.iter().map(|w| w.evicted.len()).sum();
    assert!(evicted > 100, "{evicted} pods evicted");
    assert!(
        workers
            .iter()
            .flat_map(|w| &w.fallback_deleted)
            .any(|f| f.why.contains("allows no disruption even at full health")),
        "a single-replica deadlock went through the fallback"
    );
    // The rehearsal gave the runtime its real clock back: pausing it again would panic if not.
    tokio::time::pause();
    tokio::time::resume();
}

#[test]
fn the_binary_rehearses_a_generated_cluster_and_refuses_a_size_out_of_bounds() {
    let run = |args: &[&str]| {
        Command::cargo_bin("k8s-upgrade-chain")
            .unwrap()
            .arg("rehearse")
            .args(args)
            .env_remove("TARGET_VERSION")
            .env_remove("CONFIG")
            .env_remove("OUTPUT")
            .env_remove("FROM_CLUSTER")
            .env_remove("REHEARSE_SPEED")
            .env_remove("REHEARSE_NODES")
            .env_remove("REHEARSE_PODS_PER_NODE")
            .env("RUST_LOG", "warn")
            .timeout(Duration::from_secs(300))
            .output()
            .unwrap()
    };
    let out = run(&["--nodes", "10", "--pods-per-node", "8", "-o", "json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["source"], "generated (10 nodes, 80 pods)");
    assert_eq!(report["completed"], true);
    let workers = report["jobs"].as_array().unwrap().iter().filter(|j| j["phase"] == "worker").count();
    assert_eq!(workers, 7);

    let out = run(&["--nodes", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Issue 17 item 4: the rehearsal takes the real preflight's etcd snapshot decision. Without a
/// backup (and without the opt-out) both refuse with the same words; a backup CronJob missing
/// from the live cluster stops the rehearsal where the real preflight stops; the opt-out runs
/// without a snapshot. The live cluster is only read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn from_cluster_takes_the_real_preflights_etcd_snapshot_decision() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let live = live_cluster().await;
    live.reset_requests();
    let rehearse_with = |settings: Settings| {
        let clients = Clients::from_config(live.config()).unwrap();
        async move {
            let (_lines, progress) = collector();
            rehearse::rehearse(&settings, options(Source::Live(clients), Some("1.34.2")), &progress)
                .await
                .unwrap()
        }
    };

    // No backup configured: the rehearsal stops at preflight, as the real one does.
    let report = rehearse_with(Settings::default()).await;
    assert!(!report.completed);
    assert_eq!(report.jobs.len(), 1, "{:?}", report.jobs);
    assert!(report.jobs[0].result.contains(chain_core::etcd::REFUSAL), "{}", report.jobs[0].result);
    assert_eq!(report.jobs[0].etcd_snapshots, 0);
    assert!(rehearse::summary_text(&report).contains("chain STOPPED before the end"));
    assert_read_only(&live);
    // The real preflight, on the live cluster itself with the same settings, says the same
    // (it refuses before its first request).
    live.reset_requests();
    let settings = rehearse::simulated_settings(
        &Settings::default(),
        rehearse::DEFAULT_SPEED,
        &"http://127.0.0.1:9/".parse().unwrap(),
        &"http://127.0.0.1:9/".parse().unwrap(),
        &"http://127.0.0.1:9/".parse().unwrap(),
        false,
    );
    let exec = Arc::new(sim::node::SimExec::new(
        Arc::new(TestApiServer::start().await),
        vec![],
        "1.7.27".parse().unwrap(),
        Duration::ZERO,
    ));
    let ctx = k8s_upgrade_chain::chain::Ctx::new(
        settings,
        Clients::from_config(live.config()).unwrap(),
        exec,
        "registry.local/k8s-upgrade-chain:test".into(),
    )
    .unwrap();
    let input = k8s_upgrade_chain::chain::StepInput {
        step: chain_core::plan::Step::Preflight,
        target: "1.34.2".parse().unwrap(),
        kind: chain_core::plan::Kind::Patch,
    };
    let real = k8s_upgrade_chain::chain::run_step(&ctx, &input).await.unwrap_err();
    assert!(format!("{real:#}").contains(chain_core::etcd::REFUSAL), "{real:#}");
    assert_read_only(&live);

    // A backup named but its CronJob missing from the cluster: stopped at preflight too.
    let mut missing = site();
    missing.hooks.etcd_backup.as_mut().unwrap().cronjob = "no-such-backup".into();
    let report = rehearse_with(missing).await;
    assert!(!report.completed);
    assert_eq!(report.jobs.len(), 1, "{:?}", report.jobs);
    assert!(
        report.jobs[0].result.contains("etcd backup CronJob kube-system/no-such-backup"),
        "{}",
        report.jobs[0].result
    );

    // The site's opt-out: the chain runs without a snapshot.
    let mut opted = Settings::default();
    opted.hooks.allow_no_etcd_snapshot = true;
    let report = rehearse_with(opted).await;
    assert!(report.completed, "{:?}", report.jobs);
    assert!(report.jobs.iter().all(|j| j.etcd_snapshots == 0));
    assert_read_only(&live);
}
