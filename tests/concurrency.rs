//! Worker concurrency (issue 15 items 1 and 2) end to end on the test apiserver, with real sshd
//! nodes, a real Pushgateway and Prometheus: the chain's worker Jobs run as soon as they
//! appear, beside each other, as the cluster would run them.
//!
//! Watchers check every step, not only the end: a watch on the tool's namespace sees every
//! version of the claim record (never more than the limit in flight, never two nodes of a
//! zone), a watch on the nodes sees every cordon (never more cordoned workers than the limit,
//! never two of a zone), and the apiserver's budget guard records every pod DELETE or eviction
//! that took a PodDisruptionBudget below its desired healthy count (the PDB watcher of
//! tests/drain.rs: only the documented deadlock fallback may, one node at a time).
//!
//! Drains running at once race only while a pod one of them deleted is not replaced yet. The
//! tests do not leave that window to timing: the replacements are held not Ready by the
//! apiserver's simulated kubelet until the other drains have been refused meanwhile
//! ([`hold_replacements`]), so a rule that let a second node's pod go would break a budget in
//! every run.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use chain_core::{
    plan::Kind,
    settings::Settings,
    waves::{ClaimKeys, Claims, Concurrency, Then},
};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_upgrade_chain::{
    chain::{
        Ended,
        claims::{self, Cause},
        detect::{Action, Detection},
    },
    drain::{self, DrainConfig, DrainOutcome, DrainTarget, FallbackKind, Removal},
    k8s::Clients,
    slack::Slack,
};
use kube::{
    Api,
    runtime::{WatchStreamExt as _, watcher},
};
use serde_json::json;
use sim::apiserver::{Fault, TestApiServer, fixtures as tf};
use support::chain::{Cluster, Layout, NS};

const ZONE: &str = "topology.kubernetes.io/zone";

fn layout(net: u8, workers: &'static [&'static str]) -> Layout<'static> {
    Layout { control_planes: &["k8s-master"], workers, running: "1.34.1", target: "1.34.2", net }
}

const EIGHT: &[&str] =
    &["k8s-node1", "k8s-node2", "k8s-node3", "k8s-node4", "k8s-node5", "k8s-node6", "k8s-node7", "k8s-node8"];
const SIX: &[&str] = &["k8s-node1", "k8s-node2", "k8s-node3", "k8s-node4", "k8s-node5", "k8s-node6"];

fn with_concurrency(c: &Cluster, n: u32) -> Settings {
    let mut s = c.settings.clone();
    s.workers.concurrency = Concurrency::new(n).unwrap();
    s
}

fn set_zone(c: &Cluster, node: &str, zone: &str) {
    c.srv.modify::<Node>(None, node, |n| n["metadata"]["labels"][ZONE] = json!(zone)).unwrap();
}

fn claims(c: &Cluster) -> Claims {
    let ns: Namespace = c.srv.get(None, NS).unwrap();
    let keys = ClaimKeys::new(&c.settings.annotation_prefix);
    Claims::parse(&keys, &ns.metadata.annotations.unwrap_or_default()).unwrap()
}

/// Writes the claim record as a chain Job would have left it.
fn seed_record(c: &Cluster, rec: &Claims) {
    write_record(&c.srv, &ClaimKeys::new(&c.settings.annotation_prefix), rec);
}

fn write_record(srv: &TestApiServer, keys: &ClaimKeys, rec: &Claims) {
    let mut ann = rec.patch(keys, "")["metadata"]["annotations"].clone();
    ann.as_object_mut().unwrap().retain(|_, v| !v.is_null());
    srv.modify::<Namespace>(None, NS, |ns| ns["metadata"]["annotations"] = ann).unwrap();
}

/// What the watchers saw.
#[derive(Debug, Default)]
struct Seen {
    /// Every rule broken, as it happened.
    violations: Vec<String>,
    /// The most workers in the claim record at once.
    max_claimed: usize,
    /// The most workers cordoned at once.
    max_cordoned: usize,
    /// Versions of the claim record seen.
    records: usize,
}

/// Watches the claim record and the nodes; every version is checked against `limit` and the
/// zones. Stops when the returned handles are dropped (aborted).
fn watch(c: &Cluster, limit: usize) -> (Arc<Mutex<Seen>>, Vec<tokio::task::JoinHandle<()>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let client = c.srv.client();
    let keys = ClaimKeys::new(&c.settings.annotation_prefix);
    let zones: BTreeMap<String, String> = c
        .srv
        .list::<Node>(None)
        .into_iter()
        .filter_map(|n| Some((n.metadata.name.clone()?, n.metadata.labels?.get(ZONE)?.clone())))
        .collect();
    let zone_clash = move |nodes: &[String]| -> Option<String> {
        let mut by_zone: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for n in nodes {
            if let Some(z) = zones.get(n) {
                by_zone.entry(z).or_default().push(n);
            }
        }
        by_zone.into_iter().find(|(_, v)| v.len() > 1).map(|(z, v)| format!("zone {z}: {v:?}"))
    };
    let zc = zone_clash.clone();
    let s1 = seen.clone();
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let ns_task = tokio::spawn(async move {
        let cfg = watcher::Config::default().fields(&format!("metadata.name={NS}"));
        let mut events = watcher(ns_api, cfg).applied_objects().boxed();
        while let Some(Ok(ns)) = events.next().await {
            let Ok(rec) = Claims::parse(&keys, &ns.metadata.annotations.unwrap_or_default()) else {
                continue;
            };
            let nodes = rec.nodes();
            let mut s = s1.lock().unwrap();
            s.records += 1;
            s.max_claimed = s.max_claimed.max(nodes.len());
            if nodes.len() > limit {
                s.violations.push(format!("{} claimed, limit {limit}: {nodes:?}", nodes.len()));
            }
            if let Some(clash) = zc(&nodes) {
                s.violations.push(format!("two claimed in one zone: {clash}"));
            }
        }
    });
    let s2 = seen.clone();
    let node_api: Api<Node> = Api::all(client);
    let node_task = tokio::spawn(async move {
        let mut cordoned: BTreeSet<String> = BTreeSet::new();
        let mut events = watcher(node_api, watcher::Config::default()).applied_objects().boxed();
        while let Some(Ok(n)) = events.next().await {
            let name = n.metadata.name.clone().unwrap_or_default();
            let cp = n
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key("node-role.kubernetes.io/control-plane"));
            if cp {
                continue;
            }
            if n.spec.and_then(|s| s.unschedulable).unwrap_or(false) {
                cordoned.insert(name);
            } else {
                cordoned.remove(&name);
            }
            let now: Vec<String> = cordoned.iter().cloned().collect();
            let mut s = s2.lock().unwrap();
            s.max_cordoned = s.max_cordoned.max(now.len());
            if now.len() > limit {
                s.violations.push(format!("{} workers cordoned, limit {limit}: {now:?}", now.len()));
            }
            if let Some(clash) = zone_clash(&now) {
                s.violations.push(format!("two cordoned in one zone: {clash}"));
            }
        }
    });
    (seen, vec![ns_task, node_task])
}

/// The PDB watcher (as in tests/drain.rs): no budget broken but by the deadlock fallback,
/// and that only as a drain of one node alone may: from the moment a deadlocked PDB first drops
/// below its desired healthy count until it is back, every pod taken from it came from one and
/// the same node (a drain of that node may take all of its own pods, never a second node's
/// while the first one's are not replaced).
fn assert_no_budget_broken(srv: &TestApiServer) {
    let mut broken = Vec::new();
    let mut episode: BTreeMap<String, String> = BTreeMap::new(); // PDB -> node taking its pods
    for b in srv.budget_breaches() {
        // apps/db allows no eviction by construction (minAvailable 3 of 3); the apiserver's
        // count of its expected pods includes a terminating one while it is replaced.
        if !(b.via == "delete" && (b.deadlocked() || b.pdb == "apps/db")) {
            broken.push(b.to_string());
            continue;
        }
        if b.healthy_before >= b.desired {
            episode.insert(b.pdb.clone(), b.node.clone());
        } else if episode.get(&b.pdb) != Some(&b.node) {
            broken.push(format!(
                "{b} on node {}, while pods taken from node {:?} were not replaced yet",
                b.node,
                episode.get(&b.pdb)
            ));
        }
    }
    assert!(broken.is_empty(), "PodDisruptionBudgets broken:\n{}", broken.join("\n"));
}

/// Workloads spread over the workers, so drains running at once share budgets: an
/// `api`-replica ReplicaSet under `maxUnavailable: 1` (none if 0), one pod on each of
/// k8s-node1..`api` (the eviction API enforces it), and a 3-replica one under `minAvailable: 3`, which allows no
/// eviction at all, one pod on each of k8s-node1..3, which the first wave drains together (only
/// the drain's deadlock fallback can take those pods, one node's worth at a time).
fn spread_workload(srv: &TestApiServer, api: i64) {
    srv.insert(tf::replicaset("db").ns("apps").replicas(3).labels(&[("app", "db")]).grace(1).build());
    srv.insert(tf::pdb("db").ns("apps").min_available(3).selector(&[("app", "db")]).build());
    for i in 1..=3 {
        srv.insert(
            tf::pod(&format!("db-{i}"))
                .ns("apps")
                .on(&format!("k8s-node{i}"))
                .owned_by_replicaset("db")
                .labels(&[("app", "db")])
                .grace(1)
                .build(),
        );
    }
    if api == 0 {
        return;
    }
    srv.insert(tf::replicaset("api").ns("apps").replicas(api).labels(&[("app", "api")]).grace(1).build());
    srv.insert(tf::pdb("api").ns("apps").max_unavailable(1).selector(&[("app", "api")]).build());
    for i in 1..=api {
        srv.insert(
            tf::pod(&format!("api-{i}"))
                .ns("apps")
                .on(&format!("k8s-node{i}"))
                .owned_by_replicaset("api")
                .labels(&[("app", "api")])
                .grace(1)
                .build(),
        );
    }
}

/// What the slow kubelet of [`hold_replacements`] did.
#[derive(Debug, Default)]
struct Held {
    /// Each release: the replacement, and the Ready pods of its workload on nodes being
    /// drained that were refused (twice) while it was held.
    released: Vec<(String, Vec<String>)>,
    /// Replacements released at the deadline, before every contested pod was refused twice.
    forced: Vec<String>,
}

impl Held {
    /// The releases of `app`'s replacements during which a drain was refused one of its pods.
    fn contested(&self, app: &str) -> Vec<&(String, Vec<String>)> {
        self.released
            .iter()
            .filter(|(p, others)| p.starts_with(&format!("{app}-")) && !others.is_empty())
            .collect()
    }
}

/// How long a replacement is held at most, whatever the drains do (every wait has a deadline).
const HOLD_DEADLINE: Duration = Duration::from_secs(30);

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A slow kubelet, made deterministic: the replacements of the pods labelled `app` in `apps`
/// are held Pending (not Ready) until every other Ready pod of the same workload on a node
/// being drained (`draining`) has been refused eviction twice since the replacement came due;
/// then it starts. Two refusals, because the drain decides what to do about a refusal before it
/// asks again: the second one proves a decision was taken while the replacement was not Ready,
/// the window in which a drain that took a second node's pod would break the budget. The race
/// the chain's real timing leaves to chance is then run every time. The handle stops it.
fn hold_replacements(
    srv: Arc<TestApiServer>,
    apps: &[&str],
    draining: impl Fn(&TestApiServer) -> BTreeSet<String> + Send + 'static,
) -> (Arc<Mutex<Held>>, tokio::task::JoinHandle<()>) {
    srv.hold_pod_starts("apps", &format!("app in ({})", apps.join(",")));
    let held = Arc::new(Mutex::new(Held::default()));
    let out = held.clone();
    let task = tokio::spawn(async move {
        // Held pod -> (request log length when first seen held, when).
        let mut marks: BTreeMap<String, (usize, tokio::time::Instant)> = BTreeMap::new();
        loop {
            for (ns, name) in srv.held_pods() {
                let (mark, since) = *marks
                    .entry(name.clone())
                    .or_insert_with(|| (srv.request_count(), tokio::time::Instant::now()));
                let Some(pod) = srv.get::<Pod>(Some(&ns), &name) else { continue };
                let app = pod.metadata.labels.unwrap_or_default().get("app").cloned().unwrap_or_default();
                let nodes = draining(&srv);
                let contested: Vec<String> = srv
                    .list::<Pod>(Some(&ns))
                    .into_iter()
                    .filter(|p| p.metadata.labels.as_ref().and_then(|l| l.get("app")) == Some(&app))
                    .filter(|p| ready(p) && p.metadata.deletion_timestamp.is_none())
                    .filter(|p| {
                        p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some_and(|n| nodes.contains(n))
                    })
                    .filter_map(|p| p.metadata.name)
                    .collect();
                let log = srv.requests_since(mark);
                let refusals = |p: &str| {
                    let path = format!("/pods/{p}/eviction");
                    log.iter().filter(|r| r.status == 429 && r.path.contains(&path)).count()
                };
                if contested.iter().all(|p| refusals(p) >= 2) {
                    srv.release_pod(&ns, &name);
                    out.lock().unwrap().released.push((name, contested));
                } else if since.elapsed() > HOLD_DEADLINE {
                    srv.release_pod(&ns, &name);
                    out.lock().unwrap().forced.push(name);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    (held, task)
}

/// The apiserver alone, for drains run side by side by the test: Ready `nodes` (name, kubelet
/// version), the tool's namespace holding the claim record of `claimed` (node, claimed at) for
/// v1.34.2, and [`spread_workload`]. Replacements start 20 ms after they are created.
async fn drains_env(
    nodes: &[(&str, &str)],
    claimed: &[(&str, &str)],
    api: i64,
) -> (Arc<TestApiServer>, Clients, ClaimKeys) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let srv = Arc::new(
        TestApiServer::builder().time_scale(0.01).pod_start_delay(Duration::from_millis(20)).start().await,
    );
    for (n, kubelet) in nodes {
        srv.insert(tf::node(n).ready().kubelet(kubelet).build());
    }
    srv.insert(tf::namespace(NS));
    let keys = ClaimKeys::new(&Settings::default().annotation_prefix);
    let rec = Claims {
        target: Some("1.34.2".parse().unwrap()),
        in_flight: claimed.iter().map(|(n, at)| (n.to_string(), at.parse().unwrap())).collect(),
        stopped: None,
    };
    write_record(&srv, &keys, &rec);
    spread_workload(&srv, api);
    let clients = Clients::from_config(srv.config()).unwrap();
    (srv, clients, keys)
}

/// Short deadlines; a refused eviction is asked again every second.
fn drain_config() -> DrainConfig {
    DrainConfig {
        timeout: Duration::from_secs(60),
        kill_switch_interval: Duration::from_secs(1),
        backoff_max: Duration::from_secs(1),
        ..DrainConfig::default()
    }
}

/// `node`'s drain as a worker Job in flight runs it: sharing budgets with the claim record.
async fn shared_drain(
    clients: &Clients,
    node: &str,
    config: &DrainConfig,
    keys: &ClaimKeys,
) -> Result<drain::DrainReport, drain::DrainError> {
    let target = DrainTarget { node: node.into(), namespace: NS.into(), self_pod: None };
    drain::drain_shared(clients, &target, config, Some(keys.clone())).await
}

/// Issue 15 item 2, deterministically: three drains of different nodes run at once, in the
/// order of the claim record (k8s-node3, then k8s-node1, then k8s-node2: not the order of
/// their names), over a deadlocked PDB (`minAvailable: 3` of 3, one pod on each node: only the
/// deadlock fallback can take them) and a `maxUnavailable: 1` one (the eviction API refuses with
/// 429). Every replacement is held not Ready until the other drains have been refused while it
/// was held, so a drain that deleted a second node's pod before the first one's was replaced
/// would break the budget every run. The PDB watcher sees each budget taken down by one node at
/// a time, the deletions follow the claim record, and every drain finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_drains_at_once_take_shared_budgets_one_node_at_a_time_in_claim_order() {
    const DRAINED: [&str; 3] = ["k8s-node1", "k8s-node2", "k8s-node3"];
    let nodes = ["k8s-node1", "k8s-node2", "k8s-node3", "k8s-node4", "k8s-node5"].map(|n| (n, "v1.34.1"));
    let claimed = [
        ("k8s-node3", "2026-12-01T01:00:00Z"),
        ("k8s-node1", "2026-12-01T01:00:01Z"),
        ("k8s-node2", "2026-12-01T01:00:02Z"),
    ];
    let (srv, clients, keys) = drains_env(&nodes, &claimed, 4).await;
    // Each drain cordons its node first; done here for all three before any drain starts, so
    // no replacement lands on a node about to be drained (which the sim's round robin would
    // otherwise decide).
    for n in DRAINED {
        drain::cordon(&clients.api, n).await.unwrap();
    }
    let (held, releaser) =
        hold_replacements(srv.clone(), &["db", "api"], |_| DRAINED.iter().map(|n| n.to_string()).collect());
    let config = drain_config();
    let run = |node| shared_drain(&clients, node, &config, &keys);
    let (a, b, c) = tokio::join!(run("k8s-node1"), run("k8s-node2"), run("k8s-node3"));
    releaser.abort();

    for (node, r) in DRAINED.iter().zip([a, b, c]) {
        let r = r.unwrap_or_else(|e| panic!("drain of {node}: {e:#}"));
        assert_eq!(r.outcome, DrainOutcome::Drained, "{node}: {r}");
        let deleted: Vec<(&str, FallbackKind)> =
            r.fallbacks.iter().map(|f| (f.pod.name.as_str(), f.kind)).collect();
        let db = format!("db-{}", &node["k8s-node".len()..]);
        assert_eq!(
            deleted,
            [(db.as_str(), FallbackKind::Deadlock)],
            "{node}: only its deadlocked pod is deleted"
        );
        let api = format!("api-{}", &node["k8s-node".len()..]);
        assert!(
            r.removed.iter().any(|(p, how)| p.name == api && matches!(how, Removal::Evicted { .. })),
            "{node}: {api} went through the eviction API: {:?}",
            r.removed
        );
    }
    assert_no_budget_broken(&srv);
    let order: Vec<String> =
        srv.budget_breaches().into_iter().filter(|b| b.pdb == "apps/db").map(|b| b.node).collect();
    assert_eq!(order, ["k8s-node3", "k8s-node1", "k8s-node2"], "the deadlocked pods go in claim order");
    let held = held.lock().unwrap();
    assert!(held.forced.is_empty(), "a replacement was released at the deadline: {held:?}");
    // The race was run: while k8s-node3's and then k8s-node1's deleted db pod was not replaced,
    // the other drains were refused and decided to wait; the api evictions likewise.
    assert_eq!(held.contested("db").len(), 2, "{held:?}");
    assert!(held.contested("api").len() >= 2, "{held:?}");
}

/// A replacement of another drain's pod that landed on this node before its cordon, and is
/// not Ready yet, is not one of the pods this node's drain may take down: it stands for the
/// pod the other drain deleted. k8s-node1's drain deletes db-1 (deadlocked, `minAvailable: 3`
/// of 3); its replacement lands on k8s-node2, the only schedulable node then, and is held
/// Pending. k8s-node2's drain (evictions one at a time, so db-2's refusal is decided while the
/// replacement is still on the node) must wait for a Ready replacement elsewhere before it
/// deletes db-2: deleting it at once would leave 1 of 3 healthy, two nodes' worth.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unready_replacement_on_the_node_drained_is_not_counted_as_its_own_pod() {
    let nodes = ["k8s-node1", "k8s-node2", "k8s-node3"].map(|n| (n, "v1.34.1"));
    let claimed = [("k8s-node1", "2026-12-01T01:00:00Z"), ("k8s-node2", "2026-12-01T01:00:01Z")];
    let (srv, clients, keys) = drains_env(&nodes, &claimed, 0).await;
    let (held, releaser) =
        hold_replacements(srv.clone(), &["db"], |_| BTreeSet::from(["k8s-node2".to_string()]));
    let config = DrainConfig { concurrency: 1, ..drain_config() };
    let drain = |node| shared_drain(&clients, node, &config, &keys);
    // k8s-node3 is cordoned (by someone else): db-1's replacement can only go to k8s-node2.
    srv.modify::<Node>(None, "k8s-node3", |n| n["spec"]["unschedulable"] = serde_json::json!(true)).unwrap();
    let one = drain("k8s-node1").await.unwrap();
    assert_eq!(one.outcome, DrainOutcome::Drained, "{one}");
    let on_node2: Vec<String> = srv
        .list::<Pod>(Some("apps"))
        .into_iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("k8s-node2"))
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(on_node2.len(), 2, "db-2 and db-1's replacement, not Ready: {on_node2:?}");
    srv.modify::<Node>(None, "k8s-node3", |n| n["spec"]["unschedulable"] = serde_json::json!(null)).unwrap();
    let two = drain("k8s-node2").await.unwrap();
    releaser.abort();
    assert_eq!(two.outcome, DrainOutcome::Drained, "{two}");
    assert_no_budget_broken(&srv);
    let held = held.lock().unwrap();
    assert!(held.forced.is_empty(), "{held:?}");
    // db-2 was refused while no Ready replacement of db-1 existed, and waited.
    assert!(!held.contested("db").is_empty(), "{held:?}");
    let deleted: Vec<&str> = two.fallbacks.iter().map(|f| f.pod.name.as_str()).collect();
    assert_eq!(deleted, ["db-2"], "{two}");
}

/// A node claimed earlier whose drain is over (upgraded and uncordoned, soaking before its Job
/// ends and releases its claim) no longer goes first: a pod of the deadlocked PDB that landed
/// on it since (the scheduler favours the emptied node) is not one its drain will take, so the
/// later drain does not wait for that node's soak. k8s-node1 is on the target; k8s-node2's
/// drain deletes db-2 as soon as every other db pod is healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_ahead_whose_drain_is_over_does_not_hold_the_drains_behind_it() {
    let nodes = [("k8s-node1", "v1.34.2"), ("k8s-node2", "v1.34.1"), ("k8s-node3", "v1.34.1")];
    let claimed = [("k8s-node1", "2026-12-01T01:00:00Z"), ("k8s-node2", "2026-12-01T01:00:01Z")];
    // db-1 on k8s-node1 stands for a replacement that landed there after its upgrade.
    let (srv, clients, keys) = drains_env(&nodes, &claimed, 0).await;
    let config = DrainConfig { timeout: Duration::from_secs(10), ..drain_config() };
    let r = shared_drain(&clients, "k8s-node2", &config, &keys).await.unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(r.outcome, DrainOutcome::Drained, "{r}");
    assert_eq!(r.summary.eviction_refusals, 1, "deleted at its first refusal: {r}");
    assert_no_budget_broken(&srv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_chain_at_concurrency_three_keeps_the_limit_the_zones_and_the_budgets() {
    let c = Cluster::start(layout(120, EIGHT)).await;
    // Zones a, b, c, a, b, c, a, b: three at once at most, never two of a zone.
    for (i, w) in EIGHT.iter().enumerate() {
        set_zone(&c, w, ["a", "b", "c"][i % 3]);
    }
    spread_workload(&c.srv, 6);
    let mut settings = with_concurrency(&c, 4);
    // A refused eviction is asked again every second (the held replacements below wait for
    // two refusals).
    settings.drain.backoff_max = Duration::from_secs(1);
    let (seen, tasks) = watch(&c, 3);
    // The deadlocked db pods' replacements stay not Ready until every other drain in flight
    // holding a db pod was refused meanwhile: the cross-drain race runs in every wave, every
    // run, instead of only when the first wave's drains happen to overlap.
    let keys = ClaimKeys::new(&c.settings.annotation_prefix);
    let (held, releaser) = hold_replacements(c.srv.clone(), &["db"], move |srv| {
        let ns: Namespace = srv.get(None, NS).unwrap();
        let rec = Claims::parse(&keys, &ns.metadata.annotations.unwrap_or_default()).unwrap_or_default();
        let on_target = |n: &String| {
            srv.get::<Node>(None, n)
                .and_then(|n| n.status?.node_info)
                .is_some_and(|i| i.kubelet_version == "v1.34.2")
        };
        rec.nodes().into_iter().filter(|n| !on_target(n)).collect()
    });
    c.detect().await;
    let ran = c.run_chain_concurrently(&settings, |_| {}).await;
    tasks.iter().for_each(|t| t.abort());
    releaser.abort();

    assert!(
        ran.iter().all(|j| j.result.is_ok()),
        "{:#?}",
        ran.iter().filter(|j| j.result.is_err()).collect::<Vec<_>>()
    );
    for w in EIGHT {
        assert_eq!(c.kubelet(w), "v1.34.2", "{w} upgraded");
        assert!(!c.cordoned(w), "{w} uncordoned");
    }
    let workers: Vec<&str> =
        ran.iter().filter(|j| j.name.contains("-worker-")).map(|j| j.name.as_str()).collect();
    assert_eq!(workers.len(), 8, "one Job per worker, each once: {workers:?}");
    assert_eq!(ran.iter().filter(|j| j.name.contains("postflight")).count(), 1);
    assert_eq!(ran.last().unwrap().name, "k8s-upgrade-postflight-1-34-2");
    let seen = seen.lock().unwrap();
    assert!(seen.violations.is_empty(), "{:#?}", seen.violations);
    assert_eq!(seen.max_claimed, 3, "the first wave claims one node per zone: {seen:?}");
    assert!(seen.max_cordoned <= 3, "{seen:?}");
    assert!(seen.records > 8, "every claim and release was watched: {seen:?}");
    assert_no_budget_broken(&c.srv);
    let deadlock_deletions = c.srv.budget_breaches().iter().filter(|b| b.pdb.ends_with("db")).count();
    assert!(deadlock_deletions >= 3, "the deadlocked pods went through the fallback: {deadlock_deletions}");
    let held = held.lock().unwrap();
    assert!(held.forced.is_empty(), "a replacement was released at the deadline: {held:?}");
    // The race was run: in the first wave k8s-node2's and k8s-node3's drains were refused their
    // db pod while k8s-node1's was not replaced, then k8s-node3's while k8s-node2's was not.
    assert!(held.contested("db").len() >= 2, "{held:?}");
    let rec = claims(&c);
    assert!(rec.in_flight.is_empty() && rec.stopped.is_none(), "{rec:?}");
}

/// Two worker Jobs ending together: both read the same record (the apiserver holds each read
/// for a second, so both are in before either is answered), both decide, one write goes through
/// and the other gets 409 Conflict, reads again and decides from the first one's result. The
/// round is repeated (at most 4 times) until the race is seen; every round must keep the rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_ending_together_never_start_the_same_node_nor_exceed_the_limit() {
    let c = Cluster::start(layout(121, SIX)).await;
    let settings = with_concurrency(&c, 2);
    let target = "1.34.2".parse().unwrap();
    for n in ["k8s-node1", "k8s-node2"] {
        c.srv.set_kubelet_version(n, "v1.34.2");
    }
    let slack = Slack::from_config(&settings.slack, "test");
    let mut raced = 0;
    for round in 0..4 {
        // k8s-node1 and k8s-node2 are in flight and have just finished their upgrade.
        let rec = Claims {
            target: Some(target),
            in_flight: [("k8s-node1", "2026-12-01T01:00:00Z"), ("k8s-node2", "2026-12-01T01:00:00Z")]
                .into_iter()
                .map(|(n, t)| (n.to_string(), t.parse().unwrap()))
                .collect(),
            stopped: None,
        };
        seed_record(&c, &rec);
        for j in c.chain_jobs() {
            c.srv.remove::<k8s_openapi::api::batch::v1::Job>(Some(NS), &j);
        }
        c.srv.reset_requests();
        c.srv.inject(
            Fault::delay(std::time::Duration::from_secs(1)).method("GET").on("namespaces", NS).times(2),
        );
        let (a, b) = (c.ctx_with(settings.clone()), c.ctx_with(settings.clone()));
        let (da, db) = tokio::join!(
            claims::refill(&a, target, Kind::Patch, Cause::Ended("k8s-node1"), &slack),
            claims::refill(&b, target, Kind::Patch, Cause::Ended("k8s-node2"), &slack),
        );
        c.srv.clear_faults();
        let (da, db) = (da.unwrap(), db.unwrap());
        let mut started = da.start.clone();
        started.extend(db.start.clone());
        let uniq: BTreeSet<&String> = started.iter().collect();
        assert_eq!(uniq.len(), started.len(), "round {round}: a node started twice: {da:?} {db:?}");
        assert_eq!(started.len(), 2, "round {round}: both slots refilled: {da:?} {db:?}");
        assert_eq!(claims(&c).nodes(), ["k8s-node3", "k8s-node4"], "round {round}");
        let workers: Vec<String> = c.chain_jobs().into_iter().filter(|j| j.contains("-worker-")).collect();
        assert_eq!(
            workers,
            ["k8s-upgrade-worker-1-34-2-k8s-node3", "k8s-upgrade-worker-1-34-2-k8s-node4"],
            "round {round}"
        );
        raced = c
            .srv
            .requests()
            .into_iter()
            .filter(|r| r.verb == "patch" && r.path.contains("/namespaces/") && r.status == 409)
            .count();
        if raced > 0 {
            break;
        }
    }
    assert!(raced >= 1, "the two claims raced (one got 409 Conflict) in one of the rounds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_worker_stops_refills_and_the_running_ones_finish_their_node() {
    let c = Cluster::start(layout(122, SIX)).await;
    c.node("k8s-node2").set_state("apt_get_fails", "");
    let settings = with_concurrency(&c, 2);
    c.detect().await;
    let ran = c.run_chain_concurrently(&settings, |_| {}).await;

    let failed: Vec<&str> = ran.iter().filter(|j| j.result.is_err()).map(|j| j.name.as_str()).collect();
    assert_eq!(failed, ["k8s-upgrade-worker-1-34-2-k8s-node2"]);
    assert!(c.cordoned("k8s-node2"), "the node whose upgrade failed stays cordoned for a human");
    let rec = claims(&c);
    assert!(rec.in_flight.is_empty(), "every running worker finished and released: {rec:?}");
    let why = rec.stopped.clone().expect("the stop is recorded");
    assert!(why.contains("k8s-node2") && why.contains("failed"), "{why}");
    // `status` explains it from the cluster alone.
    let st = k8s_upgrade_chain::ops::status::read(&c.srv.client(), &settings, false).await.unwrap();
    assert_eq!(st.worker_claims_stopped.as_deref(), Some(why.as_str()));
    assert!(st.workers_in_flight.is_empty());
    assert!(st.next_steps.iter().any(|s| s.contains("No new worker starts")), "{:?}", st.next_steps);
    // Workers that ran finished their node; nothing was started after the failure ended.
    for j in ran.iter().filter(|j| j.result.is_ok() && j.name.contains("-worker-")) {
        let node = j.node.as_deref().unwrap();
        assert_eq!(c.kubelet(node), "v1.34.2", "{node} finished");
        assert!(!c.cordoned(node));
    }
    let started = ran.iter().filter(|j| j.name.contains("-worker-")).count();
    assert!(started < 6, "refills stopped: {:?}", ran.iter().map(|j| &j.name).collect::<Vec<_>>());
    assert!(!c.chain_jobs().iter().any(|j| j.contains("postflight")));
    for n in ["k8s-node5", "k8s-node6"] {
        assert_eq!(c.kubelet(n), "v1.34.1", "{n} untouched");
        assert!(!c.cordoned(n));
    }

    // The node awaits an acknowledgement: detection resumes nothing until then.
    assert!(c.upgrade_started("k8s-node2").is_some());
    let detect = |c: &Cluster| {
        let ctx = c.ctx_with(settings.clone());
        async move { k8s_upgrade_chain::chain::detect::detect(&ctx, false).await.unwrap() }
    };
    let d = detect(&c).await;
    assert!(matches!(&d, Detection::Target { action: Action::AwaitingAck { .. }, .. }), "{d:?}");
    // The operator fixes the node and acknowledges it; detection resumes the chain at its
    // workers and refills every slot the same way (k8s-node2 and the next pending one).
    std::fs::remove_file(c.node("k8s-node2").state().join("apt_get_fails")).unwrap();
    k8s_upgrade_chain::ops::ack::acknowledge(&c.srv.client(), &settings, "k8s-node2").await.unwrap();
    let d = detect(&c).await;
    let Detection::Target { action: Action::ClaimedWorkers { nodes }, .. } = &d else { panic!("{d:?}") };
    assert_eq!(nodes.len(), 2, "both slots filled: {nodes:?}");
    assert!(nodes.contains(&"k8s-node2".to_string()), "{nodes:?}");
    assert_eq!(claims(&c).stopped, None);
    let (seen, tasks) = watch(&c, 2);
    let ran = c.run_chain_concurrently(&settings, |_| {}).await;
    tasks.iter().for_each(|t| t.abort());
    assert!(ran.iter().all(|j| j.result.is_ok()), "{ran:#?}");
    for w in SIX {
        assert_eq!(c.kubelet(w), "v1.34.2", "{w}");
        assert!(!c.cordoned(w), "{w}");
    }
    assert_eq!(ran.last().unwrap().name, "k8s-upgrade-postflight-1-34-2");
    assert!(seen.lock().unwrap().violations.is_empty(), "{:?}", seen.lock().unwrap().violations);
    assert_eq!(claims(&c).stopped, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_kill_switch_stops_refills_and_leaves_no_node_half_done() {
    let c = Cluster::start(layout(123, SIX)).await;
    let settings = with_concurrency(&c, 2);
    c.detect().await;
    let srv = c.srv.clone();
    let ran = c
        .run_chain_concurrently(&settings, |name| {
            if name.ends_with("k8s-node3") {
                srv.insert(tf::configmap(NS, "k8s-upgrade-killswitch", &[("reason", "storage storm")]));
            }
        })
        .await;
    let node3 = ran.iter().find(|j| j.name.ends_with("k8s-node3")).expect("k8s-node3's Job ran");
    assert_eq!(node3.result, Ok(Ended::Halted("storage storm".into())));
    assert!(ran.iter().all(|j| j.result.is_ok()), "{ran:#?}");
    let rec = claims(&c);
    assert!(rec.in_flight.is_empty(), "{rec:?}");
    assert!(rec.stopped.as_deref().is_some_and(|r| r.contains("kill switch")), "{rec:?}");
    // Every worker is done or untouched: none cordoned, none half-way.
    for w in SIX {
        assert!(!c.cordoned(w), "{w} not left cordoned");
    }
    assert_eq!(c.kubelet("k8s-node3"), "v1.34.1");
    for n in ["k8s-node5", "k8s-node6"] {
        assert!(!c.chain_jobs().iter().any(|j| j.ends_with(n)), "nothing spawned for {n}");
    }
    assert!(!c.chain_jobs().iter().any(|j| j.contains("postflight")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blocking_alert_stops_refills_until_the_chain_is_resumed() {
    let c = Cluster::start(layout(124, SIX)).await;
    let settings = with_concurrency(&c, 2);
    let target = "1.34.2".parse().unwrap();
    let rec = Claims {
        target: Some(target),
        in_flight: [("k8s-node1", "2026-12-01T01:00:00Z"), ("k8s-node2", "2026-12-01T01:00:00Z")]
            .into_iter()
            .map(|(n, t)| (n.to_string(), t.parse().unwrap()))
            .collect(),
        stopped: None,
    };
    seed_record(&c, &rec);
    c.srv.set_kubelet_version("k8s-node1", "v1.34.2");
    c.pgw.push_raw("test-switch", "k8s_test_block 1\n").await;
    c.prom.wait_for_alerts(&[("TestClusterCritical", "firing")]).await;
    let ctx = c.ctx_with(settings.clone());
    let slack = Slack::from_config(&settings.slack, "test");
    let d = claims::refill(&ctx, target, Kind::Patch, Cause::Ended("k8s-node1"), &slack).await.unwrap();
    assert!(d.start.is_empty(), "{d:?}");
    let Then::Stopped { reason } = &d.then else { panic!("{d:?}") };
    assert!(reason.contains("TestClusterCritical"), "{reason}");
    assert_eq!(claims(&c).nodes(), ["k8s-node2"]);
    // The alert clears; k8s-node2 ends: still no refill (the stop holds until a resume).
    c.pgw.push_raw("test-switch", "k8s_test_block 0\n").await;
    c.prom.wait_for_not_firing("TestClusterCritical").await;
    c.srv.set_kubelet_version("k8s-node2", "v1.34.2");
    let d = claims::refill(&ctx, target, Kind::Patch, Cause::Ended("k8s-node2"), &slack).await.unwrap();
    assert!(d.start.is_empty() && matches!(d.then, Then::Stopped { .. }), "{d:?}");
    assert!(claims(&c).in_flight.is_empty());
    assert!(!c.chain_jobs().iter().any(|j| j.contains("-worker-")), "{:?}", c.chain_jobs());
    // The worker stage restarting (detection resuming the chain) claims again.
    let d = claims::refill(&ctx, target, Kind::Patch, Cause::Start, &slack).await.unwrap();
    assert_eq!(d.start, ["k8s-node3", "k8s-node4"]);
    assert_eq!(claims(&c).stopped, None);
}

/// `plan` shows the worker waves from the config, as text and JSON (nothing new with the
/// default concurrency of 1).
#[test]
fn plan_shows_the_worker_waves() {
    let run = |config: Option<&str>, json: bool| {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = assert_cmd::Command::new(assert_cmd::cargo::cargo_bin!("k8s-upgrade-chain"));
        cmd.env("KUBECONFIG", "/nonexistent/kubeconfig").env_remove("KUBERNETES_SERVICE_HOST");
        for v in ["PHASE", "TARGET_NODE", "TARGET_VERSION", "KIND", "IMAGE", "CONFIG", "NODES_FILE"] {
            cmd.env_remove(v);
        }
        if let Some(text) = config {
            let path = dir.path().join("config.yaml");
            std::fs::write(&path, text).unwrap();
            cmd.arg("--config").arg(&path);
        }
        cmd.args(["plan", "--nodes-file", "examples/nodes.yaml", "--version", "1.34.2"]);
        if json {
            cmd.args(["-o", "json"]);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let text = run(Some("workers:\n  concurrency: 4\n  max_unavailable: 3\n"), false);
    assert!(text.contains("worker waves (concurrency 4, max_unavailable 3;"), "{text}");
    let waves: Vec<&str> = text.lines().filter(|l| l.trim_start().starts_with("wave ")).collect();
    assert_eq!(waves.len(), 3, "7 workers, 3 at a time: {text}");
    assert!(waves[2].ends_with("k8s-node10"), "{text}");
    let v: serde_json::Value =
        serde_json::from_str(&run(Some("workers:\n  concurrency: 4\n  max_unavailable: 3\n"), true)).unwrap();
    assert_eq!(v["waves"].as_array().unwrap().len(), 3);
    assert_eq!(v["waves"][0].as_array().unwrap().len(), 3);
    // Default: no waves, the JSON unchanged.
    assert!(!run(None, false).contains("worker waves"));
    let v: serde_json::Value = serde_json::from_str(&run(None, true)).unwrap();
    assert!(v.get("waves").is_none());
    // Bad values are refused where they enter, naming the key.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, "workers:\n  max_unavailable: 0%\n").unwrap();
    let out = assert_cmd::Command::new(assert_cmd::cargo::cargo_bin!("k8s-upgrade-chain"))
        .arg("--config")
        .arg(&path)
        .arg("config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("workers.max_unavailable"), "{err}");
}

/// `rehearse` runs the chain with the configured concurrency (the claims, the refills, the
/// last worker spawning postflight) and projects the worker stage on that many slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rehearse_runs_with_the_configured_concurrency_and_projects_it() {
    use k8s_upgrade_chain::rehearse::{self, Options, Source};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut site = Settings::default();
    site.workers.concurrency = Concurrency::new(2).unwrap();
    let opts = Options {
        source: Source::Builtin,
        version: None,
        speed: rehearse::DEFAULT_SPEED,
        image: "registry.local/k8s-upgrade-chain:test".into(),
    };
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let l = lines.clone();
    let report =
        rehearse::rehearse(&site, opts, &move |s: &str| l.lock().unwrap().push(s.to_string())).await.unwrap();
    let out = lines.lock().unwrap().join("\n");
    assert!(report.completed, "{out}");
    assert!(report.jobs.iter().all(|j| j.result == "Done"), "{out}");
    let workers: BTreeSet<&str> = report
        .jobs
        .iter()
        .filter(|j| j.phase == chain_core::plan::Phase::Worker)
        .filter_map(|j| j.node.as_deref())
        .collect();
    assert_eq!(workers.len(), 4, "each worker once: {workers:?}");
    assert_eq!(report.jobs.iter().filter(|j| j.phase == chain_core::plan::Phase::Postflight).count(), 1);
    let summary = rehearse::summary_text(&report);
    assert!(summary.contains("the worker Jobs 2 at a time (workers.concurrency 2)"), "{summary}");
    // Two at a time: the workers' share of the projection is about halved.
    let one_at_a_time: std::time::Duration = report.jobs.iter().map(|j| j.projected).sum();
    let worker_time: std::time::Duration =
        report.jobs.iter().filter(|j| j.phase == chain_core::plan::Phase::Worker).map(|j| j.projected).sum();
    assert!(report.projected < one_at_a_time, "{:?} < {:?}", report.projected, one_at_a_time);
    assert!(report.projected + worker_time / 3 <= one_at_a_time, "{summary}");
}
