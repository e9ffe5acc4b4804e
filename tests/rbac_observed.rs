//! Least privilege, observed: run the code paths that exist in this build against the test
//! apiserver, record every request it receives, and check each one is allowed by the roles
//! generated from `rbac::CALLS`. A call added to the code without a row in the list fails here.

use std::time::Duration;

use chain_core::{
    annotations::InFlight,
    job::{self, JobRequest},
    plan::{Kind, Snapshot, Step, placement},
    rbac::{self, Grant},
    settings::Settings,
};
use k8s_openapi::api::{batch::v1::Job, core::v1::Node};
use k8s_upgrade_chain::{
    drain,
    k8s::{
        self, Clients,
        annotations::NamespaceAnnotations,
        events::{Events, Milestone},
        killswitch,
        spawn::{self, OnComplete},
    },
    ops::{report, status},
};
use kube::{Api, Resource};
use sim::apiserver::{RecordedRequest, TestApiServer, fixtures as tf};

mod support;

const NS: &str = "k8s-upgrade";

/// The RBAC view of one request: (namespace, group, resource[/sub], verb, name).
fn grant_of(r: &RecordedRequest) -> Grant {
    let path = r.path.split('?').next().unwrap();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _v, rest @ ..] => (String::new(), rest.to_vec()),
        ["apis", g, _v, rest @ ..] => (g.to_string(), rest.to_vec()),
        _ => {
            return Grant {
                namespace: None,
                group: String::new(),
                resource: path.into(),
                verb: r.verb.clone(),
                name: None,
            };
        }
    };
    let (namespace, rest) = match rest.as_slice() {
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some(ns.to_string()), tail.to_vec()),
        _ => (None, rest),
    };
    let resource = match rest.get(2) {
        Some(sub) => format!("{}/{sub}", rest[0]),
        None => rest[0].to_string(),
    };
    Grant { namespace, group, resource, verb: r.verb.clone(), name: rest.get(1).map(|n| n.to_string()) }
}

fn settings() -> Settings {
    let mut s = k8s_upgrade_chain::config::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/config.yaml"
    )))
    .unwrap();
    s.alerts.prometheus_url = "http://127.0.0.1:1".parse().unwrap();
    s.pushgateway.url = "http://127.0.0.1:1".parse().unwrap();
    s
}

#[tokio::test]
async fn every_request_the_code_makes_is_granted() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let srv = TestApiServer::builder().time_scale(0.01).start().await;
    srv.insert(tf::namespace(NS));
    for n in chain_core::fixtures::cluster(1, 2, "v1.34.1") {
        srv.insert(n);
    }
    srv.insert(tf::daemonset("calico-node").ns("calico-system").build());
    let clients = Clients::from_config(srv.config()).unwrap();
    let settings = settings();
    let api = &clients.api;

    // spawn: create, then replace a Failed Job (delete with preconditions, watch until gone).
    let nodes = k8s::list_nodes(api).await.unwrap();
    let snap = Snapshot::from_nodes(&nodes, &settings.control_plane_selector()).unwrap();
    let step = Step::worker("k8s-node1");
    let p = placement(&snap, &step).unwrap();
    let req = JobRequest {
        step: &step,
        target: "1.34.2".parse().unwrap(),
        kind: Kind::Patch,
        image: "i",
        placement: &p,
    };
    let job: Job = job::render(&settings, job::BUILTIN_TEMPLATE, "builtin", &req).unwrap();
    spawn::spawn(api, &job, OnComplete::Skip, Duration::from_secs(20)).await.unwrap();
    srv.fail_job(NS, job.metadata.name.as_deref().unwrap(), "BackoffLimitExceeded");
    spawn::spawn(api, &job, OnComplete::Skip, Duration::from_secs(20)).await.unwrap();

    // Kill switch, in-flight record, Events on a Job and on a Node.
    killswitch::check(api, NS).await.unwrap();
    let ann = NamespaceAnnotations::new(api.clone(), NS, &settings.annotations());
    ann.write(&InFlight {
        since: jiff::Timestamp::now(),
        target: "1.34.2".parse().unwrap(),
        snapshot_path: None,
    })
    .await
    .unwrap();
    ann.read().await.unwrap();
    ann.clear().await.unwrap();
    let stored: Job =
        Api::namespaced(api.clone(), NS).get(job.metadata.name.as_deref().unwrap()).await.unwrap();
    let node: Node = Api::all(api.clone()).get("k8s-node1").await.unwrap();
    let events = Events::new(api.clone(), None);
    for _ in 0..2 {
        // Twice: the second becomes a series (a patch).
        events.record(&stored.object_ref(&()), &Milestone::DrainStarted).await;
        events.record(&node.object_ref(&()), &Milestone::DrainStarted).await;
    }

    // drain --dry-run: the node, its pods, every PDB, the namespaces of the pods to evict.
    srv.insert(tf::pod("web-0").ns("apps").on("k8s-node2").owned_by_replicaset("web"));
    let t = drain::DrainTarget { node: "k8s-node2".into(), namespace: NS.into(), self_pod: None };
    let dry = drain::dry_run(&clients, &t, &settings.drain).await.unwrap();
    assert!(dry.notes.is_empty(), "{:?}", dry.notes);

    // status and report (with the gate re-run: addon images are read).
    status::read(api, &settings, false).await.unwrap();
    report::gate_reasons(api, &settings, &nodes, "1.35.0".parse().unwrap()).await.unwrap();
    report::gather(api, &settings, jiff::Timestamp::now()).await.unwrap();

    let granted = rbac::flatten(&rbac::roles(&settings));
    let requests = srv.requests();
    assert!(requests.len() > 20, "{requests:?}");
    let mut denied = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for r in &requests {
        let g = grant_of(r);
        if !granted.iter().any(|(ns, rule)| rbac::allows(ns.as_deref(), rule, &g)) {
            denied.push(format!("{} {} -> {g}", r.method, r.path));
        }
        seen.insert((g.group.clone(), g.resource.clone(), g.verb.clone()));
    }
    assert!(denied.is_empty(), "requests the generated RBAC would deny:\n{}", denied.join("\n"));
    // The run really exercised the interesting calls.
    for want in [
        ("", "nodes", "list"),
        ("batch", "jobs", "patch"),
        ("batch", "jobs", "delete"),
        ("batch", "jobs", "list"),
        ("", "configmaps", "get"),
        ("", "namespaces", "patch"),
        ("events.k8s.io", "events", "create"),
        ("events.k8s.io", "events", "patch"),
        ("apps", "daemonsets", "get"),
        ("apps", "deployments", "get"),
    ] {
        assert!(
            seen.contains(&(want.0.to_string(), want.1.to_string(), want.2.to_string())),
            "{want:?} not exercised: {seen:?}"
        );
    }
}

#[test]
fn request_paths_map_to_rbac_terms() {
    let req = |method: &str, path: &str, verb: &str| RecordedRequest {
        method: method.into(),
        path: path.into(),
        verb: verb.into(),
        status: 200,
    };
    let g = grant_of(&req("POST", "/api/v1/namespaces/apps/pods/web-1/eviction", "create"));
    assert_eq!(
        (g.namespace.as_deref(), g.group.as_str(), g.resource.as_str(), g.name.as_deref()),
        (Some("apps"), "", "pods/eviction", Some("web-1"))
    );
    let g = grant_of(&req("PATCH", "/api/v1/namespaces/k8s-upgrade", "patch"));
    assert_eq!(
        (g.namespace, g.resource.as_str(), g.name.as_deref()),
        (None, "namespaces", Some("k8s-upgrade"))
    );
    let g = grant_of(&req("GET", "/apis/batch/v1/namespaces/k8s-upgrade/jobs?watch=true", "watch"));
    assert_eq!((g.group.as_str(), g.resource.as_str(), g.name), ("batch", "jobs", None));
    let g = grant_of(&req("GET", "/readyz", "get"));
    assert_eq!(g.resource, "/readyz");
}

/// The whole chain (detect, then every Job) on the test apiserver with real sshd nodes, the
/// etcd backup hook, a quiesced Deployment and a post-upgrade script: every request it makes
/// must be granted by the RBAC generated for those settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_request_of_a_full_chain_is_granted() {
    use support::chain::{Cluster, Layout};
    let mut c = Cluster::start(Layout {
        control_planes: &["k8s-master"],
        workers: &["k8s-node1", "k8s-node2"],
        running: "1.34.1",
        target: "1.34.2",
        net: 88,
    })
    .await;
    c.settings.hooks.post_control_plane_scripts = c.oidc_restore();
    c.srv.reset_requests();
    c.detect().await;
    let ran = c.run_chain().await;
    assert!(ran.iter().all(|j| j.result.is_ok()), "{ran:?}");

    let granted = rbac::flatten(&rbac::roles(&c.settings));
    let mut denied = std::collections::BTreeSet::new();
    let mut seen = std::collections::BTreeSet::new();
    for r in c.srv.requests() {
        let g = grant_of(&r);
        if !granted.iter().any(|(ns, rule)| rbac::allows(ns.as_deref(), rule, &g)) {
            denied.insert(format!("{} {} -> {g}", r.method, r.path.split('?').next().unwrap()));
        }
        seen.insert(format!("{} {}/{}", g.verb, g.group, g.resource));
    }
    assert!(
        denied.is_empty(),
        "requests the generated RBAC would deny:\n{}",
        denied.into_iter().collect::<Vec<_>>().join("\n")
    );
    for want in [
        "create /pods/eviction",
        "get /pods/log",
        "get batch/cronjobs",
        "patch apps/deployments",
        "patch /nodes",
        "get //readyz",
        "get //livez",
    ] {
        assert!(seen.contains(want), "{want} not exercised: {seen:?}");
    }
}
