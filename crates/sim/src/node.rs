//! Simulated nodes: a [`NodeExec`] that answers what the chain sends to a node (see
//! the shell's `node::probes`) with outputs the real parsers accept, and applies what `update_k8s.sh`
//! would change: after a short simulated kubelet restart, the node reports the new kubelet
//! version in the (simulated) apiserver.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chain_core::{
    node_exec::{ExecError, ExecOutput, ExecPayload, ExecRequest, ExitStatus, NodeExec, NodeTarget},
    version::Version,
};
use futures::future::BoxFuture;

use crate::apiserver::TestApiServer;

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
        if line == chain_core::node_ops::REACHABILITY_COMMAND {
            return ok("");
        }
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
    ) -> BoxFuture<'a, Result<ExecOutput, ExecError>> {
        Box::pin(async move {
            self.calls
                .lock()
                .expect("sim lock")
                .push(SimCall { node: target.node.clone(), what: req.describe() });
            Ok(self.answer(target, &req))
        })
    }
}
