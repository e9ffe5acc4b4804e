//! Planner benchmark: builds a snapshot of 5,000 nodes from API objects and plans the whole chain
//! (5,002 Jobs). Prints wall time per stage and the process's peak resident memory (VmHWM).
//! Run: `cargo bench --bench plan`. Aim: under 1 s and under 100 MB.

use std::time::Instant;

use chain_core::{
    fixtures::cluster,
    plan::{Snapshot, chain},
    settings::ControlPlaneSelector,
    version::Version,
};

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
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
        Some(mib) => println!("peak resident memory: {mib:.1} MiB"),
        None => println!("peak resident memory: unavailable (no /proc/self/status)"),
    }
}
