//! Probes and fixes run on nodes through [`NodeExec`]: each glues a request and a parser of
//! [`chain_core::node_ops`] to the node executor (SSH in production, the simulator in a
//! rehearsal).

use std::time::Duration;

pub use chain_core::node_ops::*;
use chain_core::{
    node_exec::{ExecError, ExecOutput, ExecRequest, ExitStatus, NodeExec, NodeTarget},
    version::Version,
};

/// A probe or fix that did not give a usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The request itself failed (connect, host key, drop, timeout...).
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The command ran and failed.
    #[error("{what} on node {node} failed ({status}): {detail}")]
    Failed { node: String, what: &'static str, status: ExitStatus, detail: String },
    /// The command succeeded but its output was not what the parser knows.
    #[error("{what} on node {node}: unexpected output: {detail}")]
    Unparsable { node: String, what: &'static str, detail: String },
}

/// The last few lines of a text, for error messages.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join(" | ")
}

async fn run_ok(
    exec: &dyn NodeExec,
    node: &NodeTarget,
    what: &'static str,
    req: ExecRequest,
) -> Result<ExecOutput, ProbeError> {
    let out = exec.run(node, req).await?;
    if !out.success() {
        let detail = match tail(&out.stderr, 5) {
            s if s.is_empty() => tail(&out.stdout, 5),
            s => s,
        };
        return Err(ProbeError::Failed { node: node.node.clone(), what, status: out.status, detail });
    }
    Ok(out)
}

fn unparsable(node: &NodeTarget, what: &'static str, out: &str) -> ProbeError {
    ProbeError::Unparsable {
        node: node.node.clone(),
        what,
        detail: match tail(out, 3) {
            s if s.is_empty() => "no output".into(),
            s => s,
        },
    }
}

/// Runs `update_k8s.sh` on `node`; a non-zero exit is [`ProbeError::Failed`] with the tail
/// of its output.
pub async fn update_node(
    exec: &dyn NodeExec,
    node: &NodeTarget,
    update: &UpdateNode,
    timeout: Duration,
) -> Result<ExecOutput, ProbeError> {
    let req = update.request(timeout).map_err(|e| ProbeError::Unparsable {
        node: node.node.clone(),
        what: "update_k8s.sh arguments",
        detail: e.to_string(),
    })?;
    run_ok(exec, node, "update_k8s.sh", req).await
}

/// The check before touching `node` ([`reachability_request`]): SSH with the host key verified,
/// a trivial command through sudo.
pub async fn check_reachable(exec: &dyn NodeExec, node: &NodeTarget) -> Result<(), ProbeError> {
    run_ok(exec, node, "the SSH and sudo check", reachability_request()).await?;
    Ok(())
}

/// Runs the plan on `node` (the first control plane) and returns its target.
pub async fn probe_upgrade_plan(
    exec: &dyn NodeExec,
    node: &NodeTarget,
    target: Version,
) -> Result<PlanTarget, ProbeError> {
    const WHAT: &str = "kubeadm upgrade plan";
    let out = run_ok(exec, node, WHAT, upgrade_plan_request(target)).await?;
    parse_upgrade_plan(&out.stdout).map_err(|line| unparsable(node, WHAT, &line))
}

/// The newest kubeadm patch available on `node` in the minor of `of`.
pub async fn probe_latest_patch(
    exec: &dyn NodeExec,
    node: &NodeTarget,
    of: Version,
) -> Result<Option<Version>, ProbeError> {
    let out = run_ok(exec, node, "apt-cache madison kubeadm", madison_request()).await?;
    Ok(latest_patch(&parse_madison(&out.stdout), of))
}

/// containerd's version on `node`.
pub async fn probe_containerd_version(exec: &dyn NodeExec, node: &NodeTarget) -> Result<Version, ProbeError> {
    const WHAT: &str = "containerd --version";
    let out = run_ok(exec, node, WHAT, containerd_version_request()).await?;
    parse_containerd_version(&out.stdout).ok_or_else(|| unparsable(node, WHAT, &out.stdout))
}

/// Runs [`containerd_fix_request`]; the caller then waits for the node to be Ready again.
pub async fn fix_containerd_skew(
    exec: &dyn NodeExec,
    node: &NodeTarget,
    to: Version,
) -> Result<(), ProbeError> {
    run_ok(exec, node, "containerd skew fix", containerd_fix_request(to)).await?;
    Ok(())
}

/// Runs the diff. A failing diff still yields whatever it printed: the seed tolerated errors
/// here and the check only ever warns.
pub async fn probe_auth_config_drift(
    exec: &dyn NodeExec,
    node: &NodeTarget,
    target: Version,
) -> Result<AuthConfigDrift, ProbeError> {
    let out = exec.run(node, upgrade_diff_request(target)).await?;
    Ok(parse_auth_config_drift(&out.stdout))
}

/// Prunes old kubeadm scratch on `node` ([`KUBEADM_SCRATCH_DIR`], older than
/// [`KUBEADM_SCRATCH_MAX_AGE`]).
pub async fn prune_kubeadm_scratch(
    exec: &dyn NodeExec,
    node: &NodeTarget,
) -> Result<PruneReport, ProbeError> {
    prune_dir(exec, node, KUBEADM_SCRATCH_DIR, KUBEADM_SCRATCH_MAX_AGE).await
}

/// [`prune_kubeadm_scratch`] for another directory and age (tests, unusual layouts).
pub async fn prune_dir(
    exec: &dyn NodeExec,
    node: &NodeTarget,
    dir: &str,
    older_than: Duration,
) -> Result<PruneReport, ProbeError> {
    let out = run_ok(exec, node, "kubeadm scratch prune", prune_request(dir, older_than)).await?;
    Ok(parse_prune(&out.stdout))
}

/// Rewrites the apt repository on `node` for `target`'s minor ([`apt_repo_request`]).
pub async fn rewrite_apt_repo(
    exec: &dyn NodeExec,
    node: &NodeTarget,
    target: Version,
    apt_base: &str,
) -> Result<(), ProbeError> {
    run_ok(exec, node, "apt repository rewrite", apt_repo_request(target, apt_base)).await?;
    Ok(())
}

/// Runs a post-upgrade script. The caller treats a failure as a warning (the seed never
/// failed the phase here).
pub async fn run_post_upgrade_script(
    exec: &dyn NodeExec,
    node: &NodeTarget,
    name: &str,
    body: &str,
) -> Result<ExecOutput, ProbeError> {
    run_ok(exec, node, "post-upgrade script", post_upgrade_script_request(name, body)).await
}

/// Whether `path` on `node` contains `needle`. A missing file is an error, not `false`.
pub async fn probe_file_contains(
    exec: &dyn NodeExec,
    node: &NodeTarget,
    path: &str,
    needle: &str,
) -> Result<bool, ProbeError> {
    const WHAT: &str = "file check";
    let out = exec.run(node, file_contains_request(path, needle)).await?;
    // grep -c exits 1 when it counted zero; 2 is a real error (no such file...).
    match (&out.status, parse_grep_count(&out.stdout)) {
        (ExitStatus::Code(0 | 1), Some(present)) => Ok(present),
        (ExitStatus::Code(0 | 1), None) => Err(unparsable(node, WHAT, &out.stdout)),
        (status, _) => Err(ProbeError::Failed {
            node: node.node.clone(),
            what: WHAT,
            status: status.clone(),
            detail: tail(&out.stderr, 3),
        }),
    }
}

/// Whether the API server manifest on `node` carries `--authentication-config=` (checked
/// after the OIDC restore).
pub async fn probe_auth_config_present(exec: &dyn NodeExec, node: &NodeTarget) -> Result<bool, ProbeError> {
    probe_file_contains(exec, node, APISERVER_MANIFEST, "--authentication-config=").await
}

#[cfg(test)]
mod tests {
    use super::*;
    use chain_core::node_exec::ExitStatus;

    macro_rules! sample {
        ($name:literal) => {
            include_str!(concat!("../../tests/fixtures/probe_samples/", $name))
        };
    }

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    /// A node that answers every request with the same output.
    struct Canned(ExecOutput);

    impl NodeExec for Canned {
        fn run<'a>(
            &'a self,
            _target: &'a NodeTarget,
            _req: ExecRequest,
        ) -> futures::future::BoxFuture<'a, Result<ExecOutput, ExecError>> {
            let out = self.0.clone();
            Box::pin(async move { Ok(out) })
        }
    }

    fn canned(code: i32, stdout: &str, stderr: &str) -> std::sync::Arc<dyn NodeExec> {
        std::sync::Arc::new(Canned(ExecOutput {
            status: ExitStatus::Code(code),
            stdout: stdout.into(),
            stderr: stderr.into(),
            stdout_bytes: stdout.len() as u64,
            stderr_bytes: stderr.len() as u64,
        }))
    }

    fn node() -> NodeTarget {
        NodeTarget::new("k8s-master", "10.0.20.100".parse().unwrap())
    }

    #[tokio::test]
    async fn a_failing_diff_still_reports_drift_but_a_failing_plan_is_an_error() {
        let exec = canned(1, sample!("kubeadm-diff-authn-dropped.txt"), "error: boom\n");
        let drift = probe_auth_config_drift(exec.as_ref(), &node(), v("1.34.1")).await;
        assert!(matches!(drift, Ok(AuthConfigDrift::Dropped(_))), "{drift:?}");

        let err = probe_upgrade_plan(exec.as_ref(), &node(), v("1.34.1")).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "kubeadm upgrade plan on node k8s-master failed (exit status 1): error: boom"
        );
    }

    #[tokio::test]
    async fn unparsable_output_is_an_error_naming_the_node() {
        let exec = canned(0, "containerd: weird\n", "");
        let err = probe_containerd_version(exec.as_ref(), &node()).await.unwrap_err();
        assert!(matches!(err, ProbeError::Unparsable { .. }), "{err:?}");
        assert!(err.to_string().contains("k8s-master"), "{err}");
    }

    #[tokio::test]
    async fn auth_config_presence_reads_grep_count_and_exit_status() {
        let yes = canned(0, "1\n", "");
        assert!(probe_auth_config_present(yes.as_ref(), &node()).await.unwrap());
        let no = canned(1, "0\n", "");
        assert!(!probe_auth_config_present(no.as_ref(), &node()).await.unwrap());
        let missing =
            canned(2, "", "grep: /etc/kubernetes/manifests/kube-apiserver.yaml: No such file or directory\n");
        let err = probe_auth_config_present(missing.as_ref(), &node()).await.unwrap_err();
        assert!(err.to_string().contains("No such file"), "{err}");
    }
}
