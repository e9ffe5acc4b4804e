//! Waiting for a node to be Ready on the target version, through a watch.

use std::time::Duration;

use chain_core::fixtures::node;
use k8s_upgrade_chain::{chain::nodes::wait_node_ready, exit, k8s::Clients};
use sim::apiserver::TestApiServer;

#[tokio::test]
async fn waits_for_ready_on_the_target_then_times_out_clearly() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let srv = std::sync::Arc::new(TestApiServer::start().await);
    srv.insert(node("k8s-node2").kubelet("v1.34.1").ip("10.0.0.12").not_ready().build());
    let clients = Clients::from_config(srv.config()).unwrap();
    let v = "1.34.2".parse().unwrap();

    let s = srv.clone();
    let flip = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.set_kubelet_version("k8s-node2", "v1.34.2");
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.set_node_ready("k8s-node2", true);
    });
    wait_node_ready(&clients.api, "k8s-node2", v, Duration::from_secs(20)).await.unwrap();
    flip.await.unwrap();
    let watches = srv.requests().iter().filter(|r| r.verb == "watch").count();
    let gets = srv.requests().iter().filter(|r| r.verb == "get").count();
    assert!(watches >= 1 && gets == 0, "a watch, not polling: {:?}", srv.counts());

    let err =
        wait_node_ready(&clients.api, "k8s-node2", "1.34.3".parse().unwrap(), Duration::from_millis(500))
            .await
            .unwrap_err();
    assert!(format!("{err:#}").contains("k8s-node2 was not Ready on v1.34.3 within 500ms"), "{err:#}");
    assert_eq!(exit::code_for(&err), 1, "a node that never comes back is a gate abort");
}
