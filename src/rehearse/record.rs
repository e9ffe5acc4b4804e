//! Who did what in a rehearsal, while several chain Jobs run at once.
//!
//! Each Job gets its own Kubernetes clients, node executor and Prometheus route prefix, which
//! record what that Job sent ([`JobLog`]): its report counts its own requests, evictions,
//! deletions, node commands and alert checks, never those of a Job running beside it. A watch
//! on the Nodes ([`CordonWatch`]) sees from the apiserver how many workers were cordoned at once.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
};

use chain_core::{
    node_exec::{ExecError, ExecOutput, ExecRequest, NodeExec, NodeTarget},
    settings::Settings,
};
use futures::{StreamExt as _, future::BoxFuture};
use k8s_openapi::api::core::v1::Node;
use kube::runtime::{WatchStreamExt as _, watcher};
use sim::node::SimCall;

use crate::{drain, k8s::Clients};

/// One request a Job's Kubernetes client sent and the status it got back (0: no response,
/// e.g. the connection failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiCall {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query.
    pub path: String,
    /// HTTP status.
    pub status: u16,
}

/// What one chain Job sent: every Kubernetes request (both clients, each attempt of kube's
/// retry included) and every node command.
#[derive(Clone, Default)]
pub struct JobLog {
    api: Arc<Mutex<Vec<ApiCall>>>,
    node: Arc<Mutex<Vec<SimCall>>>,
}

impl JobLog {
    /// Kubernetes clients for `config` (as [`Clients::from_config`] builds them) that record
    /// into this log.
    pub fn clients(&self, config: kube::Config) -> anyhow::Result<Clients> {
        let record = Record { log: self.api.clone() };
        let build = |config: kube::Config| -> anyhow::Result<kube::Client> {
            Ok(kube::client::ClientBuilder::try_from(config)?.with_layer(&record).build())
        };
        Ok(Clients { api: build(config.clone())?, evict: build(crate::k8s::without_retry(config))? })
    }

    /// `inner`, recording each command into this log.
    pub fn exec(&self, inner: Arc<dyn NodeExec>) -> Arc<dyn NodeExec> {
        Arc::new(RecordingExec { inner, log: self.node.clone() })
    }

    /// The Kubernetes requests recorded so far.
    pub fn api_calls(&self) -> Vec<ApiCall> {
        self.api.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The node commands recorded so far.
    pub fn node_calls(&self) -> Vec<SimCall> {
        self.node.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// The tower layer of [`JobLog::clients`]: outermost, so one request is one entry whatever the
/// layers below it do (kube's retry of a 429 on the api client shows as its last answer; the
/// eviction client has no retry, so each refused eviction shows).
#[derive(Clone)]
struct Record {
    log: Arc<Mutex<Vec<ApiCall>>>,
}

impl<S> tower::Layer<S> for Record {
    type Service = Recorded<S>;

    fn layer(&self, inner: S) -> Recorded<S> {
        Recorded { inner, log: self.log.clone() }
    }
}

#[derive(Clone)]
struct Recorded<S> {
    inner: S,
    log: Arc<Mutex<Vec<ApiCall>>>,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Recorded<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let method = req.method().to_string();
        let path = req.uri().path_and_query().map(ToString::to_string).unwrap_or_default();
        let log = self.log.clone();
        let answer = self.inner.call(req);
        Box::pin(async move {
            let res = answer.await;
            let status = res.as_ref().map_or(0, |r| r.status().as_u16());
            log.lock().unwrap_or_else(PoisonError::into_inner).push(ApiCall { method, path, status });
            res
        })
    }
}

/// The node executor of one Job: the shared simulated nodes, each command also recorded here.
struct RecordingExec {
    inner: Arc<dyn NodeExec>,
    log: Arc<Mutex<Vec<SimCall>>>,
}

impl NodeExec for RecordingExec {
    fn run<'a>(
        &'a self,
        target: &'a NodeTarget,
        req: ExecRequest,
    ) -> BoxFuture<'a, Result<ExecOutput, ExecError>> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(SimCall { node: target.node.clone(), what: req.describe() });
        self.inner.run(target, req)
    }
}

/// The most workers the chain had cordoned at once, as a watch on the Nodes saw them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CordonPeak {
    /// Workers cordoned by the chain at once.
    pub workers: usize,
    /// Workers of one failure domain (`workers.topology_label`) cordoned at once; 0 when no
    /// cordoned worker carried the label.
    pub in_one_zone: usize,
}

/// Watches the Nodes and keeps [`CordonPeak`]: workers (not matching the control-plane
/// selector) with `spec.unschedulable` and the chain's cordon annotation. Every version the
/// watch delivers counts, not samples. Stops on drop.
pub struct CordonWatch {
    peak: Arc<Mutex<CordonPeak>>,
    task: tokio::task::JoinHandle<()>,
}

impl CordonWatch {
    /// Starts the watch and returns once its initial list is in.
    ///
    /// Errors: the initial list did not arrive within `deadline`.
    pub async fn start(
        client: kube::Client,
        settings: &Settings,
        deadline: std::time::Duration,
    ) -> anyhow::Result<Self> {
        let selector = settings.control_plane_selector();
        let label = settings.workers.topology_label.as_str().to_string();
        let peak = Arc::new(Mutex::new(CordonPeak::default()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let p = peak.clone();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            // Node name -> its zone (`None` without the label), for the cordoned workers only.
            let mut cordoned: BTreeMap<String, Option<String>> = BTreeMap::new();
            let mut events =
                watcher(kube::Api::<Node>::all(client), watcher::Config::default()).default_backoff().boxed();
            while let Some(event) = events.next().await {
                let Ok(event) = event else { continue };
                match event {
                    watcher::Event::Apply(n) | watcher::Event::InitApply(n) => {
                        let name = n.metadata.name.clone().unwrap_or_default();
                        let cordoned_worker = !selector.matches(n.metadata.labels.as_ref())
                            && n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true)
                            && drain::cordoned_by_us(&n);
                        if cordoned_worker {
                            let zone = n.metadata.labels.as_ref().and_then(|l| l.get(&label)).cloned();
                            cordoned.insert(name, zone);
                        } else {
                            cordoned.remove(&name);
                        }
                    }
                    watcher::Event::Delete(n) => {
                        cordoned.remove(n.metadata.name.as_deref().unwrap_or_default());
                    }
                    watcher::Event::Init => cordoned.clear(),
                    watcher::Event::InitDone => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                }
                let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
                for zone in cordoned.values().flatten() {
                    *per_zone.entry(zone).or_default() += 1;
                }
                let mut peak = p.lock().unwrap_or_else(PoisonError::into_inner);
                peak.workers = peak.workers.max(cordoned.len());
                peak.in_one_zone = peak.in_one_zone.max(per_zone.values().copied().max().unwrap_or(0));
            }
        });
        let watch = Self { peak, task };
        match tokio::time::timeout(deadline, ready_rx).await {
            Ok(Ok(())) => Ok(watch),
            _ => anyhow::bail!(
                "the watch on the simulated cluster's Nodes did not list them within {}",
                chain_core::duration::format(deadline)
            ),
        }
    }

    /// The peak so far.
    pub fn peak(&self) -> CordonPeak {
        *self.peak.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for CordonWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
