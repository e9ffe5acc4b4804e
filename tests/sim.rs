//! The simulator (crate `sim`) against the shell: the node probes parse what a simulated node
//! answers, and the Pushgateway client reads back what the simulated Pushgateway stored.

use std::{sync::Arc, time::Duration};

use chain_core::{
    metrics::{Grouping, Metric, PhaseOutcome, PushgatewayConfig, Scrape},
    node_exec::{ExecRequest, ExitStatus, NodeExec as _, NodeTarget},
    version::Version,
};
use k8s_upgrade_chain::{node::probes, pushgateway};
use sim::{apiserver::TestApiServer, http::Pushgateway, node::SimExec};

fn v(s: &str) -> Version {
    s.parse().unwrap()
}

async fn sim() -> (Arc<TestApiServer>, SimExec) {
    let srv = Arc::new(TestApiServer::start().await);
    srv.insert(sim::apiserver::fixtures::node("n1").ready().kubelet("v1.34.1").build());
    let exec = SimExec::new(srv.clone(), vec![v("1.34.1"), v("1.34.2")], v("1.7.27"), Duration::ZERO);
    (srv, exec)
}

fn n1() -> NodeTarget {
    NodeTarget::new("n1", "192.0.2.1".parse().unwrap())
}

#[tokio::test]
async fn probes_parse_what_the_simulated_node_answers() {
    let (_srv, exec) = sim().await;
    let t = n1();
    assert_eq!(
        probes::probe_upgrade_plan(&exec, &t, v("1.34.2")).await.unwrap(),
        probes::PlanTarget::Apply(v("1.34.2"))
    );
    assert_eq!(
        probes::probe_upgrade_plan(&exec, &t, v("1.35.0")).await.unwrap(),
        probes::PlanTarget::NothingToApply
    );
    assert_eq!(probes::probe_latest_patch(&exec, &t, v("1.34.1")).await.unwrap(), Some(v("1.34.2")));
    assert_eq!(probes::probe_containerd_version(&exec, &t).await.unwrap(), v("1.7.27"));
    assert_eq!(
        probes::probe_auth_config_drift(&exec, &t, v("1.34.2")).await.unwrap(),
        probes::AuthConfigDrift::Kept
    );
    let prune = probes::prune_kubeadm_scratch(&exec, &t).await.unwrap();
    assert!(prune.pruned.is_empty() && prune.root_fs.is_some(), "{prune:?}");
    assert!(probes::probe_auth_config_present(&exec, &t).await.unwrap());
    probes::rewrite_apt_repo(&exec, &t, v("1.35.0"), probes::K8S_APT_BASE).await.unwrap();
    probes::fix_containerd_skew(&exec, &t, v("1.7.28")).await.unwrap();
    assert_eq!(probes::probe_containerd_version(&exec, &t).await.unwrap(), v("1.7.28"));
}

#[tokio::test]
async fn the_update_script_makes_the_node_report_the_new_kubelet() {
    let (srv, exec) = sim().await;
    let update = probes::UpdateNode::new(probes::NodeRole::Worker, v("1.34.2"));
    probes::update_node(&exec, &n1(), &update, Duration::from_secs(5)).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let n: k8s_openapi::api::core::v1::Node = srv.get(None, "n1").unwrap();
        if n.status.unwrap().node_info.unwrap().kubelet_version == "v1.34.2" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "kubelet version never changed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(exec.upgrades(), [("n1".to_string(), "worker".to_string(), v("1.34.2"))]);
}

#[tokio::test]
async fn unknown_commands_fail_loudly() {
    let (_srv, exec) = sim().await;
    let out = exec.run(&n1(), ExecRequest::command("reboot")).await.unwrap();
    assert_eq!(out.status, ExitStatus::Code(127));
    assert!(out.stderr.contains("reboot"));
}

#[tokio::test]
async fn pushes_are_read_back_with_their_grouping_labels() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pgw = Pushgateway::start().await.unwrap();
    let cfg = PushgatewayConfig { url: pgw.server.url.clone(), ..Default::default() };
    let client = pushgateway::Pushgateway::new(&cfg).unwrap();
    let group = Grouping::phase("worker", Some("k8s-node2"));
    client.try_push(&group, &[Metric::PhaseOutcome(PhaseOutcome::Running)]).await.unwrap();
    client.try_push(&Grouping::chain(), &[Metric::InFlight(true)]).await.unwrap();
    client.try_push(&Grouping::chain(), &[Metric::InFlight(false)]).await.unwrap();
    let scrape = client.read().await.unwrap();
    assert_eq!(scrape.value("k8s_upgrade_in_flight", &[("job", "k8s-version-upgrade")]), Some(0.0));
    assert_eq!(
        scrape.value(
            "k8s_upgrade_phase_outcome",
            &[("phase", "worker"), ("node", "k8s-node2"), ("outcome", "running")]
        ),
        Some(1.0)
    );
    client.delete_group(&Grouping::chain()).await.unwrap();
    let after = Scrape::parse(&pgw.metrics_text());
    assert_eq!(after.value("k8s_upgrade_in_flight", &[]), None);
}
