//! The drain engine against the in-process test apiserver (`sim::apiserver`), through the real
//! `kube::Client`s the tool builds (`Clients::from_config`: the eviction client has retry off).
//!
//! Every test starts its own server on 127.0.0.1:0 with grace periods scaled by 0.01 (a 30 s
//! grace takes 300 ms), so tests run in parallel without sharing anything.
//!
//! Two checks run in every test (issue 12):
//! - a PDB watcher: when the test ends, no PodDisruptionBudget may have lost healthy pods below
//!   its `desiredHealthy` through a request of the drain ([`sim::apiserver::BudgetBreach`], counted
//!   from the pods, not from statuses that can understate), except the documented deadlock
//!   fallback (a direct DELETE under a PDB that can never allow a disruption);
//! - the dry run's prediction: [`Env::drain`] runs `drain --dry-run` first, then the drain,
//!   and checks every pod went the way the dry run said ([`assert_predicted`]). The tests that
//!   change the cluster or inject faults mid-drain compare at the point they control.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::PostParams;
use sim::apiserver::fixtures::*;
use sim::apiserver::{Fault, TestApiServer};

use k8s_upgrade_chain::drain::{
    self, CORDONED_BY, Cordon, Decision, DrainConfig, DrainError, DrainOutcome, DrainReport, DrainTarget,
    DryRunReport, FallbackKind, PodRef, Remaining, Removal, Uncordon,
};
use k8s_upgrade_chain::k8s::Clients;

const NODE: &str = "k8s-node1";
const TOOL_NS: &str = "upgrade";

struct Env {
    srv: TestApiServer,
    clients: Clients,
}

impl Drop for Env {
    /// The PDB watcher: no budget broken by the drain, but for the deadlock fallback.
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let broken: Vec<String> = self
            .srv
            .budget_breaches()
            .into_iter()
            .filter(|b| !(b.via == "delete" && b.deadlocked()))
            .map(|b| b.to_string())
            .collect();
        assert!(broken.is_empty(), "the drain broke PodDisruptionBudgets:\n{}", broken.join("\n"));
    }
}

/// Three Ready workers; `k8s-node1` is the one drained, replacements land on the others.
async fn env() -> Env {
    env_on(TestApiServer::builder()).await
}

async fn env_on(builder: sim::apiserver::Builder) -> Env {
    let srv = builder.time_scale(0.01).start().await;
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

/// How a pod the dry run listed fared in the real drain.
#[derive(Debug)]
enum Fate<'a> {
    Gone(&'a Removal),
    Left(&'a Remaining),
}

/// The dry run told the truth (issue 12 item 5): every pod it listed went the way it said.
/// `Evict` and `Wait` end evicted (which of several pods under one budget passes first is the
/// apiserver's call) or, for `Wait`, still blocked at the deadline; `Delete` ends deleted by
/// that very fallback if its delay fits in the deadline, else still blocked; a namespace being
/// deleted is waited for; and no fallback deleted a pod the dry run did not say it would.
fn assert_predicted(dry: &DryRunReport, result: &Result<DrainReport, DrainError>, cfg: &DrainConfig) {
    let (removed, remaining) = match result {
        Ok(r) => match &r.outcome {
            DrainOutcome::Drained => (r.removed.clone(), Vec::new()),
            // The kill switch is no state of the pods: nothing to compare.
            DrainOutcome::Halted { .. } => return,
        },
        Err(DrainError::Timeout { removed, remaining, .. }) => (removed.clone(), remaining.clone()),
        Err(DrainError::Refused { pods, .. }) => {
            assert_eq!(pods, &dry.refuse, "the dry run names the pods the drain refuses on");
            return;
        }
        Err(_) => return,
    };
    let fate = |p: &PodRef| {
        removed
            .iter()
            .find(|(q, _)| q.same_name(p))
            .map(|(_, r)| Fate::Gone(r))
            .or_else(|| remaining.iter().find(|r| r.pod.same_name(p)).map(|r| Fate::Left(&r.why)))
            .unwrap_or_else(|| panic!("{p}: in the dry run, but the drain neither removed nor kept it"))
    };
    for e in &dry.evict {
        let f = fate(&e.pod);
        let ok = match (&e.decision, &f) {
            (_, Fate::Gone(Removal::Vanished)) => true,
            (Decision::Evict(_) | Decision::Wait(_), Fate::Gone(Removal::Evicted { .. })) => true,
            (Decision::Evict(_), Fate::Left(Remaining::Terminating { .. })) => true,
            (
                Decision::Wait(_),
                Fate::Left(
                    Remaining::Blocked { .. }
                    | Remaining::MultiplePdbs { .. }
                    | Remaining::Terminating { .. },
                ),
            ) => true,
            (Decision::Delete { fallback, after }, Fate::Gone(Removal::Deleted(kind))) => {
                *kind == fallback.kind && *after <= cfg.timeout
            }
            (Decision::Delete { after, .. }, Fate::Left(Remaining::Terminating { .. })) => {
                *after <= cfg.timeout
            }
            (
                Decision::Delete { after, .. },
                Fate::Left(Remaining::Blocked { .. } | Remaining::MultiplePdbs { .. }),
            ) => *after > cfg.timeout,
            (Decision::NamespaceTerminating, Fate::Gone(Removal::NamespaceTerminating)) => true,
            (
                Decision::NamespaceTerminating,
                Fate::Left(Remaining::NamespaceTerminating { .. } | Remaining::Terminating { .. }),
            ) => true,
            _ => false,
        };
        assert!(ok, "{}: the dry run said {:?}; the drain: {f:?}", e.pod, e.decision);
    }
    for p in &dry.delete {
        let f = fate(p);
        assert!(matches!(f, Fate::Gone(Removal::DeletedFinished | Removal::Vanished)), "{p}: {f:?}");
    }
    for (p, _) in &dry.terminating {
        let f = fate(p);
        assert!(
            matches!(
                f,
                Fate::Gone(Removal::WasTerminating | Removal::Vanished)
                    | Fate::Left(Remaining::Terminating { .. })
            ),
            "{p}: {f:?}"
        );
    }
    for (p, r) in &removed {
        if let (Removal::Deleted(kind), Some(e)) = (r, dry.evict.iter().find(|e| e.pod.same_name(p))) {
            assert!(
                matches!(&e.decision, Decision::Delete { fallback, .. } if fallback.kind == *kind),
                "{p} was deleted ({kind:?}) but the dry run said {:?}",
                e.decision
            );
        }
    }
    if let Ok(r) = result {
        let mut a = r.skipped.clone();
        let mut b = dry.skip.clone();
        a.sort_by(|x, y| x.0.cmp(&y.0));
        b.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(a, b, "the dry run skips what the drain skips");
    }
}

impl Env {
    /// `drain --dry-run`, then the drain, and the check that the first predicted the second.
    async fn drain(&self, cfg: &DrainConfig) -> Result<DrainReport, DrainError> {
        self.drain_target(&target(), cfg).await
    }

    async fn drain_target(&self, t: &DrainTarget, cfg: &DrainConfig) -> Result<DrainReport, DrainError> {
        let dry = drain::dry_run(&self.clients, t, cfg).await.expect("dry run");
        let result = drain::drain(&self.clients, t, cfg).await;
        assert_predicted(&dry, &result, cfg);
        result
    }

    /// Eviction requests for `pod` answered with `code`.
    fn evictions(&self, pod: &str, code: u16) -> usize {
        let path = format!("/pods/{pod}/eviction");
        self.srv.requests().iter().filter(|r| r.path.contains(&path) && r.status == code).count()
    }

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

    let report = e.drain(&config()).await.expect("drain succeeds");

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
    e.drain(&config()).await.expect("drain succeeds");
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
    let err = e.drain(&strict).await.expect_err("refused without force");
    let DrainError::Refused { pods, .. } = &err else { panic!("{err:?}") };
    assert_eq!(pods[0].0.name, "orphan-ds");
    assert!(err.to_string().contains("default/orphan-ds"), "{err}");
    assert_eq!(e.requests("create", "/eviction"), 0, "a refusal evicts nothing");
    assert!(unschedulable(&e.node(NODE)), "node stays cordoned, as with kubectl");

    let report = e.drain(&config()).await.expect("forced drain");
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
    let err = e.drain(&strict).await.expect_err("refused");
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

    let report = e.drain(&config()).await.expect("drain succeeds");

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

    let report = e.drain(&config()).await.expect("drain succeeds");

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
    let err = e.drain(&cfg).await.expect_err("times out");
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
    for (i, n) in [NODE, "k8s-node2", "k8s-node3"].iter().enumerate() {
        e.srv.insert(
            pod(&format!("web-{i}"))
                .on(n)
                .owned_by_replicaset("web")
                .labels(&[("app", "web"), ("tier", "front")]),
        );
    }
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
    let err = e.drain(&patient).await.expect_err("times out");
    let DrainError::Timeout { remaining, .. } = &err else { panic!("{err:?}") };
    assert_eq!(
        remaining[0].why,
        Remaining::MultiplePdbs { pdbs: vec!["by-app".into(), "by-tier".into()], why: None }
    );
    assert!(err.to_string().contains("by-app, by-tier"), "{err}");

    // Default budget (0s): each PDB keeps 2 healthy of 2 desired without web-0, so it goes.
    let report = e.drain(&config()).await.expect("drain succeeds");
    assert_eq!(report.summary.fallback_deleted, 1);
    assert_eq!(report.fallbacks[0].pdbs, ["by-app", "by-tier"]);
    assert_eq!(report.fallbacks[0].kind, FallbackKind::SeveralPdbs);
    assert!(e.pods_on(NODE).is_empty());
}

#[tokio::test]
async fn pod_under_two_pdbs_waits_while_deleting_it_would_break_a_budget() {
    // Seen on a real cluster: the fallback deleted a pod under two PDBs at once; one of them
    // (minAvailable 2, exactly 2 healthy) was left with 1 healthy of 2 desired.
    let e = env().await;
    e.srv.insert(replicaset("web").replicas(3).labels(&[("app", "web")]));
    let labels = [("app", "web"), ("tier", "front")];
    e.srv.insert(pod("web-0").on(NODE).owned_by_replicaset("web").labels(&labels));
    e.srv.insert(pod("web-1").on("k8s-node2").owned_by_replicaset("web").labels(&labels));
    e.srv.insert(pod("web-2").on("k8s-node3").owned_by_replicaset("web").labels(&labels).not_ready());
    e.srv.insert(pdb("by-app").min_available(2).selector(&[("app", "web")]));
    e.srv.insert(pdb("by-tier").max_unavailable(1).selector(&[("tier", "front")]));

    let dry = drain::dry_run(&e.clients, &target(), &config()).await.expect("dry run");
    let Decision::Wait(hold) = &dry.evict[0].decision else { panic!("{:?}", dry.evict[0]) };
    assert!(
        hold.to_string().ends_with(
            "deleting it would break by-app (2 healthy, 2 desired), by-tier (2 healthy, 2 desired)"
        ),
        "{hold}"
    );

    let handle = {
        let clients = e.clients.clone();
        tokio::spawn(async move { drain::drain(&clients, &target(), &config()).await })
    };
    // As predicted, the drain waits: refused again and again, never deleted.
    for _ in 0..200 {
        if e.evictions("web-0", 500) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(e.evictions("web-0", 500) >= 2, "the drain never retried web-0");
    assert_eq!(e.requests("delete", "/pods/web-0"), 0, "web-0 deleted while a budget needed it");
    // The third replica becomes Ready: each budget keeps 2 of 2 without web-0.
    e.srv.set_pod_ready("default", "web-2", true);

    let report =
        tokio::time::timeout(Duration::from_secs(60), handle).await.unwrap().unwrap().expect("drained");
    assert_eq!(report.fallbacks.len(), 1);
    assert_eq!(report.fallbacks[0].kind, FallbackKind::SeveralPdbs);
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

    let report = e.drain(&config()).await.expect("drain succeeds");

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

    let err = e.drain(&cfg).await.expect_err("deadline");

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

    let report = e.drain(&config()).await.expect("drain succeeds");
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
    let report = e.drain(&config()).await.expect("halt is a value");
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
    let err = e.drain(&config()).await.expect_err("fails closed");
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
        "would evict default/web-1 (blocked by PodDisruptionBudget web (2 healthy, 2 desired, 3 expected) until replacement pods are healthy; retried)",
        "would evict default/web-2 (blocked by PodDisruptionBudget web",
        "would evict default/anubis-0 (PodDisruptionBudget anubis allows no disruption even at full health (1 expected, 1 desired); would be deleted directly after 0s)",
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

    let report = e.drain_target(&t, &config()).await.expect("drain succeeds");

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
    let err = e.drain(&cfg).await.expect_err("held by its finalizer");
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
    let report = e.drain(&config()).await.expect("retried past two 500s");
    assert_eq!(report.summary.evicted, 1);
    assert_eq!(e.requests("create", "/eviction"), 3);

    e.replicaset_on("api", 1, NODE);
    e.srv.inject(Fault::status(403).path_contains("/eviction"));
    let err = e.drain(&config()).await.expect_err("forbidden");
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

    let report = e.drain(&config()).await.expect("drain succeeds");

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

    let err = e.drain(&cfg).await.expect_err("web-0 must wait, not be deleted");

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

// ---------------------------------------------------------------------------------------
// Issue 12: what a real apiserver answered, reproduced by the test apiserver
// ---------------------------------------------------------------------------------------

/// Whether `ns/name` left the node the way `how` says.
fn removed_as(removed: &[(PodRef, Removal)], ns: &str, name: &str, how: &Removal) -> bool {
    removed.iter().any(|(p, r)| p.same_name(&PodRef::new(ns, name)) && r == how)
}

/// A Deployment (through its ReplicaSet) and a StatefulSet, 3 crash-looping replicas each on
/// the node, under `maxUnavailable: 25%` (real-api-answers.md "crash": expectedPods 3,
/// currentHealthy 0, desiredHealthy 2, disruptionsAllowed 0; every eviction 429).
fn crash_looping_workloads(e: &Env, always_allow: bool) {
    e.srv.insert(deployment("crash").replicas(3).labels(&[("app", "crash")]).crash_looping());
    e.srv.insert(
        replicaset("crash-7c9f")
            .replicas(3)
            .labels(&[("app", "crash")])
            .crash_looping()
            .owned_by_deployment("crash"),
    );
    e.srv.insert(statefulset("db").replicas(3).labels(&[("app", "db")]).crash_looping());
    for i in 0..3 {
        e.srv.insert(
            pod(&format!("crash-7c9f-{i}"))
                .on(NODE)
                .owned_by_replicaset("crash-7c9f")
                .label("app", "crash")
                .crash_looping(),
        );
        e.srv.insert(
            pod(&format!("db-{i}")).on(NODE).owned_by_statefulset("db").label("app", "db").crash_looping(),
        );
    }
    for app in ["crash", "db"] {
        let p = pdb(app).max_unavailable_str("25%").selector(&[("app", app)]);
        e.srv.insert(if always_allow { p.always_allow() } else { p });
    }
    let st = e
        .srv
        .get::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(None, "crash")
        .unwrap()
        .status
        .unwrap();
    assert_eq!(
        (st.expected_pods, st.current_healthy, st.desired_healthy, st.disruptions_allowed),
        (3, 0, 2, 0),
        "the status a real disruption controller wrote"
    );
}

#[tokio::test]
async fn crash_looping_pods_under_a_budget_that_cannot_recover_are_deleted_not_waited_for() {
    let e = env().await;
    crash_looping_workloads(&e, false);

    let report = e.drain(&config()).await.expect("drained without waiting for replacements");

    let s = &report.summary;
    assert_eq!((s.unhealthy_deleted, s.evicted, s.fallback_deleted), (6, 0, 0), "{s:?}");
    assert_eq!(e.requests("create", "/eviction"), 6, "each refused once (429), then deleted");
    assert_eq!(
        e.srv.requests().iter().filter(|r| r.path.contains("/eviction") && r.status == 429).count(),
        6
    );
    assert_eq!(report.fallbacks.len(), 6);
    assert!(report.fallbacks.iter().all(|f| f.kind == FallbackKind::Unhealthy));
    let text = report.to_string();
    assert!(
        text.contains("deleted as not Ready: default/crash-7c9f-0 (not Ready, and PodDisruptionBudget crash cannot recover (0 healthy, 2 desired)"),
        "{text}"
    );
    assert!(text.contains("deleted as not Ready 6,"), "{text}");
    assert!(e.pods_on(NODE).is_empty());
}

#[tokio::test]
async fn with_the_unhealthy_fallback_off_they_wait_and_the_report_says_they_are_not_ready() {
    let e = env().await;
    crash_looping_workloads(&e, false);
    let cfg = DrainConfig { unhealthy_fallback: false, timeout: Duration::from_secs(3), ..config() };

    let err = e.drain(&cfg).await.expect_err("times out");

    let DrainError::Timeout { remaining, summary, .. } = &err else { panic!("{err:?}") };
    assert_eq!((summary.unhealthy_deleted, remaining.len()), (0, 6));
    assert_eq!(e.srv.requests().iter().filter(|r| r.verb == "delete").count(), 0);
    let msg = err.to_string();
    assert!(msg.contains("default/crash-7c9f-0: eviction blocked by PodDisruptionBudget crash for"), "{msg}");
    assert!(
        msg.contains("(The disruption budget crash needs 2 healthy pods and has 0 currently); not Ready"),
        "{msg}"
    );
    assert!(msg.contains("drain.unhealthy_fallback is off"), "{msg}");
}

#[tokio::test]
async fn always_allow_lets_unhealthy_pods_through_the_eviction_api() {
    let e = env().await;
    crash_looping_workloads(&e, true);

    let report = e.drain(&config()).await.expect("drained");

    let s = &report.summary;
    assert_eq!((s.evicted, s.unhealthy_deleted, s.eviction_refusals), (6, 0, 0), "{s:?}");
    assert_eq!(e.srv.requests().iter().filter(|r| r.verb == "delete").count(), 0, "the eviction API did it");
    assert!(e.pods_on(NODE).is_empty());
}

#[tokio::test]
async fn pods_of_a_namespace_being_deleted_are_waited_for_never_fatal() {
    // The namespace controller reaches the pods a moment after the namespace is marked: in
    // between, every eviction in it is 403 NamespaceTerminating (real-api-answers.md case 7).
    let e = env_on(TestApiServer::builder().namespace_cleanup_delay(Duration::from_millis(1500))).await;
    e.srv.insert(namespace("b"));
    e.srv.insert(replicaset("web").ns("b").replicas(2).labels(&[("app", "web")]));
    for i in 0..2 {
        e.srv
            .insert(pod(&format!("web-{i}")).ns("b").on(NODE).owned_by_replicaset("web").label("app", "web"));
    }
    e.replicaset_on("api", 1, NODE);
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(e.clients.api.clone());
    nss.delete("b", &kube::api::DeleteParams::default()).await.expect("namespace b deleted");

    let dry = drain::dry_run(&e.clients, &target(), &config()).await.expect("dry run").to_string();
    assert!(dry.contains("would wait for b/web-0 (its namespace is being deleted"), "{dry}");

    let report = e.drain(&config()).await.expect("drained: waited for the namespace controller");

    assert_eq!((report.summary.namespace_terminating, report.summary.evicted), (2, 1));
    assert!(
        e.srv
            .requests()
            .iter()
            .any(|r| r.path.contains("/namespaces/b/pods/web-0/eviction") && r.status == 403)
    );
    assert!(removed_as(&report.removed, "b", "web-0", &Removal::NamespaceTerminating), "{report:?}");
    assert!(report.to_string().contains("waited for: b/web-1 (its namespace was being deleted)"), "{report}");
    assert!(e.pods_on(NODE).is_empty());
}

#[tokio::test]
async fn the_dry_run_tells_the_truth_about_a_node_holding_every_case() {
    let e = env_on(TestApiServer::builder().namespace_cleanup_delay(Duration::from_millis(1500))).await;
    // Not Ready under a budget that cannot recover, and not Ready under AlwaysAllow.
    e.srv.insert(replicaset("crash").replicas(1).labels(&[("app", "crash")]).crash_looping());
    e.srv.insert(pod("crash-0").on(NODE).owned_by_replicaset("crash").label("app", "crash").crash_looping());
    e.srv.insert(pdb("crash").min_available(1).selector(&[("app", "crash")]));
    e.srv.insert(replicaset("calm").replicas(3).labels(&[("app", "calm")]).crash_looping());
    e.srv.insert(pod("calm-0").on(NODE).owned_by_replicaset("calm").label("app", "calm").crash_looping());
    e.srv.insert(pdb("calm").max_unavailable_str("25%").selector(&[("app", "calm")]).always_allow());
    // A pod under two PDBs with budget to spare, a deadlock, a pod held by a finalizer.
    e.srv.insert(replicaset("two").replicas(3).labels(&[("app", "two")]));
    for (i, n) in [NODE, "k8s-node2", "k8s-node3"].iter().enumerate() {
        e.srv.insert(pod(&format!("two-{i}")).on(n).owned_by_replicaset("two").label("app", "two"));
    }
    e.srv.insert(pdb("two-a").min_available(1).selector(&[("app", "two")]));
    e.srv.insert(pdb("two-b").max_unavailable(1).selector(&[("app", "two")]));
    e.replicaset_on("anubis", 1, NODE);
    e.srv.insert(pdb("anubis").min_available(1).selector(&[("app", "anubis")]));
    e.srv.insert(pod("held").on(NODE).owned_by_replicaset("held").finalizer("example.com/hold").grace(1));
    assert!(e.srv.delete::<Pod>(Some("default"), "held"));
    // A namespace being deleted.
    e.srv.insert(namespace("b"));
    e.srv.insert(replicaset("web").ns("b").replicas(1).labels(&[("app", "web")]));
    e.srv.insert(pod("web-0").ns("b").on(NODE).owned_by_replicaset("web").label("app", "web"));
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(e.clients.api.clone());
    nss.delete("b", &kube::api::DeleteParams::default()).await.expect("namespace b deleted");

    let text = drain::dry_run(&e.clients, &target(), &config()).await.expect("dry run").to_string();
    for line in [
        "would delete default/crash-0 directly after its first refused eviction (not Ready, and PodDisruptionBudget crash cannot recover (0 healthy, 1 desired)",
        "would evict default/calm-0 (not Ready; PodDisruptionBudget calm has unhealthyPodEvictionPolicy AlwaysAllow)",
        "would evict default/two-0 (covered by 2 PodDisruptionBudgets (two-a, two-b), which the eviction API cannot evict; each stays within its budget without it; would be deleted directly after 0s)",
        "would evict default/anubis-0 (PodDisruptionBudget anubis allows no disruption even at full health (1 expected, 1 desired); would be deleted directly after 0s)",
        "would wait for default/held (already terminating, held by finalizers example.com/hold)",
        "would wait for b/web-0 (its namespace is being deleted",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }

    // The real drain, compared pod by pod (Env::drain); the held pod keeps it from finishing.
    let err = e.drain(&DrainConfig { timeout: Duration::from_secs(5), ..config() }).await.expect_err("held");
    let DrainError::Timeout { remaining, summary, removed, .. } = &err else { panic!("{err:?}") };
    assert_eq!(remaining.len(), 1, "{remaining:?}");
    assert_eq!(remaining[0].why, Remaining::Terminating { finalizers: vec!["example.com/hold".into()] });
    assert_eq!(
        (summary.unhealthy_deleted, summary.fallback_deleted, summary.namespace_terminating),
        (1, 2, 1)
    );
    assert!(removed_as(removed, "default", "calm-0", &Removal::Evicted { refusals: 0 }), "{removed:?}");
}

#[tokio::test]
async fn a_pod_that_changed_before_its_deletion_as_not_ready_goes_back_to_the_eviction_api() {
    let e = env().await;
    e.srv.insert(replicaset("crash").replicas(1).labels(&[("app", "crash")]).crash_looping());
    e.srv.insert(pod("crash-0").on(NODE).owned_by_replicaset("crash").label("app", "crash").crash_looping());
    e.srv.insert(pdb("crash").min_available(1).selector(&[("app", "crash")]));
    // The delete is pinned to the resourceVersion the pod was judged on; the first one finds
    // it changed (409), as when the kubelet reports a restart in between.
    e.srv.inject(Fault::status(409).method("DELETE").path_contains("/pods/crash-0").times(1));

    let report = e.drain(&config()).await.expect("drained");

    assert_eq!(e.requests("delete", "/pods/crash-0"), 2);
    assert!(e.evictions("crash-0", 429) >= 2, "judged again through the eviction API");
    assert_eq!(report.summary.unhealthy_deleted, 1);
    assert_eq!(report.fallbacks.len(), 1, "named once: {:?}", report.fallbacks);
}
