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

    // ack: the node's record read and removed, the chain Jobs listed, an Event on the node.
    k8s_upgrade_chain::k8s::records::mark_upgrade_started(
        api,
        "k8s-node2",
        &chain_core::resume::UpgradeStarted::recorded(
            chain_core::plan::Phase::Worker,
            "1.34.2".parse().unwrap(),
            jiff::Timestamp::now(),
        ),
    )
    .await
    .unwrap();
    let acked = k8s_upgrade_chain::ops::ack::acknowledge(api, &settings, "k8s-node2").await.unwrap();
    assert!(matches!(acked, k8s_upgrade_chain::ops::ack::Acked::Acknowledged { .. }), "{acked:?}");

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
    // QA A7: the only Deployments written are the configured quiesce ones, in their
    // namespaces, and that is all the generated RBAC lets the chain write.
    let quiesced: Vec<(Option<String>, Option<String>)> = c
        .settings
        .hooks
        .quiesce_deployments
        .iter()
        .map(|d| (Some(d.namespace.clone()), Some(d.name.clone())))
        .collect();
    assert!(!quiesced.is_empty(), "the chain's layout quiesces a Deployment");
    for r in c.srv.requests() {
        let g = grant_of(&r);
        if g.group == "apps"
            && g.resource == "deployments"
            && !matches!(g.verb.as_str(), "get" | "list" | "watch")
        {
            assert!(
                quiesced.contains(&(g.namespace.clone(), g.name.clone())),
                "{} {} -> {g}",
                r.method,
                r.path
            );
        }
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

/// `rehearse --from-cluster` as the tool's ServiceAccount: every request it sends to the live
/// cluster is a read that the generated RBAC grants (its own reads in the `k8s-upgrade-job-rehearse`
/// ClusterRole), and preflight's access review does not ask for those.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_request_of_rehearse_from_cluster_is_granted() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let live = TestApiServer::start().await;
    for ns in [NS, "apps", "kube-system", "default"] {
        live.insert(tf::namespace(ns));
    }
    let hour_ago = (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(3600)).to_string();
    for n in chain_core::fixtures::cluster(1, 2, "v1.34.1") {
        let name = n.metadata.name.clone().unwrap();
        live.insert(n);
        live.modify::<Node>(None, &name, |n| {
            for c in n["status"]["conditions"].as_array_mut().unwrap() {
                c["lastTransitionTime"] = serde_json::json!(hour_ago);
            }
        });
    }
    live.insert(tf::deployment("web").ns("apps").replicas(1).labels(&[("app", "web")]).build());
    live.insert(
        tf::replicaset("web-1")
            .ns("apps")
            .replicas(1)
            .labels(&[("app", "web")])
            .owned_by_deployment("web")
            .build(),
    );
    live.insert(
        tf::pod("web-1-a")
            .ns("apps")
            .on("k8s-node1")
            .owned_by_replicaset("web-1")
            .labels(&[("app", "web")])
            .build(),
    );
    live.insert(tf::pdb("web").ns("apps").min_available(0).selector(&[("app", "web")]).build());
    live.insert(tf::statefulset("db").ns("apps").replicas(1).labels(&[("app", "db")]).build());
    live.insert(tf::daemonset("kube-proxy").ns("kube-system").build());
    live.insert(serde_json::json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "backup-etcd", "namespace": "default"},
        "spec": {"schedule": "0 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "backup-manage", "image": "backup:1"}]}}}}}
    }));
    let settings = settings();
    assert!(settings.hooks.etcd_backup.is_some(), "the example config names a backup CronJob");
    live.reset_requests();
    let opts = k8s_upgrade_chain::rehearse::Options {
        source: k8s_upgrade_chain::rehearse::Source::Live(Clients::from_config(live.config()).unwrap()),
        version: Some("1.34.2".parse().unwrap()),
        speed: k8s_upgrade_chain::rehearse::DEFAULT_SPEED,
        image: "i".into(),
    };
    k8s_upgrade_chain::rehearse::rehearse(&settings, opts, &|_: &str| {}).await.unwrap();

    let granted = rbac::flatten(&rbac::roles(&settings));
    let requests = live.requests();
    let mut denied = std::collections::BTreeSet::new();
    let mut seen = std::collections::BTreeSet::new();
    for r in &requests {
        assert_eq!(r.method, "GET", "the live cluster got a write: {r:?}");
        let g = grant_of(r);
        if !granted.iter().any(|(ns, rule)| rbac::allows(ns.as_deref(), rule, &g)) {
            denied.insert(format!("{} {} -> {g}", r.method, r.path.split('?').next().unwrap()));
        }
        seen.insert(format!("{} {}/{}", g.verb, g.group, g.resource));
    }
    assert!(
        denied.is_empty(),
        "requests of rehearse --from-cluster the generated RBAC would deny:\n{}",
        denied.into_iter().collect::<Vec<_>>().join("\n")
    );
    // Its own reads were made, and they are exactly the rehearse grant: without that role,
    // they would be refused (the Forbidden on `list namespaces` of issue 17).
    let rehearse_only: std::collections::BTreeSet<Grant> =
        rbac::required(&settings).difference(&rbac::required_by_chain(&settings)).cloned().collect();
    for g in &rehearse_only {
        assert!(
            seen.contains(&format!("{} {}/{}", g.verb, g.group, g.resource)),
            "{g} not exercised: {seen:?}"
        );
    }
    let without: Vec<_> =
        rbac::roles(&settings).into_iter().filter(|r| r.scope != rbac::Scope::Rehearse).collect();
    let chain_only = rbac::flatten(&without);
    let list_namespaces =
        requests.iter().map(grant_of).find(|g| g.resource == "namespaces" && g.verb == "list").unwrap();
    assert!(!chain_only.iter().any(|(ns, rule)| rbac::allows(ns.as_deref(), rule, &list_namespaces)));
    assert!(seen.contains("get batch/cronjobs"), "the site's backup CronJob was read: {seen:?}");
}
