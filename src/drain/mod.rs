//! PDB-aware node drain with bounded concurrency: the imperative shell around
//! [`select`] (which pods), [`pdb`] (which budgets, when to fall back) and [`outcome`]
//! (what an answer means, how long to wait).
//!
//! Compared with `kubectl drain --ignore-daemonsets --delete-emptydir-data --force` (what
//! the seed ran, seed-system.md §3):
//! - at most [`DrainConfig::concurrency`] evictions in flight instead of one goroutine per pod;
//! - one watch on the node's pods to see them go (by UID, so a same-name StatefulSet
//!   replacement counts as gone) instead of one GET per pod per second;
//! - its own retry loop with a jittered delay of at least 1 s that honours
//!   `retryAfterSeconds` (the `evict` client has kube's 429 retry off, kube-rs/kube#2007);
//! - 429, the 500 "more than one PodDisruptionBudget" and the 403 of a namespace being deleted
//!   are outcomes, not errors; one pure decision per pod ([`decide::decide`], shared with the
//!   dry run) says when a refused pod is deleted directly: not Ready under a budget that cannot
//!   recover, under a PDB that can never allow an eviction, or under several PDBs that each
//!   stay within budget without it;
//! - one deadline for the whole drain (the seed had none, §10 item 39), kill-switch checks
//!   while it runs, and cordon bookkeeping so we only ever uncordon what we cordoned.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::pin::pin;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::policy::v1::{Eviction, PodDisruptionBudget};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{DeleteOptions, ObjectMeta};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::time::Instant;
use tracing::{info, warn};

pub use chain_core::drain::{
    CORDONED_AT, CORDONED_BY, Decision, DrainConfig, DrainPolicy, DrainSummary, EvictOutcome, Fallback,
    FallbackKind, OWNER, PodRef, RefuseReason, Remaining, RemainingPod, Removal, Rules, Selection,
    SkipReason, decide, outcome, pdb, select,
};
use chain_core::killswitch::KillSwitch;

use crate::k8s::{Clients, killswitch};

/// Transient eviction/delete errors (5xx, transport) tolerated in a row for one pod before
/// the drain stops with an error naming it.
const MAX_TRANSIENT_ERRORS: u32 = 5;
/// How long a halting drain waits for requests already sent.
const IN_FLIGHT_GRACE: Duration = Duration::from_secs(10);

/// How an eviction error is handled by the engine.
#[derive(Debug)]
enum EvictError {
    /// Worth retrying: 5xx other than multi-PDB, 409, transport errors.
    Transient(kube::Error),
    /// Not worth retrying: stops the drain with an error naming the pod.
    Fatal(kube::Error),
}

/// Classifies the answer to an eviction POST ([`outcome::classify_status`] for API answers).
fn classify_eviction(result: Result<(), kube::Error>) -> Result<EvictOutcome, EvictError> {
    let err = match result {
        Ok(()) => return Ok(EvictOutcome::Evicted),
        Err(e) => e,
    };
    let kube::Error::Api(status) = &err else {
        return Err(EvictError::Transient(err));
    };
    match outcome::classify_status(status) {
        outcome::StatusClass::Outcome(o) => Ok(o),
        outcome::StatusClass::Transient => Err(EvictError::Transient(err)),
        outcome::StatusClass::Fatal => Err(EvictError::Fatal(err)),
    }
}

/// The node to drain and who is draining it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainTarget {
    /// Node name.
    pub node: String,
    /// The tool's namespace, where the kill-switch ConfigMap lives.
    pub namespace: String,
    /// The pod running the drain, never evicted (see [`self_pod_from_env`]).
    pub self_pod: Option<PodRef>,
}

/// The pod this process runs in, from the downward-API env `POD_NAMESPACE` and `POD_NAME`.
pub fn self_pod_from_env() -> Option<PodRef> {
    let name = std::env::var("POD_NAME").ok().filter(|s| !s.is_empty())?;
    let ns = std::env::var("POD_NAMESPACE").ok().filter(|s| !s.is_empty())?;
    Some(PodRef::new(ns, name))
}

/// Errors of the drain. Once the node is cordoned, it stays cordoned after every one of them
/// (as with kubectl); the caller decides whether to call [`uncordon_if_ours`].
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// An API call outside eviction failed.
    #[error("failed to {step}")]
    Api {
        step: String,
        node: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// Some pods may not be drained under the current settings; nothing was evicted.
    #[error("refusing to drain node {node} (it stays cordoned, nothing was evicted): {}", list_refused(.pods))]
    Refused { node: String, pods: Vec<(PodRef, RefuseReason)> },
    /// An eviction failed in a way retrying will not fix.
    #[error("failed to evict pod {pod} on node {node}")]
    Evict {
        pod: PodRef,
        node: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// A direct delete (finished pod or PDB fallback) failed.
    #[error("failed to delete pod {pod} on node {node}")]
    Delete {
        pod: PodRef,
        node: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// The deadline passed with pods still on the node.
    #[error(
        "drain of node {node} timed out after {}: {} pod(s) still on the node, which stays cordoned: {}",
        chain_core::duration::format(*.after), .remaining.len(), list(.remaining)
    )]
    Timeout {
        node: String,
        after: Duration,
        remaining: Vec<RemainingPod>,
        summary: Box<DrainSummary>,
        /// How the pods that did go left.
        removed: Vec<(PodRef, Removal)>,
    },
    /// The kill switch could not be read (fail closed).
    #[error(transparent)]
    KillSwitch(#[from] killswitch::Unreadable),
    /// The settings are unusable.
    #[error("invalid drain settings: {0}")]
    Config(String),
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

fn list_refused(pods: &[(PodRef, RefuseReason)]) -> String {
    pods.iter().map(|(p, r)| format!("{p} {r}")).collect::<Vec<_>>().join("; ")
}

fn api_err(step: impl Into<String>, node: &str) -> impl FnOnce(kube::Error) -> DrainError {
    let (step, node) = (step.into(), node.to_string());
    move |source| DrainError::Api { step, node, source: Box::new(source) }
}

// ---------------------------------------------------------------------------------------
// Cordon bookkeeping
// ---------------------------------------------------------------------------------------

/// Who cordoned the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cordon {
    /// We cordoned it now (and annotated it).
    CordonedByUs,
    /// It carried our annotation already: an earlier run cordoned it.
    AlreadyOurs,
    /// Someone else cordoned it; [`uncordon_if_ours`] will leave it cordoned.
    NotOurs,
}

impl Cordon {
    /// Whether the cordon is ours to undo.
    pub fn ours(&self) -> bool {
        !matches!(self, Cordon::NotOurs)
    }
}

impl fmt::Display for Cordon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cordon::CordonedByUs => "cordoned by us now",
            Cordon::AlreadyOurs => "already cordoned by an earlier run of the chain",
            Cordon::NotOurs => "already cordoned by someone else (we will not uncordon it)",
        })
    }
}

/// What [`uncordon_if_ours`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uncordon {
    /// It carried our annotation: now schedulable, annotation removed.
    Uncordoned,
    /// Not cordoned by us; left as it is.
    NotOurs {
        /// Whether the node is cordoned (by someone else).
        cordoned: bool,
    },
}

fn is_cordoned(node: &Node) -> bool {
    node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false)
}

/// Whether the node carries our cordon annotation.
pub fn cordoned_by_us(node: &Node) -> bool {
    node.metadata.annotations.as_ref().and_then(|a| a.get(CORDONED_BY)).is_some_and(|v| v == OWNER)
}

/// Writes after a read are guarded by the node's resourceVersion (merge patches carrying
/// `metadata.resourceVersion` fail with 409 when the node changed); on 409 we re-read.
const CORDON_ATTEMPTS: u32 = 5;

/// Cordons `node` and records that we did (one merge patch: `spec.unschedulable` and our
/// annotations, guarded by resourceVersion). A node already cordoned is left as it is.
pub async fn cordon(client: &Client, node: &str) -> Result<Cordon, DrainError> {
    let nodes: Api<Node> = Api::all(client.clone());
    for _ in 0..CORDON_ATTEMPTS {
        let current =
            nodes.get(node).await.map_err(api_err(format!("read node {node} before cordoning it"), node))?;
        if is_cordoned(&current) {
            return Ok(if cordoned_by_us(&current) { Cordon::AlreadyOurs } else { Cordon::NotOurs });
        }
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": current.metadata.resource_version,
                "annotations": { CORDONED_BY: OWNER, CORDONED_AT: jiff::Timestamp::now().to_string() },
            },
            "spec": { "unschedulable": true },
        });
        match nodes.patch(node, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                info!(node, "cordoned node");
                return Ok(Cordon::CordonedByUs);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(api_err(format!("cordon node {node}"), node)(e)),
        }
    }
    Err(DrainError::Api {
        step: format!("cordon node {node} (it changed under us {CORDON_ATTEMPTS} times)"),
        node: node.into(),
        source: Box::new(kube::Error::Api(Box::new(
            kube::core::Status::failure("conflict", "Conflict").with_code(409),
        ))),
    })
}

/// Uncordons `node` only if it carries our annotation, and removes the annotation. For
/// failure paths and later runs; a node someone else cordoned stays cordoned.
pub async fn uncordon_if_ours(client: &Client, node: &str) -> Result<Uncordon, DrainError> {
    let nodes: Api<Node> = Api::all(client.clone());
    for _ in 0..CORDON_ATTEMPTS {
        let current = nodes
            .get(node)
            .await
            .map_err(api_err(format!("read node {node} before uncordoning it"), node))?;
        if !cordoned_by_us(&current) {
            return Ok(Uncordon::NotOurs { cordoned: is_cordoned(&current) });
        }
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": current.metadata.resource_version,
                "annotations": { CORDONED_BY: null, CORDONED_AT: null },
            },
            "spec": { "unschedulable": null },
        });
        match nodes.patch(node, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                info!(node, "uncordoned node (we had cordoned it)");
                return Ok(Uncordon::Uncordoned);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(api_err(format!("uncordon node {node}"), node)(e)),
        }
    }
    Err(DrainError::Api {
        step: format!("uncordon node {node} (it changed under us {CORDON_ATTEMPTS} times)"),
        node: node.into(),
        source: Box::new(kube::Error::Api(Box::new(
            kube::core::Status::failure("conflict", "Conflict").with_code(409),
        ))),
    })
}

// ---------------------------------------------------------------------------------------
// Reading the node's pods
// ---------------------------------------------------------------------------------------

/// Field selector for the pods bound to `node`.
fn on_node(node: &str) -> String {
    format!("spec.nodeName={node}")
}

/// Page size for pod lists, as kubectl's drain.
const PAGE: u32 = 500;

/// Every pod bound to `node` (paginated).
pub async fn list_pods_on_node(client: &Client, node: &str) -> Result<Vec<Pod>, DrainError> {
    let pods: Api<Pod> = Api::all(client.clone());
    let mut out = Vec::new();
    let mut lp = ListParams::default().fields(&on_node(node)).limit(PAGE);
    loop {
        let page = pods.list(&lp).await.map_err(api_err(format!("list the pods on node {node}"), node))?;
        out.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => return Ok(out),
        }
    }
}

/// `(namespace, name)` of the DaemonSets that the node's DaemonSet pods point at but that
/// no longer exist (kubectl GETs each one too).
async fn missing_daemonsets(
    client: &Client,
    node: &str,
    pods: &[Pod],
) -> Result<BTreeSet<(String, String)>, DrainError> {
    let owners: BTreeSet<(String, String)> = pods
        .iter()
        .filter_map(|p| match select::controller_of(p) {
            Some(("DaemonSet", name)) => {
                Some((p.metadata.namespace.clone().unwrap_or_default(), name.to_string()))
            }
            _ => None,
        })
        .collect();
    let mut missing = BTreeSet::new();
    for (ns, name) in owners {
        let api: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
        let found = api
            .get_opt(&name)
            .await
            .map_err(api_err(format!("read DaemonSet {ns}/{name} (it owns pods on node {node})"), node))?;
        if found.is_none() {
            missing.insert((ns, name));
        }
    }
    Ok(missing)
}

/// The pods of `namespace` (to count the health of a pod's several PDBs ourselves).
async fn pods_in(client: &Client, namespace: &str, node: &str) -> Result<Vec<Pod>, DrainError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(api_err(format!("list the pods in namespace {namespace} (draining node {node})"), node))?;
    Ok(list.items)
}

async fn pdbs_in(
    client: &Client,
    namespace: &str,
    node: &str,
) -> Result<Vec<PodDisruptionBudget>, DrainError> {
    let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), namespace);
    let list = api.list(&ListParams::default()).await.map_err(api_err(
        format!("list PodDisruptionBudgets in namespace {namespace} (draining node {node})"),
        node,
    ))?;
    Ok(list.items)
}

/// The pods on the node, sorted by [`select::select`].
pub async fn select_on_node(
    client: &Client,
    node: &str,
    policy: &DrainPolicy,
) -> Result<Selection, DrainError> {
    let pods = list_pods_on_node(client, node).await?;
    let missing = missing_daemonsets(client, node, &pods).await?;
    Ok(select::select(pods, policy, &missing))
}

// ---------------------------------------------------------------------------------------
// The drain
// ---------------------------------------------------------------------------------------

/// How a drain ended without an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every pod that had to go is gone.
    Drained,
    /// The kill switch appeared: no new eviction was started after it was seen. The node stays
    /// cordoned (if it was cordoned) with `remaining` pods still on it.
    Halted { reason: String, remaining: Vec<RemainingPod> },
}

/// A pod a fallback deleted directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackDeletion {
    /// The pod.
    pub pod: PodRef,
    /// Which fallback: deadlocked PDB, several PDBs, or not Ready under a budget that cannot
    /// recover.
    pub kind: FallbackKind,
    /// The PDBs covering it.
    pub pdbs: Vec<String>,
    /// Why the fallback applied.
    pub why: String,
}

/// What a drain did.
#[derive(Debug, Clone)]
pub struct DrainReport {
    /// Node name.
    pub node: String,
    /// Who cordoned the node; `None` when the kill switch stopped us before the cordon.
    pub cordon: Option<Cordon>,
    /// Drained or halted.
    pub outcome: DrainOutcome,
    /// Counts and times, for the metrics module.
    pub summary: DrainSummary,
    /// Pods left on the node on purpose.
    pub skipped: Vec<(PodRef, SkipReason)>,
    /// kubectl-style warnings (bare pods, orphaned DaemonSet pods evicted under force).
    pub warnings: Vec<(PodRef, String)>,
    /// Pods deleted directly by a fallback, in order.
    pub fallbacks: Vec<FallbackDeletion>,
    /// How every pod that had to go left the node (evicted, deleted, waited for), in order.
    pub removed: Vec<(PodRef, Removal)>,
}

impl fmt::Display for DrainReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cordon = self.cordon.as_ref().map_or("not cordoned".to_string(), ToString::to_string);
        match &self.outcome {
            DrainOutcome::Drained => writeln!(f, "node {}: drained ({cordon})", self.node)?,
            DrainOutcome::Halted { reason, remaining } => {
                writeln!(
                    f,
                    "node {}: drain halted by the kill switch ({reason}); node {cordon}; {} pod(s) remaining",
                    self.node,
                    remaining.len()
                )?;
                for r in remaining {
                    writeln!(f, "  remaining: {r}")?;
                }
            }
        }
        writeln!(f, "  {}", self.summary)?;
        for fb in &self.fallbacks {
            match fb.kind {
                FallbackKind::Unhealthy => writeln!(f, "  deleted as not Ready: {} ({})", fb.pod, fb.why)?,
                FallbackKind::Deadlock | FallbackKind::SeveralPdbs => {
                    writeln!(f, "  deleted by PDB fallback: {} ({})", fb.pod, fb.why)?
                }
            }
        }
        for (p, r) in &self.removed {
            if *r == Removal::NamespaceTerminating {
                writeln!(f, "  waited for: {p} (its namespace was being deleted)")?;
            }
        }
        for (p, w) in &self.warnings {
            writeln!(f, "  warning: {p}: {w}")?;
        }
        for (p, why) in &self.skipped {
            writeln!(f, "  skipped: {p} ({why})")?;
        }
        Ok(())
    }
}

/// Cordons `target.node` and drains it. See the module docs for how this differs from
/// `kubectl drain`. On every error the node stays cordoned; call [`uncordon_if_ours`] on the
/// failure path if the caller wants it schedulable again.
pub async fn drain(
    clients: &Clients,
    target: &DrainTarget,
    config: &DrainConfig,
) -> Result<DrainReport, DrainError> {
    drain_shared(clients, target, config, None).await
}

/// [`drain`], where `shared` says other nodes are drained at the same time (worker
/// concurrency above 1): a direct deletion under a PDB that allows no eviction then waits
/// while another drain's pod of that PDB is not replaced yet
/// ([`decide::shared_budget_short`]), so the deletions of all drains in flight together keep to
/// what one node's drain may do.
pub async fn drain_shared(
    clients: &Clients,
    target: &DrainTarget,
    config: &DrainConfig,
    shared: Option<chain_core::waves::ClaimKeys>,
) -> Result<DrainReport, DrainError> {
    config.validate().map_err(DrainError::Config)?;
    let started = Instant::now();
    let deadline = started + config.timeout;
    let node = target.node.as_str();
    let mut report = DrainReport {
        node: node.to_string(),
        cordon: None,
        outcome: DrainOutcome::Drained,
        summary: DrainSummary::default(),
        skipped: Vec::new(),
        warnings: Vec::new(),
        fallbacks: Vec::new(),
        removed: Vec::new(),
    };
    if let KillSwitch::Present { reason } = killswitch::check(&clients.api, &target.namespace).await? {
        info!(node, %reason, "kill switch present: not cordoning");
        report.outcome = DrainOutcome::Halted { reason, remaining: Vec::new() };
        return Ok(report);
    }
    let cordon = cordon(&clients.api, node).await?;
    info!(node, cordon = %cordon, "node cordoned");
    report.cordon = Some(cordon);
    let policy = config.policy(target.self_pod.clone());
    let selection = select_on_node(&clients.api, node, &policy).await?;
    if !selection.refuse.is_empty() {
        return Err(DrainError::Refused { node: node.into(), pods: selection.refuse });
    }
    for (p, w) in &selection.warnings {
        warn!(node, pod = %p, "{w}");
    }
    for (p, why) in &skipped_view(&selection) {
        info!(node, pod = %p, "skipping pod: {why}");
    }
    report.skipped = selection.skip.clone();
    report.warnings = selection.warnings.clone();
    info!(
        node,
        evict = selection.evict.len(),
        delete_finished = selection.delete.len(),
        terminating = selection.terminating.len(),
        skipped = selection.skip.len(),
        "draining"
    );
    let mut engine = Engine::new(clients, target, config, policy, selection);
    engine.shared = shared;
    let result = engine.run(deadline).await;
    engine.summary.duration = started.elapsed();
    engine.summary.blocked_time = engine.blocked.total(Instant::now());
    engine.summary.remaining =
        engine.tracks.iter().filter(|t| !matches!(t.state, State::Gone)).count() as u32;
    report.fallbacks = std::mem::take(&mut engine.fallbacks);
    report.removed = engine.removed();
    report.summary = engine.summary.clone();
    match result {
        Ok(outcome) => {
            info!(node, summary = %report.summary, "drain finished");
            report.outcome = outcome;
            Ok(report)
        }
        Err(DrainError::Timeout { node, after, remaining, .. }) => Err(DrainError::Timeout {
            node,
            after,
            remaining,
            summary: Box::new(report.summary),
            removed: report.removed,
        }),
        Err(e) => Err(e),
    }
}

fn skipped_view(selection: &Selection) -> Vec<(PodRef, String)> {
    selection.skip.iter().map(|(p, r)| (p.clone(), r.to_string())).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Evict,
    DeleteFinished,
    Terminating,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Queued {
        not_before: Instant,
    },
    InFlight,
    /// Eviction or deletion accepted; waiting for the pod to go.
    Requested,
    Gone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Evict,
    /// A direct DELETE: a finished pod (`None`) or a fallback.
    Delete(Option<FallbackKind>),
}

struct Track {
    /// The pod as last seen (the watch keeps it current: readiness decides fallbacks).
    pod: Pod,
    key: PodRef,
    kind: Kind,
    state: State,
    refusals: u32,
    transient: u32,
    blocked_since: Option<Instant>,
    in_blocked_clock: bool,
    last: Option<Remaining>,
    /// The fallback that will delete it directly, once decided.
    fallback: Option<FallbackKind>,
    /// How it left (or is leaving) the node.
    removal: Option<Removal>,
}

/// What the watch last said about a pod.
#[derive(Debug, Clone)]
struct Seen {
    deleting: bool,
    finalizers: Vec<String>,
}

impl Seen {
    fn of(pod: &Pod) -> Self {
        Self {
            deleting: select::is_terminating(pod),
            finalizers: pod.metadata.finalizers.clone().unwrap_or_default(),
        }
    }
}

/// Wall time with at least one PDB-blocked pod.
#[derive(Debug, Default)]
struct BlockedClock {
    n: usize,
    since: Option<Instant>,
    total: Duration,
}

impl BlockedClock {
    fn enter(&mut self, now: Instant) {
        if self.n == 0 {
            self.since = Some(now);
        }
        self.n += 1;
    }
    fn leave(&mut self, now: Instant) {
        self.n = self.n.saturating_sub(1);
        if self.n == 0
            && let Some(s) = self.since.take()
        {
            self.total += now - s;
        }
    }
    fn total(&self, now: Instant) -> Duration {
        self.total + self.since.map_or(Duration::ZERO, |s| now - s)
    }
}

type Request = futures::future::BoxFuture<'static, (usize, Action, Result<(), kube::Error>)>;

struct Engine<'a> {
    clients: &'a Clients,
    target: &'a DrainTarget,
    config: &'a DrainConfig,
    policy: DrainPolicy,
    tracks: Vec<Track>,
    by_uid: HashMap<String, usize>,
    seen_uids: HashSet<String>,
    present: HashMap<String, Seen>,
    init_buf: Option<HashMap<String, Seen>>,
    watch_ready: bool,
    summary: DrainSummary,
    blocked: BlockedClock,
    fallbacks: Vec<FallbackDeletion>,
    /// Other nodes are drained at the same time: the keys of the claim record on the tool's
    /// namespace, read at each refusal for the order of the drains (see [`drain_shared`]).
    shared: Option<chain_core::waves::ClaimKeys>,
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

impl<'a> Engine<'a> {
    fn new(
        clients: &'a Clients,
        target: &'a DrainTarget,
        config: &'a DrainConfig,
        policy: DrainPolicy,
        selection: Selection,
    ) -> Self {
        let mut engine = Engine {
            clients,
            target,
            config,
            policy,
            tracks: Vec::new(),
            by_uid: HashMap::new(),
            seen_uids: HashSet::new(),
            present: HashMap::new(),
            init_buf: None,
            watch_ready: false,
            summary: DrainSummary::default(),
            blocked: BlockedClock::default(),
            fallbacks: Vec::new(),
            shared: None,
        };
        engine.admit(selection, Instant::now());
        engine
    }

    fn node(&self) -> &str {
        &self.target.node
    }

    /// Adds the pods of a selection to the work list.
    fn admit(&mut self, selection: Selection, now: Instant) {
        self.summary.skipped += selection.skip.len() as u32;
        for (p, _) in &selection.skip {
            self.seen_uids.insert(p.uid.clone());
        }
        for (p, _) in &selection.refuse {
            self.seen_uids.insert(p.uid.clone());
        }
        let groups = [
            (selection.evict, Kind::Evict, State::Queued { not_before: now }),
            (selection.delete, Kind::DeleteFinished, State::Queued { not_before: now }),
            (selection.terminating, Kind::Terminating, State::Requested),
        ];
        for (pods, kind, state) in groups {
            for pod in pods {
                let uid = uid_of(&pod);
                if !self.seen_uids.insert(uid.clone()) && self.by_uid.contains_key(&uid) {
                    continue;
                }
                let removal = (kind == Kind::Terminating).then_some(Removal::WasTerminating);
                if kind == Kind::Terminating {
                    self.summary.already_terminating += 1;
                }
                self.by_uid.insert(uid, self.tracks.len());
                self.tracks.push(Track {
                    key: PodRef::of(&pod),
                    pod,
                    kind,
                    state,
                    refusals: 0,
                    transient: 0,
                    blocked_since: None,
                    in_blocked_clock: false,
                    last: None,
                    fallback: None,
                    removal,
                });
            }
        }
    }

    /// How every pod that is gone left, in order.
    fn removed(&self) -> Vec<(PodRef, Removal)> {
        self.tracks
            .iter()
            .filter(|t| t.state == State::Gone)
            .map(|t| (t.key.clone(), t.removal.clone().unwrap_or(Removal::Vanished)))
            .collect()
    }

    fn outstanding(&self) -> usize {
        self.tracks.iter().filter(|t| t.state != State::Gone).count()
    }

    fn progress(&self, pod: &PodRef, outcome: &str) {
        info!(
            node = self.node(),
            pod = %pod,
            outcome,
            evicted = self.summary.evicted,
            fallback_deleted = self.summary.fallback_deleted,
            deleted_finished = self.summary.deleted_finished,
            remaining = self.outstanding(),
            "pod {outcome}"
        );
    }

    fn leave_blocked(&mut self, i: usize, now: Instant) {
        if std::mem::take(&mut self.tracks[i].in_blocked_clock) {
            self.blocked.leave(now);
        }
    }

    fn on_event(&mut self, event: watcher::Event<Pod>, now: Instant) {
        match event {
            watcher::Event::Init => self.init_buf = Some(HashMap::new()),
            watcher::Event::InitApply(pod) => {
                if let Some(buf) = self.init_buf.as_mut() {
                    buf.insert(uid_of(&pod), Seen::of(&pod));
                }
                self.consider_new(pod, now);
            }
            watcher::Event::InitDone => {
                self.present = self.init_buf.take().unwrap_or_default();
                self.watch_ready = true;
            }
            watcher::Event::Apply(pod) => {
                self.present.insert(uid_of(&pod), Seen::of(&pod));
                self.consider_new(pod, now);
            }
            watcher::Event::Delete(pod) => {
                self.present.remove(&uid_of(&pod));
            }
        }
    }

    /// A pod we have not seen before showed up on the node (bound after our list, e.g. one
    /// tolerating the cordon): sort it like the others. The seed re-ran its unstick loop every
    /// 60 s for the same reason.
    fn consider_new(&mut self, pod: Pod, now: Instant) {
        let uid = uid_of(&pod);
        if let Some(&i) = self.by_uid.get(&uid) {
            // Keep the tracked copy current: a fallback decision reads its readiness.
            self.tracks[i].pod = pod;
            return;
        }
        if self.seen_uids.contains(&uid) {
            return;
        }
        let key = PodRef::of(&pod);
        // Without a fresh DaemonSet lookup, treat DaemonSet owners as present (skip).
        let selection = select::select([pod], &self.policy, &BTreeSet::new());
        if let Some((_, why)) = selection.refuse.first() {
            warn!(node = self.node(), pod = %key, "pod appeared on the node during the drain and is left alone: {why}");
        } else if selection.to_remove() > 0 {
            info!(node = self.node(), pod = %key, "pod appeared on the node during the drain; adding it");
        }
        self.admit(selection, now);
    }

    /// Marks tracked pods the watch no longer shows as gone (by UID: a same-name replacement
    /// has another UID, kubernetes#34782).
    fn mark_gone(&mut self, now: Instant) {
        if !self.watch_ready {
            return;
        }
        for i in 0..self.tracks.len() {
            let t = &self.tracks[i];
            // Runs on every turn of the drain's loop: look the UID up without copying it.
            let uid = t.pod.metadata.uid.as_deref().unwrap_or_default();
            if matches!(t.state, State::Gone | State::InFlight) || self.present.contains_key(uid) {
                continue;
            }
            self.tracks[i].state = State::Gone;
            self.tracks[i].removal.get_or_insert(Removal::Vanished);
            self.leave_blocked(i, now);
            let key = self.tracks[i].key.clone();
            self.progress(&key, "gone");
        }
    }

    fn next_ready(&self, now: Instant) -> Option<usize> {
        self.tracks.iter().position(|t| matches!(t.state, State::Queued { not_before } if not_before <= now))
    }

    fn next_due(&self) -> Option<Instant> {
        self.tracks
            .iter()
            .filter_map(|t| match t.state {
                State::Queued { not_before } => Some(not_before),
                _ => None,
            })
            .min()
    }

    fn start(&mut self, i: usize) -> Request {
        let t = &mut self.tracks[i];
        t.state = State::InFlight;
        let key = t.key.clone();
        let grace = self.config.grace_seconds();
        if t.kind == Kind::DeleteFinished || t.fallback.is_some() {
            let action = Action::Delete(t.fallback);
            let api: Api<Pod> = Api::namespaced(self.clients.api.clone(), &key.namespace);
            // The UID precondition keeps a delete from hitting a same-name replacement. A pod
            // deleted for not being Ready also pins the resourceVersion it was judged on, as the
            // eviction API does for unready pods: if it became Ready since, the delete is a 409
            // and the pod goes back to the eviction API.
            let resource_version = (t.fallback == Some(FallbackKind::Unhealthy))
                .then(|| t.pod.metadata.resource_version.clone())
                .flatten();
            let mut dp = DeleteParams::default()
                .preconditions(Preconditions { uid: Some(key.uid.clone()), resource_version });
            dp.grace_period_seconds = grace.map(|g| u32::try_from(g).unwrap_or(u32::MAX));
            async move { (i, action, api.delete(&key.name, &dp).await.map(drop)) }.boxed()
        } else {
            self.summary.eviction_requests += 1;
            let api: Api<Pod> = Api::namespaced(self.clients.evict.clone(), &key.namespace);
            // A typed Eviction: kube's EvictParams serialises `delete_options` in snake case,
            // which the apiserver ignores, so a grace override would be lost (rust-ecosystem.md §0.3).
            let body = Eviction {
                metadata: ObjectMeta {
                    name: Some(key.name.clone()),
                    namespace: Some(key.namespace.clone()),
                    ..Default::default()
                },
                delete_options: grace
                    .map(|g| DeleteOptions { grace_period_seconds: Some(g), ..Default::default() }),
            };
            async move {
                let res = api
                    .create_subresource::<_, serde_json::Value>(
                        "eviction",
                        &key.name,
                        &PostParams::default(),
                        &body,
                    )
                    .await
                    .map(drop);
                (i, Action::Evict, res)
            }
            .boxed()
        }
    }

    fn retry_later(&mut self, i: usize, retry_after: Option<Duration>, attempt: u32, now: Instant) {
        let delay = outcome::retry_delay(
            attempt,
            retry_after,
            self.config.backoff_min,
            self.config.backoff_max,
            fastrand::f64(),
        );
        self.tracks[i].state = State::Queued { not_before: now + delay };
    }

    async fn on_result(
        &mut self,
        i: usize,
        action: Action,
        result: Result<(), kube::Error>,
        now: Instant,
    ) -> Result<(), DrainError> {
        let key = self.tracks[i].key.clone();
        match action {
            Action::Evict => match classify_eviction(result) {
                Ok(EvictOutcome::Evicted) => {
                    let t = &mut self.tracks[i];
                    t.state = State::Requested;
                    t.transient = 0;
                    t.removal = Some(Removal::Evicted { refusals: t.refusals });
                    self.summary.evicted += 1;
                    self.leave_blocked(i, now);
                    self.progress(&key, "evicted");
                }
                Ok(EvictOutcome::Gone) => {
                    self.tracks[i].state = State::Gone;
                    self.tracks[i].removal = Some(Removal::Vanished);
                    self.summary.evicted += 1;
                    self.leave_blocked(i, now);
                    self.progress(&key, "already gone");
                }
                Ok(EvictOutcome::NamespaceTerminating { namespace }) => {
                    // Never an abort: the namespace controller deletes the pod; wait for it.
                    let t = &mut self.tracks[i];
                    t.state = State::Requested;
                    t.transient = 0;
                    t.removal = Some(Removal::NamespaceTerminating);
                    t.last = Some(Remaining::NamespaceTerminating { namespace: namespace.clone() });
                    self.summary.namespace_terminating += 1;
                    self.leave_blocked(i, now);
                    info!(
                        node = self.node(),
                        pod = %key,
                        namespace,
                        "namespace is being deleted (eviction refused with 403 NamespaceTerminating); waiting for the pod to go"
                    );
                }
                Ok(EvictOutcome::Blocked { pdb, message, retry_after }) => {
                    self.refused(i, now);
                    self.tracks[i].last =
                        Some(Remaining::Blocked { pdb, message, since: Duration::ZERO, why: None });
                    self.after_refusal(i, retry_after, now).await;
                }
                Ok(EvictOutcome::MultiplePdbs { .. }) => {
                    self.refused(i, now);
                    self.tracks[i].last = Some(Remaining::MultiplePdbs { pdbs: Vec::new(), why: None });
                    self.after_refusal(i, None, now).await;
                }
                Err(EvictError::Transient(e)) => self.transient(i, e, false, now)?,
                Err(EvictError::Fatal(source)) => {
                    return Err(DrainError::Evict {
                        pod: key,
                        node: self.node().into(),
                        source: Box::new(source),
                    });
                }
            },
            Action::Delete(fallback) => match result {
                Ok(()) => {
                    self.tracks[i].state = State::Requested;
                    match fallback {
                        Some(kind) => {
                            self.tracks[i].removal = Some(Removal::Deleted(kind));
                            if kind == FallbackKind::Unhealthy {
                                self.summary.unhealthy_deleted += 1;
                                self.leave_blocked(i, now);
                                self.progress(&key, "deleted (not Ready; its budget cannot recover)");
                            } else {
                                self.summary.fallback_deleted += 1;
                                self.leave_blocked(i, now);
                                self.progress(&key, "deleted by PDB fallback");
                            }
                        }
                        None => {
                            self.tracks[i].removal = Some(Removal::DeletedFinished);
                            self.summary.deleted_finished += 1;
                            self.progress(&key, "deleted (finished)");
                        }
                    }
                }
                // A pod judged not Ready changed since (its resourceVersion precondition
                // failed): back to the eviction API, which decides on its current state.
                Err(kube::Error::Api(s)) if s.code == 409 && fallback == Some(FallbackKind::Unhealthy) => {
                    info!(node = self.node(), pod = %key, "pod changed before its deletion as not Ready; evicting it again instead");
                    self.fallbacks.retain(|f| !(f.pod == key && f.kind == FallbackKind::Unhealthy));
                    let t = &mut self.tracks[i];
                    t.fallback = None;
                    let attempt = t.refusals;
                    self.retry_later(i, None, attempt, now);
                }
                // 404: gone; 409: the UID precondition failed, so the pod we meant is gone.
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
                    self.tracks[i].state = State::Gone;
                    self.tracks[i].removal.get_or_insert(Removal::Vanished);
                    self.leave_blocked(i, now);
                    self.progress(&key, "already gone");
                }
                Err(e @ kube::Error::Api(_)) if !is_transient_api(&e) => {
                    return Err(DrainError::Delete {
                        pod: key,
                        node: self.node().into(),
                        source: Box::new(e),
                    });
                }
                Err(e) => self.transient(i, e, true, now)?,
            },
        }
        Ok(())
    }

    fn refused(&mut self, i: usize, now: Instant) {
        self.summary.eviction_refusals += 1;
        let t = &mut self.tracks[i];
        t.refusals += 1;
        t.transient = 0;
        t.blocked_since.get_or_insert(now);
        if !t.in_blocked_clock {
            t.in_blocked_clock = true;
            self.blocked.enter(now);
        }
    }

    fn transient(&mut self, i: usize, e: kube::Error, delete: bool, now: Instant) -> Result<(), DrainError> {
        let node = self.target.node.as_str();
        let t = &mut self.tracks[i];
        t.transient += 1;
        let (key, n) = (t.key.clone(), t.transient);
        if n > MAX_TRANSIENT_ERRORS {
            let node = node.to_string();
            return Err(if delete {
                DrainError::Delete { pod: key, node, source: Box::new(e) }
            } else {
                DrainError::Evict { pod: key, node, source: Box::new(e) }
            });
        }
        warn!(node, pod = %key, attempt = n, error = %e, "transient error; retrying");
        t.last = Some(Remaining::Failing { error: e.to_string() });
        self.retry_later(i, None, n - 1, now);
        Ok(())
    }

    /// The drains in flight that go before this one and are not over yet
    /// ([`chain_core::waves::Claims::draining_ahead_of`]): the claim record, then each node
    /// ahead of this one.
    async fn claims_ahead(&self, keys: &chain_core::waves::ClaimKeys) -> anyhow::Result<Vec<String>> {
        let ns = Api::<k8s_openapi::api::core::v1::Namespace>::all(self.clients.api.clone())
            .get(&self.target.namespace)
            .await?;
        let claims = chain_core::waves::Claims::parse(keys, &ns.metadata.annotations.unwrap_or_default())
            .map_err(|e| anyhow::anyhow!(e))?;
        let node = self.target.node.as_str();
        let api: Api<Node> = Api::all(self.clients.api.clone());
        let mut ahead = Vec::new();
        for name in claims.ahead_of(node) {
            if let Some(n) = api.get_opt(&name).await? {
                ahead.push(n);
            }
        }
        Ok(claims.draining_ahead_of(node, &ahead))
    }

    /// After a 429 or a multi-PDB 500: read the budgets (and, for a pod under several PDBs,
    /// the namespace's pods), then [`decide::decide`] between a direct delete and a retry.
    async fn after_refusal(&mut self, i: usize, retry_after: Option<Duration>, now: Instant) {
        let ns = self.tracks[i].key.namespace.clone();
        let pdbs = match pdbs_in(&self.clients.api, &ns, self.node()).await {
            Ok(p) => p,
            Err(e) => {
                warn!(node = self.node(), error = %e, "cannot read PodDisruptionBudgets; retrying the eviction later");
                Vec::new()
            }
        };
        let covering: Vec<String> =
            pdb::matching(&self.tracks[i].pod, &pdbs).into_iter().map(pdb::name_of).collect();
        let pods = if covering.len() > 1 || (self.shared.is_some() && !covering.is_empty()) {
            match pods_in(&self.clients.api, &ns, self.node()).await {
                Ok(p) => Some(p),
                Err(e) => {
                    warn!(node = self.node(), error = %e, "cannot read the namespace's pods to count their health; retrying the eviction later");
                    None
                }
            }
        } else {
            None
        };
        // The order of the drains in flight, from the claim record; unreadable: the pods are
        // taken as unread, so a direct deletion waits (fail closed).
        let (ahead, pods): (Vec<String>, _) = match &self.shared {
            None => (vec![], pods),
            Some(keys) => match self.claims_ahead(keys).await {
                Ok(a) => (a, pods),
                Err(e) => {
                    warn!(node = self.node(), error = %e, "cannot read the worker claims; a direct deletion waits");
                    (vec![], None)
                }
            },
        };
        let node = self.target.node.clone();
        let view = decide::View {
            pdbs: &pdbs,
            pods: pods.as_deref(),
            namespace_terminating: false,
            shared_with_other_drains: self
                .shared
                .as_ref()
                .map(|_| decide::Shared { node: node.as_str(), ahead: ahead.as_slice() }),
        };
        let decision = decide::decide(&self.tracks[i].pod, &view, &self.config.rules());
        let node = self.target.node.as_str();
        let t = &mut self.tracks[i];
        let hold = match &decision {
            Decision::Wait(h) => Some(h.to_string()),
            _ => None,
        };
        match &mut t.last {
            Some(Remaining::MultiplePdbs { pdbs, why }) => {
                *pdbs = covering.clone();
                *why = hold;
            }
            Some(Remaining::Blocked { pdb: name, why, .. }) => {
                if name.is_none() && covering.len() == 1 {
                    *name = covering.first().cloned();
                }
                *why = hold;
            }
            _ => {}
        }
        let blocked_for = now - t.blocked_since.unwrap_or(now);
        let key = t.key.clone();
        let refusals = t.refusals;
        match decision {
            Decision::Delete { fallback, after } if blocked_for >= after => {
                warn!(node, pod = %key, pdbs = ?fallback.pdbs, kind = ?fallback.kind, "eviction refused: {}; deleting the pod directly", fallback.why);
                t.fallback = Some(fallback.kind);
                t.state = State::Queued { not_before: now };
                self.fallbacks.push(FallbackDeletion {
                    pod: key,
                    kind: fallback.kind,
                    pdbs: fallback.pdbs,
                    why: fallback.why,
                });
            }
            Decision::Delete { fallback, after } => {
                info!(
                    node,
                    pod = %key,
                    refusals,
                    pdbs = ?covering,
                    "eviction refused: {}; deleted directly once refused for {} (drain.fallback_after)",
                    fallback.why,
                    chain_core::duration::format(after)
                );
                self.retry_later(i, retry_after, refusals - 1, now);
            }
            Decision::Wait(h) => {
                info!(node, pod = %key, refusals, pdbs = ?covering, "eviction refused: {h}; retrying");
                self.retry_later(i, retry_after, refusals - 1, now);
            }
            // The status says it should pass: the API saw a newer state (or a PDB was
            // created since we read them). Ask again.
            Decision::Evict(p) => {
                info!(node, pod = %key, refusals, pdbs = ?covering, "eviction refused although the budgets read now let it pass ({p}); retrying");
                self.retry_later(i, retry_after, refusals - 1, now);
            }
            Decision::NamespaceTerminating => {
                self.retry_later(i, retry_after, refusals - 1, now);
            }
        }
    }

    fn remaining(&self, now: Instant) -> Vec<RemainingPod> {
        self.tracks
            .iter()
            .filter(|t| t.state != State::Gone)
            .map(|t| {
                let seen = self.present.get(&uid_of(&t.pod));
                let why = match (seen, t.state, &t.last) {
                    (Some(s), _, _) if s.deleting => {
                        Remaining::Terminating { finalizers: s.finalizers.clone() }
                    }
                    (_, State::Requested, Some(ns @ Remaining::NamespaceTerminating { .. })) => ns.clone(),
                    (_, State::Requested, _) => Remaining::Terminating { finalizers: Vec::new() },
                    (_, _, Some(Remaining::Blocked { pdb, message, why, .. })) => Remaining::Blocked {
                        pdb: pdb.clone(),
                        message: message.clone(),
                        since: now - t.blocked_since.unwrap_or(now),
                        why: why.clone(),
                    },
                    (_, _, Some(other)) => other.clone(),
                    _ => Remaining::NotStarted,
                };
                RemainingPod { pod: t.key.clone(), why }
            })
            .collect()
    }

    async fn run(&mut self, deadline: Instant) -> Result<DrainOutcome, DrainError> {
        let node = self.node().to_string();
        let pods: Api<Pod> = Api::all(self.clients.api.clone());
        let config = watcher::Config::default().fields(&on_node(&node)).page_size(PAGE);
        let mut events = pin!(watcher(pods, config).default_backoff());
        let mut inflight: FuturesUnordered<Request> = FuturesUnordered::new();
        let interval = self.config.kill_switch_interval;
        let mut next_kill_check = Instant::now() + interval;
        let mut watch_open = true;
        let halt_reason = loop {
            let now = Instant::now();
            self.mark_gone(now);
            if inflight.is_empty() && self.outstanding() == 0 {
                return Ok(DrainOutcome::Drained);
            }
            if now >= deadline {
                return Err(DrainError::Timeout {
                    node: node.clone(),
                    after: self.config.timeout,
                    remaining: self.remaining(now),
                    summary: Box::default(),
                    removed: Vec::new(),
                });
            }
            if now >= next_kill_check {
                if let KillSwitch::Present { reason } =
                    killswitch::check(&self.clients.api, &self.target.namespace).await?
                {
                    break reason;
                }
                next_kill_check = Instant::now() + interval;
            }
            while inflight.len() < self.config.concurrency
                && let Some(i) = self.next_ready(now)
            {
                inflight.push(self.start(i));
            }
            let wake = [self.next_due(), Some(next_kill_check), Some(deadline)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(deadline);
            tokio::select! {
                event = events.next(), if watch_open => match event {
                    Some(Ok(event)) => self.on_event(event, Instant::now()),
                    Some(Err(e)) => {
                        warn!(node = %node, error = %e, "watch on the node's pods failed; it restarts with backoff");
                    }
                    None => {
                        // kube's watcher never ends by itself; if it does, the deadline still holds.
                        watch_open = false;
                        warn!(node = %node, "watch on the node's pods ended");
                    }
                },
                Some((i, action, result)) = inflight.next(), if !inflight.is_empty() => {
                    self.on_result(i, action, result, Instant::now()).await?;
                }
                () = tokio::time::sleep_until(wake) => {}
            }
        };
        warn!(node = %node, reason = %halt_reason, in_flight = inflight.len(), "kill switch present: stopping the drain (no new evictions)");
        let _ = tokio::time::timeout(IN_FLIGHT_GRACE, async {
            while let Some((i, action, result)) = inflight.next().await {
                if let Err(e) = self.on_result(i, action, result, Instant::now()).await {
                    warn!(node = %node, error = %e, "request in flight at halt failed");
                }
            }
        })
        .await;
        // Nothing new may start after a halt: drop anything a result queued.
        Ok(DrainOutcome::Halted { reason: halt_reason, remaining: self.remaining(Instant::now()) })
    }
}

fn is_transient_api(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 429 || s.code >= 500)
}

// ---------------------------------------------------------------------------------------
// Dry run and the subcommands
// ---------------------------------------------------------------------------------------

/// One pod a dry run would evict, and what the drain would decide for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEviction {
    /// The pod.
    pub pod: PodRef,
    /// The PDBs covering it.
    pub pdbs: Vec<String>,
    /// Whether it is Ready.
    pub ready: bool,
    /// The same decision the drain takes ([`decide::decide`]).
    pub decision: Decision,
}

/// What a drain would do, computed from one read of the cluster; nothing is changed.
#[derive(Debug, Clone)]
pub struct DryRunReport {
    /// Node name.
    pub node: String,
    /// The node's cordon now: `None` not cordoned, `Some(true)` by us, `Some(false)` by others.
    pub cordoned: Option<bool>,
    /// Pods to evict, in order, with what the drain would decide for each.
    pub evict: Vec<PlannedEviction>,
    /// Finished pods to delete.
    pub delete: Vec<PodRef>,
    /// Pods already terminating (waited for), with the finalizers holding them.
    pub terminating: Vec<(PodRef, Vec<String>)>,
    /// Pods left alone.
    pub skip: Vec<(PodRef, SkipReason)>,
    /// Pods that would make the drain refuse to start.
    pub refuse: Vec<(PodRef, RefuseReason)>,
    /// kubectl-style warnings.
    pub warnings: Vec<(PodRef, String)>,
    /// What the prediction could not read (it assumes the namespace is not being deleted).
    pub notes: Vec<String>,
    /// The rules used for the prediction.
    pub rules: Rules,
}

/// Predicts, per pod in order, what the drain decides ([`decide::decide`]), playing out each
/// decision on a copy of the budgets so later pods see earlier ones go: an eviction spends a
/// disruption, a Ready pod that goes lowers `currentHealthy`. `namespace_pods` holds the pods
/// of the namespaces read (for pods under several PDBs). Pure.
pub fn plan_evictions(
    pods: &[Pod],
    pdbs: &[PodDisruptionBudget],
    namespace_pods: &std::collections::BTreeMap<String, Vec<Pod>>,
    terminating_namespaces: &BTreeSet<String>,
    rules: &Rules,
) -> Vec<PlannedEviction> {
    let mut pdbs = pdbs.to_vec();
    let mut ns_pods = namespace_pods.clone();
    let mut out = Vec::new();
    for pod in pods {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let view = decide::View {
            pdbs: &pdbs,
            pods: ns_pods.get(&ns).map(Vec::as_slice),
            namespace_terminating: terminating_namespaces.contains(&ns),
            // The dry run plans one node's drain.
            shared_with_other_drains: None,
        };
        let decision = decide::decide(pod, &view, rules);
        let ready = select::is_ready(pod);
        let covering: Vec<usize> = (0..pdbs.len()).filter(|&k| pdb::selects(&pdbs[k], pod)).collect();
        let names: Vec<String> = covering.iter().map(|&k| pdb::name_of(&pdbs[k])).collect();
        let goes = !matches!(decision, Decision::Wait(_) | Decision::NamespaceTerminating);
        if goes {
            for &k in &covering {
                let st = pdbs[k].status.get_or_insert_with(Default::default);
                if let Decision::Evict(decide::Pass::Budget { .. }) = decision {
                    st.disruptions_allowed -= 1;
                }
                if ready {
                    st.current_healthy -= 1;
                    st.disruptions_allowed =
                        st.disruptions_allowed.min((st.current_healthy - st.desired_healthy).max(0));
                }
            }
            if let Some(list) = ns_pods.get_mut(&ns) {
                list.retain(|q| q.metadata.name != pod.metadata.name);
            }
        }
        out.push(PlannedEviction { pod: PodRef::of(pod), pdbs: names, ready, decision });
    }
    out
}

impl fmt::Display for DryRunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "dry run: drain of node {} (nothing was changed)", self.node)?;
        writeln!(
            f,
            "  {}",
            match self.cordoned {
                None => "would cordon the node",
                Some(true) => "node already cordoned by an earlier run of the chain",
                Some(false) => "node already cordoned by someone else (it would stay cordoned)",
            }
        )?;
        if !self.refuse.is_empty() {
            writeln!(f, "  the drain would REFUSE to start (nothing would be evicted):")?;
            for (p, why) in &self.refuse {
                writeln!(f, "    {p} {why}")?;
            }
        }
        for e in &self.evict {
            let pod = &e.pod;
            match &e.decision {
                Decision::Evict(decide::Pass::NoPdb | decide::Pass::Budget { .. }) => {
                    writeln!(f, "  would evict {pod}")?
                }
                Decision::Evict(pass) => writeln!(f, "  would evict {pod} ({pass})")?,
                Decision::Wait(hold) => writeln!(f, "  would evict {pod} ({hold}; retried)")?,
                Decision::Delete { fallback, after }
                    if after.is_zero() && fallback.kind == FallbackKind::Unhealthy =>
                {
                    writeln!(
                        f,
                        "  would delete {pod} directly after its first refused eviction ({})",
                        fallback.why
                    )?
                }
                Decision::Delete { fallback, after } => writeln!(
                    f,
                    "  would evict {pod} ({}; would be deleted directly after {})",
                    fallback.why,
                    chain_core::duration::format(*after)
                )?,
                Decision::NamespaceTerminating => writeln!(
                    f,
                    "  would wait for {pod} (its namespace is being deleted; evictions are refused and the namespace controller deletes it)"
                )?,
            }
        }
        for p in &self.delete {
            writeln!(f, "  would delete {p} (finished)")?;
        }
        for (p, finalizers) in &self.terminating {
            if finalizers.is_empty() {
                writeln!(f, "  would wait for {p} (already terminating)")?;
            } else {
                writeln!(
                    f,
                    "  would wait for {p} (already terminating, held by finalizers {})",
                    finalizers.join(", ")
                )?;
            }
        }
        for (p, why) in &self.skip {
            writeln!(f, "  would skip {p} ({why})")?;
        }
        for (p, w) in &self.warnings {
            writeln!(f, "  warning: {p}: {w}")?;
        }
        for n in &self.notes {
            writeln!(f, "  note: {n}")?;
        }
        let mut blocking: Vec<String> = Vec::new();
        for e in &self.evict {
            let line = match &e.decision {
                Decision::Evict(_) | Decision::NamespaceTerminating => continue,
                Decision::Wait(decide::Hold::NoCurrentStatus { pdb }) => format!("{pdb} (no status yet)"),
                Decision::Wait(
                    decide::Hold::SeveralPdbs { pdbs, .. } | decide::Hold::SharedBudget { pdbs, .. },
                ) => {
                    format!("{} (waits)", pdbs.join(" + "))
                }
                Decision::Wait(decide::Hold::Recovering { pdb, .. }) => format!("{pdb} (waits)"),
                Decision::Delete { fallback, .. } if fallback.kind == FallbackKind::Unhealthy => {
                    format!("{} (not Ready pods deleted)", fallback.pdbs.join(" + "))
                }
                Decision::Delete { fallback, .. } => {
                    format!("{} (fallback delete)", fallback.pdbs.join(" + "))
                }
            };
            if !blocking.contains(&line) {
                blocking.push(line);
            }
        }
        if blocking.is_empty() {
            writeln!(f, "  no PodDisruptionBudget would block")?;
        } else {
            writeln!(f, "  PodDisruptionBudgets that would block: {}", blocking.join(", "))?;
        }
        Ok(())
    }
}

/// Lists what [`drain`] would evict, delete, wait for, skip or refuse, and what it would
/// decide for each pod (the drain's own [`decide::decide`]), from one read of the cluster.
/// Changes nothing (GET and LIST only): the node, its pods, the DaemonSets they name, every
/// PDB, the namespaces of the pods to evict, and the pods of a namespace where a pod is
/// covered by several PDBs.
pub async fn dry_run(
    clients: &Clients,
    target: &DrainTarget,
    config: &DrainConfig,
) -> Result<DryRunReport, DrainError> {
    config.validate().map_err(DrainError::Config)?;
    let node = target.node.as_str();
    let nodes: Api<Node> = Api::all(clients.api.clone());
    let current = nodes.get(node).await.map_err(api_err(format!("read node {node}"), node))?;
    let cordoned = is_cordoned(&current).then(|| cordoned_by_us(&current));
    let selection = select_on_node(&clients.api, node, &config.policy(target.self_pod.clone())).await?;
    let all: Api<PodDisruptionBudget> = Api::all(clients.api.clone());
    let pdbs = all
        .list(&ListParams::default())
        .await
        .map_err(api_err(format!("list PodDisruptionBudgets (dry run of node {node})"), node))?
        .items;
    let namespaces: BTreeSet<String> =
        selection.evict.iter().map(|p| p.metadata.namespace.clone().unwrap_or_default()).collect();
    let mut notes = Vec::new();
    let mut terminating_namespaces = BTreeSet::new();
    let ns_api: Api<Namespace> = Api::all(clients.api.clone());
    for ns in &namespaces {
        match ns_api.get_opt(ns).await {
            Ok(Some(n)) if n.metadata.deletion_timestamp.is_some() => {
                terminating_namespaces.insert(ns.clone());
            }
            Ok(_) => {}
            // Predicting is worth more than failing on one unreadable namespace.
            Err(e) => notes.push(format!("could not read namespace {ns} (assumed not being deleted): {e}")),
        }
    }
    let mut namespace_pods = std::collections::BTreeMap::new();
    for ns in selection
        .evict
        .iter()
        .filter(|p| pdb::matching(p, &pdbs).len() > 1)
        .map(|p| p.metadata.namespace.clone().unwrap_or_default())
        .collect::<BTreeSet<_>>()
    {
        let pods = pods_in(&clients.api, &ns, node).await?;
        namespace_pods.insert(ns, pods);
    }
    let rules = config.rules();
    Ok(DryRunReport {
        node: node.into(),
        cordoned,
        evict: plan_evictions(&selection.evict, &pdbs, &namespace_pods, &terminating_namespaces, &rules),
        delete: selection.delete.iter().map(PodRef::of).collect(),
        terminating: selection
            .terminating
            .iter()
            .map(|p| (PodRef::of(p), p.metadata.finalizers.clone().unwrap_or_default()))
            .collect(),
        skip: selection.skip,
        refuse: selection.refuse,
        warnings: selection.warnings,
        notes,
        rules,
    })
}

/// The `drain` subcommand: drains `node` (or, with `dry_run`, says what it would do) and
/// returns the printable report. The pod running it is found from `POD_NAMESPACE`/`POD_NAME`.
/// A kill-switch halt is `Ok` (the report says so); a refusal, a timeout or an API failure is
/// an error and leaves the node cordoned.
pub async fn drain_command(
    clients: &Clients,
    node: &str,
    namespace: &str,
    config: &DrainConfig,
    dry_run: bool,
) -> anyhow::Result<String> {
    let target =
        DrainTarget { node: node.into(), namespace: namespace.into(), self_pod: self_pod_from_env() };
    if dry_run {
        return Ok(self::dry_run(clients, &target, config).await?.to_string());
    }
    Ok(drain(clients, &target, config).await?.to_string())
}

/// The `uncordon` subcommand: uncordons `node` only if the chain cordoned it.
pub async fn uncordon_command(clients: &Clients, node: &str) -> anyhow::Result<String> {
    Ok(match uncordon_if_ours(&clients.api, node).await? {
        Uncordon::Uncordoned => {
            format!("node {node}: uncordoned (the upgrade chain had cordoned it)")
        }
        Uncordon::NotOurs { cordoned: true } => {
            format!("node {node}: left cordoned (cordoned by someone else, not by the upgrade chain)")
        }
        Uncordon::NotOurs { cordoned: false } => {
            format!("node {node}: not cordoned; nothing to do")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chain_core::drain::fixtures::{PdbFixture as _, PodFixture as _};

    fn plan(pods: &[Pod], pdbs: &[PodDisruptionBudget]) -> Vec<PlannedEviction> {
        plan_evictions(pods, pdbs, &Default::default(), &BTreeSet::new(), &DrainConfig::default().rules())
    }

    #[test]
    fn plan_spends_each_budget_in_order() {
        let web = |n: &str| Pod::test(n).label("app", "web");
        let pods =
            vec![web("web-0"), web("web-1"), Pod::test("anubis-0").label("app", "anubis"), Pod::test("free")];
        let pdbs = vec![
            PodDisruptionBudget::test("web").selecting("app", "web").min_available(2).status(1, 3, 2, 3),
            PodDisruptionBudget::test("anubis")
                .selecting("app", "anubis")
                .min_available(1)
                .status(0, 1, 1, 1),
        ];
        let plan = plan(&pods, &pdbs);
        assert_eq!(plan[0].decision, Decision::Evict(decide::Pass::Budget { pdb: "web".into(), allowed: 1 }));
        assert!(
            matches!(&plan[1].decision, Decision::Wait(decide::Hold::Recovering { pdb, healthy: 2, .. }) if pdb == "web"),
            "the first eviction spent the budget: {:?}",
            plan[1].decision
        );
        assert!(
            matches!(&plan[2].decision, Decision::Delete { fallback, .. } if fallback.kind == FallbackKind::Deadlock && fallback.pdbs == ["anubis"])
        );
        assert_eq!(plan[3].decision, Decision::Evict(decide::Pass::NoPdb));
        assert!(plan[3].pdbs.is_empty());
    }

    #[test]
    fn plan_waits_for_multi_pdb_pods_whose_pods_were_not_read() {
        let pdbs = vec![
            PodDisruptionBudget::test("a").selecting("app", "web").status(5, 5, 0, 5),
            PodDisruptionBudget::test("b").empty_selector().status(5, 5, 0, 5),
        ];
        let pods = [Pod::test("web-0").label("app", "web")];
        let p = plan(&pods, &pdbs);
        assert!(
            matches!(&p[0].decision, Decision::Wait(decide::Hold::SeveralPdbs { pdbs, .. }) if pdbs == &["a", "b"])
        );
        let read = std::collections::BTreeMap::from([("default".to_string(), pods.to_vec())]);
        let p = plan_evictions(&pods, &pdbs, &read, &BTreeSet::new(), &DrainConfig::default().rules());
        assert!(
            matches!(&p[0].decision, Decision::Delete { fallback, .. } if fallback.kind == FallbackKind::SeveralPdbs)
        );
    }

    #[test]
    fn plan_deletes_unready_pods_and_honours_always_allow() {
        let crash = |n: &str| Pod::test(n).label("app", "crash").not_ready();
        let pods =
            [crash("crash-0"), crash("crash-1"), Pod::test("always-0").label("app", "always").not_ready()];
        let pdbs = vec![
            PodDisruptionBudget::test("crash").selecting("app", "crash").status(0, 0, 2, 3),
            PodDisruptionBudget::test("always").selecting("app", "always").always_allow().status(0, 0, 2, 3),
        ];
        let p = plan(&pods, &pdbs);
        for e in &p[..2] {
            assert!(
                matches!(&e.decision, Decision::Delete { fallback, after } if fallback.kind == FallbackKind::Unhealthy && after.is_zero()),
                "{:?}",
                e.decision
            );
            assert!(!e.ready);
        }
        assert!(matches!(p[2].decision, Decision::Evict(decide::Pass::Unhealthy { .. })));
        let terminating = BTreeSet::from(["default".to_string()]);
        let p =
            plan_evictions(&pods, &pdbs, &Default::default(), &terminating, &DrainConfig::default().rules());
        assert!(p.iter().all(|e| e.decision == Decision::NamespaceTerminating));
    }

    #[test]
    fn blocked_clock_counts_overlaps_once() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = BlockedClock::default();
        c.enter(t0);
        c.enter(t0 + s(1));
        c.leave(t0 + s(2));
        assert_eq!(c.total(t0 + s(3)), s(3), "still one pod blocked");
        c.leave(t0 + s(4));
        c.enter(t0 + s(10));
        c.leave(t0 + s(11));
        assert_eq!(c.total(t0 + s(20)), s(5));
    }

    #[test]
    fn cordon_annotation_is_recognised() {
        let mut n = Node::default();
        assert!(!cordoned_by_us(&n));
        n.metadata.annotations = Some([(CORDONED_BY.to_string(), "someone-else".to_string())].into());
        assert!(!cordoned_by_us(&n));
        n.metadata.annotations = Some([(CORDONED_BY.to_string(), OWNER.to_string())].into());
        assert!(cordoned_by_us(&n));
    }
}
