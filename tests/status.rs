//! `status` and `report` against the in-process test apiserver (and a real Pushgateway):
//! a chain half-way through, with Jobs in various states, read through the real kube client.

mod support;

use std::time::Duration;

use chain_core::{
    annotations::InFlight,
    fixtures::node,
    job::{self, JobRequest},
    plan::{Kind, Phase, Snapshot, Step, placement},
    report,
    settings::Settings,
    status::{NodeState, Overall},
};
use k8s_openapi::api::batch::v1::Job;
use k8s_upgrade_chain::{
    k8s::{
        Clients,
        annotations::NamespaceAnnotations,
        spawn::{self, OnComplete},
    },
    ops::status,
};
use sim::apiserver::{TestApiServer, fixtures as tf};

const NS: &str = "k8s-upgrade";

fn settings(pushgateway: Option<&str>) -> Settings {
    let mut s = Settings::default();
    // Nothing listens on port 1: a refused connection, never a hang.
    s.alerts.prometheus_url = "http://127.0.0.1:1".parse().unwrap();
    s.pushgateway.url = pushgateway.unwrap_or("http://127.0.0.1:1").parse().unwrap();
    s.pushgateway.timeout = Duration::from_secs(5);
    s
}

/// master and node1 on the target, node2..node3 not yet.
async fn half_upgraded() -> (TestApiServer, Clients) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let srv = TestApiServer::builder().time_scale(0.01).start().await;
    srv.insert(tf::namespace(NS));
    for (name, v, cp) in [
        ("k8s-master", "v1.34.2", true),
        ("k8s-node1", "v1.34.2", false),
        ("k8s-node2", "v1.34.1", false),
        ("k8s-node3", "v1.34.1", false),
    ] {
        let b = node(name).kubelet(v).ip("10.0.0.9");
        srv.insert(if cp { b.control_plane() } else { b }.build());
    }
    let clients = Clients::from_config(srv.config()).unwrap();
    (srv, clients)
}

/// Renders a phase's Job with the real template and applies it like the chain does.
async fn run_phase(clients: &Clients, phase: Phase, node: Option<&str>) -> String {
    let settings = Settings::default();
    let nodes = k8s_upgrade_chain::k8s::list_nodes(&clients.api).await.unwrap();
    let snap = Snapshot::from_nodes(&nodes, &settings.control_plane_selector()).unwrap();
    let step = Step::from_parts(phase, node).unwrap();
    let p = placement(&snap, &step).unwrap();
    let req = JobRequest {
        step: &step,
        target: "1.34.2".parse().unwrap(),
        kind: Kind::Patch,
        image: "img:1",
        placement: &p,
    };
    let job: Job = job::render(&settings, job::BUILTIN_TEMPLATE, "builtin", &req).unwrap();
    spawn::spawn(&clients.api, &job, OnComplete::Skip, Duration::from_secs(20)).await.unwrap();
    job.metadata.name.unwrap()
}

fn node_states(s: &chain_core::status::Status) -> Vec<(String, NodeState)> {
    s.nodes.iter().map(|n| (n.name.clone(), n.state)).collect()
}

#[tokio::test]
async fn status_mid_chain_shows_every_node() {
    let (srv, clients) = half_upgraded().await;
    for (phase, node) in
        [(Phase::Preflight, None), (Phase::Master, Some("k8s-master")), (Phase::Worker, Some("k8s-node1"))]
    {
        let name = run_phase(&clients, phase, node).await;
        srv.complete_job(NS, &name);
    }
    let current = run_phase(&clients, Phase::Worker, Some("k8s-node2")).await;
    let annotations = NamespaceAnnotations::new(clients.api.clone(), NS, &Settings::default().annotations());
    annotations
        .write(&InFlight {
            since: "2026-11-21T09:00:00Z".parse().unwrap(),
            target: "1.34.2".parse().unwrap(),
            snapshot_path: None,
        })
        .await
        .unwrap();

    let s = status::read(&clients.api, &settings(None), false).await.unwrap();
    assert_eq!(s.overall, Overall::Running, "{}", chain_core::status::text(&s));
    assert_eq!(s.target, Some("1.34.2".parse().unwrap()));
    assert_eq!(
        node_states(&s),
        [
            ("k8s-master".to_string(), NodeState::Done),
            ("k8s-node1".to_string(), NodeState::Done),
            ("k8s-node2".to_string(), NodeState::Current),
            ("k8s-node3".to_string(), NodeState::Pending),
        ]
    );
    assert_eq!(s.current_job.as_deref(), Some(current.as_str()));
    assert_eq!(s.current_phase.as_deref(), Some("worker"));
    assert!(s.seconds_in_phase.is_some());
    assert!(s.in_flight_since.is_some());
    assert_eq!(s.jobs.len(), 4);
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);

    // The worker fails for good: node2 shows as failed, with the condition and the way out.
    srv.fail_job(NS, &current, "BackoffLimitExceeded");
    let s = status::read(&clients.api, &settings(None), false).await.unwrap();
    assert_eq!(s.overall, Overall::Failed, "{}", chain_core::status::text(&s));
    assert_eq!(node_states(&s)[2], ("k8s-node2".to_string(), NodeState::Failed));
    assert_eq!(node_states(&s)[3], ("k8s-node3".to_string(), NodeState::Pending));
    let err = s.last_error.as_ref().unwrap();
    assert_eq!((err.job.as_str(), err.reason.as_str()), (current.as_str(), "BackoffLimitExceeded"));
    assert!(s.next_steps.iter().any(|n| n.contains(&format!("logs job/{current}"))), "{:?}", s.next_steps);

    // The operator pulls the kill switch.
    srv.insert(tf::configmap(NS, "k8s-upgrade-killswitch", &[("reason", "investigating node2")]));
    let s = status::read(&clients.api, &settings(None), false).await.unwrap();
    assert_eq!(s.overall, Overall::Halted);
    assert!(s.next_steps[0].contains("investigating node2"), "{:?}", s.next_steps);
}

#[tokio::test]
async fn status_reads_the_pushgateway_when_asked() {
    let (_srv, clients) = half_upgraded().await;
    let pgw = support::prom::Pushgateway::start().await;
    pgw.push_raw("k8s-version-upgrade", "k8s_upgrade_blocked 1\nk8s_upgrade_held 0\n").await;
    let s = status::read(&clients.api, &settings(Some(&pgw.url)), true).await.unwrap();
    assert_eq!((s.blocked, s.held), (Some(true), Some(false)), "{}", pgw.log());
    assert_eq!(s.overall, Overall::Stopped);
    // Without --pushgateway nothing is read; an unreachable one is a warning, not an error.
    let s = status::read(&clients.api, &settings(None), false).await.unwrap();
    assert_eq!(s.blocked, None);
    let s = status::read(&clients.api, &settings(None), true).await.unwrap();
    assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
}

#[tokio::test]
async fn report_gathers_and_reruns_the_gate_when_blocked() {
    let (_srv, clients) = half_upgraded().await;
    run_phase(&clients, Phase::Preflight, None).await;
    let pgw = support::prom::Pushgateway::start().await;
    let now = jiff::Timestamp::now();
    pgw.push_raw(
        "k8s-version-check",
        &format!(
            "k8s_upgrade_available{{kind=\"patch\",running=\"1.34.1\",target=\"1.34.2\"}} 1\n\
             k8s_version_check_last_run_timestamp {}\n",
            now.as_second() - 600
        ),
    )
    .await;
    pgw.push_raw("k8s-version-upgrade", "k8s_upgrade_blocked 1\n").await;
    let inputs =
        k8s_upgrade_chain::ops::report::gather(&clients.api, &settings(Some(&pgw.url)), now).await.unwrap();
    let text = report::compose(&inputs);
    assert!(
        text.starts_with("Weekly Kubernetes upgrade report: 🔴 BLOCKED (action needed) — 1.34.2"),
        "{text}"
    );
    // Prometheus is unreachable here: the re-run gate refuses to judge blind (ACTIONABLE).
    assert!(text.contains("*Action needed*\n  • could not query Prometheus"), "{text}");
    assert!(
        text.contains("Nodes: MIXED — v1.34.1: k8s-node2, k8s-node3; v1.34.2: k8s-master, k8s-node1"),
        "{text}"
    );
    assert!(text.contains("k8s-upgrade-preflight-1-34-2 — Active"), "{text}");
}
