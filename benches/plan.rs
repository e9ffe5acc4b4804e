//! Planner benchmark.
//!
//! 1. In process: builds a snapshot of 5, 1,000 and 5,000 nodes from API objects and plans the
//!    whole chain (5,002 Jobs). Prints wall time per stage.
//! 2. The real binary: `plan --nodes-file` on node lists as `kubectl get nodes -o json` writes
//!    them (each Node with labels, conditions and the ~30 images a kubelet reports: about
//!    10 KB, so 700 nodes make the 7 MB list of issue 13), generated here, for 700 and 5,000
//!    nodes. Prints the file size, the wall time and the child's peak resident memory
//!    (`VmHWM`, read from /proc every 2 ms until it exits: `ru_maxrss` would include this
//!    process's own peak, which a spawned child inherits across exec).
//!
//! Run: `cargo bench --bench plan`. Aim: under 1 s and under 100 MB in process; the 5,000-node
//! file planned within a few seconds.

use std::time::{Duration, Instant};

use chain_core::{
    fixtures::cluster,
    plan::{Snapshot, chain},
    settings::ControlPlaneSelector,
    version::Version,
};
use k8s_openapi::api::core::v1::{ContainerImage, Node};

fn peak_rss_mib() -> Option<f64> {
    let kib = vm_hwm_kib(&std::fs::read_to_string("/proc/self/status").ok()?)?;
    Some(kib as f64 / 1024.0)
}

/// A node as the kubelet reports it: the fixture plus the labels and images real nodes carry.
fn weighty(mut n: Node, i: usize) -> Node {
    let labels = n.metadata.labels.get_or_insert_with(Default::default);
    for (k, v) in [
        ("beta.kubernetes.io/arch", "amd64"),
        ("beta.kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("kubernetes.io/os", "linux"),
        ("topology.kubernetes.io/region", "europe-west4"),
        ("topology.kubernetes.io/zone", "europe-west4-a"),
        ("node.kubernetes.io/instance-type", "n2-standard-8"),
    ] {
        labels.insert(k.into(), v.into());
    }
    let status = n.status.get_or_insert_with(Default::default);
    status.images = Some(
        (0..30)
            .map(|j| ContainerImage {
                names: Some(vec![
                    format!("registry.example.com/team-{j}/service-{j}@sha256:{:064x}", i * 31 + j),
                    format!("registry.example.com/team-{j}/service-{j}:v1.{j}.{i}"),
                ]),
                size_bytes: Some(10_000_000 + (i * j) as i64),
            })
            .collect(),
    );
    n
}

/// Runs `plan --nodes-file` on a generated `kubectl get nodes -o json` list of `workers + 3`
/// nodes; prints size, time and the child's peak memory.
fn plan_nodes_file(workers: usize) {
    let nodes: Vec<Node> =
        cluster(3, workers, "v1.34.7").into_iter().enumerate().map(|(i, n)| weighty(n, i)).collect();
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": nodes});
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("nodes.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&list).expect("nodes serialise"))
        .expect("write nodes.json");
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    drop(list);
    let t0 = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_k8s-upgrade-chain"))
        .args(["plan", "--version", "1.35.0", "-o", "json", "--nodes-file"])
        .arg(&path)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the binary starts");
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let status = loop {
        if let Some(kib) = std::fs::read_to_string(&status_file).ok().as_deref().and_then(vm_hwm_kib) {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().expect("the child can be waited for") {
            break status;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let wall = t0.elapsed();
    assert!(status.success(), "plan --nodes-file failed: {status:?}");
    println!(
        "plan --nodes-file {:>5} nodes ({:>5.1} MB JSON): {:>8.1} ms, peak resident memory {:>6.1} MiB",
        workers + 3,
        size as f64 / 1e6,
        wall.as_secs_f64() * 1e3,
        peak_kib as f64 / 1024.0
    );
}

/// `VmHWM` of a /proc/PID/status text, in KiB.
fn vm_hwm_kib(status: &str) -> Option<u64> {
    status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    let selector = ControlPlaneSelector::parse("node-role.kubernetes.io/control-plane").unwrap();
    let target: Version = "1.35.0".parse().unwrap();
    for (cps, workers) in [(1, 4), (3, 997), (3, 4997)] {
        let nodes = cluster(cps, workers, "v1.34.7");
        let t0 = Instant::now();
        let snap = Snapshot::from_nodes(&nodes, &selector).unwrap();
        let t_snap = t0.elapsed();
        let t1 = Instant::now();
        let jobs = chain(&snap, target).unwrap();
        let t_chain = t1.elapsed();
        println!(
            "plan {:>5} nodes: snapshot {:>8.2} ms, chain of {:>5} jobs {:>8.2} ms, total {:>8.2} ms",
            cps + workers,
            t_snap.as_secs_f64() * 1e3,
            jobs.len(),
            t_chain.as_secs_f64() * 1e3,
            (t_snap + t_chain).as_secs_f64() * 1e3
        );
    }
    match peak_rss_mib() {
        Some(mib) => println!("peak resident memory (in process): {mib:.1} MiB"),
        None => println!("peak resident memory: unavailable (no /proc/self/status)"),
    }
    for workers in [697, 4997] {
        plan_nodes_file(workers);
    }
}
