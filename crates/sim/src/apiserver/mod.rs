//! # The in-process Kubernetes apiserver (`sim::apiserver`, "testapi")
//!
//! A small HTTP server on `127.0.0.1:0` that speaks enough of the Kubernetes REST API, with
//! the real status codes and `Status` bodies, for the project's tests (and the `rehearse`
//! command) to drive the **real** `kube::Client` against it. No apiserver binary exists on the
//! build machines, so this stands in for one; everything below mirrors upstream behaviour
//! unless listed under *Simplifications*.
//!
//! ```no_run
//! # async fn demo() {
//! use sim::apiserver::{TestApiServer, fixtures::*};
//! let srv = TestApiServer::start().await;
//! srv.insert(node("k8s-node2").ready().kubelet("v1.34.1").build());
//! srv.insert(pod("web-1").ns("apps").on("k8s-node2").owned_by_replicaset("web-abc").build());
//! let client = srv.client(); // kube::Client, retry on (as in production)
//! # }
//! ```
//!
//! ## Using it
//! * Start: [`TestApiServer::start`] or [`TestApiServer::builder`] (`time_scale`,
//!   `controllers`, `pod_start_delay`, `history_limit`, `server_version`,
//!   `namespace_cleanup_delay`). It binds
//!   `127.0.0.1:0`, serves from a background task and stops when dropped.
//! * Subprocesses (the binary under test, `rehearse`): [`TestApiServer::write_kubeconfig`];
//!   [`Builder::bind`] picks a fixed address. The server runs on the runtime that started it:
//!   in `#[tokio::test]` never block that thread (use `tokio::time::sleep`).
//! * Connect: [`TestApiServer::config`] (a `kube::Config` for `http://127.0.0.1:<port>`,
//!   namespace `default`, kube's default retry on, so it also suits the main crate's
//!   `Clients::from_config`), [`TestApiServer::client`] (retry on, like production) and
//!   [`TestApiServer::client_without_retry`] (what the eviction client is: 429 surfaces at once).
//! * Seed and inspect: [`TestApiServer::insert`] / [`TestApiServer::apply_yaml`] with the
//!   [`fixtures`] builders or any k8s-openapi object; [`TestApiServer::get`],
//!   [`TestApiServer::list`], [`TestApiServer::modify`], [`TestApiServer::delete`],
//!   [`TestApiServer::remove`].
//! * Drive: [`TestApiServer::complete_job`], [`TestApiServer::fail_job`],
//!   [`TestApiServer::set_pod_log`], [`TestApiServer::set_node_ready`],
//!   [`TestApiServer::set_kubelet_version`], [`TestApiServer::set_pod_ready`],
//!   [`TestApiServer::set_pod_phase`], [`TestApiServer::compact`] (forces 410 on old
//!   resourceVersions), [`TestApiServer::wait_until`], [`TestApiServer::missing_image`] (Job
//!   pods using that image end in `ImagePullBackOff`), [`TestApiServer::hold_pod_starts`]
//!   (matching replacement pods stay Pending until [`TestApiServer::release_pod`]: a slow
//!   kubelet, with no timing). A pod (or workload template) annotated
//!   [`CRASH_LOOP_ANNOTATION`] `"true"` is started by the simulated kubelet as a crash-looping
//!   pod: Running, never Ready.
//! * Watch budgets: [`TestApiServer::budget_breaches`] lists every PDB an API pod DELETE or
//!   eviction took below its `desiredHealthy` (healthy pods counted from the pods themselves,
//!   since a status can understate, see the disruption controller below).
//! * Break: [`TestApiServer::inject`] a [`Fault`] (status code with a real-looking Status, or a
//!   delay); observe with [`TestApiServer::requests`], [`TestApiServer::count`],
//!   [`TestApiServer::counts`].
//! * Time: every pod grace period is multiplied by the time scale (0.01 turns 30 s into
//!   300 ms); `deletionTimestamp` still says now + the unscaled grace, as a real server would.
//!
//! ## Implemented
//! * Resources: core/v1 `pods` (+ `eviction`, `log`, `status`), `nodes`, `namespaces`,
//!   `configmaps`, `secrets`, `events`, `services`; `events.k8s.io/v1` `events`;
//!   `apps/v1` `deployments`/`replicasets`/`statefulsets` (+ `scale`), `daemonsets`;
//!   `batch/v1` `jobs`, `cronjobs`; `policy/v1` `poddisruptionbudgets`;
//!   `coordination.k8s.io/v1` `leases`. Namespaced and
//!   cluster-scoped paths, `/status` subresources, `/readyz` `/livez` `/healthz` (`ok`),
//!   `/version`, discovery (`/api`, `/apis`, `/api/v1`, `/apis/{g}/{v}`).
//! * Metadata-only reads (`Accept: ...;as=PartialObjectMetadata`) for get, list and watch, as
//!   kube's `Api<PartialObjectMeta<K>>` sends them.
//! * Verbs: get, list (`limit`/`continue` with an opaque token, `remainingItemCount` when no
//!   selector, list `metadata.resourceVersion`), watch, create (201 / 409 AlreadyExists /
//!   404 for a missing namespace / 422 without a name), update (PUT, optimistic concurrency
//!   409), patch (merge, strategic merge, JSON patch, server-side apply), delete,
//!   deletecollection. `dryRun=All` on writes.
//! * Label selectors: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, `a>1`,
//!   `a<1`. Field selectors with `=`, `==`, `!=` on `metadata.name`, `metadata.namespace` and
//!   the per-resource fields the real registries support (pods: `spec.nodeName`,
//!   `status.phase`, ...); anything else is 400 `field label not supported: <field>`.
//! * Watch: one global, monotonically increasing resourceVersion; `resourceVersion` (events
//!   after it), unset/`0` (synthetic ADDED for current objects first), `timeoutSeconds`,
//!   `allowWatchBookmarks` (a BOOKMARK at the end of the timeout, and the
//!   `k8s.io/initial-events-end` bookmark for `sendInitialEvents=true`), label/field
//!   selectors (an object leaving/entering the selection is delivered as DELETED/ADDED, like
//!   the watch cache). Each resource keeps its own window of recent events, sized as
//!   upstream's watch cache sizes it (`watch_cache.go`, v1.28): 100 events at first, doubled
//!   (up to 102,400, [`Builder::history_limit`]) while the oldest is younger than 75 s (times
//!   the time scale, on the runtime's clock), halved (down to 100) when even the newest quarter
//!   is older, else the oldest dropped. A resourceVersion older than the oldest kept minus one
//!   gets an ERROR event with a 410 `Expired` Status `too old resource version: X (Y)`, Y being
//!   the oldest kept minus one. Works with
//!   `kube::runtime::watcher` and `kube::runtime::wait::await_condition`.
//! * Server-side apply: `fieldManager` required (422 Invalid on `PatchOptions.meta.k8s.io`,
//!   as `ValidatePatchOptions` answers; `force` on a non-apply patch is 422 too), `force`,
//!   create-if-absent (201), per-manager `managedFields` (`FieldsV1`), 409 Conflict with the
//!   upstream message (`Apply failed with 1 conflict: conflict with "m": .data.k`; an Update
//!   manager prints as `"m" using v1 at <time>`) and `FieldManagerConflict` causes. Non-apply
//!   writes are recorded as `Update` by `fieldManager`, else the User-Agent up to its first
//!   `/` (empty for kube-rs, which sends none).
//! * Status subresource semantics: writes to the main resource keep the stored status; writes to
//!   `/status` change only status. Create through the API resets status (pods start `Pending`).
//! * Defaulting on create and before update checks (so a re-applied manifest compares equal):
//!   pod specs and workload templates get `restartPolicy` (Always), `dnsPolicy`,
//!   `schedulerName`, `securityContext`, `terminationGracePeriodSeconds` (30), container
//!   `imagePullPolicy` (Always for `:latest`/untagged), `terminationMessagePath`/`Policy`,
//!   `resources`; pods created through the API also get what admission adds
//!   (`serviceAccountName`, `priority`, `enableServiceLinks`, `preemptionPolicy`, the
//!   not-ready/unreachable NoExecute tolerations).
//! * Jobs: a template `restartPolicy` other than Never/OnFailure is 422 `Unsupported value`;
//!   defaulting (selector `batch.kubernetes.io/controller-uid`, template labels
//!   `batch.kubernetes.io/controller-uid`, `batch.kubernetes.io/job-name`, `controller-uid`,
//!   `job-name`, backoffLimit 6, ...). Changing `spec.template` or `spec.selector` is 422
//!   `field is immutable`. Creating a Job through the API creates one pod (`<job>-xxxxx`,
//!   controller ownerReference, the labels above, `nodeName` from `spec.template.spec.nodeName`
//!   or the `kubernetes.io/hostname` nodeSelector, Running and Ready) and sets `status.active=1`,
//!   `startTime`. [`TestApiServer::complete_job`] / [`TestApiServer::fail_job`] finish it; so
//!   does the pod: Succeeded completes the Job, while Failed, terminating (evicted, deleted) or
//!   vanished counts as a failure (`status.failed`), which fails the Job with
//!   `BackoffLimitExceeded` past `spec.backoffLimit` or starts a new pod.
//! * Deletion: `gracePeriodSeconds`, `preconditions` (uid/resourceVersion, 409 Conflict),
//!   `propagationPolicy` Orphan/Background/Foreground (`orphanDependents` too), finalizers
//!   (object stays with `deletionTimestamp` until they are removed). Pods: graceful deletion
//!   sets `deletionTimestamp` + `deletionGracePeriodSeconds` and answers 200 with the pod; the
//!   simulated kubelet removes it after the grace (times the time scale). Unscheduled or
//!   Succeeded/Failed pods go at once (pod strategy `CheckGracefulDelete`); a scheduled
//!   `Pending` pod is marked and removed at once by the kubelet. Default grace: the pod's
//!   `terminationGracePeriodSeconds` (30). batch/v1 Jobs default to Orphan
//!   (kubernetes/kubernetes#20902); other resources to Background. Orphan answers with the
//!   object carrying the `orphan` finalizer, and the garbage collector (a moment later) strips
//!   the dependents' ownerReferences and removes it. Foreground answers with the object carrying
//!   `foregroundDeletion`; dependents are deleted (pods gracefully) and the owner goes when none
//!   is left. Background removes the object now and deletes its dependents. Deleting an object
//!   that is gone at once answers a Success Status with `details` (name, group, kind, uid), as
//!   the generic registry does, except pods, services and namespaces, which answer the object.
//!   Deleting a namespace marks it Terminating (creates in it are 403), deletes its contents and
//!   removes it once empty ([`Builder::namespace_cleanup_delay`] delays the namespace
//!   controller's pass, so pods stay untouched in a Terminating namespace for that long). Creates in a
//!   Terminating namespace, evictions included, are 403 `Forbidden` with the
//!   `NamespaceTerminating` cause, as the NamespaceLifecycle admission plugin answers.
//! * Eviction (pkg/registry/core/pod/storage/eviction.go; the answers were checked against a
//!   real v1.28.7 apiserver, real-api-answers.md): 404; terminal, Pending or
//!   terminating pods are deleted without a PDB check; >1 matching PDB is 500 with the exact
//!   upstream message; an unready pod is deleted without touching the budget when the PDB has
//!   `unhealthyPodEvictionPolicy: AlwaysAllow` or when `currentHealthy >= desiredHealthy > 0`;
//!   `disruptionsAllowed == 0` is 429 TooManyRequests with the `DisruptionBudget` cause
//!   `The disruption budget <pdb> needs <desired> healthy pods and has <current> currently`;
//!   otherwise the budget is decremented, the pod recorded in `status.disruptedPods`, and the
//!   pod marked with the `DisruptionTarget` condition (reason `EvictionByEvictionAPI`) and
//!   deleted (grace from `deleteOptions`, else its own). Precondition mismatches are 409 with
//!   `addConditionAndDeletePod`'s wording. Success is 201
//!   `{"kind":"Status",...,"status":"Success","code":201}`. `dryRun` honoured.
//! * Disruption controller (pkg/controller/disruption): PDB status recomputed on every pod
//!   change that can move it (each PDB's selector is parsed once and the pods it selects are
//!   kept in an index on every write, as the controller's informer caches would, so a sync
//!   costs that PDB's pods, not a scan of its namespace) (currentHealthy, desiredHealthy, expectedPods, disruptionsAllowed, disruptedPods,
//!   observedGeneration, `DisruptionAllowed` condition SufficientPods/InsufficientPods) after
//!   `getExpectedPodCount`: integer `minAvailable` expects the number of matching pods;
//!   `maxUnavailable` or a percentage sums the replicas of the pods' controllers (ReplicaSet,
//!   Deployment through its ReplicaSet, StatefulSet); pods without a controller are skipped
//!   (unmanaged); a controller that has no replicas to find (DaemonSet, Job, a missing owner)
//!   makes the controller fail safe: `disruptionsAllowed: 0`, condition `SyncFailed` with
//!   `found no controllers for pod "x"`, observedGeneration not advanced (so evictions answer
//!   429 `The disruption budget x is still being processed by the server.`, Retry-After 10).
//!   Nothing is allowed while expectedPods is 0. `disruptedPods` entries go when the pod is
//!   gone or terminating, or after 2 minutes. A PDB is synced when it is written and when one
//!   of its pods changes, but a pod change syncs only ONE of the PDBs selecting the pod
//!   (upstream's `getPdbForPod` "chose arbitrarily"; here the last by name): a pod under two
//!   PDBs leaves the other one's `currentHealthy` as it last counted, as measured on v1.28.7.
//!   A negative `disruptionsAllowed` or more than 2000 `disruptedPods` is 403 on
//!   `poddisruptionbudget.policy`.
//! * ReplicaSet / StatefulSet controllers (on unless [`Builder::controllers`]`(false)`): a
//!   ReplicaSet-owned pod is replaced (`<rs>-xxxxx`, new uid) as soon as it starts terminating
//!   (ReplicaSets ignore terminating pods); a StatefulSet-owned pod is replaced with the same
//!   name once it is gone. The replacement lands on a schedulable Ready node other than the old
//!   one (round robin) as `Pending`, and becomes Running+Ready after
//!   [`Builder::pod_start_delay`] (default 200 ms). Pods created through the API with a
//!   `nodeName` also start after that delay.
//! * Test drivers, fault injection ([`Fault`]) and a request log ([`TestApiServer::requests`]).
//!
//! ## Simplifications (known divergences)
//! * Lists and watches ignore `resourceVersion`/`resourceVersionMatch` semantics on lists and
//!   always serve the latest state; continue tokens resume after the last key on the *current*
//!   state (not a consistent snapshot) and never expire.
//! * Plain HTTP/1.1 only (no TLS, no HTTP/2); one version per group; no protobuf, no CBOR,
//!   no `Table` output, no `/watch/` paths, no authentication/authorization (use [`Fault`] for
//!   401/403). Watches send BOOKMARKs only at the end of `timeoutSeconds` (upstream also
//!   sends one about every minute). A watcher too slow to keep up is closed (it resumes
//!   from its last resourceVersion, as kube's watcher does).
//! * Strategic merge patch: merge-patch semantics, plus keyed merge for `containers`,
//!   `initContainers`, `env`, `volumes`, `volumeMounts`, `ports`, `conditions`, `addresses`,
//!   `ownerReferences`, `imagePullSecrets`, `hostAliases`; union for `finalizers`; `$patch`
//!   replace/delete and `$deleteFromPrimitiveList`. Other lists are replaced whole.
//! * Server-side apply ownership is tracked at leaf paths. Lists keyed by `name`
//!   (`containers`, `initContainers`, `env`, `volumes`, `imagePullSecrets`), `mountPath`
//!   (`volumeMounts`), `type` (`conditions`), `uid` (`ownerReferences`) and `ip`
//!   (`hostAliases`) merge per item (`k:{"name":"x"}` in `fieldsV1`, conflicts name
//!   `.spec.containers[name="x"].image`); every other list (ports, tolerations, taints,
//!   finalizers, args, ...) is atomic (upstream has more map- and set-lists, and no `.` or
//!   `v:` entries here). Conflicts are only reported for fields whose live value differs from
//!   the applied one.
//! * Scheduling: only the Job controller's pods are scheduled ([`scheduler`]'s filters:
//!   cordon, taints, `nodeSelector` on labels, required node affinity with `matchFields` on
//!   `metadata.name`); when no node fits the pod stays Pending with `PodScheduled=False`,
//!   reason `Unschedulable` and kube-scheduler's message. Other pods created through the API
//!   without `nodeName` stay Pending. No
//!   Deployment/DaemonSet/CronJob controllers: `spec.replicas` (or the scale subresource) is
//!   stored only; DaemonSet pods are not recreated. The Job controller runs one pod at a
//!   time (parallelism/completions/indexed Jobs, `podFailurePolicy`, `activeDeadlineSeconds`
//!   and backoff delays are ignored), and does not add
//!   the `batch.kubernetes.io/job-tracking` finalizer; a failed Job gets no `completionTime`
//!   (as upstream). Foreground deletion waits for every dependent (not only
//!   `blockOwnerDeletion` ones). Background/Foreground dependents are deleted within the
//!   deleting request (upstream's garbage collector does it moments later).
//! * The disruption controller resolves replicas for ReplicaSets, Deployments and
//!   StatefulSets only (upstream also asks the scale subresource of any other kind, e.g. a
//!   custom resource).
//! * Validation is limited to object names (RFC 1123 subdomain; namespaces RFC 1123 label;
//!   services DNS-1035), label keys/values on `metadata.labels` and pod templates (so a Job
//!   name over 63 characters is 422, as upstream: the controller copies it into a label), Job
//!   `restartPolicy`, Job immutability and pod spec immutability (only images,
//!   `activeDeadlineSeconds`, `tolerations`, `terminationGracePeriodSeconds` may change; the
//!   422 message lacks upstream's object diff); messages use the 1.33 wording (`characters`);
//!   no projected service-account token volume is added.
//! * Core `events` and `events.k8s.io` events are stored separately (upstream they are one).
//! * Pod logs are one text per pod: the `container` parameter is accepted and ignored;
//!   `tailLines` is honoured.
//! * [`TestApiServer::insert`] stores objects as given (status included), creates missing
//!   namespaces, and runs no create-time controller (a seeded Job gets no pod).
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![warn(missing_docs)]

mod defaults;
pub mod fixtures;
mod history;
mod patch;
mod resources;
pub mod scheduler;
mod selector;
mod server;
mod status;
mod store;
mod validate;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// The annotation that makes the simulated kubelet run a pod as crash-looping (Running, every
/// container in `CrashLoopBackOff`, Ready False) instead of Running and Ready. On a workload's
/// pod template it applies to every replacement pod too.
pub const CRASH_LOOP_ANNOTATION: &str = "testapi.k8s-upgrade-chain.io/crash-loop";

/// A PodDisruptionBudget that an API request on a pod (DELETE or eviction) took below its
/// budget: fewer healthy pods (Ready, not terminating, counted from the pods) than
/// `desiredHealthy` after the request, and fewer than before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetBreach {
    /// `namespace/name` of the PDB.
    pub pdb: String,
    /// `namespace/name` of the pod the request removed.
    pub pod: String,
    /// The node that pod ran on (`spec.nodeName`; empty if unscheduled).
    pub node: String,
    /// `delete` (a pod DELETE) or `eviction`.
    pub via: &'static str,
    /// Healthy pods the PDB selected before the request.
    pub healthy_before: i64,
    /// Healthy pods it selected after.
    pub healthy_after: i64,
    /// Its `desiredHealthy`.
    pub desired: i64,
    /// Its `expectedPods`.
    pub expected: i64,
}

impl BudgetBreach {
    /// The PDB can never allow a disruption, even with every expected pod healthy
    /// (`0 < expectedPods <= desiredHealthy`: a single replica under `minAvailable: 1`,
    /// `maxUnavailable: 0`, ...). Only a direct DELETE can take such a pod away.
    pub fn deadlocked(&self) -> bool {
        self.expected > 0 && self.expected <= self.desired
    }
}

impl std::fmt::Display for BudgetBreach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of pod {} took PodDisruptionBudget {} from {} to {} healthy pods, {} desired ({} expected)",
            self.via,
            self.pod,
            self.pdb,
            self.healthy_before,
            self.healthy_after,
            self.desired,
            self.expected
        )
    }
}

/// One HTTP request the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query, e.g. `/api/v1/pods?fieldSelector=spec.nodeName%3Dn1`.
    pub path: String,
    /// Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    /// HTTP status code sent (200 for watches, whatever their events).
    pub status: u16,
}

/// An injected failure: matching requests get `status` with a real-looking Status body
/// instead of being served. Every `None` field matches anything.
///
/// ```
/// use sim::apiserver::Fault;
/// // The kill-switch ConfigMap cannot be read (RBAC).
/// let f = Fault::status(403).method("GET").on("configmaps", "upgrade-kill-switch");
/// // The next two pod evictions fail with 500.
/// let g = Fault::status(500).path_contains("/eviction").times(2);
/// # let _ = (f, g);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// HTTP method (case-insensitive).
    pub method: Option<String>,
    /// Substring of `path?query`.
    pub path_contains: Option<String>,
    /// Resource plural (`configmaps`) or qualified (`jobs.batch`).
    pub resource: Option<String>,
    /// Object name.
    pub name: Option<String>,
    /// HTTP code (the Status reason follows the code: 403 Forbidden, 500 InternalError, ...).
    pub status: u16,
    /// How many requests to fail; `None` = until [`TestApiServer::clear_faults`].
    pub times: Option<u32>,
    /// Status message; a realistic default per code otherwise.
    pub message: Option<String>,
    /// When set, matching requests are not failed but held this long and then served
    /// normally (a slow apiserver; `status` is ignored).
    pub delay: Option<Duration>,
}

impl Default for Fault {
    fn default() -> Self {
        Self {
            method: None,
            path_contains: None,
            resource: None,
            name: None,
            status: 500,
            times: None,
            message: None,
            delay: None,
        }
    }
}

impl Fault {
    /// A fault answering `code` for every request (narrow it with the other builders).
    pub fn status(code: u16) -> Self {
        Self { status: code, ..Self::default() }
    }
    /// Only this HTTP method.
    pub fn method(mut self, m: &str) -> Self {
        self.method = Some(m.to_string());
        self
    }
    /// Only paths (with query) containing `s`.
    pub fn path_contains(mut self, s: &str) -> Self {
        self.path_contains = Some(s.to_string());
        self
    }
    /// Only this resource (plural) and object name.
    pub fn on(mut self, resource: &str, name: &str) -> Self {
        self.resource = Some(resource.to_string());
        self.name = Some(name.to_string());
        self
    }
    /// Only this resource (plural), any name.
    pub fn resource(mut self, resource: &str) -> Self {
        self.resource = Some(resource.to_string());
        self
    }
    /// Only the next `n` matching requests.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }
    /// Matching requests are held for `d`, then served normally.
    pub fn delay(d: Duration) -> Self {
        Self { delay: Some(d), ..Self::default() }
    }
    /// A custom Status message.
    pub fn message(mut self, m: &str) -> Self {
        self.message = Some(m.to_string());
        self
    }
}

/// Configures a [`TestApiServer`] before starting it.
#[derive(Debug, Clone)]
pub struct Builder {
    time_scale: f64,
    controllers: bool,
    pod_start_delay: Duration,
    history_limit: usize,
    server_version: String,
    bind: SocketAddr,
    namespace_cleanup_delay: Duration,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            time_scale: 1.0,
            controllers: true,
            pod_start_delay: Duration::from_millis(200),
            history_limit: history::UPPER_BOUND,
            server_version: "v1.33.5".into(),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            namespace_cleanup_delay: Duration::ZERO,
        }
    }
}

impl Builder {
    /// Multiplies every grace period (pods vanish after `grace * scale` real seconds) and the
    /// 75 s for which each resource's watch cache keeps its events.
    /// Default 1.0; e.g. 0.01 turns a 30 s grace into 300 ms.
    pub fn time_scale(mut self, scale: f64) -> Self {
        self.time_scale = scale;
        self
    }
    /// Turns the Job, ReplicaSet/StatefulSet and kubelet-start simulations on or off
    /// (default on). PDB status and graceful pod removal always run.
    pub fn controllers(mut self, on: bool) -> Self {
        self.controllers = on;
        self
    }
    /// How long a replacement (or API-created, scheduled) pod stays Pending before it is
    /// Running and Ready. Default 200 ms.
    pub fn pod_start_delay(mut self, d: Duration) -> Self {
        self.pod_start_delay = d;
        self
    }
    /// The most watch events each resource keeps for watches that resume from a
    /// resourceVersion (the upper bound of its watch cache window; older resourceVersions get
    /// 410). Default 102,400, upstream's; the window keeps between 100 (or `n`, if smaller) and
    /// `n` events, as many as the last 75 s times the time scale hold (see the crate docs).
    pub fn history_limit(mut self, n: usize) -> Self {
        self.history_limit = n.max(1);
        self
    }
    /// What `/version` reports. Default `v1.33.5`.
    pub fn server_version(mut self, v: &str) -> Self {
        self.server_version = v.to_string();
        self
    }

    /// How long after a namespace is marked Terminating the namespace controller deletes its
    /// contents (real time, not scaled). Default zero: within the DELETE request. A real
    /// controller takes a moment, during which pods in the namespace are not yet terminating
    /// while every create in it (an eviction too) is already refused.
    pub fn namespace_cleanup_delay(mut self, d: Duration) -> Self {
        self.namespace_cleanup_delay = d;
        self
    }

    /// The address to listen on. Default `127.0.0.1:0` (a free port on loopback).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Binds (127.0.0.1:0 unless [`Self::bind`] says otherwise) and serves in a background task until the server is dropped.
    /// Must be called inside a tokio runtime.
    pub async fn start(self) -> TestApiServer {
        let listener = tokio::net::TcpListener::bind(self.bind)
            .await
            .unwrap_or_else(|e| panic!("bind {}: {e}", self.bind));
        let addr = listener.local_addr().expect("local addr");
        let (tx, _) = broadcast::channel(65_536);
        let handle = tokio::runtime::Handle::current();
        let opts = store::Options {
            time_scale: self.time_scale,
            controllers: self.controllers,
            pod_start_delay: self.pod_start_delay,
            history_limit: self.history_limit,
            namespace_cleanup_delay: self.namespace_cleanup_delay,
        };
        let shared = Arc::new_cyclic(|weak| store::Shared {
            state: Mutex::new(store::State::new(opts, tx, weak.clone(), handle)),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let inner = Arc::new(server::Inner {
            shared,
            faults: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            shutdown: stop_rx,
            server_version: self.server_version,
            denied: Default::default(),
            addr,
        });
        let accept_inner = inner.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        let inner = accept_inner.clone();
                        conns.spawn(async move {
                            let svc = hyper::service::service_fn(move |req| server::handle(inner.clone(), req));
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        TestApiServer { inner, addr, task, stop: stop_tx }
    }
}

/// The running server. Dropping it stops serving (and ends open watches).
pub struct TestApiServer {
    inner: Arc<server::Inner>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

fn res_of<K: kube::Resource<DynamicType = ()>>() -> usize {
    let (av, kind) = (K::api_version(&()), K::kind(&()));
    resources::find_kind(&av, &kind).unwrap_or_else(|| panic!("testapi does not serve {av} {kind}"))
}

impl TestApiServer {
    /// A server with default settings (see [`Builder`]).
    pub async fn start() -> Self {
        Builder::default().start().await
    }

    /// Configure before starting: `TestApiServer::builder().time_scale(0.01).start().await`.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A kube configuration for this server: cluster URL, default namespace `default`, kube's
    /// default retry on (as in production). Usable with `Clients::from_config`.
    pub fn config(&self) -> kube::Config {
        let mut c = kube::Config::new(self.url().parse().expect("server url"));
        c.default_namespace = "default".into();
        c
    }

    /// A kubeconfig (YAML) for this server: cluster, user and context `testapi`, namespace
    /// `default`, no credentials. For running the binary as a subprocess (`KUBECONFIG=...`).
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: testapi\n  cluster:\n    server: {}\ncontexts:\n- name: testapi\n  context:\n    cluster: testapi\n    user: testapi\n    namespace: default\ncurrent-context: testapi\nusers:\n- name: testapi\n  user: {{}}\n",
            self.url()
        )
    }

    /// Writes [`Self::kubeconfig_yaml`] to `path`.
    pub fn write_kubeconfig(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml())
    }

    /// A client built from [`Self::config`] (kube's default 429/503/504 retry ON).
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config()).expect("kube client")
    }

    /// A client with kube's retry off (what the eviction client uses): 429s surface at once.
    pub fn client_without_retry(&self) -> kube::Client {
        let mut c = self.config();
        c.default_retry = false;
        kube::Client::try_from(c).expect("kube client")
    }

    fn state(&self) -> std::sync::MutexGuard<'_, store::State> {
        self.inner.shared.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores any supported object (k8s-openapi type or `serde_json::Value` with `apiVersion`
    /// and `kind`) as given, status included, filling uid, resourceVersion, creationTimestamp
    /// (and namespace `default`) when absent; replaces an existing object of that name.
    /// Returns the stored object. Panics on an unsupported kind.
    pub fn insert(&self, obj: impl Serialize) -> Value {
        let v = serde_json::to_value(obj).expect("serializable object");
        let av = v["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = v["kind"].as_str().unwrap_or_default().to_string();
        let res = resources::find_kind(&av, &kind)
            .unwrap_or_else(|| panic!("testapi does not serve {av:?} {kind:?}"));
        self.state().insert(res, v)
    }

    /// [`Self::insert`] for every document of a (multi-document) YAML string.
    pub fn apply_yaml(&self, yaml: &str) -> Vec<Value> {
        let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).expect("valid YAML");
        docs.into_iter().filter(|d| !d.is_null()).map(|d| self.insert(d)).collect()
    }

    /// The stored object, typed. `ns` is ignored for cluster-scoped kinds.
    pub fn get<K>(&self, ns: Option<&str>, name: &str) -> Option<K>
    where
        K: kube::Resource<DynamicType = ()> + DeserializeOwned,
    {
        self.get_value::<K>(ns, name).map(|v| serde_json::from_value(v).expect("stored object deserializes"))
    }

    /// The stored object as JSON.
    pub fn get_value<K: kube::Resource<DynamicType = ()>>(
        &self,
        ns: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let res = res_of::<K>();
        let ns = if resources::RESOURCES[res].namespaced { ns.unwrap_or("default") } else { "" };
        self.state().get(res, ns, name).cloned()
    }

    /// All stored objects of a kind, in (namespace, name) order; `ns` None = all namespaces.
    pub fn list<K>(&self, ns: Option<&str>) -> Vec<K>
    where
        K: kube::Resource<DynamicType = ()> + DeserializeOwned,
    {
        let res = res_of::<K>();
        self.state()
            .iter(res, ns)
            .map(|(_, v)| serde_json::from_value(v.clone()).expect("stored object deserializes"))
            .collect()
    }

    /// The objects of a resource whose stored JSON passes `keep`, in (namespace, name) order:
    /// only those are copied and deserialized (a look at the pods of one node in a cluster of
    /// thousands costs that node's pods).
    pub fn list_where<K>(&self, ns: Option<&str>, keep: impl Fn(&Value) -> bool) -> Vec<K>
    where
        K: kube::Resource<DynamicType = ()> + DeserializeOwned,
    {
        let res = res_of::<K>();
        self.state()
            .iter(res, ns)
            .filter(|(_, v)| keep(v))
            .map(|(_, v)| serde_json::from_value(v.clone()).expect("stored object deserializes"))
            .collect()
    }

    /// Edits a stored object in place (emits MODIFIED, runs the controllers). Returns the
    /// new object, or None if absent. Emptying the finalizers of a terminating object removes it.
    pub fn modify<K: kube::Resource<DynamicType = ()>>(
        &self,
        ns: Option<&str>,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Option<Value> {
        let res = res_of::<K>();
        let ns = if resources::RESOURCES[res].namespaced { ns.unwrap_or("default") } else { "" };
        self.state().modify(res, ns, name, f).map(|v| Value::clone(&v))
    }

    /// Deletes through the same path as an API DELETE with default options (pods get their
    /// grace period). Returns false if absent.
    pub fn delete<K: kube::Resource<DynamicType = ()>>(&self, ns: Option<&str>, name: &str) -> bool {
        let res = res_of::<K>();
        let ns = if resources::RESOURCES[res].namespaced { ns.unwrap_or("default") } else { "" };
        self.state().delete(res, ns, name, &store::DeleteOpts::default()).is_ok()
    }

    /// Completes a Job: its pods Succeeded, the Job `SuccessCriteriaMet` + `Complete`
    /// conditions, `succeeded=1`, `active=0`, `completionTime`. Panics if the Job is absent.
    pub fn complete_job(&self, ns: &str, name: &str) {
        self.state().finish_job(ns, name, None).unwrap_or_else(|| panic!("no job {ns}/{name}"));
    }

    /// Fails a Job with `reason` (e.g. `BackoffLimitExceeded`, `DeadlineExceeded`): its pods
    /// Failed, `FailureTarget` + `Failed` conditions, `failed=1`, `active=0`.
    pub fn fail_job(&self, ns: &str, name: &str, reason: &str) {
        self.state().finish_job(ns, name, Some(reason)).unwrap_or_else(|| panic!("no job {ns}/{name}"));
    }

    /// The names of the pods a Job owns.
    pub fn job_pods(&self, ns: &str, name: &str) -> Vec<String> {
        let st = self.state();
        st.get(resources::JOBS, ns, name).map(|j| st.job_pods(j)).unwrap_or_default()
    }

    /// What `GET pods/{pod}/log` returns (any container).
    pub fn set_pod_log(&self, ns: &str, pod: &str, text: &str) {
        self.state().logs.insert((ns.to_string(), pod.to_string()), text.to_string());
    }

    /// Sets the node's Ready condition.
    pub fn set_node_ready(&self, name: &str, ready: bool) {
        self.state().modify(resources::NODES, "", name, |n| {
            fixtures::set_condition(
                n,
                "Ready",
                ready,
                if ready { "KubeletReady" } else { "KubeletNotReady" },
            );
        });
    }

    /// Sets `status.nodeInfo.kubeletVersion` (e.g. `v1.34.2`).
    pub fn set_kubelet_version(&self, name: &str, version: &str) {
        self.state().modify(resources::NODES, "", name, |n| {
            if !n.get("status").is_some_and(Value::is_object) {
                n["status"] = json!({});
            }
            if !n["status"].get("nodeInfo").is_some_and(Value::is_object) {
                n["status"]["nodeInfo"] = json!({});
            }
            n["status"]["nodeInfo"]["kubeletVersion"] = json!(version);
        });
    }

    /// Sets a pod's Ready (and ContainersReady) condition; PDBs are recomputed.
    pub fn set_pod_ready(&self, ns: &str, name: &str, ready: bool) {
        self.state().modify(resources::PODS, ns, name, |p| {
            fixtures::set_condition(p, "Ready", ready, "");
            fixtures::set_condition(p, "ContainersReady", ready, "");
        });
    }

    /// Sets a pod's `status.phase`.
    pub fn set_pod_phase(&self, ns: &str, name: &str, phase: &str) {
        self.state().modify(resources::PODS, ns, name, |p| {
            if !p.get("status").is_some_and(Value::is_object) {
                p["status"] = json!({});
            }
            p["status"]["phase"] = json!(phase);
        });
    }

    /// The registry no longer has `image` (seed failure 18: a lost image sha): from now on a
    /// Job pod whose container uses it is scheduled but never starts. It stays `Pending` with
    /// its containers `ContainerCreating`, then (after [`Builder::pod_start_delay`])
    /// `ImagePullBackOff` with the kubelet's message `Back-off pulling image "<image>"`.
    pub fn missing_image(&self, image: &str) {
        self.state().missing_images.insert(image.to_string());
    }

    /// Holds the start of the pods of namespace `ns` whose labels match `selector` (label
    /// selector syntax: `app=db`, `app in (db,api)`): from now on such a pod (a ReplicaSet's or
    /// StatefulSet's replacement, or one created through the API on a node) stays `Pending`
    /// after [`Builder::pod_start_delay`] instead of becoming Running and Ready, until
    /// [`Self::release_pod`] or [`Self::release_holds`] starts it. A kubelet slow to pull the
    /// image does the same: a test keeps a replacement not Ready exactly as long as it needs,
    /// without timing. Panics on a selector that does not parse.
    pub fn hold_pod_starts(&self, ns: &str, selector: &str) {
        let sel = selector::LabelSelector::parse(selector)
            .unwrap_or_else(|e| panic!("hold_pod_starts: bad selector {selector:?}: {e}"));
        self.state().holds.push((ns.to_string(), sel));
    }

    /// The pods whose start is held now, as `(namespace, name)`, in the order their starts
    /// came due (see [`Self::hold_pod_starts`]).
    pub fn held_pods(&self) -> Vec<(String, String)> {
        let st = self.state();
        st.held
            .iter()
            .filter_map(|uid| st.by_uid(uid))
            .map(|(_, p)| {
                let meta = |k: &str| p["metadata"][k].as_str().unwrap_or_default().to_string();
                (meta("namespace"), meta("name"))
            })
            .collect()
    }

    /// Starts the held pod `ns/name` now: Running and Ready (crash-looping if its annotation
    /// says so), PDBs recomputed. False when that pod's start is not held.
    pub fn release_pod(&self, ns: &str, name: &str) -> bool {
        let mut st = self.state();
        let Some(uid) = st.get(resources::PODS, ns, name).and_then(|p| p["metadata"]["uid"].as_str()) else {
            return false;
        };
        let uid = uid.to_string();
        st.release_held(&uid)
    }

    /// Removes every hold ([`Self::hold_pod_starts`]) and starts every pod held.
    pub fn release_holds(&self) {
        let mut st = self.state();
        st.holds.clear();
        for uid in st.held.clone() {
            st.release_held(&uid);
        }
    }

    /// Adds a fault (see [`Fault`]); faults are checked in insertion order.
    pub fn inject(&self, fault: Fault) {
        self.inner.faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(fault);
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.inner.faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }

    /// SelfSubjectAccessReviews answer `allowed: false` for `verb` on `group`/`resource`
    /// (`resource/subresource` for subresources) from now on, as RBAC without that rule would.
    pub fn deny(&self, verb: &str, group: &str, resource: &str) {
        self.inner.denied.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((
            verb.into(),
            group.into(),
            resource.into(),
        ));
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The requests answered after the first `n` (all of them if fewer were recorded since the
    /// last [`Self::reset_requests`]): a caller that follows the log copies each request once,
    /// not the whole log each time.
    pub fn requests_since(&self, n: usize) -> Vec<RecordedRequest> {
        let log = self.inner.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        log.get(n..).unwrap_or(&log[..]).to_vec()
    }

    /// How many requests were recorded (since the last [`Self::reset_requests`]).
    pub fn request_count(&self) -> usize {
        self.inner.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// Forgets the recorded requests.
    pub fn reset_requests(&self) {
        self.inner.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }

    /// How many requests had this verb (`get`, `list`, `watch`, `create`, `patch`, ...).
    pub fn count(&self, verb: &str) -> usize {
        self.inner.requests.lock().unwrap().iter().filter(|r| r.verb == verb).count()
    }

    /// Request counts by verb.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for r in self.inner.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
            *m.entry(r.verb.clone()).or_insert(0) += 1;
        }
        m
    }

    /// Every PDB an API pod DELETE or eviction took below its budget so far, in order.
    pub fn budget_breaches(&self) -> Vec<BudgetBreach> {
        self.state().breaches.clone()
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.state().rv
    }

    /// Removes an object at once, whatever its grace period or finalizers (a DELETED event;
    /// controllers react as to any disappearance). Returns false if absent.
    pub fn remove<K: kube::Resource<DynamicType = ()>>(&self, ns: Option<&str>, name: &str) -> bool {
        let res = res_of::<K>();
        let ns = if resources::RESOURCES[res].namespaced { ns.unwrap_or("default") } else { "" };
        self.state().remove(res, ns, name)
    }

    /// Polls `check` every 10 ms until it holds; panics naming `what` after `timeout`.
    pub async fn wait_until(&self, what: &str, timeout: Duration, mut check: impl FnMut(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !check(self) {
            assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Drops the retained watch history, as an etcd compaction does: a watch from any
    /// resourceVersion before now gets 410 Gone.
    pub fn compact(&self) {
        self.state().compact();
    }
}
