//! Throughput figures for the test apiserver (prints, asserts nothing about time).
//! `cargo bench -p k8s-upgrade-chain-sim`

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, EvictParams, ListParams};
use sim::apiserver::TestApiServer;
use sim::apiserver::fixtures::*;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    drain_500_pods().await;
    list_5000_nodes().await;
}

async fn drain_500_pods() {
    let srv = TestApiServer::builder().controllers(false).start().await;
    srv.insert(node("n1").ready());
    for i in 0..500 {
        srv.insert(pod(&format!("p-{i:03}")).ns("apps").on("n1").label("app", "web").grace(2));
    }
    if std::env::var("NO_PDB").is_err() {
        srv.insert(pdb("web").ns("apps").min_available(0).select_all());
    }
    let pods: Api<Pod> = Api::namespaced(srv.client_without_retry(), "apps");
    let t = Instant::now();
    let results: Vec<_> = futures::stream::iter(0..500)
        .map(|i| {
            let pods = pods.clone();
            async move { pods.evict(&format!("p-{i:03}"), &EvictParams::default()).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let evicted = t.elapsed();
    let failures = results.iter().filter(|r| r.is_err()).count();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !srv.list::<Pod>(Some("apps")).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "drain: 500 evictions (64 in flight) in {evicted:?} ({failures} refused); all pods gone (2 s grace) after {:?}; {} requests",
        t.elapsed(),
        srv.requests().len()
    );
}

async fn list_5000_nodes() {
    let srv = TestApiServer::start().await;
    let t = Instant::now();
    for i in 0..5000 {
        srv.insert(node(&format!("k8s-node{i:04}")).ready().kubelet("v1.34.1").internal_ip("127.0.0.1"));
    }
    println!("seed: 5000 nodes in {:?}", t.elapsed());
    let nodes: Api<Node> = Api::all(srv.client());
    let t = Instant::now();
    let all = nodes.list(&ListParams::default()).await.unwrap();
    println!("list: 5000 nodes in one page in {:?}", t.elapsed());
    assert_eq!(all.items.len(), 5000);
    let t = Instant::now();
    let mut n = 0;
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(500);
        if let Some(c) = &token {
            lp = lp.continue_token(c);
        }
        let page = nodes.list(&lp).await.unwrap();
        n += page.items.len();
        token = page.metadata.continue_.filter(|c| !c.is_empty());
        if token.is_none() {
            break;
        }
    }
    println!("list: {n} nodes in pages of 500 in {:?}", t.elapsed());
}
