//! Milestone Events against the in-process test apiserver (`sim::apiserver`).

use chain_core::version::Version;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use k8s_openapi::api::events::v1::Event;
use k8s_upgrade_chain::k8s::events::{EventOutcome, Events, Milestone, REPORTING_CONTROLLER};
use kube::api::{Api, ListParams, PostParams};
use kube::{Resource, ResourceExt};
use sim::apiserver::TestApiServer;
use sim::apiserver::fixtures::{job, namespace, node};

async fn events_in(client: &kube::Client, ns: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns).list(&ListParams::default()).await.unwrap().items
}

fn about<'a>(events: &'a [Event], kind: &str, name: &str, reason: &str) -> Vec<&'a Event> {
    events
        .iter()
        .filter(|e| {
            let r = e.regarding.as_ref();
            r.and_then(|r| r.kind.as_deref()) == Some(kind)
                && r.and_then(|r| r.name.as_deref()) == Some(name)
                && e.reason.as_deref() == Some(reason)
        })
        .collect()
}

#[tokio::test]
async fn milestones_land_on_the_node_and_the_job() {
    let srv = TestApiServer::start().await;
    let client = srv.client();
    srv.insert(namespace("k8s-upgrade"));
    srv.insert(node("k8s-node2").ready().kubelet("v1.34.1").build());
    let node: Node = Api::all(client.clone()).get("k8s-node2").await.unwrap();
    let job_obj: Job =
        serde_json::from_value(job("k8s-upgrade", "k8s-upgrade-worker-1-34-2-k8s-node2", "img")).unwrap();
    let job_obj = Api::<Job>::namespaced(client.clone(), "k8s-upgrade")
        .create(&PostParams::default(), &job_obj)
        .await
        .unwrap();
    let node_ref = node.object_ref(&());
    let job_ref = job_obj.object_ref(&());

    let events = Events::new(client.clone(), Some("k8s-upgrade-worker-abcde".into()));
    for m in [Milestone::DrainStarted, Milestone::Evicted(3), Milestone::NodeReady(Version::new(1, 34, 2))] {
        assert_eq!(events.record(&node_ref, &m).await, EventOutcome::Recorded, "{m:?}");
    }
    assert_eq!(
        events.record(&job_ref, &Milestone::Aborted("smoke tests failed".into())).await,
        EventOutcome::Recorded
    );

    // A Node is cluster-scoped: its events live in `default`, as the kubelet's do.
    let in_default = events_in(&client, "default").await;
    let drain = about(&in_default, "Node", "k8s-node2", "DrainStarted");
    assert_eq!(drain.len(), 1, "{in_default:?}");
    assert_eq!(drain[0].reporting_controller.as_deref(), Some(REPORTING_CONTROLLER));
    assert_eq!(drain[0].reporting_instance.as_deref(), Some("k8s-upgrade-worker-abcde"));
    assert_eq!(drain[0].type_.as_deref(), Some("Normal"));
    assert_eq!(drain[0].regarding.as_ref().and_then(|r| r.uid.clone()), node.uid());
    let evicted = about(&in_default, "Node", "k8s-node2", "PodsEvicted");
    assert_eq!(evicted[0].note.as_deref(), Some("evicted 3 pod(s)"));
    assert_eq!(
        about(&in_default, "Node", "k8s-node2", "NodeReady")[0].note.as_deref(),
        Some("node Ready at v1.34.2")
    );

    let in_ns = events_in(&client, "k8s-upgrade").await;
    let aborted = about(&in_ns, "Job", "k8s-upgrade-worker-1-34-2-k8s-node2", "Aborted");
    assert_eq!(aborted.len(), 1, "{in_ns:?}");
    assert_eq!(aborted[0].type_.as_deref(), Some("Warning"));
    assert_eq!(aborted[0].note.as_deref(), Some("aborted: smoke tests failed"));
}

#[tokio::test]
async fn a_repeated_milestone_becomes_a_series_not_a_new_event() {
    let srv = TestApiServer::start().await;
    let client = srv.client();
    srv.insert(node("k8s-node3").ready().build());
    let node_ref = Api::<Node>::all(client.clone()).get("k8s-node3").await.unwrap().object_ref(&());
    let events = Events::new(client.clone(), None);
    assert_eq!(events.record(&node_ref, &Milestone::DrainStarted).await, EventOutcome::Recorded);
    assert_eq!(events.record(&node_ref, &Milestone::DrainStarted).await, EventOutcome::Recorded);
    let all = events_in(&client, "default").await;
    let drain = about(&all, "Node", "k8s-node3", "DrainStarted");
    assert_eq!(drain.len(), 1, "{all:?}");
    assert_eq!(drain[0].series.as_ref().map(|s| s.count), Some(2));
}

#[tokio::test]
async fn an_event_failure_is_a_warning_value() {
    let srv = TestApiServer::start().await;
    // The Job's namespace does not exist, so creating the Event there is a 404.
    let regarding = ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: Some("k8s-upgrade-preflight-1-34-2".into()),
        namespace: Some("no-such-namespace".into()),
        ..Default::default()
    };
    let outcome =
        k8s_upgrade_chain::k8s::events::record(&srv.client(), &regarding, Milestone::SoakDone).await;
    match outcome {
        EventOutcome::Failed { reason } => {
            assert!(reason.contains("Job no-such-namespace/k8s-upgrade-preflight-1-34-2"), "{reason}")
        }
        EventOutcome::Recorded => panic!("expected a failure"),
    }
}
