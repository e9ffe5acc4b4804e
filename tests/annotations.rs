//! The namespace in-flight annotations against the in-process test apiserver (`sim::apiserver`).

use chain_core::annotations::{AnnotationsConfig, InFlight};
use k8s_openapi::api::core::v1::Namespace;
use k8s_upgrade_chain::k8s::annotations::{AnnotationError, NamespaceAnnotations};
use sim::apiserver::TestApiServer;
use sim::apiserver::fixtures::namespace;

const NS: &str = "k8s-upgrade";

fn record() -> InFlight {
    InFlight {
        since: "2026-11-21T10:00:00Z".parse().unwrap(),
        target: "1.34.2".parse().unwrap(),
        snapshot_path: Some("/var/backups/etcd/pre-1-34-2.db".into()),
    }
}

fn annotations(srv: &TestApiServer) -> std::collections::BTreeMap<String, String> {
    srv.get::<Namespace>(None, NS).unwrap().metadata.annotations.unwrap_or_default()
}

#[tokio::test]
async fn written_read_back_and_removed_together() {
    let srv = TestApiServer::start().await;
    let mut ns = namespace(NS);
    ns["metadata"]["annotations"] = serde_json::json!({"owner": "platform"});
    srv.insert(ns);
    let ann = NamespaceAnnotations::new(srv.client(), NS, &AnnotationsConfig::default());

    assert_eq!(ann.read().await.unwrap(), None);
    ann.write(&record()).await.unwrap();
    assert_eq!(ann.read().await.unwrap(), Some(record()));
    let stored = annotations(&srv);
    assert_eq!(stored["k8s-upgrade-chain/in-flight"], "2026-11-21T10:00:00Z");
    assert_eq!(stored["k8s-upgrade-chain/target"], "1.34.2");
    assert_eq!(stored["k8s-upgrade-chain/snapshot-path"], "/var/backups/etcd/pre-1-34-2.db");
    assert_eq!(stored["owner"], "platform", "other annotations are left alone");

    ann.clear().await.unwrap();
    assert_eq!(ann.read().await.unwrap(), None);
    let stored = annotations(&srv);
    assert!(stored.keys().all(|k| !k.starts_with("k8s-upgrade-chain/")), "{stored:?}");
    assert_eq!(stored["owner"], "platform");
    ann.clear().await.unwrap(); // idempotent: removing absent keys is fine
}

#[tokio::test]
async fn the_prefix_is_a_setting() {
    let srv = TestApiServer::start().await;
    srv.insert(namespace(NS));
    let cfg = AnnotationsConfig { prefix: "example.com/k8s-upgrade-".into() };
    let ann = NamespaceAnnotations::new(srv.client(), NS, &cfg);
    ann.write(&InFlight { snapshot_path: None, ..record() }).await.unwrap();
    let stored = annotations(&srv);
    assert_eq!(stored["example.com/k8s-upgrade-target"], "1.34.2");
    assert_eq!(stored["example.com/k8s-upgrade-snapshot-path"], "");
    assert_eq!(ann.read().await.unwrap(), Some(InFlight { snapshot_path: None, ..record() }));
    // The default prefix sees nothing.
    let other = NamespaceAnnotations::new(srv.client(), NS, &AnnotationsConfig::default());
    assert_eq!(other.read().await.unwrap(), None);
}

#[tokio::test]
async fn a_partial_record_and_a_missing_namespace_are_errors() {
    let srv = TestApiServer::start().await;
    let mut ns = namespace(NS);
    ns["metadata"]["annotations"] = serde_json::json!({"k8s-upgrade-chain/target": "1.34.2"});
    srv.insert(ns);
    let ann = NamespaceAnnotations::new(srv.client(), NS, &AnnotationsConfig::default());
    let err = ann.read().await.unwrap_err();
    assert!(matches!(err, AnnotationError::Parse { .. }), "{err}");
    assert!(err.to_string().contains("k8s-upgrade-chain/in-flight"), "{err}");

    let missing = NamespaceAnnotations::new(srv.client(), "absent", &AnnotationsConfig::default());
    let err = missing.write(&record()).await.unwrap_err();
    assert!(matches!(err, AnnotationError::Api { .. }), "{err}");
    assert!(err.to_string().contains("namespace absent"), "{err}");
}
