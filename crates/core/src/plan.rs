//! The chain planner: pure functions over a snapshot of the nodes. No I/O.
//!
//! From a [`Snapshot`] it decides which nodes are control planes and which are workers (in
//! natural order, so `k8s-node2` comes before `k8s-node10`), which are off target, what runs
//! after any phase, and where each Job runs with which tolerations. The one rule it never
//! breaks: a Job never runs on the node it drains (seed failure 3: the agent drained its own
//! node and died mid-upgrade).

use std::{cmp::Ordering, fmt, net::IpAddr, str::FromStr};

use k8s_openapi::api::core::v1::{Node, Toleration};
use serde::Serialize;

use crate::{settings::ControlPlaneSelector, version::Version};

/// One phase of the chain, as the `PHASE` env var names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Gates and preparation; runs on a worker.
    Preflight,
    /// The first control-plane node: `kubeadm upgrade apply`.
    Master,
    /// A further control-plane node of an HA cluster: `kubeadm upgrade node`.
    ControlPlane,
    /// One worker: drain, `kubeadm upgrade node`, uncordon, soak.
    Worker,
    /// Final verification and cleanup.
    Postflight,
}

impl Phase {
    pub const ALL: [Phase; 5] =
        [Phase::Preflight, Phase::Master, Phase::ControlPlane, Phase::Worker, Phase::Postflight];

    /// The `PHASE` value and Job-name component.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Preflight => "preflight",
            Phase::Master => "master",
            Phase::ControlPlane => "control-plane",
            Phase::Worker => "worker",
            Phase::Postflight => "postflight",
        }
    }

    /// Phases that act on one node need `TARGET_NODE`.
    pub fn targets_a_node(self) -> bool {
        matches!(self, Phase::Master | Phase::ControlPlane | Phase::Worker)
    }

    /// The `--role` of `update_k8s.sh` for phases that upgrade a node.
    pub fn script_role(self) -> Option<&'static str> {
        match self {
            Phase::Master => Some("master"),
            Phase::ControlPlane => Some("control-plane"),
            Phase::Worker => Some("worker"),
            Phase::Preflight | Phase::Postflight => None,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Phase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| {
            format!(
                "unknown phase {s:?}: expected one of preflight, master, control-plane, worker, postflight"
            )
        })
    }
}

/// Patch (same minor) or minor (next minor) upgrade, as the `KIND` env var names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Patch,
    Minor,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Patch => "patch",
            Kind::Minor => "minor",
        }
    }

    /// The kind of an upgrade from `running` to `target`.
    pub fn between(running: Version, target: Version) -> Kind {
        if running.same_minor(&target) { Kind::Patch } else { Kind::Minor }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "patch" => Ok(Kind::Patch),
            "minor" => Ok(Kind::Minor),
            _ => Err(format!("unknown kind {s:?}: expected patch or minor")),
        }
    }
}

/// A node's role in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    ControlPlane,
    Worker,
}

/// A taint, reduced to what placement needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaintView {
    pub key: String,
    pub value: Option<String>,
    pub effect: String,
}

/// What the planner knows about one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeView {
    pub name: String,
    pub role: Role,
    /// `status.nodeInfo.kubeletVersion`, parsed (with or without `v`).
    pub kubelet: Version,
    /// The first `InternalIP`: everything on the node goes over SSH to it, never DNS (seed
    /// failure 5: bare hostnames did not resolve inside pods).
    pub internal_ip: IpAddr,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// Ready condition is `True`.
    pub ready: bool,
    pub taints: Vec<TaintView>,
    /// The node's own upgrade started and was not seen through
    /// ([`crate::resume::UPGRADE_STARTED_ANNOTATION`]): it waits for an operator's
    /// acknowledgement, and no phase touches it until then.
    pub upgrade_started: Option<crate::resume::UpgradeStarted>,
}

impl NodeView {
    /// A Job pinned here can start: Ready and not cordoned.
    pub fn schedulable(&self) -> bool {
        self.ready && !self.unschedulable
    }

    /// The kubelet is at the target or past it: no phase touches the node. Past it only on a
    /// snapshot [`check_target`] refuses, so a node newer than a target is never taken back
    /// (kubeadm cannot downgrade).
    pub fn on_target(&self, target: Version) -> bool {
        self.kubelet >= target
    }
}

/// Why the cluster cannot be planned. Every variant names the node or input at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the cluster has no nodes")]
    NoNodes,
    #[error(
        "single-node cluster ({node}): a chain Job never runs on the node it drains, so at least one \
         worker is needed besides the control plane"
    )]
    SingleNode { node: String },
    #[error(
        "the cluster has no worker (control-plane nodes: {control_planes}): chain Jobs for the control \
         plane run on a worker so they never run on the node they drain"
    )]
    NoWorker { control_planes: String },
    #[error("no node carries the control-plane label (checked with {selector:?}); set control_plane_label")]
    NoControlPlane { selector: String },
    #[error("node {node} has no InternalIP address: the chain reaches nodes by InternalIP only")]
    MissingInternalIp { node: String },
    #[error("node {node} has an InternalIP {value:?} that is not an IP address")]
    BadInternalIp { node: String, value: String },
    #[error("node {node} reports no kubelet version (status.nodeInfo.kubeletVersion)")]
    MissingKubeletVersion { node: String },
    #[error("node {node} reports kubelet version {value:?}, which is not vX.Y.Z")]
    BadKubeletVersion { node: String, value: String },
    #[error("node name {} is invalid: {reason}", crate::names::shorten(node))]
    InvalidNodeName { node: String, reason: String },
    #[error("node {node} is listed twice")]
    DuplicateNode { node: String },
    #[error("nodes {a} and {b} would both get the Job name {job}; rename one of them")]
    JobNameCollision { a: String, b: String, job: String },
    #[error(
        "target version {target} is older than the kubelet of {nodes}: kubeadm cannot downgrade, and the chain \
         never takes a node back"
    )]
    Downgrade { target: Version, nodes: String },
    #[error("target version {target} skips a minor from {running}: kubeadm upgrades one minor at a time")]
    SkipsAMinor { running: Version, target: Version },
    #[error("node {node} does not exist")]
    UnknownNode { node: String },
    #[error("phase {phase} targets node {node}, which is a {actual}")]
    WrongRole { phase: Phase, node: String, actual: &'static str },
    #[error("phase {phase} needs a target node (TARGET_NODE)")]
    MissingTargetNode { phase: Phase },
    #[error("phase {phase} takes no target node, got {node:?}")]
    UnexpectedTargetNode { phase: Phase, node: String },
    #[error("no Ready, uncordoned worker to run the {phase} Job on")]
    NoSchedulableWorker { phase: Phase },
    #[error("no Ready, uncordoned control-plane node to run the {phase} Job on")]
    NoSchedulableControlPlane { phase: Phase },
}

/// The nodes of the cluster, split by role and in natural order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub control_planes: Vec<NodeView>,
    pub workers: Vec<NodeView>,
}

impl Snapshot {
    /// Builds the snapshot from API objects. Fails on a node the chain could not handle.
    pub fn from_nodes(nodes: &[Node], selector: &ControlPlaneSelector) -> Result<Self, PlanError> {
        let views = nodes.iter().map(|n| node_view(n, selector)).collect::<Result<Vec<_>, _>>()?;
        Self::from_views(views, selector)
    }

    /// Builds the snapshot from already-extracted views (used by tests and benchmarks).
    pub fn from_views(mut views: Vec<NodeView>, selector: &ControlPlaneSelector) -> Result<Self, PlanError> {
        if views.is_empty() {
            return Err(PlanError::NoNodes);
        }
        // Names from a saved node list are unchecked input (the apiserver's always pass).
        let mut names = std::collections::HashSet::with_capacity(views.len());
        for v in &views {
            crate::names::check_dns_subdomain(&v.name)
                .map_err(|reason| PlanError::InvalidNodeName { node: v.name.clone(), reason })?;
            if !names.insert(v.name.as_str()) {
                return Err(PlanError::DuplicateNode { node: v.name.clone() });
            }
        }
        if views.len() == 1 {
            return Err(PlanError::SingleNode { node: views.remove(0).name });
        }
        views.sort_by(|a, b| natural_cmp(&a.name, &b.name));
        let (control_planes, workers): (Vec<_>, Vec<_>) =
            views.into_iter().partition(|v| v.role == Role::ControlPlane);
        if control_planes.is_empty() {
            let selector = match &selector.value {
                Some(v) => format!("{}={v}", selector.key),
                None => selector.key.clone(),
            };
            return Err(PlanError::NoControlPlane { selector });
        }
        if workers.is_empty() {
            let names: Vec<_> = control_planes.iter().map(|n| n.name.as_str()).collect();
            return Err(PlanError::NoWorker { control_planes: names.join(", ") });
        }
        Ok(Self { control_planes, workers })
    }

    /// Every node, control planes first.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeView> {
        self.control_planes.iter().chain(&self.workers)
    }

    pub fn node(&self, name: &str) -> Option<&NodeView> {
        self.nodes().find(|n| n.name == name)
    }

    /// The control-plane node that runs `kubeadm upgrade apply`.
    pub fn first_control_plane(&self) -> &NodeView {
        &self.control_planes[0]
    }

    /// The oldest kubelet: the running version of the cluster (seed failure 15: reading only the
    /// master's version judged a half-upgraded cluster "up to date").
    pub fn running_version(&self) -> Version {
        self.nodes().map(|n| n.kubelet).min().expect("a snapshot has nodes")
    }

    /// Nodes whose kubelet is not the target, control planes first, in natural order.
    pub fn off_target(&self, target: Version) -> impl Iterator<Item = &NodeView> {
        self.nodes().filter(move |n| !n.on_target(target))
    }
}

/// Extracts the planner's view of one Node.
pub fn node_view(node: &Node, selector: &ControlPlaneSelector) -> Result<NodeView, PlanError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let status = node.status.as_ref();
    let raw_version = status
        .and_then(|s| s.node_info.as_ref())
        .map(|i| i.kubelet_version.as_str())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| PlanError::MissingKubeletVersion { node: name.clone() })?;
    let kubelet = raw_version
        .parse()
        .map_err(|_| PlanError::BadKubeletVersion { node: name.clone(), value: raw_version.into() })?;
    let raw_ip = status
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
        .map(|a| a.address.as_str())
        .ok_or_else(|| PlanError::MissingInternalIp { node: name.clone() })?;
    let internal_ip =
        raw_ip.parse().map_err(|_| PlanError::BadInternalIp { node: name.clone(), value: raw_ip.into() })?;
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    let spec = node.spec.as_ref();
    let taints = spec
        .and_then(|s| s.taints.as_ref())
        .map(|ts| {
            ts.iter()
                .map(|t| TaintView { key: t.key.clone(), value: t.value.clone(), effect: t.effect.clone() })
                .collect()
        })
        .unwrap_or_default();
    let role =
        if selector.matches(node.metadata.labels.as_ref()) { Role::ControlPlane } else { Role::Worker };
    Ok(NodeView {
        name,
        role,
        kubelet,
        internal_ip,
        unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
        ready,
        taints,
        upgrade_started: crate::resume::UpgradeStarted::of(node),
    })
}

/// One Job of the chain. The node phases carry their node, so a node phase without a node (or
/// a preflight with one) cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Step {
    /// Gates and preparation.
    Preflight,
    /// `kubeadm upgrade apply` on the first control-plane node.
    Master { node: String },
    /// `kubeadm upgrade node` on a further control-plane node of an HA cluster.
    ControlPlane { node: String },
    /// One worker.
    Worker { node: String },
    /// Final verification and cleanup.
    Postflight,
}

impl Step {
    /// The master step of `node`.
    pub fn master(node: impl Into<String>) -> Self {
        Step::Master { node: node.into() }
    }

    /// The control-plane step of `node`.
    pub fn control_plane(node: impl Into<String>) -> Self {
        Step::ControlPlane { node: node.into() }
    }

    /// The worker step of `node`.
    pub fn worker(node: impl Into<String>) -> Self {
        Step::Worker { node: node.into() }
    }

    /// A step from `PHASE` and `TARGET_NODE` (empty = none), checking only that they pair:
    /// node phases need a node, the others take none. [`Step::validate`] checks the rest.
    pub fn from_parts(phase: Phase, node: Option<&str>) -> Result<Self, PlanError> {
        match (phase, node.filter(|n| !n.is_empty())) {
            (Phase::Preflight, None) => Ok(Step::Preflight),
            (Phase::Postflight, None) => Ok(Step::Postflight),
            (Phase::Master, Some(n)) => Ok(Step::master(n)),
            (Phase::ControlPlane, Some(n)) => Ok(Step::control_plane(n)),
            (Phase::Worker, Some(n)) => Ok(Step::worker(n)),
            (Phase::Master | Phase::ControlPlane | Phase::Worker, None) => {
                Err(PlanError::MissingTargetNode { phase })
            }
            (Phase::Preflight | Phase::Postflight, Some(n)) => {
                Err(PlanError::UnexpectedTargetNode { phase, node: n.to_string() })
            }
        }
    }

    /// The phase, as `PHASE` names it.
    pub fn phase(&self) -> Phase {
        match self {
            Step::Preflight => Phase::Preflight,
            Step::Master { .. } => Phase::Master,
            Step::ControlPlane { .. } => Phase::ControlPlane,
            Step::Worker { .. } => Phase::Worker,
            Step::Postflight => Phase::Postflight,
        }
    }

    /// The node a node phase acts on.
    pub fn node(&self) -> Option<&str> {
        match self {
            Step::Master { node } | Step::ControlPlane { node } | Step::Worker { node } => Some(node),
            Step::Preflight | Step::Postflight => None,
        }
    }

    /// The deterministic name of this step's Job for `target` (see [`job_name`]).
    pub fn job_name(&self, target: Version) -> String {
        job_name(self.phase(), target, self.node())
    }

    /// Checks that the target node exists and has the role the phase acts on; returns it.
    pub fn validate<'s>(&self, snap: &'s Snapshot) -> Result<Option<&'s NodeView>, PlanError> {
        let phase = self.phase();
        let Some(name) = self.node() else { return Ok(None) };
        let node = snap.node(name).ok_or_else(|| PlanError::UnknownNode { node: name.to_string() })?;
        let wrong = |actual| Err(PlanError::WrongRole { phase, node: name.to_string(), actual });
        match (phase, node.role) {
            (Phase::Worker, Role::ControlPlane) => wrong("control-plane node"),
            (Phase::Master | Phase::ControlPlane, Role::Worker) => wrong("worker"),
            _ => Ok(Some(node)),
        }
    }
}

/// Serialised as `{phase, node}` (`node` null for preflight and postflight), as `plan -o json`
/// prints it.
impl Serialize for Step {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut st = s.serialize_struct("Step", 2)?;
        st.serialize_field("phase", &self.phase())?;
        st.serialize_field("node", &self.node())?;
        st.end()
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.node() {
            Some(n) => write!(f, "{} {n}", self.phase()),
            None => write!(f, "{}", self.phase()),
        }
    }
}

/// What follows a phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Next {
    Step(Step),
    End,
}

/// The step after `done`, computed from the live snapshot.
///
/// The node `done` worked on is excluded even if it still looks off target: the phase may have
/// skipped or the snapshot may predate its upgrade, and re-targeting it would loop.
/// Control planes go one at a time before any worker (HA: the first with
/// `kubeadm upgrade apply`, the rest with `kubeadm upgrade node`).
pub fn next_after(snap: &Snapshot, target: Version, done: &Step) -> Next {
    let exclude = done.node();
    let pending = |nodes: &[NodeView]| {
        nodes
            .iter()
            .find(|n| !n.on_target(target) && Some(n.name.as_str()) != exclude)
            .map(|n| n.name.clone())
    };
    match done {
        Step::Preflight => Next::Step(Step::master(&snap.first_control_plane().name)),
        Step::Master { .. } | Step::ControlPlane { .. } => {
            // The first control plane is the master's; later control planes use `upgrade node`.
            let others = &snap.control_planes[1..];
            if let Some(node) = pending(others) {
                Next::Step(Step::control_plane(node))
            } else if let Some(node) = pending(&snap.workers) {
                Next::Step(Step::worker(node))
            } else {
                Next::Step(Step::Postflight)
            }
        }
        Step::Worker { .. } => match pending(&snap.workers) {
            Some(node) => Next::Step(Step::worker(node)),
            None => Next::Step(Step::Postflight),
        },
        Step::Postflight => Next::End,
    }
}

/// Kubernetes caps label values (and so Job names, which become the `job-name` pod label) at 63.
pub const MAX_NAME: usize = 63;

/// Characters of the hash a shortened or rewritten name carries: 13 base-32 characters, 65
/// bits of SHA-256. Among a million node names the chance that two share a hash is about
/// 10^-8 (the 32-bit hash of the first version collided among 300k GKE-style names).
pub const HASH_LEN: usize = 13;

/// `k8s-upgrade-<phase>-<X-Y-Z>[-<node>]`, a DNS-1123 label. The master Job keeps the seed's
/// node-less name `k8s-upgrade-master-<X-Y-Z>` (there is one per target, and existing alerts
/// and runbooks know it by that name).
///
/// A node name that makes the whole a valid label of at most [`MAX_NAME`] characters is kept
/// as it is (`k8s-upgrade-worker-1-34-2-k8s-node3`). Otherwise the node part is rewritten
/// (every character outside `[a-z0-9-]` becomes `-`), shortened to what fits, and followed by
/// `-` and [`HASH_LEN`] characters of a hash of the node name: as much of the node name as
/// fits is kept, and when even its first DNS label does not fit, its head and its tail are
/// kept (GKE-style pool names differ at the end). The apiserver warns on Job names with dots
/// ("a DNS label is recommended"), and the pods and hostnames of the Job inherit them.
///
/// Distinct node names give distinct Job names except for a 2^-65 chance, or a node name
/// crafted to equal another's rewritten form; [`check_job_names`] refuses a cluster where two
/// collide, so a second node is never taken for one already done.
pub fn job_name(phase: Phase, version: Version, node: Option<&str>) -> String {
    let base = format!("k8s-upgrade-{}-{}", phase.as_str(), version.label());
    let Some(node) = node.filter(|_| matches!(phase, Phase::ControlPlane | Phase::Worker)) else {
        return fit_name(&base);
    };
    let full = format!("{base}-{node}");
    if crate::names::check_dns_label(&full).is_ok() {
        return full;
    }
    let hash = name_hash(node);
    // base, '-', the node part, '-', the hash.
    let Some(room) = MAX_NAME.checked_sub(base.len() + 2 + HASH_LEN).filter(|r| *r >= 2) else {
        return fit_name(&full);
    };
    let readable = readable(node);
    // The first DNS label, counted in characters as `readable` has one byte per character.
    let host = node.chars().position(|c| c == '.').unwrap_or(readable.len());
    let part = if readable.len() <= room {
        readable.clone()
    } else if host <= room {
        readable[..room].to_string()
    } else {
        // Head and tail of the first label, which differ where pool names do.
        let head = (room - 1).div_ceil(2);
        let tail = room - 1 - head;
        let first = &readable[..host];
        format!("{}-{}", &first[..head], &first[first.len() - tail..])
    };
    let part = part.trim_matches('-');
    if part.is_empty() { format!("{base}-{hash}") } else { format!("{base}-{part}-{hash}") }
}

/// Makes `full` a DNS-1123 label of at most [`MAX_NAME`] characters, deterministically.
///
/// A name that already is one is kept. Otherwise every character outside `[a-z0-9-]` becomes
/// `-`, as much of that as fits is kept, and `-` plus [`HASH_LEN`] characters of a hash of
/// the *original* name is appended: `a.b` and `a-b` get different names, and so do two long
/// names sharing their first 49 characters.
pub fn fit_name(full: &str) -> String {
    if crate::names::check_dns_label(full).is_ok() {
        return full.to_string();
    }
    let hash = name_hash(full);
    let readable = readable(full);
    let keep = readable.len().min(MAX_NAME - 1 - HASH_LEN);
    let head = readable[..keep].trim_matches('-');
    if head.is_empty() {
        return format!("x{hash}");
    }
    format!("{head}-{hash}")
}

/// Lower-case ASCII alphanumerics kept, every other character (one per `char`, so a cut
/// never falls inside a multi-byte character) replaced by `-`.
fn readable(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
}

/// The first 65 bits of SHA-256 of `s`, as [`HASH_LEN`] characters of lower-case base 32
/// (RFC 4648 alphabet): deterministic across builds and platforms, and valid in a DNS label.
fn name_hash(s: &str) -> String {
    use sha2::Digest as _;
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let digest = sha2::Sha256::digest(s.as_bytes());
    let bits = u128::from_be_bytes(digest[..16].try_into().expect("SHA-256 has 32 bytes"));
    (0..HASH_LEN).map(|i| ALPHABET[((bits >> (123 - 5 * i)) & 31) as usize] as char).collect()
}

/// Refuses a snapshot in which two nodes' Jobs would share a name for `target`: the second
/// node's Job would be taken for the first's ("Complete: the chain already got here") and the
/// node never upgraded.
pub fn check_job_names(snap: &Snapshot, target: Version) -> Result<(), PlanError> {
    let mut seen: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    for n in snap.nodes() {
        let phase = match n.role {
            Role::ControlPlane => Phase::ControlPlane,
            Role::Worker => Phase::Worker,
        };
        let name = job_name(phase, target, Some(&n.name));
        if let Some(other) = seen.insert(name.clone(), &n.name) {
            return Err(PlanError::JobNameCollision { a: other.to_string(), b: n.name.clone(), job: name });
        }
    }
    Ok(())
}

/// The planner's one rule on a target, which `plan`, `render`, `step`, `detect` and
/// `rehearse` all apply: the kind of the upgrade of `snap` to `target`, or why kubeadm cannot
/// do it.
///
/// - A target older than any node's kubelet is a downgrade ([`PlanError::Downgrade`], naming
///   every such node and its version): comparing with the oldest kubelet alone would plan the
///   newer nodes back down.
/// - A target more than one minor (or a major) past the running version (the oldest kubelet)
///   skips a minor ([`PlanError::SkipsAMinor`]).
///
/// A target every node already runs passes (a patch upgrade with nothing to do): a chain
/// whose nodes are all done still runs its postflight. Whether there is anything to do is
/// [`up_to_date`].
pub fn check_target(snap: &Snapshot, target: Version) -> Result<Kind, PlanError> {
    let newer: Vec<String> =
        snap.nodes().filter(|n| n.kubelet > target).map(|n| format!("{} (v{})", n.name, n.kubelet)).collect();
    if !newer.is_empty() {
        const SHOWN: usize = 10;
        let mut nodes = newer.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
        if newer.len() > SHOWN {
            nodes.push_str(&format!(" and {} more", newer.len() - SHOWN));
        }
        return Err(PlanError::Downgrade { target, nodes });
    }
    let running = snap.running_version();
    if target.major != running.major || target.minor > running.minor + 1 {
        return Err(PlanError::SkipsAMinor { running, target });
    }
    Ok(Kind::between(running, target))
}

/// Every node already runs `target` and none awaits an acknowledgement of a failed upgrade:
/// there is nothing to upgrade (what detection reports as up to date). Pure.
pub fn up_to_date(snap: &Snapshot, target: Version) -> bool {
    snap.nodes().all(|n| n.kubelet == target && n.upgrade_started.is_none())
}

/// Where a Job runs and what it tolerates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Placement {
    /// The node the Job runs on, by name: pinned with a required node affinity on
    /// `metadata.name` (`matchFields`), as the DaemonSet controller pins its pods. The
    /// `kubernetes.io/hostname` label is not the node name on every cluster.
    pub run_on: String,
    pub tolerations: Vec<Toleration>,
}

/// Chooses the run-on node of a step.
///
/// Preflight, control-plane and postflight Jobs run on a schedulable worker; worker Jobs on a
/// schedulable control-plane node. Either way never on the node drained. Among the candidates,
/// in natural order, the first without a `NoSchedule`/`NoExecute` taint wins, else the first:
/// the seed pinned its Jobs to `k8s-node1`, which later carried a GPU taint (seed failure 36),
/// and a dedicated node is the wrong place for the chain when a plain one exists. A tainted
/// node still gets tolerations for its taints ([`tolerations_for`]).
pub fn placement(snap: &Snapshot, step: &Step) -> Result<Placement, PlanError> {
    let phase = step.phase();
    let target = step.node();
    fn pick<'a>(nodes: &'a [NodeView], target: Option<&str>) -> Option<&'a NodeView> {
        let mut candidates = nodes.iter().filter(|n| n.schedulable() && Some(n.name.as_str()) != target);
        let untainted =
            |n: &&NodeView| !n.taints.iter().any(|t| matches!(t.effect.as_str(), "NoSchedule" | "NoExecute"));
        candidates.clone().find(untainted).or_else(|| candidates.next())
    }
    let node = match phase {
        Phase::Worker => {
            pick(&snap.control_planes, target).ok_or(PlanError::NoSchedulableControlPlane { phase })?
        }
        Phase::Preflight | Phase::Master | Phase::ControlPlane => {
            pick(&snap.workers, target).ok_or(PlanError::NoSchedulableWorker { phase })?
        }
        // Postflight drains nothing; a control plane will do if every worker is cordoned.
        Phase::Postflight => pick(&snap.workers, target)
            .or_else(|| pick(&snap.control_planes, target))
            .ok_or(PlanError::NoSchedulableWorker { phase })?,
    };
    debug_assert_ne!(Some(node.name.as_str()), target, "a Job never runs on the node it drains");
    Ok(Placement { run_on: node.name.clone(), tolerations: tolerations_for(node) })
}

/// Tolerations for every scheduling taint of the run-on node, so a GPU or control-plane taint
/// can never leave a pinned Job Pending (seed failure 36: five days Pending on a new GPU taint).
///
/// The node lifecycle taints (`node.kubernetes.io/*`: not-ready, unreachable, unschedulable, …)
/// are not tolerated: tolerating them would keep a Job on a dead node, and a node carrying one
/// is not chosen to run on anyway.
pub fn tolerations_for(node: &NodeView) -> Vec<Toleration> {
    let mut out: Vec<Toleration> = Vec::new();
    for t in &node.taints {
        if t.key.starts_with("node.kubernetes.io/")
            || !matches!(t.effect.as_str(), "NoSchedule" | "NoExecute")
        {
            continue;
        }
        let tol = Toleration {
            key: Some(t.key.clone()),
            operator: Some("Exists".into()),
            effect: Some(t.effect.clone()),
            ..Default::default()
        };
        if !out.contains(&tol) {
            out.push(tol);
        }
    }
    out
}

/// Whether `t` tolerates taint `key`=`value`:`effect` (`v1.Toleration.ToleratesTaint`): an
/// empty effect matches every effect, an empty key with `Exists` every key, `Equal` (the
/// default operator) compares the value.
pub fn tolerates(t: &Toleration, key: &str, value: &str, effect: &str) -> bool {
    let t_effect = t.effect.as_deref().unwrap_or_default();
    let t_key = t.key.as_deref().unwrap_or_default();
    if !t_effect.is_empty() && t_effect != effect {
        return false;
    }
    if !t_key.is_empty() && t_key != key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" => t_key == key && t.value.as_deref().unwrap_or_default() == value,
        _ => false,
    }
}

/// Why a Job pinned to `node` with `tolerations` would stay Pending, as kube-scheduler would
/// see it: each `NoSchedule`/`NoExecute` taint no toleration covers, a cordon
/// (`node.kubernetes.io/unschedulable`) not tolerated, a node that is not Ready. Empty when the
/// Job can start there. Pure.
pub fn placement_problems(node: &Node, tolerations: &[Toleration]) -> Vec<String> {
    let covered =
        |key: &str, value: &str, effect: &str| tolerations.iter().any(|t| tolerates(t, key, value, effect));
    let mut out = Vec::new();
    let spec = node.spec.clone().unwrap_or_default();
    if spec.unschedulable == Some(true) && !covered("node.kubernetes.io/unschedulable", "", "NoSchedule") {
        out.push("the node is cordoned (spec.unschedulable)".to_string());
    }
    for t in spec.taints.unwrap_or_default() {
        let value = t.value.clone().unwrap_or_default();
        if matches!(t.effect.as_str(), "NoSchedule" | "NoExecute") && !covered(&t.key, &value, &t.effect) {
            let shown = if value.is_empty() { t.key.clone() } else { format!("{}={value}", t.key) };
            out.push(format!(
                "taint {shown}:{} is not tolerated (--toleration {}:{})",
                t.effect, t.key, t.effect
            ));
        }
    }
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if !ready {
        out.push("the node is not Ready".to_string());
    }
    out
}

/// One Job of a planned chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedJob {
    pub step: Step,
    pub job_name: String,
    pub placement: Placement,
    /// The target node is already on the target version: the phase will skip its work.
    pub skip: bool,
}

/// The whole chain from preflight to postflight, as it would run from this snapshot.
pub fn chain(snap: &Snapshot, target: Version) -> Result<Vec<PlannedJob>, PlanError> {
    check_target(snap, target)?;
    check_job_names(snap, target)?;
    let mut sim = snap.clone();
    let mut out = Vec::new();
    let mut step = Step::Preflight;
    loop {
        let placement = placement(&sim, &step)?;
        let skip = step.node().and_then(|n| snap.node(n)).is_some_and(|n| n.on_target(target));
        out.push(PlannedJob { job_name: step.job_name(target), step: step.clone(), placement, skip });
        if let Some(node) = step.node() {
            // The phase leaves its node on the target version.
            for n in sim.control_planes.iter_mut().chain(sim.workers.iter_mut()) {
                if n.name == node {
                    n.kubelet = target;
                }
            }
        }
        match next_after(&sim, target, &step) {
            Next::End => return Ok(out),
            Next::Step(next) => step = next,
        }
    }
}

/// Compares names so that embedded numbers sort by value: `k8s-node2` < `k8s-node10`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (&a[..da], &b[..db]);
                // Compare by value without parsing (no overflow): strip leading zeros, then
                // longer is bigger, then lexical; ties broken by the zero-padded length.
                let ta = trim_zeros(na);
                let tb = trim_zeros(nb);
                let ord = ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb)).then_with(|| da.cmp(&db));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let z = d.iter().take_while(|&&c| c == b'0').count();
    &d[z..]
}
