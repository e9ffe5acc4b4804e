//! A whole simulated cluster for chain tests: the in-process apiserver, one real sshd per node
//! (shim `kubeadm`/`apt-get`/... on its PATH), a real Pushgateway and Prometheus, and the
//! library's Job runner (`k8s_upgrade_chain::rehearse::runner`, the one `rehearse` uses) that
//! plays the cluster's part: it runs each chain Job's `step` in-process, as the Job's pod would,
//! then marks the Job Complete or Failed.
//!
//! Two background tasks stand in for what the nodes and the backup CronJob would do: a
//! "kubelet" that reports the version `update_k8s.sh` installed, and the runner's simulated etcd
//! backup that completes its Job with a realistic log line.

use std::{sync::Arc, time::Duration};

use chain_core::{
    plan::Phase,
    settings::{EtcdBackup, Settings},
};
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{ConfigMap, Pod, PodSpec},
};
use k8s_upgrade_chain::{
    chain::{self, Ctx, Ended, detect::Detection},
    k8s::Clients,
    node::ssh::SshExec,
    rehearse::runner::{self, JobRunner},
};
use serde_json::json;
use sim::apiserver::{TestApiServer, fixtures as tf};

use super::{
    prom::{Prometheus, PushRecorder, Pushgateway, Reply, StubHttp},
    sshd::SshdNode,
};

pub const NS: &str = "k8s-upgrade";
pub const IMAGE: &str = "registry.local/k8s-upgrade-chain:test";

/// What the runner saw of one chain Job.
#[derive(Debug, Clone)]
pub struct RanJob {
    pub name: String,
    pub phase: Phase,
    pub node: Option<String>,
    pub run_on: String,
    pub tolerations: Vec<String>,
    pub result: Result<Ended, String>,
    /// `k8s_upgrade_in_flight` right after the Job ended.
    pub in_flight: Option<f64>,
    /// Whether the namespace carried the in-flight annotations right after the Job ended.
    pub annotated: bool,
}

/// The cluster under test.
pub struct Cluster {
    pub srv: Arc<TestApiServer>,
    pub nodes: Vec<SshdNode>,
    pub pgw: Pushgateway,
    /// Every push the code under test sent to the Pushgateway (the settings point at it).
    pub pushes: PushRecorder,
    pub prom: Prometheus,
    /// The Slack webhook the settings point at (records every message).
    pub slack: StubHttp,
    pub settings: Settings,
    known_hosts: tempfile::TempDir,
    runner: JobRunner,
    /// The log the simulated etcd backup writes (tests may shrink the snapshot).
    pub backup_log: Arc<std::sync::Mutex<String>>,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Node layout: control planes then workers, all on `from` and ready on `from`.
pub struct Layout<'a> {
    pub control_planes: &'a [&'a str],
    pub workers: &'a [&'a str],
    pub running: &'a str,
    pub target: &'a str,
    /// Third octet of the loopback addresses (distinct per test: tests run in parallel).
    pub net: u8,
}

fn debian(v: &str) -> String {
    format!("{v}-1.1")
}

impl Cluster {
    pub async fn start(layout: Layout<'_>) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let srv = TestApiServer::builder()
            .time_scale(0.01)
            .pod_start_delay(Duration::from_millis(50))
            .start()
            .await;
        for ns in [NS, "kube-system", "default", "apps"] {
            srv.insert(tf::namespace(ns));
        }
        let names: Vec<(&str, bool)> = layout
            .control_planes
            .iter()
            .map(|n| (*n, true))
            .chain(layout.workers.iter().map(|n| (*n, false)))
            .collect();
        let (port, sshds) = start_nodes(&names, layout.net);
        let mut nodes = Vec::new();
        for (i, ((name, cp), sshd)) in names.iter().zip(sshds).enumerate() {
            let ip = format!("127.0.{}.{}", layout.net, 10 + i);
            sshd.install(&["kubeadm", "kubelet", "kubectl"], &debian(layout.running));
            sshd.install(&["containerd.io"], "2.0.5-1");
            sshd.set_state(
                "madison.txt",
                &format!(
                    "   kubeadm | {t}-1.1 | https://pkgs.k8s.io/core:/stable:/v1.34/deb  Packages\n   kubeadm | {r}-1.1 | https://pkgs.k8s.io/core:/stable:/v1.34/deb  Packages\n",
                    t = layout.target,
                    r = layout.running
                ),
            );
            sshd.set_state(
                "plan.txt",
                &format!(
                    "Upgrade to the latest version in the v1.34 series:\n\nYou can now apply the upgrade by executing the following command:\n\n\tkubeadm upgrade apply v{}\n",
                    layout.target
                ),
            );
            let mut node = tf::node(name).ready().kubelet(&format!("v{}", layout.running)).internal_ip(&ip);
            if *cp {
                node = node.control_plane();
            }
            srv.insert(node.build());
            seed_node_pods(&srv, name, *cp);
            nodes.push(sshd);
        }
        // Workloads: a Deployment-like ReplicaSet with a PDB, and CoreDNS.
        let first_worker = layout.workers[0];
        srv.insert(tf::replicaset("web").ns("apps").replicas(2).labels(&[("app", "web")]).grace(1).build());
        srv.insert(tf::pdb("web").ns("apps").min_available(1).selector(&[("app", "web")]).build());
        for (i, w) in layout.workers.iter().take(2).enumerate() {
            srv.insert(
                tf::pod(&format!("web-{i}"))
                    .ns("apps")
                    .on(w)
                    .owned_by_replicaset("web")
                    .labels(&[("app", "web")])
                    .grace(1)
                    .build(),
            );
        }
        srv.insert(
            tf::replicaset("coredns")
                .ns("kube-system")
                .replicas(1)
                .labels(&[("k8s-app", "kube-dns")])
                .build(),
        );
        srv.insert(
            tf::pod("coredns-abc12")
                .ns("kube-system")
                .on(first_worker)
                .owned_by_replicaset("coredns")
                .labels(&[("k8s-app", "kube-dns")])
                .grace(1)
                .build(),
        );
        // A Deployment the site quiesces around control-plane upgrades (tigera-operator).
        srv.insert(tf::namespace("tigera-operator"));
        srv.insert(
            tf::deployment("tigera-operator")
                .ns("tigera-operator")
                .replicas(1)
                .labels(&[("app", "tigera-operator")])
                .build(),
        );
        // The etcd backup CronJob.
        srv.insert(json!({
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "backup-etcd", "namespace": "default"},
            "spec": {"schedule": "0 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "backup-manage", "image": "backup:1"}]}}}}}
        }));

        let pgw = Pushgateway::start().await;
        let pushes = PushRecorder::start(&pgw).await;
        let prom = Prometheus::start(&["chain.rules.yml"], Some(&pgw)).await;
        let slack = StubHttp::start(Reply::Status(200, vec![], "ok".into())).await;
        let known_hosts = tempfile::tempdir().unwrap();
        let webhook = known_hosts.path().join("slack_webhook");
        std::fs::write(&webhook, format!("{}/services/T000/B000/test", slack.url)).unwrap();
        let kh = known_hosts.path().join("known_hosts");
        std::fs::write(&kh, nodes.iter().map(SshdNode::known_hosts_line).collect::<String>()).unwrap();
        // One client key for every node, as the chain's Secret holds one.
        let authorized = std::fs::read_to_string(nodes[0].dir.path().join("client_key.pub")).unwrap();
        for n in &nodes[1..] {
            std::fs::write(n.dir.path().join("authorized_keys"), &authorized).unwrap();
        }
        let mut ssh = nodes[0].ssh_config();
        ssh.known_hosts_file = kh;
        ssh.port = port;

        let mut settings = Settings { ssh, ..Settings::default() };
        settings.pushgateway.url = pushes.url.parse().unwrap();
        settings.alerts.prometheus_url = prom.url.parse().unwrap();
        settings.slack.webhook_file = webhook;
        settings.timeouts.node_ready = Duration::from_secs(60);
        settings.timeouts.alert_wait = Duration::from_secs(3);
        settings.timeouts.alert_interval = Duration::from_secs(1);
        settings.timeouts.soak = Duration::from_secs(1);
        settings.timeouts.soak_interval = Duration::from_secs(1);
        settings.timeouts.etcd_snapshot = Duration::from_secs(30);
        // The simulated nodes became Ready a moment ago; the settle window has its own test.
        settings.timeouts.settle_window = Duration::ZERO;
        settings.timeouts.job_delete = Duration::from_secs(30);
        settings.drain.timeout = Duration::from_secs(60);
        settings.hooks.smoke_dns_name = Some("localhost".into());
        settings.hooks.quiesce_deployments = vec![chain_core::settings::QuiesceDeployment {
            namespace: "tigera-operator".into(),
            name: "tigera-operator".into(),
        }];
        settings.hooks.etcd_backup = Some(EtcdBackup {
            namespace: "default".into(),
            cronjob: "backup-etcd".into(),
            container: Some("backup-manage".into()),
            location_prefix: "nfs://nas:/srv/etcd-backup/".into(),
            min_bytes: 1024,
        });
        settings.validate("test").unwrap();

        let srv = Arc::new(srv);
        let runner = JobRunner::new(srv.clone(), NS);
        let backup_log = Arc::new(std::sync::Mutex::new(runner::backup_log(4194304)));
        let mut cluster = Cluster {
            srv,
            nodes,
            pgw,
            pushes,
            prom,
            slack,
            settings,
            known_hosts,
            runner,
            backup_log,
            _tasks: vec![],
        };
        cluster._tasks.push(cluster.kubelet_task());
        cluster._tasks.push(runner::spawn_etcd_backup(
            cluster.srv.clone(),
            "default".into(),
            cluster.backup_log.clone(),
        ));
        cluster
    }

    /// The "kubelets": when `update_k8s.sh` installs a kubelet version and restarts it, the
    /// node reports that version.
    fn kubelet_task(&self) -> tokio::task::JoinHandle<()> {
        let srv = self.srv.clone();
        let nodes: Vec<(String, std::path::PathBuf)> =
            self.nodes.iter().map(|n| (n.name.clone(), n.state())).collect();
        tokio::spawn(async move {
            let mut seen: std::collections::HashMap<String, String> = Default::default();
            loop {
                for (name, state) in &nodes {
                    let calls = std::fs::read_to_string(state.join("calls.log")).unwrap_or_default();
                    if !calls.lines().any(|l| l.starts_with("systemctl restart kubelet")) {
                        continue;
                    }
                    let Ok(v) = std::fs::read_to_string(state.join("installed/kubelet")) else { continue };
                    let v = v.split('-').next().unwrap_or_default().to_string();
                    if seen.get(name) != Some(&v) {
                        srv.set_kubelet_version(name, &format!("v{v}"));
                        seen.insert(name.clone(), v);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    }

    /// The seed's OIDC restore, as a post-upgrade script whose run shows in the node's call
    /// log (its ConfigMap is created here).
    pub fn oidc_restore(&self) -> Vec<chain_core::settings::PostUpgradeScript> {
        self.srv.insert(tf::configmap(
            "kube-system",
            "apiserver-oidc-restore",
            &[("restore.sh", "systemctl restart oidc-restore-marker\n")],
        ));
        vec![chain_core::settings::PostUpgradeScript {
            name: "oidc-restore".into(),
            configmap_namespace: "kube-system".into(),
            configmap_name: "apiserver-oidc-restore".into(),
            configmap_key: "restore.sh".into(),
            verify_file: None,
            verify_contains: None,
        }]
    }

    pub fn node(&self, name: &str) -> &SshdNode {
        self.nodes.iter().find(|n| n.name == name).unwrap()
    }

    pub fn node_mut(&mut self, name: &str) -> &mut SshdNode {
        self.nodes.iter_mut().find(|n| n.name == name).unwrap()
    }

    /// Rewrites `known_hosts` from the nodes' current host keys (an operator updating the
    /// Secret after a node was reinstalled).
    pub fn refresh_known_hosts(&self) {
        std::fs::write(
            &self.settings.ssh.known_hosts_file,
            self.nodes.iter().map(SshdNode::known_hosts_line).collect::<String>(),
        )
        .unwrap();
    }

    /// Every Slack message posted so far (`[prefix] text`), oldest first.
    pub fn slack_messages(&self) -> Vec<String> {
        self.slack
            .seen()
            .into_iter()
            .filter_map(|r| serde_json::from_str::<serde_json::Value>(&r.body).ok())
            .filter_map(|v| v["text"].as_str().map(String::from))
            .collect()
    }

    /// The last Slack message containing `needle`.
    pub fn slack_message(&self, needle: &str) -> String {
        let all = self.slack_messages();
        all.iter()
            .rev()
            .find(|m| m.contains(needle))
            .cloned()
            .unwrap_or_else(|| panic!("no Slack message contains {needle:?}; messages:\n{}", all.join("\n")))
    }

    /// Runs the real binary with `args` against this cluster, as an operator at a terminal
    /// would (kubeconfig to the test apiserver, the cluster's settings as the config file).
    /// Returns (exit code, stdout, stderr).
    pub async fn run_binary(&self, args: &[&str]) -> (i32, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        self.srv.write_kubeconfig(&kubeconfig).unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, serde_saphyr::to_string(&self.settings).unwrap()).unwrap();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_k8s-upgrade-chain"))
                .arg("--config")
                .arg(&config)
                .args(&args)
                .env("KUBECONFIG", &kubeconfig)
                .env("RUST_LOG", "warn")
                .env("NO_COLOR", "1")
                .env_remove("KUBERNETES_SERVICE_HOST")
                .env_remove("IMAGE")
                .env_remove("TARGET_NODE")
                .env_remove("TARGET_VERSION")
                .env_remove("PHASE")
                .env_remove("KIND")
                .env_remove("DRY_RUN")
                .env_remove("OUTPUT")
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        drop(dir);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs an operator's shell line the tool printed, the way a shell would: `A && B`, and
    /// `render ... | kubectl apply -f -`. Understood: `k8s-upgrade-chain ...` (the real binary,
    /// with the image of the chain), `kubectl -n NS delete job NAME --cascade=foreground`
    /// (a Foreground delete, waited for), `kubectl apply -f -` of the previous command's
    /// output (server-side apply, as a create), `kubectl -n NS delete configmap NAME`,
    /// `kubectl annotate node NODE KEY-`, and `kubectl -n NS create job --from=cronjob/...`
    /// (which here means: run detection). Panics on anything else, so a printed command the
    /// test cannot run fails the test.
    pub async fn run_operator_line(&self, line: &str) -> Vec<String> {
        let mut outputs = Vec::new();
        for part in line.split("&&").map(str::trim) {
            let mut stdin: Option<String> = None;
            for cmd in part.split('|').map(str::trim) {
                let words: Vec<&str> = cmd.split_whitespace().collect();
                stdin = Some(self.run_operator_command(&words, stdin.take()).await);
            }
            outputs.push(stdin.unwrap_or_default());
        }
        outputs
    }

    async fn run_operator_command(&self, words: &[&str], stdin: Option<String>) -> String {
        use kube::{
            Api,
            api::{DeleteParams, Patch, PatchParams},
        };
        let client = self.srv.client();
        match words {
            ["k8s-upgrade-chain", rest @ ..] => {
                let mut args = rest.to_vec();
                if rest.first() == Some(&"render") {
                    args.extend(["--image", IMAGE]);
                }
                let (code, out, err) = self.run_binary(&args).await;
                assert_eq!(code, 0, "k8s-upgrade-chain {rest:?} failed:\n{err}");
                out
            }
            ["kubectl", "-n", ns, "delete", "job", name, "--cascade=foreground"] => {
                let api: Api<Job> = Api::namespaced(client, ns);
                let job = api.get(name).await.unwrap();
                k8s_upgrade_chain::k8s::spawn::delete_and_wait(&api, &job, Duration::from_secs(30))
                    .await
                    .unwrap();
                String::new()
            }
            ["kubectl", "apply", "-f", "-"] => {
                let yaml = stdin.expect("kubectl apply -f - reads the previous command's output");
                let job: Job = serde_saphyr::from_str(&yaml).unwrap();
                let ns = job.metadata.namespace.clone().unwrap();
                let name = job.metadata.name.clone().unwrap();
                Api::<Job>::namespaced(client, &ns)
                    .patch(&name, &PatchParams::apply("kubectl").force(), &Patch::Apply(&job))
                    .await
                    .unwrap();
                String::new()
            }
            ["kubectl", "-n", ns, "delete", "configmap", name] => {
                let api: Api<ConfigMap> = Api::namespaced(client, ns);
                api.delete(name, &DeleteParams::default()).await.unwrap();
                String::new()
            }
            ["kubectl", "annotate", "node", node, key] if key.ends_with('-') => {
                let patch = json!({"metadata": {"annotations": {key.trim_end_matches('-'): null}}});
                Api::<k8s_openapi::api::core::v1::Node>::all(client)
                    .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .unwrap();
                String::new()
            }
            ["kubectl", "-n", _, "create", "job", from, ..] if from.starts_with("--from=cronjob/") => {
                format!("{:?}", self.detect().await)
            }
            other => panic!("the test cannot run the printed command {other:?}"),
        }
    }

    /// A production context pointed at this cluster.
    pub fn ctx(&self) -> Ctx {
        self.ctx_with(self.settings.clone())
    }

    pub fn ctx_with(&self, settings: Settings) -> Ctx {
        let clients = Clients::from_config(self.srv.config()).unwrap();
        let exec = SshExec::new(settings.ssh.clone()).unwrap();
        Ctx::new(settings, clients, Arc::new(exec), IMAGE.into()).unwrap()
    }

    pub async fn detect(&self) -> Detection {
        chain::detect::detect(&self.ctx(), false).await.unwrap()
    }

    /// The oldest active chain Job not run yet (what [`Self::run_chain`] would run next).
    pub fn next_job(&self) -> Option<Job> {
        self.runner.next_job()
    }

    /// The Events recorded on the object `kind`/`name`, as `(type, reason, note)`.
    pub fn events_on(&self, kind: &str, name: &str) -> Vec<(String, String, String)> {
        self.srv
            .list::<k8s_openapi::api::events::v1::Event>(None)
            .into_iter()
            .filter(|e| {
                e.regarding
                    .as_ref()
                    .is_some_and(|r| r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name))
            })
            .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect()
    }

    /// Runs every chain Job as it appears, in order, until none is left to run.
    pub async fn run_chain(&self) -> Vec<RanJob> {
        self.run_chain_with(|_| {}).await
    }

    /// Like [`Self::run_chain`], calling `before` with each Job's name before running it.
    pub async fn run_chain_with(&self, mut before: impl FnMut(&str)) -> Vec<RanJob> {
        let mut ran = Vec::new();
        for _ in 0..64 {
            let Some(job) = self.runner.next_job() else { break };
            before(job.metadata.name.as_deref().unwrap());
            ran.push(self.run_job(&job).await);
        }
        ran
    }

    /// Runs every chain Job as soon as it appears, beside those already running (the worker
    /// Jobs of `workers.concurrency` above 1), until none is left; each with `settings`.
    /// `before` sees each Job's name before it runs.
    #[allow(dead_code)]
    pub async fn run_chain_concurrently(
        &self,
        settings: &Settings,
        mut before: impl FnMut(&str),
    ) -> Vec<RanJob> {
        let ran = self
            .runner
            .run_chain_concurrently(
                || Ok(self.ctx_with(settings.clone())),
                |job| before(job.metadata.name.as_deref().unwrap_or_default()),
                |_| {},
            )
            .await
            .unwrap();
        ran.into_iter()
            .map(|r| RanJob {
                name: r.name,
                phase: r.phase,
                node: r.node,
                run_on: r.run_on,
                tolerations: r.tolerations,
                result: r.result,
                in_flight: None,
                annotated: false,
            })
            .collect()
    }

    /// A gauge of the Pushgateway with all of `labels` (e.g. `[("node", "k8s-node3")]`).
    pub async fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let text = self.pgw.metrics_text().await;
        chain_core::metrics::Scrape::parse(&text).value(name, labels)
    }

    /// The chain's pushed state: every `k8s_*` and `push_time_seconds` line of the
    /// Pushgateway's `/metrics` for job="k8s-version-upgrade" (what a phase that changes
    /// nothing must leave as it is).
    pub async fn chain_metrics(&self) -> Vec<String> {
        self.pgw
            .metrics_text()
            .await
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains("job=\"k8s-version-upgrade\""))
            .filter(|l| l.starts_with("k8s_") || l.starts_with("push_time_seconds"))
            .map(String::from)
            .collect()
    }

    /// The namespace's `k8s-upgrade-chain/*` annotations (the in-flight record).
    pub fn in_flight_annotations(&self) -> Vec<String> {
        let ns: k8s_openapi::api::core::v1::Namespace = self.srv.get(None, NS).unwrap();
        ns.metadata
            .annotations
            .unwrap_or_default()
            .into_keys()
            .filter(|k| k.starts_with(&self.settings.annotation_prefix))
            .collect()
    }

    /// The upgrade-started record on `node`, as the annotation's raw value.
    pub fn upgrade_started(&self, node: &str) -> Option<String> {
        let n: k8s_openapi::api::core::v1::Node = self.srv.get(None, node).unwrap();
        n.metadata
            .annotations
            .unwrap_or_default()
            .get(chain_core::resume::UPGRADE_STARTED_ANNOTATION)
            .cloned()
    }

    /// The reasons of the Events about `kind` `name`.
    pub fn event_reasons(&self, kind: &str, name: &str) -> Vec<String> {
        self.srv
            .list::<k8s_openapi::api::events::v1::Event>(None)
            .into_iter()
            .filter(|e| {
                e.regarding
                    .as_ref()
                    .is_some_and(|r| r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name))
            })
            .filter_map(|e| e.reason)
            .collect()
    }

    /// Runs one Job's step in-process, as its pod would, and finishes the Job accordingly.
    pub async fn run_job(&self, job: &Job) -> RanJob {
        self.run_job_with(job, self.settings.clone()).await
    }

    /// [`Self::run_job`] with other settings (as if the config ConfigMap said so).
    pub async fn run_job_with(&self, job: &Job, settings: Settings) -> RanJob {
        let ran = self.runner.run_job(job, self.ctx_with(settings)).await;
        assert_eq!(ran.image, IMAGE, "the image is passed down the chain");
        let in_flight = self.metric("k8s_upgrade_in_flight").await;
        let ns: k8s_openapi::api::core::v1::Namespace = self.srv.get(None, NS).unwrap();
        let annotated = ns
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key(&format!("{}in-flight", self.settings.annotation_prefix));
        RanJob {
            name: ran.name,
            phase: ran.phase,
            node: ran.node,
            run_on: ran.run_on,
            tolerations: ran.tolerations,
            result: ran.result,
            in_flight,
            annotated,
        }
    }

    /// What the binary in a pod of `spec` would load: the pod's ConfigMap volumes materialised
    /// under `root` at their mount paths (as the kubelet mounts them; a missing ConfigMap keeps
    /// the pod from starting), then the settings from `CONFIG` there, so a `job.template` file
    /// name resolves inside the mounted config directory. Err says why such a pod would not
    /// start or could not read its config.
    pub fn settings_in_pod(&self, spec: &PodSpec, root: &std::path::Path) -> Result<Settings, String> {
        let container = spec.containers.first().ok_or("the pod has no container")?;
        let env = container.env.clone().unwrap_or_default();
        let config = env
            .iter()
            .find(|e| e.name == "CONFIG")
            .and_then(|e| e.value.clone())
            .ok_or("the container has no CONFIG")?;
        let volumes = spec.volumes.clone().unwrap_or_default();
        for m in container.volume_mounts.clone().unwrap_or_default() {
            let v = volumes.iter().find(|v| v.name == m.name).ok_or(format!("no volume {}", m.name))?;
            let Some(cm) = &v.config_map else { continue };
            let data: ConfigMap = self
                .srv
                .get(Some(NS), &cm.name)
                .ok_or(format!("ConfigMap {NS}/{} does not exist: the pod cannot start", cm.name))?;
            let dir = root.join(m.mount_path.trim_start_matches('/'));
            std::fs::create_dir_all(&dir).unwrap();
            for (key, text) in data.data.unwrap_or_default() {
                std::fs::write(dir.join(key), text).unwrap();
            }
        }
        let path = root.join(config.trim_start_matches('/'));
        if !path.exists() {
            return Err(format!("{config} is not mounted in the pod"));
        }
        k8s_upgrade_chain::config::load(&path).map_err(|e| format!("{e:#}"))
    }

    /// Like [`Self::run_chain`], but each Job runs with the settings its own pod would load
    /// ([`Self::settings_in_pod`]): the config and a `job.template` override come from the
    /// ConfigMaps its template mounts, not from the test. A Job whose pod could not load them
    /// is failed, with the reason as its result.
    pub async fn run_chain_in_pods(&self) -> Vec<RanJob> {
        let mut ran = Vec::new();
        for _ in 0..64 {
            let Some(job) = self.runner.next_job() else { break };
            let spec = job.spec.as_ref().and_then(|s| s.template.spec.clone()).expect("a pod template");
            let root = tempfile::tempdir().unwrap();
            match self.settings_in_pod(&spec, root.path()) {
                Ok(settings) => ran.push(self.run_job_with(&job, settings).await),
                Err(why) => {
                    let name = job.metadata.name.clone().unwrap();
                    self.srv.fail_job(NS, &name, "PodCannotStart");
                    let env = runner::job_env(&job).unwrap();
                    ran.push(RanJob {
                        name,
                        phase: env.input.step.phase(),
                        node: env.input.step.node().map(str::to_string),
                        run_on: env.run_on,
                        tolerations: env.tolerations,
                        result: Err(why),
                        in_flight: None,
                        annotated: false,
                    });
                    break;
                }
            }
        }
        ran
    }

    /// A chain-group gauge read back from the Pushgateway.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        self.metric_in(name, "k8s-version-upgrade").await
    }

    /// A gauge of the group `job` read back from the Pushgateway.
    pub async fn metric_in(&self, name: &str, job: &str) -> Option<f64> {
        let text = self.pgw.metrics_text().await;
        chain_core::metrics::Scrape::parse(&text).value(name, &[("job", job)])
    }

    /// The kubelet version a node reports.
    pub fn kubelet(&self, node: &str) -> String {
        let n: k8s_openapi::api::core::v1::Node = self.srv.get(None, node).unwrap();
        n.status.unwrap().node_info.unwrap().kubelet_version
    }

    pub fn cordoned(&self, node: &str) -> bool {
        let n: k8s_openapi::api::core::v1::Node = self.srv.get(None, node).unwrap();
        n.spec.and_then(|s| s.unschedulable).unwrap_or(false)
    }

    pub fn chain_jobs(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .srv
            .list::<Job>(Some(NS))
            .into_iter()
            .filter(|j| {
                j.metadata.labels.as_ref().and_then(|l| l.get("app")).map(String::as_str)
                    == Some("k8s-upgrade-chain")
            })
            .filter_map(|j| j.metadata.name)
            .collect();
        v.sort();
        v
    }

    pub fn pods_on(&self, node: &str) -> Vec<String> {
        self.srv
            .list::<Pod>(None)
            .into_iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
            .filter_map(|p| p.metadata.name)
            .collect()
    }

    #[allow(dead_code)]
    pub fn known_hosts_dir(&self) -> &std::path::Path {
        self.known_hosts.path()
    }
}

/// One sshd per node, every one on the same port of its own loopback address (as real nodes
/// share port 22). A port that is free on 127.0.0.1 may be held on a node's address by
/// another suite running on the machine: sshd then says so and every node moves to another
/// port.
fn start_nodes(names: &[(&str, bool)], net: u8) -> (u16, Vec<SshdNode>) {
    let mut last = String::new();
    for _ in 0..8 {
        let port = super::prom::free_port();
        let started: Result<Vec<SshdNode>, String> = names
            .iter()
            .enumerate()
            .map(|(i, (name, _))| SshdNode::try_start_on_port(name, &format!("127.0.{net}.{}", 10 + i), port))
            .collect();
        match started {
            Ok(nodes) => return (port, nodes),
            Err(e) => last = e,
        }
    }
    panic!("the nodes' sshd did not start: {last}");
}

/// DaemonSet pods on every node; static control-plane pods on control planes.
fn seed_node_pods(srv: &TestApiServer, node: &str, control_plane: bool) {
    for ds in ["calico-node", "kube-proxy"] {
        srv.insert(
            tf::pod(&format!("{ds}-{node}")).ns("kube-system").on(node).owned_by_daemonset(ds).build(),
        );
    }
    if control_plane {
        for c in ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"] {
            srv.insert(
                tf::pod(&format!("{c}-{node}"))
                    .ns("kube-system")
                    .on(node)
                    .mirror()
                    .owned_by("v1", "Node", node)
                    .labels(&[("tier", "control-plane"), ("component", c)])
                    .build(),
            );
        }
    }
}

/// A local stand-in for pkgs.k8s.io: every path under `/v<X.Y>/deb/` answers 302 to a
/// `/mirror/...` copy (as pkgs.k8s.io redirects everything), which serves `Release` and
/// `Packages` for the minors given; anything else is 404.
pub struct AptRepo {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AptRepo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AptRepo {
    /// Serves `packages` (`(minor "1.35", versions ["1.35.0", ...])`).
    pub async fn start(packages: &[(&str, &[&str])]) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let index: std::collections::HashMap<String, String> = packages
            .iter()
            .map(|(minor, versions)| {
                let text: String = versions
                    .iter()
                    .map(|v| format!("Package: kubeadm\nVersion: {v}-1.1\nArchitecture: amd64\n\n"))
                    .collect();
                (minor.to_string(), text)
            })
            .collect();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else { return };
                let index = index.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut got = 0;
                    loop {
                        let Ok(n) = sock.read(&mut buf[got..]).await else { return };
                        if n == 0 {
                            return;
                        }
                        got += n;
                        if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") || got == buf.len() {
                            break;
                        }
                    }
                    let req = String::from_utf8_lossy(&buf[..got]).to_string();
                    let mut first = req.lines().next().unwrap_or_default().split_whitespace();
                    let (method, path) = (first.next().unwrap_or_default(), first.next().unwrap_or_default());
                    let (code, location, body) = route(path, &index);
                    let mut head = format!(
                        "HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                        body.len()
                    );
                    if let Some(l) = location {
                        head.push_str(&format!("location: {l}\r\n"));
                    }
                    head.push_str("\r\n");
                    let _ = sock.write_all(head.as_bytes()).await;
                    if method != "HEAD" {
                        let _ = sock.write_all(body.as_bytes()).await;
                    }
                    let _ = sock.shutdown().await;
                });
            }
        });
        Self { url, task }
    }
}

fn route(path: &str, index: &std::collections::HashMap<String, String>) -> (u16, Option<String>, String) {
    if let Some(rest) = path.strip_prefix("/mirror/v") {
        let mut parts = rest.splitn(3, '/');
        let (minor, deb, file) = (parts.next().unwrap_or_default(), parts.next(), parts.next());
        return match (index.get(minor), deb, file) {
            (Some(_), Some("deb"), Some("Release")) => {
                (200, None, format!("Origin: test\nSuite: v{minor}\n"))
            }
            (Some(p), Some("deb"), Some("Packages")) => (200, None, p.clone()),
            (Some(_), Some("deb"), Some("Release.key")) => {
                (200, None, "-----BEGIN PGP PUBLIC KEY BLOCK-----\n".into())
            }
            _ => (404, None, "not found".into()),
        };
    }
    if path.starts_with("/v") {
        return (302, Some(format!("/mirror{path}")), String::new());
    }
    (404, None, "not found".into())
}
