//! What the chain runs on nodes, as values: the request of each probe and fix (pure), and the
//! parser of its output (pure, tested on real output samples in `tests/fixtures/probe_samples`).
//! The binary's `node::probes` glues them to a [`crate::node_exec::NodeExec`]. Commands run as
//! root through `sudo` on the node; paths are the stock kubeadm and Debian ones.

use std::time::Duration;

use crate::{
    node_exec::{ExecRequest, shell_quote},
    version::Version,
};

/// The per-node upgrade script, sent as stdin of `sudo -n bash -s`.
pub const UPDATE_K8S_SCRIPT: &str = include_str!("../../../scripts/update_k8s.sh");

/// Default base of the Kubernetes apt repositories (`<base>/vX.Y/deb/`).
pub const K8S_APT_BASE: &str = "https://pkgs.k8s.io/core:/stable:";

/// Where kubeadm leaves its backups and scratch manifests.
pub const KUBEADM_SCRATCH_DIR: &str = "/etc/kubernetes/tmp";

/// kubeadm scratch dirs older than this are pruned: 3 days (seed history 60a1cb9a: 28 GB of
/// never-cleaned etcd backups starved etcd's disk during an upgrade).
pub const KUBEADM_SCRATCH_MAX_AGE: Duration = Duration::from_secs(3 * 24 * 3600);

/// The preflight errors every plan/apply ignores: a CoreDNS ahead of kubeadm's migration
/// table must not block (seed history 037a609f, bfb86e65).
pub const IGNORE_PREFLIGHT: &str = "--ignore-preflight-errors=CoreDNSMigration,CoreDNSUnsupportedPlugins";

/// Refreshes only the Kubernetes apt source: a full `apt-get update` is slow and fails on
/// unrelated repos, and a stale cache reported an old patch (seed history 5d0e17b5).
const APT_UPDATE_K8S_ONLY: &str = "apt-get update -o Dir::Etc::sourcelist=sources.list.d/kubernetes.list -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0";

/// Wraps a script sent on stdin of `bash -s` in a function run with stdin from /dev/null:
/// bash then reads the whole script before running any of it, and no command (an apt or
/// dpkg prompt) can consume the rest of the script as its input.
fn stdin_safe(body: &str) -> String {
    format!("main() {{\n{body}}}\nmain \"$@\" </dev/null\n")
}

// ---------------------------------------------------------------------------------------
// Node upgrade script

/// The role a node plays in `update_k8s.sh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    /// The first control plane: `kubeadm upgrade apply`.
    Master,
    /// Another control plane: `kubeadm upgrade node`.
    ControlPlane,
    /// A worker: `kubeadm upgrade node`.
    Worker,
}

impl NodeRole {
    /// The `--role` value.
    pub fn as_arg(self) -> &'static str {
        match self {
            Self::Master => "master",
            Self::ControlPlane => "control-plane",
            Self::Worker => "worker",
        }
    }
}

/// One run of `update_k8s.sh` on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateNode {
    /// `--role`.
    pub role: NodeRole,
    /// `--release`.
    pub release: Version,
    /// `--preserve-kubelet-keys`: top-level kubelet config keys to restore after kubeadm
    /// rewrote the file. Empty: nothing restored (kubeadm's changes are still shown).
    pub preserve_kubelet_keys: Vec<String>,
    /// `--apt-base`; `None` uses the script's default ([`K8S_APT_BASE`]).
    pub apt_base: Option<String>,
}

impl UpdateNode {
    /// An upgrade of a node in `role` to `release`, with no kubelet keys preserved.
    pub fn new(role: NodeRole, release: Version) -> Self {
        Self { role, release, preserve_kubelet_keys: Vec::new(), apt_base: None }
    }

    /// The script arguments.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--role".to_string(),
            self.role.as_arg().into(),
            "--release".into(),
            self.release.to_string(),
        ];
        if !self.preserve_kubelet_keys.is_empty() {
            args.push("--preserve-kubelet-keys".into());
            args.push(self.preserve_kubelet_keys.join(","));
        }
        if let Some(base) = &self.apt_base {
            args.push("--apt-base".into());
            args.push(base.clone());
        }
        args
    }

    /// The request: the script on stdin of `sudo -n bash -s -- ARGS`, streamed to the log and
    /// captured (its tail goes into failure messages). `timeout` is usually
    /// [`crate::ssh::SshConfig::command_timeout`].
    pub fn request(&self, timeout: Duration) -> Result<ExecRequest, crate::node_exec::InvalidArg> {
        Ok(ExecRequest::script("update_k8s.sh", UPDATE_K8S_SCRIPT, self.args())?
            .capture(true)
            .stream(true)
            .timeout(timeout))
    }
}

// ---------------------------------------------------------------------------------------
// kubeadm upgrade plan

/// What `kubeadm upgrade plan vX.Y.Z` proposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanTarget {
    /// The first `kubeadm upgrade apply vX.Y.Z` line names this version.
    Apply(Version),
    /// No apply line: the cluster is already at (or past) the requested version, or kubeadm
    /// found nothing to do (seed history 70e217db).
    NothingToApply,
}

/// `sudo -n kubeadm upgrade plan v<target>` with the CoreDNS preflight errors ignored. The version
/// must be explicit: without it kubeadm proposes only patches of its current minor (seed
/// history 566447a6).
pub fn upgrade_plan_request(target: Version) -> ExecRequest {
    ExecRequest::command(format!("sudo -n kubeadm upgrade plan v{target} {IGNORE_PREFLIGHT}"))
        .timeout(Duration::from_secs(300))
}

/// Finds the first `kubeadm upgrade apply vX.Y.Z` in plan output. `Err` carries an apply
/// line whose version does not parse (e.g. a release candidate).
pub fn parse_upgrade_plan(output: &str) -> Result<PlanTarget, String> {
    for line in output.lines() {
        let Some(rest) = line.trim().strip_prefix("kubeadm upgrade apply ") else {
            continue;
        };
        let word = rest.split_whitespace().next().unwrap_or_default();
        return word.parse().map(PlanTarget::Apply).map_err(|_| line.trim().to_string());
    }
    Ok(PlanTarget::NothingToApply)
}

// ---------------------------------------------------------------------------------------
// Reachability

/// The check a node phase makes before it cordons its node, and preflight before it changes
/// anything: an SSH session (the host key verified against `known_hosts`, the key accepted)
/// that runs a trivial command through passwordless sudo, as `update_k8s.sh` will. A changed
/// host key or a broken login is found while the node is still untouched (issue 17: it was
/// found after the drain, and the node stayed cordoned although nothing had run on it).
pub fn reachability_request() -> ExecRequest {
    ExecRequest::command(REACHABILITY_COMMAND).timeout(Duration::from_secs(60))
}

/// The command line of [`reachability_request`].
pub const REACHABILITY_COMMAND: &str = "sudo -n true";

// ---------------------------------------------------------------------------------------
// apt-cache madison kubeadm

/// Refreshes only the Kubernetes apt source, then lists kubeadm versions.
pub fn madison_request() -> ExecRequest {
    ExecRequest::command(format!("sudo -n {APT_UPDATE_K8S_ONLY} >/dev/null && apt-cache madison kubeadm"))
        .timeout(Duration::from_secs(180))
}

/// Upstream versions from `apt-cache madison` lines (`pkg | 1.35.2-1.1 | source`), Debian
/// revision stripped; lines that do not parse are skipped.
pub fn parse_madison(output: &str) -> Vec<Version> {
    output
        .lines()
        .filter_map(|line| {
            let field = line.split('|').nth(1)?.trim();
            let upstream = field.rsplit_once('-').map_or(field, |(u, _)| u);
            // An epoch (`1:1.2.3-1`) is not used by pkgs.k8s.io; drop it if present.
            let upstream = upstream.rsplit_once(':').map_or(upstream, |(_, u)| u);
            upstream.parse().ok()
        })
        .collect()
}

/// The highest version in the minor of `of` (same major and minor).
pub fn latest_patch(versions: &[Version], of: Version) -> Option<Version> {
    versions.iter().copied().filter(|v| v.same_minor(&of)).max()
}

// ---------------------------------------------------------------------------------------
// containerd version and skew

/// `containerd --version`.
pub fn containerd_version_request() -> ExecRequest {
    ExecRequest::command("containerd --version").timeout(Duration::from_secs(60))
}

/// The version in the third field of `containerd --version` (`containerd containerd.io
/// 1.7.27 <commit>`), with any `v` prefix and Debian suffix (`~ds1`) dropped.
pub fn parse_containerd_version(output: &str) -> Option<Version> {
    let field = output.lines().next()?.split_whitespace().nth(2)?;
    let field = field.strip_prefix('v').unwrap_or(field);
    let end = field.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(field.len());
    field[..end].parse().ok()
}

/// The containerd version the first control plane must move to: the highest worker version,
/// when it is strictly above the control plane's (seed §2.1 step 10). `None`: no fix needed.
pub fn containerd_skew_target(control_plane: Version, workers: &[Version]) -> Option<Version> {
    workers.iter().copied().max().filter(|max| *max > control_plane)
}

/// Installs `containerd.io` at `version` on the node and restarts containerd. The package
/// version is matched as `<version>-*`: Docker's revisions vary by distro
/// (`1.7.28-1`, `1.7.28-1~ubuntu.24.04~noble`), so the seed's fixed `-1` breaks on Ubuntu.
pub fn containerd_fix_request(version: Version) -> ExecRequest {
    let script = stdin_safe(
        "set -euo pipefail\n\
         apt-mark unhold containerd.io\n\
         apt-get install -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \"containerd.io=$1-*\"\n\
         apt-mark hold containerd.io\n\
         systemctl restart containerd\n",
    );
    ExecRequest::script("containerd-skew-fix", script, [version.to_string()])
        .expect("a version is a valid argument")
        .capture(true)
        .stream(true)
        .timeout(Duration::from_secs(600))
}

// ---------------------------------------------------------------------------------------
// kubeadm upgrade diff: OIDC drift

/// Whether `kubeadm upgrade apply` would drop the API server's `--authentication-config`
/// (seed history 077ac97d: SSO broke after an apply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthConfigDrift {
    /// A removed diff line carries the flag: the apply will drop it. Holds that line.
    Dropped(String),
    /// No removed line mentions it.
    Kept,
}

/// `sudo -n kubeadm upgrade diff v<target>`.
pub fn upgrade_diff_request(target: Version) -> ExecRequest {
    ExecRequest::command(format!("sudo -n kubeadm upgrade diff v{target}")).timeout(Duration::from_secs(300))
}

/// Looks for a removed line (`-` but not the `---` file header) containing
/// `--authentication-config`.
pub fn parse_auth_config_drift(diff: &str) -> AuthConfigDrift {
    diff.lines()
        .find(|l| l.starts_with('-') && !l.starts_with("---") && l.contains("--authentication-config"))
        .map_or(AuthConfigDrift::Kept, |l| AuthConfigDrift::Dropped(l[1..].trim().to_string()))
}

// ---------------------------------------------------------------------------------------
// Pruning kubeadm scratch

/// Marker between the pruned paths and the `df` output.
const DF_MARKER: &str = "=== root filesystem ===";

/// Usage of a filesystem, from `df -P` (1024-byte blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    /// Size in KiB.
    pub size_kib: u64,
    /// Used KiB.
    pub used_kib: u64,
    /// Available KiB.
    pub avail_kib: u64,
    /// Use percentage as df prints it.
    pub use_percent: u8,
}

/// What the prune removed, and the root filesystem usage afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneReport {
    /// Directories removed.
    pub pruned: Vec<String>,
    /// Root filesystem usage; `None` if df's output was not understood.
    pub root_fs: Option<FsUsage>,
}

/// Deletes `kubeadm-backup-*` and `kubeadm-upgraded-manifests*` directories directly under
/// `dir` older than `older_than`, prints them, then `df -P /`. Best effort: a missing `dir`
/// prunes nothing.
pub fn prune_request(dir: &str, older_than: Duration) -> ExecRequest {
    let minutes = older_than.as_secs().div_ceil(60);
    // `UPDATE_K8S_ROOT` prefixes the directory for tests (real sshd nodes keep their files
    // under a temp root); sudo's env_reset keeps it unset in production, as for the apt
    // rewrite below.
    let script = format!(
        "d=\"${{UPDATE_K8S_ROOT:-}}\"{dir}; if [ -d \"$d\" ]; then find \"$d\" -mindepth 1 -maxdepth 1 -type d \\( -name 'kubeadm-backup-*' -o -name 'kubeadm-upgraded-manifests*' \\) -mmin +{minutes} -print -exec rm -rf {{}} +; fi; echo {marker}; df -P /",
        dir = shell_quote(dir),
        marker = shell_quote(DF_MARKER),
    );
    ExecRequest::command(format!("sudo -n sh -c {}", shell_quote(&script))).timeout(Duration::from_secs(300))
}

/// Parses [`prune_request`] output.
pub fn parse_prune(output: &str) -> PruneReport {
    let (paths, df) = output.split_once(DF_MARKER).unwrap_or((output, ""));
    let pruned = paths.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    PruneReport { pruned, root_fs: parse_df(df) }
}

/// The data line of `df -P` output (the line after the header).
fn parse_df(df: &str) -> Option<FsUsage> {
    let line = df.lines().map(str::trim).filter(|l| !l.is_empty()).find(|l| !l.starts_with("Filesystem"))?;
    let f: Vec<&str> = line.split_whitespace().collect();
    // Filesystem size used avail capacity mountpoint; the filesystem name has no spaces in
    // df -P output for block devices, so count from the end to be safe.
    if f.len() < 6 {
        return None;
    }
    let n = f.len();
    Some(FsUsage {
        size_kib: f[n - 5].parse().ok()?,
        used_kib: f[n - 4].parse().ok()?,
        avail_kib: f[n - 3].parse().ok()?,
        use_percent: f[n - 2].trim_end_matches('%').parse().ok()?,
    })
}

// ---------------------------------------------------------------------------------------
// apt repository rewrite for a minor upgrade

/// Points `/etc/apt/sources.list.d/kubernetes.list` at the target's minor track, refreshes
/// the keyring from that track's `Release.key` (curl follows redirects: seed history
/// cecd9fe2) and refreshes the Kubernetes source. `UPDATE_K8S_ROOT` prefixes the paths for
/// tests; sudo's env_reset keeps it unset in production.
pub fn apt_repo_request(target: Version, apt_base: &str) -> ExecRequest {
    let script = stdin_safe(&format!(
        "set -euo pipefail\n\
         root=\"${{UPDATE_K8S_ROOT:-}}\"\n\
         track=$1\n\
         base=$2\n\
         keyring=/etc/apt/keyrings/kubernetes-apt-keyring.gpg\n\
         mkdir -p \"$root/etc/apt/keyrings\" \"$root/etc/apt/sources.list.d\"\n\
         printf 'deb [signed-by=%s] %s/v%s/deb/ /\\n' \"$keyring\" \"$base\" \"$track\" >\"$root/etc/apt/sources.list.d/kubernetes.list\"\n\
         curl -fsSL --retry 3 \"$base/v$track/deb/Release.key\" | gpg --batch --yes --dearmor -o \"$root$keyring\"\n\
         {APT_UPDATE_K8S_ONLY}\n"
    ));
    ExecRequest::script("apt-repo-rewrite", script, [target.minor_track(), apt_base.to_string()])
        .expect("track and base are single-line arguments")
        .capture(true)
        .stream(true)
        .timeout(Duration::from_secs(300))
}

// ---------------------------------------------------------------------------------------
// Post-upgrade scripts (the seed's OIDC restore, seed §2.2 step 11) and their check

/// The API server static pod manifest.
pub const APISERVER_MANIFEST: &str = "/etc/kubernetes/manifests/kube-apiserver.yaml";

/// Runs an operator script (from a ConfigMap; the seed's was `kube-system/
/// apiserver-oidc-restore`, key `restore.sh`) verbatim on stdin of `sudo -n bash -s`.
pub fn post_upgrade_script_request(name: &str, body: &str) -> ExecRequest {
    ExecRequest::script(name, body, Vec::<String>::new())
        .expect("no arguments")
        .capture(true)
        .stream(true)
        .timeout(Duration::from_secs(600))
}

/// Counts lines of `path` containing the fixed string `needle` (`sudo -n grep -c -F`).
pub fn file_contains_request(path: &str, needle: &str) -> ExecRequest {
    ExecRequest::command(format!("sudo -n grep -c -F -e {} -- {}", shell_quote(needle), shell_quote(path)))
        .timeout(Duration::from_secs(60))
}

/// Reads `grep -c` output: `Some(true)` when the count is positive, `None` when the output
/// is not a count (grep failed).
pub fn parse_grep_count(output: &str) -> Option<bool> {
    output.trim().parse::<u64>().ok().map(|n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! sample {
        ($name:literal) => {
            include_str!(concat!("../../../tests/fixtures/probe_samples/", $name))
        };
    }

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn plan_target_is_the_first_apply_line() {
        assert_eq!(
            parse_upgrade_plan(sample!("kubeadm-plan-1.34-minor.txt")),
            Ok(PlanTarget::Apply(v("1.34.1")))
        );
        assert_eq!(
            parse_upgrade_plan(sample!("kubeadm-plan-1.27-patch.txt")),
            Ok(PlanTarget::Apply(v("1.27.4")))
        );
        // Without an explicit version, kubeadm lists the same-minor patch first.
        assert_eq!(
            parse_upgrade_plan(sample!("kubeadm-plan-1.19-two-targets.txt")),
            Ok(PlanTarget::Apply(v("1.18.15")))
        );
    }

    #[test]
    fn plan_without_apply_line_means_nothing_to_apply() {
        for s in [sample!("kubeadm-plan-1.11-up-to-date.txt"), sample!("kubeadm-plan-1.34-at-target.txt"), ""]
        {
            assert_eq!(parse_upgrade_plan(s), Ok(PlanTarget::NothingToApply));
        }
    }

    #[test]
    fn plan_with_an_unparsable_target_is_an_error() {
        let out = "You can now apply the upgrade by executing the following command:\n\n\tkubeadm upgrade apply v1.35.0-rc.1 --allow-release-candidate-upgrades\n";
        assert!(parse_upgrade_plan(out).unwrap_err().contains("v1.35.0-rc.1"));
    }

    #[test]
    fn plan_request_names_the_version_and_ignores_coredns_preflight() {
        assert_eq!(
            upgrade_plan_request(v("1.34.2")).remote_command(),
            "sudo -n kubeadm upgrade plan v1.34.2 --ignore-preflight-errors=CoreDNSMigration,CoreDNSUnsupportedPlugins"
        );
    }

    #[test]
    fn madison_versions_strip_the_debian_revision() {
        let got = parse_madison(sample!("madison-kubeadm-1.35.txt"));
        assert_eq!(got.len(), 6);
        assert_eq!(got[0], v("1.35.5"));
        assert_eq!(latest_patch(&got, v("1.35.0")), Some(v("1.35.5")));
        assert_eq!(latest_patch(&got, v("1.34.9")), None);

        let legacy = parse_madison(sample!("madison-kubeadm-legacy.txt"));
        assert_eq!(legacy, [v("1.30.2"), v("1.30.1"), v("1.29.6")]);
        assert_eq!(latest_patch(&legacy, v("1.29.0")), Some(v("1.29.6")));
        assert!(parse_madison("N: Unable to locate package kubeadm\n").is_empty());
    }

    #[test]
    fn latest_patch_compares_numerically_not_lexically() {
        let vs = [v("1.30.9"), v("1.30.14"), v("1.30.10")];
        assert_eq!(latest_patch(&vs, v("1.30.0")), Some(v("1.30.14")));
    }

    #[test]
    fn madison_request_refreshes_only_the_kubernetes_source() {
        let cmd = madison_request().remote_command();
        assert!(cmd.contains("-o Dir::Etc::sourcelist=sources.list.d/kubernetes.list -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0"));
        assert!(cmd.ends_with("apt-cache madison kubeadm"));
    }

    #[test]
    fn containerd_version_from_all_known_formats() {
        assert_eq!(
            parse_containerd_version(sample!("containerd-version-containerd.io-1.6.txt")),
            Some(v("1.6.9"))
        );
        assert_eq!(
            parse_containerd_version(sample!("containerd-version-upstream-2.3.txt")),
            Some(v("2.3.6"))
        );
        assert_eq!(parse_containerd_version(sample!("containerd-version-debian-1.6.txt")), Some(v("1.6.20")));
        assert_eq!(parse_containerd_version("containerd: command not found"), None);
        assert_eq!(parse_containerd_version(""), None);
    }

    #[test]
    fn containerd_skew_fix_only_when_control_plane_is_strictly_behind() {
        let workers = [v("1.7.27"), v("1.7.28"), v("1.7.9")];
        assert_eq!(containerd_skew_target(v("1.7.27"), &workers), Some(v("1.7.28")));
        assert_eq!(containerd_skew_target(v("1.7.28"), &workers), None);
        assert_eq!(containerd_skew_target(v("2.0.0"), &workers), None);
        assert_eq!(containerd_skew_target(v("1.7.27"), &[]), None);
    }

    #[test]
    fn auth_config_drift_looks_at_removed_lines_only() {
        assert_eq!(
            parse_auth_config_drift(sample!("kubeadm-diff-authn-dropped.txt")),
            AuthConfigDrift::Dropped(
                "- --authentication-config=/etc/kubernetes/auth/authentication-config.yaml".into()
            )
        );
        assert_eq!(parse_auth_config_drift(sample!("kubeadm-diff-clean.txt")), AuthConfigDrift::Kept);
        // Kept in context or added: no drift.
        assert_eq!(
            parse_auth_config_drift("     - --authentication-config=/x\n+    - --authentication-config=/x\n"),
            AuthConfigDrift::Kept
        );
    }

    #[test]
    fn prune_report_lists_paths_and_root_usage() {
        let r = parse_prune(sample!("prune-output.txt"));
        assert_eq!(r.pruned.len(), 3);
        assert_eq!(r.pruned[2], "/etc/kubernetes/tmp/kubeadm-upgraded-manifests2387441093");
        assert_eq!(
            r.root_fs,
            Some(FsUsage {
                size_kib: 102_687_672,
                used_kib: 55_044_892,
                avail_kib: 42_383_516,
                use_percent: 57
            })
        );
        let empty = parse_prune("");
        assert!(empty.pruned.is_empty());
        assert_eq!(empty.root_fs, None);
    }

    #[test]
    fn prune_request_uses_minutes_for_an_exact_age() {
        let cmd = prune_request(KUBEADM_SCRATCH_DIR, KUBEADM_SCRATCH_MAX_AGE).remote_command();
        assert!(cmd.contains("-mmin +4320"), "{cmd}");
        assert!(cmd.starts_with("sudo -n sh -c "), "{cmd}");
    }

    #[test]
    fn update_node_request_passes_role_release_keys_and_apt_base() {
        let mut up = UpdateNode::new(NodeRole::ControlPlane, v("1.34.2"));
        up.preserve_kubelet_keys = vec!["systemReserved".into(), "kubeReserved".into()];
        up.apt_base = Some("https://mirror.example/k8s".into());
        let req = up.request(Duration::from_secs(2700)).unwrap();
        assert_eq!(
            req.remote_command(),
            "sudo -n bash -s -- --role control-plane --release 1.34.2 --preserve-kubelet-keys systemReserved,kubeReserved --apt-base https://mirror.example/k8s"
        );
        assert_eq!(req.timeout, Duration::from_secs(2700));
        assert_eq!(req.stdin_bytes(), UPDATE_K8S_SCRIPT.as_bytes());
        let plain = UpdateNode::new(NodeRole::Worker, v("1.34.2")).request(Duration::from_secs(1)).unwrap();
        assert_eq!(plain.remote_command(), "sudo -n bash -s -- --role worker --release 1.34.2");
        let mut bad = UpdateNode::new(NodeRole::Worker, v("1.34.2"));
        bad.apt_base = Some("https://x\nrm -rf /".into());
        assert!(bad.request(Duration::from_secs(1)).is_err());
    }

    #[test]
    fn file_check_quotes_needle_and_path() {
        assert_eq!(
            file_contains_request(APISERVER_MANIFEST, "--authentication-config=").remote_command(),
            "sudo -n grep -c -F -e --authentication-config= -- /etc/kubernetes/manifests/kube-apiserver.yaml"
        );
        assert_eq!(
            file_contains_request("/a b", "x y").remote_command(),
            "sudo -n grep -c -F -e 'x y' -- '/a b'"
        );
    }

    #[test]
    fn grep_count_reads_zero_as_absent() {
        assert_eq!(parse_grep_count("1\n"), Some(true));
        assert_eq!(parse_grep_count("0\n"), Some(false));
        assert_eq!(parse_grep_count(""), None);
    }
}
