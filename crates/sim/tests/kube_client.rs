//! The test apiserver driven by the real kube::Client.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::api::policy::v1::{Eviction, PodDisruptionBudget};
use kube::api::{
    Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use sim::apiserver::fixtures::*;
use sim::apiserver::{Fault, TestApiServer};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn api_err(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Polls `f` until it is true, with a deadline.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn crud_with_real_status_bodies() {
    let srv = TestApiServer::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(srv.client(), "default");
    let mut cm: ConfigMap = serde_json::from_value(configmap("default", "a", &[("k", "v")])).unwrap();
    cm.metadata.namespace = None;
    let created = cms.create(&PostParams::default(), &cm).await.unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.resource_version.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(srv.requests().last().unwrap().status, 201);

    let dup = api_err(cms.create(&PostParams::default(), &cm).await.unwrap_err());
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(dup.message, r#"configmaps "a" already exists"#);

    let missing = api_err(cms.get("nope").await.unwrap_err());
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, r#"configmaps "nope" not found"#);
    let d = missing.details.unwrap();
    assert_eq!((d.name.as_str(), d.kind.as_str()), ("nope", "configmaps"));
    assert!(cms.get_opt("nope").await.unwrap().is_none());

    let jobs: Api<Job> = Api::namespaced(srv.client(), "default");
    let e = api_err(jobs.get("nope").await.unwrap_err());
    assert_eq!(e.message, r#"jobs.batch "nope" not found"#);
    assert_eq!(e.details.unwrap().group, "batch");

    // Optimistic concurrency on replace.
    let mut stale = created.clone();
    stale.data = Some([("k".to_string(), "w".to_string())].into());
    let ok = cms.replace("a", &PostParams::default(), &stale).await.unwrap();
    assert_eq!(ok.data.unwrap()["k"], "w");
    let conflict = api_err(cms.replace("a", &PostParams::default(), &stale).await.unwrap_err());
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));

    // Creating into a missing namespace is 404 for the namespace.
    let other: Api<ConfigMap> = Api::namespaced(srv.client(), "ghost");
    let e = api_err(other.create(&PostParams::default(), &cm).await.unwrap_err());
    assert_eq!(e.message, r#"namespaces "ghost" not found"#);

    let list = cms.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert!(list.metadata.resource_version.is_some());

    let gone = cms.delete("a", &DeleteParams::default()).await.unwrap();
    let status = gone.right().expect("configmap deletes answer a Status");
    assert_eq!(status.details.unwrap().name, "a");
    assert!(srv.get::<ConfigMap>(Some("default"), "a").is_none());
}

#[tokio::test]
async fn pagination_and_a_big_node_list() {
    let srv = TestApiServer::start().await;
    for i in 0..25 {
        srv.insert(node(&format!("n{i:02}")).ready());
    }
    let nodes: Api<Node> = Api::all(srv.client());
    let first = nodes.list(&ListParams::default().limit(10)).await.unwrap();
    assert_eq!(first.items.len(), 10);
    assert_eq!(first.metadata.remaining_item_count, Some(15));
    let mut names: Vec<String> = first.items.iter().map(|n| n.metadata.name.clone().unwrap()).collect();
    let mut token = first.metadata.continue_.clone();
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        let page = nodes.list(&ListParams::default().limit(10).continue_token(&t)).await.unwrap();
        names.extend(page.items.iter().map(|n| n.metadata.name.clone().unwrap()));
        token = page.metadata.continue_.clone();
    }
    assert_eq!(names.len(), 25);
    assert_eq!(names[0], "n00");
    assert_eq!(names[24], "n24");

    for i in 0..5000 {
        srv.insert(node(&format!("big-{i:05}")).ready());
    }
    let all = nodes.list(&ListParams::default()).await.unwrap();
    assert_eq!(all.items.len(), 5025);
}

#[tokio::test]
async fn label_and_field_selectors() {
    let srv = TestApiServer::start().await;
    srv.insert(pod("a").ns("apps").on("n1").labels(&[("app", "web"), ("tier", "front")]));
    srv.insert(pod("b").ns("apps").on("n2").labels(&[("app", "db")]));
    srv.insert(pod("c").ns("apps").on("n1").labels(&[("app", "cache")]).phase("Succeeded"));
    srv.insert(pod("d").ns("other").on("n1"));
    let pods: Api<Pod> = Api::namespaced(srv.client(), "apps");
    let names = |l: kube::core::ObjectList<Pod>| -> Vec<String> {
        l.items.into_iter().map(|p| p.metadata.name.unwrap()).collect()
    };

    assert_eq!(names(pods.list(&ListParams::default().labels("app=web")).await.unwrap()), ["a"]);
    assert_eq!(
        names(pods.list(&ListParams::default().labels("app in (web, db)")).await.unwrap()),
        ["a", "b"]
    );
    assert_eq!(
        names(pods.list(&ListParams::default().labels("app notin (web),!tier")).await.unwrap()),
        ["b", "c"]
    );
    assert_eq!(names(pods.list(&ListParams::default().labels("tier")).await.unwrap()), ["a"]);
    assert_eq!(names(pods.list(&ListParams::default().labels("app!=web")).await.unwrap()), ["b", "c"]);

    // A matchExpressions selector through kube's Selector type.
    let sel: kube::core::Selector = serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>(json!({
        "matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "cache"]}, {"key": "tier", "operator": "DoesNotExist"}]
    }))
    .unwrap()
    .try_into()
    .unwrap();
    assert_eq!(names(pods.list(&ListParams::default().labels_from(&sel)).await.unwrap()), ["c"]);

    let all: Api<Pod> = Api::all(srv.client());
    assert_eq!(
        names(all.list(&ListParams::default().fields("spec.nodeName=n1")).await.unwrap()),
        ["a", "c", "d"]
    );
    assert_eq!(
        names(
            all.list(
                &ListParams::default()
                    .fields("spec.nodeName=n1,status.phase!=Succeeded,metadata.namespace==apps")
            )
            .await
            .unwrap()
        ),
        ["a"]
    );
    let bad = api_err(all.list(&ListParams::default().fields("spec.bogus=1")).await.unwrap_err());
    assert_eq!((bad.code, bad.reason.as_str()), (400, "BadRequest"));
    assert_eq!(bad.message, "field label not supported: spec.bogus");
    let bad = api_err(all.list(&ListParams::default().labels("app in web")).await.unwrap_err());
    assert_eq!(bad.code, 400);
}

#[tokio::test]
async fn server_side_apply_create_update_conflict_force() {
    let srv = TestApiServer::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(srv.client(), "default");
    let cfg = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"k": v}});

    let created = cms.patch("s", &PatchParams::apply("alpha"), &Patch::Apply(cfg("1"))).await.unwrap();
    assert_eq!(srv.requests().last().unwrap().status, 201);
    let mf = created.metadata.managed_fields.unwrap();
    assert_eq!(mf[0].manager.as_deref(), Some("alpha"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));

    // The same apply again is a no-op: same resourceVersion.
    let again = cms.patch("s", &PatchParams::apply("alpha"), &Patch::Apply(cfg("1"))).await.unwrap();
    assert_eq!(again.metadata.resource_version, created.metadata.resource_version);
    let updated = cms.patch("s", &PatchParams::apply("alpha"), &Patch::Apply(cfg("2"))).await.unwrap();
    assert_eq!(updated.data.unwrap()["k"], "2");
    assert_eq!(srv.requests().last().unwrap().status, 200);

    let conflict =
        api_err(cms.patch("s", &PatchParams::apply("beta"), &Patch::Apply(cfg("3"))).await.unwrap_err());
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert_eq!(conflict.message, r#"Apply failed with 1 conflict: conflict with "alpha": .data.k"#);
    let causes = conflict.details.unwrap().causes;
    assert_eq!((causes[0].reason.as_str(), causes[0].field.as_str()), ("FieldManagerConflict", ".data.k"));

    let forced = cms.patch("s", &PatchParams::apply("beta").force(), &Patch::Apply(cfg("3"))).await.unwrap();
    assert_eq!(forced.data.unwrap()["k"], "3");
    let managers: Vec<String> =
        forced.metadata.managed_fields.unwrap().into_iter().filter_map(|m| m.manager).collect();
    assert_eq!(managers, ["beta"]);

    // A merge patch by another manager takes the field over; alpha now conflicts.
    cms.patch("s", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "4"}}))).await.unwrap();
    assert!(cms.patch("s", &PatchParams::apply("beta"), &Patch::Apply(cfg("5"))).await.is_err());

    // Apply without a field manager is 422 on PatchOptions (raw request: kube refuses to send it).
    let req = http::Request::patch(format!("{}/api/v1/namespaces/default/configmaps/s", srv.url()))
        .header("content-type", "application/apply-patch+yaml")
        .body(serde_json::to_vec(&cfg("6")).unwrap())
        .unwrap();
    let e = api_err(srv.client().request::<Value>(req).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        e.message,
        r#"PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch"#
    );

    // An Update manager is printed with its apiVersion and time.
    let e = api_err(cms.patch("s", &PatchParams::apply("gamma"), &Patch::Apply(cfg("7"))).await.unwrap_err());
    assert!(
        e.message.starts_with(r#"Apply failed with 1 conflict: conflict with "" using v1 at "#),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn patch_flavours() {
    let srv = TestApiServer::start().await;
    srv.insert(pod("p").on("n1").finalizer("a"));
    let pods: Api<Pod> = Api::namespaced(srv.client(), "default");
    let p = pods
        .patch("p", &PatchParams::default(), &Patch::Strategic(json!({"metadata": {"finalizers": ["b"]}})))
        .await
        .unwrap();
    assert_eq!(p.metadata.finalizers.unwrap(), ["a", "b"]);
    let p = pods
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([{"op": "remove", "path": "/metadata/finalizers/0"}])).unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.finalizers.unwrap(), ["b"]);
    let p = pods
        .patch("p", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})))
        .await
        .unwrap();
    assert_eq!(p.metadata.labels.unwrap()["x"], "y");
    // Pod specs are immutable but for images and a few fields.
    let e = api_err(
        pods.patch("p", &PatchParams::default(), &Patch::Merge(json!({"spec": {"nodeName": "n2"}})))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(
        e.message.starts_with(
            r#"Pod "p" is invalid: spec: Forbidden: pod updates may not change fields other than"#
        )
    );
    pods.patch(
        "p",
        &PatchParams::default(),
        &Patch::Strategic(json!({"spec": {"containers": [{"name": "main", "image": "img:2"}]}})),
    )
    .await
    .unwrap();
    // Status is not writable through the main resource.
    let p = pods
        .patch("p", &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Failed"}})))
        .await
        .unwrap();
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Running"));
    let p = pods
        .patch_status("p", &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Failed"}})))
        .await
        .unwrap();
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Failed"));

    // Deployments: the scale subresource and spec.replicas are stored.
    srv.insert(deployment("web").ns("default").replicas(3).labels(&[("app", "web")]));
    let deps: Api<Deployment> = Api::namespaced(srv.client(), "default");
    let s = deps.get_scale("web").await.unwrap();
    assert_eq!(s.spec.unwrap().replicas, Some(3));
    deps.patch_scale("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 5}})))
        .await
        .unwrap();
    assert_eq!(srv.get::<Deployment>(Some("default"), "web").unwrap().spec.unwrap().replicas, Some(5));
}

/// The `upgrade` namespace and Ready nodes n1..n3 for the Job controller's pods to land on.
fn job_cluster(srv: &TestApiServer) {
    srv.insert(namespace("upgrade"));
    for n in ["n1", "n2", "n3"] {
        srv.insert(node(n).ready());
    }
}

fn upgrade_job(name: &str, node: &str, image: &str) -> Job {
    let mut j = job("upgrade", name, image);
    j["spec"]["template"]["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": node});
    j["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = json!(1);
    serde_json::from_value(j).unwrap()
}

#[tokio::test]
async fn jobs_get_a_pod_are_immutable_and_finish() {
    let srv = TestApiServer::start().await;
    job_cluster(&srv);
    let jobs: Api<Job> = Api::namespaced(srv.client(), "upgrade");
    let j = jobs.create(&PostParams::default(), &upgrade_job("worker-n2", "n2", "img:1")).await.unwrap();
    let uid = j.metadata.uid.clone().unwrap();
    let sel = j.spec.as_ref().unwrap().selector.clone().unwrap().match_labels.unwrap();
    assert_eq!(sel["batch.kubernetes.io/controller-uid"], uid);

    let job = srv.get::<Job>(Some("upgrade"), "worker-n2").unwrap();
    assert_eq!(job.status.as_ref().unwrap().active, Some(1));
    assert!(job.status.as_ref().unwrap().start_time.is_some());
    let pods: Api<Pod> = Api::namespaced(srv.client(), "upgrade");
    let list = pods.list(&ListParams::default().labels("job-name=worker-n2")).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let p = &list.items[0];
    assert!(p.metadata.name.as_ref().unwrap().starts_with("worker-n2-"));
    assert_eq!(p.spec.as_ref().unwrap().node_name.as_deref(), Some("n2"));
    let labels = p.metadata.labels.as_ref().unwrap();
    for k in ["batch.kubernetes.io/controller-uid", "controller-uid"] {
        assert_eq!(labels[k], uid);
    }
    assert_eq!(labels["batch.kubernetes.io/job-name"], "worker-n2");
    let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Job", uid.as_str(), Some(true))
    );
    assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
    // API defaulting and admission, as a real server returns them.
    let ps = p.spec.as_ref().unwrap();
    assert_eq!(ps.dns_policy.as_deref(), Some("ClusterFirst"));
    assert_eq!(ps.service_account_name.as_deref(), Some("default"));
    assert_eq!(ps.containers[0].termination_message_path.as_deref(), Some("/dev/termination-log"));
    assert_eq!(ps.containers[0].image_pull_policy.as_deref(), Some("IfNotPresent"));
    let tmpl = j.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(tmpl.scheduler_name.as_deref(), Some("default-scheduler"));

    // A Job name longer than a label value can be (the controller labels its pods with it).
    let long = format!("upgrade-worker-{}", "k8s-node-with-a-very-long-name-0123456789abcdefgh");
    let e =
        api_err(jobs.create(&PostParams::default(), &upgrade_job(&long, "n2", "img:1")).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        e.message,
        format!(
            r#"Job.batch "{long}" is invalid: spec.template.labels: Invalid value: "{long}": must be no more than 63 characters"#
        )
    );
    let bad: Pod = serde_json::from_value(
        json!({"metadata": {"name": "Web_1"}, "spec": {"containers": [{"name": "a", "image": "b"}]}}),
    )
    .unwrap();
    let e = api_err(
        Api::<Pod>::namespaced(srv.client(), "upgrade")
            .create(&PostParams::default(), &bad)
            .await
            .unwrap_err(),
    );
    assert!(
        e.message.starts_with(
            r#"Pod "Web_1" is invalid: metadata.name: Invalid value: "Web_1": a lowercase RFC 1123 subdomain"#
        ),
        "{}",
        e.message
    );

    // A Job whose pods would restart is invalid.
    let mut always = upgrade_job("bad", "n2", "img:1");
    always.spec.as_mut().unwrap().template.spec.as_mut().unwrap().restart_policy = None;
    let e = api_err(jobs.create(&PostParams::default(), &always).await.unwrap_err());
    assert_eq!(e.code, 422);
    assert_eq!(
        e.message,
        r#"Job.batch "bad" is invalid: spec.template.spec.restartPolicy: Unsupported value: "Always": supported values: "OnFailure", "Never""#
    );

    // Same template again through SSA: fine. A new image: 422 field is immutable.
    let mut same = upgrade_job("worker-n2", "n2", "img:1");
    same.metadata.namespace = Some("upgrade".into());
    jobs.patch("worker-n2", &PatchParams::apply("chain").force(), &Patch::Apply(&same)).await.unwrap();
    let mut changed = upgrade_job("worker-n2", "n2", "img:2");
    changed.metadata.namespace = Some("upgrade".into());
    let e = api_err(
        jobs.patch("worker-n2", &PatchParams::apply("chain").force(), &Patch::Apply(&changed))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(
        e.message.starts_with(r#"Job.batch "worker-n2" is invalid: spec.template: Invalid value: "#),
        "{}",
        e.message
    );
    assert!(e.message.ends_with("field is immutable"));
    assert_eq!(e.details.unwrap().causes[0].field, "spec.template");

    srv.complete_job("upgrade", "worker-n2");
    let done = await_condition(jobs.clone(), "worker-n2", conditions::is_job_completed());
    tokio::time::timeout(WAIT, done).await.unwrap().unwrap();
    let st = srv.get::<Job>(Some("upgrade"), "worker-n2").unwrap().status.unwrap();
    assert_eq!((st.active, st.succeeded), (Some(0), Some(1)));
    assert!(st.completion_time.is_some());
    let pod = srv.get::<Pod>(Some("upgrade"), p.metadata.name.as_deref().unwrap()).unwrap();
    assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Succeeded"));

    jobs.create(&PostParams::default(), &upgrade_job("worker-n3", "n3", "img:1")).await.unwrap();
    srv.fail_job("upgrade", "worker-n3", "BackoffLimitExceeded");
    let failed_pod = srv.job_pods("upgrade", "worker-n3").pop().unwrap();
    let cs =
        srv.get::<Pod>(Some("upgrade"), &failed_pod).unwrap().status.unwrap().container_statuses.unwrap();
    assert_eq!(cs[0].state.as_ref().unwrap().terminated.as_ref().unwrap().exit_code, 1);
    let st = srv.get::<Job>(Some("upgrade"), "worker-n3").unwrap().status.unwrap();
    let failed = st.conditions.unwrap().into_iter().find(|c| c.type_ == "Failed").unwrap();
    assert_eq!((failed.status.as_str(), failed.reason.as_deref()), ("True", Some("BackoffLimitExceeded")));
    assert_eq!(st.failed, Some(1));
}

#[tokio::test]
async fn deleting_a_job_orphans_by_default_and_foreground_waits_for_the_pod() {
    let srv = TestApiServer::builder().time_scale(0.3).start().await;
    job_cluster(&srv);
    let jobs: Api<Job> = Api::namespaced(srv.client(), "upgrade");
    let pods: Api<Pod> = Api::namespaced(srv.client(), "upgrade");

    jobs.create(&PostParams::default(), &upgrade_job("orphaned", "n1", "img")).await.unwrap();
    let pod_name = srv.job_pods("upgrade", "orphaned").pop().unwrap();
    // The default for batch/v1 Jobs is Orphan: the registry answers with the Job carrying the
    // `orphan` finalizer, then the garbage collector frees the pod and the Job goes.
    let marked = jobs
        .delete("orphaned", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .expect("an orphaning delete answers with the object");
    assert_eq!(marked.metadata.finalizers.unwrap(), ["orphan"]);
    eventually("the orphaned job to go", || srv.get::<Job>(Some("upgrade"), "orphaned").is_none()).await;
    let p = pods.get(&pod_name).await.unwrap();
    assert!(p.metadata.owner_references.is_none());
    assert!(p.metadata.deletion_timestamp.is_none());

    let j = jobs.create(&PostParams::default(), &upgrade_job("fg", "n1", "img")).await.unwrap();
    let uid = j.metadata.uid.unwrap();
    let pod_name = srv.job_pods("upgrade", "fg").pop().unwrap();
    let marked = jobs
        .delete("fg", &DeleteParams::foreground())
        .await
        .unwrap()
        .left()
        .expect("the job stays while its pod terminates");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(marked.metadata.finalizers.unwrap().contains(&"foregroundDeletion".to_string()));
    // The pod (grace 1 s * 0.3) is terminating and the Job waits for it.
    let p = pods.get(&pod_name).await.unwrap();
    assert!(p.metadata.deletion_timestamp.is_some());
    assert!(jobs.get_opt("fg").await.unwrap().is_some());
    let gone = await_condition(jobs.clone(), "fg", conditions::is_deleted(&uid));
    tokio::time::timeout(WAIT, gone).await.unwrap().unwrap();
    assert!(pods.get_opt(&pod_name).await.unwrap().is_none(), "the pod went before the job");

    // Background: the job goes at once, the pod after.
    jobs.create(&PostParams::default(), &upgrade_job("bg", "n1", "img")).await.unwrap();
    let pod_name = srv.job_pods("upgrade", "bg").pop().unwrap();
    jobs.delete("bg", &DeleteParams::background()).await.unwrap();
    assert!(jobs.get_opt("bg").await.unwrap().is_none());
    assert!(pods.get(&pod_name).await.unwrap().metadata.deletion_timestamp.is_some());
}

#[tokio::test]
async fn graceful_pod_deletion_is_seen_by_a_watch() {
    let srv = TestApiServer::builder().time_scale(0.1).start().await;
    srv.insert(pod("slow").on("n1").grace(2));
    let pods: Api<Pod> = Api::namespaced(srv.client(), "default");
    let rv = srv.resource_version().to_string();
    let mut stream = pods
        .watch(&WatchParams::default().fields("metadata.name=slow").timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    let deleted = pods.delete("slow", &DeleteParams::default()).await.unwrap().left().unwrap();
    assert_eq!(deleted.metadata.deletion_grace_period_seconds, Some(2));
    assert!(deleted.metadata.deletion_timestamp.is_some());
    let mut seen = Vec::new();
    while let Some(ev) = tokio::time::timeout(WAIT, stream.next()).await.unwrap() {
        match ev.unwrap() {
            WatchEvent::Modified(p) => {
                seen.push(format!("MODIFIED terminating={}", p.metadata.deletion_timestamp.is_some()))
            }
            WatchEvent::Deleted(_) => {
                seen.push("DELETED".into());
                break;
            }
            other => seen.push(format!("{other:?}")),
        }
    }
    assert_eq!(seen, ["MODIFIED terminating=true", "DELETED"]);

    // remove() makes a pod vanish regardless of grace and finalizers.
    srv.insert(pod("held").on("n1").finalizer("x/y"));
    assert!(srv.remove::<Pod>(Some("default"), "held"));
    assert!(pods.get_opt("held").await.unwrap().is_none());

    // Grace 0 removes at once.
    srv.insert(pod("fast").on("n1"));
    pods.delete("fast", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    assert!(pods.get_opt("fast").await.unwrap().is_none());

    // Preconditions.
    srv.insert(pod("pre").on("n1"));
    let e = api_err(
        pods.delete(
            "pre",
            &DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: Some("other".into()),
                    resource_version: None,
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(e.message.contains("Precondition failed: UID in precondition: other"), "{}", e.message);
    // Dry run changes nothing.
    pods.delete("pre", &DeleteParams { dry_run: true, grace_period_seconds: Some(0), ..Default::default() })
        .await
        .unwrap();
    assert!(pods.get_opt("pre").await.unwrap().is_some());
}

#[tokio::test]
async fn a_finalizer_keeps_a_pod_until_removed() {
    let srv = TestApiServer::builder().time_scale(0.01).start().await;
    srv.insert(pod("stuck").on("n1").finalizer("example.com/hold"));
    let pods: Api<Pod> = Api::namespaced(srv.client(), "default");
    let uid = pods.get("stuck").await.unwrap().metadata.uid.unwrap();
    pods.delete("stuck", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await; // 30 s grace * 0.01 has passed
    let p = pods.get("stuck").await.unwrap();
    assert!(p.metadata.deletion_timestamp.is_some());
    pods.patch("stuck", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}})))
        .await
        .unwrap();
    let gone = await_condition(pods.clone(), "stuck", conditions::is_deleted(&uid));
    tokio::time::timeout(WAIT, gone).await.unwrap().unwrap();
}

fn web_fleet(srv: &TestApiServer) {
    for n in ["n1", "n2", "n3", "n4"] {
        srv.insert(node(n).ready());
    }
    srv.insert(replicaset("web-abc").ns("apps").replicas(3).labels(&[("app", "web")]).grace(1));
    for (i, n) in ["n1", "n2", "n3"].iter().enumerate() {
        srv.insert(
            pod(&format!("web-abc-{i}"))
                .ns("apps")
                .on(n)
                .owned_by_replicaset("web-abc")
                .label("app", "web")
                .grace(1),
        );
    }
}

#[tokio::test]
async fn eviction_honours_the_disruption_budget() {
    let srv =
        TestApiServer::builder().time_scale(0.05).pod_start_delay(Duration::from_millis(100)).start().await;
    web_fleet(&srv);
    srv.insert(pdb("web").ns("apps").min_available(2).selector(&[("app", "web")]));
    let pdb_status = || srv.get::<PodDisruptionBudget>(Some("apps"), "web").unwrap().status.unwrap();
    let st = pdb_status();
    assert_eq!(
        (st.current_healthy, st.desired_healthy, st.expected_pods, st.disruptions_allowed),
        (3, 2, 3, 1)
    );

    let pods: Api<Pod> = Api::namespaced(srv.client_without_retry(), "apps");
    let ok = pods.evict("web-abc-0", &EvictParams::default()).await.unwrap();
    assert_eq!(ok.code, 201);
    let last = srv.requests().last().unwrap().clone();
    assert_eq!((last.verb.as_str(), last.status), ("create", 201));
    let evicted = srv.get::<Pod>(Some("apps"), "web-abc-0").unwrap();
    assert!(evicted.metadata.deletion_timestamp.is_some());
    let dt = evicted
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "DisruptionTarget")
        .expect("eviction marks the pod with DisruptionTarget");
    assert_eq!((dt.status.as_str(), dt.reason.as_deref()), ("True", Some("EvictionByEvictionAPI")));

    let blocked = api_err(pods.evict("web-abc-1", &EvictParams::default()).await.unwrap_err());
    assert_eq!((blocked.code, blocked.reason.as_str()), (429, "TooManyRequests"));
    assert_eq!(blocked.message, "Cannot evict pod as it would violate the pod's disruption budget.");
    let cause = &blocked.details.unwrap().causes[0];
    assert_eq!(cause.reason, "DisruptionBudget");
    assert_eq!(cause.message, "The disruption budget web needs 2 healthy pods and has 2 currently");

    // The ReplicaSet's replacement becomes Ready on another node; then eviction works again.
    eventually("a Ready replacement", || {
        srv.list::<Pod>(Some("apps"))
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.status
                        .as_ref()
                        .unwrap()
                        .conditions
                        .as_ref()
                        .unwrap()
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            })
            .count()
            == 3
    })
    .await;
    let replacement = srv
        .list::<Pod>(Some("apps"))
        .into_iter()
        .find(|p| !["web-abc-0", "web-abc-1", "web-abc-2"].contains(&p.metadata.name.as_deref().unwrap()))
        .unwrap();
    assert_ne!(replacement.spec.unwrap().node_name.as_deref(), Some("n1"));
    assert_eq!(pdb_status().disruptions_allowed, 1);
    pods.evict("web-abc-1", &EvictParams::default()).await.unwrap();
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A held start keeps a replacement Pending (and its budget short) until the test releases
/// it; pods the selector does not match start as usual.
#[tokio::test]
async fn a_held_replacement_stays_pending_until_released() {
    let srv =
        TestApiServer::builder().time_scale(0.05).pod_start_delay(Duration::from_millis(20)).start().await;
    web_fleet(&srv);
    srv.insert(pdb("web").ns("apps").min_available(2).selector(&[("app", "web")]));
    srv.insert(replicaset("api").ns("apps").replicas(1).labels(&[("app", "api")]).grace(1));
    srv.insert(pod("api-0").ns("apps").on("n4").owned_by_replicaset("api").label("app", "api").grace(1));
    srv.hold_pod_starts("apps", "app in (web)");
    let pods: Api<Pod> = Api::namespaced(srv.client_without_retry(), "apps");
    pods.evict("web-abc-0", &EvictParams::default()).await.unwrap();
    pods.delete("api-0", &DeleteParams::default()).await.unwrap();
    eventually("the web replacement held", || srv.held_pods().len() == 1).await;
    let (ns, held) = srv.held_pods().remove(0);
    assert_eq!(ns, "apps");
    assert!(held.starts_with("web-abc-"), "{held}");
    // The api replacement is not held: it starts after the delay.
    eventually("the api replacement Ready", || {
        srv.list::<Pod>(Some("apps")).iter().any(|p| {
            p.metadata.name.as_deref().is_some_and(|n| n.starts_with("api-") && n != "api-0") && ready(p)
        })
    })
    .await;
    let p = srv.get::<Pod>(Some("apps"), &held).unwrap();
    assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));
    assert!(!ready(&p));
    let blocked = api_err(pods.evict("web-abc-1", &EvictParams::default()).await.unwrap_err());
    assert_eq!(blocked.code, 429, "the budget stays short while the start is held");

    assert!(srv.release_pod("apps", &held));
    assert!(!srv.release_pod("apps", &held), "released once");
    assert!(srv.held_pods().is_empty());
    assert!(ready(&srv.get::<Pod>(Some("apps"), &held).unwrap()));
    let st = srv.get::<PodDisruptionBudget>(Some("apps"), "web").unwrap().status.unwrap();
    assert_eq!((st.current_healthy, st.disruptions_allowed), (3, 1));
    pods.evict("web-abc-1", &EvictParams::default()).await.unwrap();
    eventually("the second web replacement held", || srv.held_pods().len() == 1).await;
    // Without holds, what was held starts and the next replacement starts by itself.
    srv.release_holds();
    assert!(srv.held_pods().is_empty());
    pods.evict("web-abc-2", &EvictParams::default()).await.unwrap();
    eventually("every web replica Ready", || {
        srv.list::<Pod>(Some("apps"))
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.metadata.name.as_deref().unwrap().starts_with("web-")
            })
            .filter(|p| ready(p))
            .count()
            == 3
    })
    .await;
}

#[tokio::test]
async fn eviction_edge_cases() {
    let srv = TestApiServer::builder().time_scale(0.01).start().await;
    web_fleet(&srv);
    let pods: Api<Pod> = Api::namespaced(srv.client_without_retry(), "apps");

    let missing = api_err(pods.evict("nope", &EvictParams::default()).await.unwrap_err());
    assert_eq!((missing.code, missing.message.as_str()), (404, r#"pods "nope" not found"#));

    srv.insert(pdb("a").ns("apps").min_available(1).selector(&[("app", "web")]));
    srv.insert(pdb("b").ns("apps").select_all().min_available(1));
    let two = api_err(pods.evict("web-abc-0", &EvictParams::default()).await.unwrap_err());
    assert_eq!(two.code, 500);
    assert_eq!(
        two.message,
        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
    );

    // A budget that allows nothing, an unready pod, and AlwaysAllow.
    assert!(srv.delete::<PodDisruptionBudget>(Some("apps"), "b"));
    srv.insert(pdb("a").ns("apps").min_available(3).selector(&[("app", "web")]).always_allow());
    srv.set_pod_ready("apps", "web-abc-2", false);
    let st = srv.get::<PodDisruptionBudget>(Some("apps"), "a").unwrap().status.unwrap();
    assert_eq!((st.current_healthy, st.disruptions_allowed), (2, 0));
    assert_eq!(api_err(pods.evict("web-abc-0", &EvictParams::default()).await.unwrap_err()).code, 429);
    pods.evict("web-abc-2", &EvictParams::default()).await.unwrap();

    // Pending and terminal pods skip the budget.
    srv.insert(pod("done").ns("apps").on("n1").label("app", "web").phase("Succeeded"));
    pods.evict("done", &EvictParams::default()).await.unwrap();
    assert!(srv.get::<Pod>(Some("apps"), "done").is_none());

    // Dry run: allowed, nothing changes.
    srv.insert(pod("solo").ns("apps").on("n1").label("app", "solo"));
    let req =
        http::Request::post(format!("{}/api/v1/namespaces/apps/pods/solo/eviction?dryRun=All", srv.url()))
            .header("content-type", "application/json")
            .body(
                serde_json::to_vec(
                    &json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "solo"}}),
                )
                .unwrap(),
            )
            .unwrap();
    let body: Value = srv.client().request(req).await.unwrap();
    assert_eq!(
        body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
    );
    assert!(srv.get::<Pod>(Some("apps"), "solo").unwrap().metadata.deletion_timestamp.is_none());

    // A typed policy/v1 Eviction with deleteOptions (grace 0) removes at once.
    let ev: Eviction = serde_json::from_value(json!({"metadata": {"name": "solo", "namespace": "apps"}, "deleteOptions": {"gracePeriodSeconds": 0}})).unwrap();
    let _: kube::core::Status =
        pods.create_subresource("eviction", "solo", &PostParams::default(), &ev).await.unwrap();
    assert!(srv.get::<Pod>(Some("apps"), "solo").is_none());
}

#[tokio::test]
async fn pdb_math_from_controllers() {
    let srv = TestApiServer::start().await;
    srv.insert(deployment("web").ns("apps").replicas(4).labels(&[("app", "web")]));
    srv.insert(
        replicaset("web-1").ns("apps").replicas(4).labels(&[("app", "web")]).owned_by_deployment("web"),
    );
    for i in 0..3 {
        srv.insert(
            pod(&format!("web-1-{i}")).ns("apps").on("n1").owned_by_replicaset("web-1").label("app", "web"),
        );
    }
    srv.insert(pdb("pct").ns("apps").max_unavailable_str("25%").selector(&[("app", "web")]));
    let st = srv.get::<PodDisruptionBudget>(Some("apps"), "pct").unwrap().status.unwrap();
    // expected = deployment replicas 4; maxUnavailable ceil(25% of 4) = 1; desired 3; healthy 3.
    assert_eq!(
        (st.expected_pods, st.desired_healthy, st.current_healthy, st.disruptions_allowed),
        (4, 3, 3, 0)
    );
    // Scaling the Deployment moves the budget.
    let deps: Api<Deployment> = Api::namespaced(srv.client(), "apps");
    deps.patch_scale("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 3}})))
        .await
        .unwrap();
    let st = srv.get::<PodDisruptionBudget>(Some("apps"), "pct").unwrap().status.unwrap();
    assert_eq!((st.expected_pods, st.desired_healthy, st.disruptions_allowed), (3, 2, 1));
    // A bare pod under a maxUnavailable budget is unmanaged: expected 0, nothing allowed.
    srv.insert(pod("bare").ns("apps").on("n1").label("app", "bare"));
    srv.insert(pdb("bare").ns("apps").max_unavailable(1).selector(&[("app", "bare")]));
    let st = srv.get::<PodDisruptionBudget>(Some("apps"), "bare").unwrap().status.unwrap();
    assert_eq!((st.expected_pods, st.current_healthy, st.disruptions_allowed), (0, 1, 0));
    assert_eq!(st.conditions.unwrap()[0].reason, "InsufficientPods");
    // A DaemonSet pod: no scale to find, the controller fails safe and never observes the
    // PDB's generation, so the eviction API says the budget is still being processed.
    srv.insert(pod("agent").ns("apps").on("n1").owned_by_daemonset("agent").label("app", "agent"));
    srv.insert(pdb("agent").ns("apps").max_unavailable(1).selector(&[("app", "agent")]));
    let st = srv.get::<PodDisruptionBudget>(Some("apps"), "agent").unwrap().status.unwrap();
    let c = &st.conditions.unwrap()[0];
    assert_eq!(
        (c.reason.as_str(), c.message.as_str()),
        ("SyncFailed", r#"found no controllers for pod "agent""#)
    );
    assert_eq!((st.disruptions_allowed, st.observed_generation), (0, Some(0)));
    let pods: Api<Pod> = Api::namespaced(srv.client_without_retry(), "apps");
    let e = api_err(pods.evict("agent", &EvictParams::default()).await.unwrap_err());
    assert_eq!(e.code, 429);
    assert_eq!(
        e.details.unwrap().causes[0].message,
        "The disruption budget agent is still being processed by the server."
    );
    let _ = srv.get::<ReplicaSet>(Some("apps"), "web-1").unwrap();
}

#[tokio::test]
async fn watch_from_a_resource_version_and_410() {
    let srv = TestApiServer::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(srv.client(), "default");
    let start = srv.resource_version().to_string();
    srv.insert(configmap("default", "one", &[]));
    srv.insert(configmap("default", "two", &[]));
    let evs: Vec<_> =
        cms.watch(&WatchParams::default().timeout(1), &start).await.unwrap().try_collect().await.unwrap();
    let kinds: Vec<String> = evs
        .iter()
        .map(|e| match e {
            WatchEvent::Added(c) => format!("ADDED {}", c.metadata.name.as_deref().unwrap()),
            WatchEvent::Bookmark(_) => "BOOKMARK".into(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(kinds, ["ADDED one", "ADDED two", "BOOKMARK"]);

    srv.compact();
    let mut s = cms.watch(&WatchParams::default().timeout(5), &start).await.unwrap().boxed();
    match s.next().await.unwrap().unwrap() {
        WatchEvent::Error(st) => {
            assert_eq!((st.code, st.reason.as_str()), (410, "Expired"));
            assert!(st.message.starts_with("too old resource version"));
        }
        other => panic!("expected a 410 error event, got {other:?}"),
    }
}

/// Collects a watch until its timeout: the names of the ADDED events, or the 410 Status.
async fn watched<K>(api: &Api<K>, rv: &str) -> Result<Vec<String>, kube::core::Status>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let mut names = Vec::new();
    let mut s = api.watch(&WatchParams::default().timeout(1), rv).await.unwrap().boxed();
    while let Some(ev) = s.next().await {
        match ev.unwrap() {
            WatchEvent::Added(o) => names.push(o.meta().name.clone().unwrap_or_default()),
            WatchEvent::Error(st) => return Err(*st),
            _ => {}
        }
    }
    Ok(names)
}

#[tokio::test]
async fn each_resource_keeps_its_own_bounded_window_and_older_watches_get_410() {
    // A window of 100 events: the 150 ConfigMap changes push the first 50 out.
    let srv = TestApiServer::builder().history_limit(100).start().await;
    let cms: Api<ConfigMap> = Api::namespaced(srv.client(), "default");
    let start = srv.resource_version();
    srv.insert(configmap("default", "cm-0", &[]));
    let first = srv.resource_version();
    for i in 1..150 {
        srv.insert(configmap("default", &format!("cm-{i}"), &[]));
    }
    let cm50 = srv.get_value::<ConfigMap>(Some("default"), "cm-50").unwrap();
    let oldest_kept: u64 = cm50["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();

    // Older than the oldest kept minus one: the watch cache's 410, with its numbers.
    let st = watched(&cms, &start.to_string()).await.unwrap_err();
    assert_eq!((st.code, st.reason.as_str()), (410, "Expired"));
    assert_eq!(st.message, format!("too old resource version: {start} ({})", oldest_kept - 1));
    assert!(watched(&cms, &first.to_string()).await.is_err());
    // From the oldest kept minus one on, every later change is served.
    let served = watched(&cms, &(oldest_kept - 1).to_string()).await.unwrap();
    assert_eq!(served.len(), 100);
    assert_eq!(served.first().map(String::as_str), Some("cm-50"));

    // Other resources keep their own window: nothing of theirs was dropped.
    let nodes: Api<Node> = Api::all(srv.client());
    srv.insert(node("k8s-node1").ready());
    assert_eq!(watched(&nodes, &start.to_string()).await.unwrap(), ["k8s-node1"]);
}

#[tokio::test]
async fn a_window_of_fresh_events_grows_instead_of_dropping_them() {
    // The default window starts at 100 events and doubles while its oldest is younger than
    // 75 s: 150 changes made at once are all kept.
    let srv = TestApiServer::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(srv.client(), "default");
    let start = srv.resource_version();
    for i in 0..150 {
        srv.insert(configmap("default", &format!("cm-{i}"), &[]));
    }
    assert_eq!(watched(&cms, &start.to_string()).await.unwrap().len(), 150);
}

#[tokio::test]
async fn kube_runtime_watcher_and_await_condition() {
    let srv = TestApiServer::builder().time_scale(0.01).start().await;
    let pods: Api<Pod> = Api::namespaced(srv.client(), "default");
    srv.insert(pod("w1").on("n1"));
    let mut stream =
        watcher(pods.clone(), watcher::Config::default().labels("app=x")).applied_objects().boxed();
    srv.insert(pod("w2").on("n1").label("app", "x"));
    let first = tokio::time::timeout(WAIT, stream.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("w2"));
    // A label change that makes the pod match is delivered as an applied object.
    srv.modify::<Pod>(Some("default"), "w1", |p| p["metadata"]["labels"] = json!({"app": "x"}));
    let next = tokio::time::timeout(WAIT, stream.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(next.metadata.name.as_deref(), Some("w1"));

    // await_condition + is_deleted(uid) with a same-name replacement counts as deleted.
    let uid = srv.get::<Pod>(Some("default"), "w2").unwrap().metadata.uid.unwrap();
    let waiter = pods.clone();
    let wait = tokio::spawn(async move { await_condition(waiter, "w2", conditions::is_deleted(&uid)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    pods.delete("w2", &DeleteParams::default()).await.unwrap();
    tokio::time::timeout(WAIT, wait).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn fault_injection() {
    let srv = TestApiServer::start().await;
    srv.insert(configmap("upgrade", "upgrade-kill-switch", &[("reason", "stop")]));
    srv.inject(Fault::status(403).method("GET").on("configmaps", "upgrade-kill-switch").times(1));
    let cms: Api<ConfigMap> = Api::namespaced(srv.client(), "upgrade");
    let e = api_err(cms.get("upgrade-kill-switch").await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert!(
        e.message.starts_with(r#"configmaps "upgrade-kill-switch" is forbidden: User "#),
        "{}",
        e.message
    );
    assert!(cms.get("upgrade-kill-switch").await.is_ok(), "times(1) fault is used up");

    srv.inject(Fault::status(500).path_contains("/configmaps"));
    let e = api_err(cms.list(&ListParams::default()).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (500, "InternalError"));
    assert_eq!(srv.count("get"), 2);
    assert!(srv.counts()["list"] >= 1);
    srv.clear_faults();
    assert!(cms.list(&ListParams::default()).await.is_ok());

    // A slow apiserver: the request is held, then served.
    srv.inject(Fault::delay(Duration::from_secs(5)).on("configmaps", "upgrade-kill-switch").times(1));
    let slow = tokio::time::timeout(Duration::from_millis(100), cms.get("upgrade-kill-switch")).await;
    assert!(slow.is_err(), "the client's own deadline fires first");
    assert!(cms.get("upgrade-kill-switch").await.is_ok());
    srv.reset_requests();
}

#[tokio::test]
async fn health_version_and_yaml_seeding() {
    let srv = TestApiServer::builder().server_version("v1.33.7").start().await;
    let v = srv.client().apiserver_version().await.unwrap();
    assert_eq!((v.major.as_str(), v.minor.as_str(), v.git_version.as_str()), ("1", "33", "v1.33.7"));
    let req = http::Request::get(format!("{}/readyz", srv.url())).body(Vec::new()).unwrap();
    assert_eq!(srv.client().request_text(req).await.unwrap(), "ok");
    let docs = srv.apply_yaml(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  namespace: apps\ndata:\n  a: b\n",
    );
    assert_eq!(docs.len(), 2);
    assert_eq!(srv.get::<ConfigMap>(Some("apps"), "c").unwrap().data.unwrap()["a"], "b");
    srv.set_kubelet_version("n1", "v1.34.2"); // absent node: no-op
    srv.insert(node("n1").ready());
    srv.set_kubelet_version("n1", "v1.34.2");
    srv.set_node_ready("n1", false);
    let n = srv.get::<Node>(None, "n1").unwrap().status.unwrap();
    assert_eq!(n.node_info.unwrap().kubelet_version, "v1.34.2");
    assert!(n.conditions.unwrap().iter().any(|c| c.type_ == "Ready" && c.status == "False"));
    // A mirror pod's owner is its Node, with the uid the node fixture has.
    let mirror = srv.insert(pod("etcd-n1").ns("kube-system").on("n1").mirror());
    assert_eq!(mirror["metadata"]["ownerReferences"][0]["kind"], "Node");
    assert_eq!(
        mirror["metadata"]["ownerReferences"][0]["uid"].as_str(),
        srv.get::<Node>(None, "n1").unwrap().metadata.uid.as_deref()
    );
    srv.set_pod_log("default", "p", "a\nb\nc\n");
    srv.insert(pod("p").on("n1"));
    let pods: Api<Pod> = Api::namespaced(srv.client(), "default");
    let logs =
        pods.logs("p", &kube::api::LogParams { tail_lines: Some(2), ..Default::default() }).await.unwrap();
    assert_eq!(logs, "b\nc\n");
}

#[tokio::test]
async fn deleting_a_namespace_empties_it_first() {
    use k8s_openapi::api::core::v1::Namespace;
    let srv = TestApiServer::builder().time_scale(0.5).start().await;
    web_fleet(&srv);
    let nss: Api<Namespace> = Api::all(srv.client());
    let uid = nss.get("apps").await.unwrap().metadata.uid.unwrap();
    let ns = nss.delete("apps", &DeleteParams::default()).await.unwrap().left().unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    let cms: Api<ConfigMap> = Api::namespaced(srv.client(), "apps");
    let e = api_err(
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap(),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    let gone = await_condition(nss.clone(), "apps", conditions::is_deleted(&uid));
    tokio::time::timeout(WAIT, gone).await.unwrap().unwrap();
    assert!(srv.list::<Pod>(Some("apps")).is_empty());
}

#[tokio::test]
async fn the_default_client_retries_429_like_production_and_the_evict_client_does_not() {
    let srv = TestApiServer::start().await;
    srv.insert(configmap("default", "c", &[]));
    srv.inject(Fault::status(429).on("configmaps", "c").times(2));
    let cms: Api<ConfigMap> = Api::default_namespaced(srv.client());
    assert!(cms.get("c").await.is_ok(), "kube's default retry rides over two 429s");
    assert_eq!(srv.count("get"), 3);

    srv.inject(Fault::status(429).on("configmaps", "c").times(1));
    let raw: Api<ConfigMap> = Api::default_namespaced(srv.client_without_retry());
    assert_eq!(api_err(raw.get("c").await.unwrap_err()).code, 429);

    // Cordon is a merge patch of spec.unschedulable.
    srv.insert(node("n1").ready());
    let nodes: Api<Node> = Api::all(srv.client());
    nodes.cordon("n1").await.unwrap();
    assert_eq!(srv.get::<Node>(None, "n1").unwrap().spec.unwrap().unschedulable, Some(true));
}

#[tokio::test]
async fn statefulset_pods_come_back_with_the_same_name_elsewhere() {
    let srv =
        TestApiServer::builder().time_scale(0.05).pod_start_delay(Duration::from_millis(50)).start().await;
    for n in ["n1", "n2"] {
        srv.insert(node(n).ready());
    }
    srv.insert(node("n3").ready().unschedulable());
    srv.insert(statefulset("db").ns("apps").replicas(1).labels(&[("app", "db")]));
    srv.insert(pod("db-0").ns("apps").on("n1").owned_by_statefulset("db").label("app", "db").grace(1));
    let old_uid = srv.get::<Pod>(Some("apps"), "db-0").unwrap().metadata.uid.unwrap();
    let pods: Api<Pod> = Api::namespaced(srv.client_without_retry(), "apps");
    pods.evict("db-0", &EvictParams::default()).await.unwrap();
    srv.wait_until("db-0 to come back Ready", WAIT, |srv| {
        srv.get::<Pod>(Some("apps"), "db-0").is_some_and(|p| {
            p.metadata.uid.as_deref() != Some(old_uid.as_str())
                && p.status.unwrap().phase.as_deref() == Some("Running")
        })
    })
    .await;
    let p = srv.get::<Pod>(Some("apps"), "db-0").unwrap();
    assert_eq!(p.spec.unwrap().node_name.as_deref(), Some("n2"), "not the old node, not the cordoned one");
}

#[tokio::test]
async fn events_logs_and_deletecollection() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event;
    let srv = TestApiServer::start().await;
    let ev: Event = serde_json::from_value(json!({
        "metadata": {"generateName": "upgrade-"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "k8s-upgrade-chain", "reportingInstance": "x",
        "action": "Drain", "reason": "Drained", "type": "Normal", "note": "drained n1",
        "regarding": {"kind": "Node", "name": "n1"},
    }))
    .unwrap();
    let events: Api<Event> = Api::namespaced(srv.client(), "default");
    let created = events.create(&PostParams::default(), &ev).await.unwrap();
    assert!(created.metadata.name.unwrap().starts_with("upgrade-"));
    assert_eq!(events.list(&ListParams::default()).await.unwrap().items.len(), 1);
    let core: Api<CoreEvent> = Api::namespaced(srv.client(), "default");
    let ce: CoreEvent = serde_json::from_value(json!({"metadata": {"name": "e1"}, "involvedObject": {"kind": "Node", "name": "n1"}, "reason": "Upgraded"})).unwrap();
    core.create(&PostParams::default(), &ce).await.unwrap();
    let by_reason = core.list(&ListParams::default().fields("reason=Upgraded")).await.unwrap();
    assert_eq!(by_reason.items.len(), 1);

    srv.insert(pod("quiet").on("n1"));
    let pods: Api<Pod> = Api::default_namespaced(srv.client());
    let e = api_err(pods.logs("quiet", &Default::default()).await.unwrap_err());
    assert_eq!(e.code, 404);
    let e = api_err(pods.logs("absent", &Default::default()).await.unwrap_err());
    assert_eq!(e.message, r#"pods "absent" not found"#);

    let cms: Api<ConfigMap> = Api::default_namespaced(srv.client());
    for (n, l) in [("a", "x"), ("b", "x"), ("c", "y")] {
        let mut cm = configmap("default", n, &[]);
        cm["metadata"]["labels"] = json!({"k": l});
        srv.insert(cm);
    }
    cms.delete_collection(&DeleteParams::default(), &ListParams::default().labels("k=x")).await.unwrap();
    let left: Vec<String> =
        srv.list::<ConfigMap>(Some("default")).into_iter().map(|c| c.metadata.name.unwrap()).collect();
    assert_eq!(left, ["c"]);
}

#[tokio::test]
async fn watcher_in_streaming_list_mode() {
    let srv = TestApiServer::start().await;
    srv.insert(pod("s1").on("n1"));
    let pods: Api<Pod> = Api::default_namespaced(srv.client());
    let mut stream = watcher(pods, watcher::Config::default().streaming_lists()).boxed();
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, stream.next()).await.unwrap().unwrap().unwrap() {
            watcher::Event::InitApply(p) => seen.push(p.metadata.name.unwrap()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(seen, ["s1"]);
    srv.insert(pod("s2").on("n1"));
    match tokio::time::timeout(WAIT, stream.next()).await.unwrap().unwrap().unwrap() {
        watcher::Event::Apply(p) => assert_eq!(p.metadata.name.as_deref(), Some("s2")),
        other => panic!("expected an Apply, got {other:?}"),
    }
}

#[tokio::test]
async fn metadata_only_calls_and_leases() {
    use k8s_openapi::api::coordination::v1::Lease;
    let srv = TestApiServer::start().await;
    srv.insert(pod("m1").on("n1").label("app", "m"));
    let pods: Api<Pod> = Api::default_namespaced(srv.client());
    let meta = pods.get_metadata("m1").await.unwrap();
    assert_eq!(meta.metadata.labels.unwrap()["app"], "m");
    let list = pods.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let meta_api: Api<kube::core::PartialObjectMeta<Pod>> = Api::default_namespaced(srv.client());
    let mut stream = watcher(meta_api, watcher::Config::default()).applied_objects().boxed();
    let first = tokio::time::timeout(WAIT, stream.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("m1"));

    let leases: Api<Lease> = Api::default_namespaced(srv.client());
    let l: Lease = serde_json::from_value(
        json!({"metadata": {"name": "upgrade-lock"}, "spec": {"holderIdentity": "me"}}),
    )
    .unwrap();
    leases.create(&PostParams::default(), &l).await.unwrap();
    assert!(leases.get("upgrade-lock").await.is_ok());
}

#[tokio::test]
async fn eviction_preconditions() {
    let srv = TestApiServer::start().await;
    srv.insert(pod("p").on("n1"));
    let pods: Api<Pod> = Api::default_namespaced(srv.client_without_retry());
    let ev = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p"},
                    "deleteOptions": {"preconditions": {"uid": "not-it"}}});
    let e = api_err(
        pods.create_subresource::<_, kube::core::Status>("eviction", "p", &PostParams::default(), &ev)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(
        e.message.starts_with(r#"Operation cannot be fulfilled on Pod "p": the UID in the precondition (not-it) does not match the UID in record ("#),
        "{}",
        e.message
    );
    assert!(srv.get::<Pod>(Some("default"), "p").unwrap().metadata.deletion_timestamp.is_none());
}

#[tokio::test]
async fn a_kubeconfig_for_subprocesses() {
    let srv = TestApiServer::start().await;
    let kc = kube::config::Kubeconfig::from_yaml(&srv.kubeconfig_yaml()).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    assert_eq!(cfg.default_namespace, "default");
    let client = kube::Client::try_from(cfg).unwrap();
    srv.insert(node("n1").ready());
    let nodes: Api<Node> = Api::all(client);
    assert_eq!(nodes.list(&ListParams::default()).await.unwrap().items.len(), 1);
}

#[tokio::test]
async fn kube_event_recorder_publishes_and_updates_series() {
    use k8s_openapi::api::events::v1::Event;
    use kube::runtime::events::{Event as RecEvent, EventType, Recorder, Reporter};
    let srv = TestApiServer::start().await;
    srv.insert(node("n1").ready());
    let node_ref = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some("n1".into()),
        uid: srv.get::<Node>(None, "n1").unwrap().metadata.uid,
        ..Default::default()
    };
    let recorder = Recorder::new(
        srv.client(),
        Reporter { controller: "k8s-upgrade-chain".into(), instance: Some("test".into()) },
    );
    let ev = RecEvent {
        type_: EventType::Normal,
        reason: "Drained".into(),
        note: Some("drained n1".into()),
        action: "Drain".into(),
        secondary: None,
    };
    recorder.publish(&ev, &node_ref).await.unwrap();
    recorder.publish(&ev, &node_ref).await.unwrap();
    let events = srv.list::<Event>(None);
    assert_eq!(events.len(), 1, "the second publish patches the series");
    assert_eq!(events[0].series.as_ref().map(|s| s.count), Some(2));
}

#[tokio::test]
async fn a_job_whose_pod_is_evicted_fails_or_retries_like_the_job_controller() {
    let srv = TestApiServer::builder().time_scale(0.01).start().await;
    job_cluster(&srv);
    let jobs: Api<Job> = Api::namespaced(srv.client(), "upgrade");
    let pods: Api<Pod> = Api::namespaced(srv.client_without_retry(), "upgrade");

    // backoffLimit 0: evicting the running pod fails the Job.
    jobs.create(&PostParams::default(), &upgrade_job("once", "n1", "img")).await.unwrap();
    let pod_name = srv.job_pods("upgrade", "once").pop().unwrap();
    pods.evict(&pod_name, &EvictParams::default()).await.unwrap();
    let st = srv.get::<Job>(Some("upgrade"), "once").unwrap().status.unwrap();
    let failed = st.conditions.unwrap().into_iter().find(|c| c.type_ == "Failed").unwrap();
    assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!((st.failed, st.active), (Some(1), Some(0)));

    // backoffLimit 1: a second pod is started.
    let mut retrying = upgrade_job("twice", "n1", "img");
    retrying.spec.as_mut().unwrap().backoff_limit = Some(1);
    jobs.create(&PostParams::default(), &retrying).await.unwrap();
    let first = srv.job_pods("upgrade", "twice").pop().unwrap();
    pods.delete(&first, &DeleteParams::default()).await.unwrap();
    let names = srv.job_pods("upgrade", "twice");
    assert_eq!(names.len(), 2, "the terminating pod and its replacement: {names:?}");
    let st = srv.get::<Job>(Some("upgrade"), "twice").unwrap().status.unwrap();
    assert_eq!((st.failed, st.active), (Some(1), Some(1)));

    // The pod succeeding completes the Job.
    let second = names.into_iter().find(|n| n != &first).unwrap();
    srv.set_pod_phase("upgrade", &second, "Succeeded");
    let st = srv.get::<Job>(Some("upgrade"), "twice").unwrap().status.unwrap();
    assert!(st.conditions.unwrap().iter().any(|c| c.type_ == "Complete" && c.status == "True"));
}

#[tokio::test]
async fn a_job_pod_whose_image_is_gone_stays_pending_in_image_pull_back_off() {
    let srv = TestApiServer::start().await;
    job_cluster(&srv);
    srv.missing_image("registry.local/gone:1");
    let jobs: Api<Job> = Api::namespaced(srv.client(), "upgrade");
    jobs.create(&PostParams::default(), &upgrade_job("pulls", "n2", "registry.local/gone:1")).await.unwrap();
    jobs.create(&PostParams::default(), &upgrade_job("runs", "n2", "registry.local/here:1")).await.unwrap();
    let pod =
        |job: &str| srv.get::<Pod>(Some("upgrade"), &srv.job_pods("upgrade", job).pop().unwrap()).unwrap();
    let waiting = |p: &Pod| {
        let cs = p.status.as_ref()?.container_statuses.as_ref()?.first()?.state.as_ref()?.waiting.clone()?;
        Some((cs.reason.unwrap_or_default(), cs.message.unwrap_or_default()))
    };
    // Scheduled on its node, then the kubelet's back-off after the failed pull.
    let p = pod("pulls");
    assert_eq!(p.spec.as_ref().unwrap().node_name.as_deref(), Some("n2"));
    assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));
    assert_eq!(waiting(&p).unwrap().0, "ContainerCreating");
    eventually("ImagePullBackOff", || waiting(&pod("pulls")).is_some_and(|(r, _)| r == "ImagePullBackOff"))
        .await;
    let p = pod("pulls");
    assert_eq!(waiting(&p).unwrap().1, "Back-off pulling image \"registry.local/gone:1\"");
    assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));
    let ready = p.status.unwrap().conditions.unwrap().into_iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_deref()), ("False", Some("ContainersNotReady")));
    // Another image runs as before.
    assert_eq!(pod("runs").status.unwrap().phase.as_deref(), Some("Running"));
}

#[tokio::test]
async fn job_pods_are_scheduled_by_node_name_not_by_hostname_label() {
    // Nodes registered under an FQDN whose kubelet hostname label is the short name.
    let srv = TestApiServer::start().await;
    srv.insert(namespace("upgrade"));
    for n in ["k8s-master", "k8s-node1", "k8s-node2", "k8s-node3"] {
        srv.insert(node(&format!("{n}.example.com")).hostname(n).ready());
    }
    let jobs: Api<Job> = Api::namespaced(srv.client(), "upgrade");
    // Pinned by the hostname label to the node *name*: no node has that label value.
    jobs.create(&PostParams::default(), &upgrade_job("by-label", "k8s-node1.example.com", "img"))
        .await
        .unwrap();
    let pod_name = srv.job_pods("upgrade", "by-label").pop().unwrap();
    let p = srv.get::<Pod>(Some("upgrade"), &pod_name).unwrap();
    assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));
    assert!(p.spec.as_ref().unwrap().node_name.is_none());
    let c = p.status.unwrap().conditions.unwrap().into_iter().find(|c| c.type_ == "PodScheduled").unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_deref()), ("False", Some("Unschedulable")));
    assert_eq!(
        c.message.as_deref(),
        Some(
            "0/4 nodes are available: 4 node(s) didn't match Pod's node affinity/selector. preemption: 0/4 nodes are available: 4 Preemption is not helpful for scheduling.."
        )
    );
    // Pinned by metadata.name (matchFields), as the DaemonSet controller pins its pods.
    let mut j = job("upgrade", "by-name", "img");
    j["spec"]["template"]["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["k8s-node1.example.com"]}]}]}}});
    jobs.create(&PostParams::default(), &serde_json::from_value(j).unwrap()).await.unwrap();
    let pod_name = srv.job_pods("upgrade", "by-name").pop().unwrap();
    let p = srv.get::<Pod>(Some("upgrade"), &pod_name).unwrap();
    assert_eq!(p.spec.unwrap().node_name.as_deref(), Some("k8s-node1.example.com"));
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Running"));
}
