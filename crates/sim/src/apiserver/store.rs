//! The object store, the event history and the simulated controllers (kubelet, Job, ReplicaSet,
//! StatefulSet, disruption, garbage collector). Everything runs under one lock; timers are
//! tokio tasks that take the lock again when they fire.

use crate::apiserver::history::{EVENT_FRESH, History};
use crate::apiserver::patch;
use crate::apiserver::resources::{
    DEPLOYMENTS, JOBS, NAMESPACES, NODES, PDBS, PODS, REPLICASETS, RESOURCES, STATEFULSETS,
};
use crate::apiserver::selector::LabelSelector;
use crate::apiserver::status::{self, ApiError};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::broadcast;

/// Server-wide knobs (see `Builder`).
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub time_scale: f64,
    pub controllers: bool,
    pub pod_start_delay: Duration,
    pub history_limit: usize,
    pub namespace_cleanup_delay: Duration,
}

/// One change, as watches see it. The objects are shared with the store and with the
/// neighbouring events of the same object: an event costs no copy of them.
#[derive(Debug)]
pub(crate) struct Event {
    pub rv: u64,
    pub typ: &'static str,
    pub res: usize,
    pub ns: String,
    pub obj: Arc<Value>,
    /// The object before the change (None for ADDED): label/field-filtered watches turn a
    /// change that leaves or enters the selection into DELETED / ADDED, as the watch cache does.
    pub prev: Option<Arc<Value>>,
    /// When it was recorded (the runtime's clock: simulated time under a paused clock).
    pub at: tokio::time::Instant,
}

/// What a delete did.
#[derive(Debug)]
pub(crate) enum Deleted {
    /// Still there (graceful deletion, finalizers, foreground): answered with the object.
    Marked(Value),
    /// Gone now.
    Removed(Value),
}

/// Delete options from the query and the DeleteOptions body.
#[derive(Debug, Default, Clone)]
pub(crate) struct DeleteOpts {
    pub grace: Option<i64>,
    pub propagation: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
}

/// The disruption controller's index of one PodDisruptionBudget: its selector, parsed once,
/// and the names of the pods of its namespace that the selector matches. Kept in step with
/// every stored pod and budget change (as upstream's controller reads its informers' caches),
/// so a sync costs the budget's own pods instead of a scan of its namespace on every pod
/// change.
#[derive(Debug)]
struct Budget {
    /// None for a null or unparsable selector (selects nothing).
    selector: Option<LabelSelector>,
    pods: BTreeSet<String>,
}

pub(crate) struct Shared {
    pub state: Mutex<State>,
}

pub(crate) struct State {
    pub rv: u64,
    /// The stored objects by resource index, then (namespace, name). Shared (`Arc`) with the
    /// watch events that carry them.
    objs: Vec<BTreeMap<(String, String), Arc<Value>>>,
    uids: HashMap<String, (usize, String, String)>,
    /// Each resource's window of recent events (the watch cache's), by resource index.
    history: Vec<History>,
    /// Every PDB's parsed selector and pods, by namespace then name (see [`Budget`]).
    budgets: HashMap<String, BTreeMap<String, Budget>>,
    pub logs: HashMap<(String, String), String>,
    /// Pods whose simulated kubelet has finished: removed as soon as their finalizers are gone.
    killed: HashSet<String>,
    rr: usize,
    /// PDBs an API pod DELETE or eviction took below their budget (see `guard_budgets`).
    pub breaches: Vec<crate::apiserver::BudgetBreach>,
    /// Images the registry does not have: a Job pod using one never starts (the kubelet
    /// reports `ImagePullBackOff`).
    pub missing_images: HashSet<String>,
    /// Pod starts held (`TestApiServer::hold_pod_starts`): namespace and label selector.
    pub holds: Vec<(String, LabelSelector)>,
    /// UIDs of the pods whose start is held, in the order their starts came due.
    pub held: Vec<String>,
    pub opts: Options,
    tx: broadcast::Sender<Arc<Event>>,
    weak: Weak<Shared>,
    handle: tokio::runtime::Handle,
}

/// RFC 3339 seconds, as the apiserver renders metav1.Time.
pub(crate) fn now_str() -> String {
    ts_str(jiff::Timestamp::now())
}

fn ts_str(t: jiff::Timestamp) -> String {
    t.round(jiff::Unit::Second).unwrap_or(t).strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn parse_ts(s: &str) -> Option<jiff::Timestamp> {
    s.parse().ok()
}

fn rand_suffix() -> String {
    // The alphabet of apimachinery's rand.String (no vowels, no confusable digits).
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5).map(|_| ALPHA[fastrand::usize(..ALPHA.len())] as char).collect()
}

fn uid() -> String {
    let mut b = [0u8; 16];
    for x in b.iter_mut() {
        *x = fastrand::u8(..);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

pub(crate) fn name_of(v: &Value) -> &str {
    v.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
}

pub(crate) fn ns_of(v: &Value) -> &str {
    v.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default()
}

pub(crate) fn uid_of(v: &Value) -> &str {
    v.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default()
}

fn terminating(v: &Value) -> bool {
    v.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
}

fn finalizers_empty(v: &Value) -> bool {
    v.pointer("/metadata/finalizers").and_then(Value::as_array).is_none_or(|a| a.is_empty())
}

/// `podutil.IsPodReady`: condition Ready is True.
pub(crate) fn pod_ready(p: &Value) -> bool {
    condition_true(p, "Ready")
}

fn condition_true(v: &Value, typ: &str) -> bool {
    v.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == typ && c["status"] == "True"))
}

fn phase(p: &Value) -> &str {
    p.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default()
}

fn controller_ref(v: &Value) -> Option<&Value> {
    v.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|o| o["controller"] == true))
}

fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = json!({});
    }
    v["metadata"].as_object_mut().unwrap()
}

/// Sets (or replaces) a condition, keeping lastTransitionTime when the status did not change.
fn set_condition(obj: &mut Value, mut cond: Value) {
    let now = now_str();
    if !obj.get("status").is_some_and(Value::is_object) {
        obj["status"] = json!({});
    }
    let conds = obj["status"].as_object_mut().unwrap().entry("conditions").or_insert_with(|| json!([]));
    if !conds.is_array() {
        *conds = json!([]);
    }
    let arr = conds.as_array_mut().unwrap();
    match arr.iter_mut().find(|c| c["type"] == cond["type"]) {
        Some(c) => {
            let same = c["status"] == cond["status"];
            if same && c.get("lastTransitionTime").is_some() {
                cond["lastTransitionTime"] = c["lastTransitionTime"].clone();
            } else if cond.get("lastTransitionTime").is_none() {
                cond["lastTransitionTime"] = json!(now);
            }
            *c = cond;
        }
        None => {
            if cond.get("lastTransitionTime").is_none() {
                cond["lastTransitionTime"] = json!(now);
            }
            arr.push(cond);
        }
    }
}

/// `intstr.GetScaledValueFromIntOrPercent(v, total, roundUp=true)`.
fn scaled(v: &Value, total: i64) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => match s.strip_suffix('%') {
            Some(p) => {
                let p: i64 = p.parse().ok()?;
                Some((p * total + 99) / 100)
            }
            None => s.parse().ok(),
        },
        _ => None,
    }
}

impl State {
    pub(crate) fn new(
        opts: Options,
        tx: broadcast::Sender<Arc<Event>>,
        weak: Weak<Shared>,
        handle: tokio::runtime::Handle,
    ) -> Self {
        // Upstream keeps 75 s of events; the simulated cluster's time runs at the time scale.
        let fresh = EVENT_FRESH.mul_f64(opts.time_scale.max(0.0));
        let mut s = Self {
            rv: 1,
            objs: vec![BTreeMap::new(); RESOURCES.len()],
            uids: HashMap::new(),
            history: (0..RESOURCES.len()).map(|_| History::new(opts.history_limit, fresh, 1)).collect(),
            budgets: HashMap::new(),
            logs: HashMap::new(),
            killed: HashSet::new(),
            rr: 0,
            breaches: Vec::new(),
            missing_images: HashSet::new(),
            holds: Vec::new(),
            held: Vec::new(),
            opts,
            tx,
            weak,
            handle,
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            s.ensure_namespace(ns);
        }
        s
    }

    fn scaled_duration(&self, secs: f64) -> Duration {
        Duration::from_secs_f64((secs * self.opts.time_scale).max(0.0))
    }

    /// Runs `f` with the state after `delay`, if the server still exists.
    pub(crate) fn after(&self, delay: Duration, f: impl FnOnce(&mut State) + Send + 'static) {
        let weak = self.weak.clone();
        self.handle.spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(shared) = weak.upgrade() {
                let mut st = shared.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                f(&mut st);
            }
        });
    }

    // ----- reads -----

    pub(crate) fn get(&self, res: usize, ns: &str, name: &str) -> Option<&Value> {
        self.get_shared(res, ns, name).map(|v| &**v)
    }

    fn get_shared(&self, res: usize, ns: &str, name: &str) -> Option<&Arc<Value>> {
        self.objs[res].get(&(ns.to_string(), name.to_string()))
    }

    /// Objects of a resource, in (namespace, name) order; `ns` None = all namespaces.
    pub(crate) fn iter<'a>(
        &'a self,
        res: usize,
        ns: Option<&'a str>,
    ) -> Box<dyn Iterator<Item = (&'a (String, String), &'a Value)> + 'a> {
        match ns {
            Some(ns) => Box::new(
                self.objs[res]
                    .range((ns.to_string(), String::new())..)
                    .take_while(move |((n, _), _)| n == ns)
                    .map(|(k, v)| (k, &**v)),
            ),
            None => Box::new(self.objs[res].iter().map(|(k, v)| (k, &**v))),
        }
    }

    /// Objects after the key `after` (exclusive), for pagination.
    pub(crate) fn iter_after<'a>(
        &'a self,
        res: usize,
        ns: Option<&'a str>,
        after: (String, String),
    ) -> Box<dyn Iterator<Item = (&'a (String, String), &'a Value)> + 'a> {
        use std::ops::Bound;
        let it = self.objs[res].range((Bound::Excluded(after), Bound::Unbounded)).map(|(k, v)| (k, &**v));
        match ns {
            Some(ns) => Box::new(it.take_while(move |((n, _), _)| n == ns)),
            None => Box::new(it),
        }
    }

    pub(crate) fn by_uid(&self, uid: &str) -> Option<(usize, &Value)> {
        let (res, ns, name) = self.uids.get(uid)?;
        self.get(*res, ns, name).map(|v| (*res, v))
    }

    /// Events of resource `res` after `rv` (exclusive), or `Err(oldest - 1)` when `rv` is
    /// older than that resource's window (see `history`).
    pub(crate) fn events_since(&self, res: usize, rv: u64) -> Result<Vec<Arc<Event>>, u64> {
        self.history[res].since(rv)
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// Drops every resource's event window, as a relist of each watch cache at the current
    /// resourceVersion would: any watch from an older resourceVersion gets 410.
    pub(crate) fn compact(&mut self) {
        let rv = self.rv;
        for h in &mut self.history {
            h.relist(rv);
        }
    }

    // ----- low-level writes -----

    /// Stores `obj` (added, or replacing the stored object of its name) under a new
    /// resourceVersion, records the event and runs the controllers.
    fn commit(&mut self, res: usize, mut obj: Value) -> Arc<Value> {
        self.rv += 1;
        let rv = self.rv;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        let ns = ns_of(&obj).to_string();
        let name = name_of(&obj).to_string();
        let u = uid_of(&obj).to_string();
        if !u.is_empty() {
            self.uids.insert(u, (res, ns.clone(), name.clone()));
        }
        let obj = Arc::new(obj);
        let prev = self.objs[res].insert((ns.clone(), name), obj.clone());
        self.index(res, prev.as_deref(), Some(&obj));
        let typ = if prev.is_some() { "MODIFIED" } else { "ADDED" };
        self.record(Event {
            rv,
            typ,
            res,
            ns,
            obj: obj.clone(),
            prev: prev.clone(),
            at: tokio::time::Instant::now(),
        });
        self.react(res, prev.as_deref(), Some(&obj));
        obj
    }

    fn erase(&mut self, res: usize, ns: &str, name: &str) -> Option<Arc<Value>> {
        let prev = self.objs[res].remove(&(ns.to_string(), name.to_string()))?;
        self.rv += 1;
        let rv = self.rv;
        self.uids.remove(uid_of(&prev));
        self.killed.remove(uid_of(&prev));
        self.index(res, Some(&prev), None);
        let mut obj = Value::clone(&prev);
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        let obj = Arc::new(obj);
        self.record(Event {
            rv,
            typ: "DELETED",
            res,
            ns: ns.to_string(),
            obj: obj.clone(),
            prev: Some(prev),
            at: tokio::time::Instant::now(),
        });
        self.react(res, Some(&obj), None);
        Some(obj)
    }

    fn record(&mut self, ev: Event) {
        let ev = Arc::new(ev);
        self.history[ev.res].push(ev.clone());
        let _ = self.tx.send(ev);
    }

    /// Fills server-owned metadata for a new object.
    fn prepare_new(&mut self, res: usize, obj: &mut Value) {
        let def = &RESOURCES[res];
        if obj.get("apiVersion").is_none() {
            obj["apiVersion"] = json!(def.api_version());
        }
        if obj.get("kind").is_none() {
            obj["kind"] = json!(def.kind);
        }
        let has_spec = obj.get("spec").is_some();
        let m = meta_mut(obj);
        if m.get("name").and_then(Value::as_str).is_none_or(str::is_empty)
            && let Some(g) = m.get("generateName").and_then(Value::as_str)
        {
            let n = format!("{g}{}", rand_suffix());
            m.insert("name".into(), json!(n));
        }
        if m.get("uid").and_then(Value::as_str).is_none_or(str::is_empty) {
            m.insert("uid".into(), json!(uid()));
        }
        if m.get("creationTimestamp").is_none_or(Value::is_null) {
            m.insert("creationTimestamp".into(), json!(now_str()));
        }
        if has_spec && m.get("generation").is_none() {
            m.insert("generation".into(), json!(1));
        }
        if !def.namespaced {
            m.remove("namespace");
        }
        if res == NAMESPACES && obj.pointer("/status/phase").is_none() {
            obj["status"] = json!({"phase": "Active"});
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
        }
    }

    pub(crate) fn ensure_namespace(&mut self, ns: &str) {
        if ns.is_empty() || self.get(NAMESPACES, "", ns).is_some() {
            return;
        }
        let mut obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}});
        self.prepare_new(NAMESPACES, &mut obj);
        self.commit(NAMESPACES, obj);
    }

    // ----- seeding (test side) -----

    /// Stores an object as given (status included), filling metadata. Replaces an existing one.
    pub(crate) fn insert(&mut self, res: usize, mut obj: Value) -> Value {
        let def = RESOURCES[res];
        self.prepare_new(res, &mut obj);
        let ns = if def.namespaced {
            if ns_of(&obj).is_empty() {
                meta_mut(&mut obj).insert("namespace".into(), json!("default"));
            }
            ns_of(&obj).to_string()
        } else {
            String::new()
        };
        self.ensure_namespace(&ns);
        if let Some(p) = self.get(res, &ns, name_of(&obj))
            // Keep identity across a re-insert unless the caller set a new uid.
            && obj.pointer("/metadata/uid") != p.pointer("/metadata/uid")
        {
            let old = uid_of(p).to_string();
            self.uids.remove(&old);
        }
        let out = self.commit(res, obj);
        if res == PDBS {
            self.recompute_pdb(&ns, name_of(&out));
            return self.get(res, &ns, name_of(&out)).cloned().unwrap_or_else(|| Value::clone(&out));
        }
        Value::clone(&out)
    }

    /// Replaces an object through a closure (test drivers); returns the new object.
    pub(crate) fn modify(
        &mut self,
        res: usize,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Option<Arc<Value>> {
        let prev = self.get_shared(res, ns, name)?.clone();
        let mut next = Value::clone(&prev);
        f(&mut next);
        if next == *prev {
            return Some(prev);
        }
        let out = self.commit(res, next);
        if terminating(&out) && finalizers_empty(&out) && (res != PODS || self.killed.contains(uid_of(&out)))
        {
            self.erase(res, ns, name);
        }
        Some(out)
    }

    /// Test driver: the object vanishes now.
    pub(crate) fn remove(&mut self, res: usize, ns: &str, name: &str) -> bool {
        self.erase(res, ns, name).is_some()
    }

    // ----- API writes -----

    /// Create (POST, or SSA of an absent object). `obj` is already validated for names.
    pub(crate) fn create(
        &mut self,
        res: usize,
        ns: &str,
        mut obj: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let def = &RESOURCES[res];
        if def.namespaced {
            meta_mut(&mut obj).insert("namespace".into(), json!(ns));
            match self.get(NAMESPACES, "", ns) {
                None => return Err(ApiError::not_found(&RESOURCES[NAMESPACES], ns)),
                Some(n) if terminating(n) => {
                    return Err(ApiError::namespace_terminating(def, name_of(&obj), ns));
                }
                Some(_) => {}
            }
        }
        for k in [
            "resourceVersion",
            "uid",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "creationTimestamp",
        ] {
            meta_mut(&mut obj).remove(k);
        }
        let name = name_of(&obj).to_string();
        let gen_name = obj.pointer("/metadata/generateName").and_then(Value::as_str).unwrap_or_default();
        if name.is_empty() && gen_name.is_empty() {
            return Err(ApiError::required(def, "", "metadata.name", "name or generateName is required"));
        }
        if !name.is_empty() && self.get(res, ns, &name).is_some() {
            return Err(ApiError::already_exists(def, &name));
        }
        self.prepare_new(res, &mut obj);
        // Status is not settable on create for resources with a status subresource.
        if def.has_status && res != NAMESPACES {
            obj["status"] = json!({});
            if res == PODS {
                obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
            }
        }
        if res == JOBS {
            self.default_job(&mut obj);
        }
        crate::apiserver::defaults::for_kind(def.kind, &mut obj);
        if res == PODS {
            crate::apiserver::defaults::pod_admission(&mut obj);
        }
        if res == JOBS {
            validate_job(def, &obj)?;
        }
        let errs = crate::apiserver::validate::object(def.plural, &obj);
        if !errs.is_empty() {
            return Err(ApiError::invalid_fields(def, name_of(&obj), &errs));
        }
        if dry_run {
            meta_mut(&mut obj).remove("resourceVersion");
            return Ok(obj);
        }
        let created = self.commit(res, obj);
        let (ns, name) = (ns_of(&created).to_string(), name_of(&created).to_string());
        match res {
            JOBS if self.opts.controllers => self.run_job(&ns, &name),
            PODS => self.kubelet_start(&created),
            PDBS => self.recompute_pdb(&ns, &name),
            _ => {}
        }
        Ok(self.get(res, &ns, &name).cloned().unwrap_or_else(|| Value::clone(&created)))
    }

    /// Replace an existing object with `next` (PUT, patches, SSA updates). `sub` = subresource.
    pub(crate) fn update(
        &mut self,
        res: usize,
        ns: &str,
        name: &str,
        mut next: Value,
        sub: Option<&str>,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let def = &RESOURCES[res];
        let Some(prev) = self.get(res, ns, name).cloned() else {
            return Err(ApiError::not_found(def, name));
        };
        if name_of(&next) != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                name_of(&next)
            )));
        }
        if let Some(rv) = next.pointer("/metadata/resourceVersion").and_then(Value::as_str)
            && !rv.is_empty()
            && Some(rv) != prev.pointer("/metadata/resourceVersion").and_then(Value::as_str)
        {
            return Err(ApiError::stale(def, name));
        }
        // Server-owned metadata always comes from the stored object.
        {
            let pm = prev["metadata"].clone();
            let m = meta_mut(&mut next);
            for k in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
                "resourceVersion",
            ] {
                match pm.get(k) {
                    Some(v) => {
                        m.insert(k.into(), v.clone());
                    }
                    None => {
                        m.remove(k);
                    }
                }
            }
        }
        next["apiVersion"] = prev["apiVersion"].clone();
        next["kind"] = prev["kind"].clone();
        if def.has_status {
            match sub {
                Some("status") => {
                    // Only status changes through /status.
                    let status = next.get("status").cloned();
                    let meta = next["metadata"].clone();
                    next = prev.clone();
                    next["metadata"]["managedFields"] =
                        meta.get("managedFields").cloned().unwrap_or(Value::Null);
                    if next["metadata"]["managedFields"].is_null() {
                        meta_mut(&mut next).remove("managedFields");
                    }
                    match status {
                        Some(s) => next["status"] = s,
                        None => {
                            next.as_object_mut().unwrap().remove("status");
                        }
                    }
                }
                _ => match prev.get("status") {
                    Some(s) => next["status"] = s.clone(),
                    None => {
                        next.as_object_mut().unwrap().remove("status");
                    }
                },
            }
        }
        if sub != Some("status") {
            crate::apiserver::defaults::for_kind(def.kind, &mut next);
            let errs: Vec<_> = crate::apiserver::validate::object(def.plural, &next)
                .into_iter()
                .filter(|(f, _)| f != "metadata.name")
                .collect();
            if !errs.is_empty() {
                return Err(ApiError::invalid_fields(def, name, &errs));
            }
        }
        // Compare against the stored object as defaulting would leave it (seeded objects may
        // lack defaults).
        let mut prev_d = prev.clone();
        crate::apiserver::defaults::for_kind(def.kind, &mut prev_d);
        if res == PODS && sub != Some("status") && !pod_spec_update_ok(prev_d.get("spec"), next.get("spec")) {
            return Err(ApiError::forbidden_field(
                def,
                name,
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
            ));
        }
        if res == JOBS {
            for field in ["template", "selector"] {
                let (a, b) =
                    (prev_d.pointer(&format!("/spec/{field}")), next.pointer(&format!("/spec/{field}")));
                if a != b {
                    return Err(ApiError::invalid(
                        def,
                        name,
                        &format!("spec.{field}"),
                        b.unwrap_or(&Value::Null),
                        "field is immutable",
                    ));
                }
            }
        }
        if prev.get("spec") != next.get("spec") && next.get("spec").is_some() {
            let g = prev.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0) + 1;
            meta_mut(&mut next).insert("generation".into(), json!(g));
        }
        if terminating(&prev) {
            // New finalizers cannot be added to an object that is being deleted.
            let old: Vec<Value> =
                prev.pointer("/metadata/finalizers").and_then(Value::as_array).cloned().unwrap_or_default();
            if let Some(Value::Array(nf)) = next.pointer("/metadata/finalizers")
                && nf.iter().any(|f| !old.contains(f))
            {
                return Err(ApiError::for_code(
                    422,
                    Some(format!(
                        "{} {name:?} is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted",
                        def.qualified_kind()
                    )),
                    Some(def),
                    Some(name),
                    "update",
                    Some(ns),
                ));
            }
        }
        if dry_run || next == prev {
            return Ok(if next == prev { prev } else { next });
        }
        let out = self.commit(res, next);
        if terminating(&out) && finalizers_empty(&out) && (res != PODS || self.killed.contains(uid_of(&out)))
        {
            self.erase(res, ns, name);
            return Ok(Value::clone(&out));
        }
        if res == PDBS {
            self.recompute_pdb(ns, name);
            return Ok(self.get(res, ns, name).cloned().unwrap_or_else(|| Value::clone(&out)));
        }
        Ok(Value::clone(&out))
    }

    /// DELETE of one object.
    pub(crate) fn delete(
        &mut self,
        res: usize,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Deleted, ApiError> {
        let def = &RESOURCES[res];
        let Some(obj) = self.get(res, ns, name).cloned() else {
            return Err(ApiError::not_found(def, name));
        };
        if let Some(u) = &opts.uid
            && u != uid_of(&obj)
        {
            return Err(ApiError::conflict(
                def,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {u}, UID in object meta: {}",
                    uid_of(&obj)
                ),
            ));
        }
        if let Some(rv) = &opts.resource_version {
            let cur = obj.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or_default();
            if rv != cur {
                return Err(ApiError::conflict(
                    def,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {cur}"
                    ),
                ));
            }
        }
        if res == PODS {
            return Ok(self.delete_pod(obj, opts));
        }
        if res == NAMESPACES && !opts.dry_run {
            return Ok(self.delete_namespace(obj));
        }
        if terminating(&obj) {
            return Ok(Deleted::Marked(obj));
        }
        let propagation = opts.propagation.clone().unwrap_or_else(|| {
            // batch/v1 Jobs default to orphaning their pods (kubernetes/kubernetes#20902).
            if res == JOBS { "Orphan".into() } else { "Background".into() }
        });
        if opts.dry_run {
            return Ok(if finalizers_empty(&obj) && propagation == "Background" {
                Deleted::Removed(obj)
            } else {
                Deleted::Marked(obj)
            });
        }
        let uid = uid_of(&obj).to_string();
        match propagation.as_str() {
            "Foreground" => {
                let mut next = obj.clone();
                let m = meta_mut(&mut next);
                m.insert("deletionTimestamp".into(), json!(now_str()));
                m.insert("deletionGracePeriodSeconds".into(), json!(0));
                let fins = m.entry("finalizers").or_insert_with(|| json!([]));
                if let Value::Array(a) = fins
                    && !a.contains(&json!("foregroundDeletion"))
                {
                    a.push(json!("foregroundDeletion"));
                }
                let marked = self.commit(res, next);
                self.delete_dependents(ns, &uid);
                self.gc_foreground(&uid);
                Ok(match self.by_uid(&uid) {
                    Some((_, v)) => Deleted::Marked(v.clone()),
                    None => Deleted::Marked(Value::clone(&marked)),
                })
            }
            "Orphan" => {
                // The registry adds the `orphan` finalizer and answers with the object; the
                // garbage collector then strips the dependents' ownerReferences, drops the
                // finalizer and the object goes (asynchronously, as upstream).
                let mut next = obj.clone();
                let m = meta_mut(&mut next);
                m.insert("deletionTimestamp".into(), json!(now_str()));
                m.insert("deletionGracePeriodSeconds".into(), json!(0));
                let fins = m.entry("finalizers").or_insert_with(|| json!([]));
                if let Value::Array(a) = fins
                    && !a.contains(&json!("orphan"))
                {
                    a.push(json!("orphan"));
                }
                let out = self.commit(res, next);
                let uid = uid.clone();
                self.after(Duration::from_millis(1), move |st| st.finish_orphan(&uid));
                Ok(Deleted::Marked(Value::clone(&out)))
            }
            _ => {
                if finalizers_empty(&obj) {
                    let gone = self.erase(res, ns, name).map_or(obj, |g| Value::clone(&g));
                    self.delete_dependents(ns, &uid);
                    Ok(Deleted::Removed(gone))
                } else {
                    let mut next = obj.clone();
                    let m = meta_mut(&mut next);
                    m.insert("deletionTimestamp".into(), json!(now_str()));
                    m.insert("deletionGracePeriodSeconds".into(), json!(0));
                    let out = self.commit(res, next);
                    self.delete_dependents(ns, &uid);
                    Ok(Deleted::Marked(Value::clone(&out)))
                }
            }
        }
    }

    fn finish_orphan(&mut self, uid: &str) {
        let Some((res, obj)) = self.by_uid(uid).map(|(r, v)| (r, v.clone())) else {
            return;
        };
        let (ns, name) = (ns_of(&obj).to_string(), name_of(&obj).to_string());
        self.orphan_dependents(&ns, uid);
        self.modify(res, &ns, &name, |v| {
            if let Some(Value::Array(a)) = v.pointer_mut("/metadata/finalizers") {
                a.retain(|f| f != "orphan");
            }
            if finalizers_empty(v) {
                meta_mut(v).remove("finalizers");
            }
        });
    }

    /// The namespace goes Terminating, its contents are deleted (pods gracefully), and it is
    /// removed once empty (the namespace controller's job).
    fn delete_namespace(&mut self, obj: Value) -> Deleted {
        let name = name_of(&obj).to_string();
        if !terminating(&obj) {
            let mut next = obj.clone();
            meta_mut(&mut next).insert("deletionTimestamp".into(), json!(now_str()));
            meta_mut(&mut next).insert("deletionGracePeriodSeconds".into(), json!(0));
            next["status"] = json!({"phase": "Terminating"});
            self.commit(NAMESPACES, next);
            let delay = self.opts.namespace_cleanup_delay;
            if delay.is_zero() {
                self.namespace_cleanup(&name);
            } else {
                let ns = name.clone();
                self.after(delay, move |st| st.namespace_cleanup(&ns));
            }
        }
        match self.get(NAMESPACES, "", &name) {
            Some(v) => Deleted::Marked(v.clone()),
            None => Deleted::Removed(obj),
        }
    }

    /// The namespace controller's pass over a Terminating namespace: delete its contents (pods
    /// gracefully), then the namespace once empty.
    fn namespace_cleanup(&mut self, ns: &str) {
        for (res, def) in RESOURCES.iter().enumerate() {
            if !def.namespaced {
                continue;
            }
            let names: Vec<String> = self.iter(res, Some(ns)).map(|(k, _)| k.1.clone()).collect();
            for n in names {
                let _ = self.delete(res, ns, &n, &DeleteOpts::default());
            }
        }
        self.namespace_gc(ns);
    }

    fn namespace_gc(&mut self, ns: &str) {
        let Some(n) = self.get(NAMESPACES, "", ns) else {
            return;
        };
        if !terminating(n) || !finalizers_empty(n) {
            return;
        }
        let empty = RESOURCES
            .iter()
            .enumerate()
            .all(|(res, def)| !def.namespaced || self.iter(res, Some(ns)).next().is_none());
        if empty {
            self.erase(NAMESPACES, "", ns);
        }
    }

    fn delete_pod(&mut self, obj: Value, opts: &DeleteOpts) -> Deleted {
        let ns = ns_of(&obj).to_string();
        let name = name_of(&obj).to_string();
        let mut grace = opts
            .grace
            .or_else(|| obj.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64))
            .unwrap_or(30)
            .max(0);
        // pod strategy CheckGracefulDelete: unscheduled or terminal pods go at once.
        let node = obj.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default();
        if node.is_empty() || matches!(phase(&obj), "Succeeded" | "Failed") {
            grace = 0;
        }
        if opts.dry_run {
            return if grace == 0 && finalizers_empty(&obj) {
                Deleted::Removed(obj)
            } else {
                Deleted::Marked(obj)
            };
        }
        if terminating(&obj) {
            let cur =
                obj.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0);
            if grace >= cur {
                return Deleted::Marked(obj);
            }
        }
        if grace == 0 && finalizers_empty(&obj) {
            return Deleted::Removed(self.erase(PODS, &ns, &name).map_or(obj, |g| Value::clone(&g)));
        }
        let mut next = obj.clone();
        let deadline = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
        let m = meta_mut(&mut next);
        m.insert("deletionTimestamp".into(), json!(ts_str(deadline)));
        m.insert("deletionGracePeriodSeconds".into(), json!(grace));
        let out = self.commit(PODS, next);
        let uid = uid_of(&out).to_string();
        // The simulated kubelet stops a pod that never started at once, a running one after its grace.
        let delay =
            if phase(&out) == "Pending" { Duration::ZERO } else { self.scaled_duration(grace as f64) };
        if delay.is_zero() {
            self.kubelet_kill(&uid);
        } else {
            self.after(delay, move |st| st.kubelet_kill(&uid));
        }
        match self.by_uid(uid_of(&out)) {
            Some((_, v)) => Deleted::Marked(v.clone()),
            None => Deleted::Removed(Value::clone(&out)),
        }
    }

    fn kubelet_kill(&mut self, uid: &str) {
        let Some((PODS, pod)) = self.by_uid(uid).map(|(r, v)| (r, v.clone())) else {
            return;
        };
        if !terminating(&pod) {
            return;
        }
        if finalizers_empty(&pod) {
            self.erase(PODS, ns_of(&pod), name_of(&pod));
        } else {
            self.killed.insert(uid.to_string());
        }
    }

    /// A pod created through the API on a node starts after the pod start delay.
    fn kubelet_start(&mut self, pod: &Value) {
        if !self.opts.controllers {
            return;
        }
        let node = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default();
        if node.is_empty() {
            return;
        }
        let uid = uid_of(pod).to_string();
        let delay = self.opts.pod_start_delay;
        self.after(delay, move |st| st.mark_running(&uid));
    }

    fn mark_running(&mut self, uid: &str) {
        let Some((PODS, pod)) = self.by_uid(uid).map(|(r, v)| (r, v.clone())) else {
            return;
        };
        if terminating(&pod) || phase(&pod) != "Pending" {
            return;
        }
        let held = self
            .holds
            .iter()
            .any(|(ns, sel)| ns == ns_of(&pod) && sel.matches(pod.pointer("/metadata/labels")));
        if held {
            if !self.held.iter().any(|h| h == uid) {
                self.held.push(uid.to_string());
            }
            return;
        }
        self.start_pod(&pod);
    }

    /// Starts a held pod now (`TestApiServer::release_pod`); false if it is not held (any more).
    pub(crate) fn release_held(&mut self, uid: &str) -> bool {
        let Some(i) = self.held.iter().position(|h| h == uid) else {
            return false;
        };
        self.held.remove(i);
        match self.by_uid(uid).map(|(r, v)| (r, v.clone())) {
            Some((PODS, pod)) if !terminating(&pod) && phase(&pod) == "Pending" => {
                self.start_pod(&pod);
                true
            }
            _ => false,
        }
    }

    /// The kubelet has started the pod's containers: Running and Ready (or crash-looping).
    fn start_pod(&mut self, pod: &Value) {
        let (ns, name) = (ns_of(pod).to_string(), name_of(pod).to_string());
        let ips = self.pod_ips(pod);
        let crashing = pod
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(crate::apiserver::CRASH_LOOP_ANNOTATION))
            .is_some_and(|v| v == "true");
        self.modify(PODS, &ns, &name, |p| {
            if crashing {
                crash_loop_status(p);
            } else {
                running_status(p);
            }
            set_ips(p, ips);
        });
    }

    /// hostIP (the node's InternalIP) and a pod IP, as a kubelet reports them.
    fn pod_ips(&self, pod: &Value) -> (Option<String>, String) {
        let node = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default();
        let host = self.get(NODES, "", node).and_then(|n| {
            n.pointer("/status/addresses")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
                .and_then(|x| x["address"].as_str())
                .map(String::from)
        });
        let pod_ip = format!("10.244.{}.{}", fastrand::u8(0..=254), fastrand::u8(2..=254));
        (host, pod_ip)
    }

    fn dependents(&self, ns: &str, owner_uid: &str) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for (res, def) in RESOURCES.iter().enumerate() {
            if !def.namespaced {
                continue;
            }
            for ((_, name), v) in self.iter(res, Some(ns)) {
                let owned = v
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.iter().any(|o| o["uid"] == owner_uid));
                if owned {
                    out.push((res, name.clone()));
                }
            }
        }
        out
    }

    fn delete_dependents(&mut self, ns: &str, owner_uid: &str) {
        for (res, name) in self.dependents(ns, owner_uid) {
            let _ = self.delete(res, ns, &name, &DeleteOpts::default());
        }
    }

    fn orphan_dependents(&mut self, ns: &str, owner_uid: &str) {
        for (res, name) in self.dependents(ns, owner_uid) {
            let owner_uid = owner_uid.to_string();
            self.modify(res, ns, &name, |v| {
                if let Some(Value::Array(a)) = v.pointer_mut("/metadata/ownerReferences") {
                    a.retain(|o| o["uid"] != owner_uid.as_str());
                }
                if v.pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.is_empty())
                {
                    meta_mut(v).remove("ownerReferences");
                }
            });
        }
    }

    /// Finishes a foreground deletion once the owner has no dependents left.
    fn gc_foreground(&mut self, owner_uid: &str) {
        let Some((res, owner)) = self.by_uid(owner_uid).map(|(r, v)| (r, v.clone())) else {
            return;
        };
        let fg = owner
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| a.contains(&json!("foregroundDeletion")));
        if !fg || !terminating(&owner) {
            return;
        }
        let ns = ns_of(&owner).to_string();
        if !self.dependents(&ns, owner_uid).is_empty() {
            return;
        }
        let name = name_of(&owner).to_string();
        self.modify(res, &ns, &name, |v| {
            if let Some(Value::Array(a)) = v.pointer_mut("/metadata/finalizers") {
                a.retain(|f| f != "foregroundDeletion");
            }
            if finalizers_empty(v) {
                meta_mut(v).remove("finalizers");
            }
        });
    }

    /// Hooks run after every stored change.
    fn react(&mut self, res: usize, prev: Option<&Value>, cur: Option<&Value>) {
        if cur.is_none()
            && let Some(p) = prev
        {
            let owners: Vec<String> = p
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|o| o["uid"].as_str().map(String::from)).collect())
                .unwrap_or_default();
            for o in owners {
                self.gc_foreground(&o);
            }
            if RESOURCES[res].namespaced {
                let ns = ns_of(p).to_string();
                self.namespace_gc(&ns);
            }
        }
        if let (Some(p), Some(c)) = (prev, cur)
            && matches!(res, REPLICASETS | DEPLOYMENTS | STATEFULSETS)
            && p.pointer("/spec/replicas") != c.pointer("/spec/replicas")
        {
            // Upstream the disruption controller has no workload handlers: a scale change reaches
            // it through the pods the workload controllers then add or remove. Without those
            // controllers here (Deployment scaling), the budgets are resynced directly.
            self.recompute_pdbs(ns_of(c));
        }
        if res != PODS {
            return;
        }
        if pdb_relevant_change(prev, cur)
            && let Some(pod) = cur.or(prev)
        {
            self.sync_pdb_for_pod(pod);
        }
        if !self.opts.controllers {
            return;
        }
        let Some(p) = prev else { return };
        self.job_pod_changed(p, cur);
        let was_terminating = terminating(p);
        let Some(owner) = controller_ref(p).cloned() else {
            return;
        };
        match (owner["kind"].as_str(), cur) {
            // ReplicaSets ignore terminating pods, so they replace at deletion start.
            (Some("ReplicaSet"), Some(c)) if !was_terminating && terminating(c) => {
                self.replace_pod(p, &owner, false)
            }
            (Some("ReplicaSet"), None) if !was_terminating => self.replace_pod(p, &owner, false),
            // StatefulSets reuse the name, so they wait until the pod is gone.
            (Some("StatefulSet"), None) => self.replace_pod(p, &owner, true),
            _ => {}
        }
    }

    fn pick_node(&mut self, avoid: &str) -> Option<String> {
        let nodes: Vec<String> = self
            .iter(NODES, None)
            .filter(|(_, n)| {
                n.pointer("/spec/unschedulable") != Some(&json!(true))
                    && condition_true(n, "Ready")
                    && name_of(n) != avoid
            })
            .map(|(_, n)| name_of(n).to_string())
            .collect();
        if nodes.is_empty() {
            return None;
        }
        self.rr += 1;
        Some(nodes[self.rr % nodes.len()].clone())
    }

    fn replace_pod(&mut self, old: &Value, owner: &Value, same_name: bool) {
        let ns = ns_of(old).to_string();
        let owner_res = if same_name { STATEFULSETS } else { REPLICASETS };
        let Some(ctrl) = self.get(owner_res, &ns, owner["name"].as_str().unwrap_or_default()).cloned() else {
            return;
        };
        if terminating(&ctrl) || uid_of(&ctrl) != owner["uid"].as_str().unwrap_or_default() {
            return;
        }
        if self.get(NAMESPACES, "", &ns).is_none_or(terminating) {
            return;
        }
        let name = if same_name {
            name_of(old).to_string()
        } else {
            format!("{}-{}", name_of(&ctrl), rand_suffix())
        };
        if self.get(PODS, &ns, &name).is_some() {
            return;
        }
        let template = ctrl.pointer("/spec/template").cloned();
        let labels = template
            .as_ref()
            .and_then(|t| t.pointer("/metadata/labels").cloned())
            .or_else(|| old.pointer("/metadata/labels").cloned());
        let mut spec = template
            .as_ref()
            .and_then(|t| t.get("spec").cloned())
            .or_else(|| old.get("spec").cloned())
            .unwrap_or_else(|| json!({}));
        let old_node = old.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default().to_string();
        let node = self.pick_node(&old_node);
        if let Some(obj) = spec.as_object_mut() {
            obj.remove("nodeName");
            if let Some(n) = &node {
                obj.insert("nodeName".into(), json!(n));
            }
        }
        let mut pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": ns,
                "ownerReferences": old.pointer("/metadata/ownerReferences").cloned().unwrap_or(json!([])),
            },
            "spec": spec,
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": if node.is_some() {"True"} else {"False"}, "lastTransitionTime": now_str()}]},
        });
        if let Some(l) = labels {
            pod["metadata"]["labels"] = l;
        }
        if let Some(a) = template.as_ref().and_then(|t| t.pointer("/metadata/annotations")) {
            pod["metadata"]["annotations"] = a.clone();
        }
        if !same_name {
            pod["metadata"]["generateName"] = json!(format!("{}-", name_of(&ctrl)));
        }
        crate::apiserver::defaults::pod_admission(&mut pod);
        self.prepare_new(PODS, &mut pod);
        let created = self.commit(PODS, pod);
        if node.is_some() {
            let uid = uid_of(&created).to_string();
            let delay = self.opts.pod_start_delay;
            self.after(delay, move |st| st.mark_running(&uid));
        }
    }

    // ----- Job controller -----

    /// Job defaulting: selector and template labels (batch/v1 SetDefaults + the Job strategy).
    fn default_job(&mut self, job: &mut Value) {
        let uid = uid_of(job).to_string();
        let name = name_of(job).to_string();
        if job.get("spec").is_none() {
            job["spec"] = json!({});
        }
        // batch/v1 SetDefaults_Job: an unlabelled Job takes its template's labels.
        let tlabels = job.pointer("/spec/template/metadata/labels").cloned();
        if let Some(l) = tlabels.filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
            && job.pointer("/metadata/labels").and_then(Value::as_object).is_none_or(|m| m.is_empty())
        {
            meta_mut(job).insert("labels".into(), l);
        }
        let manual = job.pointer("/spec/manualSelector") == Some(&json!(true));
        if !manual {
            job["spec"]["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
            if !job["spec"].get("template").is_some_and(Value::is_object) {
                job["spec"]["template"] = json!({});
            }
            let t = &mut job["spec"]["template"];
            if !t.get("metadata").is_some_and(Value::is_object) {
                t["metadata"] = json!({});
            }
            if !t["metadata"].get("labels").is_some_and(Value::is_object) {
                t["metadata"]["labels"] = json!({});
            }
            let l = t["metadata"]["labels"].as_object_mut().unwrap();
            l.insert("batch.kubernetes.io/controller-uid".into(), json!(uid));
            l.insert("batch.kubernetes.io/job-name".into(), json!(name));
            l.insert("controller-uid".into(), json!(uid));
            l.insert("job-name".into(), json!(name));
        }
        let spec = job["spec"].as_object_mut().unwrap();
        spec.entry("backoffLimit").or_insert(json!(6));
        spec.entry("completions").or_insert(json!(1));
        spec.entry("parallelism").or_insert(json!(1));
        spec.entry("completionMode").or_insert(json!("NonIndexed"));
        spec.entry("suspend").or_insert(json!(false));
        spec.entry("podReplacementPolicy").or_insert(json!("TerminatingOrFailed"));
    }

    /// The Job controller's first sync: one pod, status active=1.
    fn run_job(&mut self, ns: &str, name: &str) {
        let Some(job) = self.get(JOBS, ns, name).cloned() else {
            return;
        };
        if self.get(NAMESPACES, "", ns).is_none_or(terminating) {
            return;
        }
        if job.pointer("/spec/suspend") == Some(&json!(true)) {
            return;
        }
        let mut spec = job.pointer("/spec/template/spec").cloned().unwrap_or_else(|| json!({}));
        let placed = self.schedule(&spec);
        if let (Ok(Some(n)), Some(o)) = (&placed, spec.as_object_mut()) {
            o.insert("nodeName".into(), json!(n));
        }
        let now = now_str();
        let mut pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": format!("{name}-"),
                "namespace": ns,
                "labels": job.pointer("/spec/template/metadata/labels").cloned().unwrap_or(json!({})),
                "ownerReferences": [{
                    "apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid_of(&job),
                    "controller": true, "blockOwnerDeletion": true,
                }],
            },
            "spec": spec,
            "status": {"phase": "Running", "startTime": now},
        });
        if let Some(a) = job.pointer("/spec/template/metadata/annotations") {
            pod["metadata"]["annotations"] = a.clone();
        }
        let scheduled = placed.is_ok();
        let missing = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .and_then(|cs| {
                cs.iter().filter_map(|c| c["image"].as_str()).find(|i| self.missing_images.contains(*i))
            })
            .map(String::from);
        match (placed, missing) {
            (Ok(_), None) => {
                running_status(&mut pod);
                let ips = self.pod_ips(&pod);
                set_ips(&mut pod, ips);
            }
            (Ok(_), Some(image)) => {
                // Scheduled, but the kubelet cannot pull the image: ContainerCreating, then
                // (after the start delay) the back-off the kubelet reports after a failed pull.
                pulling_status(&mut pod);
                let ips = self.pod_ips(&pod);
                set_ips(&mut pod, ips);
                let (ns, delay) = (ns.to_string(), self.opts.pod_start_delay);
                let job_uid = uid_of(&job).to_string();
                self.after(delay, move |st| st.image_pull_back_off(&ns, &job_uid, &image));
            }
            (Err(message), _) => {
                pod["status"] = json!({"phase": "Pending", "qosClass": "Burstable"});
                set_condition(
                    &mut pod,
                    json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message, "lastProbeTime": null}),
                );
            }
        }
        crate::apiserver::defaults::pod_admission(&mut pod);
        self.prepare_new(PODS, &mut pod);
        self.commit(PODS, pod);
        self.modify(JOBS, ns, name, |j| {
            if !j.get("status").is_some_and(Value::is_object) {
                j["status"] = json!({});
            }
            let st = j["status"].as_object_mut().unwrap();
            st.insert("active".into(), json!(1));
            st.insert("ready".into(), json!(i64::from(scheduled)));
            st.insert("terminating".into(), json!(0));
            st.entry("startTime").or_insert(json!(now));
            st.insert("uncountedTerminatedPods".into(), json!({}));
        });
    }

    /// The kubelet's failed pull of `image` for the pods of the Job `job_uid`: every pod still
    /// Pending shows `ImagePullBackOff` with the kubelet's message (`Back-off pulling image
    /// "<image>"`, pkg/kubelet/images/image_manager.go).
    fn image_pull_back_off(&mut self, ns: &str, job_uid: &str, image: &str) {
        let pods: Vec<String> = self
            .iter(PODS, Some(ns))
            .filter(|(_, p)| controller_ref(p).is_some_and(|o| o["uid"] == job_uid))
            .filter(|(_, p)| phase(p) == "Pending" && !terminating(p))
            .map(|(_, p)| name_of(p).to_string())
            .collect();
        let message = format!("Back-off pulling image {image:?}");
        for name in pods {
            self.modify(PODS, ns, &name, |p| {
                let m = message.clone();
                container_states(
                    p,
                    move |_| json!({"waiting": {"reason": "ImagePullBackOff", "message": m.clone()}}),
                    false,
                );
            });
        }
    }

    /// kube-scheduler for a Job's pod: `Ok(None)` when it names its node itself (`nodeName`
    /// bypasses the scheduler) or when no Node objects exist at all (tests that model no
    /// nodes); `Ok(Some(node))` for the first node, by name, that passes the filters in
    /// [`crate::apiserver::scheduler`]; `Err(message)` with the `PodScheduled=False` message otherwise.
    fn schedule(&self, spec: &Value) -> Result<Option<String>, String> {
        if spec.get("nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty()) {
            return Ok(None);
        }
        let nodes: Vec<&Value> = self.iter(NODES, None).map(|(_, n)| n).collect();
        if nodes.is_empty() {
            return Ok(None);
        }
        let mut reasons = Vec::new();
        for n in nodes {
            match crate::apiserver::scheduler::fits(spec, n) {
                Ok(()) => return Ok(Some(name_of(n).to_string())),
                Err(r) => reasons.push(r),
            }
        }
        Err(crate::apiserver::scheduler::unschedulable_message(&reasons))
    }

    pub(crate) fn job_pods(&self, job: &Value) -> Vec<String> {
        let u = uid_of(job);
        self.iter(PODS, Some(ns_of(job)))
            .filter(|(_, p)| controller_ref(p).is_some_and(|o| o["uid"] == u))
            .map(|(_, p)| name_of(p).to_string())
            .collect()
    }

    /// Test driver: finish a Job's pods and the Job, successfully or not.
    pub(crate) fn finish_job(&mut self, ns: &str, name: &str, failure: Option<&str>) -> Option<Value> {
        let job = self.get(JOBS, ns, name)?.clone();
        let pods = self.job_pods(&job);
        // The Job's conditions first, so the pod updates below are not taken for failures.
        self.set_job_finished(ns, name, failure, 1);
        let now = now_str();
        for pod in pods {
            let now = now.clone();
            self.modify(PODS, ns, &pod, |p| {
                if terminating(p) || matches!(phase(p), "Succeeded" | "Failed") {
                    return;
                }
                let ph = if failure.is_some() { "Failed" } else { "Succeeded" };
                p["status"]["phase"] = json!(ph);
                let (code, why) = if failure.is_some() { (1, "Error") } else { (0, "Completed") };
                container_states(p, |started| {
                    json!({"terminated": {"exitCode": code, "reason": why, "startedAt": started, "finishedAt": now, "containerID": ""}})
                }, false);
                set_condition(p, json!({"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now}));
                set_condition(p, json!({"type": "ContainersReady", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now}));
            });
        }
        self.get(JOBS, ns, name).cloned()
    }

    fn set_job_finished(
        &mut self,
        ns: &str,
        name: &str,
        failure: Option<&str>,
        count: i64,
    ) -> Option<Arc<Value>> {
        let now = now_str();
        self.modify(JOBS, ns, name, |j| {
            if !j.get("status").is_some_and(Value::is_object) {
                j["status"] = json!({});
            }
            let s = j["status"].as_object_mut().unwrap();
            s.insert("active".into(), json!(0));
            s.insert("ready".into(), json!(0));
            s.insert("terminating".into(), json!(0));
            s.entry("startTime").or_insert(json!(now));
            match failure {
                None => {
                    s.insert("succeeded".into(), json!(count));
                    s.insert("completionTime".into(), json!(now));
                    let msg = "Reached expected number of succeeded pods";
                    set_condition(j, json!({"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "message": msg, "lastProbeTime": now, "lastTransitionTime": now}));
                    set_condition(j, json!({"type": "Complete", "status": "True", "reason": "CompletionsReached", "message": msg, "lastProbeTime": now, "lastTransitionTime": now}));
                }
                Some(reason) => {
                    s.insert("failed".into(), json!(count));
                    let msg = match reason {
                        "BackoffLimitExceeded" => "Job has reached the specified backoff limit",
                        "DeadlineExceeded" => "Job was active longer than specified deadline",
                        other => other,
                    };
                    set_condition(j, json!({"type": "FailureTarget", "status": "True", "reason": reason, "message": msg, "lastProbeTime": now, "lastTransitionTime": now}));
                    set_condition(j, json!({"type": "Failed", "status": "True", "reason": reason, "message": msg, "lastProbeTime": now, "lastTransitionTime": now}));
                }
            }
        })
    }

    /// The Job controller's view of one of its pods changing: a pod that succeeds completes
    /// the Job; one that fails, starts terminating or vanishes before finishing counts as a
    /// failure (upstream counts terminating pods as failed under the default
    /// podReplacementPolicy), then the Job fails past `backoffLimit` or gets a new pod.
    fn job_pod_changed(&mut self, prev: &Value, cur: Option<&Value>) {
        let Some(owner) = controller_ref(prev).filter(|o| o["kind"] == "Job") else {
            return;
        };
        let ns = ns_of(prev).to_string();
        let job_name = owner["name"].as_str().unwrap_or_default().to_string();
        let Some(job) = self.get(JOBS, &ns, &job_name).cloned() else {
            return;
        };
        if uid_of(&job) != owner["uid"].as_str().unwrap_or_default()
            || terminating(&job)
            || condition_true(&job, "Complete")
            || condition_true(&job, "Failed")
        {
            return;
        }
        if terminating(prev) || matches!(phase(prev), "Succeeded" | "Failed") {
            return;
        }
        match cur {
            Some(c) if !terminating(c) && phase(c) == "Succeeded" => {
                self.finish_job(&ns, &job_name, None);
            }
            Some(c) if !terminating(c) && phase(c) != "Failed" => {}
            _ => {
                let failed = job.pointer("/status/failed").and_then(Value::as_i64).unwrap_or(0) + 1;
                let backoff = job.pointer("/spec/backoffLimit").and_then(Value::as_i64).unwrap_or(6);
                if failed > backoff {
                    self.set_job_finished(&ns, &job_name, Some("BackoffLimitExceeded"), failed);
                } else {
                    self.modify(JOBS, &ns, &job_name, |j| {
                        j["status"]["failed"] = json!(failed);
                        j["status"]["active"] = json!(0);
                    });
                    self.run_job(&ns, &job_name);
                }
            }
        }
    }

    // ----- disruption controller -----

    /// Keeps [`Budgets`] in step with a stored change (`prev` → `cur`, None = absent).
    fn index(&mut self, res: usize, prev: Option<&Value>, cur: Option<&Value>) {
        let Some(obj) = cur.or(prev) else { return };
        let (ns, name) = (ns_of(obj), name_of(obj));
        match res {
            PODS => {
                let labels = cur.and_then(|c| c.pointer("/metadata/labels"));
                if prev.is_some()
                    && cur.is_some()
                    && prev.and_then(|p| p.pointer("/metadata/labels")) == labels
                {
                    return;
                }
                let Some(budgets) = self.budgets.get_mut(ns) else { return };
                for b in budgets.values_mut() {
                    if cur.is_some() && b.selector.as_ref().is_some_and(|s| s.matches(labels)) {
                        if !b.pods.contains(name) {
                            b.pods.insert(name.to_string());
                        }
                    } else {
                        b.pods.remove(name);
                    }
                }
            }
            PDBS => {
                let Some(c) = cur else {
                    if let Some(budgets) = self.budgets.get_mut(ns) {
                        budgets.remove(name);
                        if budgets.is_empty() {
                            self.budgets.remove(ns);
                        }
                    }
                    return;
                };
                let sel = c.pointer("/spec/selector");
                let known = self.budgets.get(ns).is_some_and(|b| b.contains_key(name));
                if known && prev.map(|p| p.pointer("/spec/selector")) == Some(sel) {
                    return;
                }
                let selector = LabelSelector::from_object(sel.unwrap_or(&Value::Null)).ok().flatten();
                let pods = match &selector {
                    Some(s) => self
                        .iter(PODS, Some(ns))
                        .filter(|(_, p)| s.matches(p.pointer("/metadata/labels")))
                        .map(|((_, n), _)| n.clone())
                        .collect(),
                    None => BTreeSet::new(),
                };
                self.budgets
                    .entry(ns.to_string())
                    .or_default()
                    .insert(name.to_string(), Budget { selector, pods });
            }
            _ => {}
        }
    }

    /// The names of the PDBs of the pod's namespace whose selector matches its labels
    /// (policy/v1: empty selects all, null none), by name.
    pub(crate) fn pdbs_for(&self, pod: &Value) -> Vec<String> {
        let labels = pod.pointer("/metadata/labels");
        self.budgets
            .get(ns_of(pod))
            .map(|budgets| {
                budgets
                    .iter()
                    .filter(|(_, b)| b.selector.as_ref().is_some_and(|s| s.matches(labels)))
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Recomputes every PDB of `ns` (the controller's reaction to a workload's scale changing).
    pub(crate) fn recompute_pdbs(&mut self, ns: &str) {
        let names: Vec<String> = self.iter(PDBS, Some(ns)).map(|(k, _)| k.1.clone()).collect();
        for n in names {
            self.recompute_pdb(ns, &n);
        }
    }

    /// The disruption controller's `sync` of one PDB (on its add/update, and on the pod events
    /// routed to it).
    pub(crate) fn recompute_pdb(&mut self, ns: &str, name: &str) {
        let Some(pdb) = self.get_shared(PDBS, ns, name).cloned() else {
            return;
        };
        let status = self.pdb_status(&pdb);
        if pdb.get("status") != Some(&status) {
            let mut next = Value::clone(&pdb);
            next["status"] = status;
            self.commit(PDBS, next);
        }
    }

    /// The disruption controller's pod handlers (`addPod`, `updatePod` with the new pod,
    /// `deletePod`) enqueue ONE budget: `getPdbForPod` takes the first PDB the lister returns
    /// for the pod ("Chose %q arbitrarily", pkg/controller/disruption/disruption.go). A pod
    /// that several PDBs select therefore moves only one of their statuses; the others keep
    /// what they counted at their last sync (real-api-answers.md: "two-a" reports
    /// currentHealthy 0 for a Ready pod that "two-b" counts). Upstream's pick follows the
    /// lister's map order; we take the last by name, which is what the measured capture shows.
    fn sync_pdb_for_pod(&mut self, pod: &Value) {
        if let Some(name) = self.pdbs_for(pod).pop() {
            let ns = ns_of(pod).to_string();
            self.recompute_pdb(&ns, &name);
        }
    }

    /// The pods a stored PDB selects (policy/v1: a null selector none, an empty one all), by
    /// name, from [`Budgets`]: the budget's own pods, not a scan of its namespace.
    fn pdb_pods<'a>(&'a self, pdb: &Value) -> Vec<&'a Value> {
        let ns = ns_of(pdb);
        let Some(b) = self.budgets.get(ns).and_then(|b| b.get(name_of(pdb))) else {
            return Vec::new();
        };
        b.pods.iter().filter_map(|n| self.get(PODS, ns, n)).collect()
    }

    /// `(expectedPods, desiredHealthy)` of a PDB over `pods` (`getExpectedPodCount`), or the
    /// failSafe message.
    fn expected_desired(&self, pdb: &Value, pods: &[&Value]) -> Result<(i64, i64), String> {
        let spec = pdb.get("spec").cloned().unwrap_or_else(|| json!({}));
        if let Some(mu) = spec.get("maxUnavailable").filter(|v| !v.is_null()) {
            self.expected_scale(pods).map(|e| (e, (e - scaled(mu, e).unwrap_or(0)).max(0)))
        } else if let Some(ma) = spec.get("minAvailable").filter(|v| !v.is_null()) {
            match ma {
                Value::Number(n) => Ok((pods.len() as i64, n.as_i64().unwrap_or(0))),
                _ => self.expected_scale(pods).map(|e| (e, scaled(ma, e).unwrap_or(0))),
            }
        } else {
            Ok((0, 0))
        }
    }

    /// `(healthy, desired, expected)` of a PDB counted from the pods as they are now (Ready and
    /// not terminating), whatever its stored status says. None when the controller could not
    /// compute it (failSafe).
    fn true_budget(&self, pdb: &Value) -> Option<(i64, i64, i64)> {
        let pods = self.pdb_pods(pdb);
        let (expected, desired) = self.expected_desired(pdb, &pods).ok()?;
        let healthy = pods.iter().filter(|p| !terminating(p) && pod_ready(p)).count() as i64;
        Some((healthy, desired, expected))
    }

    /// Runs an API DELETE or eviction of pod `ns/name` (`via`), and records a
    /// [`crate::apiserver::BudgetBreach`] for every PDB selecting the pod whose healthy pods it took below
    /// `desiredHealthy` (counted from the pods, not from the stored status).
    pub(crate) fn guard_budgets<T>(
        &mut self,
        ns: &str,
        name: &str,
        via: &'static str,
        f: impl FnOnce(&mut Self) -> T,
    ) -> T {
        // Most requests touch namespaces without budgets: nothing to watch, nothing to copy.
        if self.iter(PDBS, Some(ns)).next().is_none() {
            return f(self);
        }
        let Some(pod) = self.get(PODS, ns, name).cloned() else {
            return f(self);
        };
        let before: Vec<(String, (i64, i64, i64))> = self
            .pdbs_for(&pod)
            .into_iter()
            .filter_map(|n| {
                let b = self.true_budget(self.get(PDBS, ns, &n)?)?;
                Some((n, b))
            })
            .collect();
        let out = f(self);
        for (pdb, (healthy_before, desired, expected)) in before {
            let Some((healthy_after, _, _)) = self.get(PDBS, ns, &pdb).and_then(|p| self.true_budget(p))
            else {
                continue;
            };
            if healthy_after < healthy_before && healthy_after < desired {
                self.breaches.push(crate::apiserver::BudgetBreach {
                    pdb: format!("{ns}/{pdb}"),
                    pod: format!("{ns}/{name}"),
                    node: pod
                        .pointer("/spec/nodeName")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    via,
                    healthy_before,
                    healthy_after,
                    desired,
                    expected,
                });
            }
        }
        out
    }

    /// `getExpectedScale`: the sum of the replicas of the pods' controllers. Pods without a
    /// controller are skipped (upstream calls them unmanaged); a controller that cannot be
    /// resolved to ReplicaSet / Deployment / StatefulSet replicas is an error, as upstream's
    /// finders (which fall back to a scale subresource that DaemonSets and Jobs lack).
    fn expected_scale(&self, pods: &[&Value]) -> Result<i64, String> {
        let mut seen: HashMap<String, i64> = HashMap::new();
        for p in pods {
            let Some(owner) = controller_ref(p) else {
                continue;
            };
            let ns = ns_of(p);
            let oname = owner["name"].as_str().unwrap_or_default();
            let no_controller = || format!("found no controllers for pod {:?}", name_of(p));
            let replicas = |v: &Value| v.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
            let (key, n) = match owner["kind"].as_str() {
                Some("ReplicaSet") => {
                    let rs = self.get(REPLICASETS, ns, oname).ok_or_else(no_controller)?;
                    match controller_ref(rs) {
                        Some(d) if d["kind"] == "Deployment" => {
                            let dep = self
                                .get(DEPLOYMENTS, ns, d["name"].as_str().unwrap_or_default())
                                .ok_or_else(no_controller)?;
                            (uid_of(dep).to_string(), replicas(dep))
                        }
                        _ => (uid_of(rs).to_string(), replicas(rs)),
                    }
                }
                Some("StatefulSet") => {
                    let s = self.get(STATEFULSETS, ns, oname).ok_or_else(no_controller)?;
                    (uid_of(s).to_string(), replicas(s))
                }
                Some("Deployment") => {
                    let d = self.get(DEPLOYMENTS, ns, oname).ok_or_else(no_controller)?;
                    (uid_of(d).to_string(), replicas(d))
                }
                _ => return Err(no_controller()),
            };
            seen.insert(key, n);
        }
        Ok(seen.values().sum())
    }

    /// The disruption controller's `trySync` for one PDB: the new status.
    fn pdb_status(&self, pdb: &Value) -> Value {
        self.pdb_status_over(pdb, &self.pdb_pods(pdb))
    }

    /// [`Self::pdb_status`] over the given pods (the ones the PDB selects).
    fn pdb_status_over(&self, pdb: &Value, pods: &[&Value]) -> Value {
        let generation = pdb.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
        let counts = self.expected_desired(pdb, pods);
        let old = pdb.get("status").cloned().filter(Value::is_object).unwrap_or_else(|| {
            json!({"observedGeneration": 0, "disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0})
        });
        let old_cond = old
            .get("conditions")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|c| c["type"] == "DisruptionAllowed"))
            .cloned();
        let now = jiff::Timestamp::now();
        let condition = |st: &str, reason: &str, message: &str, observed: i64| {
            let ltt = match &old_cond {
                Some(c) if c["status"] == st => c["lastTransitionTime"].clone(),
                _ => json!(ts_str(now)),
            };
            json!([{"type": "DisruptionAllowed", "status": st, "reason": reason, "message": message,
                    "observedGeneration": observed, "lastTransitionTime": ltt}])
        };
        let (expected, desired) = match counts {
            Ok(c) => c,
            Err(e) => {
                // failSafe: only disruptionsAllowed and the condition change.
                let mut st = old.clone();
                let observed = st["observedGeneration"].as_i64().unwrap_or(0);
                st["disruptionsAllowed"] = json!(0);
                st["conditions"] = condition("False", "SyncFailed", &e, observed);
                return st;
            }
        };
        let mut disrupted = Map::new();
        if let Some(d) = old.get("disruptedPods").and_then(Value::as_object) {
            for (name, ts) in d {
                let alive = pods.iter().any(|p| name_of(p) == name && !terminating(p));
                let fresh = ts
                    .as_str()
                    .and_then(parse_ts)
                    .is_some_and(|t| now.duration_since(t) < jiff::SignedDuration::from_secs(120));
                if alive && fresh {
                    disrupted.insert(name.clone(), ts.clone());
                }
            }
        }
        let healthy = pods
            .iter()
            .filter(|p| !terminating(p) && pod_ready(p) && !disrupted.contains_key(name_of(p)))
            .count() as i64;
        // updatePdbStatus: nothing is allowed while no pods are expected.
        let allowed = if expected <= 0 { 0 } else { (healthy - desired).max(0) };
        let mut status = json!({
            "observedGeneration": generation,
            "disruptionsAllowed": allowed,
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "expectedPods": expected,
        });
        if !disrupted.is_empty() {
            status["disruptedPods"] = Value::Object(disrupted);
        }
        status["conditions"] = if allowed > 0 {
            condition("True", "SufficientPods", "", generation)
        } else {
            condition("False", "InsufficientPods", "", generation)
        };
        status
    }

    /// POST pods/{name}/eviction, after eviction.go. Ok = (HTTP code, body).
    pub(crate) fn evict(&mut self, ns: &str, name: &str, opts: DeleteOpts) -> Result<(u16, Value), ApiError> {
        // Admission runs before the eviction handler: NamespaceLifecycle refuses every create,
        // this subresource's too, in a namespace being deleted, whatever state the pod is in.
        if self.get(NAMESPACES, "", ns).is_some_and(terminating) {
            return Err(ApiError::namespace_terminating(&RESOURCES[PODS], name, ns));
        }
        let Some(pod) = self.get(PODS, ns, name).cloned() else {
            return Err(ApiError::not_found(&RESOURCES[PODS], name));
        };
        let ok = || Ok((201, status::success(Some(201), None)));
        let can_ignore = matches!(phase(&pod), "Succeeded" | "Failed" | "Pending") || terminating(&pod);
        if can_ignore {
            self.evict_delete(ns, name, &opts)?;
            return ok();
        }
        let pdbs = self.pdbs_for(&pod);
        if pdbs.len() > 1 {
            return Ok((
                500,
                json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                    "code": 500,
                }),
            ));
        }
        if let Some(pdb) = pdbs.first().and_then(|n| self.get_shared(PDBS, ns, n)).cloned() {
            let st = pdb.get("status").cloned().unwrap_or_else(|| json!({}));
            let int = |k: &str| st.get(k).and_then(Value::as_i64).unwrap_or(0);
            let mut skip_budget = false;
            if !pod_ready(&pod) {
                let always = pdb.pointer("/spec/unhealthyPodEvictionPolicy") == Some(&json!("AlwaysAllow"));
                if always || (int("currentHealthy") >= int("desiredHealthy") && int("desiredHealthy") > 0) {
                    skip_budget = true;
                }
            }
            if !skip_budget {
                let pdb_name = name_of(&pdb).to_string();
                if int("observedGeneration")
                    < pdb.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0)
                {
                    return Err(too_many(
                        format!("The disruption budget {pdb_name} is still being processed by the server."),
                        10,
                    ));
                }
                if int("disruptionsAllowed") < 0 {
                    return Err(ApiError::pdb_forbidden(&pdb_name, "pdb disruptions allowed is negative"));
                }
                if st.get("disruptedPods").and_then(Value::as_object).is_some_and(|d| d.len() > 2000) {
                    return Err(ApiError::pdb_forbidden(
                        &pdb_name,
                        "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
                    ));
                }
                if int("disruptionsAllowed") == 0 {
                    return Err(too_many(
                        format!(
                            "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
                            int("desiredHealthy"),
                            int("currentHealthy")
                        ),
                        0,
                    ));
                }
                if !opts.dry_run {
                    let now = now_str();
                    self.modify(PDBS, ns, &pdb_name, |p| {
                        let allowed = int("disruptionsAllowed") - 1;
                        p["status"]["disruptionsAllowed"] = json!(allowed);
                        if !p["status"].get("disruptedPods").is_some_and(Value::is_object) {
                            p["status"]["disruptedPods"] = json!({});
                        }
                        p["status"]["disruptedPods"][name] = json!(now);
                        if allowed == 0 {
                            set_condition(p, json!({"type": "DisruptionAllowed", "status": "False", "reason": "InsufficientPods", "message": "", "observedGeneration": int("observedGeneration")}));
                        }
                    });
                }
            }
        }
        self.evict_delete(ns, name, &opts)?;
        ok()
    }

    /// eviction.go addConditionAndDeletePod: a `DisruptionTarget` condition, then the delete.
    fn evict_delete(&mut self, ns: &str, name: &str, opts: &DeleteOpts) -> Result<(), ApiError> {
        let mut opts = opts.clone();
        if !opts.dry_run {
            let pod = self
                .get(PODS, ns, name)
                .cloned()
                .ok_or_else(|| ApiError::not_found(&RESOURCES[PODS], name))?;
            // addConditionAndDeletePod checks the preconditions against the latest pod, with
            // its own messages (and "Pod" as the resource).
            let pod_res = crate::apiserver::resources::ResDef { plural: "Pod", ..RESOURCES[PODS] };
            if let Some(u) = opts.uid.as_deref().filter(|u| !u.is_empty() && *u != uid_of(&pod)) {
                return Err(ApiError::conflict(
                    &pod_res,
                    name,
                    &format!(
                        "the UID in the precondition ({u}) does not match the UID in record ({}). The object might have been deleted and then recreated",
                        uid_of(&pod)
                    ),
                ));
            }
            let rv = pod.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or_default();
            if let Some(r) = opts.resource_version.as_deref().filter(|r| !r.is_empty() && *r != rv) {
                return Err(ApiError::conflict(
                    &pod_res,
                    name,
                    &format!(
                        "the ResourceVersion in the precondition ({r}) does not match the ResourceVersion in record ({rv}). The object might have been modified"
                    ),
                ));
            }
            if !terminating(&pod) {
                self.modify(PODS, ns, name, |p| {
                    set_condition(
                        p,
                        json!({"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting", "lastProbeTime": null}),
                    )
                });
            }
            // Checked above, against the pod as the client saw it (the condition bumped it).
            opts.resource_version = None;
        }
        self.delete(PODS, ns, name, &opts).map(|_| ())
    }

    /// The scale subresource's view of a workload.
    pub(crate) fn scale_of(obj: &Value) -> Value {
        let sel = LabelSelector::from_object(obj.pointer("/spec/selector").unwrap_or(&Value::Null))
            .ok()
            .flatten()
            .map(|s| s.render())
            .unwrap_or_default();
        json!({
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": name_of(obj), "namespace": ns_of(obj), "uid": uid_of(obj),
                "resourceVersion": obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!("")),
                "creationTimestamp": obj.pointer("/metadata/creationTimestamp").cloned().unwrap_or(Value::Null),
            },
            "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)},
            "status": {"replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0), "selector": sel},
        })
    }

    /// Field-manager bookkeeping for non-apply writes.
    pub(crate) fn track(prev: &Value, next: &mut Value, manager: &str) {
        let av = next["apiVersion"].as_str().unwrap_or_default().to_string();
        patch::track_update(prev, next, manager, &av, &now_str());
    }
}

/// Whether a pod change can move any PDB's numbers: existence, labels, readiness,
/// termination, ownership.
fn pdb_relevant_change(prev: Option<&Value>, cur: Option<&Value>) -> bool {
    let (Some(p), Some(c)) = (prev, cur) else {
        return true;
    };
    p.pointer("/metadata/labels") != c.pointer("/metadata/labels")
        || terminating(p) != terminating(c)
        || pod_ready(p) != pod_ready(c)
        || p.pointer("/metadata/ownerReferences") != c.pointer("/metadata/ownerReferences")
}

/// ValidatePodUpdate, simplified: everything but images, activeDeadlineSeconds, tolerations
/// and terminationGracePeriodSeconds must stay.
fn pod_spec_update_ok(prev: Option<&Value>, next: Option<&Value>) -> bool {
    let strip = |v: Option<&Value>| {
        let mut v = v.cloned().unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            for k in ["activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"] {
                o.remove(k);
            }
            for k in ["containers", "initContainers"] {
                if let Some(Value::Array(cs)) = o.get_mut(k) {
                    for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                        c.remove("image");
                    }
                }
            }
        }
        v
    };
    strip(prev) == strip(next)
}

/// The Job validation a client is most likely to trip over: the pod template's restart policy.
fn validate_job(def: &crate::apiserver::resources::ResDef, job: &Value) -> Result<(), ApiError> {
    let rp = job.pointer("/spec/template/spec/restartPolicy").and_then(Value::as_str).unwrap_or("Always");
    if rp != "Never" && rp != "OnFailure" {
        return Err(ApiError::unsupported(
            def,
            name_of(job),
            "spec.template.spec.restartPolicy",
            rp,
            &["OnFailure", "Never"],
        ));
    }
    Ok(())
}

fn too_many(cause: String, retry_after: i64) -> ApiError {
    let mut details = json!({"causes": [{"reason": "DisruptionBudget", "message": cause}]});
    if retry_after > 0 {
        details["retryAfterSeconds"] = json!(retry_after);
    }
    ApiError {
        code: 429,
        body: json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Cannot evict pod as it would violate the pod's disruption budget.",
            "reason": "TooManyRequests", "details": details, "code": 429,
        }),
    }
}

fn set_ips(p: &mut Value, (host, pod_ip): (Option<String>, String)) {
    if let Some(h) = host {
        p["status"]["hostIP"] = json!(h);
        p["status"]["hostIPs"] = json!([{"ip": h}]);
    }
    p["status"]["podIP"] = json!(pod_ip);
    p["status"]["podIPs"] = json!([{"ip": pod_ip}]);
}

/// `status.containerStatuses` for every container of the spec, with the given state.
fn container_states(p: &mut Value, state: impl Fn(&Value) -> Value, ready: bool) {
    let containers: Vec<(String, String)> = p
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap_or_default().to_string(),
                        c["image"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let started = p.pointer("/status/startTime").cloned().unwrap_or(Value::Null);
    let statuses: Vec<Value> = containers
        .into_iter()
        .map(|(name, image)| {
            json!({"name": name, "image": image, "imageID": "", "containerID": "", "ready": ready,
                   "restartCount": 0, "started": ready, "state": state(&started)})
        })
        .collect();
    p["status"]["containerStatuses"] = Value::Array(statuses);
}

/// Running but never Ready: every container in `CrashLoopBackOff`, as the kubelet reports a
/// pod whose container keeps exiting.
pub(crate) fn crash_loop_status(p: &mut Value) {
    let now = now_str();
    if !p.get("status").is_some_and(Value::is_object) {
        p["status"] = json!({});
    }
    p["status"]["phase"] = json!("Running");
    if p["status"].get("startTime").is_none() {
        p["status"]["startTime"] = json!(now);
    }
    container_states(
        p,
        |_| json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}}),
        false,
    );
    if let Some(cs) = p.pointer_mut("/status/containerStatuses").and_then(Value::as_array_mut) {
        for c in cs {
            c["restartCount"] = json!(3);
        }
    }
    for t in ["PodReadyToStartContainers", "Initialized", "PodScheduled"] {
        set_condition(p, json!({"type": t, "status": "True", "lastProbeTime": null}));
    }
    for t in ["Ready", "ContainersReady"] {
        set_condition(
            p,
            json!({"type": t, "status": "False", "reason": "ContainersNotReady", "message": "containers with unready status: [main]", "lastProbeTime": null}),
        );
    }
}

/// Scheduled and Pending, its containers `ContainerCreating`: what the kubelet reports while
/// it pulls the image (generateAPIPodStatus: Initialized, not Ready).
pub(crate) fn pulling_status(p: &mut Value) {
    let now = now_str();
    if !p.get("status").is_some_and(Value::is_object) {
        p["status"] = json!({});
    }
    p["status"]["phase"] = json!("Pending");
    p["status"]["startTime"] = json!(now);
    container_states(p, |_| json!({"waiting": {"reason": "ContainerCreating"}}), false);
    let names: Vec<String> = p
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| cs.iter().filter_map(|c| c["name"].as_str().map(String::from)).collect())
        .unwrap_or_default();
    let unready = format!("containers with unready status: [{}]", names.join(" "));
    for t in ["Initialized", "PodScheduled"] {
        set_condition(p, json!({"type": t, "status": "True", "lastProbeTime": null}));
    }
    for t in ["Ready", "ContainersReady"] {
        set_condition(
            p,
            json!({"type": t, "status": "False", "reason": "ContainersNotReady", "message": unready, "lastProbeTime": null}),
        );
    }
}

/// Running + Ready, as a started kubelet reports it.
pub(crate) fn running_status(p: &mut Value) {
    let now = now_str();
    if !p.get("status").is_some_and(Value::is_object) {
        p["status"] = json!({});
    }
    p["status"]["phase"] = json!("Running");
    if p["status"].get("startTime").is_none() {
        p["status"]["startTime"] = json!(now);
    }
    let started = now.clone();
    container_states(p, |_| json!({"running": {"startedAt": started}}), true);
    for t in ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"] {
        set_condition(p, json!({"type": t, "status": "True", "lastProbeTime": null}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::fixtures as f;
    use proptest::prelude::*;

    /// A store outside any server: no controllers (no timers, no replacement pods) and a zero
    /// time scale (a deleted pod goes at once).
    fn state(rt: &tokio::runtime::Runtime) -> State {
        let (tx, _) = broadcast::channel(16);
        let opts = Options {
            time_scale: 0.0,
            controllers: false,
            pod_start_delay: Duration::ZERO,
            history_limit: 1_000,
            namespace_cleanup_delay: Duration::ZERO,
        };
        State::new(opts, tx, Weak::new(), rt.handle().clone())
    }

    /// The pods a PDB selects, as the disruption controller found them before the index: a
    /// scan of its namespace against the selector parsed again.
    fn scanned_pods<'a>(st: &'a State, pdb: &Value) -> Vec<&'a Value> {
        let Ok(Some(sel)) = LabelSelector::from_object(pdb.pointer("/spec/selector").unwrap_or(&Value::Null))
        else {
            return Vec::new();
        };
        let ns = ns_of(pdb).to_string();
        st.objs[PODS]
            .iter()
            .filter(|((n, _), p)| *n == ns && sel.matches(p.pointer("/metadata/labels")))
            .map(|(_, p)| &**p)
            .collect()
    }

    /// The PDBs that select a pod, by a scan of the namespace's PDBs.
    fn scanned_pdbs(st: &State, pod: &Value) -> Vec<String> {
        st.iter(PDBS, Some(ns_of(pod)))
            .filter(|(_, pdb)| {
                matches!(LabelSelector::from_object(pdb.pointer("/spec/selector").unwrap_or(&Value::Null)),
                    Ok(Some(sel)) if sel.matches(pod.pointer("/metadata/labels")))
            })
            .map(|(_, pdb)| name_of(pdb).to_string())
            .collect()
    }

    fn names(pods: &[&Value]) -> Vec<String> {
        pods.iter().map(|p| name_of(p).to_string()).collect()
    }

    /// The status without its transition times (two computations may straddle a second).
    fn timeless(mut status: Value) -> Value {
        if let Some(cs) = status.get_mut("conditions").and_then(Value::as_array_mut) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                c.remove("lastTransitionTime");
            }
        }
        status
    }

    const NAMESPACES_: [&str; 2] = ["a", "b"];
    const APPS: [Option<&str>; 4] = [Some("web"), Some("api"), Some("db"), None];
    const TIERS: [Option<&str>; 3] = [Some("front"), Some("back"), None];

    fn selector(i: u8) -> Option<Value> {
        match i % 9 {
            0 => None,
            1 => Some(json!({})),
            2 => Some(json!({"matchLabels": {"app": "web"}})),
            3 => Some(json!({"matchLabels": {"app": "api", "tier": "back"}})),
            4 => {
                Some(json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "db"]}]}))
            }
            5 => {
                Some(json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]}))
            }
            6 => Some(json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]})),
            7 => Some(json!({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]})),
            _ => Some(json!({"matchExpressions": [{"key": "app", "operator": "Sometimes"}]})),
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        AddPod { pod: u8, app: u8, tier: u8, ready: bool, owner: u8 },
        Relabel { pod: u8, app: u8, tier: u8 },
        Ready { pod: u8, ready: bool },
        Delete { pod: u8 },
        Evict { pod: u8 },
        Remove { pod: u8 },
        AddPdb { pdb: u8, sel: u8, budget: u8 },
        RemovePdb { pdb: u8 },
        Scale { rs: u8, replicas: u8 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..16, 0u8..4, 0u8..3, any::<bool>(), 0u8..4)
                .prop_map(|(pod, app, tier, ready, owner)| Op::AddPod { pod, app, tier, ready, owner }),
            2 => (0u8..16, 0u8..4, 0u8..3).prop_map(|(pod, app, tier)| Op::Relabel { pod, app, tier }),
            2 => (0u8..16, any::<bool>()).prop_map(|(pod, ready)| Op::Ready { pod, ready }),
            1 => (0u8..16).prop_map(|pod| Op::Delete { pod }),
            2 => (0u8..16).prop_map(|pod| Op::Evict { pod }),
            1 => (0u8..16).prop_map(|pod| Op::Remove { pod }),
            2 => (0u8..6, 0u8..9, 0u8..4).prop_map(|(pdb, sel, budget)| Op::AddPdb { pdb, sel, budget }),
            1 => (0u8..6).prop_map(|pdb| Op::RemovePdb { pdb }),
            1 => (0u8..2, 0u8..5).prop_map(|(rs, replicas)| Op::Scale { rs, replicas }),
        ]
    }

    fn apply(st: &mut State, op: &Op) {
        let ns_name = |i: u8| (NAMESPACES_[usize::from(i % 2)], format!("p{i}"));
        let labels = |app: u8, tier: u8| -> Vec<(&str, &str)> {
            let mut l = Vec::new();
            if let Some(a) = APPS[usize::from(app)] {
                l.push(("app", a));
            }
            if let Some(t) = TIERS[usize::from(tier)] {
                l.push(("tier", t));
            }
            l
        };
        let set_labels = |p: &mut Value, l: &[(&str, &str)]| {
            p["metadata"]["labels"] =
                Value::Object(l.iter().map(|(k, v)| (k.to_string(), json!(v))).collect());
        };
        match *op {
            Op::AddPod { pod, app, tier, ready, owner } => {
                let (ns, name) = ns_name(pod);
                let mut fx = f::pod(&name).ns(ns).on("n1").labels(&labels(app, tier));
                fx = match owner {
                    0 => fx.owned_by_replicaset("rs-0"),
                    1 => fx.owned_by_replicaset("rs-1"),
                    2 => fx.owned_by_statefulset("missing"),
                    _ => fx,
                };
                if !ready {
                    fx = fx.not_ready();
                }
                st.insert(PODS, fx.build());
            }
            Op::Relabel { pod, app, tier } => {
                let (ns, name) = ns_name(pod);
                let l = labels(app, tier);
                st.modify(PODS, ns, &name, |p| set_labels(p, &l));
            }
            Op::Ready { pod, ready } => {
                let (ns, name) = ns_name(pod);
                st.modify(PODS, ns, &name, |p| {
                    f::set_condition(p, "Ready", ready, "");
                });
            }
            Op::Delete { pod } => {
                let (ns, name) = ns_name(pod);
                let _ = st.guard_budgets(ns, &name, "delete", |st| {
                    st.delete(PODS, ns, &name, &DeleteOpts::default())
                });
            }
            Op::Evict { pod } => {
                let (ns, name) = ns_name(pod);
                let _ =
                    st.guard_budgets(ns, &name, "eviction", |st| st.evict(ns, &name, DeleteOpts::default()));
            }
            Op::Remove { pod } => {
                let (ns, name) = ns_name(pod);
                st.remove(PODS, ns, &name);
            }
            Op::AddPdb { pdb, sel, budget } => {
                let ns = NAMESPACES_[usize::from(pdb % 2)];
                let mut fx = f::pdb(&format!("b{pdb}")).ns(ns);
                fx = match budget {
                    0 => fx.min_available(1),
                    1 => fx.max_unavailable(1),
                    2 => fx.min_available_str("50%"),
                    _ => fx.max_unavailable_str("25%"),
                };
                if let Some(s) = selector(sel) {
                    fx = fx.selector_object(s);
                }
                st.insert(PDBS, fx.build());
            }
            Op::RemovePdb { pdb } => {
                st.remove(PDBS, NAMESPACES_[usize::from(pdb % 2)], &format!("b{pdb}"));
            }
            Op::Scale { rs, replicas } => {
                for ns in NAMESPACES_ {
                    st.modify(REPLICASETS, ns, &format!("rs-{rs}"), |r| {
                        r["spec"]["replicas"] = json!(replicas)
                    });
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
        /// Whatever the sequence of pod and budget changes: after each, every PDB's pods (from
        /// the index) are the ones a scan of its namespace finds, every pod's PDBs are the ones
        /// whose selectors match it, and every PDB's status computed from the index equals the
        /// status computed from that full scan.
        #[test]
        fn the_budget_index_agrees_with_a_full_scan_after_every_change(ops in proptest::collection::vec(op(), 1..60)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            let _guard = rt.enter();
            let mut st = state(&rt);
            for ns in NAMESPACES_ {
                for (i, replicas) in [(0, 3), (1, 2)] {
                    st.insert(REPLICASETS, f::replicaset(&format!("rs-{i}")).ns(ns).replicas(replicas).build());
                }
            }
            for op in &ops {
                apply(&mut st, op);
                let pdbs: Vec<Value> = st.iter(PDBS, None).map(|(_, v)| v.clone()).collect();
                for pdb in &pdbs {
                    let scanned = scanned_pods(&st, pdb);
                    prop_assert_eq!(names(&st.pdb_pods(pdb)), names(&scanned), "pods of {} after {:?}", name_of(pdb), op);
                    prop_assert_eq!(
                        timeless(st.pdb_status(pdb)),
                        timeless(st.pdb_status_over(pdb, &scanned)),
                        "status of {} after {:?}", name_of(pdb), op
                    );
                }
                let pods: Vec<Value> = st.iter(PODS, None).map(|(_, v)| v.clone()).collect();
                for pod in &pods {
                    prop_assert_eq!(st.pdbs_for(pod), scanned_pdbs(&st, pod), "PDBs of {} after {:?}", name_of(pod), op);
                }
            }
        }
    }
}
