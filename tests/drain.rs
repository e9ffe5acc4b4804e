//! The drain engine against the in-process test apiserver (`sim::apiserver`), through the real
//! `kube::Client`s the tool builds (`Clients::from_config`: the eviction client has retry off).
//!
//! Every test starts its own server on 127.0.0.1:0 with grace periods scaled by 0.01 (a 30 s
//! grace takes 300 ms), so tests run in parallel without sharing anything.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::PostParams;
use sim::apiserver::fixtures::*;
use sim::apiserver::{Fault, TestApiServer};

use k8s_upgrade_chain::drain::{
    self, CORDONED_BY, Cordon, DrainConfig, DrainError, DrainOutcome, DrainTarget, PodRef, Remaining,
    Uncordon,
};
use k8s_upgrade_chain::k8s::Clients;

const NODE: &str = "k8s-node1";
const TOOL_NS: &str = "upgrade";

struct Env {
    srv: TestApiServer,
    clients: Clients,
}

/// Three Ready workers; `k8s-node1` is the one drained, replacements land on the others.
async fn env() -> Env {
    let srv = TestApiServer::builder().time_scale(0.01).start().await;
    for n in [NODE, "k8s-node2", "k8s-node3"] {
        srv.insert(node(n).ready().kubelet("v1.33.5"));
    }
    srv.insert(namespace(TOOL_NS));
    let clients = Clients::from_config(srv.config()).expect("clients");
    Env { srv, clients }
}

fn target() -> DrainTarget {
    DrainTarget { node: NODE.into(), namespace: TOOL_NS.into(), self_pod: None }
}

/// Short deadlines so a failing test fails in seconds, not in 30 minutes.
fn config() -> DrainConfig {
    DrainConfig {
        timeout: Duration::from_secs(60),
        kill_switch_interval: Duration::from_secs(1),
        ..DrainConfig::default()
    }
}

impl Env {
    fn pods_on(&self, node: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .srv
            .list::<Pod>(None)
            .into_iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
            .map(|p| PodRef::of(&p).to_string())
            .collect();
        names.sort();
        names
    }

    fn node(&self, name: &str) -> Node {
        self.srv.get::<Node>(None, name).expect("node exists")
    }

    /// Requests whose path contains `part` and whose verb is `verb`.
    fn requests(&self, verb: &str, part: &str) -> usize {
        self.srv.requests().iter().filter(|r| r.verb == verb && r.path.contains(part)).count()
    }

    /// A ReplicaSet `name` with `n` pods `name-0..` on `node`, labelled `app=name`.
    fn replicaset_on(&self, name: &str, n: usize, node: &str) {
        self.srv.insert(replicaset(name).replicas(n as i64).labels(&[("app", name)]));
        for i in 0..n {
            self.srv
                .insert(pod(&format!("{name}-{i}")).on(node).owned_by_replicaset(name).label("app", name));
        }
    }
}

fn unschedulable(n: &Node) -> bool {
    n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false)
}

fn annotation<'a>(n: &'a Node, key: &str) -> Option<&'a str> {
    n.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

#[tokio::test]
async fn drains_a_mixed_node_like_kubectl() {
    let e = env().await;
    e.replicaset_on("web", 2, NODE);
    e.srv.insert(daemonset("calico").labels(&[("k8s-app", "calico")]));
    e.srv.insert(pod("calico-abc").on(NODE).owned_by_daemonset("calico"));
    e.srv.insert(pod("kube-proxy-k8s-node1").ns("kube-system").on(NODE).mirror());
    e.srv.insert(pod("backup-xyz").on(NODE).owned_by_job("backup").phase("Succeeded"));
    e.srv.insert(pod("scratch").on(NODE).empty_dir("tmp"));
    e.srv.insert(pod("elsewhere").on("k8s-node2").owned_by_replicaset("other"));

    let report = drain::drain(&e.clients, &target(), &config()).await.expect("drain succeeds");

    assert_eq!(report.outcome, DrainOutcome::Drained);
    assert_eq!(report.cordon, Some(Cordon::CordonedByUs));
    let s = &report.summary;
    assert_eq!((s.evicted, s.deleted_finished, s.fallback_deleted, s.skipped, s.remaining), (3, 1, 0, 2, 0));
    assert_eq!(e.pods_on(NODE), ["default/calico-abc", "kube-system/kube-proxy-k8s-node1"]);
    assert_eq!(
        e.pods_on("k8s-node2").iter().filter(|p| p.starts_with("default/web-")).count()
            + e.pods_on("k8s-node3").iter().filter(|p| p.starts_with("default/web-")).count(),
        2,
        "replaced elsewhere"
    );
    assert_eq!(e.requests("create", "/eviction"), 3, "web-0, web-1 and the bare pod scratch");
    assert_eq!(
        e.requests("create", "/pods/backup-xyz/eviction"),
        0,
        "finished pods are deleted, not evicted"
    );
    assert_eq!(e.requests("delete", "/pods/backup-xyz"), 1);
    assert!(report.warnings.iter().any(|(p, _)| p.name == "scratch"), "bare pod warned about");
    let n = e.node(NODE);
    assert!(unschedulable(&n));
    assert_eq!(annotation(&n, CORDONED_BY), Some("k8s-upgrade-chain"));
    assert!(annotation(&n, drain::CORDONED_AT).is_some());
}

#[tokio::test]
async fn waits_on_pods_with_one_watch_not_per_pod_polling() {
    let e = env().await;
    e.replicaset_on("web", 20, NODE);
    drain::drain(&e.clients, &target(), &config()).await.expect("drain succeeds");
    assert_eq!(e.pods_on(NODE), Vec::<String>::new());
    let pod_gets = e.srv.requests().iter().filter(|r| r.verb == "get" && r.path.contains("/pods/")).count();
    assert_eq!(pod_gets, 0, "no GET per pod");
    assert_eq!(e.requests("watch", "/pods"), 1, "one watch on the node's pods");
    assert!(e.srv.requests().iter().any(|r| r.verb == "watch" && r.path.contains("spec.nodeName")));
    assert_eq!(e.requests("create", "/eviction"), 20);
}

#[tokio::test]
async fn orphaned_daemonset_pod_is_evicted_only_with_force() {
    let e = env().await;
    e.srv.insert(pod("orphan-ds").on(NODE).owned_by_daemonset("deleted-ds"));

    let strict = DrainConfig { force: false, ..config() };
    let err = drain::drain(&e.clients, &target(), &strict).await.expect_err("refused without force");
    let DrainError::Refused { pods, .. } = &err else { panic!("{err:?}") };
    assert_eq!(pods[0].0.name, "orphan-ds");
    assert!(err.to_string().contains("default/orphan-ds"), "{err}");
    assert_eq!(e.requests("create", "/eviction"), 0, "a refusal evicts nothing");
    assert!(unschedulable(&e.node(NODE)), "node stays cordoned, as with kubectl");

    let report = drain::drain(&e.clients, &target(), &config()).await.expect("forced drain");
    assert_eq!(report.cordon, Some(Cordon::AlreadyOurs));
    assert_eq!(report.summary.evicted, 1);
    assert!(e.pods_on(NODE).is_empty());
}

#[tokio::test]
async fn emptydir_and_bare_pods_are_refused_when_their_flags_are_off() {
    let e = env().await;
    e.srv.insert(pod("cache-0").on(NODE).owned_by_replicaset("cache").empty_dir("data"));
    e.srv.insert(pod("bare").on(NODE));
    let strict = DrainConfig { force: false, delete_emptydir_data: false, ..config() };
    let err = drain::drain(&e.clients, &target(), &strict).await.expect_err("refused");
    let msg = err.to_string();
    assert!(msg.contains("default/cache-0 has emptyDir data"), "{msg}");
    assert!(msg.contains("default/bare declares no controller"), "{msg}");
    assert_eq!(e.pods_on(NODE).len(), 2);
}

#[tokio::test]
async fn pdb_min_available_2_of_3_waits_for_replacements_then_evicts_all() {
    let e = env().await;
    e.replicaset_on("web", 3, NODE);
    e.srv.insert(pdb("web").min_available(2).selector(&[("app", "web")]));

    let report = drain::drain(&e.clients, &target(), &config()).await.expect("drain succeeds");

    let s = &report.summary;
    assert_eq!(s.evicted, 3);
    assert_eq!(s.fallback_deleted, 0, "a budget that recovers is never deleted through");
    assert!(s.eviction_refusals >= 1, "the second eviction must have waited: {s:?}");
    assert!(s.blocked_time > Duration::ZERO);
    assert!(e.pods_on(NODE).is_empty());
    assert_eq!(e.requests("delete", "/pods/web-"), 0, "no direct delete");
}

#[tokio::test]
async fn single_replica_min_available_1_falls_back_to_delete() {
    let e = env().await;
    e.replicaset_on("anubis", 1, NODE);
    e.srv.insert(pdb("anubis").min_available(1).selector(&[("app", "anubis")]));

    let report = drain::drain(&e.clients, &target(), &config()).await.expect("drain succeeds");

    assert_eq!(report.summary.fallback_deleted, 1);
    assert_eq!(report.summary.evicted, 0);
    assert_eq!(report.fallbacks.len(), 1);
    assert_eq!(report.fallbacks[0].pod.name, "anubis-0");
    assert_eq!(report.fallbacks[0].pdbs, ["anubis"]);
    assert_eq!(e.requests("delete", "/pods/anubis-0"), 1);
    assert!(e.pods_on(NODE).is_empty());
    assert!(report.to_string().contains("deleted by PDB fallback: default/anubis-0"), "{report}");
}

#[tokio::test]
async fn deadlocked_pdb_waits_for_its_fallback_budget() {
    let e = env().await;
    e.replicaset_on("anubis", 1, NODE);
    e.srv.insert(pdb("anubis").min_available(1).selector(&[("app", "anubis")]));
    let cfg = DrainConfig {
        fallback_after: Duration::from_secs(3600),
        timeout: Duration::from_secs(3),
        ..config()
    };
    let err = drain::drain(&e.clients, &target(), &cfg).await.expect_err("times out");
    let DrainError::Timeout { remaining, summary, .. } = &err else { panic!("{err:?}") };
    assert_eq!(summary.fallback_deleted, 0);
    assert!(
        matches!(&remaining[0].why, Remaining::Blocked { pdb: Some(p), .. } if p == "anubis"),
        "{remaining:?}"
    );
    assert!(err.to_string().contains("blocked by PodDisruptionBudget anubis"), "{err}");
}

#[tokio::test]
async fn pod_under_two_pdbs_is_reported_with_both_names_then_falls_back() {
    let e = env().await;
    e.srv.insert(replicaset("web").replicas(3).labels(&[("app", "web")]));
    e.srv.insert(
        pod("web-0").on(NODE).owned_by_replicaset("web").labels(&[("app", "web"), ("tier", "front")]),
    );
    e.srv.insert(pdb("by-app").max_unavailable(1).selector(&[("app", "web")]));
    e.srv.insert(pdb("by-tier").max_unavailable(1).selector_object(serde_json::json!({
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "edge"]}]
    })));

    // A fallback budget longer than the deadline: the 500 is retried and reported.
    let patient = DrainConfig {
        fallback_after: Duration::from_secs(3600),
        timeout: Duration::from_secs(3),
        ..config()
    };
    let err = drain::drain(&e.clients, &target(), &patient).await.expect_err("times out");
    let DrainError::Timeout { remaining, .. } = &err else { panic!("{err:?}") };
    assert_eq!(remaining[0].why, Remaining::MultiplePdbs { pdbs: vec!["by-app".into(), "by-tier".into()] });
    assert!(err.to_string().contains("by-app, by-tier"), "{err}");

    // Default budget (0s): straight to the fallback.
    let report = drain::drain(&e.clients, &target(), &config()).await.expect("drain succeeds");
    assert_eq!(report.summary.fallback_deleted, 1);
    assert_eq!(report.fallbacks[0].pdbs, ["by-app", "by-tier"]);
    assert!(e.pods_on(NODE).is_empty());
}

#[tokio::test]
async fn pdb_match_expressions_decide_what_the_fallback_deletes() {
    let e = env().await;
    // Seed behaviour read matchLabels only: it would have taken this PDB to cover web-0 too.
    e.srv.insert(pdb("db").min_available(1).selector_object(serde_json::json!({
        "matchLabels": {"team": "x"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["db"]}]
    })));
    e.srv.insert(statefulset("db").replicas(1).labels(&[("team", "x"), ("tier", "db")]));
    e.srv.insert(pod("db-0").on(NODE).owned_by_statefulset("db").labels(&[("team", "x"), ("tier", "db")]));
    e.srv.insert(replicaset("web").replicas(1).labels(&[("team", "x"), ("tier", "web")]));
    e.srv.insert(pod("web-0").on(NODE).owned_by_replicaset("web").labels(&[("team", "x"), ("tier", "web")]));

    let report = drain::drain(&e.clients, &target(), &config()).await.expect("drain succeeds");

    let deleted: Vec<&str> = report.fallbacks.iter().map(|f| f.pod.name.as_str()).collect();
    assert_eq!(deleted, ["db-0"]);
    assert_eq!(report.summary.evicted, 1, "web-0 went through the eviction API");
    assert_eq!(e.requests("delete", "/pods/web-0"), 0);
    assert!(e.pods_on(NODE).is_empty());
}

#[tokio::test]
async fn pod_that_never_terminates_hits_the_deadline_and_the_node_stays_cordoned() {
    let e = env().await;
    e.replicaset_on("web", 2, NODE);
    e.srv.insert(pod("stuck").on(NODE).owned_by_replicaset("stuck").finalizer("example.com/hold"));
    let cfg = DrainConfig { timeout: Duration::from_secs(3), ..config() };

    let err = drain::drain(&e.clients, &target(), &cfg).await.expect_err("deadline");

    let DrainError::Timeout { remaining, summary, .. } = &err else { panic!("{err:?}") };
    assert_eq!(remaining.len(), 1);
    assert_eq!(remaining[0].pod.name, "stuck");
    assert_eq!(remaining[0].why, Remaining::Terminating { finalizers: vec!["example.com/hold".into()] });
    assert_eq!(summary.evicted, 3);
    assert_eq!(summary.remaining, 1);
    let msg = err.to_string();
    assert!(msg.contains("drain of node k8s-node1 timed out after 3s"), "{msg}");
    assert!(msg.contains("default/stuck: terminating, held by finalizers example.com/hold"), "{msg}");
    assert!(msg.contains("stays cordoned"), "{msg}");
    assert!(unschedulable(&e.node(NODE)));
}

#[tokio::test]
async fn node_cordoned_by_someone_else_is_never_uncordoned() {
    let e = env().await;
    e.srv.insert(node(NODE).ready().kubelet("v1.33.5").unschedulable());
    e.replicaset_on("web", 1, NODE);

    let report = drain::drain(&e.clients, &target(), &config()).await.expect("drain succeeds");
    assert_eq!(report.cordon, Some(Cordon::NotOurs));
    assert_eq!(annotation(&e.node(NODE), CORDONED_BY), None, "not marked as ours");

    let undo = drain::uncordon_if_ours(&e.clients.api, NODE).await.expect("uncordon");
    assert_eq!(undo, Uncordon::NotOurs { cordoned: true });
    assert!(unschedulable(&e.node(NODE)), "still cordoned");
    assert_eq!(e.requests("patch", "/nodes/"), 0, "we never wrote to that node");
}

#[tokio::test]
async fn uncordon_if_ours_undoes_only_our_cordon() {
    let e = env().await;
    assert_eq!(drain::cordon(&e.clients.api, NODE).await.unwrap(), Cordon::CordonedByUs);
    assert_eq!(drain::cordon(&e.clients.api, NODE).await.unwrap(), Cordon::AlreadyOurs, "idempotent");
    assert_eq!(drain::uncordon_if_ours(&e.clients.api, NODE).await.unwrap(), Uncordon::Uncordoned);
    let n = e.node(NODE);
    assert!(!unschedulable(&n));
    assert_eq!(annotation(&n, CORDONED_BY), None);
    assert_eq!(annotation(&n, drain::CORDONED_AT), None);
    assert_eq!(
        drain::uncordon_if_ours(&e.clients.api, NODE).await.unwrap(),
        Uncordon::NotOurs { cordoned: false }
    );
}

#[tokio::test]
async fn kill_switch_created_during_a_drain_stops_it_cleanly() {
    let e = env().await;
    e.replicaset_on("web", 4, NODE);
    // Every eviction is refused (429 without a budget, as API priority and fairness would):
    // the drain keeps retrying until something stops it.
    e.srv.inject(Fault::status(429).path_contains("/eviction"));
    let handle = {
        let clients = e.clients.clone();
        tokio::spawn(async move { drain::drain(&clients, &target(), &config()).await })
    };
    // Wait (bounded) until the drain has been refused at least once, then pull the switch.
    for _ in 0..100 {
        if e.requests("create", "/eviction") >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(e.requests("create", "/eviction") >= 4, "the drain never started evicting");
    e.srv.insert(configmap(TOOL_NS, "k8s-upgrade-killswitch", &[("reason", "storm")]));

    let report = tokio::time::timeout(Duration::from_secs(30), handle)
        .await
        .expect("the drain stops within its kill-switch interval")
        .expect("task")
        .expect("a halt is not an error");

    let DrainOutcome::Halted { reason, remaining } = &report.outcome else { panic!("{report:?}") };
    assert_eq!(reason, "storm");
    assert_eq!(remaining.len(), 4);
    assert_eq!(report.summary.remaining, 4);
    assert!(unschedulable(&e.node(NODE)), "node stays cordoned");
    let evictions_at_halt = e.requests("create", "/eviction");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(e.requests("create", "/eviction"), evictions_at_halt, "nothing runs after the halt");
    assert!(report.to_string().contains("halted by the kill switch (storm)"), "{report}");
}

#[tokio::test]
async fn kill_switch_present_before_the_drain_leaves_the_node_alone() {
    let e = env().await;
    e.replicaset_on("web", 1, NODE);
    e.srv.insert(configmap(TOOL_NS, "k8s-upgrade-killswitch", &[("reason", "maintenance")]));
    let report = drain::drain(&e.clients, &target(), &config()).await.expect("halt is a value");
    assert!(matches!(report.outcome, DrainOutcome::Halted { ref reason, .. } if reason == "maintenance"));
    assert_eq!(report.cordon, None);
    assert!(!unschedulable(&e.node(NODE)));
    assert_eq!(e.pods_on(NODE).len(), 1);
}

#[tokio::test]
async fn unreadable_kill_switch_fails_closed() {
    let e = env().await;
    e.replicaset_on("web", 1, NODE);
    e.srv.inject(Fault::status(403).on("configmaps", "k8s-upgrade-killswitch"));
    let err = drain::drain(&e.clients, &target(), &config()).await.expect_err("fails closed");
    assert!(matches!(err, DrainError::KillSwitch(_)), "{err:?}");
    assert!(!unschedulable(&e.node(NODE)));
}

#[tokio::test]
async fn dry_run_lists_what_would_happen_and_changes_nothing() {
    let e = env().await;
    e.replicaset_on("web", 3, NODE);
    e.srv.insert(pdb("web").min_available(2).selector(&[("app", "web")]));
    e.replicaset_on("anubis", 1, NODE);
    e.srv.insert(pdb("anubis").min_available(1).selector(&[("app", "anubis")]));
    e.srv.insert(daemonset("calico"));
    e.srv.insert(pod("calico-abc").on(NODE).owned_by_daemonset("calico"));
    e.srv.insert(pod("backup-xyz").on(NODE).owned_by_job("backup").phase("Failed"));
    e.srv.reset_requests();

    let plan = drain::dry_run(&e.clients, &target(), &config()).await.expect("dry run");
    let text = plan.to_string();

    for line in [
        "dry run: drain of node k8s-node1 (nothing was changed)",
        "would cordon the node",
        "would evict default/web-0",
        "would evict default/web-1 (blocked by PodDisruptionBudget web until replacements are healthy",
        "would evict default/web-2 (blocked by PodDisruptionBudget web",
        "would evict default/anubis-0 (PodDisruptionBudget anubis allows no disruption even at full health; would be deleted directly",
        "would delete default/backup-xyz (finished)",
        "would skip default/calico-abc (managed by DaemonSet calico)",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    for r in e.srv.requests() {
        assert!(matches!(r.verb.as_str(), "get" | "list"), "dry run wrote: {r:?}");
    }
    assert!(!unschedulable(&e.node(NODE)));
    assert_eq!(e.pods_on(NODE).len(), 6);
}

#[tokio::test]
async fn own_job_pod_is_never_evicted() {
    let e = env().await;
    // The chain's Job pod, created the way the chain creates it (the Job controller makes the pod).
    let mut job_obj = job(TOOL_NS, "upgrade-worker-k8s-node2", "k8s-upgrade-chain:test");
    job_obj["spec"]["template"]["spec"]["nodeName"] = NODE.into();
    job_obj["spec"]["template"]["metadata"] = serde_json::json!({"labels": {"app": "k8s-upgrade-chain"}});
    let jobs: Api<Job> = Api::namespaced(e.clients.api.clone(), TOOL_NS);
    jobs.create(&PostParams::default(), &serde_json::from_value(job_obj).unwrap()).await.unwrap();
    let by_label = e.srv.job_pods(TOOL_NS, "upgrade-worker-k8s-node2");
    assert_eq!(by_label.len(), 1);
    // A pod that is us only by name (POD_NAME/POD_NAMESPACE), without the label.
    e.srv.insert(pod("me").ns(TOOL_NS).on(NODE).owned_by_job("me"));
    e.replicaset_on("web", 1, NODE);
    let t = DrainTarget { self_pod: Some(PodRef::new(TOOL_NS, "me")), ..target() };

    let report = drain::drain(&e.clients, &t, &config()).await.expect("drain succeeds");

    assert_eq!(report.summary.evicted, 1);
    let mut left = e.pods_on(NODE);
    left.sort();
    assert_eq!(left, [format!("{TOOL_NS}/me"), format!("{TOOL_NS}/{}", by_label[0])]);
    assert_eq!(e.requests("create", &format!("/namespaces/{TOOL_NS}/pods")), 0, "never evicted");
    assert!(report.to_string().contains("the upgrade chain's own pod"));
}

/// Evicts `name` (held by a finalizer so the stored pod stays) and returns the
/// `deletionGracePeriodSeconds` the apiserver recorded.
async fn recorded_grace(e: &Env, name: &str, cfg: &DrainConfig) -> Option<i64> {
    let cfg = DrainConfig { timeout: Duration::from_secs(2), ..cfg.clone() };
    let err = drain::drain(&e.clients, &target(), &cfg).await.expect_err("held by its finalizer");
    assert!(matches!(err, DrainError::Timeout { .. }), "{err:?}");
    e.srv.get::<Pod>(Some("default"), name).expect("still there").metadata.deletion_grace_period_seconds
}

#[tokio::test]
async fn pods_keep_their_own_grace_period_by_default() {
    let e = env().await;
    e.srv.insert(pod("own").on(NODE).owned_by_replicaset("own").grace(77).finalizer("example.com/hold"));
    assert_eq!(recorded_grace(&e, "own", &config()).await, Some(77));
}

#[tokio::test]
async fn grace_period_override_reaches_the_apiserver() {
    // The typed Eviction carries deleteOptions; kube's EvictParams would send `delete_options`,
    // which the apiserver drops (rust-ecosystem.md §0.3).
    let e = env().await;
    e.srv.insert(
        pod("slow").on(NODE).owned_by_replicaset("slow").grace(100_000).finalizer("example.com/hold"),
    );
    let cfg = DrainConfig { grace_period_override: Some(Duration::from_secs(5)), ..config() };
    assert_eq!(recorded_grace(&e, "slow", &cfg).await, Some(5));
}

#[tokio::test]
async fn grace_period_override_applies_to_fallback_deletes() {
    let e = env().await;
    e.srv.insert(replicaset("anubis").replicas(1).labels(&[("app", "anubis")]));
    e.srv.insert(
        pod("anubis-0")
            .on(NODE)
            .owned_by_replicaset("anubis")
            .label("app", "anubis")
            .grace(100_000)
            .finalizer("example.com/hold"),
    );
    e.srv.insert(pdb("anubis").min_available(1).selector(&[("app", "anubis")]));
    let cfg = DrainConfig { grace_period_override: Some(Duration::from_secs(5)), ..config() };
    assert_eq!(recorded_grace(&e, "anubis-0", &cfg).await, Some(5));
    assert_eq!(e.requests("delete", "/pods/anubis-0"), 1, "went through the fallback");
}

#[tokio::test]
async fn transient_eviction_errors_are_retried_other_errors_name_the_pod() {
    let e = env().await;
    e.replicaset_on("web", 1, NODE);
    e.srv.inject(Fault::status(500).path_contains("/eviction").times(2));
    let report = drain::drain(&e.clients, &target(), &config()).await.expect("retried past two 500s");
    assert_eq!(report.summary.evicted, 1);
    assert_eq!(e.requests("create", "/eviction"), 3);

    e.replicaset_on("api", 1, NODE);
    e.srv.inject(Fault::status(403).path_contains("/eviction"));
    let err = drain::drain(&e.clients, &target(), &config()).await.expect_err("forbidden");
    assert!(matches!(err, DrainError::Evict { .. }), "{err:?}");
    assert_eq!(err.to_string(), "failed to evict pod default/api-0 on node k8s-node1");
    assert!(unschedulable(&e.node(NODE)));
}

#[tokio::test]
async fn statefulset_pod_replaced_under_the_same_name_counts_as_gone() {
    let e = env().await;
    e.srv.insert(statefulset("db").replicas(1).labels(&[("app", "db")]));
    e.srv.insert(pod("db-0").on(NODE).owned_by_statefulset("db").label("app", "db"));
    let before = e.srv.get::<Pod>(Some("default"), "db-0").unwrap().metadata.uid;

    let report = drain::drain(&e.clients, &target(), &config()).await.expect("drain succeeds");

    assert_eq!(report.summary.evicted, 1);
    assert!(e.pods_on(NODE).is_empty());
    // The replacement may still be on its way; if it is there, it is a different pod.
    if let Some(after) = e.srv.get::<Pod>(Some("default"), "db-0") {
        assert_ne!(after.metadata.uid, before);
    }
}

#[tokio::test]
async fn pdb_match_expressions_keep_the_fallback_off_pods_they_do_not_select() {
    let e = env().await;
    // "db" selects team=x AND tier in (db): deadlocked, but it does not cover web-0.
    e.srv.insert(pdb("db").min_available(1).selector_object(serde_json::json!({
        "matchLabels": {"team": "x"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["db"]}]
    })));
    // "web" covers web-0 and is recovering: its other replica is not Ready yet.
    e.srv.insert(replicaset("web").replicas(2).labels(&[("app", "web")]));
    let web_labels = [("app", "web"), ("team", "x"), ("tier", "web")];
    e.srv.insert(pod("web-0").on(NODE).owned_by_replicaset("web").labels(&web_labels));
    e.srv.insert(pod("web-1").on("k8s-node2").owned_by_replicaset("web").labels(&web_labels).not_ready());
    e.srv.insert(pdb("web").min_available(1).selector(&[("app", "web")]));
    let cfg = DrainConfig { timeout: Duration::from_secs(3), ..config() };

    let err = drain::drain(&e.clients, &target(), &cfg).await.expect_err("web-0 must wait, not be deleted");

    let DrainError::Timeout { remaining, summary, .. } = &err else { panic!("{err:?}") };
    assert_eq!(summary.fallback_deleted, 0, "the seed's matchLabels-only reading would have deleted web-0");
    assert!(
        matches!(&remaining[0].why, Remaining::Blocked { pdb: Some(p), .. } if p == "web"),
        "{remaining:?}"
    );
    assert_eq!(e.requests("delete", "/pods/web-0"), 0);
}

#[tokio::test]
async fn subcommand_functions_print_reports() {
    let e = env().await;
    e.replicaset_on("web", 1, NODE);
    let plan = drain::drain_command(&e.clients, NODE, TOOL_NS, &config(), true).await.expect("dry run");
    assert!(plan.contains("would evict default/web-0"), "{plan}");
    assert!(!unschedulable(&e.node(NODE)));

    let done = drain::drain_command(&e.clients, NODE, TOOL_NS, &config(), false).await.expect("drain");
    assert!(done.starts_with("node k8s-node1: drained (cordoned by us now)"), "{done}");
    assert!(done.contains("evicted 1,"), "{done}");

    let undo = drain::uncordon_command(&e.clients, NODE).await.expect("uncordon");
    assert_eq!(undo, "node k8s-node1: uncordoned (the upgrade chain had cordoned it)");
    let again = drain::uncordon_command(&e.clients, NODE).await.expect("uncordon");
    assert_eq!(again, "node k8s-node1: not cordoned; nothing to do");

    let err = drain::drain_command(&e.clients, "no-such-node", TOOL_NS, &config(), false).await.unwrap_err();
    assert!(format!("{err:#}").contains("failed to read node no-such-node before cordoning it"), "{err:#}");
}

#[tokio::test]
async fn pod_bound_to_the_node_during_the_drain_is_drained_too() {
    let e = env().await;
    // A finalizer keeps the drain running until the test releases it.
    e.srv.insert(pod("held").on(NODE).owned_by_replicaset("held").finalizer("example.com/hold"));
    let handle = {
        let clients = e.clients.clone();
        tokio::spawn(async move { drain::drain(&clients, &target(), &config()).await })
    };
    for _ in 0..100 {
        if e.requests("create", "/pods/held/eviction") >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(e.requests("create", "/pods/held/eviction"), 1, "the drain never evicted the first pod");
    // A pod that tolerates the cordon lands on the node after the drain listed its pods.
    e.srv.insert(replicaset("late").replicas(1).labels(&[("app", "late")]));
    e.srv.insert(pod("late-0").on(NODE).owned_by_replicaset("late").label("app", "late"));
    for _ in 0..100 {
        if e.requests("create", "/pods/late-0/eviction") >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    e.srv.modify::<Pod>(Some("default"), "held", |p| p["metadata"]["finalizers"] = serde_json::json!([]));

    let report =
        tokio::time::timeout(Duration::from_secs(30), handle).await.unwrap().unwrap().expect("drained");
    assert_eq!(report.summary.evicted, 2);
    assert_eq!(e.requests("create", "/pods/late-0/eviction"), 1);
    assert!(e.pods_on(NODE).is_empty());
}

#[tokio::test]
async fn cordon_retries_when_the_node_changed_under_it() {
    let e = env().await;
    // One resourceVersion conflict, as when the kubelet updates the node between our GET and PATCH.
    e.srv.inject(Fault::status(409).method("PATCH").on("nodes", NODE).times(1));
    assert_eq!(drain::cordon(&e.clients.api, NODE).await.unwrap(), Cordon::CordonedByUs);
    assert_eq!(e.requests("patch", "/nodes/"), 2);
    assert!(unschedulable(&e.node(NODE)));
}

#[tokio::test]
async fn cordon_patch_is_guarded_by_the_resource_version() {
    let e = env().await;
    let nodes: Api<Node> = Api::all(e.clients.api.clone());
    let stale = nodes.get(NODE).await.unwrap().metadata.resource_version.unwrap();
    e.srv.set_kubelet_version(NODE, "v1.33.6"); // any write bumps the resourceVersion
    let now = nodes.get(NODE).await.unwrap().metadata.resource_version.unwrap();
    assert_ne!(now, stale);
    let patch = serde_json::json!({"metadata": {"resourceVersion": stale}, "spec": {"unschedulable": true}});
    let err = nodes
        .patch(NODE, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
        .await
        .expect_err("a stale resourceVersion in a merge patch is a conflict");
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 409), "{err:?}");
}
