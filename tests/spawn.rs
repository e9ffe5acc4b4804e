//! Applying chain Jobs and reading the kill switch, against the in-process test apiserver.

use std::time::Duration;

use chain_core::{
    fixtures::cluster,
    job::{self, JobRequest},
    plan::{Kind, Snapshot, Step, placement},
    settings::Settings,
};
use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use k8s_upgrade_chain::{
    commands,
    k8s::Clients,
    k8s::killswitch::{self, KillSwitch},
    k8s::spawn::{self, JobState, OnComplete, SpawnOutcome},
};
use sim::apiserver::{Fault, TestApiServer, fixtures as tf};

const NS: &str = "k8s-upgrade";

async fn server() -> (TestApiServer, Clients) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let srv = TestApiServer::builder().time_scale(0.01).start().await;
    srv.insert(tf::namespace(NS));
    for n in cluster(1, 3, "v1.34.1") {
        srv.insert(n);
    }
    let clients = Clients::from_config(srv.config()).unwrap();
    (srv, clients)
}

fn worker_job(settings: &Settings, nodes_snap: &Snapshot, node: &str) -> Job {
    let step = Step::worker(node);
    let p = placement(nodes_snap, &step).unwrap();
    let req = JobRequest {
        step: &step,
        target: "1.34.2".parse().unwrap(),
        kind: Kind::Patch,
        image: "img:1",
        placement: &p,
    };
    job::render(settings, job::BUILTIN_TEMPLATE, "builtin", &req).unwrap()
}

async fn setup() -> (TestApiServer, Clients, Job) {
    let (srv, clients) = server().await;
    let settings = Settings::default();
    let snap = commands::snapshot(&clients, &settings).await.unwrap();
    let job = worker_job(&settings, &snap, "k8s-node2");
    (srv, clients, job)
}

const DELETE_WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn applies_a_new_job_with_server_side_apply() {
    let (srv, clients, job) = setup().await;
    let out = spawn::spawn(&clients.api, &job, OnComplete::Skip, DELETE_WAIT).await.unwrap();
    assert_eq!(out, SpawnOutcome::Created);
    let stored: Job = srv.get(Some(NS), "k8s-upgrade-worker-1-34-2-k8s-node2").expect("job created");
    let managers: Vec<_> =
        stored.metadata.managed_fields.unwrap_or_default().into_iter().filter_map(|m| m.manager).collect();
    assert_eq!(managers, ["k8s-upgrade-chain"]);
    assert!(
        srv.requests()
            .iter()
            .any(|r| r.method == "PATCH" && r.path.contains("fieldManager=k8s-upgrade-chain"))
    );
    // Its pod was scheduled where the planner pinned it: never on the node it drains.
    let pods = srv.job_pods(NS, "k8s-upgrade-worker-1-34-2-k8s-node2");
    assert_eq!(pods.len(), 1);
    let pod: Pod = srv.get(Some(NS), &pods[0]).unwrap();
    assert_eq!(pod.spec.unwrap().node_name.as_deref(), Some("k8s-master"));
}

#[tokio::test]
async fn active_and_complete_jobs_are_left_alone() {
    let (srv, clients, job) = setup().await;
    spawn::spawn(&clients.api, &job, OnComplete::Skip, DELETE_WAIT).await.unwrap();
    let uid = srv.get::<Job>(Some(NS), "k8s-upgrade-worker-1-34-2-k8s-node2").unwrap().metadata.uid;

    srv.reset_requests();
    assert_eq!(
        spawn::spawn(&clients.api, &job, OnComplete::Skip, DELETE_WAIT).await.unwrap(),
        SpawnOutcome::SkippedActive
    );
    srv.complete_job(NS, "k8s-upgrade-worker-1-34-2-k8s-node2");
    assert_eq!(
        spawn::spawn(&clients.api, &job, OnComplete::Skip, DELETE_WAIT).await.unwrap(),
        SpawnOutcome::SkippedComplete
    );
    assert!(srv.requests().iter().all(|r| r.method == "GET"), "skips only read: {:?}", srv.requests());
    let after: Job = srv.get(Some(NS), "k8s-upgrade-worker-1-34-2-k8s-node2").unwrap();
    assert_eq!(after.metadata.uid, uid);
    assert_eq!(spawn::job_state(&after), JobState::Complete);
}

#[tokio::test]
async fn a_failed_job_is_deleted_foreground_and_recreated() {
    let (srv, clients, job) = setup().await;
    let name = "k8s-upgrade-worker-1-34-2-k8s-node2";
    spawn::spawn(&clients.api, &job, OnComplete::Skip, DELETE_WAIT).await.unwrap();
    let old = srv.get::<Job>(Some(NS), name).unwrap();
    let old_pods = srv.job_pods(NS, name);
    srv.fail_job(NS, name, "BackoffLimitExceeded");
    srv.reset_requests();

    let out = spawn::spawn(&clients.api, &job, OnComplete::Skip, DELETE_WAIT).await.unwrap();
    assert_eq!(out, SpawnOutcome::Respawned { previous: JobState::Failed });

    let new = srv.get::<Job>(Some(NS), name).unwrap();
    assert_ne!(new.metadata.uid, old.metadata.uid, "a new Job object");
    assert_eq!(spawn::job_state(&new), JobState::Active);
    for p in old_pods {
        assert!(srv.get::<Pod>(Some(NS), &p).is_none(), "old pod {p} went with its Job (Foreground)");
    }
    let reqs = srv.requests();
    let delete = reqs.iter().position(|r| r.method == "DELETE").expect("a delete");
    let apply = reqs.iter().position(|r| r.method == "PATCH").expect("an apply");
    assert!(delete < apply, "delete before re-create: {reqs:?}");
}

#[tokio::test]
async fn complete_job_can_be_respawned_on_request() {
    let (srv, clients, job) = setup().await;
    let name = "k8s-upgrade-worker-1-34-2-k8s-node2";
    spawn::spawn(&clients.api, &job, OnComplete::Skip, DELETE_WAIT).await.unwrap();
    srv.complete_job(NS, name);
    let old_uid = srv.get::<Job>(Some(NS), name).unwrap().metadata.uid;
    let out = spawn::spawn(&clients.api, &job, OnComplete::Respawn, DELETE_WAIT).await.unwrap();
    assert_eq!(out, SpawnOutcome::Respawned { previous: JobState::Complete });
    assert_ne!(srv.get::<Job>(Some(NS), name).unwrap().metadata.uid, old_uid);
}

#[tokio::test]
async fn a_stuck_deletion_times_out_clearly() {
    let (srv, clients, job) = setup().await;
    let name = "k8s-upgrade-worker-1-34-2-k8s-node2";
    spawn::spawn(&clients.api, &job, OnComplete::Skip, DELETE_WAIT).await.unwrap();
    srv.fail_job(NS, name, "BackoffLimitExceeded");
    // A finalizer nobody removes keeps the old Job (and so its UID) around.
    srv.modify::<Job>(Some(NS), name, |j| {
        j["metadata"]["finalizers"] = serde_json::json!(["example.com/hold"]);
    });
    let err =
        spawn::spawn(&clients.api, &job, OnComplete::Skip, Duration::from_millis(500)).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains(name) && msg.contains("still there"), "{msg}");
}

#[tokio::test]
async fn kill_switch_present_absent_and_unreadable() {
    let (srv, clients) = server().await;
    assert_eq!(killswitch::check(&clients.api, NS).await.unwrap(), KillSwitch::Absent);

    srv.insert(tf::configmap(NS, killswitch::NAME, &[("reason", "  storm on node4 \n")]));
    assert_eq!(
        killswitch::check(&clients.api, NS).await.unwrap(),
        KillSwitch::Present { reason: "storm on node4".into() }
    );
    srv.delete::<k8s_openapi::api::core::v1::ConfigMap>(Some(NS), killswitch::NAME);
    srv.insert(tf::configmap(NS, killswitch::NAME, &[]));
    assert_eq!(
        killswitch::check(&clients.api, NS).await.unwrap(),
        KillSwitch::Present { reason: "(no reason given)".into() }
    );

    // Forbidden (RBAC) or a broken apiserver: fail closed with an error naming the object.
    for code in [403, 500] {
        srv.inject(Fault::status(code).method("GET").on("configmaps", killswitch::NAME));
        let err = killswitch::check(&clients.api, NS).await.unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("k8s-upgrade/k8s-upgrade-killswitch") && msg.contains("failing closed"),
            "{msg}"
        );
        srv.clear_faults();
    }
}

#[tokio::test]
async fn plan_reads_the_live_cluster_across_pages() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let srv = TestApiServer::start().await;
    let mut nodes = cluster(1, 1200, "v1.34.1");
    // k8s-node10 is already on the target (a partial run).
    let node10 = nodes.iter_mut().find(|n| n.metadata.name.as_deref() == Some("k8s-node10")).unwrap();
    node10.status.as_mut().unwrap().node_info.as_mut().unwrap().kubelet_version = "v1.34.2".into();
    for n in nodes {
        srv.insert(n);
    }
    let clients = Clients::from_config(srv.config()).unwrap();
    let snap = commands::snapshot(&clients, &Settings::default()).await.unwrap();
    assert_eq!(snap.workers.len(), 1200);
    assert!(srv.requests().iter().filter(|r| r.verb == "list").count() >= 3, "paged by 500");
    let report = commands::plan_report(&snap, "1.34.2".parse().unwrap()).unwrap();
    // 1 preflight + 1 master + 1199 workers (node10 is on target) + 1 postflight.
    assert_eq!(report.jobs.len(), 1202);
    assert!(report.jobs.iter().all(|j| j.step.node() != Some("k8s-node10")));
}

#[tokio::test]
async fn a_job_for_nodes_named_by_fqdn_runs_on_its_node() {
    // Issue 12 item 4: nodes registered as FQDNs, kubelets labelled with the short hostname.
    // Pinned by the hostname label, every Job stayed Pending ("4 node(s) didn't match Pod's
    // node affinity/selector"); pinned by metadata.name it is scheduled.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let srv = TestApiServer::builder().time_scale(0.01).start().await;
    srv.insert(tf::namespace(NS));
    for mut n in cluster(1, 3, "v1.34.1") {
        let short = n.metadata.name.clone().unwrap();
        n.metadata.name = Some(format!("{short}.cluster.example.com"));
        n.metadata.labels.get_or_insert_with(Default::default).insert("kubernetes.io/hostname".into(), short);
        srv.insert(n);
    }
    let clients = Clients::from_config(srv.config()).unwrap();
    let settings = Settings::default();
    let snap = commands::snapshot(&clients, &settings).await.unwrap();
    let job = worker_job(&settings, &snap, "k8s-node2.cluster.example.com");
    let name = job.metadata.name.clone().unwrap();
    assert!(!name.contains('.'), "a DNS label: {name}");

    assert_eq!(
        spawn::spawn(&clients.api, &job, OnComplete::Skip, DELETE_WAIT).await.unwrap(),
        SpawnOutcome::Created
    );
    let start =
        k8s_upgrade_chain::chain::started::wait_started(&clients.api, NS, &name, Duration::from_secs(10))
            .await
            .unwrap();
    assert_eq!(start, k8s_upgrade_chain::chain::started::Start::Started);
    let pod: Pod = srv.list::<Pod>(Some(NS)).into_iter().next().expect("the Job's pod");
    assert_eq!(pod.spec.unwrap().node_name.as_deref(), Some("k8s-master.cluster.example.com"));
}
