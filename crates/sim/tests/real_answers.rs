//! The test apiserver against the answers a real kube-apiserver v1.28.7 gave
//! (/work/shared/reference/real-api-answers.md): the PDB statuses the disruption controller
//! wrote, and the eviction answers, byte for byte as JSON values. The expected bodies below are
//! the raw capture of that document.

use http_body_util::BodyExt as _;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams};
use serde_json::{Value, json};
use sim::apiserver::TestApiServer;
use sim::apiserver::fixtures::*;
use std::time::Duration;

/// POSTs a policy/v1 Eviction for `ns/name` and returns the HTTP code and the JSON body, as
/// they came over the wire (no client-side interpretation).
async fn evict_raw(srv: &TestApiServer, ns: &str, name: &str) -> (u16, Value) {
    let body =
        json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": ns}});
    let req = http::Request::post(format!("{}/api/v1/namespaces/{ns}/pods/{name}/eviction", srv.url()))
        .header("content-type", "application/json")
        .body(kube::client::Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap();
    let resp = srv.client_without_retry().send(req).await.expect("the request is answered");
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("a body").to_bytes();
    (code, serde_json::from_slice(&bytes).expect("a JSON body"))
}

/// `(expectedPods, currentHealthy, desiredHealthy, disruptionsAllowed, DisruptionAllowed reason)`.
fn status_of(srv: &TestApiServer, ns: &str, name: &str) -> (i32, i32, i32, i32, String) {
    let st = srv.get::<PodDisruptionBudget>(Some(ns), name).expect("pdb").status.expect("status");
    let reason = st
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "DisruptionAllowed")
        .map(|c| c.reason)
        .unwrap_or_default();
    (st.expected_pods, st.current_healthy, st.desired_healthy, st.disruptions_allowed, reason)
}

/// The cluster of the measurements: namespace `a` with the five PDBs of the table, namespace
/// `b` being deleted with a pod still in it.
async fn measured_cluster() -> TestApiServer {
    // A namespace controller slower than the test: namespace b stays Terminating with its pod.
    let srv = TestApiServer::builder()
        .time_scale(1.0)
        .namespace_cleanup_delay(Duration::from_secs(600))
        .start()
        .await;
    for n in ["n1", "n2", "n3", "n4"] {
        srv.insert(node(n).ready());
    }
    srv.insert(namespace("a"));
    // single: one Ready replica under minAvailable 1.
    srv.insert(replicaset("single").ns("a").replicas(1).labels(&[("app", "single")]));
    srv.insert(pod("single-0").ns("a").on("n1").owned_by_replicaset("single").label("app", "single"));
    srv.insert(pdb("single").ns("a").min_available(1).selector(&[("app", "single")]));
    // crash and crash-always: a Deployment of 3, none Ready, maxUnavailable 25%.
    for app in ["crash", "crash-always"] {
        srv.insert(deployment(app).ns("a").replicas(3).labels(&[("app", app)]).crash_looping());
        let rs = format!("{app}-5d8f7");
        srv.insert(
            replicaset(&rs)
                .ns("a")
                .replicas(3)
                .labels(&[("app", app)])
                .crash_looping()
                .owned_by_deployment(app),
        );
        for i in 0..3 {
            srv.insert(
                pod(&format!("{rs}-{i}"))
                    .ns("a")
                    .on("n1")
                    .owned_by_replicaset(&rs)
                    .label("app", app)
                    .crash_looping(),
            );
        }
    }
    srv.insert(pdb("crash").ns("a").max_unavailable_str("25%").selector(&[("app", "crash")]));
    srv.insert(
        pdb("crash-always")
            .ns("a")
            .max_unavailable_str("25%")
            .selector(&[("app", "crash-always")])
            .always_allow(),
    );
    // two-a and two-b select the same pod; it became Ready after both were created.
    srv.insert(replicaset("two").ns("a").replicas(1).labels(&[("app", "two")]));
    srv.insert(pod("two-0").ns("a").on("n2").owned_by_replicaset("two").label("app", "two").not_ready());
    srv.insert(pdb("two-a").ns("a").min_available(0).selector(&[("app", "two")]));
    srv.insert(pdb("two-b").ns("a").max_unavailable(1).selector(&[("app", "two")]));
    srv.set_pod_ready("a", "two-0", true);
    // A pod that is already terminating (grace 30 s; the simulated kubelet takes 30 s).
    srv.insert(replicaset("slow").ns("a").replicas(1).labels(&[("app", "slow")]));
    srv.insert(pod("slow-0").ns("a").on("n3").owned_by_replicaset("slow").label("app", "slow").grace(30));
    assert!(srv.delete::<Pod>(Some("a"), "slow-0"));
    // Namespace b, being deleted, with a pod the namespace controller has not reached yet.
    srv.insert(namespace("b"));
    srv.insert(replicaset("web-8844c9497").ns("b").replicas(1).labels(&[("app", "web")]));
    srv.insert(
        pod("web-8844c9497-bkqgg").ns("b").on("n4").owned_by_replicaset("web-8844c9497").label("app", "web"),
    );
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(srv.client());
    nss.delete("b", &DeleteParams::default()).await.expect("namespace b deleted");
    srv
}

#[tokio::test]
async fn pdb_statuses_are_what_the_disruption_controller_wrote() {
    let srv = measured_cluster().await;
    let ins = "InsufficientPods".to_string();
    assert_eq!(status_of(&srv, "a", "single"), (1, 1, 1, 0, ins.clone()));
    assert_eq!(status_of(&srv, "a", "crash"), (3, 0, 2, 0, ins.clone()));
    assert_eq!(status_of(&srv, "a", "crash-always"), (3, 0, 2, 0, ins.clone()));
    // The pod counts toward one of its two PDBs only.
    assert_eq!(status_of(&srv, "a", "two-a"), (1, 0, 0, 0, ins));
    assert_eq!(status_of(&srv, "a", "two-b"), (1, 1, 0, 1, "SufficientPods".to_string()));
}

#[tokio::test]
async fn eviction_answers_are_the_measured_ones() {
    let srv = measured_cluster().await;
    let crash_pod = "crash-5d8f7-0";
    let cases: Vec<(&str, &str, u16, Value)> = vec![
        (
            "a",
            "single-0",
            429,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "Cannot evict pod as it would violate the pod's disruption budget.",
                "reason": "TooManyRequests",
                "details": {"causes": [{"reason": "DisruptionBudget",
                    "message": "The disruption budget single needs 1 healthy pods and has 1 currently"}]},
                "code": 429}),
        ),
        (
            "a",
            crash_pod,
            429,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "Cannot evict pod as it would violate the pod's disruption budget.",
                "reason": "TooManyRequests",
                "details": {"causes": [{"reason": "DisruptionBudget",
                    "message": "The disruption budget crash needs 2 healthy pods and has 0 currently"}]},
                "code": 429}),
        ),
        (
            "a",
            "crash-always-5d8f7-0",
            201,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ),
        (
            "a",
            "two-0",
            500,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                "code": 500}),
        ),
        (
            "a",
            "nosuchpod",
            404,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "pods \"nosuchpod\" not found", "reason": "NotFound",
                "details": {"name": "nosuchpod", "kind": "pods"}, "code": 404}),
        ),
        (
            "a",
            "slow-0",
            201,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ),
        (
            "b",
            "web-8844c9497-bkqgg",
            403,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "pods \"web-8844c9497-bkqgg\" is forbidden: unable to create new content in namespace b because it is being terminated",
                "reason": "Forbidden",
                "details": {"name": "web-8844c9497-bkqgg", "kind": "pods",
                    "causes": [{"reason": "NamespaceTerminating", "message": "namespace b is being terminated",
                        "field": "metadata.namespace"}]},
                "code": 403}),
        ),
    ];
    for (ns, name, code, body) in cases {
        let got = evict_raw(&srv, ns, name).await;
        assert_eq!(got, (code, body), "eviction of {ns}/{name}");
    }
    // No retryAfterSeconds in any of them; the 403 left the pod alone.
    let kept = srv.get::<Pod>(Some("b"), "web-8844c9497-bkqgg").expect("still there");
    assert!(kept.metadata.deletion_timestamp.is_none());
    // The crash pod stayed; the AlwaysAllow one is terminating, and its budget was not spent.
    assert!(srv.get::<Pod>(Some("a"), crash_pod).unwrap().metadata.deletion_timestamp.is_none());
    assert_eq!(status_of(&srv, "a", "crash-always").3, 0);
}

#[tokio::test]
async fn an_unready_pod_is_evicted_without_spending_a_healthy_budget() {
    // eviction.go, IfHealthyBudget (the default): a not-Ready pod is deleted without touching
    // disruptionsAllowed when currentHealthy >= desiredHealthy > 0.
    // The ReplicaSet's replacement for web-3 never becomes Ready here: one that did would give
    // the budget a disruption to spare, and the second eviction's answer would depend on how
    // fast this machine is (it was 201 instead of 429 under load).
    let srv =
        TestApiServer::builder().time_scale(0.01).pod_start_delay(Duration::from_secs(3600)).start().await;
    for n in ["n1", "n2", "n3"] {
        srv.insert(node(n).ready());
    }
    srv.insert(replicaset("web").replicas(4).labels(&[("app", "web")]));
    for (i, n) in ["n1", "n2", "n3", "n1"].iter().enumerate() {
        srv.insert(pod(&format!("web-{i}")).on(n).owned_by_replicaset("web").label("app", "web"));
    }
    srv.set_pod_ready("default", "web-3", false);
    srv.insert(pdb("web").min_available(3).selector(&[("app", "web")]));
    assert_eq!(status_of(&srv, "default", "web").1, 3);
    assert_eq!(status_of(&srv, "default", "web").3, 0);
    let (code, _) = evict_raw(&srv, "default", "web-3").await;
    assert_eq!(code, 201);
    let (code, body) = evict_raw(&srv, "default", "web-0").await;
    assert_eq!(code, 429, "{body}");
    assert!(srv.budget_breaches().is_empty(), "{:?}", srv.budget_breaches());
}

#[tokio::test]
async fn a_delete_that_breaks_a_budget_is_recorded() {
    let srv = TestApiServer::builder().time_scale(0.01).start().await;
    for n in ["n1", "n2"] {
        srv.insert(node(n).ready());
    }
    srv.insert(replicaset("web").replicas(2).labels(&[("app", "web")]));
    for (i, n) in ["n1", "n2"].iter().enumerate() {
        srv.insert(pod(&format!("web-{i}")).on(n).owned_by_replicaset("web").label("app", "web"));
    }
    srv.insert(pdb("web").min_available(2).selector(&[("app", "web")]));
    // The eviction API refuses; a DELETE does not ask.
    assert_eq!(evict_raw(&srv, "default", "web-0").await.0, 429);
    assert!(srv.budget_breaches().is_empty());
    let pods: Api<Pod> = Api::namespaced(srv.client(), "default");
    pods.delete("web-0", &DeleteParams::default()).await.unwrap();
    let breaches = srv.budget_breaches();
    assert_eq!(breaches.len(), 1, "{breaches:?}");
    let b = &breaches[0];
    assert_eq!((b.pdb.as_str(), b.pod.as_str(), b.via), ("default/web", "default/web-0", "delete"));
    assert_eq!((b.healthy_before, b.healthy_after, b.desired, b.expected), (2, 1, 2, 2));
    assert!(b.deadlocked(), "2 expected, 2 desired: never a disruption to spare");
    assert_eq!(
        b.to_string(),
        "delete of pod default/web-0 took PodDisruptionBudget default/web from 2 to 1 healthy pods, 2 desired (2 expected)"
    );
}
