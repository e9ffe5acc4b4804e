//! Drain throughput against the in-process test apiserver (`sim::apiserver`).
//!
//! Drains a node carrying N ReplicaSet pods that each take 2 s to terminate
//! (`terminationGracePeriodSeconds: 2`, real time), with no PDB in the way, and prints the
//! wall time and the API requests by verb. For comparison it prints what `kubectl drain`
//! would send for the same drain: one eviction per pod plus one GET per pod per second
//! while waiting (k8s.io/kubectl/pkg/drain, anchors.md §7). No assertions: figures only.
//!
//! Run: `cargo bench --bench drain`.

use std::time::{Duration, Instant};

use sim::apiserver::TestApiServer;
use sim::apiserver::fixtures::*;

use k8s_upgrade_chain::drain::{self, DrainConfig, DrainOutcome, DrainTarget};
use k8s_upgrade_chain::k8s::Clients;

const NODE: &str = "bench-node";
const GRACE_SECS: u64 = 2;

async fn run(pods: usize, concurrency: usize) {
    let srv = TestApiServer::builder().time_scale(1.0).start().await;
    for n in [NODE, "other-1", "other-2", "other-3"] {
        srv.insert(node(n).ready().kubelet("v1.33.5"));
    }
    srv.insert(namespace("upgrade"));
    srv.insert(replicaset("web").replicas(pods as i64).labels(&[("app", "web")]).grace(GRACE_SECS as i64));
    for i in 0..pods {
        srv.insert(
            pod(&format!("web-{i}"))
                .on(NODE)
                .owned_by_replicaset("web")
                .label("app", "web")
                .grace(GRACE_SECS as i64),
        );
    }
    let clients = Clients::from_config(srv.config()).expect("clients");
    let target = DrainTarget { node: NODE.into(), namespace: "upgrade".into(), self_pod: None };
    let config = DrainConfig { concurrency, ..DrainConfig::default() };
    srv.reset_requests();

    let started = Instant::now();
    let report = drain::drain(&clients, &target, &config).await.expect("drain succeeds");
    let wall = started.elapsed();

    assert_eq!(report.outcome, DrainOutcome::Drained);
    let counts = srv.counts();
    let total: usize = counts.values().sum();
    let by_verb: Vec<String> = counts.iter().map(|(v, n)| format!("{v}={n}")).collect();
    // kubectl: every pod evicted at once, then each polled with a GET every second until gone.
    let polls_per_pod = (GRACE_SECS + 1) as usize;
    let kubectl = 1 + 1 + pods + pods * polls_per_pod;
    println!(
        "drain {pods:>4} pods, concurrency {concurrency:>2}: wall {:>6.2}s (termination {GRACE_SECS}s, overhead {:+.2}s); \
         requests {total} [{}]; kubectl drain would send about {kubectl} ({} evictions + ~{} GETs)",
        wall.as_secs_f64(),
        wall.as_secs_f64() - GRACE_SECS as f64,
        by_verb.join(" "),
        pods,
        pods * polls_per_pod,
    );
    let s = &report.summary;
    println!(
        "    summary: evicted {} fallback {} refused {} eviction requests {} duration {:.2}s",
        s.evicted,
        s.fallback_deleted,
        s.eviction_refusals,
        s.eviction_requests,
        s.duration.as_secs_f64()
    );
    drop(srv);
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    println!(
        "drain benchmark: ReplicaSet pods with terminationGracePeriodSeconds {GRACE_SECS}, no PDB blocking"
    );
    for (pods, concurrency) in [(100, 8), (500, 8), (100, 32), (500, 32)] {
        run(pods, concurrency).await;
    }
}
