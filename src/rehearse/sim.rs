//! Simulated nodes: a [`NodeExec`] that answers what the chain sends to a node (see
//! [`crate::probes`]) with outputs the real parsers accept, and applies what `update_k8s.sh`
//! would change: after a short simulated kubelet restart, the node reports the new kubelet
//! version in the (simulated) apiserver.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::future::BoxFuture;
use testapi::TestApiServer;

use crate::{
    node_exec::{ExecOutput, ExecPayload, ExecRequest, ExitStatus, NodeExec, NodeTarget},
    version::Version,
};

/// One request a simulated node received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimCall {
    /// Node name.
    pub node: String,
    /// What ran: the script name and arguments, or the command line.
    pub what: String,
}

/// Simulated nodes behind the [`NodeExec`] seam.
pub struct SimExec {
    srv: Arc<TestApiServer>,
    /// Versions the simulated apt repository offers (`apt-cache madison kubeadm`).
    repo: Vec<Version>,
    /// containerd version per node (default for nodes not listed).
    containerd: Mutex<HashMap<String, Version>>,
    default_containerd: Version,
    /// How long a simulated kubelet restart takes before the node reports its new version.
    restart_delay: Duration,
    calls: Mutex<Vec<SimCall>>,
}

impl SimExec {
    /// Nodes whose apt repository offers `repo`, running containerd `containerd`, whose kubelet
    /// restarts take `restart_delay`.
    pub fn new(
        srv: Arc<TestApiServer>,
        repo: Vec<Version>,
        containerd: Version,
        restart_delay: Duration,
    ) -> Self {
        Self {
            srv,
            repo,
            containerd: Mutex::default(),
            default_containerd: containerd,
            restart_delay,
            calls: Mutex::default(),
        }
    }

    /// Every request received so far, in order.
    pub fn calls(&self) -> Vec<SimCall> {
        self.calls.lock().expect("sim lock").clone()
    }

    /// Node upgrades run so far: `(node, role, release)`.
    pub fn upgrades(&self) -> Vec<(String, String, Version)> {
        self.calls()
            .into_iter()
            .filter_map(|c| {
                let args = c.what.strip_prefix("update_k8s.sh ")?;
                let (role, release) = parse_update_args(args)?;
                Some((c.node, role, release))
            })
            .collect()
    }

    fn answer(&self, target: &NodeTarget, req: &ExecRequest) -> ExecOutput {
        match &req.payload {
            ExecPayload::Script { name, args, .. } => self.script(target, name, args),
            ExecPayload::Command { line, .. } => self.command(target, line),
        }
    }

    fn script(&self, target: &NodeTarget, name: &str, args: &[String]) -> ExecOutput {
        match name {
            "update_k8s.sh" => {
                let Some((role, release)) = parse_update_args(&args.join(" ")) else {
                    return fail(2, "update_k8s.sh: --role and --release are required");
                };
                // What the script changes that the cluster can see: after the kubelet restart
                // the node reports the new version.
                let (srv, node, delay) = (self.srv.clone(), target.node.clone(), self.restart_delay);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    srv.set_kubelet_version(&node, &format!("v{release}"));
                });
                ok(&format!(
                    "[simulated] {role}: kubeadm, kubelet and kubectl {release} installed; kubelet restarted\n"
                ))
            }
            "containerd-skew-fix" => {
                if let Some(v) = args.first().and_then(|a| a.parse::<Version>().ok()) {
                    self.containerd.lock().expect("sim lock").insert(target.node.clone(), v);
                }
                ok("[simulated] containerd.io installed; containerd restarted\n")
            }
            // apt-repo-rewrite and the operator's post-upgrade scripts.
            _ => ok(&format!("[simulated] {name} ran\n")),
        }
    }

    fn command(&self, target: &NodeTarget, line: &str) -> ExecOutput {
        if let Some(rest) = line.split_once("kubeadm upgrade plan v").map(|(_, r)| r) {
            let want: Option<Version> = rest.split_whitespace().next().and_then(|v| v.parse().ok());
            return match want.filter(|w| self.repo.contains(w)) {
                Some(v) => ok(&format!(
                    "Upgrade to the latest version in the v{} series:\n\nYou can now apply the upgrade by executing the following command:\n\n\tkubeadm upgrade apply v{v}\n",
                    v.minor_track()
                )),
                None => ok("Awesome, you're up-to-date! Enjoy!\n"),
            };
        }
        if line.contains("apt-cache madison kubeadm") {
            let text: String = self
                .repo
                .iter()
                .rev()
                .map(|v| {
                    format!(
                        "   kubeadm | {v}-1.1 | https://pkgs.k8s.io/core:/stable:/v{}/deb  Packages\n",
                        v.minor_track()
                    )
                })
                .collect();
            return ok(&text);
        }
        if line.starts_with("containerd --version") {
            let v = self
                .containerd
                .lock()
                .expect("sim lock")
                .get(&target.node)
                .copied()
                .unwrap_or(self.default_containerd);
            return ok(&format!("containerd containerd.io {v} 05044ec0a9a75232cad458027ca83437aae3f4da\n"));
        }
        if line.contains("kubeadm upgrade diff") {
            return ok("");
        }
        if line.contains("root filesystem") {
            // The prune: nothing old to remove, then `df -P /`.
            return ok(
                "=== root filesystem ===\nFilesystem     1024-blocks     Used Available Capacity Mounted on\n/dev/sda1        102687672 41075068  56353444      43% /\n",
            );
        }
        if line.contains("grep -c -F") {
            return ok("1\n");
        }
        fail(127, &format!("simulated node {}: no simulation for {line:?}", target.node))
    }
}

/// `--role R --release V` from `update_k8s.sh` arguments.
fn parse_update_args(args: &str) -> Option<(String, Version)> {
    let words: Vec<&str> = args.split_whitespace().collect();
    let after = |flag: &str| words.iter().position(|w| *w == flag).and_then(|i| words.get(i + 1)).copied();
    Some((after("--role")?.to_string(), after("--release")?.parse().ok()?))
}

fn ok(stdout: &str) -> ExecOutput {
    ExecOutput {
        status: ExitStatus::Code(0),
        stdout: stdout.to_string(),
        stderr: String::new(),
        stdout_bytes: stdout.len() as u64,
        stderr_bytes: 0,
    }
}

fn fail(code: i32, stderr: &str) -> ExecOutput {
    ExecOutput {
        status: ExitStatus::Code(code),
        stdout: String::new(),
        stderr: stderr.to_string(),
        stdout_bytes: 0,
        stderr_bytes: stderr.len() as u64,
    }
}

impl NodeExec for SimExec {
    fn run<'a>(
        &'a self,
        target: &'a NodeTarget,
        req: ExecRequest,
    ) -> BoxFuture<'a, Result<ExecOutput, crate::node_exec::ExecError>> {
        Box::pin(async move {
            self.calls
                .lock()
                .expect("sim lock")
                .push(SimCall { node: target.node.clone(), what: req.describe() });
            Ok(self.answer(target, &req))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    async fn sim() -> (Arc<TestApiServer>, SimExec) {
        let srv = Arc::new(TestApiServer::start().await);
        srv.insert(testapi::fixtures::node("n1").ready().kubelet("v1.34.1").build());
        let exec = SimExec::new(srv.clone(), vec![v("1.34.1"), v("1.34.2")], v("1.7.27"), Duration::ZERO);
        (srv, exec)
    }

    fn n1() -> NodeTarget {
        NodeTarget::new("n1", "192.0.2.1".parse().unwrap())
    }

    #[tokio::test]
    async fn probes_parse_what_the_simulated_node_answers() {
        let (_srv, exec) = sim().await;
        let t = n1();
        assert_eq!(
            probes::probe_upgrade_plan(&exec, &t, v("1.34.2")).await.unwrap(),
            probes::PlanTarget::Apply(v("1.34.2"))
        );
        assert_eq!(
            probes::probe_upgrade_plan(&exec, &t, v("1.35.0")).await.unwrap(),
            probes::PlanTarget::NothingToApply
        );
        assert_eq!(probes::probe_latest_patch(&exec, &t, v("1.34.1")).await.unwrap(), Some(v("1.34.2")));
        assert_eq!(probes::probe_containerd_version(&exec, &t).await.unwrap(), v("1.7.27"));
        assert_eq!(
            probes::probe_auth_config_drift(&exec, &t, v("1.34.2")).await.unwrap(),
            probes::AuthConfigDrift::Kept
        );
        let prune = probes::prune_kubeadm_scratch(&exec, &t).await.unwrap();
        assert!(prune.pruned.is_empty() && prune.root_fs.is_some(), "{prune:?}");
        assert!(probes::probe_auth_config_present(&exec, &t).await.unwrap());
        probes::rewrite_apt_repo(&exec, &t, v("1.35.0"), probes::K8S_APT_BASE).await.unwrap();
        probes::fix_containerd_skew(&exec, &t, v("1.7.28")).await.unwrap();
        assert_eq!(probes::probe_containerd_version(&exec, &t).await.unwrap(), v("1.7.28"));
    }

    #[tokio::test]
    async fn the_update_script_makes_the_node_report_the_new_kubelet() {
        let (srv, exec) = sim().await;
        let update = probes::UpdateNode::new(probes::NodeRole::Worker, v("1.34.2"));
        probes::update_node(&exec, &n1(), &update, Duration::from_secs(5)).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let n: k8s_openapi::api::core::v1::Node = srv.get(None, "n1").unwrap();
            if n.status.unwrap().node_info.unwrap().kubelet_version == "v1.34.2" {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "kubelet version never changed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(exec.upgrades(), [("n1".to_string(), "worker".to_string(), v("1.34.2"))]);
    }

    #[tokio::test]
    async fn unknown_commands_fail_loudly() {
        let (_srv, exec) = sim().await;
        let out = exec.run(&n1(), ExecRequest::command("reboot")).await.unwrap();
        assert_eq!(out.status, ExitStatus::Code(127));
        assert!(out.stderr.contains("reboot"));
    }
}
