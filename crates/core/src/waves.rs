//! Worker concurrency (pure): which pending workers a finishing worker Job claims, the claim
//! record the chain keeps on its namespace, and the waves `plan` shows.
//!
//! With `workers.concurrency: 1` (the default) the chain is a line: each worker Job spawns the
//! next one ([`crate::plan::next_after`]) and nothing here is used. Above 1, up to N worker
//! Jobs run at once, still one Job per worker:
//!
//! - The last control-plane phase claims the first wave; every worker Job, when it ends,
//!   releases its node and claims pending workers to fill the slots back ([`refill`]). The last
//!   worker Job to end with nothing left pending spawns postflight.
//! - **The claim is atomic.** The set of nodes in flight is one record, [`Claims`], kept as
//!   annotations on the tool's namespace ([`Claims::patch`]) and written with a JSON merge
//!   patch that carries the `metadata.resourceVersion` it was computed from. The apiserver
//!   applies a patch with a resourceVersion only if the object still has it (409 Conflict
//!   otherwise), so of two Jobs ending together one write wins and the other re-reads,
//!   decides again from the new record and retries: no node is claimed twice and the count
//!   never exceeds the limit. No lock is held, so a Job that dies holds nothing but its own
//!   claim. The record is readable with `kubectl describe namespace` and is what `status`
//!   shows as the nodes in flight.
//! - **Limits.** The smaller of `workers.concurrency` and `workers.max_unavailable` (a count,
//!   or a percentage of the Ready workers, rounded down, at least 1) ([`WorkerSettings::limit`]).
//! - **Failure domains.** Never two nodes of one zone in flight: nodes that carry
//!   `workers.topology_label` (default `topology.kubernetes.io/zone`) and share its value are
//!   never claimed together; nodes without the label are not constrained.
//! - **Stops.** A worker that fails, is halted by the kill switch or refused by a gate writes a
//!   stop reason into the record with its release; a kill switch or a blocking alert found at
//!   refill time, or the Job of a claimed node found Failed, is written the same way. From
//!   then on nobody claims: the workers already running finish their node and release it, and
//!   the chain stops with every node either done, untouched, or (a failed upgrade) cordoned for
//!   a human. The record says why. Resuming clears the stop: the worker stage starting again
//!   after the control planes ([`Refill::restart`]), or a worker Job nobody claimed (applied
//!   by an operator or by detection) ending with its work done.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    num::NonZeroU32,
};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use serde::{Deserialize, Serialize};

use crate::{
    job::JobState,
    plan::{NodeView, Snapshot, natural_cmp},
    resume::UpgradeStarted,
    version::Version,
};

/// The most worker Jobs that may run at once (`workers.concurrency`): far above what a
/// maintenance window needs, low enough that a typo (10000) is refused.
pub const MAX_CONCURRENCY: u32 = 1000;

/// `workers.concurrency`: how many worker Jobs may run at once, 1 to [`MAX_CONCURRENCY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Concurrency(NonZeroU32);

impl Concurrency {
    /// One at a time: the chain as a line.
    pub const ONE: Concurrency = Concurrency(NonZeroU32::MIN);

    /// Validates `n` (1 to [`MAX_CONCURRENCY`]).
    pub fn new(n: u32) -> Result<Self, String> {
        match NonZeroU32::new(n) {
            Some(v) if n <= MAX_CONCURRENCY => Ok(Concurrency(v)),
            _ => Err(format!("workers.concurrency must be between 1 and {MAX_CONCURRENCY}, got {n}")),
        }
    }

    /// The value.
    pub fn get(self) -> u32 {
        self.0.get()
    }
}

impl TryFrom<u32> for Concurrency {
    type Error = String;
    fn try_from(n: u32) -> Result<Self, String> {
        Self::new(n)
    }
}

impl From<Concurrency> for u32 {
    fn from(c: Concurrency) -> u32 {
        c.get()
    }
}

/// `workers.max_unavailable`: how many workers the chain may have out of service at once, as
/// a count (`3`) or a percentage of the Ready workers (`"25%"`, rounded down, at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CountOrPercent", into = "CountOrPercent")]
pub enum MaxUnavailable {
    /// At most this many.
    Count(NonZeroU32),
    /// At most this percentage (1 to 100) of the Ready workers.
    Percent(u8),
}

/// The raw form of [`MaxUnavailable`] (Kubernetes' IntOrString).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum CountOrPercent {
    Count(u32),
    Text(String),
    /// Anything else (`-3`, `2.5`, a list): refused by [`MaxUnavailable::parse`] with what is
    /// allowed, instead of serde's "did not match any variant" (QA C).
    Other(serde_json::Value),
}

impl MaxUnavailable {
    /// Parses `3` or `25%` (Kubernetes' `maxUnavailable` spelling; a percentage is 1% to 100%).
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("workers.max_unavailable must be a count above 0 or a percentage such as 25%, got {s:?}")
        };
        match s.strip_suffix('%') {
            Some(p) => match p.parse::<u8>() {
                Ok(p @ 1..=100) => Ok(MaxUnavailable::Percent(p)),
                _ => Err(bad()),
            },
            None => {
                s.parse::<u32>().ok().and_then(NonZeroU32::new).map(MaxUnavailable::Count).ok_or_else(bad)
            }
        }
    }

    /// The count this allows among `ready` Ready workers: a percentage rounds down (as a
    /// Deployment's `maxUnavailable` does) but never below 1, so the chain always progresses.
    pub fn resolve(self, ready: usize) -> usize {
        match self {
            MaxUnavailable::Count(n) => n.get() as usize,
            MaxUnavailable::Percent(p) => (ready * usize::from(p) / 100).max(1),
        }
    }
}

impl fmt::Display for MaxUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxUnavailable::Count(n) => write!(f, "{n}"),
            MaxUnavailable::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl TryFrom<CountOrPercent> for MaxUnavailable {
    type Error = String;
    fn try_from(v: CountOrPercent) -> Result<Self, String> {
        match v {
            CountOrPercent::Count(n) => Self::parse(&n.to_string()),
            CountOrPercent::Text(s) => Self::parse(&s),
            CountOrPercent::Other(v) => Self::parse(&v.to_string()),
        }
    }
}

impl From<MaxUnavailable> for CountOrPercent {
    fn from(m: MaxUnavailable) -> Self {
        match m {
            MaxUnavailable::Count(n) => CountOrPercent::Count(n.get()),
            MaxUnavailable::Percent(_) => CountOrPercent::Text(m.to_string()),
        }
    }
}

/// A label key, valid by Kubernetes' rule for label keys (`[prefix/]name`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LabelKey(String);

impl LabelKey {
    /// Validates `k` as a label key.
    pub fn new(k: &str) -> Result<Self, String> {
        crate::names::check_label_key(k).map(|()| LabelKey(k.to_string()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for LabelKey {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::new(&s)
    }
}

impl From<LabelKey> for String {
    fn from(k: LabelKey) -> String {
        k.0
    }
}

/// The `workers` block of the configuration. Every field is valid by construction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// How many worker Jobs run at once (1: one after the other, as the seed system did).
    pub concurrency: Concurrency,
    /// How many workers may be out of service at once (count or percentage); the smaller of
    /// this and `concurrency` wins. `None`: only `concurrency` limits.
    pub max_unavailable: Option<MaxUnavailable>,
    /// The node label naming a failure domain: two nodes with the same value are never in
    /// flight together. Nodes without it are not constrained.
    pub topology_label: LabelKey,
}

/// Default of `workers.topology_label`: the well-known zone label.
pub const DEFAULT_TOPOLOGY_LABEL: &str = "topology.kubernetes.io/zone";

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            concurrency: Concurrency::ONE,
            max_unavailable: None,
            topology_label: LabelKey(DEFAULT_TOPOLOGY_LABEL.into()),
        }
    }
}

impl WorkerSettings {
    /// Whether workers run one at a time as a line (the chain without claims).
    pub fn sequential(&self) -> bool {
        self.concurrency == Concurrency::ONE
    }

    /// How many workers may be in flight ([`WorkerSettings::limit_of`]'s value).
    pub fn limit(&self, ready: usize, schedulable: usize) -> usize {
        self.limit_of(ready, schedulable).value
    }

    /// How many workers may be in flight, and why: the smaller of `concurrency` and
    /// `max_unavailable` (a percentage of the `ready` Ready workers), capped at `schedulable`
    /// − 1 so one schedulable worker always stays up to take the evicted pods (pods without a
    /// disruption budget would otherwise be evicted with nowhere to go), and at least 1 so the
    /// chain progresses. `schedulable` counts the workers Ready and uncordoned, plus the ones
    /// the chain has in flight (cordoned by the chain itself).
    pub fn limit_of(&self, ready: usize, schedulable: usize) -> Limit {
        let c = self.concurrency.get() as usize;
        let wanted = self.max_unavailable.map_or(c, |m| c.min(m.resolve(ready))).max(1);
        let cap = schedulable.saturating_sub(1).max(1);
        Limit { value: wanted.min(cap), capped: wanted > cap }
    }
}

/// How many workers may be in flight at once ([`WorkerSettings::limit_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limit {
    /// Workers in flight at most; at least 1.
    pub value: usize,
    /// `concurrency` / `max_unavailable` allowed more, and the limit was lowered so one
    /// schedulable worker stays up.
    pub capped: bool,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "limit {}", self.value)?;
        if self.capped {
            f.write_str(": capped so one schedulable worker stays up")?;
        }
        Ok(())
    }
}

/// The limit on `snap` before any worker is in flight, as `plan` shows it. Pure.
pub fn plan_limit(snap: &Snapshot, settings: &WorkerSettings) -> Limit {
    let ready = snap.workers.iter().filter(|w| w.ready).count();
    let schedulable = snap.workers.iter().filter(|w| w.schedulable()).count();
    settings.limit_of(ready, schedulable)
}

/// The failure domain of each node that carries `label`: node name → label value. Pure.
pub fn zones(nodes: &[Node], label: &LabelKey) -> BTreeMap<String, String> {
    nodes
        .iter()
        .filter_map(|n| {
            let zone = n.metadata.labels.as_ref()?.get(label.as_str())?;
            Some((n.metadata.name.clone()?, zone.clone()))
        })
        .collect()
}

/// The claim record: which workers are in flight for which target, since when, and why the
/// chain stopped claiming, if it did. Kept as annotations on the tool's namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Claims {
    /// The target version the claims are for; a record of another target is stale.
    pub target: Option<Version>,
    /// Node → when it was claimed, in natural order when shown.
    pub in_flight: BTreeMap<String, Timestamp>,
    /// Why nothing may be claimed any more (a failure, a halt, an alert); cleared when the
    /// chain is resumed.
    pub stopped: Option<String>,
}

/// The annotation keys of the claim record under `prefix` (the `annotation_prefix` setting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimKeys {
    /// `<prefix>workers-target`: the target version.
    pub target: String,
    /// `<prefix>workers-in-flight`: `node=RFC3339,node=RFC3339` (empty: none).
    pub in_flight: String,
    /// `<prefix>workers-stopped`: why claiming stopped.
    pub stopped: String,
}

impl ClaimKeys {
    /// The keys under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            target: format!("{prefix}workers-target"),
            in_flight: format!("{prefix}workers-in-flight"),
            stopped: format!("{prefix}workers-stopped"),
        }
    }
}

impl Claims {
    /// Reads the record from the namespace's annotations. An entry that does not parse is an
    /// error naming it (never ignored: a claim that cannot be read could be a node in flight).
    pub fn parse(keys: &ClaimKeys, annotations: &BTreeMap<String, String>) -> Result<Self, String> {
        let target = match annotations.get(&keys.target) {
            None => None,
            Some(t) => Some(
                t.parse::<Version>()
                    .map_err(|e| format!("annotation {} = {t:?} is not a version: {e}", keys.target))?,
            ),
        };
        let mut in_flight = BTreeMap::new();
        for entry in annotations.get(&keys.in_flight).map(String::as_str).unwrap_or_default().split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let (node, at) = entry
                .split_once('=')
                .ok_or_else(|| format!("annotation {}: entry {entry:?} is not node=time", keys.in_flight))?;
            let at: Timestamp = at
                .parse()
                .map_err(|e| format!("annotation {}: entry {entry:?} has a bad time: {e}", keys.in_flight))?;
            in_flight.insert(node.to_string(), at);
        }
        let stopped = annotations.get(&keys.stopped).filter(|s| !s.is_empty()).cloned();
        Ok(Claims { target, in_flight, stopped })
    }

    /// The record for `target`: a record of another target is a previous chain's and is
    /// ignored (its Jobs are long gone).
    pub fn for_target(self, target: Version) -> Self {
        if self.target == Some(target) { self } else { Claims { target: Some(target), ..Claims::default() } }
    }

    /// The JSON merge patch that writes this record, guarded by `resource_version` (the
    /// apiserver answers 409 Conflict if the namespace changed since it was read).
    pub fn patch(&self, keys: &ClaimKeys, resource_version: &str) -> serde_json::Value {
        let in_flight =
            self.nodes().iter().map(|n| format!("{n}={}", self.in_flight[n])).collect::<Vec<_>>().join(",");
        let mut ann = serde_json::Map::new();
        ann.insert(keys.target.clone(), self.target.map(|t| t.to_string()).into());
        ann.insert(keys.in_flight.clone(), in_flight.into());
        ann.insert(keys.stopped.clone(), self.stopped.clone().into());
        serde_json::json!({"metadata": {"resourceVersion": resource_version, "annotations": ann}})
    }

    /// The nodes in flight that go before `node` when drains share a budget: claimed earlier,
    /// ties by natural order of names. Every drain computes the same order from the same
    /// record. A node not in the record goes after all of them.
    pub fn ahead_of(&self, node: &str) -> Vec<String> {
        let key = |n: &str| self.in_flight.get(n).copied();
        let mine = key(node);
        self.nodes()
            .into_iter()
            .filter(|n| n != node)
            .filter(|n| match (key(n), mine) {
                (_, None) => true,
                (Some(t), Some(m)) => t < m || (t == m && natural_cmp(n, node).is_lt()),
                (None, Some(_)) => false,
            })
            .collect()
    }

    /// [`Self::ahead_of`], without the nodes whose drain is over: a node ahead that carries
    /// the record of its upgrade to the record's target (written after its drain, see
    /// [`crate::resume::UpgradeStarted`]) or whose kubelet reports that target will take no
    /// more pods. A pod that landed on it since (the scheduler favours an emptied node for
    /// replacements) is then no pod of a drain going first; counted as one, it would hold every
    /// drain behind that node until its Job ends and releases the claim, after the soak.
    /// `nodes`: the Node objects of the nodes ahead, as read now; a node missing from them is
    /// kept (fail closed).
    pub fn draining_ahead_of(&self, node: &str, nodes: &[Node]) -> Vec<String> {
        let over = |n: &Node| {
            let Some(target) = self.target else { return false };
            let started = UpgradeStarted::of(n).and_then(|r| r.target()) == Some(target);
            let kubelet = n
                .status
                .as_ref()
                .and_then(|s| s.node_info.as_ref())
                .and_then(|i| i.kubelet_version.parse::<Version>().ok());
            started || kubelet == Some(target)
        };
        self.ahead_of(node)
            .into_iter()
            .filter(|a| !nodes.iter().any(|n| n.metadata.name.as_deref() == Some(a.as_str()) && over(n)))
            .collect()
    }

    /// The nodes in flight, in natural order.
    pub fn nodes(&self) -> Vec<String> {
        let mut v: Vec<String> = self.in_flight.keys().cloned().collect();
        v.sort_by(|a, b| natural_cmp(a, b));
        v
    }
}

/// What is known of the worker Job of a claimed node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobSeen {
    /// Active, Complete or Failed.
    pub state: JobState,
    /// Its `creationTimestamp`.
    pub created: Timestamp,
}

/// The inputs of one refill decision.
#[derive(Debug, Clone)]
pub struct Refill<'a> {
    /// The nodes, fresh.
    pub snap: &'a Snapshot,
    /// Failure domains ([`zones`]).
    pub zones: &'a BTreeMap<String, String>,
    /// The chain's target.
    pub target: Version,
    /// The limits.
    pub settings: &'a WorkerSettings,
    /// The record as read (any target).
    pub claims: Claims,
    /// The worker whose Job ends now: released, and never claimed again by this decision.
    pub finished: Option<&'a str>,
    /// A reason not to claim found now: the finishing worker failed, was halted or refused, the
    /// kill switch is present, a blocking alert fires.
    pub stop: Option<String>,
    /// The worker Jobs of this target by node (only claimed nodes are looked at).
    pub jobs: &'a BTreeMap<String, JobSeen>,
    /// The worker stage (re)starts: after the control planes, or when detection resumes a
    /// stopped chain. Clears the stop reason and drops claims whose Job is not Active.
    pub restart: bool,
    /// Now, for the claim times.
    pub now: Timestamp,
}

/// What comes after a refill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "then")]
pub enum Then {
    /// Workers are (still) in flight; the last one to end carries on.
    Continue,
    /// Nothing is in flight or pending: spawn postflight.
    Postflight,
    /// Claiming has stopped for this reason; nothing more is spawned.
    Stopped {
        /// Why.
        reason: String,
    },
}

/// The decision: the record to write, the workers to start, what comes after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The record to write (guarded by the resourceVersion it was read at).
    pub claims: Claims,
    /// The workers claimed now, in natural order: spawn a worker Job for each.
    pub start: Vec<String>,
    /// What comes after.
    pub then: Then,
}

impl Refill<'_> {
    /// Decides. See the module doc for the rules.
    pub fn decide(&self) -> Decision {
        let mut claims = self.claims.clone().for_target(self.target);
        // A worker Job nobody claimed (applied by an operator, or by detection to resume a
        // stopped chain) restarts the claims when it ends, as the start of the stage does.
        let unclaimed = self.finished.is_some_and(|n| !claims.in_flight.contains_key(n));
        if let Some(done) = self.finished {
            claims.in_flight.remove(done);
        }
        if self.restart || unclaimed {
            claims.stopped = None;
            claims.in_flight.retain(|n, _| self.jobs.get(n).is_some_and(|j| j.state == JobState::Active));
        }
        // A claimed node's Job that failed after it was claimed ended without releasing it (a
        // deadline, a killed pod): a failure like any other.
        let died = claims.nodes().into_iter().find(|n| {
            self.jobs.get(n).is_some_and(|j| j.state == JobState::Failed && j.created >= claims.in_flight[n])
        });
        // A node whose own upgrade failed, not in flight (a claimed node carries the record
        // while its upgrade runs), waits for an operator: nothing is claimed until then.
        let awaiting = self
            .snap
            .nodes()
            .find(|n| n.upgrade_started.is_some() && !claims.in_flight.contains_key(&n.name))
            .map(|n| format!("node {} awaits an acknowledgement of its failed upgrade", n.name));
        let stop = claims
            .stopped
            .clone()
            .or_else(|| self.stop.clone())
            .or_else(|| died.map(|n| format!("the worker Job of {n} failed")))
            .or(awaiting);
        if let Some(reason) = stop {
            claims.stopped = Some(reason.clone());
            return Decision { claims, start: vec![], then: Then::Stopped { reason } };
        }
        let start = pick(self.snap, self.zones, self.target, self.settings, &claims.in_flight, self.finished);
        // Whole seconds, as a Job's creationTimestamp: its Job is created at or after this.
        let at = Timestamp::from_second(self.now.as_second()).unwrap_or(self.now);
        for n in &start {
            claims.in_flight.insert(n.clone(), at);
        }
        let then = if claims.in_flight.is_empty() { Then::Postflight } else { Then::Continue };
        Decision { claims, start, then }
    }
}

/// The workers that still need the chain: off target, not `finished`, not awaiting an
/// acknowledgement of a failed upgrade (never claimed until acknowledged).
fn pending<'s>(
    snap: &'s Snapshot,
    target: Version,
    finished: Option<&str>,
) -> impl Iterator<Item = &'s NodeView> {
    snap.workers.iter().filter(move |n| {
        !n.on_target(target) && Some(n.name.as_str()) != finished && n.upgrade_started.is_none()
    })
}

/// The pending workers to claim, in natural order: as many as the limit leaves room for,
/// never two of one zone in flight, never one already claimed.
fn pick(
    snap: &Snapshot,
    zones: &BTreeMap<String, String>,
    target: Version,
    settings: &WorkerSettings,
    in_flight: &BTreeMap<String, Timestamp>,
    finished: Option<&str>,
) -> Vec<String> {
    let ready = snap.workers.iter().filter(|w| w.ready || in_flight.contains_key(&w.name)).count();
    let schedulable =
        snap.workers.iter().filter(|w| w.schedulable() || in_flight.contains_key(&w.name)).count();
    let limit = settings.limit(ready, schedulable);
    let mut busy: BTreeSet<&str> =
        in_flight.keys().filter_map(|n| zones.get(n)).map(String::as_str).collect();
    let mut room = limit.saturating_sub(in_flight.len());
    let mut out = Vec::new();
    for n in pending(snap, target, finished) {
        if room == 0 {
            break;
        }
        if in_flight.contains_key(&n.name) {
            continue;
        }
        if let Some(z) = zones.get(&n.name)
            && !busy.insert(z.as_str())
        {
            continue;
        }
        out.push(n.name.clone());
        room -= 1;
    }
    out
}

/// The waves `plan` shows: the workers that would run together if every worker took the same
/// time (each wave starts when the previous one ends), under the limits and the zone rule.
/// Workers already on target are left out. Pure.
pub fn waves(
    snap: &Snapshot,
    zones: &BTreeMap<String, String>,
    target: Version,
    settings: &WorkerSettings,
) -> Vec<Vec<String>> {
    let mut sim = snap.clone();
    let mut out = Vec::new();
    loop {
        let wave = pick(&sim, zones, target, settings, &BTreeMap::new(), None);
        if wave.is_empty() {
            return out;
        }
        for w in sim.workers.iter_mut().filter(|w| wave.contains(&w.name)) {
            w.kubelet = target;
        }
        out.push(wave);
    }
}

/// One worker for [`makespan`]: its name, its failure domain (if labelled) and how long its
/// Job takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerTime {
    /// Node name.
    pub node: String,
    /// Its [`zones`] value, if any.
    pub zone: Option<String>,
    /// How long its worker Job takes (drain, upgrade, ready wait, soak).
    pub took: std::time::Duration,
}

/// How long the worker stage takes with `limit` slots when every worker Job takes its `took`:
/// the refill rule played out in time (whenever a Job ends, the pending workers in order fill
/// the free slots, never two of a zone at once). `workers` in chain (natural) order. Pure; what
/// `rehearse` projects and the benchmark prints.
pub fn makespan(workers: &[WorkerTime], limit: usize) -> std::time::Duration {
    use std::time::Duration;
    let limit = limit.max(1);
    let mut pending: Vec<&WorkerTime> = workers.iter().collect();
    // (ends at, index into workers)
    let mut running: Vec<(Duration, &WorkerTime)> = Vec::new();
    let mut now = Duration::ZERO;
    loop {
        let busy: BTreeSet<&str> = running.iter().filter_map(|(_, w)| w.zone.as_deref()).collect();
        let mut taken: BTreeSet<&str> = busy;
        let mut i = 0;
        while i < pending.len() && running.len() < limit {
            let w = pending[i];
            if let Some(z) = w.zone.as_deref()
                && !taken.insert(z)
            {
                i += 1;
                continue;
            }
            running.push((now + w.took, w));
            pending.remove(i);
        }
        let Some(next) = running.iter().map(|(end, _)| *end).min() else { return now };
        now = next;
        running.retain(|(end, _)| *end > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{fixtures::node, settings::Settings};

    const T: &str = "1.34.2";

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn limits(concurrency: u32, max_unavailable: Option<&str>) -> WorkerSettings {
        WorkerSettings {
            concurrency: Concurrency::new(concurrency).unwrap(),
            max_unavailable: max_unavailable.map(|m| MaxUnavailable::parse(m).unwrap()),
            ..WorkerSettings::default()
        }
    }

    /// A control plane and `workers` workers named k8s-node1.., zones from `zone_of` (None:
    /// no zone label), all on v1.34.1.
    fn cluster(
        workers: usize,
        zone_of: impl Fn(usize) -> Option<&'static str>,
    ) -> (Snapshot, BTreeMap<String, String>) {
        let mut nodes = vec![node("k8s-master").control_plane().kubelet("v1.34.1").ip("10.0.0.1").build()];
        for i in 1..=workers {
            let mut b = node(&format!("k8s-node{i}")).kubelet("v1.34.1").ip(&format!("10.0.1.{i}"));
            if let Some(z) = zone_of(i) {
                b = b.label(DEFAULT_TOPOLOGY_LABEL, z);
            }
            nodes.push(b.build());
        }
        let snap = Snapshot::from_nodes(&nodes, &Settings::default().control_plane_selector()).unwrap();
        let label = LabelKey::new(DEFAULT_TOPOLOGY_LABEL).unwrap();
        (snap, zones(&nodes, &label))
    }

    fn refill<'a>(
        snap: &'a Snapshot,
        zones: &'a BTreeMap<String, String>,
        settings: &'a WorkerSettings,
        claims: Claims,
        jobs: &'a BTreeMap<String, JobSeen>,
    ) -> Refill<'a> {
        Refill {
            snap,
            zones,
            target: v(T),
            settings,
            claims,
            finished: None,
            stop: None,
            jobs,
            restart: false,
            now: t("2026-12-01T02:00:00Z"),
        }
    }

    fn claimed(nodes: &[&str]) -> Claims {
        Claims {
            target: Some(v(T)),
            in_flight: nodes.iter().map(|n| (n.to_string(), t("2026-12-01T01:00:00Z"))).collect(),
            stopped: None,
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_first_wave_fills_every_slot_in_natural_order() {
        let (snap, zones) = cluster(12, |_| None);
        let s = limits(4, None);
        let d = refill(&snap, &zones, &s, Claims::default(), &BTreeMap::new()).decide();
        assert_eq!(d.start, names(&["k8s-node1", "k8s-node2", "k8s-node3", "k8s-node4"]));
        assert_eq!(d.then, Then::Continue);
        assert_eq!(d.claims.nodes(), d.start);
        assert_eq!(d.claims.target, Some(v(T)));
    }

    #[test]
    fn a_finishing_worker_releases_its_slot_and_claims_the_next_pending_one() {
        let (mut snap, zones) = cluster(6, |_| None);
        snap.workers[0].kubelet = v(T); // k8s-node1 is done
        let s = limits(3, None);
        let jobs = BTreeMap::new();
        let mut r = refill(&snap, &zones, &s, claimed(&["k8s-node1", "k8s-node2", "k8s-node3"]), &jobs);
        r.finished = Some("k8s-node1");
        let d = r.decide();
        assert_eq!(d.start, names(&["k8s-node4"]));
        assert_eq!(d.claims.nodes(), names(&["k8s-node2", "k8s-node3", "k8s-node4"]));
    }

    #[test]
    fn a_finished_worker_still_off_target_is_not_claimed_again() {
        let (snap, zones) = cluster(2, |_| None);
        let s = limits(2, None);
        let jobs = BTreeMap::new();
        let mut r = refill(&snap, &zones, &s, claimed(&["k8s-node1", "k8s-node2"]), &jobs);
        r.finished = Some("k8s-node1");
        let d = r.decide();
        assert!(d.start.is_empty(), "{d:?}");
        assert_eq!(d.then, Then::Continue);
    }

    #[test]
    fn the_last_worker_to_end_with_nothing_pending_spawns_postflight() {
        let (mut snap, zones) = cluster(3, |_| None);
        for w in &mut snap.workers {
            w.kubelet = v(T);
        }
        let s = limits(3, None);
        let jobs = BTreeMap::new();
        let mut r = refill(&snap, &zones, &s, claimed(&["k8s-node2", "k8s-node3"]), &jobs);
        r.finished = Some("k8s-node3");
        assert_eq!(r.decide().then, Then::Continue, "k8s-node2 is still in flight");
        let mut r = refill(&snap, &zones, &s, claimed(&["k8s-node2"]), &jobs);
        r.finished = Some("k8s-node2");
        let d = r.decide();
        assert_eq!(d.then, Then::Postflight);
        assert!(d.claims.in_flight.is_empty());
    }

    #[test]
    fn max_unavailable_as_a_count_caps_concurrency() {
        let (snap, zones) = cluster(10, |_| None);
        let s = limits(8, Some("2"));
        let d = refill(&snap, &zones, &s, Claims::default(), &BTreeMap::new()).decide();
        assert_eq!(d.start.len(), 2);
    }

    #[test]
    fn concurrency_never_cordons_every_schedulable_worker() {
        // QA: concurrency 1000 without max_unavailable put all 7 workers in wave 1.
        let (snap, zones) = cluster(7, |_| None);
        let s = limits(1000, None);
        let d = refill(&snap, &zones, &s, Claims::default(), &BTreeMap::new()).decide();
        assert_eq!(d.start.len(), 6, "one of 7 schedulable workers stays up: {:?}", d.start);
        let w = waves(&snap, &zones, v(T), &s);
        assert_eq!(w.iter().map(Vec::len).collect::<Vec<_>>(), [6, 1]);
        assert_eq!(plan_limit(&snap, &s), Limit { value: 6, capped: true });
        assert_eq!(plan_limit(&snap, &s).to_string(), "limit 6: capped so one schedulable worker stays up");
        // max_unavailable 100% is capped the same way.
        assert_eq!(limits(1000, Some("100%")).limit(7, 7), 6);
        // A worker cordoned by someone else is not there to take pods: it does not count.
        let (mut snap, zones) = cluster(4, |_| None);
        snap.workers[3].unschedulable = true;
        let d = refill(&snap, &zones, &s, Claims::default(), &BTreeMap::new()).decide();
        assert_eq!(d.start, names(&["k8s-node1", "k8s-node2"]));
        // Below the cap nothing changes, and one or two workers still progress one at a time.
        assert_eq!(limits(3, None).limit_of(10, 10), Limit { value: 3, capped: false });
        assert_eq!(limits(4, None).limit_of(2, 2), Limit { value: 1, capped: true });
        assert_eq!(limits(4, None).limit(1, 1), 1);
        assert_eq!(limits(4, None).limit(3, 0), 1);
    }

    #[test]
    fn max_unavailable_as_a_percentage_rounds_down_but_never_below_one() {
        assert_eq!(MaxUnavailable::parse("25%").unwrap().resolve(10), 2);
        assert_eq!(MaxUnavailable::parse("25%").unwrap().resolve(3), 1);
        assert_eq!(MaxUnavailable::parse("100%").unwrap().resolve(7), 7);
        let (snap, zones) = cluster(20, |_| None);
        let s = limits(16, Some("25%"));
        let d = refill(&snap, &zones, &s, Claims::default(), &BTreeMap::new()).decide();
        assert_eq!(d.start.len(), 5, "25% of 20 Ready workers");
        // The smaller limit wins either way.
        assert_eq!(limits(2, Some("50%")).limit(20, 20), 2);
        assert_eq!(limits(1, None).limit(20, 20), 1);
    }

    #[test]
    fn nodes_of_one_zone_are_never_claimed_together() {
        // node1..6 in zones a, b, c, a, b, c.
        let (snap, zones) = cluster(6, |i| Some(["a", "b", "c"][(i - 1) % 3]));
        let s = limits(5, None);
        let d = refill(&snap, &zones, &s, Claims::default(), &BTreeMap::new()).decide();
        assert_eq!(d.start, names(&["k8s-node1", "k8s-node2", "k8s-node3"]), "one per zone, though 5 slots");
        // node1 (zone a) ends: node4 (zone a) may go, node5 and node6 still may not.
        let mut snap2 = snap.clone();
        snap2.workers[0].kubelet = v(T);
        let jobs = BTreeMap::new();
        let mut r = refill(&snap2, &zones, &s, claimed(&["k8s-node1", "k8s-node2", "k8s-node3"]), &jobs);
        r.finished = Some("k8s-node1");
        assert_eq!(r.decide().start, names(&["k8s-node4"]));
    }

    #[test]
    fn nodes_without_the_topology_label_are_not_constrained() {
        let (snap, zones) = cluster(4, |i| (i <= 2).then_some("a"));
        let s = limits(4, None);
        let d = refill(&snap, &zones, &s, Claims::default(), &BTreeMap::new()).decide();
        assert_eq!(d.start, names(&["k8s-node1", "k8s-node3", "k8s-node4"]));
    }

    #[test]
    fn a_stop_reason_releases_the_node_and_claims_nothing() {
        let (snap, zones) = cluster(6, |_| None);
        let s = limits(3, None);
        let jobs = BTreeMap::new();
        let mut r = refill(&snap, &zones, &s, claimed(&["k8s-node1", "k8s-node2", "k8s-node3"]), &jobs);
        r.finished = Some("k8s-node2");
        r.stop = Some("worker k8s-node2 failed: drain timed out".into());
        let d = r.decide();
        assert!(d.start.is_empty());
        assert_eq!(d.claims.nodes(), names(&["k8s-node1", "k8s-node3"]));
        assert_eq!(d.claims.stopped.as_deref(), Some("worker k8s-node2 failed: drain timed out"));
        assert!(matches!(d.then, Then::Stopped { .. }));
        // A worker ending cleanly afterwards still claims nothing: the record says why.
        let mut r = refill(&snap, &zones, &s, d.claims.clone(), &jobs);
        r.finished = Some("k8s-node1");
        let d2 = r.decide();
        assert!(d2.start.is_empty());
        assert_eq!(d2.claims.nodes(), names(&["k8s-node3"]));
        assert_eq!(d2.then, Then::Stopped { reason: "worker k8s-node2 failed: drain timed out".into() });
        // ...and the last one leaves an empty, stopped record, not a postflight.
        let mut r = refill(&snap, &zones, &s, d2.claims, &jobs);
        r.finished = Some("k8s-node3");
        let d3 = r.decide();
        assert!(d3.claims.in_flight.is_empty());
        assert!(matches!(d3.then, Then::Stopped { .. }));
    }

    #[test]
    fn a_claimed_nodes_job_that_failed_after_the_claim_stops_claiming() {
        let (snap, zones) = cluster(6, |_| None);
        let s = limits(3, None);
        let jobs = BTreeMap::from([(
            "k8s-node2".to_string(),
            JobSeen { state: JobState::Failed, created: t("2026-12-01T01:00:05Z") },
        )]);
        let mut r = refill(&snap, &zones, &s, claimed(&["k8s-node1", "k8s-node2"]), &jobs);
        r.finished = Some("k8s-node1");
        let d = r.decide();
        assert_eq!(d.then, Then::Stopped { reason: "the worker Job of k8s-node2 failed".into() });
        // A Failed Job from before the claim (an earlier attempt, replaced when spawned) does not.
        let old = BTreeMap::from([(
            "k8s-node2".to_string(),
            JobSeen { state: JobState::Failed, created: t("2026-11-30T01:00:00Z") },
        )]);
        let mut r = refill(&snap, &zones, &s, claimed(&["k8s-node1", "k8s-node2"]), &old);
        r.finished = Some("k8s-node1");
        assert_eq!(r.decide().start, names(&["k8s-node3", "k8s-node4"]));
    }

    #[test]
    fn a_restart_clears_the_stop_and_drops_claims_whose_job_is_not_running() {
        let (snap, zones) = cluster(4, |_| None);
        let s = limits(2, None);
        let mut c = claimed(&["k8s-node1", "k8s-node2"]);
        c.stopped = Some("halted by the kill switch".into());
        let jobs = BTreeMap::from([(
            "k8s-node1".to_string(),
            JobSeen { state: JobState::Complete, created: t("2026-12-01T01:00:05Z") },
        )]);
        let mut r = refill(&snap, &zones, &s, c, &jobs);
        r.restart = true;
        let d = r.decide();
        assert_eq!(d.claims.stopped, None);
        assert_eq!(d.start, names(&["k8s-node1", "k8s-node2"]));
    }

    #[test]
    fn an_unclaimed_worker_job_ending_resumes_a_stopped_chain() {
        let (mut snap, zones) = cluster(4, |_| None);
        snap.workers[1].kubelet = v(T); // k8s-node2, re-run by hand, is done now
        let s = limits(2, None);
        let mut c = claimed(&[]);
        c.stopped = Some("worker k8s-node2 failed: apt-get".into());
        let jobs = BTreeMap::new();
        let mut r = refill(&snap, &zones, &s, c, &jobs);
        r.finished = Some("k8s-node2");
        let d = r.decide();
        assert_eq!(d.claims.stopped, None);
        assert_eq!(d.start, names(&["k8s-node1", "k8s-node3"]));
    }

    #[test]
    fn makespan_plays_the_refill_rule_out_in_time() {
        use std::time::Duration;
        let m = |n: u64| Duration::from_secs(n * 60);
        let w = |i: usize, zone: Option<&str>, mins: u64| WorkerTime {
            node: format!("k8s-node{i}"),
            zone: zone.map(String::from),
            took: m(mins),
        };
        let ten: Vec<WorkerTime> = (1..=10).map(|i| w(i, None, 14)).collect();
        assert_eq!(makespan(&ten, 1), m(140), "one at a time: the sum");
        assert_eq!(makespan(&ten, 4), m(42), "4 + 4 + 2: three rounds");
        assert_eq!(makespan(&ten, 10), m(14));
        assert_eq!(makespan(&ten, 0), m(140), "a limit of 0 is 1");
        // A slot freed early is refilled at once, not at the end of a wave.
        let uneven = vec![w(1, None, 10), w(2, None, 2), w(3, None, 2), w(4, None, 2)];
        assert_eq!(makespan(&uneven, 2), m(10));
        // Two zones: never more than one per zone, whatever the limit.
        let zoned: Vec<WorkerTime> = (1..=6).map(|i| w(i, Some(["a", "b"][i % 2]), 14)).collect();
        assert_eq!(makespan(&zoned, 8), m(42));
        assert_eq!(makespan(&[], 4), Duration::ZERO);
    }

    #[test]
    fn a_node_awaiting_acknowledgement_is_never_claimed_and_stops_the_claims() {
        let (mut snap, zones) = cluster(4, |_| None);
        let started = crate::resume::UpgradeStarted::recorded(
            crate::plan::Phase::Worker,
            v(T),
            t("2026-12-01T01:30:00Z"),
        );
        snap.workers[1].upgrade_started = Some(started.clone()); // k8s-node2
        let s = limits(4, None);
        let jobs = BTreeMap::new();
        let mut r = refill(&snap, &zones, &s, Claims::default(), &jobs);
        r.restart = true;
        let d = r.decide();
        assert!(d.start.is_empty(), "{d:?}");
        assert_eq!(
            d.then,
            Then::Stopped { reason: "node k8s-node2 awaits an acknowledgement of its failed upgrade".into() }
        );
        // In flight, the record is its upgrade running: not a stop, and it is not claimed twice.
        let mut r = refill(&snap, &zones, &s, claimed(&["k8s-node1", "k8s-node2"]), &jobs);
        r.finished = Some("k8s-node1");
        let d = r.decide();
        assert_eq!(d.start, names(&["k8s-node3", "k8s-node4"]));
        // Pending workers never include it.
        snap.workers[1].upgrade_started = None;
        snap.workers[2].upgrade_started = Some(started);
        assert!(pending(&snap, v(T), None).all(|n| n.name != "k8s-node3"));
    }

    #[test]
    fn a_record_of_another_target_is_ignored() {
        let (snap, zones) = cluster(4, |_| None);
        let s = limits(2, None);
        let mut c = claimed(&["k8s-node1", "k8s-node2"]);
        c.target = Some(v("1.33.9"));
        c.stopped = Some("old".into());
        let d = refill(&snap, &zones, &s, c, &BTreeMap::new()).decide();
        assert_eq!(d.start, names(&["k8s-node1", "k8s-node2"]));
    }

    #[test]
    fn the_record_round_trips_through_its_annotations() {
        let keys = ClaimKeys::new("k8s-upgrade-chain/");
        let mut c = claimed(&["k8s-node10", "k8s-node2"]);
        c.stopped = Some("alert KubeNodeNotReady firing".into());
        let patch = c.patch(&keys, "42");
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        assert_eq!(
            patch["metadata"]["annotations"]["k8s-upgrade-chain/workers-in-flight"],
            "k8s-node2=2026-12-01T01:00:00Z,k8s-node10=2026-12-01T01:00:00Z"
        );
        let ann: BTreeMap<String, String> = patch["metadata"]["annotations"]
            .as_object()
            .unwrap()
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect();
        assert_eq!(Claims::parse(&keys, &ann).unwrap(), c);
        // No stop reason: the key is removed (null in a merge patch).
        let none = claimed(&[]).patch(&keys, "1");
        assert!(none["metadata"]["annotations"]["k8s-upgrade-chain/workers-stopped"].is_null());
        let bad = BTreeMap::from([(keys.in_flight.clone(), "k8s-node1".to_string())]);
        assert!(Claims::parse(&keys, &bad).unwrap_err().contains("k8s-node1"));
    }

    #[test]
    fn drains_sharing_a_budget_go_in_claim_order() {
        let mut c = claimed(&["k8s-node10", "k8s-node2"]);
        c.in_flight.insert("k8s-node3".into(), t("2026-12-01T00:59:00Z"));
        assert_eq!(c.ahead_of("k8s-node3"), Vec::<String>::new(), "claimed first");
        assert_eq!(c.ahead_of("k8s-node2"), names(&["k8s-node3"]));
        assert_eq!(c.ahead_of("k8s-node10"), names(&["k8s-node2", "k8s-node3"]), "same second: by name");
        assert_eq!(
            c.ahead_of("k8s-node7"),
            names(&["k8s-node2", "k8s-node3", "k8s-node10"]),
            "not claimed: last"
        );
    }

    #[test]
    fn a_node_ahead_whose_drain_is_over_no_longer_goes_first() {
        // k8s-node3 goes first, then k8s-node2, then k8s-node10 (claimed at the same second).
        let mut c = claimed(&["k8s-node10", "k8s-node2"]);
        c.in_flight.insert("k8s-node3".into(), t("2026-12-01T00:59:00Z"));
        let draining = |name: &str| node(name).kubelet("v1.34.1").cordoned().build();
        let started = |name: &str, target: &str| {
            let record = crate::resume::UpgradeStarted::recorded(
                crate::plan::Phase::Worker,
                v(target),
                t("2026-12-01T01:05:00Z"),
            );
            node(name)
                .kubelet("v1.34.1")
                .annotation(crate::resume::UPGRADE_STARTED_ANNOTATION, &record.value())
                .build()
        };
        let behind = "k8s-node10";
        // Both still draining (or about to): both go first.
        let nodes = [draining("k8s-node3"), draining("k8s-node2")];
        assert_eq!(c.draining_ahead_of(behind, &nodes), names(&["k8s-node2", "k8s-node3"]));
        // k8s-node3's upgrade started (its drain is over); k8s-node2's kubelet is on target.
        let nodes = [started("k8s-node3", T), node("k8s-node2").kubelet("v1.34.2").build()];
        assert_eq!(c.draining_ahead_of(behind, &nodes), Vec::<String>::new());
        // A record of another target, a kubelet on another version, a node not read: kept.
        let nodes = [started("k8s-node3", "1.34.3"), node("k8s-node2").kubelet("v1.34.3").build()];
        assert_eq!(c.draining_ahead_of(behind, &nodes), names(&["k8s-node2", "k8s-node3"]));
        assert_eq!(c.draining_ahead_of(behind, &[]), names(&["k8s-node2", "k8s-node3"]));
        // Without a target in the record nothing can be told over.
        let blind = Claims { target: None, ..c.clone() };
        let nodes = [node("k8s-node2").kubelet("v1.34.2").build()];
        assert_eq!(blind.draining_ahead_of("k8s-node10", &nodes), names(&["k8s-node2", "k8s-node3"]));
    }

    #[test]
    fn settings_are_validated_where_they_enter() {
        assert!(Concurrency::new(0).is_err());
        assert!(Concurrency::new(MAX_CONCURRENCY + 1).is_err());
        for bad in ["0", "0%", "101%", "-1", "25 %", "x", ""] {
            assert!(MaxUnavailable::parse(bad).is_err(), "{bad}");
        }
        assert!(LabelKey::new("topology.kubernetes.io/zone").is_ok());
        assert!(LabelKey::new("bad key").is_err());
        let w: WorkerSettings =
            serde_json::from_value(serde_json::json!({"concurrency": 8, "max_unavailable": "25%"})).unwrap();
        assert_eq!(w.limit(100, 100), 8);
        assert_eq!(w.limit(8, 8), 2);
        let w: WorkerSettings = serde_json::from_value(serde_json::json!({"max_unavailable": 3})).unwrap();
        assert_eq!(w.max_unavailable, Some(MaxUnavailable::Count(NonZeroU32::new(3).unwrap())));
        assert!(serde_json::from_value::<WorkerSettings>(serde_json::json!({"concurrency": 0})).is_err());
        assert!(
            serde_json::from_value::<WorkerSettings>(serde_json::json!({"topology_label": "a b"})).is_err()
        );
    }

    #[test]
    fn waves_respect_the_limit_and_the_zones_and_cover_every_pending_worker() {
        let (mut snap, zones) = cluster(7, |i| Some(["a", "b"][(i - 1) % 2]));
        snap.workers[6].kubelet = v(T); // k8s-node7 already on target
        let w = waves(&snap, &zones, v(T), &limits(4, None));
        assert_eq!(
            w,
            vec![
                names(&["k8s-node1", "k8s-node2"]),
                names(&["k8s-node3", "k8s-node4"]),
                names(&["k8s-node5", "k8s-node6"]),
            ]
        );
        let (snap, zones) = cluster(5, |_| None);
        assert_eq!(waves(&snap, &zones, v(T), &limits(1, None)).len(), 5);
        assert_eq!(waves(&snap, &zones, v(T), &limits(2, None)).len(), 3);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Any order of workers ending, one decision at a time (what the atomic record
        /// serialises concurrent endings into): never more than the limit in flight, never two
        /// of a zone, never a node claimed twice, every worker started once, and postflight
        /// spawned exactly once, by the last one.
        #[test]
        fn any_order_of_endings_keeps_every_rule_and_finishes(
            workers in 1usize..30,
            zones_n in 0usize..4,
            concurrency in 1u32..10,
            percent in proptest::option::of(1u8..=100),
            picks in proptest::collection::vec(0usize..1000, 64),
        ) {
            let (mut snap, zones) = cluster(workers, |i| {
                if zones_n == 0 { None } else { Some(["a", "b", "c"][i % zones_n]) }
            });
            let s = WorkerSettings {
                concurrency: Concurrency::new(concurrency).unwrap(),
                max_unavailable: percent.map(MaxUnavailable::Percent),
                ..WorkerSettings::default()
            };
            let limit = s.limit(workers, workers);
            if workers >= 2 {
                proptest::prop_assert!(limit < workers, "limit {} leaves no schedulable worker of {}", limit, workers);
            }
            let jobs = BTreeMap::new();
            let d = refill(&snap, &zones, &s, Claims::default(), &jobs).decide();
            let mut claims = d.claims;
            let mut started: Vec<String> = d.start;
            let mut postflights = 0;
            let mut k = 0;
            loop {
                let in_flight = claims.nodes();
                proptest::prop_assert!(in_flight.len() <= limit, "{:?} > {}", in_flight, limit);
                let zs: Vec<&String> = in_flight.iter().filter_map(|n| zones.get(n)).collect();
                let uniq: BTreeSet<&&String> = zs.iter().collect();
                proptest::prop_assert_eq!(zs.len(), uniq.len(), "two nodes of a zone in flight: {:?}", in_flight);
                if in_flight.is_empty() {
                    break;
                }
                let done = in_flight[picks[k % picks.len()] % in_flight.len()].clone();
                k += 1;
                for w in snap.workers.iter_mut().filter(|w| w.name == done) {
                    w.kubelet = v(T);
                }
                let mut r = refill(&snap, &zones, &s, claims.clone(), &jobs);
                r.finished = Some(&done);
                let d = r.decide();
                if d.then == Then::Postflight {
                    postflights += 1;
                }
                started.extend(d.start);
                claims = d.claims;
            }
            let uniq: BTreeSet<&String> = started.iter().collect();
            proptest::prop_assert_eq!(uniq.len(), started.len(), "a node started twice: {:?}", started);
            proptest::prop_assert_eq!(started.len(), workers);
            proptest::prop_assert!(snap.workers.iter().all(|w| w.on_target(v(T))));
            proptest::prop_assert_eq!(postflights, 1);
        }
    }
}
